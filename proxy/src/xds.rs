//! Tern driven over ADS: the ADS client's consumer.
//!
//! [`start`] opens the stream the bootstrap's `dynamic_resources` describe (see [`settings`]) and
//! runs one task that owns the [`XdsState`]. For every response the client delivers, that task:
//! 1. converts and validates each resource (refusals go back to the client, which NACKs them
//!    with the reason; the rest of the response still applies);
//! 2. moves versions between warming and active, and changes the RDS/EDS subscriptions to match
//!    what the listeners and clusters now name;
//! 3. sends the manager one [`Command::Xds`](crate::server::Command::Xds) with what changed and
//!    waits until the new snapshot is published, so an ACK always means "serving";
//! 4. publishes the `/config_dump` view.
//!
//! Secrets come over the ADS stream (`sds_config: {ads: {}}`) or over one SotW `StreamSecrets`
//! stream per SDS cluster (Istio's `sds-grpc`, see [`sds`]); both feed the same task and the same
//! state, so a secret that arrives on either can end a listener's or cluster's warming in the
//! same snapshot.
//!
//! Warming deadlines (`initial_fetch_timeout`) are timers of the same task. Nothing here touches
//! the data path: workers only ever see the snapshots the manager publishes.

pub mod fuzz;
mod sds;
pub mod settings;
mod state;

pub use settings::{SecretSources, XdsSettings};
pub use state::{Received, Slot, Versioned, XdsChange, XdsDump, XdsState};

use crate::server::{Command, ServerHandle};
use crate::stats::{Gauge, Store, TextReadout};
pub use state::Subscriptions;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use xds_client::ads::{
    AdsClient, AdsConfig, AdsHandle, ChannelHandler, Delivery, Rejection, StreamStatus, Update,
};

/// How many responses may wait for the consumer (the client waits for each verdict anyway).
const DELIVERY_QUEUE: usize = 4;

/// Starts the ADS client and its consumer on the current runtime. Both end when the manager does.
pub fn start(
    settings: XdsSettings,
    handle: ServerHandle,
) -> Result<(), xds_client::ads::ConfigError> {
    let mut config = AdsConfig::ads(
        settings.address.clone(),
        settings.protocol,
        settings.node.clone(),
    );
    config.tls = settings.tls.clone();
    config.node_on_first_message_only = settings.node_on_first_message_only;
    config.wildcard.retain(|ty| match ty {
        xds_client::resource::ResourceType::Listener => settings.lds,
        xds_client::resource::ResourceType::Cluster => settings.cds,
        _ => true,
    });
    let (handler, deliveries) = ChannelHandler::new(DELIVERY_QUEUE);
    let (client, ads) = AdsClient::new(config, handler)?;
    let status = ControlPlane::new(client.status(), handle.store());
    let state = XdsState::new(&settings, handle.store(), std::time::Instant::now());
    let secrets = sds::SdsStreams::new(&settings);
    tracing::info!(address = %settings.address, protocol = ?settings.protocol, tls = settings.tls.is_some(), "starting ADS");
    tokio::spawn(client.run());
    tokio::spawn(consume(
        state,
        deliveries,
        Streams {
            ads,
            secrets,
            status,
        },
        handle,
    ));
    Ok(())
}

/// The ADS stream's state as Envoy's `control_plane.*` stats show it.
struct ControlPlane {
    status: watch::Receiver<StreamStatus>,
    losses: u64,
    connected_state: Gauge,
    identifier: TextReadout,
}

impl ControlPlane {
    fn new(status: watch::Receiver<StreamStatus>, store: &Store) -> Self {
        // Tern sends requests as they come and enforces no rate limit: these stay 0.
        store.gauge("control_plane.pending_requests");
        store.counter("control_plane.rate_limit_enforced");
        ControlPlane {
            status,
            losses: 0,
            connected_state: store.gauge("control_plane.connected_state"),
            identifier: store.text("control_plane.identifier"),
        }
    }

    /// Takes the stream's latest state; returns how many streams were lost since the last call.
    fn update(&mut self) -> u64 {
        let status = self.status.borrow_and_update().clone();
        self.connected_state.set(i64::from(status.connected));
        if let Some(identifier) = &status.identifier {
            self.identifier.set(identifier);
        }
        let lost = status.losses - self.losses;
        self.losses = status.losses;
        lost
    }
}

/// The streams subscriptions go to: ADS (and its state), and one per SDS cluster.
struct Streams {
    ads: AdsHandle,
    secrets: sds::SdsStreams,
    status: ControlPlane,
}

async fn consume(
    mut state: XdsState,
    mut deliveries: mpsc::Receiver<Delivery>,
    mut streams: Streams,
    handle: ServerHandle,
) {
    // The bootstrap's own EDS clusters subscribe before anything arrives.
    if !apply(&mut state, &mut streams, &handle).await {
        return;
    }
    loop {
        let deadline = state.next_deadline().map(Instant::from_std);
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            delivery = deliveries.recv() => {
                let Some(mut delivery) = delivery else { return };
                let (ty, version) = (delivery.update.resource_type, delivery.update.version.clone());
                let update = Update {
                    resource_type: ty,
                    version: version.clone(),
                    resources: std::mem::take(&mut delivery.update.resources),
                    removed: std::mem::take(&mut delivery.update.removed),
                };
                let mut rejections = state.apply(update, std::time::Instant::now());
                warn_rejected(&format!("{ty:?}"), &version, &rejections);
                let Some(more) = apply_collect(&mut state, &mut streams, &handle).await else { return };
                rejections.extend(more);
                delivery.reply(rejections);
            }
            delivery = streams.secrets.next() => {
                let (source, update, reply) = delivery.into_parts();
                let version = update.version.clone();
                let rejections = state.apply_secrets(&source, update);
                warn_rejected(&format!("Secret ({source})"), &version, &rejections);
                // A listener this promoted that cannot bind is logged; the secrets stand.
                if apply_collect(&mut state, &mut streams, &handle).await.is_none() {
                    return;
                }
                let _ = reply.send(rejections);
            }
            changed = streams.status.status.changed() => {
                if changed.is_err() {
                    return;
                }
                for _ in 0..streams.status.update() {
                    state.stream_lost();
                }
            }
            () = timer => {
                state.expire(std::time::Instant::now());
                if !apply(&mut state, &mut streams, &handle).await {
                    return;
                }
            }
            () = handle.closed() => return,
        }
    }
}

fn warn_rejected(what: &str, version: &str, rejections: &[Rejection]) {
    if !rejections.is_empty() {
        tracing::warn!(%what, %version, rejected = rejections.len(), "xDS update rejected in part: {}",
            rejections.iter().map(|r| format!("{}: {}", r.name, r.reason)).collect::<Vec<_>>().join("; "));
    }
}

/// Syncs subscriptions and hands the manager what changed; false when the manager is gone.
async fn apply(state: &mut XdsState, streams: &mut Streams, handle: &ServerHandle) -> bool {
    apply_collect(state, streams, handle).await.is_some()
}

/// As [`apply`], returning listeners the manager could not serve (a bind failure) as rejections.
async fn apply_collect(
    state: &mut XdsState,
    streams: &mut Streams,
    handle: &ServerHandle,
) -> Option<Vec<Rejection>> {
    let subscriptions = state.sync_subscriptions();
    for (ty, names) in subscriptions.unsubscribe {
        streams.ads.unsubscribe(ty, names);
    }
    for (ty, names) in subscriptions.subscribe {
        streams.ads.subscribe(ty, names);
    }
    for (cluster, names) in subscriptions.sds_unsubscribe {
        let left = state.sds_names(&cluster);
        streams
            .secrets
            .unsubscribe(&cluster, names, left.is_empty());
    }
    for (cluster, names) in subscriptions.sds_subscribe {
        streams.secrets.subscribe(&cluster, names);
    }
    let change = state.take_change();
    let mut rejections = Vec::new();
    if !change.is_empty() {
        let names: Vec<String> = change
            .listeners
            .iter()
            .flatten()
            .map(|l| l.name.clone())
            .collect();
        let (reply, errors) = oneshot::channel();
        handle.send(Command::Xds { change, reply });
        let errors = errors.await.ok()?;
        for e in errors {
            tracing::warn!("xDS configuration not applied: {e}");
            if let Some(name) = names
                .iter()
                .find(|n| e.resource == format!("listener {n:?}"))
            {
                rejections.push(Rejection::new(name, e.to_string()));
            }
        }
    }
    handle.info.xds.store(Some(Arc::new(state.dump().clone())));
    Some(rejections)
}
