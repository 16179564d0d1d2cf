//! Traffic through iptables capture, routed by what a real istiod generates: productpage's
//! sidecar (Tern, and Envoy 1.40.0 as the reference) runs as uid 1337 in a pod namespace where
//! `iptables-init` installed Istio's injector rules; requests the "app" makes to reviews' service
//! address (240.240.0.2:9080) are redirected to 15001, handed by `virtualOutbound` to
//! `0.0.0.0_9080`, routed by RDS `9080` and sent to the reviews pods, each in a namespace of its
//! own across a veth: reviews-v1 (10.10.0.11) is captured too and its own sidecar of the same
//! kind takes the request in through `virtualInbound` (15006) to the app, and reviews' calls to
//! ratings (10.10.0.13) out; reviews-v2 (10.10.0.12), ratings and details (10.10.0.14, called
//! by productpage) are the apps alone.
//!
//! Each case writes one file of istiod's directory (the reviews VirtualService and
//! DestinationRule), waits for istiod's `applied` line and then for the sidecar to hold the
//! case's route (the VirtualService's route names are the markers) with no cluster warming, and
//! checks the outcome Istio documents for that feature. Tern and Envoy run the same cases with
//! the same expectations; where the documentation leaves a detail open (a mirrored request's
//! authority, a refused request's headers), Envoy's answer is the expectation. Synchronisation
//! is on istiod's lines, the sidecar's `/config_dump` and the backends' request logs, with
//! deadlines.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_tests::http_backend::{HttpBackend, Protocol, Request, Response, send_over};
use tern_tests::istiod::{self, Interception, Mesh, PRODUCTPAGE, Profile, Workload};
use tern_tests::netns::{Netns, veth};
use tern_tests::process::{ProxyKind, ProxyProcess};
use tern_tests::sidecar::{have_prerequisites, injector_args, install_capture, serve_who};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(30);
const MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/istiod");
/// The files of the mesh this test replaces with its own reviews VirtualService and rule.
const REVIEWS_FILES: [&str; 2] = ["reviews-route.yaml", "reviews-rule.yaml"];
/// Where each case's VirtualService and DestinationRule go.
const CASE_FILE: &str = "reviews-case.yaml";
const REVIEWS: &str = "reviews.default.svc.cluster.local";
/// reviews' service address (its ServiceEntry), as the app dials it.
const REVIEWS_VIP: &str = "240.240.0.2:9080";
/// The sidecar's uid, the one Istio's injector rules exempt from capture.
const PROXY_UID: u32 = 1337;

fn prerequisites(kind: ProxyKind) -> bool {
    istiod::prerequisites(&[kind]) && have_prerequisites()
}

/// The reviews VirtualService with `http` (YAML list items, indented by two) and its
/// DestinationRule (plaintext, subsets v1/v2) with `policy` added to its traffic policy.
fn reviews_config(http: &str, policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS}]
  http:
{http}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {REVIEWS}
  trafficPolicy:
    tls: {{mode: DISABLE}}
{policy}  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"
    )
}

/// One route rule named `name` sending everything to `subset` (or the whole service).
fn to(name: &str, subset: Option<&str>) -> String {
    let subset = subset.map(|s| format!(", subset: {s}")).unwrap_or_default();
    format!("  - name: {name}\n    route: [{{destination: {{host: {REVIEWS}{subset}}}}}]\n")
}

/// The mesh; the captured productpage pod with its sidecar; reviews-v1's pod, captured too,
/// with its own sidecar of the same kind in front of the app; reviews-v2's pod, the app alone.
struct World {
    kind: ProxyKind,
    mesh: Mesh,
    proxy: Arc<ProxyProcess>,
    v1_sidecar: ProxyProcess,
    v1: HttpBackend,
    v2: HttpBackend,
    ratings: HttpBackend,
    details: HttpBackend,
    /// productpage, reviews-v1, reviews-v2, ratings, details.
    pods: [Netns; 5],
}

/// ratings-v1's pod (the app alone), reached from reviews-v1's pod.
const RATINGS_IP: &str = "10.10.0.13";
/// details-v1's pod (the app alone), reached from productpage's pod.
const DETAILS_IP: &str = "10.10.0.14";

/// reviews-v1's pod, a default injected pod.
const REVIEWS_V1: Workload<'static> = Workload {
    pod: "reviews-v1-5b4d6c7f9-q8w7e",
    namespace: "default",
    ip: "10.10.0.11",
    labels: &[
        ("app", "reviews"),
        ("version", "v1"),
        ("security.istio.io/tlsMode", "istio"),
        ("service.istio.io/canonical-name", "reviews"),
        ("service.istio.io/canonical-revision", "v1"),
    ],
    service_account: "bookinfo-reviews",
    interception: Interception::Redirect,
};

/// Joins pod `a` (address `a_ip`) and pod `b` (`b_ip`) with a point-to-point link and host
/// routes.
fn link(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) {
    let (here, there) =
        veth(a, &[&format!("{a_ip}/32")], b, &[&format!("{b_ip}/32")]).expect("veth");
    a.ip(&["route", "add", &format!("{b_ip}/32"), "dev", &here])
        .expect("route there");
    b.ip(&["route", "add", &format!("{a_ip}/32"), "dev", &there])
        .expect("route back");
}

impl World {
    async fn start(kind: ProxyKind, profile: Profile) -> World {
        let tag = &kind.name()[..1];
        let mesh = Mesh::start(
            &format!("capture-{}", kind.name()),
            Path::new(MESH),
            &REVIEWS_FILES,
            profile,
        )
        .await;
        let pod = |name: &str| Netns::create(&format!("{name}-{tag}")).expect("pod namespace");
        let (productpage, reviews_v1, reviews_v2) = (pod("itp"), pod("itr1"), pod("itr2"));
        let (ratings, details) = (pod("itra"), pod("itd"));
        let pp = PRODUCTPAGE.ip;
        link(&productpage, pp, &reviews_v1, REVIEWS_V1.ip);
        link(&productpage, pp, &reviews_v2, "10.10.0.12");
        link(&productpage, pp, &details, DETAILS_IP);
        link(&reviews_v1, REVIEWS_V1.ip, &ratings, RATINGS_IP);
        // Service addresses are routed like any off-pod address; capture takes them first.
        for (from, via) in [(&productpage, REVIEWS_V1.ip), (&reviews_v1, RATINGS_IP)] {
            from.ip(&["route", "add", "240.240.0.0/16", "via", via])
                .expect("route to the service range");
        }
        install_capture(&productpage, &injector_args(&[], &[]));
        install_capture(&reviews_v1, &injector_args(&[], &[]));
        let backend = |name: &str, pod: &Netns, ip: &str| {
            let listener = pod
                .listen(SocketAddr::new(ip.parse().expect("IP"), 9080))
                .expect("backend socket");
            HttpBackend::serve(name, listener).expect("backend")
        };
        let (v1, v2) = (
            backend("reviews-v1", &reviews_v1, REVIEWS_V1.ip),
            backend("reviews-v2", &reviews_v2, "10.10.0.12"),
        );
        let (ratings_app, details_app) = (
            backend("ratings-v1", &ratings, RATINGS_IP),
            backend("details-v1", &details, DETAILS_IP),
        );
        let v1_sidecar = mesh
            .sidecar(kind, &reviews_v1, &REVIEWS_V1, Some(PROXY_UID))
            .await;
        let proxy = mesh
            .sidecar(kind, &productpage, &PRODUCTPAGE, Some(PROXY_UID))
            .await;
        World {
            kind,
            mesh,
            proxy: Arc::new(proxy),
            v1_sidecar,
            v1,
            v2,
            ratings: ratings_app,
            details: details_app,
            pods: [productpage, reviews_v1, reviews_v2, ratings, details],
        }
    }

    /// Gives istiod `config` and returns once the sidecar holds route `marker` with every
    /// cluster warm.
    async fn apply(&mut self, marker: &str, config: &str) {
        let applied = self.mesh.change(CASE_FILE, Some(config)).await;
        assert!(applied.starts_with("applied "), "{applied}");
        let what = format!("route {marker}");
        self.wait_for_config(&what, |dump| route_names(dump).iter().any(|r| r == marker))
            .await;
    }

    /// Polls productpage's sidecar's `/config_dump` until `holds` is true of it and no cluster
    /// is warming.
    async fn wait_for_config(&self, what: &str, holds: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let dump = match self.proxy.get("/config_dump").await {
                Ok((200, dump)) => serde_json::from_str::<Value>(&dump).unwrap_or_default(),
                _ => Value::Null,
            };
            if holds(&dump) && warming(&dump).is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never took {what}: it has routes {:?} and warming clusters {:?}; \
                 istiod log:\n{}",
                self.kind.name(),
                route_names(&dump),
                warming(&dump),
                self.mesh.istiod.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ask(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        ask(&self.proxy, path, headers).await
    }

    /// The backend that answered a request that must succeed.
    async fn backend(&self, path: &str, headers: &[(&str, &str)]) -> String {
        let response = match self.ask(path, headers).await {
            Ok(response) => response,
            Err(e) => {
                let stats = self.proxy.get("/stats").await.map(|(_, s)| s);
                panic!(
                    "{}: no response: {e:#}; stats:\n{}\nlog:\n{}",
                    self.kind.name(),
                    stats.unwrap_or_default(),
                    self.proxy.log()
                )
            }
        };
        assert_eq!(response.status, 200, "{}", response.text());
        served_by(&response)
    }

    /// How many of `n` requests v1 and v2 answered.
    async fn split(&self, headers: &[(&str, &str)], n: usize) -> (usize, usize) {
        let mut v1 = 0;
        for _ in 0..n {
            match self.backend("/reviews/0", headers).await.as_str() {
                "reviews-v1" => v1 += 1,
                "reviews-v2" => {}
                other => panic!("{other} answered for reviews"),
            }
        }
        (v1, n - v1)
    }

    /// The requests each backend has seen so far.
    fn seen(&self) -> (usize, usize) {
        (self.v1.requests(), self.v2.requests())
    }

    /// The reviews cluster (without subset) as the sidecar's `/config_dump` shows it.
    async fn reviews_cluster(&self) -> Value {
        let (status, dump) = self.proxy.get("/config_dump").await.expect("admin");
        assert_eq!(status, 200, "{dump}");
        let dump: Value = serde_json::from_str(&dump).expect("JSON");
        let name = format!("outbound|9080||{REVIEWS}");
        section(&dump, "ClustersConfigDump")["dynamic_active_clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| &c["cluster"])
            .find(|c| c["name"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in the config dump"))
    }
}

fn served_by(response: &Response) -> String {
    response
        .json
        .as_ref()
        .and_then(|j| j["backend"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("not a backend's answer: {}", response.text()))
}

/// The dump's `envoy.admin.v3.<kind>` section (Null when it has none).
fn section<'a>(dump: &'a Value, kind: &str) -> &'a Value {
    let kind = format!("type.googleapis.com/envoy.admin.v3.{kind}");
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["@type"] == kind.as_str())
        .unwrap_or(&Value::Null)
}

/// The virtual hosts of every route configuration in the dump.
fn virtual_host_entries(dump: &Value) -> impl Iterator<Item = &Value> {
    let routes = section(dump, "RoutesConfigDump");
    ["dynamic_route_configs", "static_route_configs"]
        .into_iter()
        .flat_map(|kind| routes[kind].as_array().into_iter().flatten())
        .flat_map(|c| {
            c["route_config"]["virtual_hosts"]
                .as_array()
                .into_iter()
                .flatten()
        })
}

/// The names of the routes in every route configuration of the dump.
fn route_names(dump: &Value) -> Vec<String> {
    virtual_host_entries(dump)
        .flat_map(|v| v["routes"].as_array().into_iter().flatten())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect()
}

/// The names of the virtual hosts in every route configuration of the dump.
fn virtual_hosts(dump: &Value) -> Vec<String> {
    virtual_host_entries(dump)
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect()
}

/// The names of the clusters still warming.
fn warming(dump: &Value) -> Vec<String> {
    section(dump, "ClustersConfigDump")["dynamic_warming_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Subsets and weights: `end-user: jason` always gets v2, everyone else 90/10; then, under
/// load, the weights become 50/50 and not one request fails.
async fn weights_and_header_match(world: &mut World) {
    let split = |name: &str, v1: u32, v2: u32| {
        format!(
            "  - name: jason
    match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: {REVIEWS}, subset: v2}}}}]
  - name: {name}
    route:
    - {{destination: {{host: {REVIEWS}, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: {REVIEWS}, subset: v2}}, weight: {v2}}}
"
        )
    };
    world
        .apply("split-90", &reviews_config(&split("split-90", 90, 10), ""))
        .await;
    assert_eq!(world.split(&[("end-user", "jason")], 30).await, (0, 30));
    // v2's share of 400 is 40 on average (sd 6): 15..=70 is beyond 4 sd either way.
    let (_, to_v2) = world.split(&[], 400).await;
    assert!((15..=70).contains(&to_v2), "90/10 gave v2 {to_v2} of 400");

    // Four clients keep asking, each on new connections, while the weights change.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (proxy, stop) = (world.proxy.clone(), stop.clone());
        clients.spawn(async move {
            let (mut sent, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                sent += 1;
                match ask(&proxy, "/reviews/0", &[]).await {
                    Ok(response) if response.status == 200 => {}
                    Ok(response) => {
                        failures.push(format!("{}: {}", response.status, response.text()))
                    }
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            (sent, failures)
        });
    }
    // Requests before the change, the change, and requests after it to both versions.
    let (v1, _) = world.seen();
    wait_for(&world.v1, v1 + 40).await;
    world
        .apply("split-50", &reviews_config(&split("split-50", 50, 50), ""))
        .await;
    let (v1, v2) = world.seen();
    wait_for(&world.v1, v1 + 25).await;
    wait_for(&world.v2, v2 + 25).await;
    stop.store(true, Ordering::SeqCst);
    let (mut sent, mut failures) = (0, Vec::new());
    while let Some(client) = clients.join_next().await {
        let (n, f) = client.expect("client task");
        sent += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
    // 50/50: v2's share of 400 is 200 on average (sd 10).
    let (_, to_v2) = world.split(&[], 400).await;
    assert!((150..=250).contains(&to_v2), "50/50 gave v2 {to_v2} of 400");
}

/// One request from the app to reviews' service address, on a new connection.
async fn ask(
    proxy: &ProxyProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    call(proxy, REVIEWS_VIP, "reviews:9080", path, headers).await
}

/// One request from the app of `proxy`'s pod to a service address, on a new connection.
async fn call(
    proxy: &ProxyProcess,
    address: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let request = Request {
        method: "GET",
        authority,
        path,
        headers,
        body: b"",
    };
    let stream = proxy.connect(address.parse().expect("address")).await?;
    send_over(stream, Protocol::Http1, &request).await
}

/// A request sent at `started` was held about `wait` (a timeout or an injected delay) before
/// its answer. Envoy times from its event loop's cached clock, which can be a few milliseconds
/// behind, so the bound allows 50 ms.
fn assert_held(started: Instant, wait: Duration) {
    let elapsed = started.elapsed();
    assert!(
        elapsed + Duration::from_millis(50) >= wait,
        "answered after {elapsed:?}, not held {wait:?}"
    );
}

/// Waits until `backend` has seen `n` requests in all.
async fn wait_for(backend: &HttpBackend, n: usize) {
    backend
        .wait_until(&format!("{n} requests"), |seen| seen.len() >= n)
        .await
        .expect("requests reach the backend");
}

/// reviews-v1's sidecar took every request for v1 through `virtualInbound` (port 15006, the
/// plaintext HTTP chain of a PERMISSIVE pod) and `inbound|9080||`, which reaches the app from
/// 127.0.0.6 (`upstream_bind_config`); v2, a pod without sidecar, sees productpage's pod IP.
/// (Istio's `stats_matcher` leaves Envoy no per-listener or per-cluster counters to count
/// them with.)
fn inbound_through_the_reviews_sidecar(world: &World) {
    let peer_ip = |seen: &Value| {
        let peer: SocketAddr = seen["peer"]
            .as_str()
            .expect("peer")
            .parse()
            .expect("address");
        peer.ip().to_string()
    };
    let v1_seen = world.v1.seen();
    assert!(!v1_seen.is_empty());
    assert!(
        v1_seen.iter().all(|r| peer_ip(r) == "127.0.0.6"),
        "{v1_seen:?}"
    );
    assert!(world.v2.seen().iter().all(|r| peer_ip(r) == PRODUCTPAGE.ip));
}

/// A URI prefix match with a rewrite, and response and request headers set per route and per
/// destination (the `x-version` pattern).
async fn rewrite_and_headers(world: &mut World) {
    let http = format!(
        "  - name: preview
    match: [{{uri: {{prefix: /v2-preview/}}}}]
    rewrite: {{uri: /reviews/}}
    route:
    - destination: {{host: {REVIEWS}, subset: v2}}
      headers: {{response: {{add: {{x-version: v2}}}}}}
  - name: stable
    headers: {{request: {{set: {{x-route: stable}}}}, response: {{remove: [x-drop-me]}}}}
    route:
    - destination: {{host: {REVIEWS}, subset: v1}}
      headers: {{response: {{add: {{x-version: v1}}}}}}
"
    );
    world.apply("preview", &reviews_config(&http, "")).await;
    let preview = world.ask("/v2-preview/7?x=1", &[]).await.expect("response");
    assert_eq!(preview.status, 200, "{}", preview.text());
    let seen = preview.json.as_ref().expect("backend answer");
    assert_eq!(seen["backend"], "reviews-v2");
    assert_eq!(seen["path"], "/reviews/7?x=1");
    assert_eq!(preview.header_values("x-version"), ["v2"]);

    let stable = world
        .ask(
            "/reviews/7",
            &[("x-backend-response-header", "x-drop-me=1")],
        )
        .await
        .expect("response");
    assert_eq!(stable.status, 200, "{}", stable.text());
    let seen = stable.json.as_ref().expect("backend answer");
    assert_eq!(seen["backend"], "reviews-v1");
    assert_eq!(seen["path"], "/reviews/7");
    assert_eq!(seen["headers"]["x-route"], serde_json::json!(["stable"]));
    assert_eq!(stable.header_values("x-version"), ["v1"]);
    assert!(stable.header_values("x-drop-me").is_empty());
}

/// A route timeout answers 504 when the backend is slower, and a fast request goes through.
async fn timeout(world: &mut World) {
    let http = format!(
        "  - name: timeout
    timeout: 0.4s
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
"
    );
    world.apply("timeout", &reviews_config(&http, "")).await;
    assert_eq!(world.backend("/reviews/1", &[]).await, "reviews-v1");
    let (v1, _) = world.seen();
    let started = Instant::now();
    let slow = world
        .ask("/reviews/1", &[("x-backend-delay-ms", "3000")])
        .await
        .expect("response");
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_held(started, Duration::from_millis(400));
    // Istio's default retry policy does not retry a timeout.
    assert_eq!(world.seen().0, v1 + 1);
}

/// `attempts` retries on `retryOn: 5xx`, and a per-try timeout retried within the route timeout.
async fn retries(world: &mut World) {
    let http = format!(
        "  - name: per-try
    match: [{{headers: {{x-per-try: {{exact: \"1\"}}}}}}]
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}}
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
  - name: retries
    retries: {{attempts: 3, retryOn: 5xx}}
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
"
    );
    world.apply("retries", &reviews_config(&http, "")).await;
    for status in ["500", "503"] {
        let (v1, _) = world.seen();
        let response = world
            .ask("/reviews/2", &[("x-backend-status", status)])
            .await
            .expect("response");
        assert_eq!(response.status.to_string(), status);
        assert_eq!(
            world.seen().0,
            v1 + 4,
            "one try and three retries of {status}"
        );
    }
    let (v1, _) = world.seen();
    let response = world
        .ask(
            "/reviews/2",
            &[("x-per-try", "1"), ("x-backend-delay-ms", "1000")],
        )
        .await
        .expect("response");
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(world.seen().0, v1 + 3, "one try and two retries");
}

/// Fault injection: an abort never reaches the backend; a delay holds the request.
async fn faults(world: &mut World) {
    let http = format!(
        "  - name: abort
    match: [{{headers: {{x-fault: {{exact: abort}}}}}}]
    fault: {{abort: {{httpStatus: 418, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
  - name: delay
    match: [{{headers: {{x-fault: {{exact: delay}}}}}}]
    fault: {{delay: {{fixedDelay: 0.3s, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
{}",
        to("no-fault", Some("v1"))
    );
    world.apply("abort", &reviews_config(&http, "")).await;
    let (v1, _) = world.seen();
    let aborted = world
        .ask("/reviews/3", &[("x-fault", "abort")])
        .await
        .expect("response");
    assert_eq!(
        (aborted.status, aborted.text().as_str()),
        (418, "fault filter abort")
    );
    assert_eq!(world.seen().0, v1);
    let started = Instant::now();
    assert_eq!(
        world.backend("/reviews/3", &[("x-fault", "delay")]).await,
        "reviews-v1"
    );
    assert_held(started, Duration::from_millis(300));
    assert_eq!(world.backend("/reviews/3", &[]).await, "reviews-v1");
}

/// Mirroring: v1 answers, v2 gets a copy of each request. istiod sets
/// `disable_shadow_host_suffix_append` (`DISABLE_SHADOW_HOST_SUFFIX` defaults on), so the copy
/// keeps the request's authority rather than Envoy's `-shadow` form.
async fn mirror(world: &mut World) {
    let http = format!(
        "  - name: mirror
    route: [{{destination: {{host: {REVIEWS}, subset: v1}}}}]
    mirror: {{host: {REVIEWS}, subset: v2}}
    mirrorPercentage: {{value: 100}}
"
    );
    world.apply("mirror", &reviews_config(&http, "")).await;
    let (_, v2) = world.seen();
    for _ in 0..10 {
        assert_eq!(world.backend("/reviews/4", &[]).await, "reviews-v1");
    }
    wait_for(&world.v2, v2 + 10).await;
    let copies = world.v2.seen();
    for copy in &copies[v2..] {
        assert_eq!(copy["path"], "/reviews/4");
        assert_eq!(copy["authority"], "reviews:9080", "{copy}");
    }
}

/// `loadBalancer.simple` reaches the cluster and the traffic: ROUND_ROBIN alternates (per
/// worker, so the two hosts' counts differ by at most the number of workers), LEAST_REQUEST and
/// RANDOM use both hosts.
async fn simple_load_balancers(world: &mut World) {
    for (policy, lb_policy) in [
        ("ROUND_ROBIN", None),
        ("LEAST_REQUEST", Some("LEAST_REQUEST")),
        ("RANDOM", Some("RANDOM")),
    ] {
        let marker = format!("lb-{}", policy.to_lowercase().replace('_', "-"));
        let config = reviews_config(
            &to(&marker, None),
            &format!("    loadBalancer: {{simple: {policy}}}\n"),
        );
        world.apply(&marker, &config).await;
        let cluster = world.reviews_cluster().await;
        assert_eq!(
            cluster["lb_policy"].as_str(),
            lb_policy,
            "{policy}: {cluster}"
        );
        let (v1, v2) = world.split(&[], 100).await;
        if policy == "ROUND_ROBIN" {
            assert!(v1.abs_diff(v2) <= 2, "round robin gave {v1}/{v2}");
        } else {
            assert!(v1 >= 10 && v2 >= 10, "{policy} gave {v1}/{v2}");
        }
    }
}

/// `consistentHash` on a header: one user always reaches the same host; users spread.
async fn consistent_hash(world: &mut World) {
    let config = reviews_config(
        &to("hash", None),
        "    loadBalancer: {consistentHash: {httpHeaderName: x-user}}\n",
    );
    world.apply("hash", &config).await;
    let mut hosts = std::collections::BTreeSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = world.backend("/reviews/5", &[("x-user", &user)]).await;
        for _ in 0..4 {
            assert_eq!(
                world.backend("/reviews/5", &[("x-user", &user)]).await,
                first
            );
        }
        hosts.insert(first);
    }
    assert_eq!(hosts.len(), 2, "20 users all hashed to {hosts:?}");
}

/// `connectionPool.http.http2MaxRequests: 1` is the cluster's request limit: while one request
/// is in flight, others are refused at once with 503 and `x-envoy-overloaded`.
async fn connection_pool(world: &mut World) {
    let config = reviews_config(
        &to("pool", Some("v1")),
        "    connectionPool: {http: {http2MaxRequests: 1}}\n",
    );
    world.apply("pool", &config).await;
    let (v1, _) = world.seen();
    let proxy = world.proxy.clone();
    let held =
        tokio::spawn(
            async move { ask(&proxy, "/reviews/6", &[("x-backend-delay-ms", "1500")]).await },
        );
    wait_for(&world.v1, v1 + 1).await;
    for _ in 0..2 {
        let refused = world.ask("/reviews/6", &[]).await.expect("response");
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(refused.header_values("x-envoy-overloaded"), ["true"]);
    }
    let held = held.await.expect("task").expect("response");
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(world.seen().0, v1 + 1, "refused requests never reach v1");
}

/// `outlierDetection` ejects a host after its first 5xx: then only the other host answers.
async fn outlier_detection(world: &mut World) {
    let config = reviews_config(
        &to("outlier", None),
        "    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5m, maxEjectionPercent: 100}\n",
    );
    world.apply("outlier", &config).await;
    world.v1.always_answer(500);
    // Requests until v1 has failed one; its ejection may take a few more requests to land.
    let deadline = Instant::now() + DEADLINE;
    let mut v2_in_a_row = 0;
    while v2_in_a_row < 20 {
        let response = world.ask("/reviews/8", &[]).await.expect("response");
        if response.status == 200 {
            assert_eq!(served_by(&response), "reviews-v2");
            v2_in_a_row += 1;
        } else {
            assert_eq!(response.status, 500, "{}", response.text());
            v2_in_a_row = 0;
        }
        assert!(Instant::now() < deadline, "v1 was never ejected");
    }
    let (v1, _) = world.seen();
    assert_eq!(world.split(&[], 50).await, (0, 50));
    assert_eq!(world.seen().0, v1, "the ejected host gets nothing");
    world.v1.answer_normally();
}

/// The rest of Bookinfo's calls: productpage -> details (a service added live) and reviews ->
/// ratings, the second through reviews-v1's own sidecar (its outbound side, as the reviews app
/// would call it). ratings and details get DestinationRules in plaintext, like reviews.
async fn bookinfo_chain(world: &mut World) {
    let details = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: default}
spec:
  hosts: [details.default.svc.cluster.local]
  addresses: [240.240.0.4]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: details}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-v1, namespace: default}
spec:
  address: 10.10.0.14
  serviceAccount: bookinfo-details
  labels: {app: details, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details.default.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings.default.svc.cluster.local
  trafficPolicy: {tls: {mode: DISABLE}}
";
    world.mesh.change("details.yaml", Some(details)).await;
    // Until its route is in, details' address is an unknown destination (passed through to an
    // address nobody answers): wait for it.
    let details_host = "details.default.svc.cluster.local:9080".to_string();
    world
        .wait_for_config("details' virtual host", |dump| {
            virtual_hosts(dump).contains(&details_host)
        })
        .await;
    // ratings switches from mTLS (refused by the plaintext app) to plaintext with its rule:
    // calls are retried until it answers.
    for (proxy, vip, host, app, caller_ip) in [
        (
            &*world.proxy,
            "240.240.0.4:9080",
            "details:9080",
            "details-v1",
            PRODUCTPAGE.ip,
        ),
        (
            &world.v1_sidecar,
            "240.240.0.3:9080",
            "ratings:9080",
            "ratings-v1",
            REVIEWS_V1.ip,
        ),
    ] {
        let deadline = Instant::now() + DEADLINE;
        let answer = loop {
            match call(proxy, vip, host, "/ratings/0", &[]).await {
                Ok(response) if response.status == 200 => break response,
                other => assert!(
                    Instant::now() < deadline,
                    "{host} never answered: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let seen = answer.json.as_ref().expect("an app's answer");
        assert_eq!(seen["backend"], app);
        let peer: SocketAddr = seen["peer"]
            .as_str()
            .expect("peer")
            .parse()
            .expect("address");
        assert_eq!(peer.ip().to_string(), caller_ip, "{seen}");
    }
    assert!(world.ratings.requests() >= 1 && world.details.requests() >= 1);
}

/// Reads what a TCP connection from the app to `address` receives until the far end closes.
async fn tcp_answer(proxy: &ProxyProcess, address: &str) -> String {
    let mut stream = proxy
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{address} never closed; got {answer:?}"))
        .expect("read");
    answer
}

/// Waits until a connection to `address` gets `expected`, then checks five more do.
async fn until_answer(proxy: &ProxyProcess, address: &str, expected: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = tcp_answer(proxy, address).await;
        if answer == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{address} still answers {answer:?}, not {expected:?}"
        );
    }
    for _ in 0..5 {
        assert_eq!(tcp_answer(proxy, address).await, expected, "{address}");
    }
}

/// What istiod generates besides HTTP routes: a TCP service's `<vip>_<port>` listener
/// (`tcp_proxy`, added live), `PassthroughCluster` for an address outside the mesh (ALLOW_ANY),
/// and `BlackHoleCluster` / the `block_all` virtual host once the namespace's Sidecar says
/// REGISTRY_ONLY.
async fn tcp_passthrough_and_registry_only(world: &mut World) {
    serve_who(&world.pods[2], 27017, "mongo");
    serve_who(&world.pods[2], 7000, "outside");
    let mongo = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mongo, namespace: default}
spec:
  hosts: [mongo.default.svc.cluster.local]
  addresses: [240.240.0.9]
  ports: [{number: 27017, name: tcp-mongo, protocol: TCP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.10.0.12}]
";
    world.mesh.change("mongo.yaml", Some(mongo)).await;
    // Until the service's listener is active, the address is just an unknown destination.
    let deadline = Instant::now() + DEADLINE;
    while world
        .proxy
        .listener_address("240.240.0.9_27017")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "no listener for mongo's address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_productpage = |name: &str| format!("{name} saw {}\n", PRODUCTPAGE.ip);
    until_answer(
        &world.proxy,
        "240.240.0.9:27017",
        &from_productpage("mongo"),
    )
    .await;
    // An address no service has: ALLOW_ANY passes it through to where the app dialled.
    until_answer(
        &world.proxy,
        "10.10.0.12:7000",
        &from_productpage("outside"),
    )
    .await;

    // REGISTRY_ONLY: unknown TCP destinations are black-holed, unknown HTTP hosts get 502.
    let bookinfo = std::fs::read_to_string(Path::new(MESH).join("bookinfo.yaml"))
        .expect("bookinfo.yaml")
        .replace(
            "  - hosts: [\"./*\"]\n",
            "  - hosts: [\"./*\"]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        );
    assert!(bookinfo.contains("REGISTRY_ONLY"));
    world.mesh.change("bookinfo.yaml", Some(&bookinfo)).await;
    until_answer(&world.proxy, "10.10.0.12:7000", "").await;
    // The route configuration (`allow_any` becomes `block_all`) may land after the listener.
    let unknown_host = || async {
        let request = Request {
            method: "GET",
            authority: "unknown.example:9080",
            path: "/",
            headers: &[],
            body: b"",
        };
        let stream = world
            .proxy
            .connect("10.10.0.12:9080".parse().expect("address"))
            .await
            .expect("connect");
        send_over(stream, Protocol::Http1, &request)
            .await
            .expect("response")
    };
    let deadline = Instant::now() + DEADLINE;
    while unknown_host().await.status != 502 {
        assert!(Instant::now() < deadline, "unknown hosts still pass");
    }
    for _ in 0..5 {
        let blocked = unknown_host().await;
        assert_eq!(blocked.status, 502, "{}", blocked.text());
    }
    // The mesh's own services still work.
    until_answer(
        &world.proxy,
        "240.240.0.9:27017",
        &from_productpage("mongo"),
    )
    .await;
}

async fn follows_istiods_virtualservices_through_capture(kind: ProxyKind, profile: Profile) {
    let mut world = World::start(kind, profile).await;
    weights_and_header_match(&mut world).await;
    inbound_through_the_reviews_sidecar(&world);
    rewrite_and_headers(&mut world).await;
    timeout(&mut world).await;
    retries(&mut world).await;
    faults(&mut world).await;
    mirror(&mut world).await;
    simple_load_balancers(&mut world).await;
    consistent_hash(&mut world).await;
    connection_pool(&mut world).await;
    outlier_detection(&mut world).await;
    bookinfo_chain(&mut world).await;
    tcp_passthrough_and_registry_only(&mut world).await;
    world.mesh.assert_no_nack();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_istiods_virtualservices_through_capture() {
    if prerequisites(ProxyKind::Envoy) {
        follows_istiods_virtualservices_through_capture(ProxyKind::Envoy, Profile::StockEnvoy)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_follows_istiods_virtualservices_through_capture() {
    if prerequisites(ProxyKind::Tern) {
        follows_istiods_virtualservices_through_capture(ProxyKind::Tern, Profile::IstioDefault)
            .await;
    }
}
