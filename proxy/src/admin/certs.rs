//! `/certs`: the certificates of every TLS context in use, as Envoy lists them
//! (`envoy.admin.v3.Certificates`), for operators and Istio's bug report.
//!
//! Envoy has one TLS context per transport socket that uses TLS (a cluster's `transport_socket`
//! and each of its `transport_socket_matches`, a listener's filter chain) and lists each once its
//! secrets are there: the first certificate of its trusted CA (`ca_cert`) and the leaf of each of
//! its certificates (`cert_chain`), with serial number, SANs and validity. A context still
//! waiting for an SDS secret is not listed, as Envoy has not built it yet.

use super::{Body, proto_json, text};
use crate::config::secret::{Secret, SecretKind};
use crate::config::tls::{CertificateSource, TlsContext, TransportSocket};
use crate::server::ServerHandle;
use crate::snapshot::Snapshot;
use http::{Response, StatusCode};
use std::time::SystemTime;
use xds_client::pb::envoy::admin::v3 as admin;
use xds_client::pb::google::protobuf::Timestamp;

/// What Envoy prints as the path of a certificate given inline.
const INLINE: &str = "<inline>";

pub fn certs(handle: &ServerHandle) -> Response<Body> {
    let snapshot = handle.snapshot();
    let now = SystemTime::now();
    let certificates = contexts(&snapshot)
        .filter_map(|context| certificate(&snapshot, context, now))
        .collect();
    match xds_client::proto_json::to_value_with_defaults(&admin::Certificates { certificates }) {
        Ok(value) => proto_json(StatusCode::OK, &value, "envoy.admin.v3.Certificates"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Every TLS context of the clusters (by name), then of the listeners' filter chains.
fn contexts(snapshot: &Snapshot) -> impl Iterator<Item = &TlsContext> {
    let clusters = snapshot.clusters.values().flat_map(|c| {
        let transport = &c.config.transport;
        std::iter::once(&transport.default).chain(transport.matches.iter().map(|m| &m.socket))
    });
    let chains = snapshot.listeners.values().flat_map(|l| {
        let chains = &l.config.filter_chains;
        chains
            .chains()
            .iter()
            .chain(chains.default_chain())
            .map(|chain| &chain.transport)
    });
    clusters.chain(chains).filter_map(|socket| match socket {
        TransportSocket::Tls(context) => Some(&**context),
        TransportSocket::Plaintext => None,
    })
}

/// One context's entry, or `None` while a secret it names has not arrived.
fn certificate(
    snapshot: &Snapshot,
    context: &TlsContext,
    now: SystemTime,
) -> Option<admin::Certificate> {
    let secret = |key| snapshot.secrets.get(key).map(|s| &**s);
    let mut cert_chain = Vec::new();
    for source in &context.certificates {
        let (chain, path) = match source {
            CertificateSource::Inline(c) => (&c.chain, INLINE),
            CertificateSource::Sds(r) => match secret(&r.key)? {
                Secret {
                    kind: SecretKind::Certificate(c),
                    ..
                } => (&c.chain, INLINE),
                _ => continue,
            },
        };
        cert_chain.extend(chain.first().and_then(|der| details(der, path, now)));
    }
    let mut ca_cert = Vec::new();
    if let Some(validation) = &context.validation {
        let trusted = match &validation.sds {
            Some(r) => match secret(&r.key)? {
                Secret {
                    kind: SecretKind::Validation(v),
                    ..
                } => &v.trusted_ca,
                _ => &validation.inline.trusted_ca,
            },
            None => &validation.inline.trusted_ca,
        };
        ca_cert.extend(trusted.first().and_then(|der| details(der, INLINE, now)));
    }
    Some(admin::Certificate {
        ca_cert,
        cert_chain,
    })
}

/// Envoy's `CertificateDetails` of one DER certificate; `None` if it does not parse.
fn details(der: &[u8], path: &str, now: SystemTime) -> Option<admin::CertificateDetails> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let seconds = |t: &x509_parser::time::ASN1Time| t.timestamp();
    let expiry = seconds(&validity.not_after);
    let now_seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let subject_alt_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|ext| &ext.value.general_names)
        .filter_map(|name| {
            use admin::subject_alternate_name::Name;
            let name = match name {
                GeneralName::URI(uri) => Name::Uri(uri.to_string()),
                GeneralName::DNSName(dns) => Name::Dns(dns.to_string()),
                GeneralName::IPAddress(bytes) => Name::IpAddress(ip_text(bytes)?),
                _ => return None,
            };
            Some(admin::SubjectAlternateName { name: Some(name) })
        })
        .collect();
    Some(admin::CertificateDetails {
        path: path.to_string(),
        serial_number: serial_hex(cert.raw_serial()),
        subject_alt_names,
        // Whole days left, 0 once expired (Envoy's `getDaysUntilExpiration`).
        days_until_expiration: u64::try_from((expiry - now_seconds).max(0) / 86_400).unwrap_or(0),
        valid_from: Some(Timestamp {
            seconds: seconds(&validity.not_before),
            nanos: 0,
        }),
        expiration_time: Some(Timestamp {
            seconds: expiry,
            nanos: 0,
        }),
        ..Default::default()
    })
}

/// The serial number as OpenSSL's `BN_bn2hex` prints it, lowercased as Envoy does: whole bytes,
/// no leading zero bytes (DER adds one to keep a high bit positive), `0` for zero.
fn serial_hex(raw: &[u8]) -> String {
    let significant: Vec<&u8> = raw.iter().skip_while(|b| **b == 0).collect();
    if significant.is_empty() {
        return "0".into();
    }
    significant.iter().map(|b| format!("{b:02x}")).collect()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_print_as_openssl_does() {
        assert_eq!(serial_hex(&[0x00, 0x9a, 0x01]), "9a01");
        assert_eq!(serial_hex(&[0x13, 0x4c]), "134c");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[0x0a]), "0a");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(details(b"not DER", INLINE, SystemTime::now()).is_none());
        assert!(details(&[], INLINE, SystemTime::now()).is_none());
    }

    #[test]
    fn ip_sans_print_as_addresses() {
        assert_eq!(ip_text(&[10, 0, 0, 1]).as_deref(), Some("10.0.0.1"));
        assert_eq!(ip_text(&[0; 16]).as_deref(), Some("::"));
        assert_eq!(ip_text(&[1, 2, 3]), None);
    }
}
