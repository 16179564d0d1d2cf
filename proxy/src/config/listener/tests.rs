use super::*;
use serde_json::json;
use xds_client::proto_json::{ReadOptions, from_value};

fn listener(value: serde_json::Value) -> Result<Listener, ConfigError> {
    let proto: proto::Listener =
        from_value(value, ReadOptions::default()).expect("valid proto JSON");
    Listener::try_from(&proto)
}

fn tcp_filter(cluster: &str) -> serde_json::Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "s", "cluster": cluster}})
}

#[test]
fn istio_virtual_outbound_shape_converts() {
    let l = listener(json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "use_original_dst": true,
        "traffic_direction": "OUTBOUND",
        "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
        "filter_chains": [{"name": "virtualOutbound-catchall-tcp", "filters": [
            {"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}},
            tcp_filter("PassthroughCluster")]}]
    }))
    .unwrap();
    assert_eq!(l.address, "0.0.0.0:15001".parse().unwrap());
    assert_eq!(l.stat_prefix, "0.0.0.0_15001");
    assert!(l.use_original_dst && l.bind_to_port);
    assert_eq!(l.direction, Direction::Outbound);
    assert_eq!(l.listener_filters[0].kind, ListenerFilterKind::OriginalDst);
    let chain = &l.filter_chains.chains()[0];
    assert!(matches!(chain.filters[0], NetworkFilter::NoOp { .. }));
    assert!(
        matches!(&chain.filters[1], NetworkFilter::TcpProxy(t) if t.idle_timeout == Some(Duration::from_secs(3600)))
    );
}

#[test]
fn use_original_dst_implies_the_original_dst_listener_filter_after_the_configured_ones() {
    // Istio's REDIRECT-mode virtualOutbound: no listener filters, use_original_dst.
    let l = listener(json!({
        "name": "virtualOutbound",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "use_original_dst": true,
        "filter_chains": [{"filters": [tcp_filter("PassthroughCluster")]}]
    }))
    .unwrap();
    let kinds: Vec<_> = l.listener_filters.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [ListenerFilterKind::OriginalDst]);

    let l = listener(json!({
        "name": "inspecting",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
        "use_original_dst": true,
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [{"filters": [tcp_filter("PassthroughCluster")]}]
    }))
    .unwrap();
    let kinds: Vec<_> = l.listener_filters.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            ListenerFilterKind::TlsInspector,
            ListenerFilterKind::OriginalDst
        ]
    );

    // Without use_original_dst nothing is added.
    let l = listener(json!({
        "name": "plain",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": [{"filters": [tcp_filter("a")]}]
    }))
    .unwrap();
    assert!(l.listener_filters.is_empty());
}

#[test]
fn bind_to_port_false_and_disabled_listener_filter() {
    let l = listener(json!({
        "name": "10.0.0.1_80",
        "address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}},
        "bind_to_port": false,
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
            "filter_disabled": {"or_match": {"rules": [{"destination_port_range": {"start": 80, "end": 81}}]}}}],
        "filter_chains": [{"filters": [tcp_filter("a")]}]
    }))
    .unwrap();
    assert!(!l.bind_to_port);
    let disabled = l.listener_filters[0].disabled.as_ref().unwrap();
    assert!(disabled.matches(80));
    assert!(!disabled.matches(81));
}

#[test]
fn unknown_filters_are_rejected_by_name() {
    let err = listener(json!({
        "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.mongo_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy", "stat_prefix": "m"}}]}]
    }))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "listener \"l\": filter_chains[0].filters[0]: unknown network filter \"envoy.filters.network.mongo_proxy\" \
         (type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy)"
    );
    let err = listener(json!({
        "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
        "listener_filters": [{"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}}],
        "filter_chains": [{"filters": [tcp_filter("a")]}]
    }))
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("listener \"l\": listener_filters[0]: unknown listener filter"),
        "{err}"
    );
}

fn rbac_listener(rbac: serde_json::Value) -> Result<Listener, ConfigError> {
    let mut config = json!({"@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "r"});
    config
        .as_object_mut()
        .unwrap()
        .extend(rbac.as_object().unwrap().clone());
    listener(json!({
        "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.rbac", "typed_config": config},
            tcp_filter("a")]}]
    }))
}

fn rbac_filter(l: &Listener) -> &crate::rbac::network::NetworkRbac {
    match &l.filter_chains.chains()[0].filters[0] {
        NetworkFilter::Rbac(r) => r,
        other => panic!("not RBAC: {other:?}"),
    }
}

#[test]
fn network_rbac_is_enforced_and_fails_closed_on_what_tern_cannot_evaluate() {
    let l = rbac_listener(json!({})).unwrap();
    assert!(rbac_filter(&l).enforced.is_none());
    let l = rbac_listener(json!({"rules": {"policies": {"p": {
        "permissions": [{"any": true}],
        "principals": [{"authenticated": {"principal_name": {"exact": "spiffe://a"}}}]}}}}))
    .unwrap();
    assert!(matches!(
        rbac_filter(&l).enforced,
        Some(crate::rbac::Enforcement::Rules(_))
    ));
    let l = rbac_listener(json!({"rules": {"policies": {"p": {
        "permissions": [{"any": true}],
        "principals": [{"filter_state": {"key": "io.istio.peer_principal", "string_match": {"exact": "a"}}}]}}}}))
    .unwrap();
    assert!(matches!(
        rbac_filter(&l).enforced,
        Some(crate::rbac::Enforcement::FailClosed { .. })
    ));
    let err = rbac_listener(json!({"rules": {"policies": {"p": {
        "permissions": [{"destination_ip": {"address_prefix": "x"}}],
        "principals": [{"any": true}]}}}}))
    .unwrap_err();
    assert!(err.to_string().contains("destination_ip"), "{err}");
}

#[test]
fn duplicate_filter_chain_matches_are_rejected() {
    let chain =
        json!({"filter_chain_match": {"destination_port": 80}, "filters": [tcp_filter("a")]});
    let err = listener(json!({
        "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}},
        "filter_chains": [chain.clone(), chain]
    }))
    .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "listener \"l\": filter_chains: multiple filter chains with the same matching rules"
        ),
        "{err}"
    );
}

/// Istio's own virtualInbound (a real sidecar's config dump): its mTLS chains carry a
/// DownstreamTlsContext naming `default` and `ROOTCA` over `sds-grpc`.
#[test]
fn istio_virtual_inbound_tls_chains_name_their_sds_secrets() {
    use crate::config::tls::{SecretSource, TransportSocket};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/istio/xds/configdump.yaml"
    ));
    let Ok(text) = text else {
        eprintln!("skipped: the Istio config dump fixture is not present");
        return;
    };
    let dump = xds_client::proto_json::parse_text(&text, "configdump.yaml").expect("parses");
    let inbound = dump["configs"][0]["dynamic_listeners"]
        .as_array()
        .expect("dynamic listeners")
        .iter()
        .map(|l| l["active_state"]["listener"].clone())
        .find(|l| l["name"] == "virtualInbound")
        .expect("virtualInbound");
    let mut source = inbound;
    if let Some(o) = source.as_object_mut() {
        o.remove("@type");
    }
    let proto: proto::Listener = from_value(
        source,
        ReadOptions {
            allow_unknown_fields: true,
        },
    )
    .expect("proto JSON");
    // Only the transport sockets matter here: the chains' 2023-era Istio filters
    // (istio_authn) are not what this test is about.
    let mut tls_chains = 0;
    for (i, chain) in proto.filter_chains.iter().enumerate() {
        let Some(ts) = &chain.transport_socket else {
            continue;
        };
        let socket = crate::config::tls::transport_socket(ts, crate::config::tls::Side::Downstream)
            .unwrap_or_else(|e| panic!("filter_chains[{i}]: {e}"));
        let TransportSocket::Tls(tls) = socket else {
            continue;
        };
        tls_chains += 1;
        let names: Vec<(&str, &SecretSource)> = tls
            .secret_refs()
            .map(|r| (r.key.name.as_str(), &r.key.source))
            .collect();
        let sds = SecretSource::Cluster("sds-grpc".into());
        assert_eq!(names, [("default", &sds), ("ROOTCA", &sds)], "chain {i}");
        assert!(tls.secret_refs().all(|r| r.initial_fetch_timeout.is_none()));
    }
    assert!(
        tls_chains >= 2,
        "virtualInbound has mTLS chains: {tls_chains}"
    );
}
