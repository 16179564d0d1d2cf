//! Envoy's subscription stats: one set per subscription, counted as Envoy's gRPC subscription
//! counts them, so dashboards and alerts written for Envoy read the same numbers from Tern.
//!
//! - `update_attempt` counts the subscription's start and every outcome after it: a response
//!   accepted (`update_success`) or refused (`update_rejected`), a lost stream
//!   (`update_failure`), an initial fetch that timed out (`init_fetch_timeout`).
//! - An accepted response sets `update_time` (ms since the epoch) and records `update_duration`;
//!   LDS, CDS and RDS also set `version` (xxHash64 of the response's version) and `version_text`.
//! - CDS and RDS count `config_reload` (with `config_reload_time_ms`) when the update changed
//!   something; RDS and EDS count `update_empty`; EDS counts `update_no_rebuild` when the hosts did
//!   not change.
//!
//! The sets are `listener_manager.lds.`, `cluster_manager.cds.`, `http.<stat_prefix>.rds.<name>.`
//! (the first connection manager that named the route configuration), `cluster.<name>.` (EDS)
//! and `sds.<name>.`.

use crate::stats::{Counter, Gauge, Histogram, Store, TextReadout};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xxhash_rust::xxh64::xxh64;

/// What an accepted update did, for the stats that depend on it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Outcome {
    /// Something was added, changed or removed (CDS, RDS: `config_reload`).
    pub changed: bool,
    /// The resource was empty (RDS, EDS: `update_empty`).
    pub empty: bool,
}

pub(super) struct SubscriptionStats {
    attempt: Counter,
    success: Counter,
    rejected: Counter,
    failure: Counter,
    update_time: Gauge,
    update_duration: Histogram,
    /// LDS, CDS, RDS.
    versions: Option<VersionStats>,
    /// CDS, RDS: `config_reload` and `config_reload_time_ms`.
    reload: Option<(Counter, Gauge)>,
    /// RDS, EDS.
    empty: Option<Counter>,
    /// EDS.
    no_rebuild: Option<Counter>,
}

struct VersionStats {
    init_fetch_timeout: Counter,
    version: Gauge,
    version_text: TextReadout,
}

impl SubscriptionStats {
    fn new(store: &Store, prefix: &str) -> Self {
        let name = |s: &str| format!("{prefix}.{s}");
        SubscriptionStats {
            attempt: store.counter(&name("update_attempt")),
            success: store.counter(&name("update_success")),
            rejected: store.counter(&name("update_rejected")),
            failure: store.counter(&name("update_failure")),
            update_time: store.gauge(&name("update_time")),
            update_duration: store.histogram(&name("update_duration")),
            versions: None,
            reload: None,
            empty: None,
            no_rebuild: None,
        }
    }

    fn with_versions(mut self, store: &Store, prefix: &str) -> Self {
        self.versions = Some(VersionStats {
            init_fetch_timeout: store.counter(&format!("{prefix}.init_fetch_timeout")),
            version: store.gauge(&format!("{prefix}.version")),
            version_text: store.text(&format!("{prefix}.version_text")),
        });
        self
    }

    fn with_reload(mut self, store: &Store, prefix: &str) -> Self {
        self.reload = Some((
            store.counter(&format!("{prefix}.config_reload")),
            store.gauge(&format!("{prefix}.config_reload_time_ms")),
        ));
        self
    }

    fn with_empty(mut self, store: &Store, prefix: &str) -> Self {
        self.empty = Some(store.counter(&format!("{prefix}.update_empty")));
        self
    }

    /// `listener_manager.lds.*`.
    pub fn lds(store: &Store) -> Self {
        let prefix = "listener_manager.lds";
        Self::new(store, prefix).with_versions(store, prefix)
    }

    /// `cluster_manager.cds.*`.
    pub fn cds(store: &Store) -> Self {
        let prefix = "cluster_manager.cds";
        Self::new(store, prefix)
            .with_versions(store, prefix)
            .with_reload(store, prefix)
    }

    /// `http.<stat_prefix>.rds.<route_config_name>.*`.
    pub fn rds(store: &Store, stat_prefix: &str, route_config: &str) -> Self {
        let prefix = format!("http.{stat_prefix}.rds.{route_config}");
        Self::new(store, &prefix)
            .with_versions(store, &prefix)
            .with_reload(store, &prefix)
            .with_empty(store, &prefix)
    }

    /// `sds.<secret name>.*` (Envoy also has `key_rotation_failed` there, for file watches
    /// Tern does not run: always 0).
    pub fn sds(store: &Store, secret: &str) -> Self {
        let prefix = format!("sds.{secret}");
        store.counter(&format!("{prefix}.key_rotation_failed"));
        Self::new(store, &prefix).with_versions(store, &prefix)
    }

    /// `cluster.<stat_name>.update_*` (EDS).
    pub fn eds(store: &Store, stat_name: &str) -> Self {
        let prefix = format!("cluster.{stat_name}");
        let mut stats = Self::new(store, &prefix).with_empty(store, &prefix);
        stats.no_rebuild = Some(store.counter(&format!("{prefix}.update_no_rebuild")));
        stats
    }

    /// The subscription started (Envoy counts an attempt).
    pub fn started(&self) {
        self.attempt.inc();
    }

    pub fn accepted(&self, version: &str, took: Duration, outcome: Outcome) {
        self.attempt.inc();
        self.success.inc();
        let now = epoch_ms();
        self.update_time.set(now);
        self.update_duration.record_duration(took);
        if let Some(v) = &self.versions {
            // Envoy's gauges are unsigned: the hash's bits, printed as u64.
            v.version.set(xxh64(version.as_bytes(), 0) as i64);
            v.version_text.set(version);
        }
        if outcome.changed
            && let Some((reload, at)) = &self.reload
        {
            reload.inc();
            at.set(now);
        }
        if outcome.empty
            && let Some(empty) = &self.empty
        {
            empty.inc();
        }
        if !outcome.changed
            && let Some(no_rebuild) = &self.no_rebuild
        {
            no_rebuild.inc();
        }
    }

    pub fn rejected(&self) {
        self.attempt.inc();
        self.rejected.inc();
    }

    /// The stream was lost (or could not be opened).
    pub fn lost(&self) {
        self.attempt.inc();
        self.failure.inc();
    }

    pub fn timed_out(&self) {
        self.attempt.inc();
        if let Some(v) = &self.versions {
            v.init_fetch_timeout.inc();
        }
    }
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(store: &Store, name: &str) -> i64 {
        store
            .samples()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} exists"))
            .value
    }

    #[test]
    fn counts_as_envoys_grpc_subscription() {
        let store = Store::new();
        let cds = SubscriptionStats::cds(&store);
        cds.started();
        let changed = Outcome {
            changed: true,
            empty: false,
        };
        cds.accepted("v3", Duration::ZERO, changed);
        cds.rejected();
        cds.accepted("v3", Duration::ZERO, Outcome::default());
        cds.lost();
        let v = |n: &str| value(&store, &format!("cluster_manager.cds.{n}"));
        assert_eq!(v("update_attempt"), 5);
        assert_eq!(v("update_success"), 2);
        assert_eq!(v("update_rejected"), 1);
        assert_eq!(v("update_failure"), 1);
        assert_eq!(v("config_reload"), 1);
        // Envoy 1.40.0 printed this for version_info "v3".
        assert_eq!(v("version") as u64, 8889997608329791741);
        let text = store.text_readouts();
        assert_eq!(text[0].name, "cluster_manager.cds.version_text");
        assert_eq!(text[0].value, "v3");
    }

    #[test]
    fn sds_has_versions_and_key_rotation_failed() {
        let store = Store::new();
        let sds = SubscriptionStats::sds(&store, "default");
        sds.started();
        sds.accepted("7", Duration::ZERO, Outcome::default());
        let v = |n: &str| value(&store, &format!("sds.default.{n}"));
        assert_eq!(v("update_attempt"), 2);
        assert_eq!(v("update_success"), 1);
        assert_eq!(v("key_rotation_failed"), 0);
        assert_eq!(v("init_fetch_timeout"), 0);
        assert_eq!(store.text_readouts()[0].value, "7");
    }

    #[test]
    fn eds_counts_empty_and_no_rebuild() {
        let store = Store::new();
        let eds = SubscriptionStats::eds(&store, "backend");
        eds.accepted(
            "1",
            Duration::ZERO,
            Outcome {
                changed: true,
                empty: true,
            },
        );
        eds.accepted("2", Duration::ZERO, Outcome::default());
        let v = |n: &str| value(&store, &format!("cluster.backend.{n}"));
        assert_eq!(v("update_empty"), 1);
        assert_eq!(v("update_no_rebuild"), 1);
        assert_eq!(v("update_success"), 2);
        assert!(store.text_readouts().is_empty(), "EDS has no version_text");
    }
}
