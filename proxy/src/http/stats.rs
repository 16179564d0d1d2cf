//! Envoy's HTTP stat names: `http.<stat_prefix>.*` for a connection manager and the
//! `cluster.<name>.upstream_rq_*` family the router counts, including per-status-code counters
//! created on first use.

use crate::stats::{Counter, Gauge, Store};
use std::sync::OnceLock;

/// `http.<stat_prefix>.*`.
#[derive(Debug)]
pub struct HttpStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_http1_total: Counter,
    pub downstream_cx_http2_total: Counter,
    pub downstream_rq_total: Counter,
    pub downstream_rq_active: Gauge,
    pub downstream_rq_http1_total: Counter,
    pub downstream_rq_http2_total: Counter,
    pub downstream_rq_completed: Counter,
    pub downstream_rq_too_large: Counter,
    pub downstream_rq_timeout: Counter,
    pub downstream_rq_idle_timeout: Counter,
    pub downstream_rq_max_duration_reached: Counter,
    pub downstream_rq_rx_reset: Counter,
    pub downstream_rq_ws_on_non_ws_route: Counter,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_redirect: Counter,
    pub rq_direct_response: Counter,
    pub rq_total: Counter,
    pub classes: CodeClasses,
}

/// `<prefix>_1xx` .. `<prefix>_5xx`.
#[derive(Debug, Clone)]
pub struct CodeClasses([Counter; 5]);

impl CodeClasses {
    fn new(store: &Store, prefix: &str) -> Self {
        CodeClasses(std::array::from_fn(|i| {
            store.counter(&format!("{prefix}_{}xx", i + 1))
        }))
    }

    pub fn record(&self, status: u16) {
        if let Some(c) = self.0.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }
}

impl HttpStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        let name = |stat: &str| format!("http.{prefix}.{stat}");
        HttpStats {
            downstream_cx_total: store.counter(&name("downstream_cx_total")),
            downstream_cx_active: store.gauge(&name("downstream_cx_active")),
            downstream_cx_destroy: store.counter(&name("downstream_cx_destroy")),
            downstream_cx_http1_total: store.counter(&name("downstream_cx_http1_total")),
            downstream_cx_http2_total: store.counter(&name("downstream_cx_http2_total")),
            downstream_rq_total: store.counter(&name("downstream_rq_total")),
            downstream_rq_active: store.gauge(&name("downstream_rq_active")),
            downstream_rq_http1_total: store.counter(&name("downstream_rq_http1_total")),
            downstream_rq_http2_total: store.counter(&name("downstream_rq_http2_total")),
            downstream_rq_completed: store.counter(&name("downstream_rq_completed")),
            downstream_rq_too_large: store.counter(&name("downstream_rq_too_large")),
            downstream_rq_timeout: store.counter(&name("downstream_rq_timeout")),
            downstream_rq_idle_timeout: store.counter(&name("downstream_rq_idle_timeout")),
            downstream_rq_max_duration_reached: store
                .counter(&name("downstream_rq_max_duration_reached")),
            downstream_rq_rx_reset: store.counter(&name("downstream_rq_rx_reset")),
            downstream_rq_ws_on_non_ws_route: store
                .counter(&name("downstream_rq_ws_on_non_ws_route")),
            no_route: store.counter(&name("no_route")),
            no_cluster: store.counter(&name("no_cluster")),
            rq_redirect: store.counter(&name("rq_redirect")),
            rq_direct_response: store.counter(&name("rq_direct_response")),
            rq_total: store.counter(&name("rq_total")),
            classes: CodeClasses::new(store, &name("downstream_rq")),
        }
    }
}

/// `cluster.<name>.upstream_rq_*`, made with the cluster's other stats.
#[derive(Debug, Clone)]
pub struct UpstreamRequestStats {
    store: Store,
    prefix: String,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_pending_failure_eject: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_per_try_idle_timeout: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_rq_tx_reset: Counter,
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_maintenance_mode: Counter,
    pub upstream_cx_http1_total: Counter,
    pub upstream_cx_http2_total: Counter,
    pub upstream_cx_max_requests: Counter,
    pub upstream_cx_idle_timeout: Counter,
    pub upstream_cx_destroy_local_with_active_rq: Counter,
    pub upstream_cx_destroy_remote_with_active_rq: Counter,
    pub circuit_breakers_rq_open: Gauge,
    pub circuit_breakers_rq_pending_open: Gauge,
    pub circuit_breakers_rq_retry_open: Gauge,
    /// Requests currently retrying (the `max_retries` circuit breaker), across workers.
    pub retries_active: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub classes: CodeClasses,
    /// `upstream_rq_<code>`, created the first time a code is seen.
    codes: OnceLock<Box<[OnceLock<Counter>]>>,
}

impl UpstreamRequestStats {
    pub fn new(store: &Store, stat_name: &str) -> Self {
        let prefix = format!("cluster.{stat_name}");
        let name = |stat: &str| format!("{prefix}.{stat}");
        UpstreamRequestStats {
            store: store.clone(),
            upstream_rq_total: store.counter(&name("upstream_rq_total")),
            upstream_rq_active: store.gauge(&name("upstream_rq_active")),
            upstream_rq_completed: store.counter(&name("upstream_rq_completed")),
            upstream_rq_pending_total: store.counter(&name("upstream_rq_pending_total")),
            upstream_rq_pending_active: store.gauge(&name("upstream_rq_pending_active")),
            upstream_rq_pending_overflow: store.counter(&name("upstream_rq_pending_overflow")),
            upstream_rq_pending_failure_eject: store
                .counter(&name("upstream_rq_pending_failure_eject")),
            upstream_rq_timeout: store.counter(&name("upstream_rq_timeout")),
            upstream_rq_per_try_timeout: store.counter(&name("upstream_rq_per_try_timeout")),
            upstream_rq_per_try_idle_timeout: store
                .counter(&name("upstream_rq_per_try_idle_timeout")),
            upstream_rq_rx_reset: store.counter(&name("upstream_rq_rx_reset")),
            upstream_rq_tx_reset: store.counter(&name("upstream_rq_tx_reset")),
            upstream_rq_retry: store.counter(&name("upstream_rq_retry")),
            upstream_rq_retry_success: store.counter(&name("upstream_rq_retry_success")),
            upstream_rq_retry_overflow: store.counter(&name("upstream_rq_retry_overflow")),
            upstream_rq_retry_limit_exceeded: store
                .counter(&name("upstream_rq_retry_limit_exceeded")),
            upstream_rq_retry_backoff_exponential: store
                .counter(&name("upstream_rq_retry_backoff_exponential")),
            upstream_rq_maintenance_mode: store.counter(&name("upstream_rq_maintenance_mode")),
            upstream_cx_http1_total: store.counter(&name("upstream_cx_http1_total")),
            upstream_cx_http2_total: store.counter(&name("upstream_cx_http2_total")),
            upstream_cx_max_requests: store.counter(&name("upstream_cx_max_requests")),
            upstream_cx_idle_timeout: store.counter(&name("upstream_cx_idle_timeout")),
            upstream_cx_destroy_local_with_active_rq: store
                .counter(&name("upstream_cx_destroy_local_with_active_rq")),
            upstream_cx_destroy_remote_with_active_rq: store
                .counter(&name("upstream_cx_destroy_remote_with_active_rq")),
            circuit_breakers_rq_open: store.gauge(&name("circuit_breakers.default.rq_open")),
            circuit_breakers_rq_pending_open: store
                .gauge(&name("circuit_breakers.default.rq_pending_open")),
            circuit_breakers_rq_retry_open: store
                .gauge(&name("circuit_breakers.default.rq_retry_open")),
            retries_active: Default::default(),
            classes: CodeClasses::new(store, &name("upstream_rq")),
            codes: OnceLock::new(),
            prefix,
        }
    }

    /// Counts a response from upstream: its class and its exact code.
    pub fn record_status(&self, status: u16) {
        self.classes.record(status);
        let Some(index) = status
            .checked_sub(100)
            .map(usize::from)
            .filter(|i| *i < 500)
        else {
            return;
        };
        let codes = self
            .codes
            .get_or_init(|| (0..500).map(|_| OnceLock::new()).collect());
        codes[index]
            .get_or_init(|| {
                self.store
                    .counter(&format!("{}.upstream_rq_{status}", self.prefix))
            })
            .inc();
    }
}
