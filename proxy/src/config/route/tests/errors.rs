//! Rejections name the resource and the field; informational fields are accepted.

use super::*;

/// Asserts that a one-vhost configuration with these routes is rejected at `field`.
fn rejected_at(routes_yaml: &str, field: &str) -> ConfigError {
    let e = try_routes(routes_yaml).expect_err("configuration must be rejected");
    assert_eq!(e.resource, "route_configuration \"9080\"", "{e}");
    assert_eq!(e.field, field, "{e}");
    e
}

#[test]
fn bad_regex_names_its_route() {
    let e = rejected_at(
        r#"
- {name: ok, match: {prefix: /}, route: {cluster: b}}
- {name: bad, match: {safe_regex: {regex: "/v[0-9"}}, route: {cluster: b}}
"#,
        "virtual_hosts[0].routes[1].match.safe_regex",
    );
    assert!(e.reason.contains("invalid regex"), "{e}");
    assert!(
        e.to_string().starts_with(
            "route_configuration \"9080\": virtual_hosts[0].routes[1].match.safe_regex: "
        ),
        "{e}"
    );
}

#[test]
fn bad_per_filter_config_names_its_entry() {
    let e = rejected_at(
        r#"
- match: {prefix: /}
  route: {cluster: b}
  typed_per_filter_config:
    ratelimit:
      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
      stat_prefix: rl
"#,
        r#"virtual_hosts[0].routes[0].typed_per_filter_config["ratelimit"]"#,
    );
    assert!(e.reason.contains("token_bucket"), "{e}");
}

#[test]
fn rejections_name_the_field() {
    let cases = [
        (
            "- {name: r, match: {prefix: /}}",
            "virtual_hosts[0].routes[0].action",
        ),
        (
            "- {name: r, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match",
        ),
        (
            "- {name: r, match: {}, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match",
        ),
        (
            "- {name: r, match: {prefix: /, headers: [{name: 'bad name', present_match: true}]}, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match.headers[0].name",
        ),
        (
            "- {name: r, match: {prefix: /, query_parameters: [{name: q, string_match: {prefix: ''}}]}, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match.query_parameters[0].string_match.prefix",
        ),
        (
            "- {name: r, match: {path_separated_prefix: /a/}, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match.path_separated_prefix",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: ''}}",
            "virtual_hosts[0].routes[0].route.cluster",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster_specifier_plugin: p}}",
            "virtual_hosts[0].routes[0].route.cluster_specifier_plugin",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {inline_cluster_specifier_plugin: {extension: {name: p}}}}",
            "virtual_hosts[0].routes[0].route.inline_cluster_specifier_plugin",
        ),
        (
            "- {name: r, match: {prefix: /}, filter_action: {}}",
            "virtual_hosts[0].routes[0].filter_action",
        ),
        (
            "- {name: r, match: {prefix: /}, non_forwarding_action: {}}",
            "virtual_hosts[0].routes[0].non_forwarding_action",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}}",
            "virtual_hosts[0].routes[0].route.weighted_clusters.clusters",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: a, weight: 1}, {cluster_header: x, weight: 1}]}}}",
            "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[1].cluster_header",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, substitution: b}}}",
            "virtual_hosts[0].routes[0].route.regex_rewrite",
        ),
        (
            r"- {name: r, match: {prefix: /}, route: {cluster: b, regex_rewrite: {pattern: {regex: a}, substitution: '\1'}}}",
            "virtual_hosts[0].routes[0].route.regex_rewrite.substitution",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}}",
            "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.max_interval",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, retry_policy: {retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}}}",
            "virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[0]",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, request_mirror_policies: [{cluster: m}, {cluster: ''}]}}",
            "virtual_hosts[0].routes[0].route.request_mirror_policies[1].cluster",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, hash_policy: [{filter_state: {key: k}}]}}",
            "virtual_hosts[0].routes[0].route.hash_policy[0].filter_state",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, internal_redirect_policy: {}}}",
            "virtual_hosts[0].routes[0].route.internal_redirect_policy",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b, hedge_policy: {initial_requests: 2}}}",
            "virtual_hosts[0].routes[0].route.hedge_policy",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b}, request_headers_to_add: [{header: {key: ':path', value: /x}}]}",
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b}, request_headers_to_add: [{header: {key: host, value: x}}]}",
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b}, response_headers_to_remove: [':status']}",
            "virtual_hosts[0].routes[0].response_headers_to_remove[0]",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b}, request_headers_to_add: [{header: {key: x-ip, value: '%DOWNSTREAM_REMOTE_ADDRESS%'}}]}",
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value",
        ),
        (
            "- {name: r, match: {prefix: /}, route: {cluster: b}, request_headers_to_add: [{header: {key: x, value: y}, append: true, append_action: ADD_IF_ABSENT}]}",
            "virtual_hosts[0].routes[0].request_headers_to_add[0].append_action",
        ),
        (
            "- {name: r, match: {prefix: /}, direct_response: {status: 600}}",
            "virtual_hosts[0].routes[0].direct_response.status",
        ),
        (
            "- {name: r, match: {prefix: /}, direct_response: {status: 200, body: {filename: /etc/passwd}}}",
            "virtual_hosts[0].routes[0].direct_response.body",
        ),
        (
            "- {name: r, match: {prefix: /}, redirect: {port_redirect: 70000}}",
            "virtual_hosts[0].routes[0].redirect.port_redirect",
        ),
        (
            "- {name: r, match: {prefix: /, cookies: [{name: c}]}, route: {cluster: b}}",
            "virtual_hosts[0].routes[0].match.cookies",
        ),
    ];
    for (routes_yaml, field) in cases {
        rejected_at(routes_yaml, field);
    }
}

#[test]
fn direct_response_body_is_limited() {
    let big = "x".repeat(4097);
    rejected_at(
        &format!(
            "- {{name: r, match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: {big}}}}}}}"
        ),
        "virtual_hosts[0].routes[0].direct_response.body",
    );
    let mut value = routes_value(&format!(
        "- {{name: r, match: {{prefix: /}}, direct_response: {{status: 200, body: {{inline_string: {big}}}}}}}"
    ));
    value["max_direct_response_body_size_bytes"] = json!(8192);
    assert!(try_config(value).is_ok());
}

#[test]
fn configuration_level_rejections() {
    let cases = [
        (
            json!({"name": "r", "vhds": {"config_source": {"ads": {}}}}),
            "vhds",
        ),
        (
            json!({"name": "r", "virtual_hosts": [{"name": "", "domains": ["*"]}]}),
            "virtual_hosts[0].name",
        ),
        (
            json!({"name": "r", "virtual_hosts": [{"name": "v"}]}),
            "virtual_hosts[0].domains",
        ),
        (
            json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "require_tls": "ALL"}]}),
            "virtual_hosts[0].require_tls",
        ),
        (
            json!({"name": "r", "vhost_header": "x-host"}),
            "vhost_header",
        ),
        (
            json!({"name": "r", "internal_only_headers": ["bad header"]}),
            "internal_only_headers[0]",
        ),
    ];
    for (value, field) in cases {
        let e = try_config(value.clone()).unwrap_err();
        assert_eq!(e.field, field, "{value}: {e}");
    }
}

#[test]
fn informational_fields_are_accepted() {
    let cfg = config(
        r#"
name: "9080"
validate_clusters: false
virtual_hosts:
- name: v
  domains: ["*"]
  rate_limits: [{actions: [{generic_key: {descriptor_value: x}}]}]
  virtual_clusters: [{name: vc, headers: [{name: ":path", string_match: {prefix: /}}]}]
  per_request_buffer_limit_bytes: 1024
  metadata: {filter_metadata: {istio: {config: x}}}
  routes:
  - name: r
    match: {prefix: /}
    route:
      cluster: b
      rate_limits: [{actions: [{generic_key: {descriptor_value: y}}]}]
      priority: HIGH
      max_internal_redirects: 3
    decorator: {operation: "reviews:9080/*"}
    metadata: {filter_metadata: {istio: {config: y}}}
    tracing: {random_sampling: {numerator: 1}}
    per_request_buffer_limit_bytes: 4096
    stat_prefix: reviews
"#,
    );
    assert_eq!(cfg.virtual_hosts[0].routes[0].name, "r");
}
