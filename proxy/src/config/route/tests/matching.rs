//! Which route a request selects.

use super::*;
use http::Method;

/// Asserts, for each (path, expected route name) pair, the route the configuration selects.
fn assert_routes(cfg: &RouteConfig, cases: &[(&str, Option<&str>)]) {
    for (path, expected) in cases {
        assert_eq!(selected(cfg, &get(path)), *expected, "path {path:?}");
    }
}

#[test]
fn prefix_is_a_plain_string_prefix_of_the_path_without_query() {
    let cfg = routes(
        r#"
- {name: api, match: {prefix: /api}, direct_response: {status: 200}}
"#,
    );
    assert_routes(
        &cfg,
        &[
            ("/api", Some("api")),
            ("/api/v1", Some("api")),
            ("/apiv2", Some("api")),
            ("/ap", None),
            ("/ap?i=/api", None),
            ("/x#/api", None),
        ],
    );
}

#[test]
fn empty_prefix_matches_every_path() {
    let cfg = routes("- {name: all, match: {prefix: ''}, direct_response: {status: 200}}");
    assert_routes(&cfg, &[("/", Some("all")), ("/a/b?c", Some("all"))]);
}

#[test]
fn path_is_exact_on_the_path_without_query_or_fragment() {
    let cfg = routes("- {name: p, match: {path: /a/b}, direct_response: {status: 200}}");
    assert_routes(
        &cfg,
        &[
            ("/a/b", Some("p")),
            ("/a/b?x=1", Some("p")),
            ("/a/b#frag", Some("p")),
            ("/a/b/", None),
            ("/a/bc", None),
            ("/a", None),
        ],
    );
}

#[test]
fn path_separated_prefix_needs_a_segment_boundary() {
    let cfg =
        routes("- {name: s, match: {path_separated_prefix: /api}, direct_response: {status: 200}}");
    assert_routes(
        &cfg,
        &[
            ("/api", Some("s")),
            ("/api/", Some("s")),
            ("/api/v1", Some("s")),
            ("/api?x", Some("s")),
            ("/api#x", Some("s")),
            ("/apiv1", None),
            ("/ap", None),
        ],
    );
}

#[test]
fn safe_regex_must_match_the_whole_path_without_query() {
    let cfg = routes(
        r#"
- name: r
  match: {safe_regex: {regex: "/v[0-9]+/.*"}, case_sensitive: false}
  direct_response: {status: 200}
"#,
    );
    assert_routes(
        &cfg,
        &[
            ("/v1/a", Some("r")),
            ("/v12/a?x=/y", Some("r")),
            ("/x/v1/a", None),
            ("/v1", None),
            // case_sensitive does not apply to regexes.
            ("/V1/a", None),
        ],
    );
}

#[test]
fn case_insensitive_rules_fold_ascii() {
    let cfg = routes(
        r#"
- {name: prefix, match: {prefix: /API/, case_sensitive: false}, direct_response: {status: 200}}
- {name: path, match: {path: /Exact, case_sensitive: false}, direct_response: {status: 200}}
- {name: sep, match: {path_separated_prefix: /Sep, case_sensitive: false}, direct_response: {status: 200}}
- {name: strict, match: {prefix: /Strict}, direct_response: {status: 200}}
"#,
    );
    assert_routes(
        &cfg,
        &[
            ("/api/x", Some("prefix")),
            ("/Api/x", Some("prefix")),
            ("/EXACT", Some("path")),
            ("/sep/x", Some("sep")),
            ("/Strict", Some("strict")),
            ("/strict", None),
        ],
    );
}

#[test]
fn first_matching_route_wins() {
    let cfg = routes(
        r#"
- {name: narrow, match: {prefix: /a/b}, direct_response: {status: 200}}
- {name: wide, match: {prefix: /a}, direct_response: {status: 200}}
- {name: shadowed, match: {prefix: /a/b/c}, direct_response: {status: 200}}
"#,
    );
    assert_routes(&cfg, &[("/a/b/c", Some("narrow")), ("/a/x", Some("wide"))]);
}

#[test]
fn connect_matcher_matches_only_connect_and_pathless_requests_only_it() {
    let cfg = routes(
        r#"
- {name: any, match: {prefix: /}, direct_response: {status: 200}}
- {name: connect, match: {connect_matcher: {}}, direct_response: {status: 200}}
"#,
    );
    let connect = TestRequest::get("upstream:443", "").method(Method::CONNECT);
    assert_eq!(selected(&cfg, &connect), Some("connect"));
    // Extended CONNECT carries a path and may match path rules.
    let extended = TestRequest::get("a", "/chat").method(Method::CONNECT);
    assert_eq!(selected(&cfg, &extended), Some("any"));
    let only_connect =
        routes("- {name: c, match: {connect_matcher: {}}, direct_response: {status: 200}}");
    assert_eq!(selected(&only_connect, &get("/")), None);
}

#[test]
fn route_header_matchers_all_have_to_match() {
    let cfg = routes(
        r#"
- name: canary
  match:
    prefix: /
    headers:
    - {name: x-canary, string_match: {exact: "true"}}
    - {name: ":method", string_match: {exact: POST}}
  direct_response: {status: 200}
- {name: default, match: {prefix: /}, direct_response: {status: 200}}
"#,
    );
    let both = get("/").header("x-canary", "true").method(Method::POST);
    let header_only = get("/").header("x-canary", "true");
    assert_eq!(selected(&cfg, &both), Some("canary"));
    assert_eq!(selected(&cfg, &header_only), Some("default"));
}

#[test]
fn query_parameters_match_the_first_raw_value() {
    let cfg = routes(
        r#"
- name: exact
  match: {prefix: /, query_parameters: [{name: v, string_match: {exact: "a b"}}]}
  direct_response: {status: 200}
- name: encoded
  match: {prefix: /, query_parameters: [{name: v, string_match: {exact: "a%20b"}}]}
  direct_response: {status: 200}
- name: absent
  match: {prefix: /, query_parameters: [{name: debug, present_match: false}]}
  direct_response: {status: 200}
- name: present
  match: {prefix: /, query_parameters: [{name: debug, present_match: true}]}
  direct_response: {status: 200}
"#,
    );
    assert_routes(
        &cfg,
        &[
            // Values are not percent-decoded.
            ("/?v=a%20b", Some("encoded")),
            // Only the first occurrence counts.
            ("/?v=x&v=a%20b&debug", Some("present")),
            ("/?x=1", Some("absent")),
            ("/?debug", Some("present")),
            ("/?debug=", Some("present")),
        ],
    );
}

#[test]
fn grpc_routes_need_a_grpc_content_type() {
    let cfg = routes(
        r#"
- {name: grpc, match: {prefix: /, grpc: {}}, direct_response: {status: 200}}
- {name: other, match: {prefix: /}, direct_response: {status: 200}}
"#,
    );
    let with = |ct: &str| get("/svc/Method").header("content-type", ct);
    assert_eq!(selected(&cfg, &with("application/grpc")), Some("grpc"));
    assert_eq!(
        selected(&cfg, &with("application/grpc+proto")),
        Some("grpc")
    );
    assert_eq!(selected(&cfg, &with("application/grpc-web")), Some("other"));
    assert_eq!(selected(&cfg, &with("application/json")), Some("other"));
    assert_eq!(selected(&cfg, &get("/")), Some("other"));
}

#[test]
fn runtime_fraction_samples_random_modulo_the_denominator() {
    let cfg = routes(
        r#"
- name: quarter
  match:
    prefix: /
    runtime_fraction: {default_value: {numerator: 25, denominator: HUNDRED}, runtime_key: k}
  direct_response: {status: 200}
- {name: rest, match: {prefix: /}, direct_response: {status: 200}}
"#,
    );
    let pick = |random| {
        cfg.route(&get("/").view(), random)
            .map(|(_, r)| r.name.as_str())
    };
    assert_eq!(pick(0), Some("quarter"));
    assert_eq!(pick(24), Some("quarter"));
    assert_eq!(pick(25), Some("rest"));
    assert_eq!(pick(99), Some("rest"));
    assert_eq!(pick(124), Some("quarter"));
    let route = &cfg.virtual_hosts[0].routes[0];
    assert_eq!(
        route.matcher.runtime_fraction.map(|f| f.ppm()),
        Some(250_000)
    );
}

#[test]
fn path_parameters_are_ignored_when_configured() {
    let mut value =
        routes_value("- {name: p, match: {path: /a/b}, direct_response: {status: 200}}");
    value["ignore_path_parameters_in_path_matching"] = json!(true);
    let cfg = try_config(value).unwrap();
    assert_routes(
        &cfg,
        &[("/a/b;jsessionid=1", Some("p")), ("/a/b;x?y", Some("p"))],
    );
    let strict = routes("- {name: p, match: {path: /a/b}, direct_response: {status: 200}}");
    assert_routes(&strict, &[("/a/b;jsessionid=1", None)]);
}

#[test]
fn matched_prefix_is_what_a_prefix_rewrite_replaces() {
    let cfg = routes(
        r#"
- {name: a, match: {prefix: /a}, direct_response: {status: 200}}
- {name: b, match: {path: /b}, direct_response: {status: 200}}
- {name: c, match: {path_separated_prefix: /c}, direct_response: {status: 200}}
- {name: d, match: {safe_regex: {regex: /d}}, direct_response: {status: 200}}
"#,
    );
    let prefixes: Vec<_> = cfg.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.matcher.matched_prefix())
        .collect();
    assert_eq!(prefixes, [Some("/a"), Some("/b"), Some("/c"), None]);
}
