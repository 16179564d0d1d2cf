use super::*;
use http::header;
use matcher::string_matcher::MatchPattern;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use xds_client::pb::envoy::r#type::v3::FractionalPercent;

fn exact(origin: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(MatchPattern::Exact(origin.into())),
        ..Default::default()
    }
}

fn prefix(origin: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(origin.into())),
        ..Default::default()
    }
}

/// The route-level policy of the Envoy comparison run.
fn route_policy() -> CorsPolicy {
    CorsPolicy::try_from(&proto::CorsPolicy {
        allow_origin_string_match: vec![exact("https://a.example"), prefix("https://p.")],
        allow_headers: "x-a,x-b".into(),
        expose_headers: "x-exp".into(),
        allow_credentials: Some(BoolValue { value: true }),
        ..Default::default()
    })
    .expect("valid")
}

/// The virtual-host policy of the Envoy comparison run.
fn vhost_policy() -> CorsPolicy {
    CorsPolicy::try_from(&proto::CorsPolicy {
        allow_origin_string_match: vec![exact("https://vh.example")],
        allow_methods: "GET,POST".into(),
        max_age: "600".into(),
        ..Default::default()
    })
    .expect("valid")
}

fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_static(v));
    }
    map
}

fn stats() -> CorsStats {
    CorsStats::new(&Store::new(), "main")
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(3)
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn preflight_merges_route_then_vhost_fields() {
    let (route, vhost) = (route_policy(), vhost_policy());
    let cors = Cors::new([&route, &vhost]).expect("policies");
    let stats = stats();
    let verdict = cors.on_request(
        &stats,
        &Method::OPTIONS,
        &request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-z"),
        ]),
        &mut rng(),
    );
    let CorsVerdict::Preflight(response) = verdict else {
        panic!("expected a preflight reply, got {verdict:?}");
    };
    assert_eq!(response.status(), StatusCode::OK);
    // Exactly what Envoy 1.40 sent for the same configuration (its date/server aside).
    let mut got = header_list(response.headers());
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("access-control-allow-origin", "https://a.example"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-a,x-b"),
        ("access-control-max-age", "600"),
        ("access-control-expose-headers", "x-exp"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(stats.origin_valid.value(), 1);
}

#[test]
fn origins_come_from_the_most_specific_policy_that_has_any() {
    let (route, vhost) = (route_policy(), vhost_policy());
    let cors = Cors::new([&route, &vhost]).expect("policies");
    let stats = stats();
    // The virtual host allows this origin, but the route's list wins.
    let verdict = cors.on_request(
        &stats,
        &Method::GET,
        &request(&[("origin", "https://vh.example")]),
        &mut rng(),
    );
    assert!(matches!(verdict, CorsVerdict::Forward(None)), "{verdict:?}");
    assert_eq!(stats.origin_invalid.value(), 1);
}

#[test]
fn simple_request_from_allowed_origin_is_decorated() {
    let (route, vhost) = (route_policy(), vhost_policy());
    let cors = Cors::new([&route, &vhost]).expect("policies");
    let verdict = cors.on_request(
        &stats(),
        &Method::GET,
        &request(&[("origin", "https://p.x")]),
        &mut rng(),
    );
    let CorsVerdict::Forward(Some(decoration)) = verdict else {
        panic!("expected decoration, got {verdict:?}");
    };
    let mut response = HeaderMap::new();
    response.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    decoration.apply(&mut response);
    assert_eq!(response[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://p.x");
    assert_eq!(response[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    assert_eq!(response[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-exp");
    assert!(!response.contains_key(header::VARY), "Envoy adds no Vary");
    assert_eq!(response.len(), 4);
}

#[test]
fn non_matching_origin_preflight_is_forwarded_by_default() {
    let route = route_policy();
    let cors = Cors::new([&route]).expect("policy");
    let stats = stats();
    let preflight = request(&[
        ("origin", "https://bad.example"),
        ("access-control-request-method", "PUT"),
    ]);
    let verdict = cors.on_request(&stats, &Method::OPTIONS, &preflight, &mut rng());
    assert!(matches!(verdict, CorsVerdict::Forward(None)), "{verdict:?}");
    assert_eq!(stats.origin_invalid.value(), 1);

    // With forward_not_matching_preflights: false it is answered, without allow-origin.
    let strict = CorsPolicy::try_from(&proto::CorsPolicy {
        allow_origin_string_match: vec![exact("https://a.example")],
        allow_methods: "GET".into(),
        expose_headers: "x-exp".into(),
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    })
    .expect("valid");
    let cors = Cors::new([&strict]).expect("policy");
    let CorsVerdict::Preflight(r) =
        cors.on_request(&stats, &Method::OPTIONS, &preflight, &mut rng())
    else {
        panic!("expected a local preflight reply");
    };
    assert_eq!(
        header_list(r.headers()),
        [("access-control-allow-methods".into(), "GET".into())]
    );
}

#[test]
fn not_a_cors_request_is_left_alone() {
    let route = route_policy();
    let cors = Cors::new([&route]).expect("policy");
    let stats = stats();
    let mut rng = rng();
    // No Origin, or an empty one: nothing, and nothing counted.
    for h in [request(&[]), request(&[("origin", "")])] {
        let v = cors.on_request(&stats, &Method::GET, &h, &mut rng);
        assert!(matches!(v, CorsVerdict::Forward(None)));
    }
    assert_eq!(stats.origin_valid.value() + stats.origin_invalid.value(), 0);
    // OPTIONS without Access-Control-Request-Method is an ordinary (decorated) request.
    let v = cors.on_request(
        &stats,
        &Method::OPTIONS,
        &request(&[("origin", "https://a.example")]),
        &mut rng,
    );
    assert!(matches!(v, CorsVerdict::Forward(Some(_))), "{v:?}");
    assert!(Cors::new(std::iter::empty::<&CorsPolicy>()).is_none());
}

#[test]
fn wildcards_echo_the_request_and_match_any_origin() {
    let star = CorsPolicy::try_from(&proto::CorsPolicy {
        allow_origin_string_match: vec![exact("*")],
        allow_methods: "*".into(),
        allow_headers: "*".into(),
        allow_private_network_access: Some(BoolValue { value: true }),
        ..Default::default()
    })
    .expect("valid");
    let cors = Cors::new([&star]).expect("policy");
    let verdict = cors.on_request(
        &stats(),
        &Method::OPTIONS,
        &request(&[
            ("origin", "https://anything"),
            ("access-control-request-method", "PATCH"),
            ("access-control-request-headers", "x-y"),
            ("access-control-request-private-network", "true"),
        ]),
        &mut rng(),
    );
    let CorsVerdict::Preflight(r) = verdict else {
        panic!("expected a preflight reply");
    };
    let h = r.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://anything");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-y");
    assert_eq!(h["access-control-allow-private-network"], "true");
}

#[test]
fn disabled_and_shadow_policies() {
    let off = |shadow: Option<u32>| {
        CorsPolicy::try_from(&proto::CorsPolicy {
            allow_origin_string_match: vec![exact("https://a.example")],
            filter_enabled: Some(RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: 0,
                    denominator: 0,
                }),
                runtime_key: "cors.enabled".into(),
            }),
            shadow_enabled: shadow.map(|n| RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    numerator: n,
                    denominator: 0,
                }),
                runtime_key: String::new(),
            }),
            ..Default::default()
        })
        .expect("valid")
    };
    let preflight = request(&[
        ("origin", "https://a.example"),
        ("access-control-request-method", "PUT"),
    ]);
    for (policy, counted) in [(off(None), 0), (off(Some(100)), 1)] {
        let stats = stats();
        let cors = Cors::new([&policy]).expect("policy");
        let v = cors.on_request(&stats, &Method::OPTIONS, &preflight, &mut rng());
        assert!(matches!(v, CorsVerdict::Forward(None)), "{v:?}");
        assert_eq!(stats.origin_valid.value(), counted);
    }
}

#[test]
fn legacy_route_cors_shape_is_accepted() {
    let legacy = CorsPolicy::from_route_cors(&route::CorsPolicy {
        allow_origin_string_match: vec![exact("https://l.example")],
        allow_methods: "PUT".into(),
        ..Default::default()
    })
    .expect("valid");
    let cors = Cors::new([legacy.as_ref()]).expect("policy");
    let CorsVerdict::Preflight(r) = cors.on_request(
        &stats(),
        &Method::OPTIONS,
        &request(&[
            ("origin", "https://l.example"),
            ("access-control-request-method", "PATCH"),
        ]),
        &mut rng(),
    ) else {
        panic!("expected a preflight reply");
    };
    assert_eq!(
        header_list(r.headers()),
        [
            (
                "access-control-allow-origin".into(),
                "https://l.example".into()
            ),
            ("access-control-allow-methods".into(), "PUT".into()),
        ]
    );
}

#[test]
fn invalid_policies_name_the_field() {
    let err = CorsPolicy::try_from(&proto::CorsPolicy {
        max_age: "6\n00".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.starts_with("max_age:"), "{err}");
    let err = CorsPolicy::from_any(&any::pack(&proto::Cors {})).unwrap_err();
    assert!(err.contains("CorsPolicy"), "{err}");
    let ok = CorsPolicy::from_any(&any::pack(&proto::CorsPolicy::default()));
    assert!(ok.is_ok());
}
