//! Secrets: a certificate chain with its private key, or the CA certificates that validate peers.
//!
//! TLS contexts name their secrets (Istio: `default` and `ROOTCA`), and the secrets arrive on
//! their own, over SDS or ADS or from the bootstrap, and rotate without touching the listeners
//! and clusters that use them. A [`Secret`] is converted once, on receipt: its data sources are
//! read (inline bytes or string, a file, an environment variable) and every PEM block is decoded,
//! so a garbage certificate is refused naming the secret and the field while the last good
//! version keeps serving.
//!
//! Invariants: private key bytes never appear in an error, a log line or `/config_dump`
//! ([`PrivateKey`]'s `Debug` hides them, [`redacted`] blanks them as Envoy does); PEM structure
//! (BEGIN/END lines, base64) is checked here, the DER inside is left to the TLS stack that will
//! use it.

use super::ConfigError;
use super::matcher::StringMatcher;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::fmt;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3 as proto;

/// What Envoy prints instead of private key material.
pub const REDACTED: &str = "[redacted]";

/// A validated secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: String,
    pub kind: SecretKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretKind {
    /// `tls_certificate`: the identity presented to peers (Istio's `default`).
    Certificate(TlsCertificate),
    /// `validation_context`: how peers are checked (Istio's `ROOTCA`).
    Validation(ValidationContext),
}

/// A certificate chain and its private key.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsCertificate {
    /// DER of each CERTIFICATE block, in the order given (leaf first).
    pub chain: Vec<Vec<u8>>,
    pub private_key: PrivateKey,
}

/// A private key as DER, with the PEM label it came under.
#[derive(Clone, PartialEq)]
pub struct PrivateKey {
    pub format: KeyFormat,
    pub der: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({:?}, {REDACTED})", self.format)
    }
}

/// Which PEM label a private key had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY` (PKCS#8).
    Pkcs8,
    /// `RSA PRIVATE KEY` (PKCS#1).
    Pkcs1,
    /// `EC PRIVATE KEY` (SEC1).
    Sec1,
}

/// A certificate validation context: trusted CAs and the peer names to accept. Used for a
/// `validation_context` secret and for the inline contexts of a TLS transport socket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValidationContext {
    /// DER of each CERTIFICATE block of `trusted_ca`; empty when not set.
    pub trusted_ca: Vec<Vec<u8>>,
    /// `system_root_certs`: the operating system's roots are trusted too.
    pub system_roots: bool,
    /// DER of each X509 CRL block of `crl`.
    pub crl: Vec<Vec<u8>>,
    /// `match_typed_subject_alt_names` and the older `match_subject_alt_names`; a peer must
    /// match one of them (none: any name).
    pub subject_alt_names: Vec<SanMatcher>,
}

/// One accepted subject alternative name.
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher {
    /// `None` for the untyped `match_subject_alt_names` (any SAN type).
    pub san_type: Option<SanType>,
    pub matcher: StringMatcher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Email,
    Dns,
    Uri,
    IpAddress,
}

impl TryFrom<&proto::Secret> for Secret {
    type Error = ConfigError;

    fn try_from(s: &proto::Secret) -> Result<Self, ConfigError> {
        let resource = format!("secret {:?}", s.name);
        let within = |e: ConfigError, field: &str| ConfigError {
            resource: resource.clone(),
            ..e.within(field)
        };
        if s.name.is_empty() {
            return Err(ConfigError::new(&resource, "name", "must not be empty"));
        }
        use proto::secret::Type;
        let kind = match &s.r#type {
            Some(Type::TlsCertificate(c)) => SecretKind::Certificate(
                TlsCertificate::try_from(c).map_err(|e| within(e, "tls_certificate"))?,
            ),
            Some(Type::ValidationContext(v)) => SecretKind::Validation(
                ValidationContext::try_from(v).map_err(|e| within(e, "validation_context"))?,
            ),
            Some(Type::SessionTicketKeys(_)) => {
                return Err(ConfigError::new(
                    &resource,
                    "session_ticket_keys",
                    "session ticket key secrets are not supported",
                ));
            }
            Some(Type::GenericSecret(_)) => {
                return Err(ConfigError::new(
                    &resource,
                    "generic_secret",
                    "generic secrets are not supported",
                ));
            }
            None => {
                return Err(ConfigError::new(
                    &resource,
                    "",
                    "tls_certificate or validation_context is required",
                ));
            }
        };
        Ok(Secret {
            name: s.name.clone(),
            kind,
        })
    }
}

impl TryFrom<&proto::TlsCertificate> for TlsCertificate {
    type Error = ConfigError;

    fn try_from(c: &proto::TlsCertificate) -> Result<Self, ConfigError> {
        let err = |field: &str, reason: String| ConfigError::new("", field, reason);
        if c.private_key_provider.is_some() {
            return Err(err(
                "private_key_provider",
                "private key providers are not supported".into(),
            ));
        }
        if c.pkcs12.is_some() {
            return Err(err("pkcs12", "PKCS#12 bundles are not supported".into()));
        }
        if c.password.is_some() {
            return Err(err(
                "password",
                "encrypted private keys are not supported".into(),
            ));
        }
        let chain_source = c
            .certificate_chain
            .as_ref()
            .ok_or_else(|| err("certificate_chain", "is required".into()))?;
        let chain_bytes = read(chain_source).map_err(|r| err("certificate_chain", r))?;
        let chain = certificates(&chain_bytes).map_err(|r| err("certificate_chain", r))?;
        let key_source = c
            .private_key
            .as_ref()
            .ok_or_else(|| err("private_key", "is required".into()))?;
        // A key's read error may name a file, never the key's content.
        let key_bytes = read(key_source).map_err(|r| err("private_key", r))?;
        let private_key = private_key(&key_bytes).map_err(|r| err("private_key", r))?;
        Ok(TlsCertificate { chain, private_key })
    }
}

impl TryFrom<&proto::CertificateValidationContext> for ValidationContext {
    type Error = ConfigError;

    fn try_from(v: &proto::CertificateValidationContext) -> Result<Self, ConfigError> {
        let err = |field: &str, reason: String| ConfigError::new("", field, reason);
        // Checks that narrow who is trusted are refused rather than skipped: skipping them would
        // accept peers the configuration meant to turn away.
        if v.custom_validator_config.is_some() {
            return Err(err(
                "custom_validator_config",
                "custom certificate validators are not supported".into(),
            ));
        }
        if v.ca_certificate_provider_instance.is_some() {
            return Err(err(
                "ca_certificate_provider_instance",
                "certificate provider instances are not supported".into(),
            ));
        }
        if !v.verify_certificate_spki.is_empty() {
            return Err(err(
                "verify_certificate_spki",
                "SPKI pinning is not supported".into(),
            ));
        }
        if !v.verify_certificate_hash.is_empty() {
            return Err(err(
                "verify_certificate_hash",
                "certificate hash pinning is not supported".into(),
            ));
        }
        let trusted_ca = match &v.trusted_ca {
            Some(source) => read(source)
                .and_then(|bytes| certificates(&bytes))
                .map_err(|r| err("trusted_ca", r))?,
            None => Vec::new(),
        };
        let crl = match &v.crl {
            Some(source) => read(source)
                .and_then(|bytes| revocation_lists(&bytes))
                .map_err(|r| err("crl", r))?,
            None => Vec::new(),
        };
        let mut subject_alt_names = Vec::new();
        for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
            let field = format!("match_typed_subject_alt_names[{i}]");
            subject_alt_names.push(san_matcher(m).map_err(|e| e.within(&field))?);
        }
        // As Envoy: the typed matchers, when given, replace the deprecated untyped ones.
        #[allow(deprecated)] // still what Istio sends
        let untyped = if subject_alt_names.is_empty() {
            v.match_subject_alt_names.as_slice()
        } else {
            &[]
        };
        for (i, m) in untyped.iter().enumerate() {
            let field = format!("match_subject_alt_names[{i}]");
            subject_alt_names.push(SanMatcher {
                san_type: None,
                matcher: StringMatcher::try_from(m).map_err(|e| e.within(&field))?,
            });
        }
        Ok(ValidationContext {
            trusted_ca,
            system_roots: v.system_root_certs.is_some(),
            crl,
            subject_alt_names,
        })
    }
}

impl xds_client::ads::SanMatcher for SanMatcher {
    /// Envoy's `StringSanMatcher`: the SAN's type must be the matcher's (an untyped matcher takes
    /// DNS, URI, email and IP SANs); an IP SAN is matched as its text; an `exact` DNS matcher
    /// follows DNS rules (case-insensitive, a `*.` wildcard SAN covers one label).
    fn matches(&self, san: &xds_client::ads::SubjectAltName) -> bool {
        use super::matcher::StringPattern;
        use xds_client::ads::SubjectAltName as San;
        let (san_type, text) = match san {
            San::Dns(v) => (SanType::Dns, std::borrow::Cow::Borrowed(v.as_str())),
            San::Uri(v) => (SanType::Uri, std::borrow::Cow::Borrowed(v.as_str())),
            San::Email(v) => (SanType::Email, std::borrow::Cow::Borrowed(v.as_str())),
            San::Ip(ip) => (SanType::IpAddress, std::borrow::Cow::Owned(ip.to_string())),
        };
        if self.san_type.is_some_and(|t| t != san_type) {
            return false;
        }
        match &self.matcher.pattern {
            StringPattern::Exact(name) if san_type == SanType::Dns => dns_name_match(name, &text),
            _ => self.matcher.matches(&text),
        }
    }
}

/// Whether the DNS SAN `pattern` (which may be a wildcard such as `*.example.com` or
/// `a*.example.com`) covers `name`, as Envoy's `dnsNameMatch`.
fn dns_name_match(name: &str, pattern: &str) -> bool {
    let (name, pattern) = (name.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    if name == pattern {
        return true;
    }
    let (Some((name_label, name_rest)), Some((pattern_label, pattern_rest))) =
        (name.split_once('.'), pattern.split_once('.'))
    else {
        return false;
    };
    if !pattern_label.contains('*')
        || pattern_rest.contains('*')
        || pattern_label.starts_with("xn--")
    {
        return false;
    }
    if name_rest != pattern_rest {
        return false;
    }
    match pattern_label.split_once('*') {
        _ if pattern_label == "*" => true,
        Some((before, after)) if !after.contains('*') => {
            pattern_label.len() <= name_label.len() + 1
                && name_label.starts_with(before)
                && name_label.ends_with(after)
        }
        _ => false,
    }
}

fn san_matcher(m: &proto::SubjectAltNameMatcher) -> Result<SanMatcher, ConfigError> {
    use proto::subject_alt_name_matcher::SanType as P;
    let san_type = match P::try_from(m.san_type) {
        Ok(P::Email) => SanType::Email,
        Ok(P::Dns) => SanType::Dns,
        Ok(P::Uri) => SanType::Uri,
        Ok(P::IpAddress) => SanType::IpAddress,
        Ok(P::OtherName) => {
            return Err(ConfigError::new(
                "",
                "san_type",
                "OTHER_NAME is not supported",
            ));
        }
        Ok(P::Unspecified) | Err(_) => {
            return Err(ConfigError::new(
                "",
                "san_type",
                "EMAIL, DNS, URI or IP_ADDRESS is required",
            ));
        }
    };
    let matcher = m
        .matcher
        .as_ref()
        .ok_or_else(|| ConfigError::new("", "matcher", "is required"))?;
    Ok(SanMatcher {
        san_type: Some(san_type),
        matcher: StringMatcher::try_from(matcher).map_err(|e| e.within("matcher"))?,
    })
}

/// The bytes of a data source. Files and environment variables are read now, once.
fn read(source: &core::DataSource) -> Result<Vec<u8>, String> {
    use core::data_source::Specifier;
    match &source.specifier {
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(Specifier::Filename(path)) => {
            std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
        }
        Some(Specifier::EnvironmentVariable(name)) => std::env::var_os(name)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| format!("environment variable {name:?} is not set")),
        None => Err(
            "one of filename, inline_bytes, inline_string or environment_variable is required"
                .into(),
        ),
    }
}

/// Every CERTIFICATE block of `pem`, at least one.
fn certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .map(|c| c.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if chain.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(chain)
}

/// Every X509 CRL block, at least one.
fn revocation_lists(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .map(|c| c.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if crls.is_empty() {
        return Err("no PEM X509 CRL block found".into());
    }
    Ok(crls)
}

/// The first private key block.
fn private_key(bytes: &[u8]) -> Result<PrivateKey, String> {
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(PrivateKey {
            format: KeyFormat::Pkcs8,
            der: k.secret_pkcs8_der().to_vec(),
        }),
        Ok(PrivateKeyDer::Pkcs1(k)) => Ok(PrivateKey {
            format: KeyFormat::Pkcs1,
            der: k.secret_pkcs1_der().to_vec(),
        }),
        Ok(PrivateKeyDer::Sec1(k)) => Ok(PrivateKey {
            format: KeyFormat::Sec1,
            der: k.secret_sec1_der().to_vec(),
        }),
        Ok(_) => Err("unknown private key format".into()),
        Err(pem::Error::NoItemsFound) => Err(
            "no PEM private key block found (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                .into(),
        ),
        Err(e) => Err(pem_error(e)),
    }
}

/// A PEM error in our words: never the bytes involved, which may be key material.
fn pem_error(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "malformed PEM: a block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM: a bad BEGIN line".into(),
        pem::Error::Base64Decode(_) => "malformed PEM: a block is not valid base64".into(),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        pem::Error::SectionTooLarge => "malformed PEM: a block is too large".into(),
        other => format!("malformed PEM: {other}"),
    }
}

/// `secret` as `/config_dump` shows it: private key material replaced by `[redacted]` in
/// whichever field held it (Envoy redacts the file name too).
pub fn redacted(secret: &proto::Secret) -> proto::Secret {
    let mut out = secret.clone();
    if let Some(proto::secret::Type::TlsCertificate(c)) = &mut out.r#type {
        for source in [&mut c.private_key, &mut c.password].into_iter().flatten() {
            redact(source);
        }
    }
    out
}

fn redact(source: &mut core::DataSource) {
    use core::data_source::Specifier;
    source.specifier = match &source.specifier {
        Some(Specifier::InlineBytes(_)) => Some(Specifier::InlineBytes(REDACTED.into())),
        Some(Specifier::InlineString(_)) => Some(Specifier::InlineString(REDACTED.into())),
        Some(Specifier::Filename(_)) => Some(Specifier::Filename(REDACTED.into())),
        Some(Specifier::EnvironmentVariable(_)) => {
            Some(Specifier::EnvironmentVariable(REDACTED.into()))
        }
        None => None,
    };
}

#[cfg(test)]
pub(crate) mod tests;
