//! `envoy.filters.http.rbac`: the RBAC engine ([`crate::rbac`]) per request, with Envoy's
//! reply (403 `RBAC: access denied`, details `rbac_access_denied_matched_policy[<policy>]` or
//! `[none]`, no response flag), its counters (`http.<stat_prefix>.rbac.<rules_stat_prefix>allowed`
//! and `denied`, `...<shadow_rules_stat_prefix>.shadow_allowed`/`shadow_denied`, shared by every
//! RBAC filter of the chain with the same prefixes, as in Envoy), and `RBACPerRoute` overrides
//! (the most specific one replaces the filter's rules; one without `rbac` turns enforcement off
//! for its routes, as in Envoy; per-route rules count into the filter's counters).
//!
//! Not supported, and harmless to skip: `track_per_rule_stats` (per-policy counters), the
//! dynamic metadata Envoy writes for shadow results and `LOG` decisions, audit loggers.

use crate::config::http_connection_manager::HttpConnectionManager;
use crate::config::matcher::RequestView;
use crate::rbac::{Enforcement, Rbac, RbacError, RbacStats, Subject};
use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use xds_client::any;
use xds_client::pb::envoy::extensions::filters::http::rbac::v3 as proto;
use xds_client::pb::google::protobuf::Any;

pub const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub const RBAC_PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

/// The body of Envoy's denial.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// One RBAC filter's (or per-route override's) rules.
#[derive(Debug)]
pub struct RbacFilter {
    /// `None`: requests are not checked (rules absent, or a per-route config without `rbac`).
    pub enforced: Option<Enforcement>,
    pub shadow: Option<Rbac>,
    pub rules_stat_prefix: String,
    pub shadow_rules_stat_prefix: String,
}

impl TryFrom<&proto::Rbac> for RbacFilter {
    type Error = RbacError;

    fn try_from(p: &proto::Rbac) -> Result<Self, RbacError> {
        let enforced = Enforcement::from_rules(p.rules.as_ref(), p.matcher.is_some())?;
        if let Some(Enforcement::FailClosed { reason }) = &enforced {
            tracing::warn!(%reason, "HTTP RBAC filter fails closed: every request is denied");
        }
        Ok(RbacFilter {
            enforced,
            shadow: crate::rbac::shadow_rules(p.shadow_rules.as_ref(), p.shadow_matcher.is_some())?,
            rules_stat_prefix: p.rules_stat_prefix.clone(),
            shadow_rules_stat_prefix: p.shadow_rules_stat_prefix.clone(),
        })
    }
}

impl RbacFilter {
    /// The filter's own `typed_config`.
    pub fn from_any(value: &Any) -> Result<Arc<RbacFilter>, String> {
        let p: proto::Rbac = any::unpack(value).map_err(|e| e.to_string())?;
        RbacFilter::try_from(&p)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// An `RBACPerRoute` entry; without `rbac` it disables the filter for its routes.
    pub fn per_route_from_any(value: &Any) -> Result<Arc<RbacFilter>, String> {
        let p: proto::RbacPerRoute = any::unpack(value).map_err(|e| e.to_string())?;
        match &p.rbac {
            Some(r) => RbacFilter::try_from(r)
                .map(Arc::new)
                .map_err(|e| format!("rbac.{e}")),
            None => Ok(Arc::new(RbacFilter {
                enforced: None,
                shadow: None,
                rules_stat_prefix: String::new(),
                shadow_rules_stat_prefix: String::new(),
            })),
        }
    }

    /// Checks one request; `Err(details)` when it is denied.
    pub fn check(&self, stats: Option<&RbacStats>, subject: &Subject<'_>) -> Result<(), String> {
        let decision = match stats {
            Some(stats) => stats.evaluate(self.enforced.as_ref(), self.shadow.as_ref(), subject),
            None => self.enforced.as_ref().map(|e| e.check(subject)),
        };
        match decision {
            Some(d) if !d.allowed => Err(format!(
                "rbac_access_denied_matched_policy[{}]",
                d.policy.unwrap_or("none").replace([' ', '\t'], "_")
            )),
            _ => Ok(()),
        }
    }
}

/// The counters of every RBAC filter in a chain, by (rules, shadow) stat prefix.
pub type ChainRbacStats = std::collections::HashMap<(String, String), RbacStats>;

/// Builds the stats of `filters` (rules prefix, shadow prefix) under the HCM's `stat_prefix`.
pub fn chain_stats<'a>(
    store: &crate::stats::Store,
    stat_prefix: &str,
    filters: impl Iterator<Item = &'a RbacFilter>,
) -> ChainRbacStats {
    let prefix = format!("http.{stat_prefix}.");
    let mut stats = ChainRbacStats::new();
    for f in filters {
        let key = (
            f.rules_stat_prefix.clone(),
            f.shadow_rules_stat_prefix.clone(),
        );
        stats.entry(key).or_insert_with(|| {
            RbacStats::new(
                store,
                &prefix,
                &f.rules_stat_prefix,
                &f.shadow_rules_stat_prefix,
            )
        });
    }
    stats
}

/// The downstream remote address Envoy's connection manager settles on: with
/// `use_remote_address`, the peer (or, with `xff_num_trusted_hops`, the client the trusted hops
/// name); otherwise the `x-forwarded-for` entry `xff_num_trusted_hops` from the right, falling
/// back to the peer. `headers` are the request's after Tern appended the peer to
/// `x-forwarded-for` (which it does with `use_remote_address` unless `skip_xff_append`).
pub fn downstream_remote(
    hcm: &HttpConnectionManager,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> IpAddr {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let skip = if hcm.use_remote_address {
        if hcm.xff_num_trusted_hops == 0 {
            return peer.ip();
        }
        let appended = usize::from(!hcm.skip_xff_append);
        hcm.xff_num_trusted_hops as usize - 1 + appended
    } else {
        hcm.xff_num_trusted_hops as usize
    };
    xff.len()
        .checked_sub(skip + 1)
        .and_then(|i| xff[i].trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.ip())
}

/// The subject of one request.
pub fn subject<'a>(ctx: &'a super::ConnectionContext, request: RequestView<'a>) -> Subject<'a> {
    Subject {
        local: ctx.local,
        peer: ctx.peer,
        remote: downstream_remote(&ctx.hcm, ctx.peer, request.headers),
        server_name: "",
        // Tern serves no TLS-terminating chain yet: every request arrived in plaintext.
        peer_certificate: None,
        request: Some(request),
    }
}
