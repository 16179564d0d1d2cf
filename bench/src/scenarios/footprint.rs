//! S9's footprint figures beyond idle RSS: what an idle keep-alive connection costs (every path),
//! and RSS with 1k and 10k clusters pushed over ADS (Tern and Envoy, through S7's control-plane
//! machinery in [`config_churn`]).

use super::{Bench, mib};
use crate::backend;
use crate::cli::Proxy;
use crate::config_churn;
use crate::load::H1Connection;
use crate::measure;
use crate::proxies::Running;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the proxy idles after the connections are up before RSS is read again.
const CONNECTIONS_SETTLE: Duration = Duration::from_secs(2);

impl Bench {
    /// Opens `idle_connections` keep-alive connections to `running`, sends one request on each
    /// in turn (so every connection has its codec state and has been through a request), lets
    /// them idle, and records the RSS delta per connection. The connections close afterwards.
    pub(super) async fn s9_idle_connections(
        &mut self,
        running: &Running,
        proxy: Proxy,
        repetition: u32,
    ) {
        let Some(pgid) = running.pgid() else {
            return;
        };
        let n = self.settings.idle_connections;
        let before = measure::group_rss_kib(pgid);
        let mut connections = Vec::with_capacity(n);
        let mut errors = 0u64;
        for _ in 0..n {
            match H1Connection::connect(running.listen, backend::path_for(64)).await {
                Ok(conn) => connections.push(conn),
                Err(_) => errors += 1,
            }
        }
        for conn in &mut connections {
            let answered =
                tokio::time::timeout(Duration::from_secs(5), conn.header_round_trip("")).await;
            if !matches!(answered, Ok(Ok(_))) {
                errors += 1;
            }
        }
        tokio::time::sleep(CONNECTIONS_SETTLE).await;
        let after = measure::group_rss_kib(pgid);
        let open = connections.len();
        drop(connections);
        let mut metrics = BTreeMap::from([
            ("rss_before_mib".to_string(), mib(before)),
            ("rss_idle_connections_mib".to_string(), mib(after)),
            ("errors".to_string(), errors as f64),
        ]);
        if open > 0 {
            let per = (after as f64 - before as f64) * 1024.0 / open as f64;
            metrics.insert("bytes_per_idle_connection".into(), per);
        }
        let case = format!("{n} idle HTTP/1.1 keep-alive connections, one request each");
        self.record("S9", &case, proxy, repetition, metrics);
    }

    /// RSS with the base ADS config, then with each of the configured cluster counts (one
    /// endpoint each), each on a fresh proxy and control plane.
    pub(super) async fn s9_clusters(&mut self, proxy: Proxy) {
        for clusters in self.settings.s9_clusters.clone() {
            eprintln!(
                "[tern-bench] S9: {} with {clusters} clusters over ADS",
                proxy.name()
            );
            match config_churn::rss_with_clusters(proxy, &self.binaries, self.http, clusters).await
            {
                Ok((base, loaded)) => {
                    let metrics = BTreeMap::from([
                        ("clusters".to_string(), clusters as f64),
                        ("rss_base_mib".to_string(), mib(base)),
                        ("rss_clusters_mib".to_string(), mib(loaded)),
                        (
                            "kib_per_cluster_1ep".to_string(),
                            (loaded as f64 - base as f64) / clusters.max(1) as f64,
                        ),
                    ]);
                    self.record("S9", &clusters_case(clusters), proxy, 0, metrics);
                }
                Err(e) => {
                    self.skip("S9 (clusters)", proxy, format!("{e:#}"));
                    return;
                }
            }
        }
    }
}

/// The case name of S9's RSS with `clusters` clusters (its `clusters` metric says the count).
fn clusters_case(clusters: usize) -> String {
    format!("RSS with {clusters} EDS clusters (1 endpoint each) over ADS")
}
