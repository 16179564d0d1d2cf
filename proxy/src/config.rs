//! Validated configuration: the domain types the data path reads.
//!
//! Protobufs come in (bootstrap, later xDS) and are converted here, once, with `TryFrom`, into
//! plain Rust types with defaults applied and every reference checked. Nothing downstream of this
//! module sees a proto or re-validates. A conversion error names the resource and the field, so it
//! can be printed as one line at start-up or sent back as NACK detail.

pub mod address;
pub mod bootstrap;
pub mod cluster;
pub mod fraction;
pub mod http_connection_manager;
pub mod listener;
pub mod matcher;
pub mod route;
pub mod secret;
pub mod tcp_proxy;
pub mod tls;

use std::time::Duration;
use xds_client::pb::google::protobuf;

/// A configuration that cannot be accepted, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ConfigError {
    /// The resource: `listener "virtualInbound"`, `cluster "outbound|80||a.b"`, `bootstrap`.
    pub resource: String,
    /// The field path inside the resource, e.g. `filter_chains[2].filters[0]`.
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(
        resource: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            resource: resource.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `"<outer>.<field>: <reason>"`, for converters whose errors are plain strings.
    pub fn relative_to(self, outer: &str) -> String {
        let e = self.within(outer);
        format!("{}: {}", e.field, e.reason)
    }

    /// Prefixes the field path with the enclosing field, for errors raised by nested converters.
    pub fn within(mut self, outer: &str) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

/// A proto `Duration` as std, rejecting negative or out-of-range values.
pub fn duration(d: &protobuf::Duration) -> Result<Duration, String> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(format!("invalid duration {}s {}ns", d.seconds, d.nanos));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration: `None` when absent; `Some(ZERO)` stays zero (callers decide what 0 means).
pub fn opt_duration(d: Option<&protobuf::Duration>) -> Result<Option<Duration>, String> {
    d.map(duration).transpose()
}
