use super::*;
use crate::stats::Store;

/// A clock the test moves by hand.
#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

struct Fixture {
    detector: Detector,
    clock: Arc<ManualClock>,
    hosts: Vec<HostMonitor>,
    config: OutlierDetection,
}

impl Fixture {
    /// `n` hosts; `max_ejection_percent` 100 unless the test sets it.
    fn new(n: usize, config: OutlierDetection) -> Self {
        let store = Store::new();
        let clock = Arc::new(ManualClock::default());
        Fixture {
            detector: Detector::with_clock(OutlierStats::new(&store, "c"), clock.clone(), 7),
            clock,
            hosts: (0..n).map(|_| HostMonitor::default()).collect(),
            config,
        }
    }

    fn report(&self, host: usize, outcome: Outcome, times: usize) {
        for _ in 0..times {
            self.detector
                .report(&self.config, self.hosts.len(), &self.hosts[host], outcome);
        }
    }

    fn sweep(&self) {
        let refs: Vec<&HostMonitor> = self.hosts.iter().collect();
        self.detector.sweep(&self.config, &refs);
    }

    fn ejected(&self, host: usize) -> bool {
        self.hosts[host].is_ejected()
    }

    fn detected(&self, kind: Kind) -> u64 {
        self.detector.stats.detected(kind).value()
    }

    fn enforced(&self, kind: Kind) -> u64 {
        self.detector.stats.enforced(kind).value()
    }

    /// `total` requests on `host` with `failures` of them 500, spread so no run of failures is long.
    fn traffic(&self, host: usize, total: usize, failures: usize) {
        for i in 0..total {
            // Bresenham-style spread of the failures over the requests.
            let fail = (i + 1) * failures / total > i * failures / total;
            let code = if fail { 500 } else { 200 };
            self.report(host, Outcome::Response(code), 1);
        }
    }
}

fn permissive() -> OutlierDetection {
    OutlierDetection {
        max_ejection_percent: 100,
        ..Default::default()
    }
}

const ERR: Outcome = Outcome::Response(500);
const OK: Outcome = Outcome::Response(200);

#[test]
fn fifth_consecutive_5xx_ejects_and_a_success_restarts_the_count() {
    let f = Fixture::new(3, permissive());
    f.report(0, ERR, 4);
    f.report(0, OK, 1);
    f.report(0, ERR, 4);
    assert!(!f.ejected(0));
    let generation = f.detector.generation();
    f.report(0, ERR, 1);
    assert!(f.ejected(0));
    assert!(f.detector.generation() > generation);
    assert_eq!(f.detected(Kind::Consecutive5xx), 1);
    assert_eq!(f.enforced(Kind::Consecutive5xx), 1);
    assert_eq!(f.detector.stats.ejections_enforced_total.value(), 1);
    assert_eq!(f.detector.stats.ejections_active.value(), 1);
    assert_eq!(f.detector.ejected(), 1);
    // More failures while ejected (in-flight requests) change nothing.
    f.report(0, ERR, 10);
    assert_eq!(f.detected(Kind::Consecutive5xx), 1);
    assert!(!f.ejected(1) && !f.ejected(2));
}

#[test]
fn consecutive_5xx_of_zero_disables_it() {
    let f = Fixture::new(
        3,
        OutlierDetection {
            consecutive_5xx: 0,
            ..permissive()
        },
    );
    f.report(0, ERR, 50);
    assert!(!f.ejected(0));
}

#[test]
fn gateway_failures_count_only_502_503_504() {
    let f = Fixture::new(
        3,
        OutlierDetection {
            consecutive_5xx: 0,
            enforcing_consecutive_gateway_failure: 100,
            ..permissive()
        },
    );
    f.report(0, Outcome::Response(503), 4);
    f.report(0, Outcome::Response(500), 1); // a 5xx, but not a gateway error: restarts the run
    f.report(0, Outcome::Response(502), 4);
    assert!(!f.ejected(0));
    f.report(0, Outcome::Response(504), 1);
    assert!(f.ejected(0));
    assert_eq!(f.detected(Kind::ConsecutiveGatewayFailure), 1);
    assert_eq!(f.enforced(Kind::ConsecutiveGatewayFailure), 1);
    assert_eq!(f.detected(Kind::Consecutive5xx), 0);
}

#[test]
fn gateway_failures_are_detected_but_not_enforced_by_default() {
    let f = Fixture::new(3, permissive());
    f.report(0, Outcome::Response(503), 5);
    // Gateway detection comes first and is not enforced (0%); consecutive 5xx then ejects.
    assert_eq!(f.detected(Kind::ConsecutiveGatewayFailure), 1);
    assert_eq!(f.enforced(Kind::ConsecutiveGatewayFailure), 0);
    assert_eq!(f.enforced(Kind::Consecutive5xx), 1);
    assert!(f.ejected(0));
}

#[test]
fn unsplit_local_origin_failures_count_as_5xx() {
    let f = Fixture::new(3, permissive());
    f.report(0, Outcome::ConnectFailed, 2);
    f.report(0, Outcome::Reset, 1);
    f.report(0, Outcome::Timeout, 1);
    f.report(0, Outcome::ConnectTimeout, 1);
    assert!(f.ejected(0));
    assert_eq!(f.enforced(Kind::Consecutive5xx), 1);
    assert_eq!(f.detected(Kind::ConsecutiveLocalOriginFailure), 0);
    // A tcp_proxy connect counts as a 200.
    f.report(1, Outcome::ConnectFailed, 4);
    f.report(1, Outcome::Connected, 1);
    f.report(1, Outcome::ConnectFailed, 4);
    assert!(!f.ejected(1));
}

#[test]
fn split_local_origin_failures_are_counted_apart_from_http_codes() {
    let f = Fixture::new(
        3,
        OutlierDetection {
            split_external_local_origin_errors: true,
            ..permissive()
        },
    );
    // Four connect failures and four 503s interleaved: neither run reaches five.
    for _ in 0..4 {
        f.report(0, Outcome::ConnectFailed, 1);
        f.report(0, Outcome::Response(503), 1);
    }
    // ...but the 503s only reset the local-origin run by way of the connection having worked.
    assert!(!f.ejected(0));
    f.report(1, Outcome::ConnectFailed, 4);
    f.report(1, Outcome::ConnectTimeout, 1);
    assert!(f.ejected(1));
    assert_eq!(f.enforced(Kind::ConsecutiveLocalOriginFailure), 1);
    assert_eq!(f.detected(Kind::Consecutive5xx), 0);
    // As in Envoy's router, a reset or timeout follows a pool-ready success: never five in a row.
    f.report(2, Outcome::Reset, 10);
    f.report(2, Outcome::Timeout, 10);
    assert!(!f.ejected(2));
}

#[test]
fn success_rate_ejects_below_mean_minus_stdev_times_factor() {
    // Envoy's own example: rates {100, 100, 100, 100, 50}: mean 90, stdev 20, threshold 52.
    let f = Fixture::new(5, permissive());
    for host in 0..4 {
        f.traffic(host, 100, 0);
    }
    f.traffic(4, 100, 50);
    f.sweep();
    assert!(f.ejected(4));
    assert!((0..4).all(|h| !f.ejected(h)));
    assert_eq!(f.detected(Kind::SuccessRate), 1);
    assert_eq!(f.enforced(Kind::SuccessRate), 1);
    assert_eq!(f.hosts[0].success_rate(), 100.0);
    // As in Envoy, the rate is recorded before the ejection decision.
    assert_eq!(f.hosts[4].success_rate(), 50.0);
}

#[test]
fn success_rate_factor_is_in_thousandths() {
    // Four equal hosts and one low one: the low one is always exactly 2 stdev below the mean.
    let rates = |factor| {
        let f = Fixture::new(
            5,
            OutlierDetection {
                success_rate_stdev_factor: factor,
                ..permissive()
            },
        );
        for host in 0..4 {
            f.traffic(host, 100, 0);
        }
        f.traffic(4, 100, 30);
        f.sweep();
        f.ejected(4)
    };
    assert!(rates(1999));
    assert!(!rates(2001));
}

#[test]
fn success_rate_needs_volume_and_enough_hosts() {
    let f = Fixture::new(5, permissive());
    for host in 0..3 {
        f.traffic(host, 100, 0);
    }
    f.traffic(3, 99, 0); // below success_rate_request_volume
    f.traffic(4, 100, 50);
    f.sweep();
    assert!(!f.ejected(4), "only four hosts had enough requests");
    // Windows are per interval: the next sweep sees nothing.
    f.sweep();
    assert_eq!(f.hosts[0].success_rate(), -1.0);
    assert_eq!(f.detected(Kind::SuccessRate), 0);
}

#[test]
fn success_rate_threshold_matches_envoy_example() {
    let hosts: Vec<HostMonitor> = (0..5).map(|_| HostMonitor::default()).collect();
    let rates: Vec<(&HostMonitor, f64)> = hosts
        .iter()
        .zip([50.0, 100.0, 100.0, 100.0, 100.0])
        .collect();
    let threshold = sweep::success_rate_threshold(&rates, 1.9);
    assert!((threshold - 52.0).abs() < 1e-9, "{threshold}");
}

#[test]
fn failure_percentage_ejects_at_the_threshold_when_enforced() {
    let config = OutlierDetection {
        consecutive_5xx: 0,
        enforcing_failure_percentage: 100,
        success_rate_minimum_hosts: 100, // keep success rate out of it
        ..permissive()
    };
    let f = Fixture::new(5, config);
    for host in 0..3 {
        f.traffic(host, 50, 0);
    }
    f.traffic(3, 100, 85); // exactly 85%: ejected (>=)
    f.traffic(4, 100, 84);
    f.sweep();
    assert!(f.ejected(3));
    assert!(!f.ejected(4));
    assert_eq!(f.detected(Kind::FailurePercentage), 1);
    assert_eq!(f.enforced(Kind::FailurePercentage), 1);
    assert_eq!(f.detected(Kind::SuccessRate), 0);
}

#[test]
fn failure_percentage_is_not_enforced_by_default() {
    let f = Fixture::new(
        5,
        OutlierDetection {
            consecutive_5xx: 0,
            success_rate_minimum_hosts: 100,
            ..permissive()
        },
    );
    for host in 0..5 {
        f.traffic(host, 50, 50);
    }
    f.sweep();
    assert_eq!(f.detected(Kind::FailurePercentage), 5);
    assert_eq!(f.enforced(Kind::FailurePercentage), 0);
    assert!((0..5).all(|h| !f.ejected(h)));
}

#[test]
fn local_origin_failure_percentage_uses_the_local_window() {
    let f = Fixture::new(
        5,
        OutlierDetection {
            split_external_local_origin_errors: true,
            consecutive_local_origin_failure: 0,
            enforcing_failure_percentage_local_origin: 100,
            success_rate_minimum_hosts: 100,
            ..permissive()
        },
    );
    for host in 0..5 {
        f.report(host, OK, 50);
    }
    f.report(2, Outcome::ConnectFailed, 50);
    f.sweep();
    // Host 2: 50 local successes (the responses) and 50 failures: 50%, below 85.
    assert!(!f.ejected(2));
    for host in [0, 1, 3, 4] {
        f.report(host, OK, 50);
    }
    f.report(2, Outcome::ConnectFailed, 60);
    f.report(2, OK, 10); // 10 of 70: 86% failed
    f.sweep();
    assert!(f.ejected(2));
    assert_eq!(f.enforced(Kind::LocalOriginFailurePercentage), 1);
    assert_eq!(f.detected(Kind::FailurePercentage), 0);
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let f = Fixture::new(
        10,
        OutlierDetection {
            max_ejection_percent: 20,
            ..Default::default()
        },
    );
    for host in 0..3 {
        f.report(host, ERR, 5);
    }
    assert!(f.ejected(0) && f.ejected(1));
    assert!(!f.ejected(2));
    assert_eq!(f.detector.stats.ejections_overflow.value(), 1);
    assert_eq!(f.detected(Kind::Consecutive5xx), 3);
    assert_eq!(f.enforced(Kind::Consecutive5xx), 2);
    assert_eq!(f.detector.stats.ejections_active.value(), 2);
}

#[test]
fn default_ten_percent_ejects_nothing_from_small_clusters_unless_always_eject_one_host() {
    // 100 * (0 + 1) / 3 = 33% > 10%: Envoy ejects nothing.
    let f = Fixture::new(3, OutlierDetection::default());
    f.report(0, ERR, 5);
    assert!(!f.ejected(0));
    assert_eq!(f.detector.stats.ejections_overflow.value(), 1);

    let f = Fixture::new(
        3,
        OutlierDetection {
            always_eject_one_host: true,
            ..Default::default()
        },
    );
    f.report(0, ERR, 5);
    f.report(1, ERR, 5);
    assert!(f.ejected(0));
    assert!(!f.ejected(1), "only the first ejection ignores the cap");
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let base = Duration::from_secs(10);
    let f = Fixture::new(
        3,
        OutlierDetection {
            base_ejection_time: base,
            max_ejection_time: Duration::from_secs(25),
            ..permissive()
        },
    );
    // Expected (ejection length, back-off after ejecting): 10 s x1, 20 s x2, 25 s (cap) x3, 25 s x4, 25 s x4.
    for (seconds, backoff) in [(10, 1), (20, 2), (25, 3), (25, 4), (25, 4)] {
        f.report(0, ERR, 5);
        assert!(f.ejected(0));
        assert_eq!(f.hosts[0].backoff(), backoff);
        f.clock
            .advance(Duration::from_secs(seconds) - Duration::from_millis(1));
        f.sweep();
        assert!(f.ejected(0), "still ejected just before {seconds} s");
        f.clock.advance(Duration::from_millis(1));
        f.sweep();
        assert!(!f.ejected(0), "back after {seconds} s");
    }
    assert_eq!(f.detector.stats.ejections_active.value(), 0);
}

#[test]
fn backoff_decays_once_per_interval_spent_admitted() {
    let f = Fixture::new(
        3,
        OutlierDetection {
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(1),
            ..permissive()
        },
    );
    f.report(0, ERR, 5);
    f.clock.advance(Duration::from_secs(1));
    f.sweep();
    f.report(0, ERR, 5);
    assert_eq!(f.hosts[0].backoff(), 2);
    f.clock.advance(Duration::from_secs(2));
    f.sweep(); // un-ejected now: no decay in the same sweep
    assert!(!f.ejected(0));
    assert_eq!(f.hosts[0].backoff(), 2);
    f.clock.advance(Duration::from_millis(999));
    f.sweep();
    assert_eq!(f.hosts[0].backoff(), 2, "not yet a full interval admitted");
    f.clock.advance(Duration::from_millis(1));
    f.sweep();
    assert_eq!(f.hosts[0].backoff(), 1);
    f.clock.advance(Duration::from_secs(1));
    f.sweep();
    f.clock.advance(Duration::from_secs(1));
    f.sweep();
    assert_eq!(f.hosts[0].backoff(), 0);
    // A fresh ejection starts from one base time again.
    f.report(0, ERR, 5);
    assert_eq!(f.hosts[0].backoff(), 1);
}

#[test]
fn readmission_restarts_the_consecutive_counts() {
    let f = Fixture::new(3, permissive());
    f.report(0, ERR, 5);
    f.report(0, ERR, 3); // in flight while ejected
    f.clock.advance(Duration::from_secs(30));
    f.sweep();
    assert!(!f.ejected(0));
    assert_eq!(f.detector.stats.ejections_active.value(), 0);
    f.report(0, ERR, 4);
    assert!(!f.ejected(0), "the count restarted at re-admission");
    f.report(0, ERR, 1);
    assert!(f.ejected(0));
}

#[test]
fn jitter_extends_the_ejection_by_at_most_its_maximum() {
    let f = Fixture::new(
        3,
        OutlierDetection {
            max_ejection_time_jitter: Duration::from_millis(500),
            ..permissive()
        },
    );
    f.report(0, ERR, 5);
    let jitter = f.hosts[0].jitter_ms.load(Ordering::SeqCst);
    assert!(jitter <= 500);
    f.clock.advance(Duration::from_millis(30_000 + jitter - 1));
    f.sweep();
    assert!(f.ejected(0));
    f.clock.advance(Duration::from_millis(1));
    f.sweep();
    assert!(!f.ejected(0));
}

#[test]
fn enforcement_is_a_draw_per_detection() {
    let f = Fixture::new(
        400,
        OutlierDetection {
            enforcing_consecutive_5xx: 25,
            ..permissive()
        },
    );
    for host in 0..400 {
        f.report(host, ERR, 5);
    }
    let enforced = f.enforced(Kind::Consecutive5xx);
    assert_eq!(f.detected(Kind::Consecutive5xx), 400);
    assert!((60..140).contains(&enforced), "{enforced} of 400 at 25%");
    assert_eq!(f.detector.ejected() as u64, enforced);
}

#[test]
fn retired_hosts_release_their_ejection_and_cannot_be_ejected() {
    let f = Fixture::new(3, permissive());
    f.report(0, ERR, 5);
    let generation = f.detector.generation();
    f.detector.retire(&f.hosts[0]);
    assert!(!f.ejected(0));
    assert_eq!(f.detector.ejected(), 0);
    assert_eq!(f.detector.stats.ejections_active.value(), 0);
    f.detector.retire(&f.hosts[1]);
    f.report(1, ERR, 5);
    assert!(!f.ejected(1));
    assert_eq!(f.detector.ejected(), 0);
    assert_eq!(f.detector.generation(), generation);
}

/// A STATIC round-robin cluster over ports 1 and 2 with outlier detection, built as the manager
/// builds it.
fn two_host_cluster(panic_threshold: f64) -> Arc<crate::snapshot::ClusterEntry> {
    let endpoint = |port: u16| serde_json::json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}});
    let proto: xds_client::pb::envoy::config::cluster::v3::Cluster = xds_client::proto_json::from_value(
        serde_json::json!({
            "name": "c", "lb_policy": "ROUND_ROBIN",
            "common_lb_config": {"healthy_panic_threshold": {"value": panic_threshold}},
            "outlier_detection": {"max_ejection_percent": 100},
            "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [endpoint(1), endpoint(2)]}]}
        }),
        xds_client::proto_json::ReadOptions::default(),
    )
    .unwrap();
    let store = Store::new();
    crate::snapshot::SnapshotBuilder {
        store: &store,
        workers: 1,
    }
    .cluster(None, &Arc::new(proto), false)
    .unwrap()
}

fn picked_ports(cluster: &Arc<crate::snapshot::ClusterEntry>, picks: usize) -> Vec<u16> {
    let worker = crate::upstream::WorkerClusters::default();
    let mut ports: Vec<u16> = (0..picks)
        .map(|_| {
            worker
                .pick(cluster, None, &[], 0, None)
                .ok()
                .unwrap()
                .address
                .port()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[test]
fn ejected_host_leaves_the_balancer_until_readmitted() {
    let cluster = two_host_cluster(50.0);
    let worker = crate::upstream::WorkerClusters::default();
    let pick = || worker.pick(&cluster, None, &[], 0, None).ok().unwrap();
    assert_eq!(picked_ports(&cluster, 4), [1, 2]);
    let bad = pick().host.clone();
    for _ in 0..5 {
        cluster.report_outlier(&bad.outlier, Outcome::Response(500));
    }
    assert!(cluster.is_ejected(&bad));
    // One of two healthy is 50%: not below the 50% panic threshold, so the ejected host is out.
    for _ in 0..10 {
        assert_ne!(pick().address, bad.endpoint.address.socket().unwrap());
    }
    let detector = cluster.outlier.as_ref().unwrap();
    detector.uneject(&bad.outlier, 0);
    assert_eq!(picked_ports(&cluster, 4), [1, 2]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(pick().address.port());
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        [1, 2],
        "the same worker's balancer took the host back"
    );
}

#[test]
fn ejections_below_the_panic_threshold_put_every_host_back_in_play() {
    let cluster = two_host_cluster(60.0);
    let worker = crate::upstream::WorkerClusters::default();
    let bad = worker
        .pick(&cluster, None, &[], 0, None)
        .ok()
        .unwrap()
        .host
        .clone();
    for _ in 0..5 {
        cluster.report_outlier(&bad.outlier, Outcome::Response(500));
    }
    assert!(cluster.is_ejected(&bad));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            worker
                .pick(&cluster, None, &[], 0, None)
                .ok()
                .unwrap()
                .address
                .port(),
        );
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        [1, 2],
        "50% healthy < 60%: panic, Envoy balances over all hosts"
    );
    assert!(cluster.stats.lb_healthy_panic.value() > 0);
}
