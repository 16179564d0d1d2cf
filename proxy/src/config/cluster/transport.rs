//! Which transport socket an upstream connection uses: the cluster's `transport_socket_matches`
//! tried against the endpoint's `envoy.transport_socket_match` metadata, else its
//! `transport_socket`.
//!
//! This is how Istio's auto-mTLS works: every mesh cluster carries a `tlsMode-istio` match
//! (`{tlsMode: istio}` → an UpstreamTlsContext) and a catch-all plaintext one, and each endpoint
//! says whether its pod has a sidecar. Selection follows Envoy's `TransportSocketMatcherImpl`:
//! the matches in order against the endpoint's metadata, then in order against its locality's,
//! then the default; a match's labels must all be present with equal values (no labels: matches
//! anything).

use super::super::ConfigError;
use crate::config::tls::{self, SdsSecretRef, Side, TransportSocket};
use std::collections::BTreeMap;
use xds_client::pb::envoy::config::cluster::v3 as proto;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::google::protobuf;

/// The metadata filter Envoy matches transport sockets on.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// A cluster's transport sockets.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTransport {
    /// `transport_socket` (plaintext when unset).
    pub default: TransportSocket,
    pub matches: Vec<TransportSocketMatch>,
}

impl Default for UpstreamTransport {
    fn default() -> Self {
        UpstreamTransport {
            default: TransportSocket::Plaintext,
            matches: Vec::new(),
        }
    }
}

/// One `transport_socket_matches` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportSocketMatch {
    pub name: String,
    pub labels: Labels,
    pub socket: TransportSocket,
}

/// Metadata values by key, as one `filter_metadata` entry holds them.
pub type Labels = BTreeMap<String, MetadataValue>;

/// A `google.protobuf.Value`, compared as Envoy's `ValueUtil::equal` does.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    Null,
    Number(f64),
    String(String),
    Bool(bool),
    Struct(BTreeMap<String, MetadataValue>),
    List(Vec<MetadataValue>),
}

/// An endpoint's `envoy.transport_socket_match` metadata and its locality's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SocketMatchMetadata {
    pub endpoint: Option<Labels>,
    pub locality: Option<Labels>,
}

impl UpstreamTransport {
    /// The transport socket for an endpoint with `metadata`, and the name of the match that chose
    /// it (`None`: the cluster's default).
    pub fn select(
        &self,
        metadata: Option<&SocketMatchMetadata>,
    ) -> (Option<&str>, &TransportSocket) {
        let (endpoint, locality) =
            metadata.map_or((None, None), |m| (m.endpoint.as_ref(), m.locality.as_ref()));
        for labels in [endpoint, locality] {
            if let Some(m) = self
                .matches
                .iter()
                .find(|m| labels_match(&m.labels, labels))
            {
                return (Some(&m.name), &m.socket);
            }
        }
        (None, &self.default)
    }

    /// Every SDS secret any of the sockets names.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SdsSecretRef> {
        std::iter::once(&self.default)
            .chain(self.matches.iter().map(|m| &m.socket))
            .flat_map(TransportSocket::secret_refs)
    }

    /// Whether every socket is plaintext (no endpoint can need TLS).
    pub fn is_plaintext(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.matches.iter().map(|m| &m.socket))
            .all(|s| *s == TransportSocket::Plaintext)
    }
}

/// Envoy's `metadataLabelMatch` (lists compared whole): every wanted label present and equal.
fn labels_match(wanted: &Labels, present: Option<&Labels>) -> bool {
    match present {
        None => wanted.is_empty(),
        Some(present) => wanted.iter().all(|(k, v)| present.get(k) == Some(v)),
    }
}

/// A cluster's `transport_socket` and `transport_socket_matches`.
pub fn upstream_transport(c: &proto::Cluster) -> Result<UpstreamTransport, ConfigError> {
    if c.transport_socket_matcher.is_some() {
        return Err(ConfigError::new(
            "",
            "transport_socket_matcher",
            "is not supported (use transport_socket_matches)",
        ));
    }
    let default = match &c.transport_socket {
        Some(ts) => {
            tls::transport_socket(ts, Side::Upstream).map_err(|e| e.within("transport_socket"))?
        }
        None => TransportSocket::Plaintext,
    };
    let mut matches = Vec::with_capacity(c.transport_socket_matches.len());
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let field = format!("transport_socket_matches[{i}]");
        let socket = match &m.transport_socket {
            Some(ts) => tls::transport_socket(ts, Side::Upstream)
                .map_err(|e| e.within(&format!("{field}.transport_socket")))?,
            None => {
                return Err(ConfigError::new(
                    "",
                    format!("{field}.transport_socket"),
                    "is required",
                ));
            }
        };
        matches.push(TransportSocketMatch {
            name: m.name.clone(),
            labels: m.r#match.as_ref().map(labels).unwrap_or_default(),
            socket,
        });
    }
    Ok(UpstreamTransport { default, matches })
}

/// The `envoy.transport_socket_match` entry of an endpoint's or locality's metadata.
pub fn socket_match_labels(metadata: Option<&core::Metadata>) -> Option<Labels> {
    metadata
        .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH))
        .map(labels)
}

fn labels(s: &protobuf::Struct) -> Labels {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect()
}

fn value(v: &protobuf::Value) -> MetadataValue {
    use protobuf::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => MetadataValue::Null,
        Some(Kind::NumberValue(n)) => MetadataValue::Number(*n),
        Some(Kind::StringValue(s)) => MetadataValue::String(s.clone()),
        Some(Kind::BoolValue(b)) => MetadataValue::Bool(*b),
        Some(Kind::StructValue(s)) => MetadataValue::Struct(labels(s)),
        Some(Kind::ListValue(l)) => MetadataValue::List(l.values.iter().map(value).collect()),
    }
}

#[cfg(test)]
mod tests;
