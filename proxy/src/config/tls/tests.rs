//! TLS transport sockets as istiod writes them, and the refusals that name the field.

use super::*;
use xds_client::proto_json::{ReadOptions, from_text};

fn socket(yaml: &str) -> core::TransportSocket {
    from_text(yaml, "ts.yaml", ReadOptions::default()).expect("parses")
}

const SDS_GRPC: &str = "{api_config_source: {api_type: GRPC, set_node_on_first_message_only: true, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, initial_fetch_timeout: 0s, resource_api_version: V3}";

/// The DownstreamTlsContext of Istio's virtualInbound mTLS chains.
pub(crate) fn istio_downstream() -> String {
    format!(
        r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
  common_tls_context:
    tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3, cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384]}}
    alpn_protocols: [h2, http/1.1]
    tls_certificate_sds_secret_configs: [{{name: default, sds_config: {SDS_GRPC}}}]
    combined_validation_context:
      default_validation_context: {{match_subject_alt_names: [{{prefix: "spiffe://cluster.local/"}}]}}
      validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {SDS_GRPC}}}
  require_client_certificate: true
"#
    )
}

/// The UpstreamTlsContext of Istio's `tlsMode-istio` transport socket match.
pub(crate) fn istio_upstream(sni: &str) -> String {
    format!(
        r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
  common_tls_context:
    tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
    alpn_protocols: [istio-peer-exchange, istio]
    tls_certificate_sds_secret_configs: [{{name: default, sds_config: {SDS_GRPC}}}]
    combined_validation_context:
      default_validation_context: {{match_subject_alt_names: [{{exact: "spiffe://cluster.local/ns/default/sa/reviews"}}]}}
      validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {SDS_GRPC}}}
  sni: {sni}
"#
    )
}

fn key(name: &str, source: SecretSource) -> SecretKey {
    SecretKey {
        name: name.into(),
        source,
    }
}

#[test]
fn istio_downstream_context_names_default_and_rootca_over_sds_grpc() {
    let TransportSocket::Tls(tls) =
        transport_socket(&socket(&istio_downstream()), Side::Downstream).expect("valid")
    else {
        panic!("TLS")
    };
    let sds = SecretSource::Cluster("sds-grpc".into());
    let refs: Vec<&SdsSecretRef> = tls.secret_refs().collect();
    assert_eq!(
        refs,
        [
            &SdsSecretRef {
                key: key("default", sds.clone()),
                initial_fetch_timeout: None,
            },
            &SdsSecretRef {
                key: key("ROOTCA", sds),
                initial_fetch_timeout: None,
            },
        ],
        "0s waits forever"
    );
    assert_eq!(
        tls.role,
        TlsRole::Downstream {
            require_client_certificate: true,
            require_sni: false
        }
    );
    assert_eq!(tls.alpn_protocols, ["h2", "http/1.1"]);
    assert_eq!(
        (tls.min_version, tls.max_version),
        (Some(TlsVersion::Tls12), Some(TlsVersion::Tls13))
    );
    let validation = tls.validation.as_ref().expect("validation");
    assert_eq!(validation.inline.subject_alt_names.len(), 1);
    assert!(
        validation.inline.trusted_ca.is_empty(),
        "the CA comes from ROOTCA"
    );
}

#[test]
fn istio_upstream_context_keeps_sni_and_alpn() {
    let TransportSocket::Tls(tls) = transport_socket(
        &socket(&istio_upstream(
            "outbound_.9080_._.reviews.default.svc.cluster.local",
        )),
        Side::Upstream,
    )
    .expect("valid") else {
        panic!("TLS")
    };
    assert_eq!(
        tls.role,
        TlsRole::Upstream {
            sni: "outbound_.9080_._.reviews.default.svc.cluster.local".into(),
            auto_host_sni: false
        }
    );
    assert_eq!(tls.alpn_protocols, ["istio-peer-exchange", "istio"]);
    assert_eq!(tls.secret_refs().count(), 2);
}

#[test]
fn ads_static_and_inline_sources() {
    let TransportSocket::Tls(tls) = transport_socket(
        &socket(&format!(
            r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
  common_tls_context:
    tls_certificates:
    - certificate_chain: {{inline_string: "{}"}}
      private_key: {{inline_string: "{}"}}
    tls_certificate_sds_secret_configs:
    - {{name: from-ads, sds_config: {{ads: {{}}, initial_fetch_timeout: 3s}}}}
    - {{name: from-bootstrap}}
    validation_context_sds_secret_config: {{name: ca, sds_config: {{ads: {{}}}}}}
"#,
            crate::config::secret::tests::CERT.escape_default(),
            crate::config::secret::tests::KEY.escape_default()
        )),
        Side::Downstream,
    )
    .expect("valid") else {
        panic!("TLS")
    };
    assert!(matches!(tls.certificates[0], CertificateSource::Inline(_)));
    let refs: Vec<(&SecretKey, Option<Duration>)> = tls
        .secret_refs()
        .map(|r| (&r.key, r.initial_fetch_timeout))
        .collect();
    assert_eq!(
        refs,
        [
            (
                &key("from-ads", SecretSource::Ads),
                Some(Duration::from_secs(3))
            ),
            (&key("from-bootstrap", SecretSource::Static), None),
            (
                &key("ca", SecretSource::Ads),
                Some(DEFAULT_INITIAL_FETCH_TIMEOUT)
            ),
        ]
    );
}

#[test]
fn raw_buffer_is_plaintext() {
    for yaml in [
        "name: envoy.transport_sockets.raw_buffer",
        "name: anything\ntyped_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}",
    ] {
        assert_eq!(
            transport_socket(&socket(yaml), Side::Upstream).expect("valid"),
            TransportSocket::Plaintext
        );
    }
}

#[test]
fn refusals_name_the_field() {
    let sds = |config: &str| {
        format!(
            "name: envoy.transport_sockets.tls\ntyped_config:\n  \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n  common_tls_context:\n    tls_certificate_sds_secret_configs: [{{name: default, sds_config: {config}}}]"
        )
    };
    let cases = [
        (
            "name: envoy.transport_sockets.alts\ntyped_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts}".to_string(),
            Side::Upstream,
            ": transport socket \"envoy.transport_sockets.alts\" (type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts) is not supported",
        ),
        (
            "name: envoy.transport_sockets.tls".to_string(),
            Side::Upstream,
            ": typed_config: is required for TLS",
        ),
        (
            istio_downstream(),
            Side::Upstream,
            ": typed_config: a cluster needs an UpstreamTlsContext, not a DownstreamTlsContext",
        ),
        (
            istio_upstream("x"),
            Side::Downstream,
            ": typed_config: a filter chain needs a DownstreamTlsContext, not an UpstreamTlsContext",
        ),
        (
            sds("{api_config_source: {api_type: DELTA_GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}"),
            Side::Upstream,
            ": typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.api_type: DELTA_GRPC is not supported for SDS (use GRPC)",
        ),
        (
            sds("{api_config_source: {api_type: GRPC, grpc_services: [{google_grpc: {target_uri: x, stat_prefix: y}}]}}"),
            Side::Upstream,
            ": typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services[0].google_grpc: is not supported (use envoy_grpc with a static cluster)",
        ),
        (
            sds("{path_config_source: {path: /etc/sds.yaml}}"),
            Side::Upstream,
            ": typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.path_config_source: file config sources are not supported for SDS",
        ),
        (
            sds("{api_config_source: {api_type: GRPC}}"),
            Side::Upstream,
            ": typed_config.common_tls_context.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services: exactly one gRPC service is required",
        ),
    ];
    for (yaml, side, expected) in cases {
        let e = transport_socket(&socket(&yaml), side).expect_err(expected);
        assert_eq!(e.to_string(), expected, "{yaml}");
    }
}
