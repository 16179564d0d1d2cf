#![allow(deprecated)] // deprecated HeaderMatcher forms are still sent by control planes

use super::*;
use http::HeaderValue;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use xds_client::pb::envoy::config::route::v3 as route;
use xds_client::pb::envoy::r#type::v3::FractionalPercent;
use xds_client::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use xds_client::pb::google::protobuf::{Duration as ProtoDuration, UInt32Value};

fn percent(numerator: u32, denominator: DenominatorType) -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator,
        denominator: denominator as i32,
    })
}

fn fixed_delay(ms: i32, pct: Option<FractionalPercent>) -> Option<common::FaultDelay> {
    Some(common::FaultDelay {
        percentage: pct,
        fault_delay_secifier: Some(common::fault_delay::FaultDelaySecifier::FixedDelay(
            ProtoDuration {
                seconds: 0,
                nanos: ms * 1_000_000,
            },
        )),
    })
}

fn header_delay(pct: Option<FractionalPercent>) -> Option<common::FaultDelay> {
    Some(common::FaultDelay {
        percentage: pct,
        fault_delay_secifier: Some(common::fault_delay::FaultDelaySecifier::HeaderDelay(
            Default::default(),
        )),
    })
}

fn abort(
    error: proto::fault_abort::ErrorType,
    pct: Option<FractionalPercent>,
) -> Option<proto::FaultAbort> {
    Some(proto::FaultAbort {
        percentage: pct,
        error_type: Some(error),
        ..Default::default()
    })
}

fn config(p: proto::HttpFault) -> FaultConfig {
    FaultConfig::try_from(&p).expect("valid fault config")
}

fn stats() -> FaultStats {
    FaultStats::new(&Store::new(), "inbound_0.0.0.0_8080")
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_static(v));
    }
    map
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(0x5eed)
}

use proto::fault_abort::ErrorType;

#[test]
fn fixed_percentages_are_independent_draws_near_their_fractions() {
    let fault = config(proto::HttpFault {
        delay: fixed_delay(5, percent(30, DenominatorType::Hundred)),
        abort: abort(
            ErrorType::HttpStatus(503),
            percent(2_000, DenominatorType::TenThousand),
        ),
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    let (mut delays, mut aborts, mut both) = (0, 0, 0);
    for _ in 0..1000 {
        let d = fault.decide(&stats, &HeaderMap::new(), Some("c"), &mut rng);
        delays += usize::from(d.delay.is_some());
        aborts += usize::from(d.abort.is_some());
        both += usize::from(d.delay.is_some() && d.abort.is_some());
    }
    assert!((250..=350).contains(&delays), "delays {delays}");
    assert!((150..=250).contains(&aborts), "aborts {aborts}");
    // Independent: about 30% x 20% = 6% get both.
    assert!((30..=90).contains(&both), "both {both}");
    assert_eq!(stats.delays_injected.value(), delays as u64);
    assert_eq!(stats.aborts_injected.value(), aborts as u64);
    assert_eq!(stats.active_faults.value(), 0, "every decision was dropped");
}

#[test]
fn million_denominator_percentage() {
    let fault = config(proto::HttpFault {
        abort: abort(
            ErrorType::HttpStatus(500),
            percent(500_000, DenominatorType::Million),
        ),
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    let aborts = (0..1000)
        .filter(|_| {
            fault
                .decide(&stats, &HeaderMap::new(), None, &mut rng)
                .abort
                .is_some()
        })
        .count();
    assert!((440..=560).contains(&aborts), "aborts {aborts}");
}

#[test]
fn unset_percentage_never_fires() {
    let fault = config(proto::HttpFault {
        abort: abort(ErrorType::HttpStatus(503), None),
        ..Default::default()
    });
    let d = fault.decide(&stats(), &HeaderMap::new(), None, &mut rng());
    assert!(d.is_empty());
}

#[test]
fn header_delay_reads_milliseconds_and_percentage_header_only_lowers() {
    let fault = config(proto::HttpFault {
        delay: header_delay(percent(50, DenominatorType::Hundred)),
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    // No header: no delay whatever the draw.
    for _ in 0..50 {
        assert!(
            fault
                .decide(&stats, &HeaderMap::new(), None, &mut rng)
                .is_empty()
        );
    }
    // The header asks for 100%: capped at the configured 50%.
    let h = headers(&[
        ("x-envoy-fault-delay-request", "250"),
        ("x-envoy-fault-delay-request-percentage", "100"),
    ]);
    let delayed: Vec<_> = (0..1000)
        .filter_map(|_| fault.decide(&stats, &h, None, &mut rng).delay)
        .collect();
    assert!((430..=570).contains(&delayed.len()), "{}", delayed.len());
    assert!(delayed.iter().all(|d| *d == Duration::from_millis(250)));
    // The header lowers it to 0%.
    let h = headers(&[
        ("x-envoy-fault-delay-request", "250"),
        ("x-envoy-fault-delay-request-percentage", "0"),
    ]);
    assert!(
        (0..100).all(|_| fault.decide(&stats, &h, None, &mut rng).is_empty()),
        "0% from the header"
    );
    // Not a number, or zero milliseconds: no delay.
    for bad in ["soon", "0", "-5"] {
        let mut h = HeaderMap::new();
        h.insert(
            "x-envoy-fault-delay-request",
            HeaderValue::from_str(bad).expect("ascii"),
        );
        h.insert(
            "x-envoy-fault-delay-request-percentage",
            HeaderValue::from_static("50"),
        );
        assert!(
            (0..50).all(|_| fault.decide(&stats, &h, None, &mut rng).delay.is_none()),
            "{bad}"
        );
    }
}

#[test]
fn header_abort_prefers_http_status_then_grpc() {
    let fault = config(proto::HttpFault {
        abort: abort(
            ErrorType::HeaderAbort(Default::default()),
            percent(100, DenominatorType::Hundred),
        ),
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    let decide = |h: &HeaderMap, rng: &mut SmallRng| fault.decide(&stats, h, None, rng).abort;

    let a = decide(
        &headers(&[("x-envoy-fault-abort-request", "503")]),
        &mut rng,
    )
    .expect("http abort");
    assert_eq!(
        (a.http_status, a.grpc_status),
        (StatusCode::SERVICE_UNAVAILABLE, None)
    );

    // Out of [200, 600): ignored, and the gRPC header is consulted.
    let a = decide(
        &headers(&[
            ("x-envoy-fault-abort-request", "700"),
            ("x-envoy-fault-abort-grpc-request", "5"),
        ]),
        &mut rng,
    )
    .expect("grpc abort");
    assert_eq!((a.http_status, a.grpc_status), (StatusCode::OK, Some(5)));

    assert!(
        decide(
            &headers(&[("x-envoy-fault-abort-request", "700")]),
            &mut rng
        )
        .is_none()
    );
    assert!(decide(&HeaderMap::new(), &mut rng).is_none());
    assert!(
        decide(
            &headers(&[
                ("x-envoy-fault-abort-request", "503"),
                ("x-envoy-fault-abort-request-percentage", "0"),
            ]),
            &mut rng
        )
        .is_none()
    );
}

#[test]
fn grpc_abort_is_http_200_with_grpc_status() {
    let fault = config(proto::HttpFault {
        abort: abort(
            ErrorType::GrpcStatus(14),
            percent(100, DenominatorType::Hundred),
        ),
        ..Default::default()
    });
    let d = fault.decide(&stats(), &HeaderMap::new(), None, &mut rng());
    assert_eq!(d.response_flags(), "FI");
    let a = d.abort.as_ref().expect("abort");

    let grpc = a.response(true);
    assert_eq!(grpc.status(), StatusCode::OK);
    assert_eq!(grpc.headers()["grpc-status"], "14");
    assert_eq!(grpc.headers()["grpc-message"], "fault filter abort");
    assert_eq!(grpc.headers()["content-type"], "application/grpc");

    // A plain HTTP request gets the HTTP status with the text body (Envoy's sendLocalReply).
    let plain = a.response(false);
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.headers()["content-type"], "text/plain");
    assert!(!plain.headers().contains_key("grpc-status"));
}

#[test]
fn http_abort_of_a_grpc_request_maps_the_status() {
    let fault = config(proto::HttpFault {
        abort: Some(proto::FaultAbort {
            percentage: percent(100, DenominatorType::Hundred),
            error_type: Some(ErrorType::HttpStatus(503)),
            response_body: "injected".into(),
        }),
        ..Default::default()
    });
    let d = fault.decide(&stats(), &HeaderMap::new(), None, &mut rng());
    let a = d.abort.as_ref().expect("abort");
    let r = a.response(true);
    assert_eq!(r.headers()["grpc-status"], "14");
    assert_eq!(r.headers()["grpc-message"], "injected");
    assert_eq!(a.response(false).status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn delay_then_abort_charges_one_active_fault() {
    let fault = config(proto::HttpFault {
        delay: fixed_delay(100, percent(100, DenominatorType::Hundred)),
        abort: abort(
            ErrorType::HttpStatus(418),
            percent(100, DenominatorType::Hundred),
        ),
        ..Default::default()
    });
    let stats = stats();
    let d = fault.decide(&stats, &HeaderMap::new(), None, &mut rng());
    assert_eq!(d.delay, Some(Duration::from_millis(100)));
    assert_eq!(
        d.abort.as_ref().map(|a| a.http_status),
        Some(StatusCode::IM_A_TEAPOT)
    );
    assert_eq!(d.response_flags(), "DI,FI");
    assert_eq!(stats.active_faults.value(), 1);
    drop(d);
    assert_eq!(stats.active_faults.value(), 0);
}

#[test]
fn max_active_faults_limits_concurrent_faults() {
    let fault = config(proto::HttpFault {
        delay: fixed_delay(100, percent(100, DenominatorType::Hundred)),
        abort: abort(
            ErrorType::HttpStatus(503),
            percent(100, DenominatorType::Hundred),
        ),
        max_active_faults: Some(UInt32Value { value: 2 }),
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    let first = fault.decide(&stats, &HeaderMap::new(), None, &mut rng);
    let second = fault.decide(&stats, &HeaderMap::new(), None, &mut rng);
    assert!(!first.is_empty() && !second.is_empty());
    let third = fault.decide(&stats, &HeaderMap::new(), None, &mut rng);
    assert!(third.is_empty(), "over max_active_faults: no fault");
    assert_eq!(
        stats.faults_overflow.value(),
        2,
        "the delay and the abort each hit the limit"
    );
    assert_eq!(stats.active_faults.value(), 2);
    drop(first);
    let fourth = fault.decide(&stats, &HeaderMap::new(), None, &mut rng);
    assert!(fourth.delay.is_some() && fourth.abort.is_some());
    assert_eq!(stats.delays_injected.value(), 3);
    assert_eq!(stats.aborts_injected.value(), 3);
}

#[test]
fn targets_cluster_downstream_node_and_headers() {
    let fault = config(proto::HttpFault {
        abort: abort(
            ErrorType::HttpStatus(503),
            percent(100, DenominatorType::Hundred),
        ),
        upstream_cluster: "outbound|80||reviews".into(),
        downstream_nodes: vec!["productpage".into()],
        headers: vec![route::HeaderMatcher {
            name: "x-user".into(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::PrefixMatch(
                "jason".into(),
            )),
            ..Default::default()
        }],
        ..Default::default()
    });
    let stats = stats();
    let mut rng = rng();
    let good = headers(&[
        ("x-envoy-downstream-service-node", "productpage"),
        ("x-user", "jason-1"),
    ]);
    let mut hits = |h: &HeaderMap, cluster| !fault.decide(&stats, h, cluster, &mut rng).is_empty();
    assert!(hits(&good, Some("outbound|80||reviews")));
    assert!(!hits(&good, Some("outbound|80||ratings")));
    assert!(
        !hits(&good, None),
        "no cluster (direct response) never matches a target"
    );
    let other_node = headers(&[
        ("x-envoy-downstream-service-node", "details"),
        ("x-user", "jason-1"),
    ]);
    assert!(!hits(&other_node, Some("outbound|80||reviews")));
    let other_user = headers(&[
        ("x-envoy-downstream-service-node", "productpage"),
        ("x-user", "ann"),
    ]);
    assert!(!hits(&other_user, Some("outbound|80||reviews")));
}

#[test]
fn invalid_configs_name_the_field() {
    let cases = [
        (
            proto::HttpFault {
                abort: abort(ErrorType::HttpStatus(700), None),
                ..Default::default()
            },
            "abort.http_status:",
        ),
        (
            proto::HttpFault {
                abort: Some(proto::FaultAbort::default()),
                ..Default::default()
            },
            "abort:",
        ),
        (
            proto::HttpFault {
                delay: fixed_delay(0, None),
                ..Default::default()
            },
            "delay.fixed_delay:",
        ),
        (
            proto::HttpFault {
                response_rate_limit: Some(Default::default()),
                ..Default::default()
            },
            "response_rate_limit: not supported",
        ),
        (
            proto::HttpFault {
                delay: fixed_delay(10, percent(1, DenominatorType::Hundred)),
                headers: vec![route::HeaderMatcher {
                    name: "bad header".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "headers[0].name:",
        ),
    ];
    for (p, want) in cases {
        let err = FaultConfig::try_from(&p).unwrap_err();
        assert!(err.starts_with(want), "{err:?} should start with {want:?}");
    }
}

#[test]
fn from_any_unpacks_and_names_the_wrong_type() {
    let p = proto::HttpFault {
        abort: abort(
            ErrorType::HttpStatus(503),
            percent(100, DenominatorType::Hundred),
        ),
        ..Default::default()
    };
    let fault = FaultConfig::from_any(&any::pack(&p)).expect("unpacks");
    assert!(
        fault
            .decide(&stats(), &HeaderMap::new(), None, &mut rng())
            .abort
            .is_some()
    );
    let err = FaultConfig::from_any(&Any {
        type_url: "type.googleapis.com/x.Y".into(),
        value: vec![],
    })
    .unwrap_err();
    assert!(err.contains("HTTPFault"), "{err}");
}

#[test]
fn stats_use_envoy_names() {
    let store = Store::new();
    let stats = FaultStats::new(&store, "outbound_0.0.0.0_80");
    stats.aborts_injected.inc();
    let names: Vec<_> = store.samples().into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"http.outbound_0.0.0.0_80.fault.aborts_injected".to_string()));
    assert!(names.contains(&"http.outbound_0.0.0.0_80.fault.active_faults".to_string()));
}
