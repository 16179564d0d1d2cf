//! Transport sockets: plaintext (`raw_buffer`) or TLS (`envoy.transport_sockets.tls` with an
//! `UpstreamTlsContext` or a `DownstreamTlsContext`).
//!
//! istiod puts TLS on every mesh cluster (`transport_socket_matches` for `tlsMode: istio`
//! endpoints) and on `virtualInbound`'s mTLS filter chains, so Tern must accept these configs
//! even before it terminates or originates TLS itself: refusing them would NACK the whole mesh
//! config. A [`TlsContext`] keeps what the handshake will need as data (certificates inline or
//! named as SDS secrets, validation context, SNI, ALPN, protocol versions, client certificate
//! requirement) and, above all, the secrets it names with where they come from
//! ([`SdsSecretRef`]): those are what the xDS layer subscribes to and what a listener or
//! cluster warms on.
//!
//! Invariants: a transport socket Tern does not know is refused with its name and type; a
//! context field that would change who is trusted and that Tern cannot honour is refused
//! (fail closed), never skipped.

use super::secret::{TlsCertificate, ValidationContext};
use super::{ConfigError, opt_duration};
use crate::xds::settings::DEFAULT_INITIAL_FETCH_TIMEOUT;
use std::sync::Arc;
use std::time::Duration;
use xds_client::any;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3 as proto;

/// How a connection's bytes are carried.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportSocket {
    /// `envoy.transport_sockets.raw_buffer`, or no transport socket at all.
    Plaintext,
    Tls(Arc<TlsContext>),
}

impl TransportSocket {
    /// The SDS secrets this socket needs before it can serve.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SdsSecretRef> {
        match self {
            TransportSocket::Plaintext => None,
            TransportSocket::Tls(tls) => Some(tls.secret_refs()),
        }
        .into_iter()
        .flatten()
    }
}

/// Which end of a connection a TLS context is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A listener's filter chain: `DownstreamTlsContext`.
    Downstream,
    /// A cluster: `UpstreamTlsContext`.
    Upstream,
}

/// A validated TLS context.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsContext {
    pub role: TlsRole,
    /// The certificates to present: inline `tls_certificates`, then
    /// `tls_certificate_sds_secret_configs`.
    pub certificates: Vec<CertificateSource>,
    /// How the peer is validated; `None`: it is not.
    pub validation: Option<Validation>,
    pub alpn_protocols: Vec<String>,
    /// `tls_params` protocol bounds; `None` is Envoy's default for the side.
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

/// What only one side has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRole {
    Upstream {
        /// SNI to send (empty: none).
        sni: String,
        /// `auto_host_sni`: SNI from the request's host instead.
        auto_host_sni: bool,
    },
    Downstream {
        require_client_certificate: bool,
        require_sni: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

/// A certificate given inline or named as a secret.
#[derive(Debug, Clone, PartialEq)]
pub enum CertificateSource {
    Inline(TlsCertificate),
    Sds(SdsSecretRef),
}

/// The peer validation: an inline context, an SDS secret, or both combined (Envoy's
/// `combined_validation_context`: the secret's trusted CA with the inline context's SAN checks).
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    pub inline: ValidationContext,
    pub sds: Option<SdsSecretRef>,
}

/// A secret a TLS context names, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSecretRef {
    pub key: SecretKey,
    /// How long a listener or cluster warms waiting for it (`None`: until it arrives).
    pub initial_fetch_timeout: Option<Duration>,
}

/// A secret's identity: the same name from two sources is two secrets, as in Envoy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey {
    pub name: String,
    pub source: SecretSource,
}

/// Where a secret is fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretSource {
    /// No `sds_config`: the bootstrap's `static_resources.secrets`.
    Static,
    /// `sds_config: {ads: {}}`: named `Secret` subscriptions on the ADS stream.
    Ads,
    /// `sds_config.api_config_source` gRPC to this (static) cluster: its own `StreamSecrets`
    /// stream, as Istio's `sds-grpc`.
    Cluster(String),
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Static => f.write_str("static_resources.secrets"),
            SecretSource::Ads => f.write_str("ads"),
            SecretSource::Cluster(c) => write!(f, "cluster {c:?}"),
        }
    }
}

impl TlsContext {
    /// Every SDS secret this context names (certificates first, then validation).
    pub fn secret_refs(&self) -> impl Iterator<Item = &SdsSecretRef> {
        self.certificates
            .iter()
            .filter_map(|c| match c {
                CertificateSource::Sds(r) => Some(r),
                CertificateSource::Inline(_) => None,
            })
            .chain(self.validation.iter().filter_map(|v| v.sds.as_ref()))
    }
}

const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";

/// Converts a transport socket for `side`. Error fields are relative to the transport socket.
pub fn transport_socket(
    ts: &core::TransportSocket,
    side: Side,
) -> Result<TransportSocket, ConfigError> {
    let typed = ts
        .config_type
        .as_ref()
        .map(|core::transport_socket::ConfigType::TypedConfig(a)| a);
    let type_url = typed.map(any::type_url).unwrap_or_default();
    let is = |full_name: &str| type_url == format!("type.googleapis.com/{full_name}");
    if is("envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer")
        || (typed.is_none() && ts.name == RAW_BUFFER_SOCKET)
    {
        return Ok(TransportSocket::Plaintext);
    }
    let err = |field: &str, reason: String| ConfigError::new("", field, reason);
    let (upstream, downstream) = (
        is("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
        is("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"),
    );
    let Some(typed) = typed.filter(|_| upstream || downstream) else {
        if ts.name == TLS_SOCKET && typed.is_none() {
            return Err(err("typed_config", "is required for TLS".into()));
        }
        return Err(err(
            "",
            format!(
                "transport socket {:?} ({type_url}) is not supported",
                ts.name
            ),
        ));
    };
    let context = match side {
        Side::Upstream if upstream => {
            let tls: proto::UpstreamTlsContext =
                any::unpack(typed).map_err(|e| err("", e.to_string()))?;
            upstream_context(&tls)
        }
        Side::Downstream if downstream => {
            let tls: proto::DownstreamTlsContext =
                any::unpack(typed).map_err(|e| err("", e.to_string()))?;
            downstream_context(&tls)
        }
        Side::Upstream => Err(err(
            "",
            "a cluster needs an UpstreamTlsContext, not a DownstreamTlsContext".into(),
        )),
        Side::Downstream => Err(err(
            "",
            "a filter chain needs a DownstreamTlsContext, not an UpstreamTlsContext".into(),
        )),
    };
    Ok(TransportSocket::Tls(Arc::new(
        context.map_err(|e| e.within("typed_config"))?,
    )))
}

fn upstream_context(tls: &proto::UpstreamTlsContext) -> Result<TlsContext, ConfigError> {
    common(
        tls.common_tls_context.as_ref(),
        TlsRole::Upstream {
            sni: tls.sni.clone(),
            auto_host_sni: tls.auto_host_sni,
        },
    )
}

fn downstream_context(tls: &proto::DownstreamTlsContext) -> Result<TlsContext, ConfigError> {
    use proto::downstream_tls_context::SessionTicketKeysType as Tickets;
    if let Some(Tickets::SessionTicketKeysSdsSecretConfig(_)) = &tls.session_ticket_keys_type {
        return Err(ConfigError::new(
            "",
            "session_ticket_keys_sds_secret_config",
            "session ticket keys over SDS are not supported",
        ));
    }
    common(
        tls.common_tls_context.as_ref(),
        TlsRole::Downstream {
            require_client_certificate: tls
                .require_client_certificate
                .as_ref()
                .is_some_and(|b| b.value),
            require_sni: tls.require_sni.as_ref().is_some_and(|b| b.value),
        },
    )
}

fn common(
    common: Option<&proto::CommonTlsContext>,
    role: TlsRole,
) -> Result<TlsContext, ConfigError> {
    let default = proto::CommonTlsContext::default();
    let c = common.unwrap_or(&default);
    fn within(field: &str) -> impl Fn(ConfigError) -> ConfigError + '_ {
        move |e| e.within(&format!("common_tls_context.{field}"))
    }
    let refuse = |field: &str, reason: &str| {
        Err(ConfigError::new(
            "",
            format!("common_tls_context.{field}"),
            reason,
        ))
    };
    if c.tls_certificate_provider_instance.is_some() {
        return refuse(
            "tls_certificate_provider_instance",
            "certificate provider instances are not supported",
        );
    }
    #[allow(deprecated)]
    if c.tls_certificate_certificate_provider.is_some()
        || c.tls_certificate_certificate_provider_instance.is_some()
    {
        return refuse(
            "tls_certificate_certificate_provider",
            "certificate providers are not supported",
        );
    }
    if c.custom_tls_certificate_selector.is_some() {
        return refuse(
            "custom_tls_certificate_selector",
            "custom certificate selectors are not supported",
        );
    }
    if c.custom_handshaker.is_some() {
        return refuse("custom_handshaker", "custom handshakers are not supported");
    }
    let mut certificates = Vec::new();
    for (i, cert) in c.tls_certificates.iter().enumerate() {
        let field = format!("tls_certificates[{i}]");
        certificates.push(CertificateSource::Inline(
            TlsCertificate::try_from(cert).map_err(within(&field))?,
        ));
    }
    for (i, sds) in c.tls_certificate_sds_secret_configs.iter().enumerate() {
        let field = format!("tls_certificate_sds_secret_configs[{i}]");
        certificates.push(CertificateSource::Sds(
            secret_ref(sds).map_err(within(&field))?,
        ));
    }
    let validation = validation(c.validation_context_type.as_ref())?;
    let (min_version, max_version) = match &c.tls_params {
        Some(p) => (
            tls_version(p.tls_minimum_protocol_version)
                .map_err(within("tls_params.tls_minimum_protocol_version"))?,
            tls_version(p.tls_maximum_protocol_version)
                .map_err(within("tls_params.tls_maximum_protocol_version"))?,
        ),
        None => (None, None),
    };
    Ok(TlsContext {
        role,
        certificates,
        validation,
        alpn_protocols: c.alpn_protocols.clone(),
        min_version,
        max_version,
    })
}

fn validation(
    v: Option<&proto::common_tls_context::ValidationContextType>,
) -> Result<Option<Validation>, ConfigError> {
    use proto::common_tls_context::ValidationContextType as V;
    let field = |f: &str| format!("common_tls_context.{f}");
    let inline = |c: &proto::CertificateValidationContext, f: &str| {
        ValidationContext::try_from(c).map_err(|e| e.within(&field(f)))
    };
    let sds = |s: &proto::SdsSecretConfig, f: &str| secret_ref(s).map_err(|e| e.within(&field(f)));
    Ok(match v {
        None => None,
        Some(V::ValidationContext(c)) => Some(Validation {
            inline: inline(c, "validation_context")?,
            sds: None,
        }),
        Some(V::ValidationContextSdsSecretConfig(s)) => Some(Validation {
            inline: ValidationContext::default(),
            sds: Some(sds(s, "validation_context_sds_secret_config")?),
        }),
        Some(V::CombinedValidationContext(combined)) => {
            let base = "combined_validation_context";
            #[allow(deprecated)]
            if combined.validation_context_certificate_provider.is_some()
                || combined
                    .validation_context_certificate_provider_instance
                    .is_some()
            {
                return Err(ConfigError::new(
                    "",
                    field(&format!("{base}.validation_context_certificate_provider")),
                    "certificate providers are not supported",
                ));
            }
            let default = match &combined.default_validation_context {
                Some(c) => inline(c, &format!("{base}.default_validation_context"))?,
                None => ValidationContext::default(),
            };
            let secret = combined
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    ConfigError::new(
                        "",
                        field(&format!("{base}.validation_context_sds_secret_config")),
                        "is required",
                    )
                })?;
            Some(Validation {
                inline: default,
                sds: Some(sds(
                    secret,
                    &format!("{base}.validation_context_sds_secret_config"),
                )?),
            })
        }
        #[allow(deprecated)]
        Some(
            V::ValidationContextCertificateProvider(_)
            | V::ValidationContextCertificateProviderInstance(_),
        ) => {
            return Err(ConfigError::new(
                "",
                field("validation_context_certificate_provider"),
                "certificate providers are not supported",
            ));
        }
    })
}

/// An `SdsSecretConfig`: the name and where it is fetched from.
fn secret_ref(s: &proto::SdsSecretConfig) -> Result<SdsSecretRef, ConfigError> {
    if s.name.is_empty() {
        return Err(ConfigError::new("", "name", "must not be empty"));
    }
    let (source, initial_fetch_timeout) = match &s.sds_config {
        None => (SecretSource::Static, None),
        Some(config) => sds_source(config).map_err(|e| e.within("sds_config"))?,
    };
    Ok(SdsSecretRef {
        key: SecretKey {
            name: s.name.clone(),
            source,
        },
        initial_fetch_timeout,
    })
}

/// Where an `sds_config` fetches from, and its `initial_fetch_timeout` (`None`: forever).
#[allow(deprecated)] // `path`: refused, but it must be named to be refused
fn sds_source(
    config: &core::ConfigSource,
) -> Result<(SecretSource, Option<Duration>), ConfigError> {
    use core::config_source::ConfigSourceSpecifier as S;
    let err = |field: &str, reason: &str| ConfigError::new("", field, reason);
    let source = match &config.config_source_specifier {
        Some(S::Ads(_) | S::Self_(_)) => SecretSource::Ads,
        Some(S::ApiConfigSource(api)) => {
            use core::api_config_source::ApiType;
            match ApiType::try_from(api.api_type) {
                Ok(ApiType::Grpc) => {}
                Ok(ApiType::DeltaGrpc) => {
                    return Err(err(
                        "api_config_source.api_type",
                        "DELTA_GRPC is not supported for SDS (use GRPC)",
                    ));
                }
                _ => {
                    return Err(err(
                        "api_config_source.api_type",
                        "only GRPC is supported for SDS",
                    ));
                }
            }
            let [service] = api.grpc_services.as_slice() else {
                return Err(err(
                    "api_config_source.grpc_services",
                    "exactly one gRPC service is required",
                ));
            };
            match &service.target_specifier {
                Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(g))
                    if !g.cluster_name.is_empty() =>
                {
                    SecretSource::Cluster(g.cluster_name.clone())
                }
                Some(core::grpc_service::TargetSpecifier::GoogleGrpc(_)) => {
                    return Err(err(
                        "api_config_source.grpc_services[0].google_grpc",
                        "is not supported (use envoy_grpc with a static cluster)",
                    ));
                }
                _ => {
                    return Err(err(
                        "api_config_source.grpc_services[0].envoy_grpc.cluster_name",
                        "is required",
                    ));
                }
            }
        }
        Some(S::Path(_) | S::PathConfigSource(_)) => {
            return Err(err(
                "path_config_source",
                "file config sources are not supported for SDS",
            ));
        }
        None => return Err(err("", "ads or api_config_source is required")),
    };
    let timeout = opt_duration(config.initial_fetch_timeout.as_ref())
        .map_err(|r| ConfigError::new("", "initial_fetch_timeout", r))?
        .unwrap_or(DEFAULT_INITIAL_FETCH_TIMEOUT);
    Ok((source, (!timeout.is_zero()).then_some(timeout)))
}

fn tls_version(v: i32) -> Result<Option<TlsVersion>, ConfigError> {
    use proto::tls_parameters::TlsProtocol as P;
    Ok(match P::try_from(v) {
        Ok(P::TlsAuto) => None,
        Ok(P::TlSv10) => Some(TlsVersion::Tls10),
        Ok(P::TlSv11) => Some(TlsVersion::Tls11),
        Ok(P::TlSv12) => Some(TlsVersion::Tls12),
        Ok(P::TlSv13) => Some(TlsVersion::Tls13),
        Err(_) => {
            return Err(ConfigError::new(
                "",
                "",
                format!("unknown TLS protocol version {v}"),
            ));
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
