//! The control plane cluster's TLS from the bootstrap: what is accepted, and the one-line
//! errors, each naming its field, for what is not.

use crate::config::ConfigError;
use crate::config::bootstrap::Bootstrap;
use crate::xds::settings::XdsSettings;
use xds_client::ads::XdsAddress;
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::proto_json::{ReadOptions, from_text};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/tls");

fn load(yaml: &str) -> Result<Option<XdsSettings>, ConfigError> {
    let source: bootstrap_proto::Bootstrap =
        from_text(yaml, "bootstrap.yaml", ReadOptions::default()).expect("parses");
    Bootstrap::new(source, None, None).map(|b| b.xds)
}

/// ADS over `xds-grpc` (cluster `kind`, endpoint `address`), whose transport socket's
/// UpstreamTlsContext has `context` (flow YAML fields), plus `extra` top-level YAML.
fn bootstrap(kind: &str, address: &str, context: &str, extra: &str) -> String {
    format!(
        r#"
node: {{id: n1, cluster: c1}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}}}
static_resources:
  clusters:
  - name: xds-grpc
    type: {kind}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {address}}}}}]}}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, {context}}}
{extra}"#
    )
}

const TCP: &str = "{socket_address: {address: 127.0.0.1, port_value: 15012}}";

fn mtls() -> String {
    format!(
        "sni: istiod.istio-system.svc, common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: {DIR}/workload.pem}}, private_key: {{filename: {DIR}/workload-key.pem}}}}], validation_context: {{trusted_ca: {{filename: {DIR}/ca.pem}}, match_typed_subject_alt_names: [{{san_type: URI, matcher: {{prefix: 'spiffe://cluster.local/'}}}}]}}}}"
    )
}

#[test]
fn a_static_mtls_context_secures_the_ads_connection() {
    let xds = load(&bootstrap("STATIC", TCP, &mtls(), ""))
        .expect("valid")
        .expect("ADS");
    assert_eq!(
        xds.address,
        XdsAddress::Tcp("http://127.0.0.1:15012".into())
    );
    let tls = xds.tls.expect("TLS");
    let shown = format!("{tls:?}");
    assert!(
        shown.contains("istiod.istio-system.svc") && shown.contains("client_certificate: true"),
        "{shown}"
    );
    // A floor below TLS 1.2 admits 1.2 and 1.3: accepted.
    let old_floor = "common_tls_context: {tls_params: {tls_minimum_protocol_version: TLSv1_0}}";
    assert!(load(&bootstrap("STATIC", TCP, old_floor, "")).is_ok());
    // Without a transport socket (the cluster's last field here): plaintext.
    let with_tls = bootstrap("STATIC", TCP, &mtls(), "");
    let (plain, _) = with_tls
        .split_once("    transport_socket:")
        .expect("present");
    assert_eq!(load(plain).expect("valid").expect("ADS").tls, None);
}

#[test]
fn certificates_come_from_inline_files_or_static_secrets() {
    let ca = std::fs::read_to_string(format!("{DIR}/ca.pem")).expect("ca");
    let key = std::fs::read_to_string(format!("{DIR}/workload-key.pem")).expect("key");
    let context = format!(
        "common_tls_context: {{tls_certificate_sds_secret_configs: [{{name: client}}], validation_context: {{trusted_ca: {{inline_string: {ca:?}}}}}}}"
    );
    let secrets = format!(
        "  secrets:\n  - name: client\n    tls_certificate: {{certificate_chain: {{filename: {DIR}/workload.pem}}, private_key: {{inline_string: {key:?}}}}}\n"
    );
    let xds = load(&bootstrap("STATIC", TCP, &context, &secrets))
        .expect("valid")
        .expect("ADS");
    assert!(format!("{:?}", xds.tls).contains("client_certificate: true"));
    // The static secret must exist.
    let e = load(&bootstrap("STATIC", TCP, &context, "")).expect_err("no such secret");
    assert!(e.to_string().contains("\"client\""), "{e}");
    // ... and be a certificate.
    let root = format!(
        "  secrets:\n  - name: client\n    validation_context: {{trusted_ca: {{inline_string: {ca:?}}}}}\n"
    );
    let e = load(&bootstrap("STATIC", TCP, &context, &root)).expect_err("not a certificate");
    assert_eq!(
        e.to_string(),
        "bootstrap: static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs[0]: \"client\" is not a tls_certificate in static_resources.secrets"
    );
}

#[test]
fn a_dns_cluster_is_resolved_on_each_connection_and_named_in_sni_only_with_auto_host_sni() {
    let dns = "{socket_address: {address: istiod.istio-system.svc, port_value: 15012}}";
    let sni = |context: &str| {
        let xds = load(&bootstrap("LOGICAL_DNS", dns, context, ""))
            .expect("valid")
            .expect("ADS");
        assert_eq!(
            xds.address,
            XdsAddress::Tcp("http://istiod.istio-system.svc:15012".into())
        );
        let shown = format!("{:?}", xds.tls.expect("TLS"));
        shown
            .split_once("sni: ")
            .map(|(_, rest)| rest.split(", alpn").next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    // As Envoy: the host name goes out only with auto_host_sni (then in place of `sni`).
    assert_eq!(sni("common_tls_context: {}"), "None");
    assert_eq!(sni("sni: other.test"), "Some(DnsName(\"other.test\"))");
    assert_eq!(
        sni("sni: other.test, auto_host_sni: true"),
        "Some(DnsName(\"istiod.istio-system.svc\"))"
    );
    // A STATIC IP endpoint has no host name: `sni` stays.
    let xds = load(&bootstrap(
        "STATIC",
        TCP,
        "sni: other.test, auto_host_sni: true",
        "",
    ))
    .expect("valid")
    .expect("ADS");
    assert!(format!("{:?}", xds.tls).contains("other.test"));
}

#[test]
fn unsupported_contexts_are_one_line_errors_naming_the_field() {
    let base = "static_resources.clusters[0].transport_socket.typed_config";
    let ca = format!("trusted_ca: {{filename: {DIR}/ca.pem}}");
    let cases: Vec<(String, String, &str)> = vec![
        (
            "common_tls_context: {tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}}}]}".into(),
            format!("{base}.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config"),
            "a secret over ADS cannot secure the connection that carries ADS",
        ),
        (
            "common_tls_context: {validation_context_sds_secret_config: {name: ROOTCA, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]}}}}".into(),
            format!("{base}.common_tls_context.validation_context_sds_secret_config.sds_config"),
            "SDS secrets are not supported on a control plane connection",
        ),
        (
            format!("common_tls_context: {{combined_validation_context: {{default_validation_context: {{{ca}}}, validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {{ads: {{}}}}}}}}}}"),
            format!("{base}.common_tls_context.combined_validation_context.validation_context_sds_secret_config.sds_config"),
            "a secret over ADS",
        ),
        (
            "auto_sni_san_validation: true".into(),
            format!("{base}.auto_sni_san_validation"),
            "is not supported",
        ),
        (
            "common_tls_context: {tls_params: {cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]}}".into(),
            format!("{base}.common_tls_context.tls_params.cipher_suites"),
            "is not supported",
        ),
        (
            "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_1}}".into(),
            format!("{base}.common_tls_context.tls_params.tls_maximum_protocol_version"),
            "TLS 1.0 and 1.1 are not supported",
        ),
        (
            format!("common_tls_context: {{validation_context: {{{ca}, max_verify_depth: 2}}}}"),
            format!("{base}.common_tls_context.validation_context.max_verify_depth"),
            "is not supported on a control plane connection",
        ),
        (
            format!("common_tls_context: {{validation_context: {{{ca}, allow_expired_certificate: true}}}}"),
            format!("{base}.common_tls_context.validation_context.allow_expired_certificate"),
            "is not supported on a control plane connection",
        ),
        (
            "common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: a}}]}}".into(),
            format!("{base}.common_tls_context.validation_context"),
            "SAN-based verification of peer certificates without trusted CA is insecure and not allowed",
        ),
        (
            format!("common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: {DIR}/workload.pem}}, private_key: {{filename: {DIR}/workload-key.pem}}}}, {{certificate_chain: {{filename: {DIR}/rotated.pem}}, private_key: {{filename: {DIR}/rotated-key.pem}}}}]}}"),
            format!("{base}.common_tls_context.tls_certificates"),
            "at most one client certificate",
        ),
        (
            format!("common_tls_context: {{tls_certificates: [{{certificate_chain: {{filename: {DIR}/workload.pem}}, private_key: {{filename: {DIR}/xds-server-key.pem}}}}]}}"),
            base.to_string(),
            "tls_certificates: ",
        ),
        ("sni: 10.0.0.1".into(), base.to_string(), "sni: \"10.0.0.1\" is not a valid DNS name"),
    ];
    for (context, field, reason) in cases {
        let e = load(&bootstrap("STATIC", TCP, &context, "")).expect_err(&field);
        assert_eq!(e.field, field, "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert_eq!(e.resource, "bootstrap");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn an_sds_cluster_with_unusable_tls_cannot_serve_secrets() {
    let sds = concat!(
        "  - name: sds-grpc\n    type: STATIC\n",
        "    load_assignment: {cluster_name: sds-grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: /sds}}}}]}]}\n",
        "    transport_socket: {name: tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, allow_renegotiation: true}}\n",
    );
    let yaml = bootstrap("STATIC", TCP, &mtls(), "").replace(
        "  - name: xds-grpc\n",
        &format!("{sds}  - name: xds-grpc\n"),
    );
    let xds = load(&yaml).expect("valid").expect("ADS");
    let sources = &xds.secret_sources.clusters;
    assert_eq!(
        sources["sds-grpc"].as_ref().expect_err("unusable"),
        "static_resources.clusters[0].transport_socket.typed_config.allow_renegotiation: TLS renegotiation is not supported"
    );
    assert!(sources["xds-grpc"].as_ref().is_ok_and(|p| p.tls.is_some()));
}
