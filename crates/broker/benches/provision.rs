//! Provision + bind latency per provider, end to end: OSB HTTP requests against an in-process
//! broker on the local PostgreSQL, MariaDB and Redis (dev environment: synchronous, shared
//! providers). Cleanup (deprovision) runs outside the timed section.
//!
//! run: cargo bench -p meshwork-broker --bench provision

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/broker/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use harness::{TestBroker, bind_body, delete_query, provision_body, unique};
use http::{Method, StatusCode};

async fn provision(b: &TestBroker, class: &str) -> String {
    let id = unique("bench");
    let path = format!("/v2/service_instances/{id}");
    let body = provision_body(class, "default", Some("dev-bench"));
    let (status, answer) = b.osb(Method::PUT, &path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    id
}

async fn bind(b: &TestBroker, class: &str, id: &str) {
    let path = format!(
        "/v2/service_instances/{id}/service_bindings/{}",
        unique("b")
    );
    let (status, answer) = b
        .osb(Method::PUT, &path, Some(bind_body(class, "default")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

async fn deprovision(b: &TestBroker, class: &str, id: &str) {
    let path = format!(
        "/v2/service_instances/{id}?{}",
        delete_query(class, "default")
    );
    assert_eq!(b.osb(Method::DELETE, &path, None).await.0, StatusCode::OK);
}

fn provision_and_bind(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(TestBroker::start());
    let mut group = c.benchmark_group("osb");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for class in ["postgresql", "mysql", "redis"] {
        group.bench_function(format!("{class}/provision+bind"), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let id = provision(&broker, class).await;
                        bind(&broker, class, &id).await;
                        total += start.elapsed();
                        deprovision(&broker, class, &id).await;
                    }
                    total
                })
            })
        });
        let id = rt.block_on(provision(&broker, class));
        group.bench_function(format!("{class}/bind"), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        bind(&broker, class, &id).await;
                    }
                    start.elapsed()
                })
            })
        });
        rt.block_on(deprovision(&broker, class, &id));
    }
    group.finish();
}

criterion_group!(benches, provision_and_bind);
criterion_main!(benches);
