//! Expected values are what Envoy 1.40.0 printed in `/stats/prometheus` for the same names,
//! with its default extractors and with Istio's `stats_config` (the rendered bootstrap in
//! shared/fixtures/istio/xds/default_golden.json).

use super::*;

fn producer(json: serde_json::Value) -> Result<TagProducer, ConfigError> {
    let config: proto::StatsConfig =
        xds_client::proto_json::from_value(json, Default::default()).expect("valid StatsConfig");
    TagProducer::new(&config)
}

fn istio() -> TagProducer {
    let golden: serde_json::Value = serde_json::from_str(include_str!(
        "../../../../tests/testdata/istio_stats_config.json"
    ))
    .expect("json");
    producer(golden).expect("Istio's stats_config converts")
}

#[track_caller]
fn check(p: &TagProducer, name: &str, extracted: &str, tags: &[(&str, &str)]) {
    let got = p.produce(name);
    assert_eq!(&*got.extracted_name, extracted, "{name}");
    let got: Vec<(&str, &str)> = got.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(got, tags, "{name}");
}

const CLUSTER: &str = "cluster.outbound|8080||backend.default.svc.cluster.local;";

#[test]
fn default_extractors_split_names_at_dots_as_envoy_does() {
    let p = TagProducer::default();
    // Envoy's default cluster_name tag is one token: Istio's dotted names split.
    check(
        &p,
        &format!("{CLUSTER}.upstream_rq_200"),
        "cluster.default.svc.cluster.local;.upstream_rq",
        &[
            ("envoy.response_code", "200"),
            ("envoy.cluster_name", "outbound|8080||backend"),
        ],
    );
    check(
        &p,
        &format!("{CLUSTER}.upstream_rq_2xx"),
        "cluster.default.svc.cluster.local;.upstream_rq_xx",
        &[
            ("envoy.response_code_class", "2"),
            ("envoy.cluster_name", "outbound|8080||backend"),
        ],
    );
    check(
        &p,
        "cluster.backend.upstream_cx_total",
        "cluster.upstream_cx_total",
        &[("envoy.cluster_name", "backend")],
    );
    check(
        &p,
        "listener.127.0.0.1_0.worker_0.downstream_cx_total",
        "listener.worker_downstream_cx_total",
        &[
            ("envoy.worker_id", "0"),
            ("envoy.listener_address", "127.0.0.1_0"),
        ],
    );
    check(
        &p,
        "listener.127.0.0.1_0.http.outbound_0.0.0.0_8080;.downstream_rq_2xx",
        "listener.http.0.0.0_8080;.downstream_rq_xx",
        &[
            ("envoy.response_code_class", "2"),
            ("envoy.http_conn_manager_prefix", "outbound_0"),
            ("envoy.listener_address", "127.0.0.1_0"),
        ],
    );
    // `admin` is never a listener address.
    check(
        &p,
        "listener.admin.http.admin.downstream_rq_2xx",
        "listener.admin.http.downstream_rq_xx",
        &[
            ("envoy.response_code_class", "2"),
            ("envoy.http_conn_manager_prefix", "admin"),
        ],
    );
    check(
        &p,
        "http.outbound_0.0.0.0_8080;.downstream_rq_2xx",
        "http.0.0.0_8080;.downstream_rq_xx",
        &[
            ("envoy.response_code_class", "2"),
            ("envoy.http_conn_manager_prefix", "outbound_0"),
        ],
    );
    check(
        &p,
        "tcp.outbound|9090||tcp.default.svc.cluster.local.downstream_cx_total",
        "tcp.default.svc.cluster.local.downstream_cx_total",
        &[("envoy.tcp_prefix", "outbound|9090||tcp")],
    );
    check(
        &p,
        "server.worker_0.watchdog_miss",
        "server.worker_watchdog_miss",
        &[("envoy.worker_id", "0")],
    );
    check(&p, "server.live", "server.live", &[]);
    check(
        &p,
        "vhost.vh.vcluster.other.upstream_rq_total",
        "vhost.vcluster.upstream_rq_total",
        &[
            ("envoy.virtual_cluster", "other"),
            ("envoy.virtual_host", "vh"),
        ],
    );
    // A `$` in the last token takes the dot before it.
    check(
        &p,
        "listener.127.0.0.1_0.ssl.ciphers.TLS_AES_128_GCM_SHA256",
        "listener.ssl.ciphers",
        &[
            ("envoy.ssl_cipher", "TLS_AES_128_GCM_SHA256"),
            ("envoy.listener_address", "127.0.0.1_0"),
        ],
    );
}

#[test]
fn istio_stats_tags_keep_delimited_names_whole() {
    let p = istio();
    check(
        &p,
        &format!("{CLUSTER}.upstream_rq_200"),
        "cluster.upstream_rq",
        &[
            (
                "cluster_name",
                "outbound|8080||backend.default.svc.cluster.local",
            ),
            ("response_code", "200"),
        ],
    );
    check(
        &p,
        &format!("{CLUSTER}.upstream_cx_total"),
        "cluster.upstream_cx_total",
        &[(
            "cluster_name",
            "outbound|8080||backend.default.svc.cluster.local",
        )],
    );
    // Istio's http prefix regex pins `http`, so it runs after the unprefixed code class.
    check(
        &p,
        "http.outbound_0.0.0.0_8080;.downstream_rq_2xx",
        "http.downstream_rq",
        &[
            ("response_code_class", "2xx"),
            ("http_conn_manager_prefix", "outbound_0.0.0.0_8080"),
        ],
    );
    check(
        &p,
        "http.outbound_0.0.0.0_8080;.downstream_rq_total",
        "http.downstream_rq_total",
        &[("http_conn_manager_prefix", "outbound_0.0.0.0_8080")],
    );
    // The per-listener HCM prefix only takes digits (an IP), so a named prefix stays in the name.
    check(
        &p,
        "listener.127.0.0.1_0.http.outbound_0.0.0.0_8080;.downstream_rq_2xx",
        "listener.http.outbound_0.0.0.0_8080;.downstream_rq",
        &[
            ("response_code_class", "2xx"),
            ("listener_address", "127.0.0.1_0"),
        ],
    );
    check(
        &p,
        "listener.0.0.0.0_15006.downstream_cx_total",
        "listener.downstream_cx_total",
        &[("listener_address", "0.0.0.0_15006")],
    );
    check(
        &p,
        "tcp.outbound|9090||tcp.default.svc.cluster.local.downstream_cx_total",
        "tcp.downstream_cx_total",
        &[("tcp_prefix", "outbound|9090||tcp.default.svc.cluster.local")],
    );
    check(
        &p,
        "server.main_thread.watchdog_miss",
        "server.watchdog_miss",
        &[("thread_name", "main_thread")],
    );
    // No defaults: worker ids stay in the name.
    check(
        &p,
        "listener.127.0.0.1_0.worker_0.downstream_cx_total",
        "listener.worker_0.downstream_cx_total",
        &[("listener_address", "127.0.0.1_0")],
    );
    check(
        &p,
        "http.inbound_0.0.0.0_80;.rbac.allowed",
        "http.rbac",
        &[
            ("authz_enforce_result", "allowed"),
            ("http_conn_manager_prefix", "inbound_0.0.0.0_80"),
        ],
    );
}

#[test]
fn fixed_values_and_defaults_by_name() {
    let p = producer(serde_json::json!({
        "use_all_default_tags": false,
        "stats_tags": [
            {"tag_name": "mesh", "fixed_value": "m1"},
            {"tag_name": "envoy.cluster_name"}
        ]
    }))
    .expect("converts");
    check(
        &p,
        &format!("{CLUSTER}.upstream_cx_total"),
        "cluster.default.svc.cluster.local;.upstream_cx_total",
        &[
            ("mesh", "m1"),
            ("envoy.cluster_name", "outbound|8080||backend"),
        ],
    );
    check(&p, "server.live", "server.live", &[("mesh", "m1")]);
}

#[test]
fn a_default_wins_over_a_later_extractor_of_the_same_name_unless_overrides_are_allowed() {
    let tags = serde_json::json!([
        {"tag_name": "envoy.cluster_name", "regex": "^cluster\\.((.+?);\\.)"},
        {"tag_name": "mesh", "fixed_value": "m1"}
    ]);
    let name = format!("{CLUSTER}.upstream_rq_200");
    let p = producer(serde_json::json!({"stats_tags": tags})).expect("converts");
    check(
        &p,
        &name,
        "cluster.default.svc.cluster.local;.upstream_rq",
        &[
            ("envoy.response_code", "200"),
            ("mesh", "m1"),
            ("envoy.cluster_name", "outbound|8080||backend"),
        ],
    );
    let p = producer(serde_json::json!({"stats_tags": tags, "allow_default_tag_overrides": true}))
        .expect("converts");
    check(
        &p,
        &name,
        "cluster.upstream_rq",
        &[
            ("envoy.response_code", "200"),
            ("mesh", "m1"),
            (
                "envoy.cluster_name",
                "outbound|8080||backend.default.svc.cluster.local",
            ),
        ],
    );
}

#[test]
fn one_group_is_both_value_and_removed_text() {
    let p = producer(serde_json::json!({
        "use_all_default_tags": false,
        "stats_tags": [{"tag_name": "t", "regex": "\\.(worker_\\d+)"}]
    }))
    .expect("converts");
    check(
        &p,
        "listener.x.worker_3.downstream_cx_total",
        "listener.x..downstream_cx_total",
        &[("t", "worker_3")],
    );
}

#[test]
fn bad_tag_specifiers_are_rejected_with_envoys_reasons() {
    let e = producer(serde_json::json!({"stats_tags": [{"tag_name": "", "regex": "(a)"}]}))
        .expect_err("empty name");
    assert_eq!(e.field, "stats_config.stats_tags[0].tag_name");
    assert_eq!(e.reason, "tag_name cannot be empty");
    let e =
        producer(serde_json::json!({"stats_tags": [{"tag_name": "mine"}]})).expect_err("no regex");
    assert_eq!(
        e.reason,
        "No regex specified for tag specifier and no default regex for name: 'mine'"
    );
    let e = producer(serde_json::json!({"stats_tags": [{"tag_name": "t", "regex": "(a"}]}))
        .expect_err("bad regex");
    assert_eq!(e.field, "stats_config.stats_tags[0].regex");
}

#[test]
fn overlapping_removals_merge() {
    assert_eq!(remove_ranges("abcdef", vec![(3, 5), (1, 4)]), "af");
    assert_eq!(remove_ranges("abcdef", vec![(0, 6)]), "");
    assert_eq!(remove_ranges("abcdef", vec![]), "abcdef");
}
