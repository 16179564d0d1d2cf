//! TLS (and mTLS) to the control plane, as Envoy does when the ADS or SDS cluster carries an
//! `envoy.transport_sockets.tls` `UpstreamTlsContext`.
//!
//! [`TlsOptions`] is the context as plain data (the caller reads the bootstrap's data sources);
//! [`XdsTls::new`] turns it into a rustls client configuration once, so a key that does not fit
//! its certificate or a CA that does not parse is a start-up error, never a connect-time one.
//!
//! Verification follows Envoy, not browsers:
//! - the server's chain must lead to one of the configured trusted CAs (the system's roots only
//!   when asked for), checked against the CRLs given; with no trusted CA at all nothing is
//!   verified (Envoy's default, "verification is not enabled");
//! - the server's name is not checked against SNI; instead, when SAN matchers are configured,
//!   one of the certificate's DNS, URI, email or IP SANs must satisfy one of them (Istio pins
//!   istiod's `spiffe://` URI SAN this way). Matching semantics belong to the caller's
//!   [`SanMatcher`].
//!
//! A failed handshake is a connect failure: the error names the cause in words (unknown CA, SAN
//! mismatch, a server that wants a client certificate) and the client backs off and retries.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, OtherError,
    RootCertStore, SignatureScheme,
};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the operating system keeps its CA bundle (Debian, RHEL, Alpine), for
/// `system_root_certs`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A subject alternative name of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Uri(String),
    Email(String),
    Ip(IpAddr),
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(v) => write!(f, "DNS:{v}"),
            SubjectAltName::Uri(v) => write!(f, "URI:{v}"),
            SubjectAltName::Email(v) => write!(f, "email:{v}"),
            SubjectAltName::Ip(v) => write!(f, "IP:{v}"),
        }
    }
}

/// One accepted server name (`match_typed_subject_alt_names` entry).
pub trait SanMatcher: fmt::Debug + Send + Sync {
    fn matches(&self, san: &SubjectAltName) -> bool;
}

/// TLS protocol versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// A certificate chain (leaf first) and its private key: the client's identity for mTLS.
pub struct ClientCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientCertificate({} certificates, key hidden)",
            self.chain.len()
        )
    }
}

/// An `UpstreamTlsContext` for the control plane, as data.
#[derive(Debug, Default)]
pub struct TlsOptions {
    /// Trusted CA certificates (DER). Empty and no `system_roots`: the server is not verified.
    pub trusted_ca: Vec<CertificateDer<'static>>,
    /// Trust the operating system's CA bundle too.
    pub system_roots: bool,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Any one must match a SAN of the server's certificate (none: any name).
    pub subject_alt_names: Vec<Arc<dyn SanMatcher>>,
    pub client_certificate: Option<ClientCertificate>,
    /// SNI to send (`None`: none).
    pub sni: Option<String>,
    /// Offered ALPN protocols; empty offers `h2`.
    pub alpn: Vec<String>,
    /// Protocol bounds; `None` is Envoy's client default (min TLS 1.2, max TLS 1.2).
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    /// `max_session_keys: 0`: no session resumption.
    pub disable_resumption: bool,
}

/// Why a [`TlsOptions`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("trusted_ca: {0}")]
    TrustedCa(String),
    #[error("system_root_certs: no CA bundle found (looked in {})", SYSTEM_BUNDLES.join(", "))]
    NoSystemRoots,
    #[error("crl: {0}")]
    Crl(String),
    #[error("tls_params: minimum version {min:?} is above maximum {max:?}")]
    Versions { min: TlsVersion, max: TlsVersion },
    #[error("sni: {0:?} is not a valid DNS name")]
    Sni(String),
    #[error("tls_certificates: {0}")]
    ClientCertificate(String),
    /// The crypto provider cannot serve the versions asked for (not with ring's defaults).
    #[error("TLS provider: {0}")]
    Provider(String),
}

/// A built TLS client for one control plane. Clones share the configuration; two are equal
/// when they are clones of one another.
#[derive(Clone)]
pub struct XdsTls {
    config: Arc<ClientConfig>,
    /// The SNI to send; `None`: none.
    sni: Option<ServerName<'static>>,
    client_certificate: bool,
}

impl fmt::Debug for XdsTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsTls")
            .field("sni", &self.sni)
            .field("alpn", &self.config.alpn_protocols)
            .field("client_certificate", &self.client_certificate)
            .finish()
    }
}

impl PartialEq for XdsTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.sni == other.sni
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl XdsTls {
    pub fn new(options: TlsOptions) -> Result<XdsTls, TlsConfigError> {
        let provider = provider();
        let versions = versions(options.min_version, options.max_version)?;
        let verifier: Arc<dyn ServerCertVerifier> =
            if options.trusted_ca.is_empty() && !options.system_roots {
                Arc::new(AnyServer {
                    provider: provider.clone(),
                })
            } else {
                let roots = roots(&options)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .with_crls(options.crls)
                        .build()
                        .map_err(|e| TlsConfigError::Crl(e.to_string()))?;
                Arc::new(EnvoyVerifier {
                    webpki,
                    subject_alt_names: options.subject_alt_names,
                })
            };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| TlsConfigError::Provider(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client_certificate = options.client_certificate.is_some();
        let mut config = match options.client_certificate {
            Some(c) => builder
                .with_client_auth_cert(c.chain, c.key)
                .map_err(|e| TlsConfigError::ClientCertificate(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if options.alpn.is_empty() {
            vec![b"h2".to_vec()]
        } else {
            options.alpn.into_iter().map(String::into_bytes).collect()
        };
        if options.disable_resumption {
            config.resumption = Resumption::disabled();
        }
        let sni = options
            .sni
            .map(|name| {
                ServerName::try_from(name.clone())
                    .ok()
                    .filter(|n| matches!(n, ServerName::DnsName(_)))
                    .ok_or(TlsConfigError::Sni(name))
            })
            .transpose()?;
        Ok(XdsTls {
            config: Arc::new(config),
            sni,
            client_certificate,
        })
    }

    /// Whether a client certificate is offered (mTLS).
    pub fn presents_client_certificate(&self) -> bool {
        self.client_certificate
    }

    /// Runs the handshake on `stream`, sending the configured SNI (none without one, as Envoy).
    pub(crate) async fn handshake<S>(&self, stream: S) -> Result<TlsStream<S>, HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // rustls sends no SNI for an IP address, and the name is never verified (module docs).
        let name = self
            .sni
            .clone()
            .unwrap_or(ServerName::IpAddress(IpAddr::from([127, 0, 0, 1]).into()));
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| HandshakeError::new(&e, self.client_certificate))
    }
}

/// The protocol versions between `min` and `max` (Envoy's client defaults: TLS 1.2 to 1.2, or
/// up to `min` when that is higher).
fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsConfigError> {
    let min = min.unwrap_or(TlsVersion::Tls12);
    let max = max.unwrap_or(TlsVersion::Tls12.max(min));
    if max < min {
        return Err(TlsConfigError::Versions { min, max });
    }
    Ok([
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (min..=max).contains(v))
    .map(|(_, v)| v)
    .collect())
}

/// Why a handshake failed, in words.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {0}")]
pub struct HandshakeError(String);

impl HandshakeError {
    fn new(e: &std::io::Error, client_certificate: bool) -> HandshakeError {
        use rustls::Error as E;
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
            return HandshakeError(e.to_string());
        };
        let no_client_certificate = if client_certificate {
            ""
        } else {
            " (no client certificate is configured; the server may require one)"
        };
        HandshakeError(match tls {
            E::InvalidCertificate(CertificateError::UnknownIssuer) => {
                "the server's certificate is not signed by a trusted CA (unknown issuer)".into()
            }
            E::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
                match other.downcast_ref::<SanMismatch>() {
                    Some(mismatch) => mismatch.to_string(),
                    None => format!("the server's certificate is refused: {other}"),
                }
            }
            E::InvalidCertificate(other) => {
                format!("the server's certificate is refused: {other:?}")
            }
            E::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::HandshakeFailure
                | AlertDescription::BadCertificate),
            ) => format!(
                "the server refused the handshake with alert {alert:?}{no_client_certificate}"
            ),
            E::AlertReceived(alert) => {
                format!("the server refused the handshake with alert {alert:?}")
            }
            E::NoApplicationProtocol => {
                "the server speaks none of the offered ALPN protocols".into()
            }
            other => other.to_string(),
        })
    }
}

/// The server's SANs satisfied none of the matchers.
#[derive(Debug)]
struct SanMismatch {
    presented: Vec<SubjectAltName>,
    wanted: usize,
}

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let presented: Vec<String> = self.presented.iter().map(ToString::to_string).collect();
        write!(
            f,
            "the server's certificate SANs [{}] match none of the {} subject_alt_names matchers",
            presented.join(", "),
            self.wanted
        )
    }
}

impl std::error::Error for SanMismatch {}

/// The configured trust: the CAs given, and the system bundle if asked for.
fn roots(options: &TlsOptions) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, ca) in options.trusted_ca.iter().enumerate() {
        roots
            .add(ca.clone())
            .map_err(|e| TlsConfigError::TrustedCa(format!("certificate {i}: {e}")))?;
    }
    if options.system_roots {
        let bundle = SYSTEM_BUNDLES
            .iter()
            .find_map(|path| std::fs::read(path).ok())
            .ok_or(TlsConfigError::NoSystemRoots)?;
        let certificates = CertificateDer::pem_slice_iter(&bundle).filter_map(Result::ok);
        // A distribution bundle may hold a certificate webpki cannot use; skip it, as OpenSSL would.
        let _ = roots.add_parsable_certificates(certificates);
    }
    Ok(roots)
}

/// The SANs of a DER certificate; empty if it does not parse (the chain check refuses it then).
pub fn subject_alt_names(der: &[u8]) -> Vec<SubjectAltName> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(v) => Some(SubjectAltName::Dns(v.to_string())),
            GeneralName::URI(v) => Some(SubjectAltName::Uri(v.to_string())),
            GeneralName::RFC822Name(v) => Some(SubjectAltName::Email(v.to_string())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            }
            .map(SubjectAltName::Ip),
            _ => None,
        })
        .collect()
}

/// Envoy's default validator: the chain against the trusted CAs (and CRLs), then the SAN
/// matchers; never the name against SNI.
#[derive(Debug)]
struct EnvoyVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    subject_alt_names: Vec<Arc<dyn SanMatcher>>,
}

impl ServerCertVerifier for EnvoyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain: a name error means the chain is good.
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if self.subject_alt_names.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = subject_alt_names(end_entity);
        if presented
            .iter()
            .any(|san| self.subject_alt_names.iter().any(|m| m.matches(san)))
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(SanMismatch {
                presented,
                wanted: self.subject_alt_names.len(),
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// No trusted CA configured: Envoy does not verify the server. The handshake signatures are
/// still checked (the server must hold the key of the certificate it shows).
#[derive(Debug)]
struct AnyServer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
