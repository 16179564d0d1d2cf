//! S3 gRPC unary, S6 connection churn and S8 route-table scale: the scenarios added after the
//! first set, kept apart so `scenarios.rs` stays readable. They share its [`Bench`] and its
//! `point` measurement (proxy CPU over the load's window, percentiles for open loops).

use super::{Bench, FIXED_RATE, H2_SATURATION_STREAMS, SATURATION_CONNECTIONS};
use crate::cli::Proxy;
use crate::load::{self, H2Call};
use crate::proxies::{self, Mode};
use std::collections::BTreeMap;

/// S6: clients opening a connection per request at saturation.
const CHURN_CLIENTS: usize = 16;
/// S6 fixed rate: new connections (each carrying one request) per second.
const CHURN_RATE: f64 = 1000.0;

impl Bench {
    /// S3: gRPC unary over one h2c connection to the tonic echo backend, h2c to the upstream
    /// for every proxy: saturation (50 streams, 64 B) and 1000 calls/s (1 KB).
    pub(super) async fn s3(&mut self, proxy: Proxy, repetition: u32) {
        let Some(running) = self.start("S3", proxy, Mode::Grpc, self.grpc).await else {
            return;
        };
        let target = running.listen;
        let case =
            format!("saturation, gRPC unary, 1 connection, {H2_SATURATION_STREAMS} streams, 64 B");
        let call = H2Call::grpc(target, 64);
        let metrics = self
            .point(&running, move |w| {
                load::h2_closed(target, H2_SATURATION_STREAMS, call, w)
            })
            .await;
        self.record("S3", &case, proxy, repetition, metrics);
        let case = format!("{FIXED_RATE} rps, gRPC unary, 1 connection, 1 KB");
        let call = H2Call::grpc(target, 1024);
        let metrics = self
            .point(&running, move |w| {
                load::h2_open(target, FIXED_RATE, call, w)
            })
            .await;
        self.record("S3", &case, proxy, repetition, metrics);
    }

    /// S6: plaintext connection churn, one request per connection (`Connection: close`, 64 B):
    /// a fixed rate of new connections, then saturation. CPU per request is per
    /// connection + request here.
    pub(super) async fn s6(&mut self, proxy: Proxy, repetition: u32) {
        let Some(running) = self.start("S6", proxy, Mode::Http1, self.http).await else {
            return;
        };
        let target = running.listen;
        let case = format!("{CHURN_RATE} connections/s, HTTP/1.1 Connection: close, 64 B");
        let metrics = self
            .point(&running, move |w| {
                load::h1_churn_open(target, CHURN_RATE, w)
            })
            .await;
        self.record("S6", &case, proxy, repetition, metrics);
        let case = format!("saturation, HTTP/1.1 Connection: close, {CHURN_CLIENTS} clients, 64 B");
        let metrics = self
            .point(&running, move |w| {
                load::h1_churn_closed(target, CHURN_CLIENTS, w)
            })
            .await;
        self.record("S6", &case, proxy, repetition, metrics);
    }

    /// S8: route tables of growing size (prefix routes `/svc-NNNN/`, Envoy/Tern routes, nginx
    /// `location` blocks, haproxy `use_backend` rules), HTTP/1.1 saturation with requests
    /// matching the first and the last route; then the CPU-per-request ratio of the largest
    /// table's last route to the one-route table.
    pub(super) async fn s8(&mut self, proxy: Proxy, repetition: u32) {
        if proxy == Proxy::Direct {
            return;
        }
        let sizes = self.settings.route_sizes.clone();
        let mut cpu = BTreeMap::new();
        for &n in &sizes {
            let Some(running) = self.start("S8", proxy, Mode::Routes(n), self.http).await else {
                return;
            };
            let positions: &[(&str, usize)] = if n > 1 {
                &[("first", 0), ("last", n - 1)]
            } else {
                &[("first", 0)]
            };
            for &(which, index) in positions {
                let target = running.listen;
                let path = proxies::route_path(index);
                let metrics = self
                    .point(&running, move |w| {
                        load::h1_closed(target, SATURATION_CONNECTIONS, path, w)
                    })
                    .await;
                if let Some(v) = metrics.get("cpu_us_per_req") {
                    cpu.insert((n, which), *v);
                }
                let case = format!(
                    "saturation, HTTP/1.1, {SATURATION_CONNECTIONS} connections, 64 B, {n} routes, matching the {which}"
                );
                self.record("S8", &case, proxy, repetition, metrics);
            }
        }
        let largest = sizes.iter().copied().max().unwrap_or(1);
        let last = if largest > 1 { "last" } else { "first" };
        if let (Some(big), Some(one)) = (cpu.get(&(largest, last)), cpu.get(&(1, "first"))) {
            let case = format!("CPU/request, {largest} routes matching the last vs 1 route");
            let metrics = BTreeMap::from([("route_scale_ratio".to_string(), big / one)]);
            self.record("S8", &case, proxy, repetition, metrics);
        }
    }
}
