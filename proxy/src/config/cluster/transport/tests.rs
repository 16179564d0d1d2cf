//! Transport socket selection per endpoint, as Envoy's TransportSocketMatcherImpl does it.

use super::*;
use crate::config::cluster::{Cluster, load_assignment};
use crate::config::tls::tests::istio_upstream;
use xds_client::proto_json::{ReadOptions, from_text};

fn istio_cluster() -> proto::Cluster {
    let tls = istio_upstream("outbound_.80_._.a.default.svc.cluster.local")
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    from_text(
        &format!(
            r#"
name: outbound|80||a.default.svc.cluster.local
type: EDS
eds_cluster_config: {{eds_config: {{ads: {{}}}}}}
transport_socket_matches:
- name: tlsMode-istio
  match: {{tlsMode: istio}}
  transport_socket:
{tls}
- name: tlsMode-disabled
  match: {{}}
  transport_socket: {{name: envoy.transport_sockets.raw_buffer, typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}}}
"#
        ),
        "c.yaml",
        ReadOptions::default(),
    )
    .expect("parses")
}

fn endpoints(yaml: &str) -> Vec<crate::config::cluster::Endpoint> {
    let cla = from_text(yaml, "cla.yaml", ReadOptions::default()).expect("parses");
    load_assignment(&cla, false).expect("valid").endpoints
}

#[test]
fn istio_endpoints_pick_tls_or_plaintext_by_tls_mode() {
    let cluster = Cluster::try_from(&istio_cluster()).expect("valid");
    assert_eq!(cluster.transport.matches.len(), 2);
    assert_eq!(cluster.transport.secret_refs().count(), 2);
    assert!(!cluster.transport.is_plaintext());
    let hosts = endpoints(
        r#"
cluster_name: a
endpoints:
- lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
    metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}, istio: {workload: a}}}
  - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}
  - endpoint: {address: {socket_address: {address: 10.0.0.3, port_value: 80}}}
    metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: disabled}}}
"#,
    );
    let chosen: Vec<(Option<&str>, bool)> = hosts
        .iter()
        .map(|h| {
            let (name, socket) = cluster.transport.select(h.socket_match.as_deref());
            (name, matches!(socket, TransportSocket::Tls(_)))
        })
        .collect();
    assert_eq!(
        chosen,
        [
            (Some("tlsMode-istio"), true),
            (Some("tlsMode-disabled"), false),
            (Some("tlsMode-disabled"), false),
        ]
    );
}

#[test]
fn locality_metadata_is_tried_after_the_endpoint_and_default_comes_last() {
    let mut source = istio_cluster();
    source.transport_socket_matches.truncate(1); // only tlsMode-istio
    let cluster = Cluster::try_from(&source).expect("valid");
    let hosts = endpoints(
        r#"
cluster_name: a
endpoints:
- metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
- lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}
    metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio, extra: 1}}}
  - endpoint: {address: {socket_address: {address: 10.0.0.3, port_value: 80}}}
"#,
    );
    let names: Vec<Option<&str>> = hosts
        .iter()
        .map(|h| cluster.transport.select(h.socket_match.as_deref()).0)
        .collect();
    assert_eq!(
        names,
        [Some("tlsMode-istio"), Some("tlsMode-istio"), None],
        "locality match, extra labels ignored, then the plaintext default"
    );
    assert_eq!(
        cluster.transport.select(None).1,
        &TransportSocket::Plaintext
    );
}

#[test]
fn values_compare_by_kind() {
    let labels = |yaml: &str| {
        let s: protobuf::Struct =
            from_text(yaml, "s.yaml", ReadOptions::default()).expect("parses");
        super::labels(&s)
    };
    assert!(labels_match(
        &labels("{n: 1}"),
        Some(&labels("{n: 1.0, m: x}"))
    ));
    assert!(!labels_match(
        &labels("{n: 1}"),
        Some(&labels("{n: \"1\"}"))
    ));
    assert!(!labels_match(&labels("{n: 1}"), None));
    assert!(labels_match(&labels("{}"), None));
}

#[test]
fn bad_transport_sockets_are_refused_naming_the_field() {
    let mut source = istio_cluster();
    source.transport_socket_matches[1].transport_socket = None;
    let e = Cluster::try_from(&source).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "cluster \"outbound|80||a.default.svc.cluster.local\": transport_socket_matches[1].transport_socket: is required"
    );
    let mut source = istio_cluster();
    source.transport_socket = source.transport_socket_matches[0].transport_socket.clone();
    if let Some(ts) = &mut source.transport_socket {
        ts.name = "envoy.transport_sockets.starttls".into();
        ts.config_type = Some(core::transport_socket::ConfigType::TypedConfig(
            xds_client::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.starttls.v3.UpstreamStartTlsConfig".into(),
                value: vec![],
            },
        ));
    }
    let e = Cluster::try_from(&source).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "cluster \"outbound|80||a.default.svc.cluster.local\": transport_socket: transport socket \"envoy.transport_sockets.starttls\" (type.googleapis.com/envoy.extensions.transport_sockets.starttls.v3.UpstreamStartTlsConfig) is not supported"
    );
}
