//! The scenarios themselves: for each repetition and each path, start the path's proxy, run the
//! scenario's cases through it, record one [`Measurement`] per case, stop the proxy.
//!
//! Paths alternate inside a repetition, so a noisy minute on the shared machine spreads over all
//! of them instead of landing on one. A path that cannot run (binary missing, config refused)
//! becomes a [`Skip`] with the reason; the run goes on.

use crate::backend::{self, Sink};
use crate::callgrind;
use crate::cli::{Cli, Proxy, Scenario, Settings};
use crate::config_churn;
use crate::grpc;
use crate::load::{self, H2Call, Outcome, Window};
use crate::measure;
use crate::proxies::{self, Binaries, Mode, Running};
use crate::report::{Measurement, Results, Skip};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

mod crosscheck;
mod footprint;
mod more;
mod scaling;

/// S1/S2 saturation: closed-loop connections (HTTP/1.1) or streams (h2c), 64 B bodies.
const SATURATION_CONNECTIONS: usize = 50;
const H2_SATURATION_STREAMS: usize = 50;
/// S1 (one point of its matrix), S2, S3, S5 fixed rate: Istio's point (1000 rps, 16
/// connections, 1 KB).
const FIXED_RATE: f64 = 1000.0;
const FIXED_CONNECTIONS: usize = 16;

struct Bench {
    settings: Settings,
    binaries: Binaries,
    http: SocketAddr,
    /// The gRPC echo backend (S3).
    grpc: SocketAddr,
    sink: Sink,
    istio_bootstrap: PathBuf,
    results: Results,
}

pub async fn run(cli: &Cli, command: String) -> anyhow::Result<Results> {
    let settings = cli.settings();
    let binaries = Binaries::locate(
        cli.tern_bin.as_deref(),
        cli.envoy_bin.as_deref(),
        cli.pingora_bin.as_deref(),
    );
    let mut results = Results {
        date: utc_now(),
        command,
        machine: measure::machine(),
        settings: serde_json::json!({
            "scenarios": settings.scenarios,
            "proxies": settings.proxies,
            "repeat": settings.repeat,
            "duration_s": settings.duration.as_secs_f64(),
            "warmup_s": settings.warmup.as_secs_f64(),
            "idle_settle_s": settings.idle_settle.as_secs_f64(),
            "s7_clusters": settings.churn.clusters,
            "s7_pushes": settings.churn.pushes,
            "s8_route_counts": settings.route_sizes,
            "s1_points_rps_connections": settings.s1_points,
            "s9_clusters": settings.s9_clusters,
            "s9_idle_connections": settings.idle_connections,
        }),
        ..Results::default()
    };
    results.notes.push(
        "Layout: each proxy alone on core 1 (taskset -c 1, one worker; the scaling scenario's 2 workers get cores 0-1); generator and backend in this process on core 0, outside load tools (wrk, fortio, h2load) on core 0 too. Latency percentiles: hdrhistogram crate."
            .into(),
    );
    for proxy in &settings.proxies {
        if let Some(version) = binaries.version(*proxy) {
            results.versions.insert(proxy.name().into(), version);
        }
        if let Ok(Some(path)) = binaries.get(*proxy) {
            results.versions.insert(
                format!("{} binary", proxy.name()),
                path.display().to_string(),
            );
        }
    }
    let mut bench = Bench {
        http: backend::start_http().await?,
        grpc: grpc::start_backend().await?,
        sink: backend::start_sink().await?,
        settings,
        binaries,
        istio_bootstrap: cli.istio_bootstrap.clone(),
        results,
    };
    bench.run_all().await;
    let mut results = bench.results;
    results.finish();
    Ok(results)
}

impl Bench {
    async fn run_all(&mut self) {
        let proxies: Vec<Proxy> = self.settings.proxies.clone();
        let runnable: Vec<Proxy> = proxies
            .into_iter()
            .filter(|p| match self.binaries.get(*p) {
                Ok(_) => true,
                Err(reason) => {
                    self.skip("all", *p, reason);
                    false
                }
            })
            .collect();
        let has = |s| self.settings.scenarios.contains(&s);
        let scaling = has(Scenario::Scaling);
        let (s1, s2, s3, s4, s5, s6, s7, s8, s9, cg) = (
            has(Scenario::S1),
            has(Scenario::S2),
            has(Scenario::S3),
            has(Scenario::S4),
            has(Scenario::S5),
            has(Scenario::S6),
            has(Scenario::S7),
            has(Scenario::S8),
            has(Scenario::S9),
            has(Scenario::Callgrind),
        );
        // The scenarios run per repetition and path (callgrind and S9's Istio bootstrap run after).
        let repeated = s1 || s2 || s3 || s4 || s5 || s6 || s7 || s8 || s9 || scaling;
        for repetition in 0..self.settings.repeat {
            for &proxy in runnable.iter().filter(|_| repeated) {
                eprintln!(
                    "[tern-bench] repetition {}/{}: {}",
                    repetition + 1,
                    self.settings.repeat,
                    proxy.name()
                );
                if s1 || (s9 && proxy != Proxy::Direct) {
                    self.s1(proxy, repetition, s1, s9).await;
                }
                if s2 {
                    self.s2(proxy, repetition).await;
                }
                if s3 {
                    self.s3(proxy, repetition).await;
                }
                if s4 {
                    self.s4(proxy, repetition).await;
                }
                if s5 {
                    self.s5(proxy, repetition).await;
                }
                if s6 {
                    self.s6(proxy, repetition).await;
                }
                if s7 && matches!(proxy, Proxy::Tern | Proxy::Envoy) {
                    self.s7(proxy, repetition).await;
                }
                if s8 {
                    self.s8(proxy, repetition).await;
                }
                if scaling && matches!(proxy, Proxy::Tern | Proxy::Envoy) {
                    self.scaling(proxy, repetition).await;
                }
            }
        }
        if s9 {
            for proxy in [Proxy::Tern, Proxy::Envoy] {
                if runnable.contains(&proxy) {
                    self.s9_istio(proxy).await;
                    self.s9_clusters(proxy).await;
                }
            }
        }
        if scaling {
            self.scaling_note();
        }
        if cg {
            for proxy in [Proxy::Tern, Proxy::Envoy] {
                if runnable.contains(&proxy) {
                    self.callgrind(proxy).await;
                }
            }
        }
    }

    fn skip(&mut self, scenario: &str, proxy: Proxy, reason: impl Into<String>) {
        let reason = reason.into();
        eprintln!(
            "[tern-bench] skipped {} in {scenario}: {reason}",
            proxy.name()
        );
        self.results.skipped.push(Skip {
            scenario: scenario.into(),
            proxy: proxy.name().into(),
            reason,
        });
    }

    fn record(
        &mut self,
        scenario: &str,
        case: &str,
        proxy: Proxy,
        repetition: u32,
        metrics: BTreeMap<String, f64>,
    ) {
        eprintln!(
            "[tern-bench]   {scenario} {case} {}: {}",
            proxy.name(),
            metrics
                .iter()
                .filter(|(k, _)| [
                    "rps",
                    "cpu_us_per_req",
                    "p99_us",
                    "gbit_s",
                    "cpu_s_per_gb",
                    "idle_rss_mib",
                    "apply_p50_ms",
                    "apply_p99_ms",
                    "kib_per_cluster",
                    "bytes_per_endpoint",
                    "route_scale_ratio",
                    "ir_per_req",
                    "bytes_per_idle_connection",
                    "rss_clusters_mib",
                    "rps_ratio_2_to_1",
                    "errors"
                ]
                .contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        self.results.measurements.push(Measurement {
            scenario: scenario.into(),
            case: case.into(),
            proxy: proxy.name().into(),
            repetition,
            metrics,
        });
    }

    async fn start(
        &mut self,
        scenario: &str,
        proxy: Proxy,
        mode: Mode,
        upstream: SocketAddr,
    ) -> Option<Running> {
        match proxies::start(proxy, &self.binaries, mode, upstream).await {
            Ok(running) => Some(running),
            Err(e) => {
                self.skip(scenario, proxy, format!("{e:#}"));
                None
            }
        }
    }

    /// S1: HTTP/1.1 saturation and the fixed-rate points; S9's idle RSS and RSS per idle
    /// connection with the same one-route config.
    async fn s1(&mut self, proxy: Proxy, repetition: u32, s1: bool, s9: bool) {
        let Some(running) = self.start("S1", proxy, Mode::Http1, self.http).await else {
            return;
        };
        if s9 && let Some(pgid) = running.pgid() {
            // Every path gets the same settle.
            tokio::time::sleep(self.settings.idle_settle).await;
            let rss = mib(measure::group_rss_kib(pgid));
            let metrics = BTreeMap::from([("idle_rss_mib".to_string(), rss)]);
            self.record(
                "S9",
                "idle, one-route HTTP config",
                proxy,
                repetition,
                metrics,
            );
            self.s9_idle_connections(&running, proxy, repetition).await;
        }
        if !s1 {
            return;
        }
        let target = running.listen;
        let case = format!("saturation, HTTP/1.1, {SATURATION_CONNECTIONS} connections, 64 B");
        let metrics = self
            .point(&running, move |w| {
                load::h1_closed(
                    target,
                    SATURATION_CONNECTIONS,
                    backend::path_for(64).into(),
                    w,
                )
            })
            .await;
        self.record("S1", &case, proxy, repetition, metrics);
        // The fixed-rate matrix; the direct path runs every point too, so added latency is
        // per point.
        for (rate, connections) in self.settings.s1_points.clone() {
            let case = s1_fixed_case(rate, connections);
            let mut metrics = self
                .point(&running, move |w| {
                    load::h1_open(target, connections, rate, 1024, w)
                })
                .await;
            // RSS at Istio's point only, so the RSS plot keeps one "after load" bar per path.
            if (rate, connections) == (FIXED_RATE, FIXED_CONNECTIONS)
                && let Some(pgid) = running.pgid()
            {
                metrics.insert(
                    "rss_after_load_mib".into(),
                    mib(measure::group_rss_kib(pgid)),
                );
            }
            self.record("S1", &case, proxy, repetition, metrics);
        }
        if repetition == 0 && self.settings.wrk {
            self.wrk(&running, proxy).await;
        }
        if repetition == 0 && self.settings.fortio && matches!(proxy, Proxy::Tern | Proxy::Direct) {
            self.fortio(&running, proxy).await;
        }
    }

    /// S2: h2c over one connection: saturation (many streams) and fixed rate.
    async fn s2(&mut self, proxy: Proxy, repetition: u32) {
        let Some(running) = self.start("S2", proxy, Mode::H2c, self.http).await else {
            return;
        };
        let target = running.listen;
        let case = format!("saturation, h2c, 1 connection, {H2_SATURATION_STREAMS} streams, 64 B");
        let metrics = self
            .point(&running, move |w| {
                load::h2_closed(target, H2_SATURATION_STREAMS, H2Call::get(target, 64), w)
            })
            .await;
        self.record("S2", &case, proxy, repetition, metrics);
        let case = format!("{FIXED_RATE} rps, h2c, 1 connection, 1 KB");
        let metrics = self
            .point(&running, move |w| {
                load::h2_open(target, FIXED_RATE, H2Call::get(target, 1024), w)
            })
            .await;
        self.record("S2", &case, proxy, repetition, metrics);
        if repetition == 0 && self.settings.h2load {
            self.h2load(&running, proxy).await;
        }
    }

    /// S4: one TCP stream of bulk data through the proxy into the backend's sink.
    async fn s4(&mut self, proxy: Proxy, repetition: u32) {
        let Some(running) = self.start("S4", proxy, Mode::Tcp, self.sink.address).await else {
            return;
        };
        let target = running.listen;
        let metrics = self
            .point(&running, move |w| load::tcp_bulk(target, w))
            .await;
        self.record("S4", "TCP bulk, 1 stream", proxy, repetition, metrics);
    }

    /// S5 without TLS (Tern has no mTLS yet): two proxies of the same kind in a row, the
    /// client's sidecar and the server's, both on the proxy core, at Istio's point. CPU is the
    /// pair's; added latency is against the direct path at the same rate.
    async fn s5(&mut self, proxy: Proxy, repetition: u32) {
        let Some(server) = self.start("S5", proxy, Mode::Http1, self.http).await else {
            return;
        };
        let Some(client) = self.start("S5", proxy, Mode::Http1, server.listen).await else {
            return;
        };
        let target = client.listen;
        let case = format!(
            "sidecar pair, plaintext, {FIXED_RATE} rps, HTTP/1.1, {FIXED_CONNECTIONS} connections, 1 KB"
        );
        let metrics = self
            .point_over(&[&client, &server], move |w| {
                load::h1_open(target, FIXED_CONNECTIONS, FIXED_RATE, 1024, w)
            })
            .await;
        self.record("S5", &case, proxy, repetition, metrics);
    }

    /// S7: config churn over ADS from the test control plane (see [`config_churn`]).
    async fn s7(&mut self, proxy: Proxy, repetition: u32) {
        let size = self.settings.churn;
        match config_churn::run(proxy, &self.binaries, self.http, size).await {
            Ok(outcome) => {
                let clusters = size.clusters;
                let case =
                    format!("memory, {clusters} EDS clusters (1 then 10 endpoints each) over ADS");
                self.record("S7", &case, proxy, repetition, outcome.memory);
                let case = format!(
                    "push-to-apply, route change at 10/s, {clusters} clusters x 10 endpoints, 200 rps load"
                );
                self.record("S7", &case, proxy, repetition, outcome.apply);
            }
            Err(e) => self.skip("S7", proxy, format!("{e:#}")),
        }
    }

    /// Instructions per request under callgrind (see [`callgrind`]): the script runs at least
    /// twice, so the report shows whether the figure reproduces.
    async fn callgrind(&mut self, proxy: Proxy) {
        let case = format!(
            "callgrind, {} sequential HTTP/1.1 keep-alive requests, 64 B, after warm-up",
            callgrind::REQUESTS
        );
        for run in 0..self.settings.repeat.max(2) {
            eprintln!("[tern-bench] callgrind run {}: {}", run + 1, proxy.name());
            let keep = self.settings.callgrind_keep.clone();
            if let Some(dir) = &keep {
                let _ = std::fs::create_dir_all(dir);
            }
            let keep = keep.as_deref().map(|d| (d, run));
            match callgrind::run(proxy, &self.binaries, self.http, keep).await {
                Ok(metrics) => self.record("callgrind", &case, proxy, run, metrics),
                Err(e) => {
                    self.skip("callgrind", proxy, format!("{e:#}"));
                    return;
                }
            }
        }
    }

    /// S9 with Istio's rendered sidecar bootstrap (no pilot-agent, so xDS never answers).
    async fn s9_istio(&mut self, proxy: Proxy) {
        if !self.istio_bootstrap.is_file() {
            let reason = format!("no Istio bootstrap at {}", self.istio_bootstrap.display());
            self.skip("S9", proxy, reason);
            return;
        }
        let started = proxies::start_istio(
            proxy,
            &self.binaries,
            &self.istio_bootstrap,
            self.settings.idle_settle,
        )
        .await;
        match started {
            Ok(running) => {
                let rss = running
                    .pgid()
                    .map_or(0.0, |p| mib(measure::group_rss_kib(p)));
                let metrics = BTreeMap::from([("idle_rss_mib".to_string(), rss)]);
                let case = "idle, Istio default bootstrap, xDS unreachable";
                self.record("S9", case, proxy, 0, metrics);
            }
            Err(e) => self.skip("S9 (Istio bootstrap)", proxy, format!("{e:#}")),
        }
    }

    /// Runs one load against `running` and reads the proxy's CPU across the load's window.
    async fn point<F, Fut>(&self, running: &Running, load: F) -> BTreeMap<String, f64>
    where
        F: FnOnce(Window) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        self.point_over(&[running], load).await
    }

    /// [`Bench::point`] with the proxy CPU summed over several proxies (a pair).
    async fn point_over<F, Fut>(&self, proxies: &[&Running], load: F) -> BTreeMap<String, f64>
    where
        F: FnOnce(Window) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let window = Window::after(self.settings.warmup, self.settings.duration);
        let task = tokio::spawn(load(window));
        tokio::time::sleep_until(window.start).await;
        let pgids: Option<Vec<u32>> = proxies.iter().map(|p| p.pgid()).collect();
        let cpu = |pgids: &Option<Vec<u32>>| {
            pgids.as_ref().map(|ids| {
                ids.iter()
                    .map(|&id| measure::group_cpu_seconds(id))
                    .sum::<f64>()
            })
        };
        let proxy0 = cpu(&pgids);
        let own0 = measure::own_cpu_seconds();
        let machine0 = measure::machine_busy_seconds();
        let bytes0 = load::read_counter(&self.sink.received);
        tokio::time::sleep_until(window.end).await;
        let proxy1 = cpu(&pgids);
        let own1 = measure::own_cpu_seconds();
        let machine1 = measure::machine_busy_seconds();
        let bytes1 = load::read_counter(&self.sink.received);
        let outcome = task.await.unwrap_or(Outcome {
            completed: 0,
            errors: 1,
            latency: None,
        });
        let secs = window.seconds();
        let mut m = BTreeMap::new();
        m.insert("errors".to_string(), outcome.errors as f64);
        m.insert("client_core_util".into(), (own1 - own0) / secs);
        m.insert("machine_cores_busy".into(), (machine1 - machine0) / secs);
        let proxy_cpu = proxy0.zip(proxy1).map(|(a, b)| b - a);
        if let Some(cpu) = proxy_cpu {
            m.insert("proxy_core_util".into(), cpu / secs);
        }
        let bytes = bytes1.saturating_sub(bytes0);
        if bytes > 0 {
            let gb = bytes as f64 / 1e9;
            m.insert("gbit_s".into(), gb * 8.0 / secs);
            if let Some(cpu) = proxy_cpu {
                m.insert("cpu_s_per_gb".into(), cpu / gb);
            }
        }
        if outcome.completed > 0 {
            m.insert("rps".into(), outcome.completed as f64 / secs);
            if let Some(cpu) = proxy_cpu {
                m.insert(
                    "cpu_us_per_req".into(),
                    cpu * 1e6 / outcome.completed as f64,
                );
            }
        }
        if let Some(h) = outcome.latency.filter(|h| !h.is_empty()) {
            for (name, q) in [
                ("p50_us", 0.5),
                ("p90_us", 0.9),
                ("p99_us", 0.99),
                ("p999_us", 0.999),
            ] {
                m.insert(name.into(), h.value_at_quantile(q) as f64);
            }
        }
        m
    }
}

/// The case name of one S1 fixed-rate point.
fn s1_fixed_case(rate: f64, connections: usize) -> String {
    format!("{rate} rps, HTTP/1.1, {connections} connections, 1 KB")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
