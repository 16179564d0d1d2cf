//! Differential tests: the same static bootstrap runs through the real Envoy 1.40.0 and through
//! Tern, the same connections go through both, and Tern must answer as Envoy does: the same
//! load-balancing split, the same admin shapes and the same stat values. Envoy is the oracle;
//! deliberate differences are listed in docs/envoy-differences.md.
//!
//! Every test starts its own pair of proxies on ephemeral ports (listener and admin port 0, the
//! bootstrap's endpoints filled in from the test backends), synchronises by polling admin
//! endpoints against deadlines, and skips (fails under `CI=true`) without Envoy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tern_tests::backend::{self, Backend};
use tern_tests::envoy::envoy_binary;
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess};
use tokio::time::Instant;

const WEIGHTED: &str = include_str!("../testdata/tcp_weighted_round_robin.yaml");
const LEAST_REQUEST: &str = include_str!("../testdata/tcp_least_request.yaml");
const LISTENER: &str = "tcp_in";
const SETTLE_DEADLINE: Duration = Duration::from_secs(10);

/// Envoy and Tern running the same bootstrap.
struct Pair {
    envoy: ProxyProcess,
    tern: ProxyProcess,
}

impl Pair {
    /// Starts both from `template` with `{{NAME_PORT}}` placeholders replaced by the backends'
    /// ports (`a` fills `{{A_PORT}}`); `None` when Envoy is missing and the test should skip.
    async fn start(template: &str, backends: &[&Backend]) -> Option<Pair> {
        let available = envoy_binary().is_some();
        if !prereq::require(
            available,
            "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
        ) {
            return None;
        }
        let mut bootstrap = template.to_string();
        for backend in backends {
            let placeholder = format!("{{{{{}_PORT}}}}", backend.name.to_uppercase());
            bootstrap = bootstrap.replace(&placeholder, &backend.address.port().to_string());
        }
        assert!(
            !bootstrap.contains("{{"),
            "unfilled placeholder in:\n{bootstrap}"
        );
        let envoy_bin = envoy_binary().expect("checked above");
        let (envoy, tern) = tokio::join!(
            ProxyProcess::start(ProxyKind::Envoy, &envoy_bin, &bootstrap, 1),
            ProxyProcess::tern(&bootstrap, 1),
        );
        Some(Pair {
            envoy: envoy.expect("envoy starts"),
            tern: tern.expect("tern starts"),
        })
    }

    fn both(&self) -> [&ProxyProcess; 2] {
        [&self.envoy, &self.tern]
    }
}

/// The three backends of the weighted bootstrap: `a` (weight 3), `b` (weight 1), `down`
/// (weight 1, health_status UNHEALTHY).
async fn weighted_backends() -> [Backend; 3] {
    [
        Backend::start("a").await.expect("backend a"),
        Backend::start("b").await.expect("backend b"),
        Backend::start("down").await.expect("backend down"),
    ]
}

/// Sends `count` sequential connections through `proxy`'s listener and counts which backend
/// greeted each one; every payload must come back intact.
async fn split(proxy: &ProxyProcess, count: usize) -> BTreeMap<String, usize> {
    let address = proxy
        .listener_address(LISTENER)
        .await
        .expect("listener address");
    let mut seen = BTreeMap::new();
    for i in 0..count {
        let payload = format!("connection {i}");
        let (name, echoed) = backend::round_trip(address, payload.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{}: connection {i} via {address}: {e}", proxy.kind.name()));
        assert_eq!(
            echoed,
            payload.as_bytes(),
            "{}: echo of connection {i}",
            proxy.kind.name()
        );
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .map(|(name, n)| (name.to_string(), *n))
        .collect()
}

#[tokio::test]
async fn weighted_round_robin_splits_3_to_1_and_skips_the_unhealthy_host() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let expected = counts(&[("a", 300), ("b", 100)]);
    let envoy = split(&pair.envoy, 400).await;
    assert_eq!(envoy, expected, "Envoy's own split (the oracle) changed");
    let tern = split(&pair.tern, 400).await;
    assert_eq!(
        tern, envoy,
        "Tern's weighted round robin split differs from Envoy's"
    );
    assert_eq!(
        backends[2].connections(),
        0,
        "the UNHEALTHY host was connected to"
    );
}

#[tokio::test]
async fn least_request_with_sequential_connections_splits_evenly() {
    let backends = [
        Backend::start("a").await.expect("backend a"),
        Backend::start("b").await.expect("backend b"),
    ];
    let Some(pair) = Pair::start(LEAST_REQUEST, &backends.each_ref()).await else {
        return;
    };
    // With no connection outstanding every host ties on active requests, so Envoy's
    // power-of-two-choices falls back to its random pick: an even split up to chance
    // (binomial, sd 10 for 400 connections; 140..=260 is six sd either way).
    let even = |split: &BTreeMap<String, usize>| {
        split.len() == 2 && split.values().all(|n| (140..=260).contains(n))
    };
    let envoy = split(&pair.envoy, 400).await;
    assert!(
        even(&envoy),
        "Envoy's LEAST_REQUEST split is not even: {envoy:?}"
    );
    let tern = split(&pair.tern, 400).await;
    assert!(
        even(&tern),
        "Tern's LEAST_REQUEST split is not even like Envoy's ({envoy:?}): {tern:?}"
    );
    assert_eq!(tern.values().sum::<usize>(), 400);
}

#[tokio::test]
async fn ready_answers_like_envoy() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let envoy = pair.envoy.get("/ready").await.expect("envoy /ready");
    let tern = pair.tern.get("/ready").await.expect("tern /ready");
    assert_eq!(envoy, (200, "LIVE\n".to_string()));
    assert_eq!(tern, envoy);
}

// ----- stats -------------------------------------------------------------------------------

/// `/stats` text as name -> value (histogram summaries kept as their text).
async fn stats(proxy: &ProxyProcess) -> BTreeMap<String, String> {
    let (status, body) = proxy.get("/stats").await.expect("/stats");
    assert_eq!(status, 200, "{} /stats: {body}", proxy.kind.name());
    body.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The stat-name segment of the TCP listener (`listener.<this>.downstream_cx_total`): not the
/// admin listener, not a per-worker copy.
fn listener_stat_segment(stats: &BTreeMap<String, String>) -> Option<String> {
    stats.keys().find_map(|name| {
        let segment = name
            .strip_prefix("listener.")?
            .strip_suffix(".downstream_cx_total")?;
        (segment != "admin" && !segment.contains(".worker_")).then(|| segment.to_string())
    })
}

/// Sends `connections` through both proxies, then waits until each has accounted for all of
/// them (totals reached, nothing active) and returns each one's stats.
async fn traffic_then_settled_stats(
    pair: &Pair,
    connections: usize,
) -> [BTreeMap<String, String>; 2] {
    let mut settled = Vec::new();
    for proxy in pair.both() {
        split(proxy, connections).await;
        let total = connections.to_string();
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let stats = stats(proxy).await;
            let listener = listener_stat_segment(&stats);
            let get = |name: &str| stats.get(name).map(String::as_str);
            let done = get("cluster.weighted.upstream_cx_total") == Some(&total)
                && get("cluster.weighted.upstream_cx_active") == Some("0")
                && get("tcp.weighted.downstream_cx_total") == Some(&total)
                && listener.as_ref().is_some_and(|l| {
                    get(&format!("listener.{l}.downstream_cx_active")) == Some("0")
                });
            if done {
                settled.push(stats);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never settled after {connections} connections: {stats:#?}",
                proxy.kind.name()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    settled.try_into().expect("two proxies")
}

#[tokio::test]
async fn stats_after_traffic_match_envoy_names_and_values() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let [envoy, tern] = traffic_then_settled_stats(&pair, 40).await;

    let envoy_listener = listener_stat_segment(&envoy).expect("Envoy has listener stats");
    let tern_listener = listener_stat_segment(&tern).expect("Tern has listener stats");
    // Both name a listener by its configured address, port 0 included: `127.0.0.1_0`.
    assert_eq!(tern_listener, envoy_listener, "listener stat names differ");

    let mut names: Vec<String> = [
        "upstream_cx_total",
        "upstream_cx_active",
        "upstream_cx_connect_fail",
        "membership_total",
        "membership_healthy",
    ]
    .iter()
    .map(|s| format!("cluster.weighted.{s}"))
    .collect();
    for s in ["downstream_cx_total", "downstream_cx_active"] {
        names.push(format!("listener.{envoy_listener}.{s}"));
    }
    names.extend(
        [
            "tcp.weighted.downstream_cx_total",
            "server.state",
            "listener_manager.workers_started",
            "cluster_manager.active_clusters",
        ]
        .map(String::from),
    );
    for name in &names {
        let expected = envoy
            .get(name)
            .unwrap_or_else(|| panic!("Envoy lacks {name}"));
        assert_eq!(tern.get(name), Some(expected), "stat {name}");
    }
    assert_eq!(envoy["cluster.weighted.upstream_cx_total"], "40");
    assert_eq!(envoy["cluster.weighted.membership_total"], "3");
    assert_eq!(envoy["cluster.weighted.membership_healthy"], "2");

    // Not asserted (see docs/envoy-differences.md): the wider stat families Envoy creates for
    // these features. Printed so a run shows what is still missing.
    let missing: Vec<&String> = envoy
        .keys()
        .filter(|name| {
            name.starts_with("cluster.weighted.")
                || name.starts_with(&format!("listener.{envoy_listener}."))
                || name.starts_with("tcp.weighted.")
        })
        .filter(|name| !tern.contains_key(*name))
        .collect();
    eprintln!(
        "stats Envoy has and Tern lacks ({}): {missing:?}",
        missing.len()
    );
}

// ----- /clusters ---------------------------------------------------------------------------

/// `/clusters` text split into per-host `key -> value` lists (in order) and the other lines.
struct ClustersText {
    hosts: BTreeMap<String, Vec<(String, String)>>,
    other: BTreeSet<String>,
}

fn parse_clusters(body: &str) -> ClustersText {
    let mut hosts: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut other = BTreeSet::new();
    for line in body.lines() {
        let parts: Vec<&str> = line.split("::").collect();
        match parts.as_slice() {
            [cluster, host, key, value] if host.parse::<SocketAddr>().is_ok() => hosts
                .entry(format!("{cluster}::{host}"))
                .or_default()
                .push((key.to_string(), value.to_string())),
            _ => {
                other.insert(line.to_string());
            }
        }
    }
    ClustersText { hosts, other }
}

#[tokio::test]
async fn clusters_text_host_lines_match_envoy() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    traffic_then_settled_stats(&pair, 40).await;
    let mut parsed = Vec::new();
    for proxy in pair.both() {
        let (status, body) = proxy.get("/clusters").await.expect("/clusters");
        assert_eq!(status, 200, "{} /clusters", proxy.kind.name());
        parsed.push(parse_clusters(&body));
    }
    let (envoy, tern) = (&parsed[0], &parsed[1]);
    assert_eq!(envoy.hosts.len(), 3, "Envoy lists the three hosts");
    assert_eq!(
        tern.hosts.keys().collect::<Vec<_>>(),
        envoy.hosts.keys().collect::<Vec<_>>(),
        "host set"
    );
    let value = |lines: &[(String, String)], key: &str| {
        lines.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    for (host, envoy_lines) in &envoy.hosts {
        let tern_lines = &tern.hosts[host];
        let keys =
            |lines: &[(String, String)]| lines.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(tern_lines),
            keys(envoy_lines),
            "/clusters keys of {host}"
        );
        for key in ["cx_total", "weight", "health_flags"] {
            assert_eq!(
                value(tern_lines, key),
                value(envoy_lines, key),
                "{host}::{key}"
            );
        }
    }
    let by_port = |port: u16, key: &str| {
        let host = format!("weighted::127.0.0.1:{port}");
        value(&envoy.hosts[&host], key).expect("key present")
    };
    let [a, b, down] = backends.each_ref().map(|backend| backend.address.port());
    assert_eq!(
        [
            by_port(a, "cx_total"),
            by_port(b, "cx_total"),
            by_port(down, "cx_total")
        ],
        ["30", "10", "0"]
    );
    assert_eq!(by_port(down, "health_flags"), "/failed_eds_health");
    assert_eq!(tern.other, envoy.other, "cluster-level /clusters lines");
}

// ----- /config_dump ------------------------------------------------------------------------

async fn json(proxy: &ProxyProcess, path: &str) -> serde_json::Value {
    let (status, body) = proxy.get(path).await.expect(path);
    assert_eq!(status, 200, "{} {path}: {body}", proxy.kind.name());
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{} {path} is not JSON ({e}): {body}", proxy.kind.name()))
}

fn config_types(dump: &serde_json::Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .expect("configs array")
        .iter()
        .map(|c| c["@type"].as_str().expect("@type").to_string())
        .collect()
}

#[tokio::test]
async fn config_dump_has_envoy_config_types_and_static_clusters() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    for proxy in pair.both() {
        let types = config_types(&json(proxy, "/config_dump").await);
        for wanted in [
            "BootstrapConfigDump",
            "ClustersConfigDump",
            "ListenersConfigDump",
        ] {
            let wanted = format!("type.googleapis.com/envoy.admin.v3.{wanted}");
            assert!(
                types.contains(&wanted),
                "{} /config_dump lacks {wanted}: {types:?}",
                proxy.kind.name()
            );
        }
    }
    let items = |dump: &serde_json::Value, field: &str| -> Vec<(String, String)> {
        dump["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .map(|item| {
                let item_type = item["@type"].as_str().expect("item @type").to_string();
                let name = item[field]["name"]
                    .as_str()
                    .expect("resource name")
                    .to_string();
                (item_type, name)
            })
            .collect()
    };
    for (resource, field) in [
        ("static_clusters", "cluster"),
        ("static_listeners", "listener"),
    ] {
        let path = format!("/config_dump?resource={resource}");
        let envoy = items(&json(&pair.envoy, &path).await, field);
        let tern = items(&json(&pair.tern, &path).await, field);
        assert!(!envoy.is_empty(), "Envoy {path} is empty");
        assert_eq!(tern, envoy, "{path} items (@type, name)");
    }
}

#[tokio::test]
async fn config_dump_mask_keeps_only_the_masked_nested_field() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let path = "/config_dump?resource=static_clusters&mask=cluster.name";
    let envoy = json(&pair.envoy, path).await;
    let tern = json(&pair.tern, path).await;
    assert_eq!(
        envoy,
        serde_json::json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
            "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "weighted"}
        }]})
    );
    assert_eq!(tern, envoy, "{path}");
}

#[tokio::test]
async fn config_dump_rejects_a_mask_that_names_no_field() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    // With ?resource= the mask applies to each item, which has no top-level `name`.
    let path = "/config_dump?resource=static_clusters&mask=name";
    let (envoy, _) = pair.envoy.get(path).await.expect("envoy");
    let (tern, body) = pair.tern.get(path).await.expect("tern");
    assert_eq!(envoy, 400);
    assert_eq!(tern, envoy, "{path} on Tern answered: {body}");
}

#[tokio::test]
async fn config_dump_of_static_config_has_no_version_info() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let versions = |dump: serde_json::Value| -> Vec<(String, Option<String>)> {
        dump["configs"]
            .as_array()
            .expect("configs")
            .iter()
            .map(|c| {
                (
                    c["@type"].as_str().expect("@type").to_string(),
                    c["version_info"].as_str().map(String::from),
                )
            })
            .filter(|(t, _)| {
                t.ends_with("ClustersConfigDump") || t.ends_with("ListenersConfigDump")
            })
            .collect()
    };
    let envoy = versions(json(&pair.envoy, "/config_dump").await);
    let tern = versions(json(&pair.tern, "/config_dump").await);
    assert!(envoy.iter().all(|(_, v)| v.is_none()), "Envoy: {envoy:?}");
    assert_eq!(tern, envoy, "version_info of static-only dumps");
}

/// Static secrets as `/config_dump` shows them: the private key redacted in whichever form it was
/// given (inline string, inline bytes, file name), everything else verbatim.
#[tokio::test]
async fn config_dump_static_secrets_redact_private_keys_as_envoy() {
    let dir = tern_tests::pki::dir();
    let dir = dir.display();
    let pem = tern_tests::pki::pem;
    let secrets = format!(
        r#"
  secrets:
  - name: inline
    tls_certificate:
      certificate_chain: {{inline_string: {:?}}}
      private_key: {{inline_string: {:?}}}
  - name: bytes
    tls_certificate:
      certificate_chain: {{filename: {dir}/workload.pem}}
      private_key: {{inline_bytes: {}}}
  - name: files
    tls_certificate:
      certificate_chain: {{filename: {dir}/rotated.pem}}
      private_key: {{filename: {dir}/rotated-key.pem}}
  - name: root
    validation_context: {{trusted_ca: {{inline_string: {:?}}}}}
"#,
        pem("workload.pem"),
        pem("workload-key.pem"),
        tern_tests::pki::base64(pem("workload-key.pem").as_bytes()),
        pem("ca.pem"),
    );
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(&format!("{WEIGHTED}{secrets}"), &backends.each_ref()).await
    else {
        return;
    };
    let items = |dump: serde_json::Value| -> Vec<serde_json::Value> {
        let mut items = dump["configs"].as_array().expect("configs").clone();
        items.sort_by_key(|i| i["name"].as_str().unwrap_or_default().to_string());
        items
    };
    let path = "/config_dump?resource=static_secrets";
    let envoy = items(json(&pair.envoy, path).await);
    let tern = items(json(&pair.tern, path).await);
    assert_eq!(envoy.len(), 4, "{envoy:?}");
    assert_eq!(tern, envoy, "{path}");
    for proxy in pair.both() {
        let dump = json(proxy, "/config_dump").await;
        assert!(
            !dump.to_string().contains("PRIVATE KEY"),
            "{} shows a private key",
            proxy.kind.name()
        );
    }
}

// ----- /stats/prometheus -------------------------------------------------------------------

/// A strict check of the Prometheus text exposition format as Envoy writes it: `# TYPE` before a
/// family's samples, one declaration per family, samples grouped under their family (histograms
/// as `_bucket` with `le`, `_sum`, `_count`), well-formed labels and numeric values. Returns the
/// samples as `name{labels}` -> value.
fn check_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").expect("regex");
    const LABEL: &str = r#"[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*""#;
    let sample_re = regex::Regex::new(&format!(
        r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{((?:{LABEL}(?:,{LABEL})*,?)?)\}})? (\S+)(?: -?[0-9]+)?$"
    ))
    .expect("regex");
    let label_re = regex::Regex::new(LABEL).expect("regex");
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut samples = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !name_re.is_match(name) {
                        return Err(at("bad family name".into()));
                    }
                    if !["counter", "gauge", "histogram"].contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if declared
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(at("family declared twice".into()));
                    }
                    current = Some((name.to_string(), kind.to_string()));
                }
                ["HELP", name, ..] if name_re.is_match(name) => {}
                _ => return Err(at("unexpected comment".into())),
            }
            continue;
        }
        let caps = sample_re
            .captures(line)
            .ok_or_else(|| at("malformed sample".into()))?;
        let name = &caps[1];
        let labels = caps.get(2).map_or("", |m| m.as_str());
        let value = &caps[3];
        let parsed: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at(format!("bad value {v}")))?,
        };
        let (family, kind) = current
            .as_ref()
            .ok_or_else(|| at("sample before any # TYPE".into()))?;
        let label_names: Vec<&str> = label_re
            .find_iter(labels)
            .map(|m| m.as_str().split('=').next().unwrap_or_default())
            .collect();
        let belongs = if kind == "histogram" {
            (name == format!("{family}_bucket") && label_names.contains(&"le"))
                || name == format!("{family}_sum")
                || name == format!("{family}_count")
        } else {
            name == family
        };
        if !belongs {
            return Err(at(format!(
                "sample outside its family (current family {family} {kind})"
            )));
        }
        let mut unique = label_names.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != label_names.len() {
            return Err(at("duplicate label".into()));
        }
        let key = format!("{name}{{{labels}}}");
        if samples.insert(key, parsed).is_some() {
            return Err(at("duplicate sample".into()));
        }
    }
    if samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(samples)
}

#[test]
fn prometheus_check_rejects_malformed_text() {
    let good = "# TYPE envoy_a counter\nenvoy_a{x=\"1\"} 3\n# TYPE envoy_h histogram\nenvoy_h_bucket{le=\"+Inf\"} 1\nenvoy_h_sum 2.5\nenvoy_h_count 1\n";
    assert_eq!(check_prometheus(good).expect("valid").len(), 4);
    for bad in [
        "envoy_a 1\n",                                                 // no family
        "# TYPE envoy_a counter\nenvoy_b 1\n",                         // undeclared family
        "# TYPE envoy_a counter\nenvoy_a{x=1} 1\n",                    // unquoted label
        "# TYPE envoy_a counter\nenvoy_a one\n",                       // not a number
        "# TYPE envoy_a summary\nenvoy_a 1\n",                         // unexpected type
        "# TYPE envoy_a counter\n# TYPE envoy_a counter\nenvoy_a 1\n", // declared twice
        "# TYPE envoy_h histogram\nenvoy_h_bucket 1\n",
        "# TYPE envoy_a counter\nenvoy_a{x=\"1\"y=\"2\"} 1\n", // bucket without le
    ] {
        assert!(check_prometheus(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn prometheus_output_is_valid_and_agrees_with_envoy() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    traffic_then_settled_stats(&pair, 40).await;
    let mut parsed = Vec::new();
    for proxy in pair.both() {
        let (status, body) = proxy
            .get("/stats/prometheus")
            .await
            .expect("/stats/prometheus");
        assert_eq!(status, 200, "{}", proxy.kind.name());
        let samples = check_prometheus(&body).unwrap_or_else(|e| {
            panic!("{} /stats/prometheus is not valid: {e}", proxy.kind.name())
        });
        parsed.push(samples);
    }
    for sample in [
        "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"weighted\"}",
        "envoy_cluster_membership_healthy{envoy_cluster_name=\"weighted\"}",
        "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"weighted\"}",
        "envoy_cluster_manager_active_clusters{}",
    ] {
        let envoy = parsed[0]
            .get(sample)
            .unwrap_or_else(|| panic!("Envoy lacks {sample}"));
        assert_eq!(parsed[1].get(sample), Some(envoy), "{sample}");
    }
}

// ----- /quitquitquit -----------------------------------------------------------------------

#[tokio::test]
async fn quitquitquit_needs_post_and_then_exits() {
    let backends = weighted_backends().await;
    let Some(mut pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let envoy_get = pair.envoy.get("/quitquitquit").await.expect("envoy GET");
    let tern_get = pair.tern.get("/quitquitquit").await.expect("tern GET");
    assert_eq!(
        envoy_get.0, 405,
        "Envoy refuses GET /quitquitquit: {envoy_get:?}"
    );
    assert_eq!(tern_get.0, envoy_get.0, "GET /quitquitquit status");
    // Envoy's body has no trailing newline; compare the words.
    assert_eq!(
        tern_get.1.trim_end(),
        envoy_get.1.trim_end(),
        "GET /quitquitquit body"
    );

    for proxy in [&mut pair.envoy, &mut pair.tern] {
        let (status, _) = proxy
            .post("/quitquitquit")
            .await
            .expect("POST /quitquitquit");
        assert_eq!(status, 200, "{} POST /quitquitquit", proxy.kind.name());
        let exit = proxy
            .wait_for_exit(Duration::from_secs(15))
            .await
            .expect("try_wait");
        assert!(
            exit.is_some(),
            "{} still running after POST /quitquitquit",
            proxy.kind.name()
        );
    }
}

// ----- /server_info, /logging, /memory ------------------------------------------------------

#[tokio::test]
async fn server_info_logging_and_memory_have_envoys_shape() {
    let backends = weighted_backends().await;
    let Some(pair) = Pair::start(WEIGHTED, &backends.each_ref()).await else {
        return;
    };
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    let envoy = json(&pair.envoy, "/server_info").await;
    let tern = json(&pair.tern, "/server_info").await;
    for field in [
        "version",
        "state",
        "uptime_current_epoch",
        "uptime_all_epochs",
        "command_line_options",
        "node",
    ] {
        assert!(
            envoy.get(field).is_some(),
            "Envoy /server_info lacks {field}: {envoy}"
        );
        assert!(
            tern.get(field).is_some(),
            "Tern /server_info lacks {field}: {tern}"
        );
    }
    assert_eq!(tern["state"], envoy["state"]);
    assert_eq!(
        tern["command_line_options"]["concurrency"],
        envoy["command_line_options"]["concurrency"]
    );
    assert_eq!(tern["node"]["id"], envoy["node"]["id"]);
    assert_eq!(tern["node"]["cluster"], envoy["node"]["cluster"]);
    // /memory: the same keys, values as decimal strings.
    let envoy_memory = json(&pair.envoy, "/memory").await;
    let tern_memory = json(&pair.tern, "/memory").await;
    assert_eq!(keys(&tern_memory), keys(&envoy_memory));
    // /logging: a POST changes every level and the listing says so, on both.
    for proxy in [&pair.envoy, &pair.tern] {
        let (status, body) = proxy
            .post("/logging?level=debug")
            .await
            .expect("POST /logging");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("active loggers:\n"), "{body}");
        let levels: Vec<&str> = body
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.rsplit(": ").next())
            .collect();
        assert!(
            !levels.is_empty() && levels.iter().all(|l| *l == "debug"),
            "{body}"
        );
    }
}
