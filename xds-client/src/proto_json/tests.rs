use super::*;
use crate::any;
use crate::pb::envoy::config::bootstrap::v3::Bootstrap;
use crate::pb::envoy::config::cluster::v3::Cluster;
use crate::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use serde_json::json;

const STRICT: ReadOptions = ReadOptions {
    allow_unknown_fields: false,
};

fn istio_bootstrap_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/istio/xds/default_golden.json"
    );
    std::fs::read_to_string(path).expect("shared fixtures are beside the repository")
}

#[test]
fn istio_rendered_bootstrap_parses_strictly() {
    let bootstrap: Bootstrap =
        from_text(&istio_bootstrap_text(), "envoy-rev.json", STRICT).unwrap();
    let node = bootstrap.node.as_ref().unwrap();
    assert_eq!(node.id, "sidecar~1.2.3.4~foo~bar");
    let names: Vec<_> = bootstrap
        .static_resources
        .as_ref()
        .unwrap()
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["prometheus_stats", "agent", "sds-grpc", "xds-grpc"]);
    // The internal_listener bootstrap extension arrives as a TypedStruct of a known type: unwrapped.
    let ext = &bootstrap.bootstrap_extensions[0];
    assert_eq!(
        ext.typed_config.as_ref().unwrap().type_url,
        "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
    );
}

#[test]
fn typo_in_field_is_named_with_its_path() {
    let value = json!({"static_resources": {"clusters": [{"name": "a", "conect_timeout": "1s"}]}});
    let err = from_value::<Bootstrap>(value, STRICT)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "static_resources.clusters[0]: unrecognized field name 'conect_timeout'"
    );
}

#[test]
fn unknown_fields_are_ignored_when_allowed() {
    let value = json!({"node": {"id": "n", "future_field": 1}});
    let lenient = ReadOptions {
        allow_unknown_fields: true,
    };
    let bootstrap: Bootstrap = from_value(value, lenient).unwrap();
    assert_eq!(bootstrap.node.unwrap().id, "n");
}

#[test]
fn camel_case_snake_case_and_durations_map_alike() {
    let snake: Cluster =
        from_value(json!({"name": "c", "connect_timeout": "1.5s"}), STRICT).unwrap();
    let camel: Cluster =
        from_value(json!({"name": "c", "connectTimeout": "1.5s"}), STRICT).unwrap();
    assert_eq!(snake, camel);
    let timeout = snake.connect_timeout.unwrap();
    assert_eq!((timeout.seconds, timeout.nanos), (1, 500_000_000));
}

#[test]
fn yaml_reads_like_json() {
    let yaml = "name: c\ntype: STATIC\nlb_policy: RING_HASH\n";
    let from_yaml: Cluster = from_text(yaml, "c.yaml", STRICT).unwrap();
    let from_json: Cluster = from_text(
        r#"{"name":"c","type":"STATIC","lb_policy":"RING_HASH"}"#,
        "c.json",
        STRICT,
    )
    .unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(from_yaml.lb_policy, 2);
}

#[test]
fn typed_struct_of_known_type_is_unwrapped() {
    let value = json!({
        "name": "l",
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "value": {"stat_prefix": "s", "cluster": "backend"}
        }}]}]
    });
    let listener: crate::pb::envoy::config::listener::v3::Listener =
        from_value(value, STRICT).unwrap();
    let config = listener.filter_chains[0].filters[0]
        .config_type
        .clone()
        .unwrap();
    let crate::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(typed) = config
    else {
        panic!("expected typed_config");
    };
    let tcp: TcpProxy = any::unpack(&typed).unwrap();
    assert_eq!(tcp.stat_prefix, "s");
}

#[test]
fn any_of_unknown_type_is_kept_as_typed_struct() {
    let value = json!({
        "name": "l",
        "filter_chains": [{"filters": [{"name": "vendor.stats", "typed_config": {
            "@type": "type.googleapis.com/vendor.stats.Config",
            "disable_host_header_fallback": true
        }}]}]
    });
    let listener: crate::pb::envoy::config::listener::v3::Listener =
        from_value(value, STRICT).unwrap();
    let crate::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(typed) =
        listener.filter_chains[0].filters[0]
            .config_type
            .clone()
            .unwrap()
    else {
        panic!("expected typed_config");
    };
    assert_eq!(typed.type_url, any::UDPA_TYPED_STRUCT);
    assert_eq!(
        any::type_url(&typed),
        "type.googleapis.com/vendor.stats.Config"
    );
}

#[test]
fn istios_typed_extension_configs_read_and_print() {
    // As istiod sends them in an HCM: `istio.alpn` and `istio.stats` as their own protos.
    let value = json!({
        "stat_prefix": "outbound_0.0.0.0_9080",
        "http_filters": [
            {"name": "istio.alpn", "typed_config": {
                "@type": "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
                "alpn_override": [{"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                                  {"upstream_protocol": "HTTP2", "alpn_override": ["istio-h2", "istio", "h2"]}]
            }},
            {"name": "istio.stats", "typed_config": {
                "@type": "type.googleapis.com/stats.PluginConfig",
                "disable_host_header_fallback": true,
                "tcp_reporting_duration": "5s"
            }}
        ]
    });
    let hcm: crate::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager =
        from_value(value.clone(), STRICT).unwrap();
    let types: Vec<&str> = hcm
        .http_filters
        .iter()
        .map(|f| match &f.config_type {
            Some(
                crate::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any),
            ) => any.type_url.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            "type.googleapis.com/stats.PluginConfig"
        ]
    );
    assert_eq!(to_value(&hcm).unwrap(), value);
}

#[test]
fn to_value_prints_proto_names_and_any_types() {
    let bootstrap: Bootstrap =
        from_text(&istio_bootstrap_text(), "envoy-rev.json", STRICT).unwrap();
    let out = to_value(&bootstrap).unwrap();
    let cluster = &out["static_resources"]["clusters"][0];
    assert_eq!(cluster["name"], "prometheus_stats");
    assert_eq!(cluster["connect_timeout"], "0.250s");
    let options = &out["static_resources"]["clusters"][2]["typed_extension_protocol_options"];
    assert_eq!(
        options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["@type"],
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    // And what we print reads back to the same message.
    let again: Bootstrap = from_value(out, STRICT).unwrap();
    assert_eq!(again, bootstrap);
}

#[test]
fn syntax_errors_name_the_format() {
    let err = from_text::<Bootstrap>("{\"node\": ", "b.json", STRICT)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid JSON: EOF while parsing"), "{err}");
}

/// Asks a descriptor thread for the pool.
fn ask(requests: &mpsc::Sender<PoolRequest>) -> DescriptorPool {
    let (reply, answer) = mpsc::channel();
    requests.send(reply).expect("the thread runs");
    answer.recv().expect("an answer")
}

#[test]
fn the_descriptor_thread_reuses_its_pool_until_the_holder_idles_and_then_builds_anew() {
    // Never idle: every request gets the same pool.
    let (requests, inbox) = mpsc::channel();
    let dispatcher = std::thread::spawn(move || dispatch(inbox, Duration::from_secs(3600)));
    let first = ask(&requests);
    assert!(
        first
            .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
            .is_some()
    );
    assert!(ask(&requests) == first);
    drop(requests);
    dispatcher
        .join()
        .expect("the thread ends when its senders are gone");

    // Idle at once: the holder retires after each answer, so the next request gets a new pool
    // (or, if it reached a holder that was retiring, none, and `pool()` would build its own).
    let (requests, inbox) = mpsc::channel();
    let dispatcher = std::thread::spawn(move || dispatch(inbox, Duration::ZERO));
    let first = ask(&requests);
    let (reply, answer) = mpsc::channel();
    requests.send(reply).expect("the thread runs");
    if let Ok(second) = answer.recv() {
        assert!(second != first);
    }
    drop(requests);
    dispatcher
        .join()
        .expect("the thread ends when its senders are gone");

    // And the process-wide one answers.
    assert!(pool() == pool());
}
