//! SDS over a gRPC cluster: one state-of-the-world `StreamSecrets` client per cluster that an
//! `sds_config.api_config_source` names (Istio: the static `sds-grpc` cluster, a unix socket to
//! pilot-agent), subscribed to exactly the secret names the current listeners and clusters take
//! from it.
//!
//! Each client's responses come back to the xDS task through one channel, tagged with their
//! source, and wait there for their verdict like ADS responses do, so an ACK means the secret is
//! in the published snapshot. A cluster whose last name is dropped loses its client (and stream);
//! it gets a new one when a name comes back. The node is sent as on the ADS stream.

use super::settings::{SecretSources, XdsSettings};
use crate::config::tls::SecretSource;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};
use xds_client::ads::{AdsClient, AdsConfig, AdsHandle, Handler, Rejection, Update};
use xds_client::pb::envoy::config::core::v3::Node;
use xds_client::resource::ResourceType;

/// How many responses of all SDS streams may wait for the consumer.
const DELIVERY_QUEUE: usize = 4;

/// A response of one SDS stream, waiting for its verdict.
pub struct SecretDelivery {
    source: SecretSource,
    update: Update,
    reply: oneshot::Sender<Vec<Rejection>>,
}

impl SecretDelivery {
    pub fn into_parts(self) -> (SecretSource, Update, oneshot::Sender<Vec<Rejection>>) {
        (self.source, self.update, self.reply)
    }
}

/// Hands one SDS client's updates to the xDS task.
struct SdsHandler {
    source: SecretSource,
    deliveries: mpsc::Sender<SecretDelivery>,
}

impl Handler for SdsHandler {
    async fn apply(&mut self, update: Update) -> Vec<Rejection> {
        let (reply, verdict) = oneshot::channel();
        let delivery = SecretDelivery {
            source: self.source.clone(),
            update,
            reply,
        };
        if self.deliveries.send(delivery).await.is_err() {
            return Vec::new();
        }
        verdict.await.unwrap_or_default()
    }
}

/// The SDS clients, by cluster.
pub struct SdsStreams {
    node: Node,
    node_on_first_message_only: bool,
    sources: SecretSources,
    clients: BTreeMap<String, AdsHandle>,
    deliveries: mpsc::Sender<SecretDelivery>,
    received: mpsc::Receiver<SecretDelivery>,
}

impl SdsStreams {
    pub fn new(settings: &XdsSettings) -> Self {
        let (deliveries, received) = mpsc::channel(DELIVERY_QUEUE);
        SdsStreams {
            node: settings.node.clone(),
            node_on_first_message_only: settings.node_on_first_message_only,
            sources: settings.secret_sources.clone(),
            clients: BTreeMap::new(),
            deliveries,
            received,
        }
    }

    /// The next response of any SDS stream.
    pub async fn next(&mut self) -> SecretDelivery {
        match self.received.recv().await {
            Some(delivery) => delivery,
            // Unreachable while `self` holds a sender; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }

    /// Adds `names` to `cluster`'s stream, opening it first if needed.
    pub fn subscribe(&mut self, cluster: &str, names: Vec<String>) {
        if let Some(client) = self.clients.get(cluster) {
            client.subscribe(ResourceType::Secret, names);
            return;
        }
        // Checked when the listener or cluster naming it was accepted.
        let Some(plane) = self.sources.control_plane(cluster) else {
            tracing::warn!(%cluster, "SDS cluster has no usable address; secrets from it cannot arrive");
            return;
        };
        let address = &plane.address;
        let mut config = AdsConfig::sds(address.clone(), self.node.clone());
        config.tls = plane.tls.clone();
        config.node_on_first_message_only = self.node_on_first_message_only;
        let handler = SdsHandler {
            source: SecretSource::Cluster(cluster.to_string()),
            deliveries: self.deliveries.clone(),
        };
        match AdsClient::new(config, handler) {
            Ok((client, handle)) => {
                tracing::info!(%cluster, %address, "starting SDS");
                tokio::spawn(client.run());
                handle.subscribe(ResourceType::Secret, names);
                self.clients.insert(cluster.to_string(), handle);
            }
            Err(e) => tracing::warn!(%cluster, "cannot start SDS: {e}"),
        }
    }

    /// Drops `names` from `cluster`'s stream; `last`: nothing is left, the stream closes.
    pub fn unsubscribe(&mut self, cluster: &str, names: Vec<String>, last: bool) {
        if last {
            // The client ends when its last handle is gone.
            self.clients.remove(cluster);
        } else if let Some(client) = self.clients.get(cluster) {
            client.unsubscribe(ResourceType::Secret, names);
        }
    }
}
