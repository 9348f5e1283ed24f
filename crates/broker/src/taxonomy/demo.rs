//! The demo taxonomy: postgresql, mysql and redis classes; a `dev` environment (namespace
//! `dev*`, or no namespace at all) and a `prod` one (namespace `prod*`); and a policy that
//! gives dev small databases on shared providers and prod medium ones on the prod providers,
//! asynchronously, with deletion protection and a per-namespace quota.

use serde::de::DeserializeOwned;
use serde_json::json;

use super::{EnvironmentSpec, Named, ServiceClassSpec, ServicePolicySpec, Taxonomy};

fn parse<S: DeserializeOwned>(name: &str, value: serde_json::Value) -> Named<S> {
    // invariant: the demo specs are constants covered by the taxonomy unit tests.
    #[allow(clippy::expect_used)]
    let spec = serde_json::from_value(value).expect("demo taxonomy spec parses");
    Named::new(name, spec)
}

/// The demo `ServiceClass` specs.
pub fn classes() -> Vec<Named<ServiceClassSpec>> {
    let storage = |c: u32, mb: u32| json!({"maxConnections": c, "storageMb": mb});
    let memory = |c: u32, mb: u32| json!({"maxConnections": c, "memoryMb": mb});
    let maintenance = json!({"version": "1.0.0", "description": "meshwork broker 0.1 providers"});
    let sized = |kind: &str, desc: &str, f: &dyn Fn(u32, u32) -> serde_json::Value| {
        json!({
            "kind": kind,
            "description": desc,
            "tags": [kind],
            "sizes": {"small": f(20, 1024), "medium": f(100, 10240), "large": f(300, 102400)},
            "maintenanceInfo": maintenance,
        })
    };
    let memory_sized = json!({
        "kind": "redis",
        "description": "A Redis key space of your own",
        "tags": ["redis", "cache"],
        "sizes": {"small": memory(20, 64), "medium": memory(100, 256), "large": memory(300, 1024)},
        "maintenanceInfo": maintenance,
    });
    vec![
        parse(
            "postgresql",
            sized("postgresql", "A PostgreSQL database", &storage),
        ),
        parse(
            "mysql",
            sized("mysql", "A MySQL-compatible database", &storage),
        ),
        parse("redis", memory_sized),
    ]
}

/// The demo `Environment` specs.
pub fn environments() -> Vec<Named<EnvironmentSpec>> {
    vec![
        parse(
            "dev",
            json!({"description": "development: dev* namespaces, or requests without a namespace",
                   "match": [{"namespace": "dev*"}, {"unset": ["namespace"]}]}),
        ),
        parse(
            "prod",
            json!({"description": "production: prod* namespaces", "match": [{"namespace": "prod*"}]}),
        ),
    ]
}

fn dev_rule(class: &str, provider: &str) -> serde_json::Value {
    json!({
        "name": format!("dev-{class}"), "class": class, "environment": "dev",
        "provider": provider, "sizes": ["small", "medium"], "defaultSize": "small",
        "cascadeDelete": true,
    })
}

fn prod_rule(class: &str, provider: &str) -> serde_json::Value {
    json!({
        "name": format!("prod-{class}"), "class": class, "environment": "prod",
        "provider": provider, "sizes": ["medium", "large"], "defaultSize": "medium",
        "quota": {"instancesPerTeam": 10, "teamFrom": "context.namespace"},
        "deletionProtection": true, "asynchronous": true,
        "credentialTtlSeconds": 30 * 24 * 3600,
    })
}

/// The demo `ServicePolicy` specs (one policy, `default`).
pub fn policies() -> Vec<Named<ServicePolicySpec>> {
    let rules = json!({"rules": [
        dev_rule("postgresql", "postgres-shared"),
        prod_rule("postgresql", "postgres-prod"),
        dev_rule("mysql", "mysql-shared"),
        prod_rule("mysql", "mysql-prod"),
        dev_rule("redis", "redis-shared"),
        prod_rule("redis", "redis-prod"),
    ]});
    vec![parse("default", rules)]
}

impl Taxonomy {
    /// The demo taxonomy (see the module docs); its providers are those of
    /// [`ProviderConfig::local`](crate::ProviderConfig::local).
    pub fn demo() -> Taxonomy {
        // invariant: the demo specs are constants covered by the taxonomy unit tests.
        #[allow(clippy::expect_used)]
        Taxonomy::new(classes(), environments(), policies()).expect("demo taxonomy is valid")
    }
}
