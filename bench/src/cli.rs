//! `tern-bench` flags: which scenarios, which proxies, how long and how often, where to write.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The scenarios of BENCHMARKS.md this harness runs so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
pub enum Scenario {
    /// HTTP/1.1 keep-alive: saturation (50 connections, 64 B), then fixed rates with 1 KB bodies:
    /// 200/1000/2000 rps at 4/16/100 connections (only 1000 rps at 16 with --quick).
    #[value(name = "S1")]
    S1,
    /// h2c, one connection, many streams: saturation and 1000 rps (1 KB).
    #[value(name = "S2")]
    S2,
    /// gRPC unary to a tonic echo backend, h2c both sides: saturation and 1000 calls/s.
    #[value(name = "S3")]
    S3,
    /// TCP bulk, one stream: CPU-seconds per GB.
    #[value(name = "S4")]
    S4,
    /// A sidecar pair in a row (client -> proxy -> proxy -> backend), both on the proxy core, at
    /// 1000 rps over 16 connections with 1 KB: plaintext until Tern has mTLS.
    #[value(name = "S5")]
    S5,
    /// Connection churn (plaintext, `Connection: close`): 1000 connections/s and saturation.
    #[value(name = "S6")]
    S6,
    /// Config churn over ADS (Tern and Envoy): route push-to-apply latency under load, and RSS
    /// per cluster and per endpoint.
    #[value(name = "S7")]
    S7,
    /// Route-table scale: 1, 16, 256, 4096 prefix routes, first vs last match, at saturation.
    #[value(name = "S8")]
    S8,
    /// Instructions per request under `valgrind --tool=callgrind` (Tern, and Envoy if asked),
    /// a fixed script run at least twice to show the figure is reproducible. Not in the default
    /// list: it is slow.
    #[value(name = "callgrind")]
    Callgrind,
    /// Footprint: idle RSS after start (one-route config, Istio's rendered bootstrap), RSS per
    /// idle keep-alive connection, and (Tern and Envoy) RSS with 1k and 10k clusters over ADS.
    #[value(name = "S9")]
    S9,
    /// Worker scaling (Tern and Envoy): HTTP/1.1 saturation with 1 worker on core 1, then 2
    /// workers on cores 0-1 (shared with the generator). Not in --quick's default list.
    #[value(name = "scaling")]
    Scaling,
}

/// The scenarios run when `--scenario` is not given (`scaling` only outside --quick).
const DEFAULT_SCENARIOS: &[Scenario] = &[
    Scenario::S1,
    Scenario::S2,
    Scenario::S3,
    Scenario::S4,
    Scenario::S5,
    Scenario::S6,
    Scenario::S7,
    Scenario::S8,
    Scenario::S9,
    Scenario::Scaling,
];

/// The paths measured when `--proxy` is not given (`pingora` only outside --quick).
const DEFAULT_PROXIES: &[Proxy] = &[
    Proxy::Direct,
    Proxy::Tern,
    Proxy::Envoy,
    Proxy::Nginx,
    Proxy::Haproxy,
    Proxy::Pingora,
];

/// A path under test: a proxy, or no proxy at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proxy {
    Direct,
    Tern,
    Envoy,
    Nginx,
    Haproxy,
    /// pingora's reverse-proxy example (bench/pingora-proxy, built by scripts/install-pingora.sh).
    Pingora,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Direct => "direct",
            Proxy::Tern => "tern",
            Proxy::Envoy => "envoy",
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
            Proxy::Pingora => "pingora",
        }
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tern-bench",
    about = "Tern against Envoy, nginx, haproxy, pingora and no proxy, side by side in one run"
)]
pub struct Cli {
    /// A short smoke run: 1 repetition, 1 s per point, 2 s idle settle for S9.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run (default S1,S2,S3,S4,S5,S6,S7,S8,S9,scaling; without scaling with --quick).
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Paths to measure (default direct,tern,envoy,nginx,haproxy,pingora; without pingora with
    /// --quick).
    #[arg(long, value_delimiter = ',')]
    pub proxy: Vec<Proxy>,
    /// Repetitions of every point (default 3; 1 with --quick).
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Seconds measured per point, after a warm-up (default 10; 2 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write the results as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the Markdown report here.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// The tern binary (default: $TERN_BIN, else `tern` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub tern_bin: Option<PathBuf>,
    /// The Envoy binary (default: $TERN_ENVOY_BIN, else .cache/envoy-venv's).
    #[arg(long, value_name = "PATH")]
    pub envoy_bin: Option<PathBuf>,
    /// The pingora comparator (default: $TERN_PINGORA_BIN, else .cache/bin/pingora-proxy).
    #[arg(long, value_name = "PATH")]
    pub pingora_bin: Option<PathBuf>,
    /// Istio's rendered sidecar bootstrap for S9.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/work/shared/fixtures/istio/xds/default_golden.json"
    )]
    pub istio_bootstrap: PathBuf,
    /// Skip the wrk cross-check of the in-tree generator (S1 saturation).
    #[arg(long)]
    pub no_wrk: bool,
    /// Skip the fortio cross-check of the in-tree generator (S1 at 1000 rps, tern and direct).
    #[arg(long)]
    pub no_fortio: bool,
    /// Skip the h2load cross-check of the in-tree generator (S2 saturation).
    #[arg(long)]
    pub no_h2load: bool,
    /// callgrind: copy each run's request dump here (for `callgrind_annotate`).
    #[arg(long, value_name = "DIR")]
    pub callgrind_keep: Option<PathBuf>,
    /// S7: EDS clusters pushed besides the benchmark's own (default 1000; 100 with --quick).
    #[arg(long)]
    pub clusters: Option<usize>,
    /// S9: cluster counts for RSS vs clusters, Tern and Envoy (default 1000,10000; 1000 with
    /// --quick).
    #[arg(long, value_delimiter = ',')]
    pub rss_clusters: Vec<usize>,
    /// S7: route pushes timed, at 10 per second (default 100; 10 with --quick).
    #[arg(long)]
    pub pushes: Option<usize>,
}

/// The run's settings once defaults are applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scenarios: Vec<Scenario>,
    pub proxies: Vec<Proxy>,
    pub repeat: u32,
    pub duration: Duration,
    pub warmup: Duration,
    /// How long a proxy idles before S9 reads its idle RSS: longer than Tern keeps its proto
    /// descriptor pool after start-up (`xds_client::proto_json::POOL_IDLE`, 10 s), so the
    /// reading is the steady idle state; `--quick` only checks that the reading works (2 s).
    pub idle_settle: Duration,
    pub wrk: bool,
    pub fortio: bool,
    pub h2load: bool,
    /// S1's fixed-rate points: (requests per second, connections), 1 KB bodies.
    pub s1_points: Vec<(f64, usize)>,
    /// S9: cluster counts pushed over ADS for RSS vs clusters (Tern and Envoy).
    pub s9_clusters: Vec<usize>,
    /// S9: idle keep-alive connections opened for RSS per connection.
    pub idle_connections: usize,
    pub churn: crate::config_churn::Size,
    /// S8's route-table sizes (1, 16, 256, 4096; 1 and 4096 with --quick).
    pub route_sizes: Vec<usize>,
    /// Where callgrind's request dumps are kept, if anywhere.
    pub callgrind_keep: Option<PathBuf>,
}

impl Cli {
    pub fn settings(&self) -> Settings {
        let mut scenarios = self.scenario.clone();
        if scenarios.is_empty() {
            scenarios = DEFAULT_SCENARIOS
                .iter()
                .copied()
                .filter(|s| !self.quick || *s != Scenario::Scaling)
                .collect();
        }
        scenarios.sort();
        scenarios.dedup();
        let mut proxies = self.proxy.clone();
        if proxies.is_empty() {
            proxies = DEFAULT_PROXIES
                .iter()
                .copied()
                .filter(|p| !self.quick || *p != Proxy::Pingora)
                .collect();
        }
        proxies.sort();
        proxies.dedup();
        let seconds = self.duration.unwrap_or(if self.quick { 1.0 } else { 10.0 });
        let duration = Duration::from_secs_f64(seconds.max(0.2));
        Settings {
            scenarios,
            proxies,
            repeat: self.repeat.unwrap_or(if self.quick { 1 } else { 3 }).max(1),
            duration,
            warmup: if self.quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            idle_settle: Duration::from_secs(if self.quick { 2 } else { 12 }),
            wrk: !self.no_wrk,
            fortio: !self.no_fortio,
            h2load: !self.no_h2load,
            s1_points: if self.quick {
                vec![(1000.0, 16)]
            } else {
                [200.0, 1000.0, 2000.0]
                    .into_iter()
                    .flat_map(|rate| [4, 16, 100].map(|c| (rate, c)))
                    .collect()
            },
            s9_clusters: if !self.rss_clusters.is_empty() {
                self.rss_clusters.clone()
            } else if self.quick {
                vec![1000]
            } else {
                vec![1000, 10_000]
            },
            idle_connections: if self.quick { 200 } else { 1000 },
            churn: crate::config_churn::Size {
                clusters: self
                    .clusters
                    .unwrap_or(if self.quick { 100 } else { 1000 })
                    .max(1),
                pushes: self
                    .pushes
                    .unwrap_or(if self.quick { 10 } else { 100 })
                    .max(1),
            },
            route_sizes: if self.quick {
                vec![1, 4096]
            } else {
                vec![1, 16, 256, 4096]
            },
            callgrind_keep: self.callgrind_keep.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Cli::parse_from(std::iter::once("tern-bench").chain(args.iter().copied())).settings()
    }

    #[test]
    fn quick_leaves_out_pingora_scaling_and_most_of_the_s1_matrix() {
        let quick = settings(&["--quick"]);
        assert!(!quick.proxies.contains(&Proxy::Pingora));
        assert!(!quick.scenarios.contains(&Scenario::Scaling));
        assert_eq!(quick.s1_points, [(1000.0, 16)]);
        assert_eq!(quick.s9_clusters, [1000]);

        let full = settings(&[]);
        assert_eq!(
            full.proxies,
            [
                Proxy::Direct,
                Proxy::Tern,
                Proxy::Envoy,
                Proxy::Nginx,
                Proxy::Haproxy,
                Proxy::Pingora
            ]
        );
        assert!(full.scenarios.contains(&Scenario::Scaling));
        assert!(!full.scenarios.contains(&Scenario::Callgrind));
        assert_eq!(full.s1_points.len(), 9);
        for point in [(200.0, 4), (1000.0, 16), (2000.0, 100)] {
            assert!(full.s1_points.contains(&point), "{point:?}");
        }
        assert_eq!(full.s9_clusters, [1000, 10_000]);
    }

    #[test]
    fn explicit_lists_win_over_the_defaults() {
        let s = settings(&[
            "--quick",
            "--proxy",
            "pingora,direct",
            "--scenario",
            "scaling",
        ]);
        assert_eq!(s.proxies, [Proxy::Direct, Proxy::Pingora]);
        assert_eq!(s.scenarios, [Scenario::Scaling]);
    }
}
