//! The client task: connect, run one stream until it ends, back off, resume.
//!
//! One task owns all state ([`TypeState`] per type) and the [`Handler`]; the consumer talks to it
//! through an [`AdsHandle`] (subscription changes) and hears from it through the handler. While no
//! stream is up, subscription changes are recorded and go out with the next stream's first
//! requests.

use super::handler::Handler;
use super::state::{self, Change, TypeState};
use super::transport::{connect, error_chain};
use super::wire::{Delta, Parsed, StateOfTheWorld, Wire};
use super::{AdsConfig, ConfigError, Protocol, Service};
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use crate::resource::{ResourceType, unsupported_reason};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// How many requests may wait for the stream to take them.
const REQUEST_QUEUE: usize = 64;

/// Changes the client's subscriptions. The client runs until every handle is dropped.
#[derive(Clone, Debug)]
pub struct AdsHandle {
    changes: mpsc::UnboundedSender<Change>,
}

impl AdsHandle {
    /// Subscribes to `names` of `resource_type` (no-op for a wildcard type or a known name).
    pub fn subscribe<I, S>(&self, resource_type: ResourceType, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        let _ = self.changes.send(Change::Subscribe(resource_type, names));
    }

    /// Drops `names`: the server is told, and the client forgets their versions (the consumer is
    /// expected to let go of them too; no removal is delivered for them).
    pub fn unsubscribe<I, S>(&self, resource_type: ResourceType, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names = names.into_iter().map(Into::into).collect();
        let _ = self.changes.send(Change::Unsubscribe(resource_type, names));
    }
}

/// The stream as its consumer may watch it ([`AdsClient::status`]): what Envoy's
/// `control_plane.*` stats and the subscriptions' `update_failure` count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStatus {
    /// A stream is open.
    pub connected: bool,
    /// Streams and connection attempts lost so far.
    pub losses: u64,
    /// The last `control_plane.identifier` a response carried.
    pub identifier: Option<String>,
}

/// An ADS or SDS client bound to its handler; drive it with [`AdsClient::run`].
pub struct AdsClient<H> {
    config: AdsConfig,
    handler: H,
    changes: mpsc::UnboundedReceiver<Change>,
    types: BTreeMap<ResourceType, TypeState>,
    status: watch::Sender<StreamStatus>,
}

/// Why a stream ended.
enum Ended {
    /// Every handle is gone: stop.
    HandleGone,
    /// The stream or connection failed; `progressed` if it delivered a response first.
    Lost { progressed: bool, reason: String },
}

impl<H: Handler> AdsClient<H> {
    pub fn new(config: AdsConfig, handler: H) -> Result<(AdsClient<H>, AdsHandle), ConfigError> {
        config.check()?;
        let (tx, changes) = mpsc::unbounded_channel();
        let mut types: BTreeMap<ResourceType, TypeState> = ResourceType::ALL
            .into_iter()
            .map(|ty| (ty, TypeState::default()))
            .collect();
        for ty in &config.wildcard {
            if let Some(state) = types.get_mut(ty) {
                state.wildcard = true;
            }
        }
        let client = AdsClient {
            config,
            handler,
            changes,
            types,
            status: watch::Sender::new(StreamStatus::default()),
        };
        Ok((client, AdsHandle { changes: tx }))
    }

    /// Follows the stream's state: open or not, losses, the control plane's identifier.
    pub fn status(&self) -> watch::Receiver<StreamStatus> {
        self.status.subscribe()
    }

    /// Runs until every [`AdsHandle`] is dropped, reconnecting with back-off whenever the stream
    /// or the connection is lost.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let connected = connect(
                &self.config.address,
                self.config.tls.as_ref(),
                self.config.connect_timeout,
            )
            .await;
            let ended = match connected {
                Ok(channel) => match self.config.protocol {
                    Protocol::StateOfTheWorld => self.stream::<StateOfTheWorld>(channel).await,
                    Protocol::Delta => self.stream::<Delta>(channel).await,
                },
                Err(e) => Ended::Lost {
                    progressed: false,
                    reason: e.to_string(),
                },
            };
            match ended {
                Ended::HandleGone => return,
                Ended::Lost { progressed, reason } => {
                    self.status.send_modify(|s| {
                        s.connected = false;
                        s.losses += 1;
                    });
                    if progressed {
                        failures = 0;
                    }
                    let delay = self.config.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(address = %self.config.address, %reason, ?delay, "xDS stream lost; reconnecting");
                    if !self.idle(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits `delay`, recording subscription changes meanwhile; false when every handle is gone.
    async fn idle(&mut self, delay: std::time::Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                change = self.changes.recv() => match change {
                    Some(change) => {
                        self.apply_change(&change);
                    }
                    None => return false,
                },
            }
        }
    }

    fn apply_change(&mut self, change: &Change) -> (ResourceType, state::Diff) {
        let ty = match change {
            Change::Subscribe(ty, _) | Change::Unsubscribe(ty, _) => *ty,
        };
        let state = self.types.entry(ty).or_default();
        (ty, state::apply_change(state, change))
    }

    /// One stream, from the first requests to its end.
    async fn stream<W: Wire + Opens>(&mut self, channel: Channel) -> Ended
    where
        W::Response: Send + 'static,
    {
        let (requests, rx) = mpsc::channel::<W::Request>(REQUEST_QUEUE);
        let mut sender = RequestSender::<W> {
            requests,
            node: Some(self.config.node.clone()),
            node_every_time: !self.config.node_on_first_message_only,
            template: self.config.node.clone(),
        };
        for (ty, state) in &mut self.types {
            state.reset_stream();
            if state.interested() {
                state.requested = true;
                sender.queue(W::initial(*ty, state));
            }
        }
        // Subscriptions keep flowing while the stream opens: a grpc-go server (pilot-agent's SDS,
        // istiod) sends its response headers only after the first request, so a stream opened
        // with nothing to ask for yet must still send the first subscription that arrives.
        let open = W::open(channel, self.config.service, rx);
        tokio::pin!(open);
        let mut responses = loop {
            tokio::select! {
                opened = &mut open => match opened {
                    Ok(responses) => {
                        self.status.send_modify(|s| s.connected = true);
                        break responses;
                    }
                    Err(status) => {
                        return Ended::Lost {
                            progressed: false,
                            reason: format!("stream refused: {}", self.status_reason(&status, false)),
                        };
                    }
                },
                change = self.changes.recv() => {
                    let Some(change) = change else { return Ended::HandleGone };
                    if let Some(request) = self.request_for::<W>(&change)
                        && !sender.send(request).await
                    {
                        return Ended::Lost { progressed: false, reason: "request stream closed".into() };
                    }
                }
            }
        };
        let mut progressed = false;
        loop {
            tokio::select! {
                change = self.changes.recv() => {
                    let Some(change) = change else { return Ended::HandleGone };
                    if let Some(request) = self.request_for::<W>(&change)
                        && !sender.send(request).await
                    {
                        return Ended::Lost { progressed, reason: "request stream closed".into() };
                    }
                }
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        progressed = true;
                        let answer = self.answer::<W>(W::parse(response)).await;
                        if !sender.send(answer).await {
                            return Ended::Lost { progressed, reason: "request stream closed".into() };
                        }
                    }
                    Ok(None) => return Ended::Lost { progressed, reason: "stream closed by the server".into() },
                    Err(status) => return Ended::Lost { progressed, reason: self.status_reason(&status, progressed) },
                },
            }
        }
    }

    /// Why a stream failed, with the transport error behind a gRPC status. A TLS 1.3 server that
    /// wants a client certificate says so only after the handshake, as a broken connection: when
    /// none is configured and nothing was received yet, the reason says it may be that.
    fn status_reason(&self, status: &tonic::Status, progressed: bool) -> String {
        let Some(source) = std::error::Error::source(status) else {
            return format!("{:?}: {}", status.code(), status.message());
        };
        let mut reason = format!("{}: {}", status.message(), error_chain(source));
        if !progressed
            && self
                .config
                .tls
                .as_ref()
                .is_some_and(|tls| !tls.presents_client_certificate())
        {
            reason.push_str(" (over TLS without a client certificate: the server may require one)");
        }
        reason
    }

    /// The request a subscription change calls for on the open stream, if any.
    fn request_for<W: Wire>(&mut self, change: &Change) -> Option<W::Request> {
        let (ty, diff) = self.apply_change(change);
        let state = self.types.entry(ty).or_default();
        if diff.is_empty() {
            return None;
        }
        Some(if state.requested {
            W::change(ty, state, &diff)
        } else {
            state.requested = true;
            W::initial(ty, state)
        })
    }

    /// Checks a response, hands it to the consumer and builds the ACK or NACK.
    async fn answer<W: Wire>(&mut self, parsed: Parsed) -> W::Request {
        let Parsed {
            type_url,
            nonce,
            version,
            incoming,
            removal,
            identifier,
        } = parsed;
        if let Some(identifier) = identifier
            && self.status.borrow().identifier.as_ref() != Some(&identifier)
        {
            self.status.send_modify(|s| s.identifier = Some(identifier));
        }
        let Some(ty) = ResourceType::from_type_url(&type_url) else {
            tracing::warn!(%type_url, "xDS response of an unsupported type; NACK");
            let detail = state::whole_response_status(unsupported_reason(&type_url));
            return W::answer(&type_url, &TypeState::default(), &nonce, Some(detail));
        };
        let state = self.types.entry(ty).or_default();
        let prepared = state::prepare(ty, state, &version, incoming, removal);
        let mut rejected = prepared.rejected;
        let delivered = prepared.update.clone();
        let verdicts = self.handler.apply(prepared.update).await;
        // Only verdicts on what was delivered count.
        rejected.extend(
            verdicts
                .into_iter()
                .filter(|v| delivered.resources.iter().any(|r| r.name == v.name)),
        );
        let state = self.types.entry(ty).or_default();
        let detail = state::commit(state, &delivered, &nonce, &rejected);
        if let Some(detail) = &detail {
            tracing::warn!(%type_url, %version, message = %detail.message, "xDS update rejected; NACK");
        }
        W::answer(&type_url, state, &nonce, detail)
    }
}

/// Puts requests on the stream, adding the node where the configuration says so.
struct RequestSender<W: Wire> {
    requests: mpsc::Sender<W::Request>,
    /// Present until the first request took it (or always, with `node_every_time`).
    node: Option<crate::pb::envoy::config::core::v3::Node>,
    node_every_time: bool,
    template: crate::pb::envoy::config::core::v3::Node,
}

impl<W: Wire> RequestSender<W> {
    fn with_node(&mut self, mut request: W::Request) -> W::Request {
        let node = if self.node_every_time {
            Some(self.template.clone())
        } else {
            self.node.take()
        };
        if let Some(node) = node {
            W::set_node(&mut request, node);
        }
        request
    }

    /// Before the stream is open: the queue has room for the initial requests.
    fn queue(&mut self, request: W::Request) {
        let request = self.with_node(request);
        if self.requests.try_send(request).is_err() {
            tracing::warn!("xDS request queue full before the stream opened");
        }
    }

    async fn send(&mut self, request: W::Request) -> bool {
        let request = self.with_node(request);
        self.requests.send(request).await.is_ok()
    }
}

/// How a wire variant opens its gRPC stream on a channel.
pub(crate) trait Opens: Wire {
    fn open(
        channel: Channel,
        service: Service,
        requests: mpsc::Receiver<Self::Request>,
    ) -> impl std::future::Future<Output = Result<Streaming<Self::Response>, tonic::Status>> + Send;
}

impl Opens for StateOfTheWorld {
    async fn open(
        channel: Channel,
        service: Service,
        requests: mpsc::Receiver<Self::Request>,
    ) -> Result<Streaming<Self::Response>, tonic::Status> {
        let requests = ReceiverStream::new(requests);
        let response = match service {
            Service::Aggregated => {
                AggregatedDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .stream_aggregated_resources(requests)
                    .await?
            }
            Service::Secrets => {
                SecretDiscoveryServiceClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .stream_secrets(requests)
                    .await?
            }
        };
        Ok(response.into_inner())
    }
}

impl Opens for Delta {
    async fn open(
        channel: Channel,
        _service: Service,
        requests: mpsc::Receiver<Self::Request>,
    ) -> Result<Streaming<Self::Response>, tonic::Status> {
        // AdsConfig::check refuses delta SDS, so this is always the aggregated service.
        let response = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .delta_aggregated_resources(ReceiverStream::new(requests))
            .await?;
        Ok(response.into_inner())
    }
}
