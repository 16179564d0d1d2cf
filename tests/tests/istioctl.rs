//! istioctl reads Tern's admin API as it reads Envoy's: `istioctl proxy-config <kind> --file`
//! on dumps taken from Tern and from Envoy 1.40.0, both productpage's (REDIRECT) sidecar under the
//! same istiod ([`Profile::StockEnvoy`], so Envoy accepts everything), must print the same.
//!
//! What is normalised, and why:
//! - row order inside each table of the short output, and the order of resources in `-o json`:
//!   Envoy lists static route configurations in hash order and listeners in arrival order;
//! - `lastUpdated`: when each proxy received a resource;
//! - the `Envoy Version:` line of `all`: each proxy reports its own build (checked exactly).
//!
//! The admin endpoints istioctl and bug reports read are compared with Envoy's too:
//! `/config_dump`'s query parameters (statuses and bodies) and `/certs`. Istio's `all` JSON is the
//! dump itself, whose bootstrap differs by design (Envoy adds its extension list to the node), so
//! it is not compared. Prerequisites: root, istiod-standalone, Envoy and istioctl
//! (scripts/install-test-deps.d/istioctl.sh); missing ones skip, or fail under `CI=true`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use tern_tests::envoy::repo_root;
use tern_tests::istiod::{
    self, Mesh, PRODUCTPAGE, Profile, pod, productpage_names, wait_for_names,
};
use tern_tests::netns::Netns;
use tern_tests::prereq::require;
use tern_tests::process::{ProxyKind, ProxyProcess};

/// The Bookinfo mesh istiod serves.
const MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/istiod");

/// The istioctl `scripts/install-test-deps.d/istioctl.sh` builds (`ISTIOCTL_BIN` overrides).
fn istioctl_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("ISTIOCTL_BIN").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".cache/go/bin/istioctl"),
    };
    path.is_file().then_some(path)
}

fn prerequisites() -> bool {
    istiod::prerequisites(&[ProxyKind::Envoy])
        && require(
            istioctl_binary().is_some(),
            "istioctl is not built (scripts/install-test-deps.d/istioctl.sh, needs Go)",
        )
}

/// istiod with productpage's sidecar as Tern and as Envoy, each in its own pod namespace, both
/// holding istiod's whole config.
struct Pair {
    tern: ProxyProcess,
    envoy: ProxyProcess,
    mesh: Mesh,
    _pods: [Netns; 2],
}

impl Pair {
    async fn start(tag: &str) -> Pair {
        let mesh = Mesh::start(tag, Path::new(MESH), &[], Profile::StockEnvoy).await;
        let pods = [
            pod(&format!("{tag}-t"), &[PRODUCTPAGE.ip]),
            pod(&format!("{tag}-e"), &[PRODUCTPAGE.ip]),
        ];
        let tern = mesh
            .sidecar(ProxyKind::Tern, &pods[0], &PRODUCTPAGE, None)
            .await;
        let envoy = mesh
            .sidecar(ProxyKind::Envoy, &pods[1], &PRODUCTPAGE, None)
            .await;
        let (listeners, clusters) = productpage_names();
        for proxy in [&tern, &envoy] {
            wait_for_names(proxy, &listeners, &clusters).await;
        }
        mesh.assert_no_nack();
        Pair {
            tern,
            envoy,
            mesh,
            _pods: pods,
        }
    }

    fn both(&self) -> [&ProxyProcess; 2] {
        [&self.tern, &self.envoy]
    }

    /// `path` from `proxy`'s admin, saved in the scratch directory for istioctl to read.
    async fn save(&self, proxy: &ProxyProcess, path: &str, file: &str) -> PathBuf {
        let body = get_ok(proxy, path).await;
        let out = self
            .mesh
            .dir()
            .join(format!("{}-{file}", proxy.kind.name()));
        std::fs::write(&out, &body).expect("write dump");
        out
    }
}

async fn get_ok(proxy: &ProxyProcess, path: &str) -> String {
    let (status, body) = proxy.get(path).await.expect("admin answers");
    assert_eq!(status, 200, "{} {path}: {body}", proxy.kind.name());
    body
}

/// `istioctl <args> --file <file>` (no cluster: every command reads the file): whether it
/// succeeded, and what it printed.
fn istioctl(args: &[&str], file: &Path) -> (bool, String) {
    let output = std::process::Command::new(istioctl_binary().expect("checked"))
        .args(args)
        .arg("--file")
        .arg(file)
        .output()
        .expect("istioctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn istioctl_ok(args: &[&str], file: &Path) -> String {
    let (ok, text) = istioctl(args, file);
    assert!(ok, "istioctl {args:?} {}: {text}", file.display());
    text
}

/// Each table (blocks separated by blank lines) with its header first and its rows sorted.
fn sorted_rows(table: &str) -> Vec<Vec<String>> {
    table
        .split("\n\n")
        .map(|block| {
            let mut lines = block.lines().map(|l| l.trim_end().to_string());
            let header = lines.next().unwrap_or_default();
            let mut rows: Vec<String> = lines.filter(|l| !l.is_empty()).collect();
            rows.sort();
            std::iter::once(header).chain(rows).collect()
        })
        .filter(|block: &Vec<String>| block.iter().any(|l| !l.is_empty()))
        .collect()
}

/// Panics at the first line where Tern's text differs from Envoy's (the texts are long).
fn assert_same(tern: &str, envoy: &str, what: &str) {
    if tern == envoy {
        return;
    }
    let (t, e): (Vec<&str>, Vec<&str>) = (tern.lines().collect(), envoy.lines().collect());
    let at = t
        .iter()
        .zip(&e)
        .position(|(a, b)| a != b)
        .unwrap_or(t.len().min(e.len()));
    let around = |lines: &[&str]| lines[at.saturating_sub(3)..(at + 4).min(lines.len())].join("\n");
    panic!(
        "{what}: Tern differs from Envoy at line {at} ({} and {} lines)\n--- Tern\n{}\n--- Envoy\n{}",
        t.len(),
        e.len(),
        around(&t),
        around(&e)
    );
}

/// The rows of a table whose first column is `first`.
fn rows<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(first))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istioctl_prints_the_same_tables_for_tern_and_envoy() {
    if !prerequisites() {
        return;
    }
    let pair = Pair::start("ictl-short").await;
    let mut outputs = Vec::new();
    for proxy in pair.both() {
        let dump = pair.save(proxy, "/config_dump", "dump.json").await;
        let eds = pair
            .save(proxy, "/config_dump?include_eds", "eds.json")
            .await;
        let clusters = pair
            .save(proxy, "/clusters?format=json", "clusters.json")
            .await;
        let pc = |kind: &str, file: &Path| istioctl_ok(&["proxy-config", kind], file);
        outputs.push([
            ("listeners", pc("listeners", &dump)),
            ("routes", pc("routes", &dump)),
            ("clusters", pc("clusters", &dump)),
            ("secret", pc("secret", &dump)),
            ("endpoints", pc("endpoints", &clusters)),
            ("all", pc("all", &eds)),
        ]);
    }
    let [tern, envoy] = [&outputs[0], &outputs[1]];
    for ((kind, tern), (_, envoy)) in tern.iter().zip(envoy) {
        let without_version = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.starts_with("Envoy Version:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_same(
            &format!("{:#?}", sorted_rows(&without_version(tern))),
            &format!("{:#?}", sorted_rows(&without_version(envoy))),
            &format!("istioctl proxy-config {kind}"),
        );
    }

    // What must be there, from Tern's output (Envoy's is the same, above).
    let output = |kind: &str| &outputs[0].iter().find(|(k, _)| *k == kind).expect(kind).1;
    let listeners = output("listeners");
    assert_eq!(rows(listeners, "0.0.0.0").len(), 14, "{listeners}");
    let routes = output("routes");
    let rds = rows(routes, "9080");
    assert_eq!(rds.len(), 4, "{routes}");
    assert!(
        rds.iter()
            .any(|r| r.contains("reviews.default.svc.cluster.local:9080")),
        "{routes}"
    );
    let clusters = output("clusters");
    assert!(
        rows(clusters, "reviews.default.svc.cluster.local")
            .iter()
            .any(|r| r.split_whitespace().collect::<Vec<_>>()
                == [
                    "reviews.default.svc.cluster.local",
                    "9080",
                    "v1",
                    "outbound",
                    "EDS",
                    "reviews.default"
                ]),
        "{clusters}"
    );
    // The workload certificate and the root as the test PKI has them, valid.
    let certs: Value = serde_json::from_str(&get_ok(&pair.envoy, "/certs").await).expect("JSON");
    // Envoy's `/certs` says what the test PKI's certificates are.
    let details = |field: &str| -> String {
        let cert = &certs["certificates"][0][field][0];
        ["serial_number", "expiration_time", "valid_from"]
            .map(|k| cert[k].as_str().expect(k).to_string())
            .join(" ")
    };
    let secret = output("secret");
    for (name, kind, details) in [
        ("default", "Cert Chain", details("cert_chain")),
        ("ROOTCA", "CA", details("ca_cert")),
    ] {
        let row = rows(secret, name);
        assert_eq!(row.len(), 1, "{secret}");
        // NAME TYPE STATUS VALID-CERT SERIAL NOT-AFTER NOT-BEFORE
        assert_eq!(
            row[0].split_whitespace().collect::<Vec<_>>().join(" "),
            format!("{name} {kind} ACTIVE true {details}"),
            "{secret}"
        );
    }
    let endpoints = output("endpoints");
    for address in ["10.10.0.11:9080", "10.10.0.12:9080", "10.10.0.13:9080"] {
        assert!(
            rows(endpoints, address)
                .iter()
                .all(|r| r.contains("HEALTHY")),
            "{endpoints}"
        );
    }
    assert_eq!(rows(endpoints, "10.10.0.11:9080").len(), 2, "{endpoints}");
    let all = output("all");
    assert_eq!(
        rows(all, "endpoint/10.10.0.11:9080").len(),
        2,
        "EDS in `all`:\n{all}"
    );
    let build = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    assert!(
        all.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == [
                "Envoy",
                "Version:",
                &format!("{}/Clean/{build}/rustls", env!("CARGO_PKG_VERSION"))
            ]),
        "{all}"
    );
    assert!(
        outputs[1].iter().any(|(k, text)| *k == "all"
            && text.contains("Envoy Version: 1.40.0/Clean/RELEASE/BoringSSL")),
        "Envoy's own version line changed"
    );
}

/// `-o json` without `lastUpdated` anywhere and without the values of the hosts' counters and
/// gauges (they count each proxy's own traffic: Envoy counts its xDS and SDS streams on the
/// `xds-grpc` and `sds-grpc` hosts, Tern does not count its own there), each top-level list sorted.
fn normalised_json(text: &str) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(fields) => {
                fields.remove("lastUpdated");
                if let Some(Value::Array(stats)) = fields.get_mut("stats") {
                    for stat in stats.iter_mut().filter_map(Value::as_object_mut) {
                        stat.remove("value");
                    }
                }
                fields.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    strip(&mut value);
    if let Value::Array(items) = &mut value {
        items.sort_by_key(|i| i.to_string());
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istioctl_json_output_is_the_same_for_tern_and_envoy() {
    if !prerequisites() {
        return;
    }
    let pair = Pair::start("ictl-json").await;
    let mut outputs = Vec::new();
    for proxy in pair.both() {
        let dump = pair.save(proxy, "/config_dump", "dump.json").await;
        let clusters = pair
            .save(proxy, "/clusters?format=json", "clusters.json")
            .await;
        let json = |kind: &str| {
            normalised_json(&istioctl_ok(&["proxy-config", kind, "-o", "json"], &dump))
        };
        outputs.push([
            ("listeners", json("listeners")),
            ("routes", json("routes")),
            ("clusters", json("clusters")),
            ("secret", json("secret")),
            (
                "endpoints",
                normalised_json(&istioctl_ok(
                    &["proxy-config", "endpoints", "-o", "json"],
                    &clusters,
                )),
            ),
        ]);
    }
    for ((kind, tern), (_, envoy)) in outputs[0].iter().zip(&outputs[1]) {
        assert_same(
            &serde_json::to_string_pretty(tern).expect("JSON"),
            &serde_json::to_string_pretty(envoy).expect("JSON"),
            &format!("istioctl proxy-config {kind} -o json"),
        );
    }
    let count = |kind: &str| match &outputs[0].iter().find(|(k, _)| *k == kind).expect(kind).1 {
        Value::Array(items) => items.len(),
        other => other["dynamicActiveSecrets"].as_array().map_or(0, Vec::len),
    };
    assert_eq!(
        [
            count("listeners"),
            count("routes"),
            count("clusters"),
            count("secret"),
            count("endpoints"),
        ],
        [5, 7, 13, 2, 9]
    );
}

/// A body compared across proxies: JSON configs without `last_updated`, sorted; text as is.
fn comparable(body: &str) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(fields) => {
                fields.remove("last_updated");
                fields.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(body) {
        Ok(mut value) => {
            strip(&mut value);
            // The configs, and each config's resource lists (Envoy keeps listeners in arrival
            // order and several tables in hash order).
            if let Some(Value::Array(configs)) = value.get_mut("configs") {
                for config in configs.iter_mut() {
                    if let Value::Object(fields) = config {
                        for list in fields.values_mut() {
                            if let Value::Array(items) = list {
                                items.sort_by_key(|i| i.to_string());
                            }
                        }
                    }
                }
                configs.sort_by_key(|i| i.to_string());
            }
            value
        }
        Err(_) => Value::String(body.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_query_parameters_answer_as_envoy() {
    if !prerequisites() {
        return;
    }
    let pair = Pair::start("ictl-query").await;
    // Status, and whether the bodies must be equal (those holding the bootstrap are not:
    // Envoy's node lists its extensions).
    let cases: &[(&str, u16, bool)] = &[
        (
            "resource=dynamic_active_clusters&name_regex=.*reviews.*",
            200,
            true,
        ),
        (
            "resource=dynamic_active_secrets&name_regex=def.*",
            200,
            true,
        ),
        (
            "resource=static_route_configs&name_regex=inbound.*&mask=route_config.name",
            200,
            true,
        ),
        (
            "resource=dynamic_active_clusters&mask=cluster.load_assignment.cluster_name,version_info",
            200,
            true,
        ),
        (
            "include_eds&resource=dynamic_endpoint_configs&name_regex=.*reviews.*",
            200,
            true,
        ),
        ("include_eds&resource=static_endpoint_configs", 200, true),
        (
            "mask=dynamic_active_clusters,dynamic_warming_clusters,static_clusters",
            200,
            true,
        ),
        ("mask=dynamic_listeners,static_listeners", 200, true),
        ("mask=dynamic_route_configs,static_route_configs", 200, true),
        (
            "mask=dynamic_active_secrets,dynamic_warming_secrets",
            200,
            true,
        ),
        ("name_regex=de", 200, false),
        ("mask=", 200, false),
        ("resource=", 200, false),
        ("resource=nope", 404, true),
        ("resource=bootstrap", 400, true),
        ("resource=version_info", 400, true),
        ("mask=nope", 400, true),
        ("mask=dynamic_listeners.name", 400, true),
        ("mask=bootstrap.node.id,static_clusters", 400, true),
        // The FieldMask's debug text has a marker protobuf varies on purpose: prefix checked.
        ("resource=dynamic_active_clusters&mask=cluster", 400, false),
        (
            "resource=dynamic_active_clusters&mask=cluster.name,nope",
            400,
            false,
        ),
        (
            "resource=dynamic_listeners&mask=active_state.listener.name",
            400,
            false,
        ),
        // RE2's and the regex crate's reasons differ: prefix checked.
        ("name_regex=(", 400, false),
    ];
    for (query, status, same_body) in cases {
        let path = format!("/config_dump?{query}");
        let mut answers = Vec::new();
        for proxy in pair.both() {
            let (got, body) = proxy.get(&path).await.expect("admin answers");
            assert_eq!(got, *status, "{} {path}: {body}", proxy.kind.name());
            answers.push(body);
        }
        let (tern, envoy) = (&answers[0], &answers[1]);
        if *same_body {
            assert_same(
                &serde_json::to_string_pretty(&comparable(tern)).expect("JSON"),
                &serde_json::to_string_pretty(&comparable(envoy)).expect("JSON"),
                &path,
            );
        } else if *status == 400 {
            // FieldMask texts: the same paths and ending after the debug marker line; regex
            // texts: the same up to the parser's reason.
            let comparable_error = |b: &str| -> String {
                if b.starts_with("FieldMask goo.gle/debug") {
                    b.split_once('\n').map_or("", |(_, rest)| rest).to_string()
                } else {
                    b.split(": ").take(2).collect::<Vec<_>>().join(": ")
                }
            };
            assert_eq!(
                comparable_error(tern),
                comparable_error(envoy),
                "{path}: Tern {tern:?}, Envoy {envoy:?}"
            );
            assert!(
                tern.starts_with("FieldMask goo.gle/debug")
                    || tern.starts_with("INVALID_ARGUMENT: Error while parsing name_regex from ("),
                "{path}: {tern}"
            );
        } else {
            let types = |b: &str| -> Vec<Value> {
                let v: Value = serde_json::from_str(b).expect("JSON");
                v["configs"]
                    .as_array()
                    .expect("configs")
                    .iter()
                    .map(|c| c["@type"].clone())
                    .collect()
            };
            assert_eq!(types(tern), types(envoy), "{path}");
        }
    }

    // Byte for byte, but for when each proxy got each resource: resources that have no maps
    // (whose key order protobuf leaves unspecified) and come one per type.
    let stamp = regex::Regex::new(r#""last_updated": "[^"]*""#).expect("regex");
    for query in [
        "resource=dynamic_route_configs",
        "resource=dynamic_active_secrets",
        "resource=dynamic_route_configs&mask=route_config.virtual_hosts",
        "mask=dynamic_active_secrets",
    ] {
        let path = format!("/config_dump?{query}");
        let (tern, envoy) = (
            get_ok(&pair.tern, &path).await,
            get_ok(&pair.envoy, &path).await,
        );
        assert_same(
            &stamp.replace_all(&tern, "\"last_updated\": T"),
            &stamp.replace_all(&envoy, "\"last_updated\": T"),
            &path,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_lists_the_same_certificates_as_envoy() {
    if !prerequisites() {
        return;
    }
    let pair = Pair::start("ictl-certs").await;
    // Byte for byte: every context has the same two certificates here, so order cannot differ.
    let (tern, envoy) = (
        get_ok(&pair.tern, "/certs").await,
        get_ok(&pair.envoy, "/certs").await,
    );
    assert_same(&tern, &envoy, "/certs");
    let mut answers = Vec::new();
    for proxy in pair.both() {
        let mut certs: Value = serde_json::from_str(&get_ok(proxy, "/certs").await).expect("JSON");
        let list = certs["certificates"].as_array_mut().expect("certificates");
        list.sort_by_key(|c| c.to_string());
        answers.push(certs);
    }
    assert_eq!(answers[0], answers[1], "/certs");
    // One per TLS context: two mesh clusters' istio mTLS sockets, three virtualInbound chains.
    let list = answers[0]["certificates"].as_array().expect("certificates");
    assert_eq!(list.len(), 5, "{list:?}");
    let leaf = &list[0]["cert_chain"][0];
    assert_eq!(leaf["path"], "<inline>");
    assert_eq!(
        leaf["subject_alt_names"],
        serde_json::json!([{"uri": "spiffe://cluster.local/ns/default/sa/tern"}])
    );
    assert!(
        leaf["days_until_expiration"]
            .as_str()
            .is_some_and(|d| d.parse::<u64>().is_ok_and(|d| d > 30_000))
    );
}
