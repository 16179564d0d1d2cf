//! Forwarding, direct responses, header mutations and retry policies.

use super::*;
use crate::http::filter::FilterOverride;
use http::HeaderMap;
use std::time::Duration;

fn forward_route(action_yaml: &str) -> Route {
    only_route_value(json!({"name": "r", "match": {"prefix": "/"}, "route": yaml(action_yaml)}))
}

#[test]
fn forward_action_gets_envoy_defaults() {
    let route = forward_route("{cluster: backend}");
    let f = forward(&route);
    assert!(matches!(&f.cluster, ClusterSpecifier::Name(n) if n == "backend"));
    assert_eq!(f.timeout, Some(Duration::from_secs(15)));
    assert_eq!(f.idle_timeout, None);
    assert_eq!(f.cluster_not_found_status, 503);
    assert!(f.retry_policy.is_none());
    assert!(f.prefix_rewrite.is_none() && f.regex_rewrite.is_none());
    assert!(matches!(f.host_rewrite, HostRewrite::None));
    assert!(f.mirror_policies.is_empty() && f.hash_policy.is_empty());
    assert_eq!(f.max_grpc_timeout, None);
}

#[test]
fn zero_timeout_disables_it() {
    let route = forward_route("{cluster: b, timeout: 0s, idle_timeout: 0s}");
    assert_eq!(forward(&route).timeout, None);
    assert_eq!(forward(&route).idle_timeout, Some(Duration::ZERO));
    let route = forward_route("{cluster: b, timeout: 2.5s, idle_timeout: 300s}");
    assert_eq!(forward(&route).timeout, Some(Duration::from_millis(2500)));
    assert_eq!(forward(&route).idle_timeout, Some(Duration::from_secs(300)));
}

#[test]
fn grpc_timeouts_come_from_max_stream_duration_when_present() {
    let route = forward_route(
        "{cluster: b, max_stream_duration: {grpc_timeout_header_max: 0s, max_stream_duration: 9s}, max_grpc_timeout: 5s}",
    );
    let f = forward(&route);
    assert_eq!(f.max_grpc_timeout, Some(Duration::ZERO));
    assert_eq!(f.max_stream_duration, Some(Duration::from_secs(9)));
    assert!(f.uses_stream_duration);
    let legacy = forward_route("{cluster: b, max_grpc_timeout: 5s, grpc_timeout_offset: 1s}");
    assert_eq!(
        forward(&legacy).max_grpc_timeout,
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        forward(&legacy).grpc_timeout_header_offset,
        Some(Duration::from_secs(1))
    );
    assert!(!forward(&legacy).uses_stream_duration);
}

#[test]
fn cluster_header_and_not_found_code() {
    let route =
        forward_route("{cluster_header: X-Cluster, cluster_not_found_response_code: NOT_FOUND}");
    let f = forward(&route);
    assert!(matches!(&f.cluster, ClusterSpecifier::Header(h) if h == "x-cluster"));
    assert_eq!(f.cluster_not_found_status, 404);
}

#[test]
fn weighted_pick_walks_the_slices_in_order() {
    let route = forward_route(
        r#"
weighted_clusters:
  clusters:
  - {name: a, weight: 10, request_headers_to_add: [{header: {key: x-to, value: a}}]}
  - {name: never, weight: 0}
  - {name: c, weight: 30, host_rewrite_literal: c.internal}
"#,
    );
    let ClusterSpecifier::Weighted(w) = &forward(&route).cluster else {
        panic!("expected weighted clusters");
    };
    assert_eq!(w.total_weight, 40);
    let picks: Vec<_> = [0, 9, 10, 39, 40, 49, 50, u64::MAX]
        .iter()
        .map(|&r| w.pick(r).name.as_str())
        .collect();
    // u64::MAX % 40 == 15.
    assert_eq!(picks, ["a", "a", "c", "c", "a", "a", "c", "c"]);
    assert_eq!(w.clusters[2].host_rewrite.as_deref(), Some("c.internal"));
    assert_eq!(w.clusters[0].headers.request_add[0].value, "a");
}

#[test]
fn weighted_pick_distribution_follows_weights() {
    let route = forward_route(
        "{weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 3}]}}",
    );
    let ClusterSpecifier::Weighted(w) = &forward(&route).cluster else {
        panic!("expected weighted clusters");
    };
    let b = (0..4000u64).filter(|&r| w.pick(r).name == "b").count();
    assert_eq!(b, 3000);
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
    let rewrite = |match_yaml: &str, path: &str| {
        let route = only_route(&format!(
            "- {{name: r, match: {match_yaml}, route: {{cluster: b, prefix_rewrite: /v2/}}}}"
        ));
        forward(&route).rewrite_path(&route.matcher, path)
    };
    assert_eq!(
        rewrite("{prefix: /api/}", "/api/x?q=1"),
        Some("/v2/x?q=1".into())
    );
    assert_eq!(
        rewrite("{prefix: /API/, case_sensitive: false}", "/api/x"),
        Some("/v2/x".into())
    );
    // A path rule's prefix is the whole path.
    assert_eq!(rewrite("{path: /a/b}", "/a/b?q"), Some("/v2/?q".into()));
    assert_eq!(
        rewrite("{path_separated_prefix: /api}", "/api/x"),
        Some("/v2//x".into())
    );
    // Regex rules replace the whole path, keeping the query.
    assert_eq!(
        rewrite("{safe_regex: {regex: '/a/.*'}}", "/a/b/c?q"),
        Some("/v2/?q".into())
    );
    // A path that no longer starts with the prefix is left alone.
    assert_eq!(rewrite("{prefix: /api/}", "/other"), None);
}

#[test]
fn regex_rewrite_substitutes_in_the_path_only() {
    let route = forward_route(
        r"{cluster: b, regex_rewrite: {pattern: {regex: '^/service/([^/]+)(/.*)$'}, substitution: '\2/instance/\1'}}",
    );
    let f = forward(&route);
    assert_eq!(
        f.rewrite_path(&route.matcher, "/service/foo/v1/api?service=bar"),
        Some("/v1/api/instance/foo?service=bar".into())
    );
    // Every match is replaced, as RE2's GlobalReplace does.
    let all =
        forward_route("{cluster: b, regex_rewrite: {pattern: {regex: o}, substitution: '0'}}");
    assert_eq!(
        forward(&all).rewrite_path(&all.matcher, "/foo/boo?o"),
        Some("/f00/b00?o".into())
    );
    let none = forward_route("{cluster: b}");
    assert_eq!(forward(&none).rewrite_path(&none.matcher, "/x"), None);
}

#[test]
fn host_rewrites_convert() {
    let host = |yaml: &str| forward_route(yaml).action;
    assert!(matches!(
        host("{cluster: b, host_rewrite_literal: new.host}"),
        Action::Forward(f) if matches!(&f.host_rewrite, HostRewrite::Literal(h) if h == "new.host")
    ));
    assert!(matches!(
        host("{cluster: b, auto_host_rewrite: true}"),
        Action::Forward(f) if matches!(f.host_rewrite, HostRewrite::Auto)
    ));
    assert!(matches!(
        host("{cluster: b, host_rewrite_header: X-Host}"),
        Action::Forward(f) if matches!(&f.host_rewrite, HostRewrite::Header(h) if h == "x-host")
    ));
    let Action::Forward(f) = host(
        r"{cluster: b, host_rewrite_path_regex: {pattern: {regex: '^/h/([^/]+).*'}, substitution: '\1.svc'}}",
    ) else {
        panic!("expected forward");
    };
    let HostRewrite::PathRegex(re, sub) = &f.host_rewrite else {
        panic!("expected a path regex host rewrite");
    };
    assert_eq!(re.replace_all("/h/reviews/x", sub.as_str()), "reviews.svc");
}

#[test]
fn hash_policies_convert() {
    let route = forward_route(
        r#"
cluster: b
hash_policy:
- {header: {header_name: X-User}}
- {cookie: {name: sticky, ttl: 60s, path: /}, terminal: true}
- {connection_properties: {source_ip: true}}
- {connection_properties: {source_ip: false}}
- {query_parameter: {name: user}}
"#,
    );
    assert_eq!(
        forward(&route).hash_policy,
        [
            HashPolicy::Header {
                name: http::HeaderName::from_static("x-user"),
                terminal: false
            },
            HashPolicy::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
                path: Some("/".into()),
                terminal: true
            },
            HashPolicy::SourceIp { terminal: false },
            HashPolicy::QueryParameter {
                name: "user".into(),
                terminal: false
            },
        ]
    );
}

#[test]
fn mirrors_come_from_the_route_else_the_vhost_else_the_config() {
    let cfg = config(
        r#"
name: r
request_mirror_policies: [{cluster: config-mirror}]
virtual_hosts:
- name: with-own
  domains: [a]
  request_mirror_policies:
  - {cluster: vhost-mirror, runtime_fraction: {default_value: {numerator: 5, denominator: TEN_THOUSAND}}}
  routes:
  - {name: own, match: {prefix: /own}, route: {cluster: b, request_mirror_policies: [{cluster: route-mirror}]}}
  - {name: inherits, match: {prefix: /}, route: {cluster: b}}
- name: plain
  domains: [b]
  routes:
  - {name: from-config, match: {prefix: /}, route: {cluster: b}}
"#,
    );
    let mirrors = |vh: usize, r: usize| -> Vec<(String, u32)> {
        forward(&cfg.virtual_hosts[vh].routes[r])
            .mirror_policies
            .iter()
            .map(|m| (m.cluster.clone(), m.fraction_ppm))
            .collect()
    };
    assert_eq!(mirrors(0, 0), [("route-mirror".to_string(), 1_000_000)]);
    assert_eq!(mirrors(0, 1), [("vhost-mirror".to_string(), 500)]);
    assert_eq!(mirrors(1, 0), [("config-mirror".to_string(), 1_000_000)]);
}

#[test]
fn upgrades_convert() {
    let route = forward_route(
        "{cluster: b, upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: CONNECT, enabled: false, connect_config: {allow_post: true}}]}",
    );
    assert_eq!(
        forward(&route).upgrades,
        [
            Upgrade {
                upgrade_type: "websocket".into(),
                enabled: true,
                terminate_connect: false,
                allow_post: false
            },
            Upgrade {
                upgrade_type: "connect".into(),
                enabled: false,
                terminate_connect: true,
                allow_post: true
            },
        ]
    );
}

#[test]
fn direct_response_keeps_status_and_inline_body() {
    let route = only_route(
        "- {name: r, match: {prefix: /}, direct_response: {status: 418, body: {inline_string: teapot}}}",
    );
    match route.action {
        Action::DirectResponse { status, body } => {
            assert_eq!(status, 418);
            assert_eq!(body.as_deref(), Some(&b"teapot"[..]));
        }
        other => panic!("expected a direct response, got {other:?}"),
    }
}

#[test]
fn per_filter_config_is_parsed_by_type() {
    let cfg = config(
        r#"
name: r
typed_per_filter_config:
  envoy.filters.http.fault:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.fault:
      "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
      abort: {http_status: 503, percentage: {numerator: 100}}
  routes:
  - name: r
    match: {prefix: /}
    route: {cluster: b}
    typed_per_filter_config:
      envoy.filters.http.fault:
        "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
"#,
    );
    let vh = &cfg.virtual_hosts[0];
    let parsed = vh
        .per_filter_config
        .get("envoy.filters.http.fault")
        .unwrap();
    assert!(matches!(parsed, FilterOverride::Fault(_)), "{parsed:?}");
    assert!(
        vh.routes[0]
            .per_filter_config
            .get("envoy.filters.http.fault")
            .is_some()
    );
}

fn header_ops(adds_yaml: &str) -> HeaderOps {
    let route = only_route_value(json!({
        "name": "r",
        "match": {"prefix": "/"},
        "direct_response": {"status": 200},
        "request_headers_to_add": yaml(adds_yaml),
        "request_headers_to_remove": ["x-gone"],
    }));
    route.headers
}

fn applied(ops: &HeaderOps, start: &[(&'static str, &str)]) -> Vec<(String, String)> {
    let mut headers = HeaderMap::new();
    for (k, v) in start {
        headers.append(*k, v.parse().unwrap());
    }
    ops.apply_request(&mut headers);
    let mut out: Vec<_> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8(v.as_bytes().to_vec()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn append_actions_follow_envoy() {
    let ops = header_ops(
        r#"
- {header: {key: x-append, value: new}}
- {header: {key: x-absent, value: new}, append_action: ADD_IF_ABSENT}
- {header: {key: x-present, value: new}, append_action: ADD_IF_ABSENT}
- {header: {key: x-over, value: new}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
- {header: {key: x-if-exists, value: new}, append_action: OVERWRITE_IF_EXISTS}
- {header: {key: x-not-there, value: new}, append_action: OVERWRITE_IF_EXISTS}
- {header: {key: x-legacy, value: new}, append: false}
- {header: {key: x-empty, value: ""}}
- {header: {key: x-kept-empty, value: ""}, keep_empty_value: true}
- {header: {key: X-Gone, value: back}}
- {header: {key: x-pct, value: "100%%"}}
- {header: {key: x-utf8, value: "café"}}
"#,
    );
    let result = applied(
        &ops,
        &[
            ("x-append", "old"),
            ("x-present", "old"),
            ("x-over", "old1"),
            ("x-over", "old2"),
            ("x-if-exists", "old"),
            ("x-legacy", "old"),
            ("x-gone", "old"),
        ],
    );
    let expected = pairs(&[
        ("x-absent", "new"),
        ("x-append", "new"),
        ("x-append", "old"),
        ("x-gone", "back"),
        ("x-if-exists", "new"),
        ("x-kept-empty", ""),
        ("x-legacy", "new"),
        ("x-over", "new"),
        ("x-pct", "100%"),
        ("x-present", "old"),
        ("x-utf8", "café"),
    ]);
    assert_eq!(result, expected);
    assert!(!ops.is_empty());
    assert!(HeaderOps::default().is_empty());
}

#[test]
fn adds_are_decided_before_any_is_applied() {
    // Envoy evaluates every entry against the headers as they were: the first add does not make
    // the header "present" for the second.
    let ops = header_ops(
        r#"
- {header: {key: x-a, value: one}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
- {header: {key: x-a, value: two}, append_action: ADD_IF_ABSENT}
"#,
    );
    assert_eq!(applied(&ops, &[]), pairs(&[("x-a", "one"), ("x-a", "two")]));
}

#[test]
fn header_mutation_order_depends_on_most_specific_wins() {
    let text = |most_specific: bool| {
        format!(
            r#"
name: r
most_specific_header_mutations_wins: {most_specific}
request_headers_to_add: [{{header: {{key: x-level, value: config}}, append: false}}]
virtual_hosts:
- name: v
  domains: ["*"]
  request_headers_to_add: [{{header: {{key: x-level, value: vhost}}, append: false}}]
  routes:
  - name: r
    match: {{prefix: /}}
    route: {{cluster: b}}
    request_headers_to_add: [{{header: {{key: x-level, value: route}}, append: false}}]
"#
        )
    };
    for (most_specific, winner) in [(false, "config"), (true, "route")] {
        let cfg = config(&text(most_specific));
        let (vh, route) = (&cfg.virtual_hosts[0], &cfg.virtual_hosts[0].routes[0]);
        let mut headers = HeaderMap::new();
        for ops in cfg.header_ops(vh, route) {
            ops.apply_request(&mut headers);
        }
        assert_eq!(headers["x-level"], winner);
    }
}

#[test]
fn retry_on_parses_envoy_names_and_ignores_unknown_ones() {
    let on = RetryOn::parse("5xx, connect-failure,unknown-thing,cancelled,,retriable-status-codes");
    for bit in [
        RetryOn::FIVE_XX,
        RetryOn::CONNECT_FAILURE,
        RetryOn::CANCELLED,
        RetryOn::RETRIABLE_STATUS_CODES,
    ] {
        assert!(on.contains(bit));
    }
    for bit in [RetryOn::RESET, RetryOn::GATEWAY_ERROR, RetryOn::UNAVAILABLE] {
        assert!(!on.contains(bit));
    }
    assert!(RetryOn::parse("").is_empty());
    assert_eq!(
        RetryOn::parse(
            "gateway-error,reset,refused-stream,retriable-4xx,reset-before-request,retriable-headers,envoy-ratelimited,http3-post-connect-failure,deadline-exceeded,internal,resource-exhausted,unavailable"
        ),
        RetryOn::GATEWAY_ERROR
            | RetryOn::RESET
            | RetryOn::REFUSED_STREAM
            | RetryOn::RETRIABLE_4XX
            | RetryOn::RESET_BEFORE_REQUEST
            | RetryOn::RETRIABLE_HEADERS
            | RetryOn::ENVOY_RATELIMITED
            | RetryOn::HTTP3_POST_CONNECT_FAILURE
            | RetryOn::DEADLINE_EXCEEDED
            | RetryOn::INTERNAL
            | RetryOn::RESOURCE_EXHAUSTED
            | RetryOn::UNAVAILABLE
    );
}

#[test]
fn retry_policy_defaults_and_istio_shape() {
    let route = forward_route(
        r#"
cluster: b
retry_policy:
  retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
  num_retries: 2
  retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
  host_selection_retry_max_attempts: 5
  retriable_status_codes: [503]
  per_try_timeout: 2s
"#,
    );
    let p = forward(&route).retry_policy.clone().unwrap();
    assert!(
        p.retry_on
            .contains(RetryOn::CONNECT_FAILURE | RetryOn::UNAVAILABLE)
    );
    assert_eq!(p.num_retries, 2);
    assert!(p.previous_hosts);
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    assert_eq!(p.retriable_status_codes, [503]);
    assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(p.backoff_base, Duration::from_millis(25));
    assert_eq!(p.backoff_max, Duration::from_millis(250));

    let vh = config(
        "{name: r, virtual_hosts: [{name: v, domains: ['*'], retry_policy: {retry_back_off: {base_interval: 0.0001s}}}]}",
    );
    let p = vh.virtual_hosts[0].retry_policy.clone().unwrap();
    assert_eq!(p.num_retries, 1);
    assert_eq!(p.host_selection_retry_max_attempts, 1);
    assert_eq!(p.backoff_base, Duration::from_millis(1));
    assert_eq!(p.backoff_max, Duration::from_millis(10));
    assert!(!p.previous_hosts);
}
