#![allow(deprecated)] // the deprecated `append` field is still sent by control planes

use super::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use xds_client::pb::envoy::config::core::v3::{
    HeaderValue as ProtoHeader, RuntimeFractionalPercent,
};
use xds_client::pb::envoy::r#type::v3::{
    FractionalPercent, HttpStatus, TokenBucket as ProtoBucket,
};
use xds_client::pb::google::protobuf::{BoolValue, Duration as ProtoDuration, UInt32Value};

fn spec(max_tokens: u64, tokens_per_fill: u64, fill_interval: Duration) -> BucketSpec {
    BucketSpec {
        max_tokens,
        tokens_per_fill,
        fill_interval,
    }
}

fn all() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: 0,
        }),
        runtime_key: "local_rate_limit_enabled".into(),
    })
}

fn bucket(max_tokens: u32, tokens_per_fill: u32, fill_secs: i64) -> Option<ProtoBucket> {
    Some(ProtoBucket {
        max_tokens,
        tokens_per_fill: Some(UInt32Value {
            value: tokens_per_fill,
        }),
        fill_interval: Some(ProtoDuration {
            seconds: fill_secs,
            nanos: 0,
        }),
    })
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(ProtoHeader {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The per-route config of the Envoy comparison run.
fn route_config() -> proto::LocalRateLimit {
    proto::LocalRateLimit {
        stat_prefix: "rl".into(),
        token_bucket: bucket(2, 1, 60),
        filter_enabled: all(),
        filter_enforced: all(),
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        response_headers_to_add: vec![header("x-limited", "yes")],
        ..Default::default()
    }
}

fn parse(p: &proto::LocalRateLimit, now: Instant) -> LocalRateLimit {
    LocalRateLimit::from_proto(p, ConfigLevel::PerRoute, now).expect("valid")
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(11)
}

#[test]
fn bucket_starts_full_and_refills_continuously() {
    let t0 = Instant::now();
    let b = TokenBucket::new(spec(3, 1, Duration::from_secs(1)), t0);
    assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
    assert!(!b.try_take(t0), "three tokens, no more");
    assert!(!b.try_take(t0 + Duration::from_millis(999)));
    assert!(b.try_take(t0 + Duration::from_millis(1000)));
    assert!(!b.try_take(t0 + Duration::from_millis(1000)));
    // Ten seconds idle: refilled to max_tokens, not ten.
    let later = t0 + Duration::from_secs(11);
    assert_eq!(b.remaining(later), 3);
    assert!((0..3).all(|_| b.try_take(later)));
    assert!(!b.try_take(later));
}

#[test]
fn tokens_per_fill_over_fill_interval_is_the_rate() {
    let t0 = Instant::now();
    // 10 tokens per 1s: one every 100ms.
    let b = TokenBucket::new(spec(10, 10, Duration::from_secs(1)), t0);
    assert!((0..10).all(|_| b.try_take(t0)));
    assert_eq!(b.next_token_in(t0), Duration::from_millis(100));
    let t = t0 + Duration::from_millis(250);
    assert_eq!(b.remaining(t), 2);
    assert!(b.try_take(t) && b.try_take(t) && !b.try_take(t));
    assert_eq!(
        b.next_token_in(t),
        Duration::from_millis(50),
        "half a token accrued"
    );
}

#[test]
fn zero_max_tokens_limits_everything() {
    let t0 = Instant::now();
    let b = TokenBucket::new(spec(0, 1, Duration::from_secs(1)), t0);
    assert!(!b.try_take(t0 + Duration::from_secs(100)));
}

#[test]
fn an_earlier_now_from_a_racing_thread_takes_nothing_extra() {
    let t0 = Instant::now();
    let b = TokenBucket::new(spec(1, 1, Duration::from_secs(1)), t0);
    let t1 = t0 + Duration::from_secs(5);
    assert!(b.try_take(t1));
    assert!(!b.try_take(t1 - Duration::from_millis(10)));
}

#[test]
fn concurrent_takes_never_exceed_the_bucket() {
    let t0 = Instant::now();
    let b = Arc::new(TokenBucket::new(
        spec(1000, 1, Duration::from_secs(3600)),
        t0,
    ));
    let now = t0 + Duration::from_millis(1);
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || (0..5000).filter(|_| b.try_take(now)).count())
        })
        .collect();
    let taken: usize = takers.into_iter().map(|t| t.join().expect("taker")).sum();
    // 1000 to start with, plus what 1ms accrues at one token an hour (nothing).
    assert_eq!(taken, 1000);
    assert_eq!(b.remaining(now), 0);
}

#[test]
fn concurrent_takes_with_refill_never_exceed_what_accrued() {
    let t0 = Instant::now();
    // 10 to start with, then one token per millisecond.
    let b = Arc::new(TokenBucket::new(spec(10, 1, Duration::from_millis(1)), t0));
    let takers: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                // Both walk the same 10ms timeline, 1µs per step.
                (0..10_000u64)
                    .filter(|i| b.try_take(t0 + Duration::from_micros(*i)))
                    .count()
            })
        })
        .collect();
    let taken: usize = takers.into_iter().map(|t| t.join().expect("taker")).sum();
    assert!(taken <= 10 + 10, "took {taken}, at most 20 accrued");
    assert!(
        taken >= 19,
        "took {taken}: every accrued token should be taken"
    );
}

#[test]
fn route_config_limits_like_envoy() {
    let t0 = Instant::now();
    let store = Store::new();
    let limit = parse(&route_config(), t0);
    let conn = ConnectionBuckets::default();
    let mut rng = rng();
    let mut req = HeaderMap::new();

    let RateDecision::Allowed { x_ratelimit } = limit.check(&store, t0, &mut rng, &mut req, &conn)
    else {
        panic!("first request allowed");
    };
    assert_eq!(
        x_ratelimit,
        Some(XRateLimit {
            limit: 2,
            remaining: 1,
            reset: 0
        })
    );
    let RateDecision::Allowed { x_ratelimit } = limit.check(&store, t0, &mut rng, &mut req, &conn)
    else {
        panic!("second request allowed");
    };
    assert_eq!(
        x_ratelimit,
        Some(XRateLimit {
            limit: 2,
            remaining: 0,
            reset: 60
        })
    );
    let RateDecision::Limited(reply) = limit.check(&store, t0, &mut rng, &mut req, &conn) else {
        panic!("third request limited");
    };
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = reply.response(false);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = r.headers();
    assert_eq!(h["x-limited"], "yes");
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-reset"], "60");
    assert!(!h.contains_key("retry-after"));

    let g = reply.response(true);
    assert_eq!(g.status(), StatusCode::OK);
    assert_eq!(g.headers()["grpc-status"], "14");
    assert_eq!(g.headers()["grpc-message"], "local_rate_limited");

    let stats = limit.stats(&store);
    assert_eq!(
        (
            stats.enabled.value(),
            stats.ok.value(),
            stats.rate_limited.value(),
            stats.enforced.value()
        ),
        (3, 2, 1, 1)
    );
    let names: Vec<_> = store.samples().into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"rl.http_local_rate_limit.enforced".to_string()));

    // A minute later a token is back.
    let later = t0 + Duration::from_secs(60);
    assert!(matches!(
        limit.check(&store, later, &mut rng, &mut req, &conn),
        RateDecision::Allowed { .. }
    ));
}

#[test]
fn not_enabled_unless_filter_enabled_is_set() {
    let store = Store::new();
    let t0 = Instant::now();
    let mut p = route_config();
    p.filter_enabled = None;
    p.token_bucket = bucket(0, 1, 1);
    let limit = parse(&p, t0);
    let d = limit.check(
        &store,
        t0,
        &mut rng(),
        &mut HeaderMap::new(),
        &ConnectionBuckets::default(),
    );
    assert!(matches!(d, RateDecision::Allowed { x_ratelimit: None }));
    assert_eq!(limit.stats(&store).enabled.value(), 0);
}

#[test]
fn not_enforced_unless_filter_enforced_is_set() {
    let store = Store::new();
    let t0 = Instant::now();
    let mut p = route_config();
    p.filter_enforced = None;
    p.token_bucket = bucket(0, 1, 1);
    p.request_headers_to_add_when_not_enforced = vec![header("x-would-limit", "true")];
    let limit = parse(&p, t0);
    let mut req = HeaderMap::new();
    let d = limit.check(
        &store,
        t0,
        &mut rng(),
        &mut req,
        &ConnectionBuckets::default(),
    );
    assert!(
        matches!(d, RateDecision::LimitedNotEnforced { .. }),
        "{d:?}"
    );
    assert_eq!(req["x-would-limit"], "true");
    assert_eq!(limit.stats(&store).rate_limited.value(), 1);
    assert_eq!(limit.stats(&store).enforced.value(), 0);
}

#[test]
fn filter_level_config_without_a_bucket_allows_everything() {
    let t0 = Instant::now();
    let p = proto::LocalRateLimit {
        stat_prefix: "global".into(),
        filter_enabled: all(),
        filter_enforced: all(),
        ..Default::default()
    };
    let store = Store::new();
    let limit = LocalRateLimit::from_proto(&p, ConfigLevel::Filter, t0).expect("valid");
    let d = limit.check(
        &store,
        t0,
        &mut rng(),
        &mut HeaderMap::new(),
        &ConnectionBuckets::default(),
    );
    assert!(matches!(d, RateDecision::Allowed { x_ratelimit: None }));
    assert_eq!(limit.stats(&store).ok.value(), 1);
    let err = LocalRateLimit::from_proto(&p, ConfigLevel::PerRoute, t0).unwrap_err();
    assert_eq!(err, "token_bucket: required in a per-route config");
}

#[test]
fn per_connection_buckets_are_separate() {
    let store = Store::new();
    let t0 = Instant::now();
    let mut p = route_config();
    p.token_bucket = bucket(1, 1, 60);
    p.local_rate_limit_per_downstream_connection = true;
    let limit = parse(&p, t0);
    let (a, b) = (ConnectionBuckets::default(), ConnectionBuckets::default());
    let mut rng = rng();
    let mut req = HeaderMap::new();
    let mut allowed = |conn: &ConnectionBuckets| {
        matches!(
            limit.check(&store, t0, &mut rng, &mut req, conn),
            RateDecision::Allowed { .. }
        )
    };
    assert!(allowed(&a));
    assert!(!allowed(&a));
    assert!(allowed(&b), "another connection has its own bucket");
}

#[test]
fn custom_status_grpc_resource_exhausted_and_retry_after() {
    let store = Store::new();
    let t0 = Instant::now();
    let mut p = route_config();
    p.token_bucket = bucket(1, 1, 30);
    p.enable_x_ratelimit_headers = 0;
    p.rate_limited_as_resource_exhausted = true;
    p.enable_retry_after_header = true;
    let limit = parse(&p, t0);
    let conn = ConnectionBuckets::default();
    let mut rng = rng();
    let mut req = HeaderMap::new();
    assert!(matches!(
        limit.check(&store, t0, &mut rng, &mut req, &conn),
        RateDecision::Allowed { x_ratelimit: None }
    ));
    let t = t0 + Duration::from_secs(10);
    let RateDecision::Limited(reply) = limit.check(&store, t, &mut rng, &mut req, &conn) else {
        panic!("limited");
    };
    let r = reply.response(false);
    assert_eq!(r.headers()["retry-after"], "20");
    assert!(!r.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(reply.response(true).headers()["grpc-status"], "8");

    p.status = Some(HttpStatus { code: 503 });
    let limit = parse(&p, t0);
    let _ = limit.check(&store, t0, &mut rng, &mut req, &conn);
    let RateDecision::Limited(reply) = limit.check(&store, t0, &mut rng, &mut req, &conn) else {
        panic!("limited");
    };
    let r = reply.response(false);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!r.headers().contains_key("retry-after"), "only for 429");

    // A status below 400 falls back to 429, as in Envoy.
    p.status = Some(HttpStatus { code: 200 });
    assert_eq!(parse(&p, t0).status, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn header_append_actions() {
    let mut overwrite = header("x-a", "new");
    overwrite.append = Some(BoolValue { value: false });
    let mut if_absent = header("x-b", "new");
    if_absent.append_action = HeaderAppendAction::AddIfAbsent as i32;
    let mut if_exists = header("x-c", "new");
    if_exists.append_action = HeaderAppendAction::OverwriteIfExists as i32;
    let actions = header_actions(
        &[
            header("x-a", "appended"),
            overwrite,
            if_absent,
            if_exists,
            header("x-empty", ""),
            header("x-pct", "100%%"),
        ],
        "h",
    )
    .expect("valid");
    let mut h = HeaderMap::new();
    h.insert("x-b", HeaderValue::from_static("old"));
    for a in &actions {
        a.apply(&mut h);
    }
    assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["new"]);
    assert_eq!(h["x-b"], "old");
    assert!(!h.contains_key("x-c"));
    assert!(!h.contains_key("x-empty"), "empty values are dropped");
    assert_eq!(h["x-pct"], "100%");
}

#[test]
fn invalid_configs_name_the_field() {
    let t0 = Instant::now();
    type Edit = fn(&mut proto::LocalRateLimit);
    let cases: [(Edit, &str); 6] = [
        (|p| p.stat_prefix.clear(), "stat_prefix:"),
        (
            |p| p.token_bucket = bucket(1, 1, 0),
            "token_bucket.fill_interval:",
        ),
        (
            |p| p.token_bucket = bucket(1, 0, 1),
            "token_bucket.tokens_per_fill:",
        ),
        (
            |p| p.descriptors = vec![Default::default()],
            "descriptors: not supported",
        ),
        (
            |p| p.response_headers_to_add = vec![header("x-peer", "%DOWNSTREAM_REMOTE_ADDRESS%")],
            "response_headers_to_add[0].header.value:",
        ),
        (
            |p| {
                p.filter_enabled = Some(RuntimeFractionalPercent::default());
            },
            "filter_enabled.default_value: required",
        ),
    ];
    for (edit, want) in cases {
        let mut p = route_config();
        edit(&mut p);
        let err = LocalRateLimit::from_proto(&p, ConfigLevel::PerRoute, t0).unwrap_err();
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
    }
    let err = LocalRateLimit::from_any(
        &any::pack(&xds_client::pb::envoy::extensions::filters::http::cors::v3::Cors {}),
        ConfigLevel::PerRoute,
    )
    .unwrap_err();
    assert!(err.contains("LocalRateLimit"), "{err}");
}
