use super::*;
use serde_json::json;
use xds_client::proto_json::{ReadOptions, from_value};

fn cluster(value: serde_json::Value) -> Result<Cluster, ConfigError> {
    let proto: proto::Cluster =
        from_value(value, ReadOptions::default()).expect("valid proto JSON");
    Cluster::try_from(&proto)
}

fn endpoint(port: u16, extra: serde_json::Value) -> serde_json::Value {
    let mut e = json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}});
    if let (Some(obj), serde_json::Value::Object(more)) = (e.as_object_mut(), extra) {
        obj.extend(more);
    }
    e
}

#[test]
fn static_cluster_gets_envoy_defaults() {
    let c = cluster(json!({"name": "b", "load_assignment": {"cluster_name": "b", "endpoints": [{"lb_endpoints": [endpoint(80, json!({}))]}]}}))
        .unwrap();
    assert_eq!(c.discovery, Discovery::Static);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.lb.policy, LbPolicy::RoundRobin);
    assert_eq!(c.lb.panic_threshold, 50.0);
    assert_eq!(c.lb.overprovisioning_factor, 140);
    assert_eq!(c.circuit_breakers, CircuitBreakers::default());
    assert_eq!(c.load_assignment.endpoints[0].weight, 1);
    assert_eq!(c.load_assignment.endpoints[0].health, HostHealth::Healthy);
    assert_eq!(c.stat_name, "b");
}

#[test]
fn weights_priorities_health_and_localities_convert() {
    let c = cluster(json!({"name": "b", "lb_policy": "LEAST_REQUEST", "load_assignment": {"cluster_name": "b",
        "policy": {"overprovisioning_factor": 200},
        "endpoints": [
            {"lb_endpoints": [endpoint(1, json!({"load_balancing_weight": 3})), endpoint(2, json!({"health_status": "DRAINING"}))]},
            {"priority": 1, "load_balancing_weight": 7, "lb_endpoints": [endpoint(3, json!({"health_status": "DEGRADED"}))]}
        ]}}))
    .unwrap();
    let eps = &c.load_assignment.endpoints;
    assert_eq!(
        eps.iter()
            .map(|e| (e.weight, e.priority, e.health))
            .collect::<Vec<_>>(),
        [
            (3, 0, HostHealth::Healthy),
            (1, 0, HostHealth::Draining),
            (1, 1, HostHealth::Degraded)
        ]
    );
    assert_eq!(c.load_assignment.locality_weights, [vec![0], vec![7]]);
    assert_eq!(c.lb.overprovisioning_factor, 200);
    assert_eq!(
        c.lb.policy,
        LbPolicy::LeastRequest {
            choice_count: 2,
            active_request_bias: 1.0
        }
    );
}

#[test]
fn original_dst_with_bind_config_like_istio_inbound() {
    let c = cluster(
        json!({"name": "inbound|8080||", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
        "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}}}),
    )
    .unwrap();
    assert_eq!(c.discovery, Discovery::OriginalDst);
    assert_eq!(c.bind_source, Some("127.0.0.6:0".parse().unwrap()));
}

#[test]
fn rejections_name_the_field() {
    let cases = [
        (
            json!({"name": "x", "type": "ORIGINAL_DST"}),
            "cluster \"x\": lb_policy: ORIGINAL_DST clusters require CLUSTER_PROVIDED",
        ),
        (
            json!({"name": "x", "lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65536}}),
            "cluster \"x\": lb_config: maglev: table size 65536 is not a prime number",
        ),
        (
            json!({"name": "x", "load_assignment": {"cluster_name": "x", "endpoints": [{"lb_endpoints": [endpoint(1, json!({"load_balancing_weight": 0}))]}]}}),
            "cluster_load_assignment \"x\": load_assignment.endpoints[0].lb_endpoints[0]: load_balancing_weight must be at least 1",
        ),
        (
            json!({"name": "x", "load_assignment": {"cluster_name": "x", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "backend.local", "port_value": 80}}}}]}]}}),
            "cluster_load_assignment \"x\": load_assignment.endpoints[0].lb_endpoints[0]: malformed IP address: \"backend.local\"",
        ),
        (json!({"name": ""}), "cluster \"\": name: must not be empty"),
    ];
    for (input, expected) in cases {
        assert_eq!(cluster(input).unwrap_err().to_string(), expected);
    }
}

#[test]
fn dns_cluster_accepts_names_and_logical_needs_one_host() {
    let named = json!({"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": 80}}}});
    let c = cluster(json!({"name": "d", "type": "STRICT_DNS", "dns_refresh_rate": "2s",
        "load_assignment": {"cluster_name": "d", "endpoints": [{"lb_endpoints": [named.clone()]}]}}))
    .unwrap();
    assert_eq!(
        c.discovery,
        Discovery::StrictDns(DnsSettings {
            refresh: Duration::from_secs(2),
            respect_ttl: false,
            family: DnsFamily::Auto,
            resolvers: Vec::new(),
        })
    );
    assert_eq!(
        c.load_assignment.endpoints[0].address,
        Address::Named {
            host: "localhost".into(),
            port: 80
        }
    );
    let err = cluster(json!({"name": "d", "type": "LOGICAL_DNS",
        "load_assignment": {"cluster_name": "d", "endpoints": [{"lb_endpoints": [named.clone(), named]}]}}))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cluster \"d\": load_assignment: LOGICAL_DNS clusters must have a single host"
    );
}

#[test]
fn circuit_breakers_read_default_priority() {
    let c = cluster(json!({"name": "b", "circuit_breakers": {"thresholds": [
        {"priority": "HIGH", "max_connections": 1},
        {"max_connections": 7, "max_retries": 9}]}}))
    .unwrap();
    assert_eq!(
        c.circuit_breakers,
        CircuitBreakers {
            max_connections: 7,
            max_retries: 9,
            ..Default::default()
        }
    );
}

fn with_outlier(outlier: serde_json::Value) -> Result<Cluster, ConfigError> {
    cluster(json!({"name": "b", "outlier_detection": outlier}))
}

#[test]
fn outlier_detection_gets_envoy_defaults() {
    assert_eq!(
        cluster(json!({"name": "b"})).unwrap().outlier_detection,
        None
    );
    let od = with_outlier(json!({})).unwrap().outlier_detection.unwrap();
    assert_eq!(od, OutlierDetection::default());
    assert_eq!(
        (
            od.consecutive_5xx,
            od.consecutive_gateway_failure,
            od.consecutive_local_origin_failure
        ),
        (5, 5, 5)
    );
    assert_eq!(od.interval, Duration::from_secs(10));
    assert_eq!(od.base_ejection_time, Duration::from_secs(30));
    assert_eq!(od.max_ejection_time, Duration::from_secs(300));
    assert_eq!(od.max_ejection_time_jitter, Duration::ZERO);
    assert_eq!(od.max_ejection_percent, 10);
    assert!(!od.always_eject_one_host);
    assert_eq!(
        (
            od.enforcing_consecutive_5xx,
            od.enforcing_consecutive_gateway_failure,
            od.enforcing_success_rate,
            od.enforcing_consecutive_local_origin_failure,
            od.enforcing_local_origin_success_rate,
            od.enforcing_failure_percentage,
            od.enforcing_failure_percentage_local_origin,
        ),
        (100, 0, 100, 100, 100, 0, 0)
    );
    assert_eq!(
        (
            od.success_rate_minimum_hosts,
            od.success_rate_request_volume,
            od.success_rate_stdev_factor
        ),
        (5, 100, 1900)
    );
    assert_eq!(
        (
            od.failure_percentage_threshold,
            od.failure_percentage_minimum_hosts,
            od.failure_percentage_request_volume
        ),
        (85, 5, 50)
    );
    assert!(!od.split_external_local_origin_errors);
}

#[test]
fn outlier_detection_converts_set_fields() {
    let od = with_outlier(json!({
        "consecutive_5xx": 0, "interval": "0.2s", "base_ejection_time": "1s",
        "max_ejection_percent": 100, "enforcing_consecutive_gateway_failure": 50,
        "split_external_local_origin_errors": true, "max_ejection_time_jitter": "0.5s",
        "always_eject_one_host": true, "success_rate_stdev_factor": 1000
    }))
    .unwrap()
    .outlier_detection
    .unwrap();
    assert_eq!(od.consecutive_5xx, 0);
    assert_eq!(od.interval, Duration::from_millis(200));
    assert_eq!(od.base_ejection_time, Duration::from_secs(1));
    assert_eq!(od.max_ejection_percent, 100);
    assert_eq!(od.enforcing_consecutive_gateway_failure, 50);
    assert!(od.split_external_local_origin_errors && od.always_eject_one_host);
    assert_eq!(od.max_ejection_time_jitter, Duration::from_millis(500));
    assert_eq!(od.success_rate_stdev_factor, 1000);
}

#[test]
fn outlier_max_ejection_time_defaults_to_base_when_base_is_longer() {
    let od = with_outlier(json!({"base_ejection_time": "600s"}))
        .unwrap()
        .outlier_detection
        .unwrap();
    assert_eq!(od.max_ejection_time, Duration::from_secs(600));
}

#[test]
fn outlier_detection_rejects_what_envoy_rejects() {
    for (value, field) in [
        (
            json!({"max_ejection_percent": 101}),
            "outlier_detection.max_ejection_percent",
        ),
        (
            json!({"enforcing_consecutive_5xx": 101}),
            "outlier_detection.enforcing_consecutive_5xx",
        ),
        (
            json!({"enforcing_success_rate": 200}),
            "outlier_detection.enforcing_success_rate",
        ),
        (
            json!({"enforcing_failure_percentage_local_origin": 101}),
            "outlier_detection.enforcing_failure_percentage_local_origin",
        ),
        (
            json!({"failure_percentage_threshold": 101}),
            "outlier_detection.failure_percentage_threshold",
        ),
        (json!({"interval": "0s"}), "outlier_detection.interval"),
        (
            json!({"base_ejection_time": "0s"}),
            "outlier_detection.base_ejection_time",
        ),
        (
            json!({"base_ejection_time": "10s", "max_ejection_time": "5s"}),
            "outlier_detection.max_ejection_time",
        ),
    ] {
        let e = with_outlier(value.clone()).unwrap_err();
        assert_eq!(e.field, field, "{value}");
        assert_eq!(e.resource, "cluster \"b\"");
    }
}
