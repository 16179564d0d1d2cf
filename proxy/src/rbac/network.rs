//! `envoy.filters.network.rbac`: the RBAC engine applied to a whole connection, after filter
//! chain selection, with the connection's addresses and SNI (request headers are empty, as in
//! Envoy's network filter).
//!
//! Envoy's default enforcement, `ONE_TIME_ON_FIRST_BYTE`, decides when the first byte arrives
//! from downstream. The decision reads nothing from the bytes, so Tern computes it up front but
//! acts on it the same way: a denied connection is closed once its first byte arrives (after
//! `delay_deny`, if set), and `denied` is counted then; a client that never sends is never
//! counted. One deliberate difference: Envoy's `tcp_proxy` after the filter has already
//! connected upstream by then (and relays what a server-first upstream sends); Tern opens no
//! upstream for a denied connection. An allowed connection is counted `allowed` when it is
//! accepted, not at its first byte. `CONTINUOUS` enforcement (for protocol filters that emit
//! metadata per message) would decide the same for every message, since nothing Tern evaluates
//! changes during a connection, so it is treated as the one-time check (Envoy would count the
//! decision once per read rather than once).

use super::{Enforcement, Rbac, RbacError, RbacStats, Subject};
use std::time::Duration;
use xds_client::pb::envoy::extensions::filters::network::rbac::v3 as proto;

/// A converted network RBAC filter.
#[derive(Debug)]
pub struct NetworkRbac {
    pub stat_prefix: String,
    pub shadow_rules_stat_prefix: String,
    /// `None`: no enforcement (only shadow rules, if any).
    pub enforced: Option<Enforcement>,
    pub shadow: Option<Rbac>,
    pub delay_deny: Option<Duration>,
}

impl TryFrom<&proto::Rbac> for NetworkRbac {
    type Error = RbacError;

    fn try_from(p: &proto::Rbac) -> Result<Self, RbacError> {
        let enforced = Enforcement::from_rules(p.rules.as_ref(), p.matcher.is_some())?;
        if let Some(Enforcement::FailClosed { reason }) = &enforced {
            tracing::warn!(%reason, stat_prefix = %p.stat_prefix, "network RBAC filter fails closed: every connection is denied");
        }
        let delay_deny = p
            .delay_deny
            .as_ref()
            .map(|d| {
                crate::config::opt_duration(Some(d)).map_err(|r| RbacError::Invalid {
                    field: "delay_deny".into(),
                    reason: r,
                })
            })
            .transpose()?
            .flatten()
            .filter(|d| !d.is_zero());
        Ok(NetworkRbac {
            stat_prefix: p.stat_prefix.clone(),
            shadow_rules_stat_prefix: p.shadow_rules_stat_prefix.clone(),
            enforced,
            shadow: super::shadow_rules(p.shadow_rules.as_ref(), p.shadow_matcher.is_some())?,
            delay_deny,
        })
    }
}

impl NetworkRbac {
    /// The stats this filter counts into.
    pub fn stats(&self, store: &crate::stats::Store) -> RbacStats {
        RbacStats::new(store, &self.stat_prefix, "", &self.shadow_rules_stat_prefix)
    }

    /// Whether the connection may go on to the next filter; `false`: close it.
    pub fn allows(&self, subject: &Subject<'_>) -> bool {
        self.enforced
            .as_ref()
            .is_none_or(|e| e.check(subject).allowed)
    }
}
