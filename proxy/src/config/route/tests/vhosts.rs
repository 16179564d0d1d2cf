//! Virtual host selection.

use super::*;

const DOMAINS: &str = r#"
name: "80"
virtual_hosts:
- {name: exact, domains: [api.example.com, "API.other.com"], routes: []}
- {name: suffix-short, domains: ["*.example.com"], routes: []}
- {name: suffix-long, domains: ["*-prod.example.com"], routes: []}
- {name: prefix-short, domains: ["api.*"], routes: []}
- {name: prefix-long, domains: ["api.example.*"], routes: []}
- {name: default, domains: ["*"], routes: []}
"#;

fn vhost<'c>(cfg: &'c RouteConfig, authority: &str) -> Option<&'c str> {
    cfg.find_virtual_host(authority).map(|v| v.name.as_str())
}

#[test]
fn exact_then_longest_suffix_then_longest_prefix_then_default() {
    let cfg = config(DOMAINS);
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.other.com", "exact"),
        ("www.example.com", "suffix-short"),
        ("web-prod.example.com", "suffix-long"),
        // Suffix wildcards beat prefix wildcards.
        ("api.x.example.com", "suffix-short"),
        ("api.example.org", "prefix-long"),
        ("api.io", "prefix-short"),
        ("unknown.net", "default"),
        // `*` must match at least one character.
        (".example.com", "default"),
        ("-prod.example.com", "suffix-short"),
    ];
    for (authority, expected) in cases {
        assert_eq!(vhost(&cfg, authority), Some(expected), "{authority}");
    }
}

#[test]
fn no_virtual_host_without_a_default() {
    let cfg = config(
        r#"
name: r
virtual_hosts:
- {name: a, domains: [a.com], routes: []}
"#,
    );
    assert_eq!(vhost(&cfg, "b.com"), None);
    assert!(
        cfg.route(&TestRequest::get("b.com", "/").view(), 0)
            .is_none()
    );
}

#[test]
fn a_lone_default_host_ignores_the_authority() {
    let cfg = config("{name: r, virtual_hosts: [{name: all, domains: ['*'], routes: []}]}");
    assert_eq!(vhost(&cfg, ""), Some("all"));
    assert_eq!(vhost(&cfg, "anything:1234"), Some("all"));
}

#[test]
fn ports_are_part_of_the_host_unless_ignored_or_stripped() {
    let text = r#"
name: r
virtual_hosts:
- {name: bare, domains: [a.com, "[::1]"], routes: []}
- {name: with-port, domains: ["a.com:8080"], routes: []}
- {name: default, domains: ["*"], routes: []}
"#;
    let cfg = config(text);
    assert_eq!(vhost(&cfg, "a.com:8080"), Some("with-port"));
    assert_eq!(vhost(&cfg, "a.com:9090"), Some("default"));
    assert_eq!(
        cfg.find_virtual_host_with("a.com:9090", true)
            .map(|v| v.name.as_str()),
        Some("bare")
    );
    assert_eq!(
        cfg.find_virtual_host_with("[::1]:80", true)
            .map(|v| v.name.as_str()),
        Some("bare")
    );

    let mut value = yaml(text);
    value["ignore_port_in_host_matching"] = json!(true);
    let ignoring = try_config(value).unwrap();
    assert_eq!(vhost(&ignoring, "a.com:9090"), Some("bare"));
    assert_eq!(vhost(&ignoring, "[::1]:443"), Some("bare"));
    assert_eq!(vhost(&ignoring, "[::1]"), Some("bare"));
}

#[test]
fn strip_host_port_handles_ipv6_literals() {
    assert_eq!(strip_host_port("a.com:80"), "a.com");
    assert_eq!(strip_host_port("a.com"), "a.com");
    assert_eq!(strip_host_port("[::1]:80"), "[::1]");
    assert_eq!(strip_host_port("[::1]"), "[::1]");
    assert_eq!(strip_host_port("[fe80::1%eth0]:8080"), "[fe80::1%eth0]");
}

#[test]
fn duplicate_domains_are_rejected_with_their_path() {
    let cases = [
        (
            "[{name: a, domains: [x.com]}, {name: b, domains: [y.com, X.com]}]",
            "virtual_hosts[1].domains[1]",
        ),
        (
            "[{name: a, domains: ['*.x.com', '*.x.com']}]",
            "virtual_hosts[0].domains[1]",
        ),
        (
            "[{name: a, domains: ['*']}, {name: b, domains: ['*']}]",
            "virtual_hosts[1].domains[0]",
        ),
    ];
    for (vhosts, field) in cases {
        let e = try_config(json!({"name": "r", "virtual_hosts": yaml(vhosts)})).unwrap_err();
        assert_eq!(e.resource, "route_configuration \"r\"");
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn route_picks_the_virtual_host_then_its_route() {
    let cfg = config(
        r#"
name: "9080"
virtual_hosts:
- name: reviews
  domains: ["reviews.default.svc.cluster.local", "reviews:9080"]
  routes:
  - {name: v2, match: {prefix: /, headers: [{name: end-user, string_match: {exact: jason}}]}, route: {cluster: "outbound|9080|v2|reviews"}}
  - {name: v1, match: {prefix: /}, route: {cluster: "outbound|9080|v1|reviews"}}
- name: allow_any
  domains: ["*"]
  routes:
  - {name: allow_any, match: {prefix: /}, route: {cluster: PassthroughCluster}}
"#,
    );
    let jason = TestRequest::get("reviews:9080", "/r/1").header("end-user", "jason");
    let (vh, route) = cfg.route(&jason.view(), 0).unwrap();
    assert_eq!((vh.name.as_str(), route.name.as_str()), ("reviews", "v2"));
    let other = TestRequest::get("elsewhere", "/");
    assert_eq!(selected(&cfg, &other), Some("allow_any"));
}
