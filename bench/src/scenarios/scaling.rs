//! Worker scaling (BENCHMARKS.md target: 2 workers >= 1.8x 1 worker where not client-bound), for
//! Tern and Envoy: HTTP/1.1 saturation (50 connections, 64 B) with one worker alone on core 1,
//! then two workers on cores 0-1.
//!
//! On this 2-core machine the second worker shares core 0 with the generator and the backend, so
//! the 2-worker run is normally bound by the machine, not by the proxy: the ratio row says so
//! (`client_bound`) whenever the generator's core was full with one worker, the one worker did
//! not fill its own core (something else ran there), or both cores were full with two; then only
//! CPU per request is a fair comparison.

use super::{Bench, SATURATION_CONNECTIONS};
use crate::backend;
use crate::cli::Proxy;
use crate::load;
use crate::proxies::{self, Mode};
use std::collections::BTreeMap;

/// Core 0's share used by the harness at which a run counts as client-bound.
const CLIENT_FULL: f64 = 0.9;
/// Busy cores (of 2) at which the machine counts as full.
const MACHINE_FULL: f64 = 1.8;
/// The share of core 1 below which one worker did not saturate (it was held back or displaced).
const WORKER_FULL: f64 = 0.8;

impl Bench {
    /// One repetition of the scaling pair for `proxy`, then the ratio row.
    pub(super) async fn scaling(&mut self, proxy: Proxy, repetition: u32) {
        let mut runs = Vec::new();
        for workers in [1usize, 2] {
            let started =
                proxies::start_workers(proxy, &self.binaries, Mode::Http1, self.http, workers)
                    .await;
            let running = match started {
                Ok(running) => running,
                Err(e) => {
                    self.skip("scaling", proxy, format!("{workers} workers: {e:#}"));
                    return;
                }
            };
            let target = running.listen;
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
            drop(running);
            let cores = if workers == 1 {
                "core 1"
            } else {
                "cores 0-1, shared with the generator"
            };
            let case = format!(
                "saturation, HTTP/1.1, {SATURATION_CONNECTIONS} connections, 64 B, {workers} worker{} ({cores})",
                if workers == 1 { "" } else { "s" }
            );
            self.record("scaling", &case, proxy, repetition, metrics.clone());
            runs.push(metrics);
        }
        let metric = |run: &BTreeMap<String, f64>, name: &str| run.get(name).copied();
        let (one, two) = (&runs[0], &runs[1]);
        let mut m = BTreeMap::new();
        if let (Some(a), Some(b)) = (metric(one, "rps"), metric(two, "rps"))
            && a > 0.0
        {
            m.insert("rps_ratio_2_to_1".to_string(), b / a);
        }
        if let (Some(a), Some(b)) = (metric(one, "cpu_us_per_req"), metric(two, "cpu_us_per_req"))
            && a > 0.0
        {
            m.insert("cpu_ratio_2_to_1".to_string(), b / a);
        }
        let client_full = metric(one, "client_core_util").is_some_and(|u| u >= CLIENT_FULL);
        let worker_short = metric(one, "proxy_core_util").is_none_or(|u| u < WORKER_FULL);
        let machine_full = metric(two, "machine_cores_busy").is_some_and(|u| u >= MACHINE_FULL);
        m.insert(
            "client_bound".into(),
            f64::from(u8::from(client_full || worker_short || machine_full)),
        );
        self.record(
            "scaling",
            "2 workers vs 1, saturation",
            proxy,
            repetition,
            m,
        );
    }

    /// The report's note on how to read the scaling rows, with what this run saw.
    pub(super) fn scaling_note(&mut self) {
        let bound: Vec<String> = self
            .results
            .measurements
            .iter()
            .filter(|m| m.scenario == "scaling" && m.metrics.get("client_bound") == Some(&1.0))
            .map(|m| format!("{} (repetition {})", m.proxy, m.repetition + 1))
            .collect();
        let seen = if bound.is_empty() {
            "In this run no scaling pair hit those limits.".to_string()
        } else {
            format!(
                "Client-bound in this run: {}; their rps ratio measures this machine, not the proxy; compare CPU/request only.",
                bound.join(", ")
            )
        };
        self.results.notes.push(format!(
            "Worker scaling: 1 worker runs alone on core 1; 2 workers run on cores 0-1 and share core 0 with the generator and the backend, so the 2-worker rps is bounded by the machine, not only the proxy. A pair counts as client-bound when, with 1 worker, core 0's harness use reached {CLIENT_FULL} or the worker used less than {WORKER_FULL} of core 1, or when both cores were {MACHINE_FULL}+ busy with 2 workers. {seen}"
        ));
    }
}
