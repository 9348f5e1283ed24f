//! gRPC through two real sidecars with a real tonic client and server (the SPIFFE Workload
//! API's generated code, `api::workload`, as the service: one unary and one
//! server-streaming method). The client's channel connects to store's outbound listener and
//! speaks HTTP/2 with prior knowledge with `:authority billing`; billing's sidecar speaks h2c
//! to the tonic server (`protocol: http2`), which sees store's SPIFFE ID in
//! `x-meshwork-client-id`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use api::workload::spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer};
use api::workload::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use futures_util::StreamExt;
use proxy::{AppProtocol, NoMetrics};
use testkit::TestCa;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::HANG_GUARD;
use super::mesh::{BILLING, STORE, closed_port, route};
use super::opaque::{sidecar, sidecar_with};

type Stream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

/// Answers with the caller identity its sidecar stamped.
struct WhoAmI;

fn caller<T>(request: &Request<T>) -> String {
    let ids: Vec<&str> = request
        .metadata()
        .get_all("x-meshwork-client-id")
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect();
    ids.join(",")
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WhoAmI {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let caller = caller(&request);
        let messages: Vec<Result<X509svidResponse, Status>> = (0..3)
            .map(|i| {
                let svid = X509svid {
                    spiffe_id: format!("{caller}#{i}"),
                    ..X509svid::default()
                };
                Ok(X509svidResponse {
                    svids: vec![svid],
                    ..X509svidResponse::default()
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            messages,
        ))))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let svid = Jwtsvid {
            spiffe_id: caller(&request),
            svid: request.get_ref().audience.join(","),
            ..Jwtsvid::default()
        };
        Ok(Response::new(JwtsvidResponse { svids: vec![svid] }))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn validate_jwtsvid(
        &self,
        _: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        Err(Status::permission_denied("not in this test"))
    }
}

async fn grpc_app(shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(WhoAmI))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    tokio::spawn(server);
    addr
}

#[tokio::test]
async fn tonic_unary_and_server_streaming_calls_reach_billing_as_store() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("meshwork.local").unwrap();
    let shutdown = CancellationToken::new();
    let app = grpc_app(shutdown.clone()).await;
    let policies = policy::PolicySet::default();
    let metrics = Arc::new(NoMetrics);
    let own = vec![route(
        "billing",
        closed_port().await,
        ca.id(BILLING).unwrap(),
    )];
    let billing = sidecar_with(
        &ca,
        BILLING,
        own,
        (app, &policies),
        &metrics,
        &shutdown,
        |c| {
            c.app_protocol = AppProtocol::Http2;
        },
    )
    .await;
    let routes = vec![route("billing", billing.inbound, ca.id(BILLING).unwrap())];
    let unused = (closed_port().await, &policies);
    let store = sidecar(&ca, STORE, routes, unused, &metrics, &shutdown).await;

    // h2 prior knowledge to store's outbound listener, :authority billing.
    let outbound = store.outbound;
    let channel = tonic::transport::Endpoint::from_static("http://billing")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            let tcp = TcpStream::connect(outbound).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
        }))
        .await
        .unwrap();
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let store_id = ca.id(STORE).unwrap().as_str().to_owned();

    let unary = client.fetch_jwtsvid(JwtsvidRequest {
        audience: vec!["ledger".to_owned()],
        spiffe_id: String::new(),
    });
    let unary = tokio::time::timeout(HANG_GUARD, unary)
        .await
        .unwrap()
        .unwrap();
    let svid = &unary.get_ref().svids[0];
    assert_eq!(
        (svid.spiffe_id.as_str(), svid.svid.as_str()),
        (store_id.as_str(), "ledger")
    );

    let stream = client.fetch_x509svid(X509svidRequest {});
    let mut stream = tokio::time::timeout(HANG_GUARD, stream)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(message) = tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .unwrap()
    {
        received.push(message.unwrap().svids[0].spiffe_id.clone());
    }
    let expected: Vec<String> = (0..3).map(|i| format!("{store_id}#{i}")).collect();
    assert_eq!(received, expected);

    // A gRPC error status (in trailers) comes back as the app sent it.
    let status = client
        .validate_jwtsvid(ValidateJwtsvidRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "not in this test");
    shutdown.cancel();
}
