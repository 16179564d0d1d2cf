//! `route-lookup`: how long Tern takes to pick a virtual host and a route, as tables grow.
//!
//! Three shapes of route configuration, each with 1, 256 and 4096 entries:
//! - `vhosts`: that many virtual hosts with one exact domain each (Istio's outbound port route
//!   tables look like this), looked up by authority;
//! - `prefix-segment`: one virtual host with prefix routes `/svc-<i>/` (a whole first path
//!   segment, which the route index can key on);
//! - `prefix-partial`: prefix routes `/svc-<i>` (ending inside the segment, so they could match
//!   longer segments: not indexable, a linear scan as in Envoy).
//!
//! Route numbers are zero-padded (`/svc-0042`) so no route is a prefix of another and each
//! target really is found at its own position.
//!
//! For each, the first, middle and last entry and a miss are looked up in a tight loop for a few
//! hundred milliseconds with `std::time::Instant`. Results print as a table and, with
//! `--json PATH`, as JSON.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tern::config::route::{RequestView, RouteConfig};
use xds_client::pb::envoy::config::route::v3 as proto;

const SIZES: [usize; 3] = [1, 256, 4096];
const RUN_FOR: Duration = Duration::from_millis(300);

#[derive(Clone, Copy)]
enum Shape {
    Vhosts,
    PrefixSegment,
    PrefixPartial,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Vhosts => "vhosts",
            Shape::PrefixSegment => "prefix-segment",
            Shape::PrefixPartial => "prefix-partial",
        }
    }

    /// The route configuration with `n` entries.
    fn config(self, n: usize) -> anyhow::Result<RouteConfig> {
        let route = |name: String, prefix: String| proto::Route {
            name,
            r#match: Some(proto::RouteMatch {
                path_specifier: Some(proto::route_match::PathSpecifier::Prefix(prefix)),
                ..Default::default()
            }),
            action: Some(proto::route::Action::Route(proto::RouteAction {
                cluster_specifier: Some(proto::route_action::ClusterSpecifier::Cluster(
                    "backend".into(),
                )),
                ..Default::default()
            })),
            ..Default::default()
        };
        let virtual_hosts = match self {
            Shape::Vhosts => (0..n)
                .map(|i| proto::VirtualHost {
                    name: format!("vh-{i}"),
                    domains: vec![domain(i)],
                    routes: vec![route(format!("r-{i}"), "/".into())],
                    ..Default::default()
                })
                .collect(),
            Shape::PrefixSegment | Shape::PrefixPartial => {
                let slash = if matches!(self, Shape::PrefixSegment) {
                    "/"
                } else {
                    ""
                };
                vec![proto::VirtualHost {
                    name: "all".into(),
                    domains: vec!["*".into()],
                    routes: (0..n)
                        .map(|i| route(format!("r-{i}"), format!("/svc-{i:04}{slash}")))
                        .collect(),
                    ..Default::default()
                }]
            }
        };
        let config = proto::RouteConfiguration {
            name: "bench".into(),
            virtual_hosts,
            ..Default::default()
        };
        Ok(RouteConfig::try_from(&config)?)
    }

    /// (authority, path) of a request for entry `i`, or for no entry.
    fn request(self, entry: Option<usize>) -> (String, String) {
        match (self, entry) {
            (Shape::Vhosts, Some(i)) => (domain(i), "/productpage".into()),
            (Shape::Vhosts, None) => ("unknown.example.com".into(), "/productpage".into()),
            (_, Some(i)) => ("bench".into(), format!("/svc-{i:04}/api/v1/items?id=7")),
            (_, None) => ("bench".into(), "/nothing/here".into()),
        }
    }
}

fn domain(i: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local:8080", i % 7)
}

struct Measurement {
    shape: &'static str,
    size: usize,
    target: &'static str,
    found: bool,
    ns_per_lookup: f64,
}

/// Runs lookups for `RUN_FOR` and reports the mean time of one.
fn measure(config: &RouteConfig, authority: &str, path: &str) -> (bool, f64) {
    let method = http::Method::GET;
    let headers = http::HeaderMap::new();
    let request = RequestView {
        method: &method,
        scheme: "http",
        authority,
        path,
        headers: &headers,
    };
    let lookup = |random: u64| {
        config
            .route(black_box(&request), black_box(random))
            .is_some()
    };
    let found = lookup(0);
    for i in 0..10_000 {
        black_box(lookup(i));
    }
    const BATCH: u64 = 1_000;
    let (mut lookups, start) = (0u64, Instant::now());
    loop {
        for i in 0..BATCH {
            black_box(lookup(i));
        }
        lookups += BATCH;
        if start.elapsed() >= RUN_FOR {
            break;
        }
    }
    (found, start.elapsed().as_nanos() as f64 / lookups as f64)
}

fn main() -> anyhow::Result<()> {
    let json_path = std::env::args().skip_while(|a| a != "--json").nth(1);
    let mut results = Vec::new();
    println!(
        "{:<15} {:>6} {:<7} {:>6} {:>12} {:>16}",
        "shape", "size", "target", "found", "ns/lookup", "lookups/s"
    );
    for shape in [Shape::Vhosts, Shape::PrefixSegment, Shape::PrefixPartial] {
        for size in SIZES {
            let config = shape.config(size)?;
            let targets = [
                ("first", Some(0)),
                ("middle", Some(size / 2)),
                ("last", Some(size - 1)),
                ("miss", None),
            ];
            for (target, entry) in targets {
                let (authority, path) = shape.request(entry);
                let (found, ns) = measure(&config, &authority, &path);
                println!(
                    "{:<15} {:>6} {:<7} {:>6} {:>12.1} {:>16.0}",
                    shape.name(),
                    size,
                    target,
                    found,
                    ns,
                    1e9 / ns
                );
                results.push(Measurement {
                    shape: shape.name(),
                    size,
                    target,
                    found,
                    ns_per_lookup: ns,
                });
            }
        }
    }
    if let Some(path) = json_path {
        let rows: Vec<_> = results
            .iter()
            .map(|m| {
                serde_json::json!({
                    "shape": m.shape,
                    "size": m.size,
                    "target": m.target,
                    "found": m.found,
                    "ns_per_lookup": m.ns_per_lookup,
                    "lookups_per_second": 1e9 / m.ns_per_lookup,
                })
            })
            .collect();
        std::fs::write(
            &path,
            serde_json::to_string_pretty(
                &serde_json::json!({"scenario": "route-lookup", "results": rows}),
            )?,
        )?;
        println!("wrote {path}");
    }
    Ok(())
}
