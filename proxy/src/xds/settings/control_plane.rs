//! The connection to a control plane (the ADS cluster, or an SDS cluster such as Istio's
//! `sds-grpc`): the cluster's single endpoint, and the TLS its `transport_socket` asks for.
//!
//! The TLS context is the one [`crate::config::tls`] already converted for the cluster; this
//! module only decides whether it can serve a control plane connection and turns it into the
//! xDS client's [`XdsTls`]. The rule that shapes it: the connection that brings secrets cannot
//! wait for secrets. Certificates and trust must be static (inline bytes or string, a file, an
//! environment variable, or a `static_resources.secrets` entry); an SDS secret is refused
//! naming its field, and so is every context field Tern cannot honour on this connection
//! (fail closed, never skipped).

use crate::config::ConfigError;
use crate::config::address::Address;
use crate::config::cluster::{Cluster, Discovery};
use crate::config::secret::{KeyFormat, Secret, SecretKind, TlsCertificate, ValidationContext};
use crate::config::tls::{TlsRole, TlsVersion, TransportSocket};
use std::sync::Arc;
use xds_client::ads::{ClientCertificate, TlsOptions, XdsAddress, XdsTls};
use xds_client::any;
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3 as tls_proto;

/// Where a control plane is and how the connection is secured.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPlane {
    pub address: XdsAddress,
    /// `None`: plaintext (h2c).
    pub tls: Option<XdsTls>,
}

/// Why a cluster cannot carry a control plane connection: a reason about the cluster itself
/// (reported under the field that named the cluster), or a [`ConfigError`] naming the cluster's
/// own field.
#[derive(Debug)]
pub enum ControlPlaneError {
    Cluster(String),
    Field(ConfigError),
}

impl std::fmt::Display for ControlPlaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlPlaneError::Cluster(reason) => f.write_str(reason),
            ControlPlaneError::Field(e) => write!(f, "{}: {}", e.field, e.reason),
        }
    }
}

/// The control plane behind static cluster `name`.
pub fn control_plane(
    name: &str,
    clusters: &[Cluster],
    source: &bootstrap_proto::Bootstrap,
    secrets: &[Secret],
) -> Result<ControlPlane, ControlPlaneError> {
    let index = clusters
        .iter()
        .position(|c| c.name == name)
        .ok_or_else(|| ControlPlaneError::Cluster(format!("{name:?} is not a static cluster")))?;
    let cluster = &clusters[index];
    let (address, host_name) = endpoint(cluster).map_err(ControlPlaneError::Cluster)?;
    let field = format!("static_resources.clusters[{index}]");
    let proto = source
        .static_resources
        .as_ref()
        .and_then(|s| s.clusters.get(index));
    let tls = tls(cluster, host_name, proto, secrets, source).map_err(|(f, reason)| {
        ControlPlaneError::Field(ConfigError::new(
            "bootstrap",
            format!("{field}.{f}"),
            reason,
        ))
    })?;
    Ok(ControlPlane { address, tls })
}

/// The cluster's single endpoint (a DNS cluster's host name is resolved on every connection
/// attempt), and its host name as `auto_host_sni` takes it: the endpoint's `hostname`, else the
/// DNS name.
fn endpoint(cluster: &Cluster) -> Result<(XdsAddress, Option<String>), String> {
    let name = &cluster.name;
    let dns = matches!(
        cluster.discovery,
        Discovery::StrictDns(_) | Discovery::LogicalDns(_)
    );
    if cluster.discovery != Discovery::Static && !dns {
        return Err(format!(
            "cluster {name:?} must be STATIC (or STRICT_DNS / LOGICAL_DNS)"
        ));
    }
    let [one] = cluster.load_assignment.endpoints.as_slice() else {
        return Err(format!("cluster {name:?} must have exactly one endpoint"));
    };
    let hostname = (!one.hostname.is_empty()).then(|| one.hostname.clone());
    match &one.address {
        Address::Pipe(path) => Ok((XdsAddress::Unix(path.clone()), hostname)),
        Address::Socket(socket) => Ok((XdsAddress::Tcp(format!("http://{socket}")), hostname)),
        Address::Named { host, port } if dns => Ok((
            XdsAddress::Tcp(format!("http://{host}:{port}")),
            hostname.or_else(|| Some(host.clone())),
        )),
        Address::Named { .. } => Err(format!("cluster {name:?}: a named host needs DNS")),
    }
}

/// A field (relative to the cluster) and why it cannot be used.
type FieldError = (String, String);

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    (field.into(), reason.into())
}

/// Why an `sds_config` cannot serve the control plane connection.
fn needs_static(config: &core::ConfigSource) -> &'static str {
    use core::config_source::ConfigSourceSpecifier as S;
    match &config.config_source_specifier {
        Some(S::Ads(_) | S::Self_(_)) => {
            "a secret over ADS cannot secure the connection that carries ADS; use a static certificate (inline, filename, environment_variable or static_resources.secrets)"
        }
        _ => {
            "SDS secrets are not supported on a control plane connection; use a static certificate (inline, filename, environment_variable or static_resources.secrets)"
        }
    }
}

/// The client TLS for the cluster's `transport_socket`, `None` for plaintext.
fn tls(
    cluster: &Cluster,
    host_name: Option<String>,
    proto: Option<&xds_client::pb::envoy::config::cluster::v3::Cluster>,
    secrets: &[Secret],
    source: &bootstrap_proto::Bootstrap,
) -> Result<Option<XdsTls>, FieldError> {
    if !cluster.transport.matches.is_empty() {
        return Err(refuse(
            "transport_socket_matches",
            "is not supported on a control plane cluster (use transport_socket)",
        ));
    }
    let TransportSocket::Tls(context) = &cluster.transport.default else {
        return Ok(None);
    };
    let base = "transport_socket.typed_config";
    let upstream: tls_proto::UpstreamTlsContext = proto
        .and_then(|p| p.transport_socket.as_ref())
        .and_then(|ts| ts.config_type.as_ref())
        .map(|core::transport_socket::ConfigType::TypedConfig(a)| any::unpack(a))
        .and_then(Result::ok)
        .ok_or_else(|| refuse(base, "an UpstreamTlsContext is required"))?;
    unsupported(&upstream).map_err(|(f, r)| refuse(format!("{base}.{f}"), r))?;
    let common = upstream.common_tls_context.unwrap_or_default();
    let client_certificate = client_certificate(&common, secrets)
        .map_err(|(f, r)| refuse(format!("{base}.common_tls_context.{f}"), r))?;
    let validation = validation(&common, secrets, source)
        .map_err(|(f, r)| refuse(format!("{base}.common_tls_context.{f}"), r))?;
    let TlsRole::Upstream { sni, auto_host_sni } = &context.role else {
        return Err(refuse(base, "an UpstreamTlsContext is required"));
    };
    let params = format!("{base}.common_tls_context.tls_params");
    let options = TlsOptions {
        trusted_ca: validation
            .trusted_ca
            .iter()
            .map(|d| d.clone().into())
            .collect(),
        system_roots: validation.system_roots,
        crls: validation.crl.iter().map(|d| d.clone().into()).collect(),
        subject_alt_names: validation
            .subject_alt_names
            .iter()
            .map(|m| Arc::new(m.clone()) as Arc<dyn xds_client::ads::SanMatcher>)
            .collect(),
        client_certificate,
        // As Envoy: `auto_host_sni` sends the host's name when it has one, else `sni`; a DNS
        // cluster's name is not sent by itself.
        sni: host_name
            .filter(|_| *auto_host_sni)
            .or_else(|| (!sni.is_empty()).then(|| sni.clone())),
        alpn: context.alpn_protocols.clone(),
        min_version: version_bound(context.min_version, true, &params)?,
        max_version: version_bound(context.max_version, false, &params)?,
        disable_resumption: upstream.max_session_keys.is_some_and(|n| n.value == 0),
    };
    XdsTls::new(options)
        .map(Some)
        .map_err(|e| refuse(base, e.to_string()))
}

/// A `tls_params` bound rustls can honour: a floor below TLS 1.2 admits 1.2 and 1.3 anyway, a
/// ceiling below it is refused.
fn version_bound(
    version: Option<TlsVersion>,
    floor: bool,
    params: &str,
) -> Result<Option<xds_client::ads::TlsVersion>, FieldError> {
    use xds_client::ads::TlsVersion as Rustls;
    match version {
        None => Ok(None),
        Some(TlsVersion::Tls10 | TlsVersion::Tls11) if floor => Ok(Some(Rustls::Tls12)),
        Some(TlsVersion::Tls10 | TlsVersion::Tls11) => Err(refuse(
            format!("{params}.tls_maximum_protocol_version"),
            "TLS 1.0 and 1.1 are not supported (TLSv1_2 or TLSv1_3)",
        )),
        Some(TlsVersion::Tls12) => Ok(Some(Rustls::Tls12)),
        Some(TlsVersion::Tls13) => Ok(Some(Rustls::Tls13)),
    }
}

/// `UpstreamTlsContext` and `CommonTlsContext` fields Tern cannot honour on this connection.
fn unsupported(u: &tls_proto::UpstreamTlsContext) -> Result<(), FieldError> {
    if u.auto_sni_san_validation {
        return Err(refuse(
            "auto_sni_san_validation",
            "is not supported (use match_typed_subject_alt_names)",
        ));
    }
    if u.allow_renegotiation {
        return Err(refuse(
            "allow_renegotiation",
            "TLS renegotiation is not supported",
        ));
    }
    let Some(c) = &u.common_tls_context else {
        return Ok(());
    };
    if c.key_log.is_some() {
        return Err(refuse("common_tls_context.key_log", "is not supported"));
    }
    if let Some(p) = &c.tls_params {
        for (field, set) in [
            ("cipher_suites", !p.cipher_suites.is_empty()),
            ("ecdh_curves", !p.ecdh_curves.is_empty()),
            ("signature_algorithms", !p.signature_algorithms.is_empty()),
            ("compliance_policies", !p.compliance_policies.is_empty()),
        ] {
            if set {
                return Err(refuse(
                    format!("common_tls_context.tls_params.{field}"),
                    "is not supported (rustls chooses its own safe defaults)",
                ));
            }
        }
    }
    if c.tls_certificates.len() + c.tls_certificate_sds_secret_configs.len() > 1 {
        return Err(refuse(
            "common_tls_context.tls_certificates",
            "a control plane connection presents at most one client certificate",
        ));
    }
    Ok(())
}

/// The client certificate (mTLS), inline or a static secret.
fn client_certificate(
    c: &tls_proto::CommonTlsContext,
    secrets: &[Secret],
) -> Result<Option<ClientCertificate>, FieldError> {
    let certificate = if let Some(inline) = c.tls_certificates.first() {
        // Already validated when the cluster was converted.
        TlsCertificate::try_from(inline).map_err(|e| refuse("tls_certificates[0]", e.reason))?
    } else if let Some(sds) = c.tls_certificate_sds_secret_configs.first() {
        let field = "tls_certificate_sds_secret_configs[0]";
        if let Some(config) = &sds.sds_config {
            return Err(refuse(format!("{field}.sds_config"), needs_static(config)));
        }
        match static_secret(secrets, &sds.name) {
            Some(SecretKind::Certificate(certificate)) => certificate.clone(),
            _ => {
                return Err(refuse(
                    field,
                    format!(
                        "{:?} is not a tls_certificate in static_resources.secrets",
                        sds.name
                    ),
                ));
            }
        }
    } else {
        return Ok(None);
    };
    let key = certificate.private_key.der.clone();
    let key = match certificate.private_key.format {
        KeyFormat::Pkcs8 => rustls_pki_types::PrivatePkcs8KeyDer::from(key).into(),
        KeyFormat::Pkcs1 => rustls_pki_types::PrivatePkcs1KeyDer::from(key).into(),
        KeyFormat::Sec1 => rustls_pki_types::PrivateSec1KeyDer::from(key).into(),
    };
    Ok(Some(ClientCertificate {
        chain: certificate.chain.into_iter().map(Into::into).collect(),
        key,
    }))
}

fn static_secret<'a>(secrets: &'a [Secret], name: &str) -> Option<&'a SecretKind> {
    secrets.iter().find(|s| s.name == name).map(|s| &s.kind)
}

/// How the server is validated: the inline context, a static secret, or both combined.
fn validation(
    c: &tls_proto::CommonTlsContext,
    secrets: &[Secret],
    source: &bootstrap_proto::Bootstrap,
) -> Result<ValidationContext, FieldError> {
    use tls_proto::common_tls_context::ValidationContextType as V;
    let from_secret = |s: &tls_proto::SdsSecretConfig, field: &str| {
        if let Some(config) = &s.sds_config {
            return Err(refuse(format!("{field}.sds_config"), needs_static(config)));
        }
        let proto = source
            .static_resources
            .iter()
            .flat_map(|r| &r.secrets)
            .find(|p| p.name == s.name);
        match (
            static_secret(secrets, &s.name),
            proto.and_then(|p| p.r#type.as_ref()),
        ) {
            (
                Some(SecretKind::Validation(v)),
                Some(tls_proto::secret::Type::ValidationContext(p)),
            ) => {
                unsupported_validation(p).map_err(|(f, r)| {
                    refuse(field, format!("static secret {:?}: {f} {r}", s.name))
                })?;
                Ok(v.clone())
            }
            _ => Err(refuse(
                field,
                format!(
                    "{:?} is not a validation_context in static_resources.secrets",
                    s.name
                ),
            )),
        }
    };
    let inline = |p: &tls_proto::CertificateValidationContext, field: &str| {
        unsupported_validation(p).map_err(|(f, r)| refuse(format!("{field}.{f}"), r))?;
        ValidationContext::try_from(p).map_err(|e| refuse(format!("{field}.{}", e.field), e.reason))
    };
    let (v, field) = match &c.validation_context_type {
        None => return Ok(ValidationContext::default()),
        Some(V::ValidationContext(p)) => (inline(p, "validation_context")?, "validation_context"),
        Some(V::ValidationContextSdsSecretConfig(s)) => (
            from_secret(s, "validation_context_sds_secret_config")?,
            "validation_context_sds_secret_config",
        ),
        Some(V::CombinedValidationContext(combined)) => {
            let base = "combined_validation_context";
            let default = match &combined.default_validation_context {
                Some(p) => inline(p, &format!("{base}.default_validation_context"))?,
                None => ValidationContext::default(),
            };
            let secret = match &combined.validation_context_sds_secret_config {
                Some(s) => from_secret(s, &format!("{base}.validation_context_sds_secret_config"))?,
                None => ValidationContext::default(),
            };
            // Envoy merges the secret into the default: set fields replace, lists append.
            let mut merged = default;
            if !secret.trusted_ca.is_empty() {
                merged.trusted_ca = secret.trusted_ca;
            }
            if !secret.crl.is_empty() {
                merged.crl = secret.crl;
            }
            merged.system_roots |= secret.system_roots;
            merged.subject_alt_names.extend(secret.subject_alt_names);
            (merged, base)
        }
        // Refused when the cluster was converted.
        Some(_) => return Err(refuse("validation_context", "is not supported")),
    };
    if v.trusted_ca.is_empty() && !v.system_roots {
        if !v.subject_alt_names.is_empty() {
            return Err(refuse(
                field,
                "SAN-based verification of peer certificates without trusted CA is insecure and not allowed",
            ));
        }
        if !v.crl.is_empty() {
            return Err(refuse(field, "a CRL without trusted_ca cannot be used"));
        }
    }
    Ok(v)
}

/// `CertificateValidationContext` fields the control plane connection cannot honour.
fn unsupported_validation(v: &tls_proto::CertificateValidationContext) -> Result<(), FieldError> {
    use tls_proto::certificate_validation_context::TrustChainVerification;
    let checks = [
        ("watched_directory", v.watched_directory.is_some()),
        (
            "require_signed_certificate_timestamp",
            v.require_signed_certificate_timestamp
                .is_some_and(|b| b.value),
        ),
        ("allow_expired_certificate", v.allow_expired_certificate),
        (
            "trust_chain_verification",
            v.trust_chain_verification == TrustChainVerification::AcceptUntrusted as i32,
        ),
        ("only_verify_leaf_cert_crl", v.only_verify_leaf_cert_crl),
        ("max_verify_depth", v.max_verify_depth.is_some()),
    ];
    match checks.into_iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(refuse(
            field,
            "is not supported on a control plane connection",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
