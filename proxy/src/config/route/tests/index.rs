//! The route index must pick exactly the route a linear scan picks.

use super::*;
use crate::config::matcher::HeaderMatcher;
use crate::config::route::index::RouteIndex;
use http::Method;
use proptest::prelude::*;
use regex::Regex;

/// Path pieces chosen to collide: shared prefixes, segment boundaries, case, `;`, `?`, `#`.
const PIECES: &[&str] = &["a", "ab", "A", "svc-1", "svc-10", "", "x;p", "b"];

fn path_from(parts: &[usize], trailing_slash: bool) -> String {
    let mut p: String = parts.iter().map(|&i| format!("/{}", PIECES[i])).collect();
    if p.is_empty() || trailing_slash {
        p.push('/');
    }
    p
}

fn path_rule() -> impl Strategy<Value = PathMatch> {
    let parts = || prop::collection::vec(0..PIECES.len(), 0..3);
    prop_oneof![
        (parts(), any::<bool>()).prop_map(|(p, slash)| PathMatch::Prefix(path_from(&p, slash))),
        (parts(), any::<bool>(), 0usize..3).prop_map(|(p, slash, cut)| {
            // Prefixes that end inside a segment, too.
            let mut s = path_from(&p, slash);
            s.truncate(s.len().saturating_sub(cut).max(1));
            PathMatch::Prefix(s)
        }),
        (parts(), any::<bool>()).prop_map(|(p, slash)| PathMatch::Path(path_from(&p, slash))),
        prop::collection::vec(0..PIECES.len(), 1..3).prop_map(|p| {
            let s = path_from(&p, false);
            PathMatch::PathSeparatedPrefix(s.trim_end_matches('/').to_string())
        }),
        Just(PathMatch::Regex(Regex::new("^(?:/a(/.*)?)$").unwrap())),
        Just(PathMatch::Regex(
            Regex::new("^(?:/svc-[0-9]+/.*)$").unwrap()
        )),
        Just(PathMatch::Connect),
    ]
}

fn canary_header() -> HeaderMatcher {
    let proto = xds_client::pb::envoy::config::route::v3::HeaderMatcher {
        name: "x-canary".into(),
        header_match_specifier: Some(
            xds_client::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier::PresentMatch(true),
        ),
        ..Default::default()
    };
    HeaderMatcher::try_from(&proto).unwrap()
}

fn route_strategy(ignore_params: bool) -> impl Strategy<Value = RouteMatch> {
    (
        path_rule(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u32..100),
    )
        .prop_map(
            move |(path, case_sensitive, needs_header, percent)| RouteMatch {
                path,
                case_sensitive,
                headers: if needs_header {
                    vec![canary_header()]
                } else {
                    vec![]
                },
                query_parameters: vec![],
                grpc: false,
                runtime_fraction: percent.map(|numerator| Fraction {
                    numerator,
                    denominator: 100,
                }),
                ignore_path_parameters: ignore_params,
            },
        )
}

fn request_strategy() -> impl Strategy<Value = (String, bool, bool, u64)> {
    let suffix = prop_oneof![Just(""), Just("?q=/a"), Just("#f"), Just(";j=1"), Just("/")];
    (
        prop::collection::vec(0..PIECES.len(), 0..4),
        suffix,
        any::<bool>(),
        any::<bool>(),
        0u64..200,
    )
        .prop_map(|(parts, suffix, connect, canary, random)| {
            let path = if connect && parts.is_empty() {
                String::new()
            } else {
                format!("{}{suffix}", path_from(&parts, false))
            };
            (path, connect, canary, random)
        })
}

fn table(matchers: Vec<RouteMatch>) -> Vec<Route> {
    matchers
        .into_iter()
        .enumerate()
        .map(|(i, matcher)| Route {
            name: i.to_string(),
            matcher,
            action: Action::DirectResponse {
                status: http::StatusCode::OK,
                body: None,
            },
            headers: HeaderOps::default(),
            per_filter_config: PerFilterConfig::default(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn indexed_lookup_agrees_with_linear_scan(
        (ignore_params, matchers) in any::<bool>().prop_flat_map(|ignore| {
            (Just(ignore), prop::collection::vec(route_strategy(ignore), 0..40))
        }),
        requests in prop::collection::vec(request_strategy(), 1..16),
    ) {
        let routes = table(matchers);
        let index = RouteIndex::build_always(&routes, ignore_params);
        for (path, connect, canary, random) in requests {
            let mut req = TestRequest::get("a", &path);
            if connect {
                req = req.method(Method::CONNECT);
            }
            if canary {
                req = req.header("x-canary", "1");
            }
            let view = req.view();
            let linear = routes.iter().find(|r| r.matcher.matches(&view, random));
            let indexed = index.find(&routes, &view, random);
            let (linear, indexed) = (linear.map(|r| &r.name), indexed.map(|r| &r.name));
            prop_assert_eq!(indexed, linear, "path {:?} connect {} canary {}", path, connect, canary);
        }
    }
}

#[test]
fn large_virtual_hosts_are_indexed_and_small_ones_are_not() {
    let many: String = (0..20)
        .map(|i| {
            format!(
                "- {{name: r{i}, match: {{prefix: /svc-{i}/}}, direct_response: {{status: 200}}}}\n"
            )
        })
        .collect();
    let cfg = routes(&many);
    assert!(cfg.virtual_hosts[0].index.is_some());
    assert_eq!(selected(&cfg, &get("/svc-13/x")), Some("r13"));
    assert_eq!(selected(&cfg, &get("/svc-20/x")), None);
    let few = routes("- {name: r, match: {prefix: /}, direct_response: {status: 200}}");
    assert!(few.virtual_hosts[0].index.is_none());
}
