//! Secrets into Tern the way Istio delivers them: an ADS control plane pushes a listener with a
//! TLS (mTLS) filter chain next to a plaintext one, and a cluster with Istio's
//! `transport_socket_matches`, all naming `default` and `ROOTCA` from the `sds-grpc` cluster (a
//! unix socket to a second control plane playing pilot-agent's SDS server). They warm until the
//! secrets arrive; a secret rotates without touching listeners or connections; a garbage secret
//! is NACKed and the last good one kept; the same works with secrets over ADS and with
//! `file-cert:`/`file-root:` names served from files.
//!
//! TLS itself is not served yet (the mTLS work): a connection that selects the TLS chain is
//! closed, and a request to a `tlsMode: istio` endpoint fails as a connect failure.
//!
//! Synchronisation is on the control planes' ACK/NACK records and recorded requests, on
//! `/ready`, and on real requests retried until a deadline; never on sleeps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tern_tests::bootstrap::{ads_bootstrap, grpc_cluster, pipe_address};
use tern_tests::http_backend::{HttpBackend, Response, http_request};
use tern_tests::inprocess::{self, Running, section};
use tern_tests::pki::{base64, pem};
use tern_tests::xds_server::{Recorded, Request, Snapshot, StreamKind, Verdict, XdsServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::envoy::config::listener::v3::Listener;
use xds_client::pb::envoy::config::route::v3::RouteConfiguration;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use xds_client::proto_json::{ReadOptions, from_text};
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

const DEADLINE: Duration = Duration::from_secs(20);

fn read<M: prost::Message + prost::Name + Default>(yaml: &str) -> M {
    from_text(yaml, "resource.yaml", ReadOptions::default())
        .unwrap_or_else(|e| panic!("test resource does not parse: {e}\n{yaml}"))
}

/// Where the listener and cluster take their secrets from, and under which names.
#[derive(Clone)]
struct Secrets {
    /// The `sds_config` of every reference.
    sds_config: &'static str,
    certificate: String,
    root: String,
}

const SDS_GRPC: &str = "{api_config_source: {api_type: GRPC, set_node_on_first_message_only: true, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, initial_fetch_timeout: 0s, resource_api_version: V3}";
const ADS: &str = "{ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}";

impl Secrets {
    fn istio() -> Secrets {
        Secrets {
            sds_config: SDS_GRPC,
            certificate: "default".into(),
            root: "ROOTCA".into(),
        }
    }

    fn over_ads() -> Secrets {
        Secrets {
            sds_config: ADS,
            ..Secrets::istio()
        }
    }

    /// The common_tls_context lines naming both secrets, indented by `indent`.
    fn common_tls_context(&self, alpn: &str, san: &str, indent: usize) -> String {
        let pad = " ".repeat(indent);
        format!(
            "{pad}common_tls_context:\n\
             {pad}  tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}\n\
             {pad}  alpn_protocols: [{alpn}]\n\
             {pad}  tls_certificate_sds_secret_configs: [{{name: \"{}\", sds_config: {}}}]\n\
             {pad}  combined_validation_context:\n\
             {pad}    default_validation_context: {{match_subject_alt_names: [{san}]}}\n\
             {pad}    validation_context_sds_secret_config: {{name: \"{}\", sds_config: {}}}\n",
            self.certificate, self.sds_config, self.root, self.sds_config
        )
    }

    /// Istio's virtualInbound in small: tls_inspector, an mTLS chain for TLS and a plaintext
    /// chain for the rest, both HTTP with routes `routes`.
    fn listener(&self) -> Listener {
        let hcm = |prefix: &str| {
            format!(
                r#"
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {prefix}
      rds: {{route_config_name: routes, config_source: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"#
            )
        };
        read(&format!(
            r#"
name: inbound
stat_prefix: inbound
address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
listener_filters:
- name: envoy.filters.listener.tls_inspector
  typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
filter_chains:
- name: inbound-mtls
  filter_chain_match: {{transport_protocol: tls}}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{}      require_client_certificate: true
  filters:{}
- name: inbound-plaintext
  filter_chain_match: {{transport_protocol: raw_buffer}}
  filters:{}
"#,
            self.common_tls_context("h2, http/1.1", "{prefix: \"spiffe://cluster.local/\"}", 6),
            hcm("inbound_mtls"),
            hcm("inbound_plain"),
        ))
    }

    /// An EDS cluster with Istio's auto-mTLS transport socket matches.
    fn cluster(&self, name: &str) -> Cluster {
        read(&format!(
            r#"
name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}
transport_socket_matches:
- name: tlsMode-istio
  match: {{tlsMode: istio}}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{}      sni: outbound_.80_._.{name}.default.svc.cluster.local
- name: tlsMode-disabled
  match: {{}}
  transport_socket:
    name: envoy.transport_sockets.raw_buffer
    typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
"#,
            self.common_tls_context(
                "istio-peer-exchange, istio",
                "{exact: \"spiffe://cluster.local/ns/default/sa/a\"}",
                6
            ),
        ))
    }

    fn certificate_secret(&self, chain: &str, key: &str) -> Secret {
        read(&format!(
            "name: {:?}\ntls_certificate:\n  certificate_chain: {{inline_string: {chain:?}}}\n  private_key: {{inline_string: {key:?}}}",
            self.certificate
        ))
    }

    fn root_secret(&self) -> Secret {
        read(&format!(
            "name: {:?}\nvalidation_context: {{trusted_ca: {{inline_string: {:?}}}}}",
            self.root,
            pem("ca.pem")
        ))
    }

    /// `default` (the workload certificate) and `ROOTCA`.
    fn both(&self) -> [Secret; 2] {
        [
            self.certificate_secret(&pem("workload.pem"), &pem("workload-key.pem")),
            self.root_secret(),
        ]
    }
}

fn routes() -> RouteConfiguration {
    read(
        r#"
name: routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    route: {cluster: a}
"#,
    )
}

/// One endpoint for `a`; `tls_mode` adds Istio's `envoy.transport_socket_match` metadata.
fn endpoints(port: u16, tls_mode: Option<&str>) -> ClusterLoadAssignment {
    let metadata = tls_mode
        .map(|m| {
            format!(
                "\n    metadata: {{filter_metadata: {{envoy.transport_socket_match: {{tlsMode: {m}}}}}}}"
            )
        })
        .unwrap_or_default();
    read(&format!(
        "cluster_name: a\nendpoints:\n- lb_endpoints:\n  - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{metadata}\n"
    ))
}

/// Listener, routes, cluster and endpoints (plaintext), without secrets.
fn mesh(secrets: &Secrets, backend: &HttpBackend) -> Snapshot {
    let mut snapshot = Snapshot::new();
    snapshot
        .add(&secrets.listener())
        .add(&routes())
        .add(&secrets.cluster("a"))
        .add(&endpoints(backend.address.port(), None));
    snapshot
}

/// Istio's bootstrap shape: delta ADS over `xds-grpc`, SDS over `sds-grpc`, both unix pipes.
fn bootstrap(ads: &Path, sds: &Path) -> String {
    ads_bootstrap(
        "sidecar~127.0.0.1~tern.test~test.svc.cluster.local",
        "DELTA_GRPC",
        &[
            grpc_cluster("xds-grpc", &pipe_address(ads)),
            grpc_cluster("sds-grpc", &pipe_address(sds)),
        ],
        "",
    )
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-sds-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

struct Harness {
    ads: XdsServer,
    sds: XdsServer,
    tern: Running,
    admin: SocketAddr,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    /// Both control planes serve their first snapshot before Tern starts.
    async fn start(tag: &str, ads_snapshot: Snapshot, sds_snapshot: Snapshot) -> (Harness, String) {
        let dir = scratch(tag);
        let (ads_socket, sds_socket) = (dir.join("XDS"), dir.join("sds.sock"));
        let ads = XdsServer::start_unix(&ads_socket).await.expect("ADS");
        let sds = XdsServer::start_unix(&sds_socket).await.expect("SDS");
        let version = ads.push(ads_snapshot).await;
        sds.push(sds_snapshot).await;
        let tern = Running::start(&bootstrap(&ads_socket, &sds_socket), 2).await;
        let admin = tern.admin().await;
        let harness = Harness {
            ads,
            sds,
            tern,
            admin,
            dir,
        };
        (harness, version)
    }

    async fn ready(&self) -> u16 {
        http_request(self.admin, "GET", "admin", "/ready", &[])
            .await
            .expect("admin answers")
            .status
    }

    async fn wait_live(&self) {
        inprocess::wait_live(self.admin).await;
    }

    async fn config_dump(&self, query: &str) -> serde_json::Value {
        inprocess::config_dump(self.admin, query).await
    }

    async fn secrets_dump(&self) -> serde_json::Value {
        let dump = self.config_dump("").await;
        section(&dump, "SecretsConfigDump").clone()
    }

    /// Pushes `secrets` on the SDS control plane and waits for Tern's ACK.
    async fn serve_secrets(&self, secrets: &[Secret]) -> String {
        let mut snapshot = Snapshot::new();
        for s in secrets {
            snapshot.add(s);
        }
        let version = self.sds.push(snapshot).await;
        self.sds
            .wait_acked(&version, &[SECRET])
            .await
            .expect("secrets ACKed");
        version
    }

    async fn listener(&self) -> SocketAddr {
        self.tern.wait_listener("inbound").await
    }
}

/// The `name` and `version_info` of each entry of a secrets list.
fn names_and_versions(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap_or_default().to_string(),
                        s["version_info"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn active_secret<'a>(secrets: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    secrets["dynamic_active_secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no active secret {name} in {secrets}"))
}

/// The secret names a request on the SDS stream subscribes to.
fn sds_names(r: &Recorded) -> Vec<String> {
    match &r.request {
        Request::StateOfTheWorld(q) if r.kind == StreamKind::Secrets && q.type_url == SECRET => {
            let mut names = q.resource_names.clone();
            names.sort();
            names
        }
        _ => Vec::new(),
    }
}

async fn get(listener: SocketAddr) -> Response {
    http_request(listener, "GET", "a.test", "/hello", &[])
        .await
        .expect("a response through Tern")
}

/// A ClientHello from a real TLS client.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("server name");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("write ClientHello");
    hello
}

/// Sends a ClientHello and returns what came back before the connection closed.
async fn tls_attempt(listener: SocketAddr) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(listener)
        .await
        .expect("connect");
    stream.write_all(&client_hello()).await.expect("write");
    let mut answer = Vec::new();
    // A reset (the hello unread when Tern closes) is a close too.
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("Tern closes a connection on the TLS chain");
    answer
}

/// Tern up with the mesh config pushed and the secrets served, LIVE.
async fn live(tag: &str, secrets: &Secrets, backend: &HttpBackend) -> (Harness, String) {
    let mut sds = Snapshot::new();
    for s in secrets.both() {
        sds.add(&s);
    }
    let (h, _) = Harness::start(tag, mesh(secrets, backend), sds).await;
    h.wait_live().await;
    let secrets_version = names_and_versions(&h.secrets_dump().await["dynamic_active_secrets"])
        .first()
        .map(|(_, v)| v.clone())
        .expect("secrets active");
    (h, secrets_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_cluster_warm_until_sds_secrets_arrive_then_plaintext_routes() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let secrets = Secrets::istio();
    let (h, v1) = Harness::start("warm", mesh(&secrets, &backend), Snapshot::new()).await;
    h.ads
        .wait_acked(&v1, &[CLUSTER, LISTENER, ROUTE, ENDPOINT])
        .await
        .expect("the mesh config is ACKed while it warms");
    let subscribed = h
        .sds
        .wait_request(|r| sds_names(r) == ["ROOTCA", "default"])
        .await
        .expect("Tern asks sds-grpc for default and ROOTCA");
    assert!(
        subscribed.request.has_node(),
        "the node goes on the first SDS request"
    );
    assert!(
        h.ads
            .requests()
            .await
            .iter()
            .all(|r| r.request.type_url() != SECRET),
        "nothing asked of the ADS stream"
    );

    // Warming: not served, not LIVE, shown as warming.
    assert_eq!(h.ready().await, 503, "not LIVE while secrets are missing");
    assert!(
        !h.tern
            .handle
            .listener_addresses()
            .await
            .contains_key("inbound"),
        "a warming listener does not accept"
    );
    assert!(!h.tern.handle.snapshot().clusters.contains_key("a"));
    assert_eq!(h.tern.stat("listener_manager.total_listeners_warming"), 1);
    assert_eq!(h.tern.stat("cluster_manager.warming_clusters"), 1);
    let dump = h.config_dump("").await;
    let listener = &section(&dump, "ListenersConfigDump")["dynamic_listeners"][0];
    assert_eq!(listener["name"], "inbound");
    assert!(listener.get("active_state").is_none(), "{listener}");
    let listener_version = listener["warming_state"]["version_info"].clone();
    assert!(listener_version.as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(
        section(&dump, "ListenersConfigDump")["version_info"],
        v1.as_str()
    );
    let clusters = section(&dump, "ClustersConfigDump");
    assert_eq!(
        clusters["dynamic_warming_clusters"][0]["cluster"]["name"],
        "a"
    );
    assert!(
        clusters.get("dynamic_active_clusters").is_none(),
        "{clusters}"
    );
    let warming = &section(&dump, "SecretsConfigDump")["dynamic_warming_secrets"];
    assert_eq!(
        names_and_versions(warming),
        [
            ("ROOTCA".to_string(), "uninitialized".to_string()),
            ("default".to_string(), "uninitialized".to_string())
        ]
    );
    assert_eq!(warming[0]["secret"]["name"], "ROOTCA");

    // The secrets arrive: everything goes active and LIVE, plaintext traffic routes.
    let version = h.serve_secrets(&secrets.both()).await;
    h.wait_live().await;
    let dump = h.config_dump("").await;
    let listener = &section(&dump, "ListenersConfigDump")["dynamic_listeners"][0];
    assert_eq!(
        listener["active_state"]["version_info"], listener_version,
        "the version that warmed is the one serving"
    );
    assert!(listener.get("warming_state").is_none(), "{listener}");
    let clusters = section(&dump, "ClustersConfigDump");
    assert_eq!(
        clusters["dynamic_active_clusters"][0]["cluster"]["name"],
        "a"
    );
    let shown = section(&dump, "SecretsConfigDump");
    // Certificates before validation contexts, in Envoy's order.
    assert_eq!(
        names_and_versions(&shown["dynamic_active_secrets"]),
        [
            ("default".to_string(), version.clone()),
            ("ROOTCA".to_string(), version.clone())
        ]
    );
    assert!(shown.get("dynamic_warming_secrets").is_none(), "{shown}");
    let default = &active_secret(shown, "default")["secret"]["tls_certificate"];
    assert_eq!(
        default["certificate_chain"]["inline_string"],
        pem("workload.pem")
    );
    assert_eq!(
        default["private_key"]["inline_string"], "[redacted]",
        "the key is redacted as Envoy redacts it"
    );
    assert!(!dump.to_string().contains("PRIVATE KEY"), "no key anywhere");
    // As istioctl proxy-config secret asks for them.
    let masked = h
        .config_dump("?mask=dynamic_active_secrets,dynamic_warming_secrets")
        .await;
    let masked_secrets = section(&masked, "SecretsConfigDump");
    assert_eq!(
        names_and_versions(&masked_secrets["dynamic_active_secrets"]).len(),
        2,
        "{masked}"
    );
    // Envoy leaves out the configs the mask does not fit: only the secrets remain.
    assert_eq!(
        masked["configs"].as_array().map(Vec::len),
        Some(1),
        "{masked}"
    );
    let items = h.config_dump("?resource=dynamic_active_secrets").await;
    assert_eq!(
        items["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret"
    );
    assert_eq!(h.tern.stat("sds.default.update_success"), 1);
    assert_eq!(h.tern.stat("sds.ROOTCA.update_success"), 1);
    assert_eq!(h.tern.handle.snapshot().secrets.len(), 2);

    let listener = h.listener().await;
    let response = get(listener).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(backend.requests(), 1);

    // A TLS client selects the mTLS chain: closed (TLS termination comes with mTLS), counted.
    assert_eq!(
        tls_attempt(listener).await,
        b"",
        "no bytes answer a ClientHello"
    );
    assert_eq!(h.tern.stat("listener.inbound.ssl.connection_error"), 1);
    assert_eq!(backend.requests(), 1);

    // An endpoint whose tlsMode selects TLS: a connect failure (UF), the backend never reached.
    let mut tls_endpoint = mesh(&secrets, &backend);
    tls_endpoint.add(&endpoints(backend.address.port(), Some("istio")));
    let v2 = h.ads.push(tls_endpoint).await;
    h.ads.wait_acked(&v2, &[ENDPOINT]).await.expect("EDS ACKed");
    let response = get(listener).await;
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(
        response.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
    );
    assert_eq!(backend.requests(), 1);
    assert_eq!(h.tern.stat("cluster.a.upstream_cx_connect_fail"), 1);
    // tlsMode: disabled is plaintext again.
    let mut plain = mesh(&secrets, &backend);
    plain.add(&endpoints(backend.address.port(), Some("disabled")));
    let v3 = h.ads.push(plain).await;
    h.ads.wait_acked(&v3, &[ENDPOINT]).await.expect("EDS ACKed");
    assert_eq!(get(listener).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_keeps_listeners_and_open_connections() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let secrets = Secrets::istio();
    let (h, first) = live("rotate", &secrets, &backend).await;
    let listener = h.listener().await;

    // A keep-alive connection opened before the rotation.
    let stream = tokio::net::TcpStream::connect(listener)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let request = || {
        hyper::Request::get("/kept")
            .header("host", "a.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    let before = sender.send_request(request()).await.expect("answer");
    assert_eq!(before.status(), 200);
    let modified = h.tern.stat("listener_manager.listener_modified");
    let cluster_modified = h.tern.stat("cluster_manager.cluster_modified");
    let listener_entry = h.tern.handle.snapshot().listeners["inbound"].clone();

    let rotated = secrets.certificate_secret(&pem("rotated.pem"), &pem("rotated-key.pem"));
    let version = h.serve_secrets(&[rotated, secrets.root_secret()]).await;
    assert_ne!(version, first);
    let shown = h.secrets_dump().await;
    let default = active_secret(&shown, "default");
    assert_eq!(default["version_info"], version.as_str());
    assert_eq!(
        default["secret"]["tls_certificate"]["certificate_chain"]["inline_string"],
        pem("rotated.pem")
    );
    assert_eq!(h.tern.stat("sds.default.update_success"), 2);

    // The listener and cluster were not touched; the open connection still answers.
    assert_eq!(h.tern.stat("listener_manager.listener_modified"), modified);
    assert_eq!(
        h.tern.stat("cluster_manager.cluster_modified"),
        cluster_modified
    );
    assert!(Arc::ptr_eq(
        &listener_entry,
        &h.tern.handle.snapshot().listeners["inbound"]
    ));
    let after = sender
        .send_request(request())
        .await
        .expect("the connection from before the rotation still answers");
    assert_eq!(after.status(), 200);
    assert_eq!(backend.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_secret_is_nacked_naming_it_and_the_last_good_one_stays() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let secrets = Secrets::istio();
    let (h, good) = live("garbage", &secrets, &backend).await;

    let garbage = secrets.certificate_secret(
        "-----BEGIN CERTIFICATE-----\nthis is not base64!\n-----END CERTIFICATE-----\n",
        &pem("workload-key.pem"),
    );
    let mut snapshot = Snapshot::new();
    snapshot.add(&garbage).add(&secrets.root_secret());
    let version = h.sds.push(snapshot).await;
    match h.sds.wait_verdict(&version, SECRET).await.expect("verdict") {
        Verdict::Nack(detail) => {
            assert!(
                detail.contains(
                    "secret \"default\": tls_certificate.certificate_chain: malformed PEM"
                ),
                "the NACK names the secret and the field: {detail}"
            );
            assert!(!detail.contains("ROOTCA"), "only the bad one: {detail}");
        }
        Verdict::Ack => panic!("Tern ACKed a garbage certificate"),
    }
    let shown = h.secrets_dump().await;
    let default = active_secret(&shown, "default");
    assert_eq!(
        default["version_info"],
        good.as_str(),
        "the last good one stays"
    );
    assert_eq!(
        default["secret"]["tls_certificate"]["certificate_chain"]["inline_string"],
        pem("workload.pem")
    );
    assert_eq!(h.tern.stat("sds.default.update_rejected"), 1);
    assert_eq!(get(h.listener().await).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_over_ads_warm_and_activate_the_listener_and_cluster() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let secrets = Secrets::over_ads();
    let (h, v1) = Harness::start("ads", mesh(&secrets, &backend), Snapshot::new()).await;
    h.ads
        .wait_acked(&v1, &[CLUSTER, LISTENER, ROUTE, ENDPOINT])
        .await
        .expect("ACKed while warming");
    h.ads
        .wait_request(|r| match &r.request {
            Request::Delta(q) if q.type_url == SECRET => {
                let mut names = q.resource_names_subscribe.clone();
                names.sort();
                names == ["ROOTCA", "default"]
            }
            _ => false,
        })
        .await
        .expect("secrets subscribed by name on the ADS stream");
    assert_eq!(h.ready().await, 503);
    assert!(
        h.sds.requests().await.is_empty(),
        "no SDS stream for ADS secrets"
    );

    let mut with_secrets = mesh(&secrets, &backend);
    for s in secrets.both() {
        with_secrets.add(&s);
    }
    let v2 = h.ads.push(with_secrets).await;
    h.ads
        .wait_acked(&v2, &[SECRET])
        .await
        .expect("secrets ACKed");
    h.wait_live().await;
    let shown = h.secrets_dump().await;
    assert_eq!(
        names_and_versions(&shown["dynamic_active_secrets"]).len(),
        2,
        "{shown}"
    );
    assert_eq!(get(h.listener().await).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_cert_and_file_root_names_are_served_from_their_files() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let files = scratch("files-pki");
    let (cert, key, root) = (
        files.join("cert.pem"),
        files.join("key.pem"),
        files.join("root.pem"),
    );
    std::fs::write(&cert, pem("workload.pem")).expect("write");
    std::fs::write(&key, pem("workload-key.pem")).expect("write");
    std::fs::write(&root, pem("ca.pem")).expect("write");
    let secrets = Secrets {
        sds_config: SDS_GRPC,
        certificate: format!("file-cert:{}~{}", cert.display(), key.display()),
        root: format!("file-root:{}", root.display()),
    };
    // The SDS control plane holds no secrets: it answers these names from the files.
    let (h, _) = Harness::start("files", mesh(&secrets, &backend), Snapshot::new()).await;
    h.wait_live().await;
    let shown = h.secrets_dump().await;
    let certificate = active_secret(&shown, &secrets.certificate);
    assert_eq!(
        certificate["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"],
        base64(pem("workload.pem").as_bytes()),
        "the chain is the file's bytes, inline"
    );
    assert_eq!(
        certificate["secret"]["tls_certificate"]["private_key"]["inline_bytes"],
        base64(b"[redacted]")
    );
    assert_eq!(
        active_secret(&shown, &secrets.root)["secret"]["validation_context"]["trusted_ca"]["inline_bytes"],
        base64(pem("ca.pem").as_bytes())
    );
    assert_eq!(get(h.listener().await).await.status, 200);

    // The files are rewritten (a rotation on disk): the new certificate reaches Tern.
    let swap = |path: &Path, content: String| {
        let next = path.with_extension("next");
        std::fs::write(&next, content).expect("write");
        std::fs::rename(&next, path).expect("rename");
    };
    swap(&cert, pem("rotated.pem"));
    swap(&key, pem("rotated-key.pem"));
    let version = h
        .sds
        .refresh_files()
        .await
        .expect("changed files are a new version");
    h.sds
        .wait_acked(&version, &[SECRET])
        .await
        .expect("the rotated files are ACKed");
    let shown = h.secrets_dump().await;
    let certificate = active_secret(&shown, &secrets.certificate);
    assert_eq!(certificate["version_info"], version.as_str());
    assert_eq!(
        certificate["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"],
        base64(pem("rotated.pem").as_bytes())
    );
    let _ = std::fs::remove_dir_all(&files);
}
