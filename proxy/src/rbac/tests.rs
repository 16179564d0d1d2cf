use super::*;
use crate::config::matcher::RequestView;
use serde_json::json;
use xds_client::proto_json::{ReadOptions, from_value};

fn rbac(value: serde_json::Value) -> Result<Rbac, RbacError> {
    let p: proto::Rbac = from_value(value, ReadOptions::default()).expect("valid proto JSON");
    Rbac::try_from(&p)
}

/// A request from `peer` to 10.0.0.1:9080.
struct Req {
    method: http::Method,
    path: &'static str,
    authority: &'static str,
    headers: HeaderMap,
    peer: SocketAddr,
    remote: IpAddr,
}

impl Req {
    fn get(path: &'static str) -> Req {
        Req {
            method: http::Method::GET,
            path,
            authority: "reviews.local",
            headers: HeaderMap::new(),
            peer: "10.1.2.3:40000".parse().unwrap(),
            remote: "10.1.2.3".parse().unwrap(),
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.append(name, value.parse().unwrap());
        self
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            local: "10.0.0.1:9080".parse().unwrap(),
            peer: self.peer,
            remote: self.remote,
            server_name: "",
            peer_certificate: None,
            request: Some(RequestView {
                method: &self.method,
                scheme: "http",
                authority: self.authority,
                path: self.path,
                headers: &self.headers,
            }),
        }
    }
}

/// Istio's shape: `to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]`.
fn reviews_policy() -> serde_json::Value {
    json!({
        "permissions": [{"and_rules": {"rules": [
            {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}]}},
            {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/reviews/"}}}]}}
        ]}}],
        "principals": [{"and_ids": {"ids": [{"any": true}]}}]
    })
}

#[test]
fn allow_allows_only_what_a_policy_matches() {
    let r = rbac(json!({"policies": {"ns[default]-policy[reviews]-rule[0]": reviews_policy()}}))
        .unwrap();
    let d = r.check(&Req::get("/reviews/1?x=/other").subject());
    assert_eq!(
        d,
        Decision {
            allowed: true,
            policy: Some("ns[default]-policy[reviews]-rule[0]")
        }
    );
    let mut post = Req::get("/reviews/1");
    post.method = http::Method::POST;
    assert!(!r.check(&post.subject()).allowed);
    // The query is not part of the path a url_path matches.
    let d = r.check(&Req::get("/other?/reviews/").subject());
    assert_eq!(
        d,
        Decision {
            allowed: false,
            policy: None
        }
    );
}

#[test]
fn deny_denies_what_a_policy_matches_and_names_the_first_by_name() {
    let evil = json!({
        "permissions": [{"any": true}],
        "principals": [{"header": {"name": "x-evil", "present_match": true}}]
    });
    let r = rbac(json!({"action": "DENY", "policies": {"b": evil.clone(), "a": evil}})).unwrap();
    assert_eq!(r.action, Action::Deny);
    let d = r.check(&Req::get("/").header("x-evil", "1").subject());
    assert_eq!(
        d,
        Decision {
            allowed: false,
            policy: Some("a")
        }
    );
    assert!(r.check(&Req::get("/").subject()).allowed);
}

#[test]
fn log_always_allows() {
    let r = rbac(json!({"action": "LOG", "policies": {"p": reviews_policy()}})).unwrap();
    assert!(r.check(&Req::get("/other").subject()).allowed);
    assert!(r.check(&Req::get("/reviews/1").subject()).allowed);
}

#[test]
fn empty_rules_deny_under_allow_and_allow_under_deny() {
    assert!(
        !rbac(json!({}))
            .unwrap()
            .check(&Req::get("/").subject())
            .allowed
    );
    assert!(
        rbac(json!({"action": "DENY"}))
            .unwrap()
            .check(&Req::get("/").subject())
            .allowed
    );
}

#[test]
fn empty_permission_or_principal_lists_match_nothing_and_empty_and_matches_all() {
    let r = rbac(json!({"policies": {"p": {"permissions": [{"any": true}], "principals": []}}}))
        .unwrap();
    assert!(!r.check(&Req::get("/").subject()).allowed);
    let r = rbac(json!({"policies": {"p": {
        "permissions": [{"and_rules": {"rules": []}}],
        "principals": [{"or_ids": {"ids": []}}]}}}))
    .unwrap();
    assert!(!r.check(&Req::get("/").subject()).allowed);
    let r = rbac(json!({"policies": {"p": {
        "permissions": [{"and_rules": {"rules": []}}],
        "principals": [{"and_ids": {"ids": []}}]}}}))
    .unwrap();
    assert!(r.check(&Req::get("/").subject()).allowed);
}

fn allows(principal: serde_json::Value, req: &Req) -> bool {
    rbac(json!({"policies": {"p": {"permissions": [{"any": true}], "principals": [principal]}}}))
        .unwrap()
        .check(&req.subject())
        .allowed
}

fn permits(permission: serde_json::Value, req: &Req) -> bool {
    rbac(json!({"policies": {"p": {"permissions": [permission], "principals": [{"any": true}]}}}))
        .unwrap()
        .check(&req.subject())
        .allowed
}

#[test]
fn addresses_match_the_connection_and_the_forwarded_client() {
    let mut req = Req::get("/");
    req.remote = "192.168.7.7".parse().unwrap();
    let range = |ip: &str, len: u32| json!({"address_prefix": ip, "prefix_len": len});
    assert!(allows(
        json!({"direct_remote_ip": range("10.1.0.0", 16)}),
        &req
    ));
    assert!(allows(json!({"source_ip": range("10.1.2.3", 32)}), &req));
    assert!(!allows(json!({"remote_ip": range("10.1.0.0", 16)}), &req));
    assert!(allows(json!({"remote_ip": range("192.168.0.0", 16)}), &req));
    // Families never mix.
    assert!(!allows(json!({"direct_remote_ip": range("::", 0)}), &req));
    assert!(permits(
        json!({"destination_ip": range("10.0.0.1", 32)}),
        &req
    ));
    assert!(permits(json!({"destination_port": 9080}), &req));
    assert!(!permits(json!({"destination_port": 9081}), &req));
    assert!(permits(
        json!({"destination_port_range": {"start": 9000, "end": 9081}}),
        &req
    ));
    assert!(!permits(
        json!({"destination_port_range": {"start": 9000, "end": 9080}}),
        &req
    ));
}

#[test]
fn not_inverts_and_nests() {
    let req = Req::get("/admin/x");
    let admin = json!({"url_path": {"path": {"prefix": "/admin"}}});
    assert!(permits(admin.clone(), &req));
    assert!(!permits(json!({"not_rule": admin}), &req));
    assert!(permits(json!({"not_rule": {"not_rule": admin}}), &req));
    assert!(!allows(json!({"not_id": {"any": true}}), &req));
}

#[test]
fn string_matchers_follow_envoy() {
    let req = Req::get("/Reviews/A.JSON");
    let path = |m: serde_json::Value| json!({"url_path": {"path": m}});
    assert!(permits(
        path(json!({"exact": "/reviews/a.json", "ignore_case": true})),
        &req
    ));
    assert!(!permits(path(json!({"exact": "/reviews/a.json"})), &req));
    assert!(permits(
        path(json!({"suffix": ".json", "ignore_case": true})),
        &req
    ));
    assert!(permits(path(json!({"contains": "views/"})), &req));
    assert!(permits(
        path(json!({"safe_regex": {"regex": "/Rev.*"}})),
        &req
    ));
    assert!(!permits(
        path(json!({"safe_regex": {"regex": "Rev"}})),
        &req
    ));
    let host = json!({"header": {"name": ":authority", "string_match": {"prefix": "REVIEWS", "ignore_case": true}}});
    assert!(permits(host, &req));
}

#[test]
fn authenticated_never_matches_plaintext_and_checks_sans_then_subject() {
    let req = Req::get("/");
    assert!(!allows(json!({"authenticated": {}}), &req));
    assert!(allows(json!({"not_id": {"authenticated": {}}}), &req));
    let cert = PeerCertificate {
        uri_sans: vec!["spiffe://cluster.local/ns/default/sa/productpage".into()],
        dns_sans: vec![],
        subject: "CN=x".into(),
    };
    let m = |s: &str| {
        StringMatcher::try_from(&xds_client::pb::envoy::r#type::matcher::v3::StringMatcher {
            match_pattern: Some(
                xds_client::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Exact(
                    s.into(),
                ),
            ),
            ignore_case: false,
        })
        .unwrap()
    };
    assert!(authenticated(None, Some(&cert)));
    assert!(authenticated(
        Some(&m("spiffe://cluster.local/ns/default/sa/productpage")),
        Some(&cert)
    ));
    assert!(authenticated(Some(&m("CN=x")), Some(&cert)));
    assert!(!authenticated(Some(&m("other")), Some(&cert)));
}

#[test]
fn network_subjects_have_no_headers_and_no_path() {
    let req = Req::get("/");
    let mut subject = req.subject();
    subject.request = None;
    let r = |p: serde_json::Value| {
        rbac(json!({"policies": {"p": {"permissions": [p], "principals": [{"any": true}]}}}))
            .unwrap()
            .check(&subject)
            .allowed
    };
    assert!(!r(json!({"url_path": {"path": {"prefix": "/"}}})));
    assert!(!r(
        json!({"header": {"name": ":method", "present_match": true}})
    ));
    assert!(r(json!({"header": {"name": "x", "present_match": false}})));
    assert!(r(json!({"requested_server_name": {"exact": ""}})));
}

#[test]
fn unevaluable_kinds_are_unsupported_and_named() {
    let err = rbac(json!({"policies": {"p": {
        "permissions": [{"any": true}],
        "principals": [{"and_ids": {"ids": [{"metadata": {"filter": "istio_authn", "path": [{"key": "request.auth.principal"}], "value": {"string_match": {"exact": "a"}}}}]}}]}}}))
    .unwrap_err();
    assert_eq!(
        err,
        RbacError::Unsupported {
            field: "policies[\"p\"].principals[0].and_ids.ids[0].metadata".into(),
            what: "dynamic metadata"
        }
    );
    let err = rbac(json!({"policies": {"p": {"permissions": [{"any": true}],
        "principals": [{"filter_state": {"key": "io.istio.peer_principal", "string_match": {"exact": "a"}}}]}}}))
    .unwrap_err();
    assert!(
        matches!(
            err,
            RbacError::Unsupported {
                what: "filter state",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unsupported_rules_fail_closed_and_invalid_ones_are_rejected() {
    let p: proto::Rbac = from_value(
        json!({"policies": {"p": {"permissions": [{"any": true}],
            "principals": [{"filter_state": {"key": "k", "string_match": {"exact": "a"}}}]}}}),
        ReadOptions::default(),
    )
    .unwrap();
    let e = Enforcement::from_rules(Some(&p), false).unwrap().unwrap();
    assert!(matches!(&e, Enforcement::FailClosed { reason } if reason.contains("filter_state")));
    assert!(!e.check(&Req::get("/").subject()).allowed);
    assert!(Enforcement::from_rules(None, false).unwrap().is_none());
    assert!(matches!(
        Enforcement::from_rules(None, true).unwrap(),
        Some(Enforcement::FailClosed { .. })
    ));
    let bad: proto::Rbac = from_value(
        json!({"policies": {"p": {"permissions": [{"destination_ip": {"address_prefix": "nope"}}], "principals": [{"any": true}]}}}),
        ReadOptions::default(),
    )
    .unwrap();
    let err = Enforcement::from_rules(Some(&bad), false).unwrap_err();
    assert!(
        matches!(&err, RbacError::Invalid { field, .. } if field == "rules.policies[\"p\"].permissions[0].destination_ip"),
        "{err}"
    );
    // Shadow rules Tern cannot evaluate are skipped, not enforced.
    assert!(shadow_rules(Some(&p), false).unwrap().is_none());
}

#[test]
fn stat_names_join_prefixes_as_envoy() {
    assert_eq!(stat_prefix_join("tcp.", "rbac."), "tcp.rbac.");
    assert_eq!(stat_prefix_join("tcp", "rbac."), "tcp.rbac.");
    assert_eq!(stat_prefix_join("", "rbac."), "rbac.");
    let store = crate::stats::Store::new();
    let stats = RbacStats::new(&store, "http.in.", "", "istio_dry_run_allow_");
    stats.allowed.inc();
    stats.shadow_denied.inc();
    let names: Vec<String> = store.samples().into_iter().map(|s| s.name).collect();
    for name in [
        "http.in.rbac.allowed",
        "http.in.rbac.denied",
        "http.in.rbac.istio_dry_run_allow_.shadow_allowed",
        "http.in.rbac.istio_dry_run_allow_.shadow_denied",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}
