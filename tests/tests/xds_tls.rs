//! The control plane over TLS and mTLS, as istiod serves xDS on 15012: the bootstrap's `xds-grpc`
//! cluster carries an `UpstreamTlsContext` (client certificate, trusted CA, a `spiffe://` URI SAN
//! matcher, SNI), and the test control plane serves TLS requiring a client certificate.
//!
//! Envoy 1.40.0 connects, ACKs and routes (the TLS test server is a faithful control plane);
//! Tern does the same, sending the configured SNI (a DNS control plane's name only with
//! `auto_host_sni`, as Envoy). With the wrong trusted CA, a SAN matcher that does not match, or no
//! client certificate for a server that wants one, neither ever sends an ADS request: each stays
//! not ready, the server records the failed handshakes (retried with back-off), and each says
//! why (Tern in its log, Envoy in its `ssl.*` counters). A bootstrap whose xds cluster names an
//! SDS secret is refused by Tern at start-up naming the field (Envoy crashes on a secret over ADS
//! there, and uses one from a separate SDS cluster).
//!
//! Synchronisation is on the control plane's records (handshakes, requests, ACKs), on `/ready`
//! and on real requests, with deadlines; never on sleeps.

#[path = "xds/resources.rs"]
#[allow(dead_code)] // shared with the other xDS tests
mod resources;

use std::net::SocketAddr;
use std::time::Duration;
use tern_tests::bootstrap::{ads_bootstrap, grpc_cluster, pipe_address, socket_address};
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::pki;
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess, tern_binary};
use tern_tests::xds_server::{Handshake, Request, ServerTls, Snapshot, XdsServer};
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// The URI SAN of `xds-server.pem` (also carries DNS:xds.tern.test and IP:127.0.0.1).
const ISTIOD_SAN: &str = "spiffe://cluster.local/ns/istio-system/sa/istiod";
/// The URI SAN of `workload.pem`, the client certificate.
const CLIENT_SAN: &str = "URI:spiffe://cluster.local/ns/default/sa/tern";
/// The SNI sent: a name the server's certificate does not carry, since neither Envoy nor Tern
/// checks the name when SAN matchers pin the server.
const SNI: &str = "istiod.istio-system.svc";
const DEADLINE: Duration = Duration::from_secs(20);

fn envoy_available() -> bool {
    prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    )
}

fn pki_file(name: &str) -> String {
    pki::dir().join(name).display().to_string()
}

/// The test control plane over TLS with `xds-server.pem`, requiring client certificates signed
/// by the test CA.
async fn mtls_server() -> XdsServer {
    XdsServer::start_tls(ServerTls {
        certificate_chain: pki::dir().join("xds-server.pem"),
        private_key: pki::dir().join("xds-server-key.pem"),
        client_ca: Some(pki::dir().join("ca.pem")),
    })
    .await
    .expect("TLS control plane")
}

/// The parts of the xds cluster's `UpstreamTlsContext` a test varies.
struct Context {
    /// Present `workload.pem` as the client certificate.
    client_certificate: bool,
    /// The PEM file of the trusted CA.
    trusted_ca: &'static str,
    /// The exact URI SAN the server must have.
    san: &'static str,
    /// `tls_params` TLS 1.3 only (else Envoy's client default, TLS 1.2).
    tls13: bool,
}

impl Context {
    fn good() -> Context {
        Context {
            client_certificate: true,
            trusted_ca: "ca.pem",
            san: ISTIOD_SAN,
            tls13: false,
        }
    }

    /// Flow-style YAML of the `UpstreamTlsContext`. The CA is inline (a data source kind other
    /// than the files the certificate and key come from).
    fn yaml(&self) -> String {
        let certificates = if self.client_certificate {
            format!(
                "tls_certificates: [{{certificate_chain: {{filename: \"{}\"}}, private_key: {{filename: \"{}\"}}}}], ",
                pki_file("workload.pem"),
                pki_file("workload-key.pem")
            )
        } else {
            String::new()
        };
        let params = if self.tls13 {
            "tls_params: {tls_minimum_protocol_version: TLSv1_3}, "
        } else {
            ""
        };
        format!(
            "{{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: {SNI}, common_tls_context: {{{params}{certificates}validation_context: {{trusted_ca: {{inline_string: {:?}}}, match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: \"{}\"}}}}]}}}}}}",
            pki::pem(self.trusted_ca),
            self.san
        )
    }
}

/// Istio's bootstrap shape (delta ADS on `xds-grpc`, LDS/CDS waiting forever), the xds cluster
/// over TLS with `context`.
fn bootstrap(server: &XdsServer, context: &Context) -> String {
    let address = socket_address(server.local_addr().expect("TCP"));
    let cluster = format!(
        "{}\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config: {}",
        grpc_cluster("xds-grpc", &address),
        context.yaml()
    );
    ads_bootstrap(
        "sidecar~127.0.0.1~tls.test~test.svc.cluster.local",
        "DELTA_GRPC",
        &[cluster],
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}",
    )
}

fn snapshot(backend_port: u16) -> Snapshot {
    resources::mesh("backend", backend_port)
}

/// Connects over mTLS, ACKs the snapshot and routes a request to the backend.
async fn connects_acks_and_routes(kind: ProxyKind, binary: &std::path::Path) {
    let server = mtls_server().await;
    let backend = HttpBackend::start("a").await.expect("backend");
    let v1 = server.push(snapshot(backend.address.port())).await;
    let proxy = ProxyProcess::start(kind, binary, &bootstrap(&server, &Context::good()), 1)
        .await
        .expect("the proxy becomes ready from ADS over mTLS");
    server
        .wait_acked(&v1, &[CLUSTER, ENDPOINT, LISTENER, ROUTE])
        .await
        .expect("the first snapshot is ACKed");
    // One handshake, with the configured SNI, and the client presented the workload certificate.
    let handshakes = server.handshakes();
    assert_eq!(
        handshakes,
        [Handshake::Accepted {
            sni: Some(SNI.to_string()),
            client_sans: vec![CLIENT_SAN.to_string()]
        }],
        "{}",
        proxy.log()
    );
    assert_eq!(
        proxy.get("/ready").await.expect("admin"),
        (200, "LIVE\n".into())
    );
    let listener: SocketAddr = proxy.listener_address("http_in").await.expect("bound");
    let response = http_request(listener, "GET", "example.test", "/hello", &[])
        .await
        .expect("a response");
    assert_eq!(response.status, 200, "{}\n{}", response.text(), proxy.log());
    assert_eq!(backend.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_ads_over_mtls_acks_and_routes() {
    if !envoy_available() {
        return;
    }
    let binary = envoy_binary().expect("checked");
    connects_acks_and_routes(ProxyKind::Envoy, &binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_delta_ads_over_mtls_goes_live_and_routes() {
    connects_acks_and_routes(ProxyKind::Tern, &tern_binary()).await;
}

/// How a proxy must fail: what the server's handshake error says, and what the proxy says.
struct Refusal {
    /// In the server's record of each failed handshake.
    server: &'static str,
    /// In Tern's log.
    tern_log: &'static str,
    /// An Envoy counter that must have counted the failure.
    envoy_stat: &'static str,
}

/// Starts the proxy against the mTLS server with `context`: it must never connect.
async fn never_connects(kind: ProxyKind, binary: &std::path::Path, context: Context, why: Refusal) {
    let server = mtls_server().await;
    let backend = HttpBackend::start("a").await.expect("backend");
    server.push(snapshot(backend.address.port())).await;
    let proxy = ProxyProcess::start_unready(kind, binary, &bootstrap(&server, &context))
        .await
        .expect("the proxy starts");
    // Two failed handshakes: the first, and a retry after back-off.
    let handshakes = server
        .wait_handshakes(|h| h.len() >= 2)
        .await
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", proxy.log()));
    for handshake in &handshakes {
        match handshake {
            Handshake::Failed(reason) => assert!(
                reason.contains(why.server),
                "server saw {reason:?}, expected {:?}",
                why.server
            ),
            Handshake::Accepted { .. } => panic!("a handshake completed: {handshakes:?}"),
        }
    }
    assert!(server.requests().await.is_empty(), "no ADS request ever");
    let (status, body) = proxy.get("/ready").await.expect("admin");
    assert_eq!(status, 503, "not ready: {body}");
    match kind {
        ProxyKind::Tern => {
            // A TLS 1.3 refusal reaches the client after its own handshake finished, and the
            // channel may retry before the stream loop logs the failure: wait for the line.
            proxy
                .wait_for_log(why.tern_log, std::time::Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("the log names the cause: {e}"));
            let log = proxy.log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(why.tern_log)).collect();
            assert!(
                !lines.is_empty(),
                "the log names the cause {:?}:\n{log}",
                why.tern_log
            );
            eprintln!("Tern: {}", lines[0]);
        }
        ProxyKind::Envoy => {
            let stat = format!("cluster.xds-grpc.{}", why.envoy_stat);
            let (_, stats) = proxy
                .get(&format!("/stats?filter=^{stat}$"))
                .await
                .expect("stats");
            let count: u64 = stats
                .trim()
                .strip_prefix(&format!("{stat}: "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{stat} in {stats:?}"));
            assert!(count >= 1, "{stats}");
            eprintln!("Envoy: {}", stats.trim());
        }
    }
}

const WRONG_CA: Refusal = Refusal {
    server: "UnknownCA",
    tern_log: "not signed by a trusted CA (unknown issuer)",
    envoy_stat: "ssl.fail_verify_error",
};

fn wrong_ca() -> Context {
    Context {
        trusted_ca: "other-ca.pem",
        ..Context::good()
    }
}

const SAN_MISMATCH: Refusal = Refusal {
    server: "CertificateUnknown",
    tern_log: "the server's certificate SANs [DNS:xds.tern.test, URI:spiffe://cluster.local/ns/istio-system/sa/istiod, IP:127.0.0.1] match none of the 1 subject_alt_names matchers",
    envoy_stat: "ssl.fail_verify_san",
};

fn san_mismatch() -> Context {
    Context {
        san: "spiffe://cluster.local/ns/istio-system/sa/not-istiod",
        ..Context::good()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_with_the_wrong_trusted_ca_never_connects() {
    never_connects(ProxyKind::Tern, &tern_binary(), wrong_ca(), WRONG_CA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_the_wrong_trusted_ca_never_connects() {
    if !envoy_available() {
        return;
    }
    let binary = envoy_binary().expect("checked");
    never_connects(ProxyKind::Envoy, &binary, wrong_ca(), WRONG_CA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_with_a_san_matcher_that_does_not_match_never_connects() {
    never_connects(
        ProxyKind::Tern,
        &tern_binary(),
        san_mismatch(),
        SAN_MISMATCH,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_with_a_san_matcher_that_does_not_match_never_connects() {
    if !envoy_available() {
        return;
    }
    let binary = envoy_binary().expect("checked");
    never_connects(ProxyKind::Envoy, &binary, san_mismatch(), SAN_MISMATCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requiring_a_client_certificate_rejects_tern_without_one() {
    let context = Context {
        client_certificate: false,
        ..Context::good()
    };
    let why = Refusal {
        server: "peer sent no certificates",
        tern_log: "(no client certificate is configured; the server may require one)",
        envoy_stat: "",
    };
    never_connects(ProxyKind::Tern, &tern_binary(), context, why).await;
}

/// Over TLS 1.3 the server refuses the missing certificate after the handshake completed; the
/// broken connection then fails the stream, and the log says what it may mean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requiring_a_client_certificate_rejects_tern_without_one_over_tls13() {
    let context = Context {
        client_certificate: false,
        tls13: true,
        ..Context::good()
    };
    let why = Refusal {
        server: "peer sent no certificates",
        tern_log: "(over TLS without a client certificate: the server may require one)",
        envoy_stat: "",
    };
    never_connects(ProxyKind::Tern, &tern_binary(), context, why).await;
}

/// Runs `tern` on `bootstrap` until it exits: exit code and stderr. `tag` keeps concurrent
/// tests' scratch files apart.
async fn tern_exit(tag: &str, bootstrap: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("tern-xds-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let path = dir.join("bootstrap.yaml");
    std::fs::write(&path, bootstrap).expect("bootstrap written");
    let run = tokio::process::Command::new(tern_binary())
        .arg("-c")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("tern exits by itself")
        .expect("tern runs");
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A bootstrap whose `xds-grpc` TLS takes its client certificate `name` over SDS from
/// `sds_config` (flow YAML), plus `extra` static clusters.
fn sds_bootstrap(server: &XdsServer, name: &str, sds_config: &str, extra: &[String]) -> String {
    let context = format!(
        "{{\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, common_tls_context: {{tls_certificate_sds_secret_configs: [{{name: \"{name}\", sds_config: {sds_config}}}]}}}}"
    );
    let address = socket_address(server.local_addr().expect("TCP"));
    let mut clusters = vec![format!(
        "{}\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config: {context}",
        grpc_cluster("xds-grpc", &address),
    )];
    clusters.extend_from_slice(extra);
    ads_bootstrap(
        "sidecar~127.0.0.1~tls.test~test.svc.cluster.local",
        "DELTA_GRPC",
        &clusters,
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}",
    )
}

const SDS_OVER_ADS: &str = "{ads: {}, resource_api_version: V3}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_over_ads_for_the_xds_cluster_is_refused_naming_the_field() {
    let server = mtls_server().await;
    let bootstrap = sds_bootstrap(&server, "default", SDS_OVER_ADS, &[]);
    let (code, stderr) = tern_exit("ads", &bootstrap).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "tern: bootstrap: static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: a secret over ADS cannot secure the connection that carries ADS; use a static certificate (inline, filename, environment_variable or static_resources.secrets)\n"
    );
    assert!(server.handshakes().is_empty(), "no connection was tried");
}

/// What Envoy 1.40.0 does with the same bootstrap: it crashes (SIGSEGV) while loading the
/// cluster, before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_crashes_on_a_secret_over_ads_for_the_xds_cluster() {
    if !envoy_available() {
        return;
    }
    let server = mtls_server().await;
    let bootstrap = sds_bootstrap(&server, "default", SDS_OVER_ADS, &[]);
    let binary = envoy_binary().expect("checked");
    // It may crash before or after it writes its admin address.
    match ProxyProcess::start_unready(ProxyKind::Envoy, &binary, &bootstrap).await {
        Ok(mut envoy) => {
            use std::os::unix::process::ExitStatusExt;
            let status = envoy.wait_for_exit(DEADLINE).await.expect("wait");
            assert_eq!(
                status.and_then(|s| s.signal()),
                Some(nix::libc::SIGSEGV),
                "{status:?}"
            );
        }
        Err(e) => assert!(
            format!("{e:#}").contains("Caught Segmentation fault"),
            "Envoy failed otherwise: {e:#}"
        ),
    }
    assert!(server.handshakes().is_empty(), "no connection was tried");
}

/// Tern refuses a client certificate from a separate SDS cluster too; Envoy takes it from there
/// and then connects (a difference, documented in docs/envoy-differences.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_an_sds_cluster_is_refused_by_tern_and_used_by_envoy() {
    let server = mtls_server().await;
    let socket = std::env::temp_dir().join(format!("tern-xds-tls-sds-{}.sock", std::process::id()));
    let sds = XdsServer::start_unix(&socket).await.expect("SDS server");
    // pilot-agent's way of naming certificate files as a secret.
    let name = format!(
        "file-cert:{}~{}",
        pki_file("workload.pem"),
        pki_file("workload-key.pem")
    );
    let sds_config = "{api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, resource_api_version: V3}";
    let sds_cluster = grpc_cluster("sds-grpc", &pipe_address(&socket));
    let bootstrap = sds_bootstrap(&server, &name, sds_config, &[sds_cluster]);

    let (code, stderr) = tern_exit("sds", &bootstrap).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "tern: bootstrap: static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: SDS secrets are not supported on a control plane connection; use a static certificate (inline, filename, environment_variable or static_resources.secrets)\n"
    );
    assert!(server.handshakes().is_empty());
    assert!(sds.requests().await.is_empty(), "nor was SDS asked");

    if !envoy_available() {
        return;
    }
    let binary = envoy_binary().expect("checked");
    let envoy = ProxyProcess::start_unready(ProxyKind::Envoy, &binary, &bootstrap)
        .await
        .expect("Envoy starts");
    sds.wait_request(|r| match &r.request {
        Request::StateOfTheWorld(q) => q.type_url == SECRET && q.resource_names == [name.clone()],
        Request::Delta(_) => false,
    })
    .await
    .expect("Envoy asks the SDS cluster for the certificate");
    let handshakes = server
        .wait_handshakes(|h| !h.is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", envoy.log()));
    assert_eq!(
        handshakes[0],
        Handshake::Accepted {
            sni: None,
            client_sans: vec![CLIENT_SAN.to_string()]
        },
        "Envoy presents the certificate SDS gave it"
    );
    server
        .wait_request(|r| r.request.type_url() == CLUSTER)
        .await
        .expect("then Envoy asks for clusters over ADS");
    let _ = std::fs::remove_file(socket);
}

/// The SNI the proxy sends to a `LOGICAL_DNS` control plane at `localhost` with `sni_fields`
/// (flow YAML, replacing `sni: ...`).
async fn dns_sni(kind: ProxyKind, binary: &std::path::Path, sni_fields: &str) -> Option<String> {
    let server = mtls_server().await;
    let bootstrap = bootstrap(&server, &Context::good())
        .replace(&format!("sni: {SNI}, "), sni_fields)
        .replace(
            "type: STATIC",
            "type: LOGICAL_DNS\n    dns_lookup_family: V4_ONLY",
        )
        .replace("address: \"127.0.0.1\"", "address: \"localhost\"");
    let proxy = ProxyProcess::start_unready(kind, binary, &bootstrap)
        .await
        .expect("the proxy starts");
    let handshakes = server
        .wait_handshakes(|h| !h.is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    match &handshakes[0] {
        Handshake::Accepted { sni, .. } => sni.clone(),
        Handshake::Failed(reason) => panic!("{reason}\n{}", proxy.log()),
    }
}

/// A DNS control plane's host name goes out as SNI only with `auto_host_sni` (then in place of
/// `sni`), in Envoy and in Tern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_control_plane_is_named_in_sni_only_with_auto_host_sni() {
    let mut kinds = vec![(ProxyKind::Tern, tern_binary())];
    if envoy_available() {
        kinds.push((ProxyKind::Envoy, envoy_binary().expect("checked")));
    }
    for (kind, binary) in kinds {
        assert_eq!(dns_sni(kind, &binary, "").await, None, "{kind:?}");
        assert_eq!(
            dns_sni(kind, &binary, "sni: other.test, auto_host_sni: true, ").await,
            Some("localhost".to_string()),
            "{kind:?}"
        );
    }
}
