//! Tern driven by a real istiod: Istio's own discovery server (`istiod-standalone`) generates the
//! xDS for a small Bookinfo mesh (tests/testdata/istiod: ServiceEntries and WorkloadEntries for
//! productpage, reviews v1/v2 and ratings, a namespace Sidecar, a DestinationRule with subsets and
//! `tls: DISABLE`, a VirtualService), and Tern and Envoy 1.40.0 take it through Istio's rendered
//! bootstrap, with the test control plane serving `default`/`ROOTCA` in pilot-agent's place.
//!
//! Each proxy runs in a network namespace of its own, because istiod's listeners bind Istio's
//! fixed ports (15001, 15006, 127.0.0.1:9080, admin 15000); istiod and SDS are unix sockets,
//! which every namespace reaches. Requests reach the outbound listener without iptables: the
//! traffic tests' sidecar announces `INTERCEPTION_MODE: NONE`, for which istiod binds the
//! outbound listener itself on 127.0.0.1:<service port> (Istio's mode for proxies without
//! capture). The acceptance tests use a default pod's `REDIRECT` sidecar.
//!
//! Stock Envoy lacks Istio's contrib filters (metadata exchange, `istio.alpn`, `istio.stats`), so
//! wherever Envoy runs istiod runs without them ([`Profile::StockEnvoy`]); Tern alone also gets a
//! default install's config ([`Profile::IstioDefault`]). A NACK of any type shows in istiod's
//! log (`ACK ERROR`), which must stay clean. Synchronisation is on `/ready`, istiod's `applied` lines and real requests polled
//! against deadlines, never on sleeps.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tern_tests::http_backend::{HttpBackend, Protocol, Request, send_over};
use tern_tests::istiod::{
    self, Interception, MESH_CLUSTERS, Mesh, PRODUCTPAGE, Profile, STATIC_CLUSTERS, Workload,
    names, pod, productpage_names, state_of_the_world, wait_for_names,
};
use tern_tests::process::{ProxyKind, ProxyProcess};

const DEADLINE: Duration = Duration::from_secs(30);
const MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/istiod");

/// A client pod of no service whose sidecar binds its outbound listeners (no capture).
const CLIENT: Workload<'static> = Workload {
    pod: "client-5f8b9c7d6-abcde",
    namespace: "default",
    ip: "10.10.0.3",
    labels: &[
        ("app", "client"),
        ("version", "v1"),
        ("security.istio.io/tlsMode", "istio"),
    ],
    service_account: "client",
    interception: Interception::None,
};

/// The xDS counters pilot-agent's readiness probe reads, and `server.state`.
async fn xds_counters(proxy: &ProxyProcess) -> Vec<String> {
    let (status, body) = proxy
        .get("/stats?filter=^((cluster_manager.cds|listener_manager.lds).update_(success|rejected)|server.state)$")
        .await
        .expect("admin answers");
    assert_eq!(status, 200, "{body}");
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Asserts LIVE, LDS and CDS accepted and never rejected.
async fn assert_all_accepted(proxy: &ProxyProcess) {
    let (status, body) = proxy.get("/ready").await.expect("admin answers");
    assert_eq!(
        (status, body.trim()),
        (200, "LIVE"),
        "{}",
        proxy.kind.name()
    );
    let counters = xds_counters(proxy).await;
    let value = |name: &str| -> u64 {
        counters
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no {name} in {counters:?}", proxy.kind.name()))
    };
    assert_eq!(value("server.state"), 0, "{counters:?}");
    assert_eq!(
        value("cluster_manager.cds.update_rejected"),
        0,
        "{counters:?}"
    );
    assert_eq!(
        value("listener_manager.lds.update_rejected"),
        0,
        "{counters:?}"
    );
    assert!(
        value("cluster_manager.cds.update_success") > 0,
        "{counters:?}"
    );
    assert!(
        value("listener_manager.lds.update_success") > 0,
        "{counters:?}"
    );
}

/// Every route configuration in `/config_dump` (inline ones `static`, RDS ones `dynamic`) with
/// its virtual hosts' names, sorted.
async fn route_configs(proxy: &ProxyProcess) -> Vec<(String, String, Vec<String>)> {
    let (status, body) = proxy.get("/config_dump").await.expect("admin answers");
    assert_eq!(status, 200, "{body}");
    let dump: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let section = dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump")
        .unwrap_or_else(|| panic!("{}: no RoutesConfigDump", proxy.kind.name()));
    let mut out = Vec::new();
    for kind in ["static", "dynamic"] {
        for entry in section[format!("{kind}_route_configs")]
            .as_array()
            .into_iter()
            .flatten()
        {
            let config = &entry["route_config"];
            let mut hosts: Vec<String> = config["virtual_hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect();
            hosts.sort();
            let name = config["name"].as_str().unwrap_or_default().to_string();
            out.push((kind.to_string(), name, hosts));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_accepts_everything_istiod_sends_a_default_pod_sidecar_over_delta_and_sotw() {
    if !istiod::prerequisites(&[ProxyKind::Tern]) {
        return;
    }
    let mesh = Mesh::start("defaults", Path::new(MESH), &[], Profile::IstioDefault).await;
    let ns = pod("istiod-pp", &[PRODUCTPAGE.ip]);
    let tern = mesh.sidecar(ProxyKind::Tern, &ns, &PRODUCTPAGE, None).await;
    let (listeners, clusters) = productpage_names();
    wait_for_names(&tern, &listeners, &clusters).await;
    assert_all_accepted(&tern).await;
    // The same over state-of-the-world ADS: the same resources, all accepted.
    let sotw_ns = pod("istiod-pp-sotw", &[PRODUCTPAGE.ip]);
    let sotw = mesh
        .start_proxy(
            ProxyKind::Tern,
            &sotw_ns,
            &state_of_the_world(&mesh.bootstrap(&PRODUCTPAGE)),
            None,
        )
        .await;
    wait_for_names(&sotw, &listeners, &clusters).await;
    assert_all_accepted(&sotw).await;
    assert_eq!(names(&sotw).await, names(&tern).await);
    assert_eq!(route_configs(&sotw).await, route_configs(&tern).await);
    mesh.assert_no_nack();

    // It is istiod's full default config: Istio's own filters are in it.
    let (status, dump) = tern.get("/config_dump").await.expect("admin answers");
    assert_eq!(status, 200, "{dump}");
    for filter in [
        "istio.alpn",
        "istio.metadata_exchange",
        "envoy.filters.network.tcp_proxy",
        "istio.stats",
        "io.istio.http.peer_metadata.Config",
        "envoy.tcp.metadataexchange.config.MetadataExchange",
        "type.googleapis.com/stats.PluginConfig",
        "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    ] {
        assert!(dump.contains(filter), "no {filter} in Tern's config_dump");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_and_envoy_accept_the_same_listeners_clusters_and_routes_from_istiod() {
    if !istiod::prerequisites(&[ProxyKind::Tern, ProxyKind::Envoy]) {
        return;
    }
    let mesh = Mesh::start("compare", Path::new(MESH), &[], Profile::StockEnvoy).await;
    let (tern_ns, envoy_ns) = (
        pod("istiod-t", &[PRODUCTPAGE.ip]),
        pod("istiod-e", &[PRODUCTPAGE.ip]),
    );
    let tern = mesh
        .sidecar(ProxyKind::Tern, &tern_ns, &PRODUCTPAGE, None)
        .await;
    let envoy = mesh
        .sidecar(ProxyKind::Envoy, &envoy_ns, &PRODUCTPAGE, None)
        .await;
    let (listeners, clusters) = productpage_names();
    for proxy in [&envoy, &tern] {
        wait_for_names(proxy, &listeners, &clusters).await;
        assert_all_accepted(proxy).await;
    }
    assert_eq!(names(&tern).await, names(&envoy).await);
    let routes = route_configs(&tern).await;
    assert_eq!(routes, route_configs(&envoy).await);
    let rds: Vec<_> = routes
        .iter()
        .filter(|(kind, ..)| kind == "dynamic")
        .collect();
    assert_eq!(
        rds,
        [&(
            "dynamic".to_string(),
            "9080".to_string(),
            vec![
                "allow_any".to_string(),
                "productpage.default.svc.cluster.local:9080".to_string(),
                "ratings.default.svc.cluster.local:9080".to_string(),
                "reviews.default.svc.cluster.local:9080".to_string(),
            ]
        )]
    );
    for proxy in [&envoy, &tern] {
        assert_istio_prometheus_names(proxy).await;
    }
    mesh.assert_no_nack();
}

/// Under Istio's rendered bootstrap, `/stats/prometheus` has Istio's tag names and only what
/// its `stats_matcher` inclusion list names: `xds-grpc`'s cluster stats, not istiod's
/// `outbound|...` clusters'.
async fn assert_istio_prometheus_names(proxy: &ProxyProcess) {
    let (status, body) = proxy
        .get("/stats/prometheus")
        .await
        .expect("/stats/prometheus");
    assert_eq!(status, 200, "{}", proxy.kind.name());
    let keys: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(key, _)| key))
        .collect();
    for key in [
        "envoy_cluster_upstream_cx_total{cluster_name=\"xds-grpc\"}",
        "envoy_cluster_manager_cds_update_success{}",
        "envoy_listener_manager_lds_update_success{}",
        "envoy_server_live{}",
    ] {
        assert!(
            keys.contains(key),
            "{} lacks {key}:\n{body}",
            proxy.kind.name()
        );
    }
    // Nothing of istiod's clusters, HCMs, TCP proxies or listeners.
    let outside: Vec<&&str> = keys
        .iter()
        .filter(|k| {
            k.contains("outbound|")
                || k.contains("inbound|")
                || k.starts_with("envoy_http_")
                || k.starts_with("envoy_tcp_")
                || (k.starts_with("envoy_listener_") && !k.starts_with("envoy_listener_manager_"))
        })
        .collect();
    assert!(
        outside.is_empty(),
        "{} lists {outside:?}",
        proxy.kind.name()
    );
}

/// One request for reviews through the client sidecar's outbound listener; the backend's name.
async fn ask_reviews(proxy: &ProxyProcess, listener: SocketAddr, user: Option<&str>) -> String {
    let jason = [("end-user", user.unwrap_or_default())];
    let request = Request {
        method: "GET",
        authority: "reviews:9080",
        path: "/reviews/0",
        headers: if user.is_some() { &jason } else { &[] },
        body: b"",
    };
    let stream = proxy
        .connect(listener)
        .await
        .expect("connect to the sidecar");
    let response = send_over(stream, Protocol::Http1, &request)
        .await
        .expect("a response");
    assert_eq!(response.status, 200, "{}", response.text());
    response
        .json
        .as_ref()
        .and_then(|j| j["backend"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("not a backend's answer: {}", response.text()))
}

/// How many of `n` requests each backend answered.
async fn split(
    proxy: &ProxyProcess,
    listener: SocketAddr,
    user: Option<&str>,
    n: usize,
) -> (usize, usize) {
    let mut v1 = 0;
    for _ in 0..n {
        match ask_reviews(proxy, listener, user).await.as_str() {
            "reviews-v1" => v1 += 1,
            "reviews-v2" => {}
            other => panic!("{other} answered a request for reviews"),
        }
    }
    (v1, n - v1)
}

/// The client sidecar in a namespace with the reviews and ratings pods' backends: the header
/// match, the 90/10 split, 0/100 once the VirtualService changes in istiod's directory, and
/// both versions once it is deleted.
async fn routes_reviews_as_the_virtualservice_says(kind: ProxyKind, profile: Profile) {
    let mut mesh = Mesh::start(kind.name(), Path::new(MESH), &[], profile).await;
    let ns = pod(
        &format!("istiod-{}", &kind.name()[..1]),
        &[CLIENT.ip, "10.10.0.11", "10.10.0.12", "10.10.0.13"],
    );
    let backend = |name: &str, ip: &str| {
        let listener = ns
            .listen(SocketAddr::new(ip.parse().expect("IP"), 9080))
            .expect("backend socket");
        HttpBackend::serve(name, listener).expect("backend")
    };
    let (v1, v2, ratings) = (
        backend("reviews-v1", "10.10.0.11"),
        backend("reviews-v2", "10.10.0.12"),
        backend("ratings-v1", "10.10.0.13"),
    );
    let proxy = mesh.sidecar(kind, &ns, &CLIENT, None).await;
    let mut clusters = MESH_CLUSTERS.to_vec();
    clusters.extend(STATIC_CLUSTERS);
    wait_for_names(
        &proxy,
        &["0.0.0.0_15021", "0.0.0.0_15090", "127.0.0.1_9080"],
        &clusters,
    )
    .await;
    assert_all_accepted(&proxy).await;
    let listener = proxy
        .listener_address("127.0.0.1_9080")
        .await
        .expect("istiod's outbound listener");
    assert_eq!(listener, SocketAddr::from(([127, 0, 0, 1], 9080)));

    // jason always gets v2.
    assert_eq!(split(&proxy, listener, Some("jason"), 50).await, (0, 50));
    // Everyone else 90/10: v2's share of 400 is 40 on average (sd 6); 15..70 is over 4 sd.
    let (to_v1, to_v2) = split(&proxy, listener, None, 400).await;
    assert!((15..=70).contains(&to_v2), "v1 {to_v1}, v2 {to_v2}");
    assert_eq!((v1.requests(), v2.requests()), (to_v1, 50 + to_v2));
    assert_eq!(ratings.requests(), 0);

    // The VirtualService changes in istiod's directory: all to v2.
    let route = std::fs::read_to_string(Path::new(MESH).join("reviews-route.yaml"))
        .expect("route file")
        .replace("weight: 90", "weight: 0")
        .replace("weight: 10", "weight: 100");
    let applied = mesh.change("reviews-route.yaml", Some(&route)).await;
    assert!(
        applied.ends_with("created 0, updated 1, deleted 0"),
        "{applied}"
    );
    // Twenty v2 answers in a row do not happen under 90/10 (1e-20); after them, v1 gets nothing.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut in_a_row = 0;
    while in_a_row < 20 {
        if ask_reviews(&proxy, listener, None).await == "reviews-v2" {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never followed the new VirtualService",
                kind.name()
            );
        }
    }
    assert_eq!(split(&proxy, listener, None, 100).await, (0, 100));

    // Without a VirtualService reviews is one cluster of both versions: v1 answers again.
    let applied = mesh.change("reviews-route.yaml", None).await;
    assert!(
        applied.ends_with("created 0, updated 0, deleted 1"),
        "{applied}"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ask_reviews(&proxy, listener, None).await != "reviews-v1" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} still routes by the deleted VirtualService",
            kind.name()
        );
    }
    assert_all_accepted(&proxy).await;
    mesh.assert_no_nack();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_routes_reviews_as_istiods_virtualservice_says() {
    if istiod::prerequisites(&[ProxyKind::Tern]) {
        routes_reviews_as_the_virtualservice_says(ProxyKind::Tern, Profile::IstioDefault).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_routes_reviews_as_istiods_virtualservice_says() {
    if istiod::prerequisites(&[ProxyKind::Envoy]) {
        routes_reviews_as_the_virtualservice_says(ProxyKind::Envoy, Profile::StockEnvoy).await;
    }
}
