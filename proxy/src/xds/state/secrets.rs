//! Secrets in the xDS view: which ones the listeners and clusters name (and so are subscribed, on
//! the ADS stream or their SDS cluster's stream), which arrived, and Envoy's `sds.<name>.*`
//! subscription stats.
//!
//! A new version of a secret replaces the old one in the next snapshot and nothing else: the
//! listeners and clusters that name it keep their entries (no drain, no `listener_modified`).
//! A refused version keeps the last good one. A removal (delta ADS) is ignored, as Envoy ignores
//! it: a secret goes away only when nothing names it any more.

use super::stats::{Outcome, SubscriptionStats};
use super::{Received, Subscriptions, XdsState};
use crate::config::secret::{self, Secret};
use crate::config::tls::{SecretKey, SecretSource};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use xds_client::ads::{Rejection, Update};
use xds_client::any;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3 as proto;
use xds_client::resource::ResourceType;

impl XdsState {
    /// Applies secrets from `source` (the ADS stream, or an SDS cluster's stream); returns the
    /// ones refused. Secrets nothing names any more (a late response) are ignored.
    pub fn apply_secrets(&mut self, source: &SecretSource, update: Update) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        for resource in &update.resources {
            let key = SecretKey {
                name: resource.name.clone(),
                source: source.clone(),
            };
            if !self.dump.wanted_secrets.contains_key(&key) {
                tracing::debug!(secret = %resource.name, %source, "ignoring a secret nothing names");
                continue;
            }
            let started = Instant::now();
            let stats = self.sds_stats.get(&key);
            let converted = any::unpack::<proto::Secret>(&resource.body)
                .map_err(|e| format!("secret {:?}: {e}", resource.name))
                .and_then(|p| {
                    let config = Secret::try_from(&p).map_err(|e| e.to_string())?;
                    Ok((p, config))
                });
            let (source_proto, config) = match converted {
                Ok(c) => c,
                Err(reason) => {
                    if let Some(stats) = stats {
                        stats.rejected();
                    }
                    rejections.push(Rejection::new(&resource.name, reason));
                    continue;
                }
            };
            if let Some(stats) = stats {
                stats.accepted(&update.version, started.elapsed(), Outcome::default());
            }
            let now = SystemTime::now();
            // As Envoy: an unchanged secret still takes the new version, but changes nothing.
            if let Some(r) = self.dump.secrets.get_mut(&key)
                && *r.config == config
            {
                r.version = resource.version.clone();
                r.last_updated = now;
                continue;
            }
            self.dump.secrets.insert(
                key,
                Received {
                    config: Arc::new(config),
                    source: Arc::new(secret::redacted(&source_proto)),
                    version: resource.version.clone(),
                    last_updated: now,
                },
            );
            self.secrets_dirty = true;
        }
        for name in &update.removed {
            tracing::debug!(secret = %name, %source, "secret removed by the control plane; keeping it while it is named");
        }
        self.promote();
        rejections
    }

    /// Subscribes to the secrets the listeners and clusters (active or warming) name, and drops
    /// (and forgets) the rest.
    pub(super) fn sync_secret_subscriptions(&mut self, out: &mut Subscriptions) {
        let dump = &self.dump;
        let named: BTreeSet<SecretKey> = dump
            .listeners
            .values()
            .flat_map(|s| s.versions())
            .flat_map(|v| v.secrets.iter().map(|(k, _)| k.clone()))
            .chain(
                dump.clusters
                    .values()
                    .flat_map(|s| s.versions())
                    .flat_map(|v| v.secrets.iter().map(|(k, _)| k.clone())),
            )
            .collect();
        let added: Vec<SecretKey> = named
            .iter()
            .filter(|k| !dump.wanted_secrets.contains_key(*k))
            .cloned()
            .collect();
        let dropped: Vec<SecretKey> = dump
            .wanted_secrets
            .keys()
            .filter(|k| !named.contains(*k))
            .cloned()
            .collect();
        let now = SystemTime::now();
        let mut ads_add = Vec::new();
        let mut sds_add: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in added {
            match &key.source {
                SecretSource::Ads => ads_add.push(key.name.clone()),
                SecretSource::Cluster(c) => {
                    sds_add.entry(c.clone()).or_default().push(key.name.clone())
                }
                SecretSource::Static => {}
            }
            let stats = SubscriptionStats::sds(&self.store, &key.name);
            stats.started();
            self.sds_stats.insert(key.clone(), stats);
            self.dump.wanted_secrets.insert(key, now);
        }
        let mut ads_drop = Vec::new();
        let mut sds_drop: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in dropped {
            self.dump.wanted_secrets.remove(&key);
            self.sds_stats.remove(&key);
            self.secrets_dirty |= self.dump.secrets.remove(&key).is_some();
            match key.source {
                SecretSource::Ads => ads_drop.push(key.name),
                SecretSource::Cluster(c) => sds_drop.entry(c).or_default().push(key.name),
                SecretSource::Static => {}
            }
        }
        if !ads_add.is_empty() {
            out.subscribe.push((ResourceType::Secret, ads_add));
        }
        if !ads_drop.is_empty() {
            out.unsubscribe.push((ResourceType::Secret, ads_drop));
        }
        out.sds_subscribe.extend(sds_add);
        out.sds_unsubscribe.extend(sds_drop);
    }

    /// Names still subscribed on `cluster`'s SDS stream.
    pub fn sds_names(&self, cluster: &str) -> Vec<String> {
        self.dump
            .wanted_secrets
            .keys()
            .filter(|k| matches!(&k.source, SecretSource::Cluster(c) if c == cluster))
            .map(|k| k.name.clone())
            .collect()
    }
}
