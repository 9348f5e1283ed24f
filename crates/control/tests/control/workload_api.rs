//! A control plane with its node API, an agent joined with a token, and SPIFFE
//! clients nobody here wrote (the `spiffe` crate) talking to the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::admin::{
    AuthorityState, JoinToken, ListEntries, PutEntry, Status, TokenRequest,
};
use api::contract::client::{Client, NoBody, UnixConnect};
use api::contract::node::Entry;
use control::agent::{AgentConfig, AgentError};
use identity::TrustBundle;
use spiffe::{WorkloadApiClient, X509Source};

use super::{Running, call, start_with};

const TD: &str = "meshwork.local";
const ID: &str = "spiffe://meshwork.local/test/interop";

/// The contract's client on a control socket.
fn admin_client(socket: impl Into<PathBuf>) -> Client<UnixConnect> {
    Client::new(UnixConnect(socket.into()))
}

/// A resource directory holding only a Mesh with the given SVID lifetime.
fn mesh_dir(svid_ttl: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = format!(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: t\nspec:\n  trustDomain: {TD}\n  svidTtl: {svid_ttl}\n"
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).expect("write");
    dir
}

pub(super) struct Mesh {
    pub(super) state: tempfile::TempDir,
    _resources: tempfile::TempDir,
    pub(super) control: Option<Running>,
}

impl Mesh {
    pub(super) async fn start(svid_ttl: &str) -> Mesh {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let state = tempfile::tempdir().expect("tempdir");
        let resources = mesh_dir(svid_ttl);
        let any_port = "127.0.0.1:0".parse().ok();
        let control = start_with(state.path(), resources.path(), any_port).await;
        Mesh {
            state,
            _resources: resources,
            control: Some(control),
        }
    }

    fn socket(&self) -> PathBuf {
        self.state.path().join("control.sock")
    }

    pub(super) async fn token(&self, ttl_secs: u64) -> String {
        let body = serde_json::to_string(&TokenRequest {
            ttl_secs: Some(ttl_secs),
        })
        .expect("json");
        let (status, body) = call(&self.socket(), "POST", "/v1/admin/tokens", Some(body)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<JoinToken>(&body)
            .expect("token")
            .token
    }

    pub(super) async fn entry(&self, id: &str, spiffe_id: &str, selectors: &[String]) {
        let body = serde_json::json!({"spiffeId": spiffe_id, "selectors": selectors}).to_string();
        let (status, body) = call(
            &self.socket(),
            "PUT",
            &format!("/v1/admin/entries/{id}"),
            Some(body),
        )
        .await;
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    }

    pub(super) fn agent_config(&self, token: String, socket: &Path) -> AgentConfig {
        let addr = std::fs::read_to_string(self.state.path().join("node-api.addr")).expect("addr");
        let bundle = std::fs::read_to_string(self.state.path().join("bundle.pem")).expect("bundle");
        AgentConfig {
            control: vec![addr.trim().parse().expect("addr")],
            trust_domain: TD.parse().expect("td"),
            bootstrap_bundle: TrustBundle::from_pem(TD.parse().expect("td"), &bundle)
                .expect("bundle"),
            join_token: Some(token),
            data_dir: None,
            socket: socket.to_owned(),
            admin: None,
        }
    }

    /// Starts an agent; the oneshot stops it.
    pub(super) fn agent(
        &self,
        config: AgentConfig,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), AgentError>>,
    ) {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(control::agent::run(config, async {
            let _ = rx.await;
        }));
        (stop, task)
    }
}

/// Selectors matching this very test process.
fn me() -> Vec<String> {
    let exe = std::env::current_exe().expect("exe");
    vec![
        format!("unix:uid:{}", nix_uid()),
        format!("unix:path:{}", exe.display()),
    ]
}

fn nix_uid() -> u32 {
    // /proc/self belongs to the process's effective uid.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"))
}

/// An error and all its sources, for matching on the root cause.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

pub(super) async fn wait_for_socket(path: &Path) {
    for _ in 0..500 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("agent socket {} never came up", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_fetches_an_svid_sees_it_rotate_and_validates_a_jwt() {
    let mesh = Mesh::start("6s").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    let endpoint = format!("unix:{}", sock.display());

    let source = X509Source::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("X509Source");
    let first = source.svid().expect("svid");
    assert_eq!(first.spiffe_id().to_string(), ID);
    let td = spiffe::TrustDomain::new(TD).expect("td");
    let bundle = source
        .try_bundle_for_trust_domain(&td)
        .expect("bundle for our trust domain");
    assert!(!bundle.authorities().is_empty());

    // A 6 s SVID is renewed at 40-50 % of its life and pushed down the stream.
    let mut updates = source.updated();
    let rotated = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            updates.changed().await.expect("updates");
            let now = source.svid().expect("svid");
            if now.leaf().as_ref() != first.leaf().as_ref() {
                return now;
            }
        }
    })
    .await
    .expect("no rotation within 30 s");
    assert_eq!(rotated.spiffe_id().to_string(), ID);

    // `ca rotate` publishes the new root to workloads before anything is signed with it.
    let (status, body) = call(&mesh.socket(), "POST", "/v1/admin/ca/rotate", None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let roots = source
                .try_bundle_for_trust_domain(&td)
                .map_or(0, |b| b.authorities().len());
            if roots == 2 {
                return;
            }
            updates.changed().await.expect("updates");
        }
    })
    .await
    .expect("the new root never reached the workload");
    let (status, _) = call(&mesh.socket(), "POST", "/v1/admin/ca/rotate", None).await;
    assert_eq!(status, 409, "a second rotation while one is pending");

    let client = WorkloadApiClient::connect_to(&endpoint)
        .await
        .expect("client");
    let token = client
        .fetch_jwt_token(["billing"], None)
        .await
        .expect("JWT-SVID");
    let validated = client
        .validate_jwt_token("billing", &token)
        .await
        .expect("validates");
    assert_eq!(validated.spiffe_id().to_string(), ID);
    assert!(
        client
            .validate_jwt_token("someone-else", &token)
            .await
            .is_err(),
        "audience not checked"
    );
    let jwt_bundles = client.fetch_jwt_bundles().await.expect("JWT bundles");
    assert!(jwt_bundles.get(&td).is_some());

    source.shutdown().await;
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_matching_no_entry_gets_nothing() {
    let mesh = Mesh::start("1h").await;
    // Same binary, another uid: not us.
    let exe = std::env::current_exe().expect("exe");
    mesh.entry(
        "other",
        "spiffe://meshwork.local/other",
        &[
            "unix:uid:54321".into(),
            format!("unix:path:{}", exe.display()),
        ],
    )
    .await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    let client = WorkloadApiClient::connect_to(format!("unix:{}", sock.display()))
        .await
        .expect("client");
    let err = client
        .fetch_x509_svid()
        .await
        .expect_err("no entry matches this process");
    // The spiffe crate reports the agent's PermissionDenied as NoIdentityIssued.
    assert!(
        matches!(err, spiffe::WorkloadApiError::NoIdentityIssued),
        "{err:?}"
    );
    assert!(client.fetch_jwt_token(["a"], None).await.is_err());
    assert!(
        client.fetch_x509_bundles().await.is_err(),
        "bundles leak to an unattested caller"
    );
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_security_header_are_invalid() {
    let mesh = Mesh::start("1h").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    let path = sock.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("channel");
    let mut raw = api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel);
    let err = raw
        .fetch_x509svid(api::workload::X509svidRequest {})
        .await
        .expect_err("no header");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_works_once_and_not_after_it_expires() {
    let mesh = Mesh::start("1h").await;
    let token = mesh.token(600).await;
    let dir = mesh.state.path();
    let (stop, first) = mesh.agent(mesh.agent_config(token.clone(), &dir.join("a.sock")));
    wait_for_socket(&dir.join("a.sock")).await;

    let reused = control::agent::run(
        mesh.agent_config(token, &dir.join("b.sock")),
        std::future::pending(),
    );
    let err = reused.await.expect_err("a reused token must be refused");
    assert!(chain(&err).contains("already used"), "{}", chain(&err));

    let short = mesh.token(1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = control::agent::run(
        mesh.agent_config(short, &dir.join("c.sock")),
        std::future::pending(),
    );
    let err = expired.await.expect_err("an expired token must be refused");
    assert!(chain(&err).contains("expired"), "{}", chain(&err));

    let made_up = control::agent::run(
        mesh.agent_config("nope".into(), &dir.join("d.sock")),
        std::future::pending(),
    );
    let err = made_up.await.expect_err("unknown token");
    assert!(chain(&err).contains("unknown"), "{}", chain(&err));
    let _ = stop.send(());
    first.await.expect("join").expect("agent");
    mesh.control.expect("control").shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_reports_expiry_for_check_and_prometheus() {
    let mesh = Mesh::start("1h").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr");
    let mut config = mesh.agent_config(mesh.token(600).await, &sock);
    config.admin = Some(admin);
    let (stop, agent) = mesh.agent(config);
    wait_for_socket(&sock).await;

    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(s) = control::agent::fetch_status(admin).await
                && !s.svids.is_empty()
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent never reported its SVID");
    assert_eq!(status.svids[0].1, ID);
    assert!(status.control_connected);

    let control_status = admin_client(mesh.socket())
        .call(&Status, &NoBody)
        .await
        .expect("status");
    let input = control::check::CheckInput {
        control: Ok(control_status),
        agent: Some(Ok(status.clone())),
        now: status.now,
        ca_warn_secs: 30 * 86_400,
    };
    let findings = control::check::evaluate(&input);
    assert!(
        findings
            .iter()
            .all(|f| f.level == control::check::Level::Ok),
        "{findings:#?}"
    );
    // The same mesh an hour later, with nothing renewed: every SVID has expired.
    let later = control::check::CheckInput {
        now: status.now + 3700,
        ..input
    };
    let worst = control::check::evaluate(&later)
        .iter()
        .map(|f| f.level)
        .max();
    assert_eq!(worst, Some(control::check::Level::Error));

    let body = http_get(admin, "/metrics").await;
    assert!(
        body.contains(&format!(
            "meshwork_svid_expiry_timestamp_seconds{{spiffe_id=\"{ID}\",entry=\"interop\"}} {}",
            status.svids[0].2
        )),
        "{body}"
    );
    assert!(
        body.contains("meshwork_ca_expiry_timestamp_seconds{root=\"0\"}"),
        "{body}"
    );
    assert!(body.contains("meshwork_control_connected 1"), "{body}");
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}

/// `GET path` over plain HTTP/1.1 on loopback.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_serving_while_control_is_gone() {
    let mut mesh = Mesh::start("1h").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    let client = WorkloadApiClient::connect_to(format!("unix:{}", sock.display()))
        .await
        .expect("client");
    let svid = client.fetch_x509_svid().await.expect("svid");
    let token = client
        .fetch_jwt_token(["billing"], None)
        .await
        .expect("jwt");

    mesh.control.take().expect("control").shutdown().await;

    // X.509: the same SVID, to a new connection too.
    let again = WorkloadApiClient::connect_to(format!("unix:{}", sock.display()))
        .await
        .expect("client");
    let cached = again
        .fetch_x509_svid()
        .await
        .expect("svid while control is down");
    assert_eq!(cached.leaf().as_ref(), svid.leaf().as_ref());
    // JWT: the token already minted for this audience still validates locally...
    assert_eq!(
        again
            .fetch_jwt_token(["billing"], None)
            .await
            .expect("cached jwt"),
        token
    );
    assert!(again.validate_jwt_token("billing", &token).await.is_ok());
    // ...but a new audience needs control.
    assert!(again.fetch_jwt_token(["elsewhere"], None).await.is_err());
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_with_its_saved_node_svid() {
    let mesh = Mesh::start("1h").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let data = mesh.state.path().join("agent-data");
    let mut config = mesh.agent_config(mesh.token(600).await, &sock);
    config.data_dir = Some(data.clone());
    let (stop, agent) = mesh.agent(config.clone());
    wait_for_socket(&sock).await;
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
    let key_mode = std::fs::metadata(data.join("node-key.pem")).expect("saved key");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );

    // No token this time: the saved node SVID is enough.
    config.join_token = None;
    let (stop, agent) = mesh.agent(config.clone());
    wait_for_socket(&sock).await;
    let client = WorkloadApiClient::connect_to(format!("unix:{}", sock.display()))
        .await
        .expect("client");
    let svid = client.fetch_x509_svid().await.expect("svid after resuming");
    assert_eq!(svid.spiffe_id().to_string(), ID);
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");

    // A damaged saved SVID is reported, not silently replaced.
    std::fs::write(data.join("node-svid.pem"), "garbage").expect("corrupt");
    let err = control::agent::run(config, std::future::pending())
        .await
        .expect_err("unreadable saved SVID");
    assert!(chain(&err).contains("node-svid.pem"), "{}", chain(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_entry_resources_are_applied_declaratively() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir().expect("tempdir");
    let resources = mesh_dir("1h");
    let exe = std::env::current_exe().expect("exe");
    let entry = format!(
        "apiVersion: meshwork.dev/v1alpha1\nkind: RegistrationEntry\nmetadata:\n  name: interop\nspec:\n  spiffeId: {ID}\n  selectors: [\"unix:uid:{}\", \"unix:path:{}\"]\n",
        nix_uid(),
        exe.display()
    );
    std::fs::write(resources.path().join("entry.yaml"), entry).expect("write");
    let control = start_with(state.path(), resources.path(), None).await;
    let admin = admin_client(state.path().join("control.sock"));
    let spec = api::entry::RegistrationEntrySpec {
        spiffe_id: "spiffe://meshwork.local/by-api".parse().expect("id"),
        selectors: vec!["unix:uid:4242".parse().expect("selector")],
        hint: None,
    };
    admin
        .call(&PutEntry("by-api"), &spec)
        .await
        .expect("api entry");
    let ids = |entries: Vec<Entry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(admin.call(&ListEntries, &NoBody).await.expect("entries")),
        ["by-api", "resource.default.interop"]
    );
    control.shutdown().await;

    // The resource is deleted: after a restart its entry is gone, the API's stays.
    std::fs::remove_file(resources.path().join("entry.yaml")).expect("rm");
    let control = start_with(state.path(), resources.path(), None).await;
    assert_eq!(
        ids(admin.call(&ListEntries, &NoBody).await.expect("entries")),
        ["by-api"]
    );
    control.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_ca_rotation_workloads_get_svids_from_the_new_root_and_trust_both() {
    // 2 s SVIDs: the new root is published at once and signs after 2 s + 5 s margin.
    let mesh = Mesh::start("2s").await;
    mesh.entry("interop", ID, &me()).await;
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;
    let endpoint = format!("unix:{}", sock.display());
    let source = X509Source::builder()
        .endpoint(&endpoint)
        .build()
        .await
        .expect("X509Source");
    let (status, _) = call(&mesh.socket(), "POST", "/v1/admin/ca/rotate", None).await;
    assert_eq!(status, 200);

    let td: identity::TrustDomain = TD.parse().expect("td");
    let spiffe_td = spiffe::TrustDomain::new(TD).expect("td");
    let mut updates = source.updated();
    let signed_by_new = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let roots = source
                .try_bundle_for_trust_domain(&spiffe_td)
                .map(|b| b.authorities().to_vec())
                .unwrap_or_default();
            if let (2, Ok(svid)) = (roots.len(), source.svid()) {
                let der = |c: &spiffe::Certificate| {
                    rustls_pki_types::CertificateDer::from(c.as_ref().to_vec())
                };
                let new_root = TrustBundle::new(td.clone(), vec![der(&roots[1])]).expect("bundle");
                let chain: Vec<_> = svid.cert_chain().iter().map(der).collect();
                let now = rustls_pki_types::UnixTime::now();
                if identity::verify_svid(&new_root, &chain, now, identity::PeerRole::Client).is_ok()
                {
                    return roots;
                }
            }
            updates.changed().await.expect("updates");
        }
    })
    .await
    .expect("no SVID from the new root within 30 s");
    // The old root is still trusted (it retires one SVID lifetime + skew later).
    assert_eq!(signed_by_new.len(), 2);
    let status = admin_client(mesh.socket())
        .call(&Status, &NoBody)
        .await
        .expect("status");
    let states: Vec<_> = status.authorities.iter().map(|a| a.state).collect();
    assert!(
        matches!(
            states.as_slice(),
            [AuthorityState::Retiring { .. }, AuthorityState::Active]
        ),
        "{states:?}"
    );
    source.shutdown().await;
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}
