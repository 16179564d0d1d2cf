//! A real xDS control plane for tests: ADS (state of the world and delta) and SDS `StreamSecrets`,
//! over TCP (plaintext, TLS or mTLS, see [`ServerTls`]) or a unix socket, serving versioned
//! [`Snapshot`]s.
//!
//! A test pushes a snapshot and gets its version back, then awaits what the clients answered for
//! that version ([`XdsServer::wait_verdict`]: ACK or NACK with the client's `error_detail`). Every
//! request any stream sent is recorded for assertions ([`XdsServer::requests`]).
//!
//! Invariants:
//! - One actor task owns all state (snapshot, streams, nonces, verdicts); the gRPC handlers only
//!   forward requests to it and relay its responses, so there is no lock anywhere.
//! - Each stream has its own subscriptions per type (wildcard or named) and its own record of
//!   what it was sent (name -> resource version), so concurrent streams see exactly their share.
//! - A push sends a stream only what changed for it: SotW the full in-scope set of a type whose
//!   set changed, delta the changed resources and `removed_resources`.
//! - Requests carrying a nonce that is not the type's latest on that stream are stale: their
//!   ACK/NACK is recorded against the version that nonce carried, but a stale SotW request never
//!   changes the subscription.
//! - Resource versions are a hash of the resource's bytes, so a restarted server that serves the
//!   same resources resumes a delta stream without resending them.
//! - Secrets named `file-cert:<chain>~<key>` / `file-root:<ca>` that the snapshot does not hold
//!   are read from those files, as pilot-agent's SDS server does ([`XdsServer::refresh_files`]
//!   pushes them again when the files change).

mod actor;
mod file_secrets;
mod files;
mod service;
mod tls;

pub use files::{fingerprint, load_dir};
pub use tls::{Handshake, ServerTls};

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use xds_client::ads::XdsAddress;
use xds_client::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use xds_client::pb::google::protobuf::Any;
use xds_client::resource::ResourceType;

/// How long a `wait_*` may take before it fails with what was seen (Envoy on a busy machine).
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);

/// A snapshot's version, as sent in `version_info` / `system_version_info`.
pub type Version = String;

/// The resources to serve: type URL -> name -> body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub resources: BTreeMap<String, BTreeMap<String, Any>>,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds `body` under `name` (any type, even one no client knows).
    pub fn insert(&mut self, name: impl Into<String>, body: Any) -> &mut Snapshot {
        self.resources
            .entry(body.type_url.clone())
            .or_default()
            .insert(name.into(), body);
        self
    }

    /// Adds `body` under `type_url` whatever its own type: a hostile response for client tests.
    pub fn insert_as(
        &mut self,
        type_url: &str,
        name: impl Into<String>,
        body: Any,
    ) -> &mut Snapshot {
        self.resources
            .entry(type_url.to_string())
            .or_default()
            .insert(name.into(), body);
        self
    }

    /// Adds a resource of a supported type under the name it carries.
    pub fn add<M: prost::Message + prost::Name>(&mut self, message: &M) -> &mut Snapshot {
        let body = xds_client::any::pack(message);
        let name = ResourceType::from_type_url(&body.type_url)
            .and_then(|ty| ty.decode_name(&body.value).ok())
            .unwrap_or_default();
        self.insert(name, body)
    }

    /// Drops the resource `name` of `type_url`.
    pub fn remove(&mut self, type_url: &str, name: &str) -> &mut Snapshot {
        if let Some(of_type) = self.resources.get_mut(type_url) {
            of_type.remove(name);
        }
        self
    }
}

/// What a client answered to a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ack,
    /// The NACK's `error_detail.message`.
    Nack(String),
}

/// Which RPC a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    StateOfTheWorld,
    Delta,
    Secrets,
}

/// One request as received.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    StateOfTheWorld(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

impl Request {
    pub fn type_url(&self) -> &str {
        match self {
            Request::StateOfTheWorld(r) => &r.type_url,
            Request::Delta(r) => &r.type_url,
        }
    }

    pub fn nonce(&self) -> &str {
        match self {
            Request::StateOfTheWorld(r) => &r.response_nonce,
            Request::Delta(r) => &r.response_nonce,
        }
    }

    pub fn has_node(&self) -> bool {
        match self {
            Request::StateOfTheWorld(r) => r.node.is_some(),
            Request::Delta(r) => r.node.is_some(),
        }
    }

    pub fn error_detail(&self) -> Option<&str> {
        match self {
            Request::StateOfTheWorld(r) => r.error_detail.as_ref().map(|s| s.message.as_str()),
            Request::Delta(r) => r.error_detail.as_ref().map(|s| s.message.as_str()),
        }
    }
}

/// A request with the stream it came on (streams are numbered from 1 in opening order).
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub stream: u64,
    pub kind: StreamKind,
    pub request: Request,
}

/// Where to listen.
#[derive(Clone, Debug)]
pub enum Bind {
    /// A TCP address; port 0 for an ephemeral one.
    Tcp(SocketAddr),
    /// A unix socket path (a stale socket file there is replaced).
    Unix(PathBuf),
}

/// A running control plane; dropping it stops it and ends every stream.
pub struct XdsServer {
    address: XdsAddress,
    local: Option<SocketAddr>,
    actor: mpsc::UnboundedSender<actor::Command>,
    requests_seen: watch::Receiver<usize>,
    handshakes: watch::Receiver<Vec<Handshake>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    actor_task: JoinHandle<()>,
}

impl XdsServer {
    /// Listens on 127.0.0.1 on an ephemeral port.
    pub async fn start_tcp() -> anyhow::Result<XdsServer> {
        Self::start(Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))), "v").await
    }

    /// Listens on a unix socket at `path`.
    pub async fn start_unix(path: &Path) -> anyhow::Result<XdsServer> {
        Self::start(Bind::Unix(path.to_path_buf()), "v").await
    }

    /// Listens on `bind`; versions are `<version_prefix><n>` for the n-th push (from 1).
    pub async fn start(bind: Bind, version_prefix: &str) -> anyhow::Result<XdsServer> {
        Self::start_with_tls(bind, version_prefix, None).await
    }

    /// Listens on 127.0.0.1 on an ephemeral port, over TLS (mTLS when `tls.client_ca`).
    pub async fn start_tls(tls: ServerTls) -> anyhow::Result<XdsServer> {
        let bind = Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)));
        Self::start_with_tls(bind, "v", Some(tls)).await
    }

    /// As [`XdsServer::start`], over TLS when `tls` (TCP only).
    pub async fn start_with_tls(
        bind: Bind,
        version_prefix: &str,
        tls: Option<ServerTls>,
    ) -> anyhow::Result<XdsServer> {
        let (requests_tx, requests_seen) = watch::channel(0usize);
        let (handshakes_tx, handshakes) = watch::channel(Vec::new());
        let (actor, actor_task) = actor::spawn(version_prefix.to_string(), requests_tx);
        let (shutdown, signal) = oneshot::channel();
        let (address, local, server) =
            service::serve(bind, tls.as_ref(), handshakes_tx, actor.clone(), signal).await?;
        Ok(XdsServer {
            address,
            local,
            actor,
            requests_seen,
            handshakes,
            shutdown: Some(shutdown),
            server,
            actor_task,
        })
    }

    /// Where clients reach this server.
    pub fn address(&self) -> &XdsAddress {
        &self.address
    }

    /// The bound TCP address, if listening on TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> actor::Command,
    ) -> anyhow::Result<T> {
        let (reply, answer) = oneshot::channel();
        self.actor
            .send(command(reply))
            .ok()
            .context("xDS server actor is gone")?;
        answer.await.context("xDS server actor is gone")
    }

    /// Serves `snapshot` from now on, sending every stream what changed for it; returns the
    /// snapshot's version.
    pub async fn push(&self, snapshot: Snapshot) -> Version {
        self.ask(|reply| actor::Command::Push { snapshot, reply })
            .await
            .unwrap_or_default()
    }

    /// The first ACK or NACK any client sent for a response of `type_url` carrying `version`.
    pub async fn wait_verdict(&self, version: &str, type_url: &str) -> anyhow::Result<Verdict> {
        let wait = self.ask(|reply| actor::Command::Wait {
            version: version.to_string(),
            type_url: type_url.to_string(),
            reply,
        });
        match tokio::time::timeout(WAIT_DEADLINE, wait).await {
            Ok(verdict) => verdict,
            Err(_) => bail!(
                "no ACK/NACK of {type_url} version {version} within {WAIT_DEADLINE:?}; requests seen:\n{}",
                describe(&self.requests().await)
            ),
        }
    }

    /// Waits until each of `type_urls` at `version` was ACKed; a NACK is an error with its detail.
    pub async fn wait_acked(&self, version: &str, type_urls: &[&str]) -> anyhow::Result<()> {
        for type_url in type_urls {
            match self.wait_verdict(version, type_url).await? {
                Verdict::Ack => {}
                Verdict::Nack(detail) => bail!("{type_url} version {version} NACKed: {detail}"),
            }
        }
        Ok(())
    }

    /// Every request received so far, in arrival order.
    pub async fn requests(&self) -> Vec<Recorded> {
        self.ask(|reply| actor::Command::Requests { reply })
            .await
            .unwrap_or_default()
    }

    /// Waits for a recorded request matching `predicate` (one already received counts).
    pub async fn wait_request(
        &self,
        predicate: impl Fn(&Recorded) -> bool,
    ) -> anyhow::Result<Recorded> {
        let mut seen = self.requests_seen.clone();
        let deadline = tokio::time::Instant::now() + WAIT_DEADLINE;
        loop {
            seen.borrow_and_update();
            let requests = self.requests().await;
            if let Some(found) = requests.iter().find(|r| predicate(r)) {
                return Ok(found.clone());
            }
            if tokio::time::timeout_at(deadline, seen.changed())
                .await
                .is_err()
            {
                bail!(
                    "no matching request within {WAIT_DEADLINE:?}; requests seen:\n{}",
                    describe(&requests)
                );
            }
        }
    }

    /// Every TLS handshake so far, in order (empty when not serving TLS).
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.borrow().clone()
    }

    /// Waits until the handshakes seen satisfy `predicate`; returns them.
    pub async fn wait_handshakes(
        &self,
        predicate: impl Fn(&[Handshake]) -> bool,
    ) -> anyhow::Result<Vec<Handshake>> {
        let mut seen = self.handshakes.clone();
        let found = tokio::time::timeout(WAIT_DEADLINE, seen.wait_for(|h| predicate(h))).await;
        match found {
            Ok(Ok(handshakes)) => Ok(handshakes.clone()),
            _ => bail!(
                "the handshakes seen did not come within {WAIT_DEADLINE:?}: {:?}",
                self.handshakes()
            ),
        }
    }

    /// Sends every open stream all resources of `type_url` as if it had asked for them (wildcard),
    /// to see how a client treats a type it never requested; returns the current version.
    pub async fn offer(&self, type_url: &str) -> Version {
        let type_url = type_url.to_string();
        self.ask(|reply| actor::Command::Offer { type_url, reply })
            .await
            .unwrap_or_default()
    }

    /// Re-reads the files behind `file-cert:<chain>~<key>` and `file-root:<ca>` secret names
    /// (served the way pilot-agent serves them); when a stream's secrets changed, pushes them as
    /// a new version and returns it.
    pub async fn refresh_files(&self) -> Option<Version> {
        self.ask(|reply| actor::Command::RefreshFiles { reply })
            .await
            .ok()
            .flatten()
    }

    /// Ends every open stream with `UNAVAILABLE`, as a control plane going away would.
    pub async fn disconnect_all(&self) {
        let _ = self
            .ask(|reply| actor::Command::DisconnectAll { reply })
            .await;
    }

    /// Stops serving: every stream ends, the listener closes.
    pub async fn shutdown(mut self) {
        self.disconnect_all().await;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.actor_task.abort();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.server.abort();
    }
}

/// One line per request, for failure messages.
pub fn describe(requests: &[Recorded]) -> String {
    requests
        .iter()
        .map(|r| match &r.request {
            Request::StateOfTheWorld(q) => format!(
                "  #{} sotw {} version={:?} names={:?} nonce={:?} node={} error={:?}",
                r.stream,
                q.type_url,
                q.version_info,
                q.resource_names,
                q.response_nonce,
                q.node.is_some(),
                q.error_detail.as_ref().map(|s| &s.message)
            ),
            Request::Delta(q) => format!(
                "  #{} delta {} sub={:?} unsub={:?} initial={:?} nonce={:?} node={} error={:?}",
                r.stream,
                q.type_url,
                q.resource_names_subscribe,
                q.resource_names_unsubscribe,
                q.initial_resource_versions,
                q.response_nonce,
                q.node.is_some(),
                q.error_detail.as_ref().map(|s| &s.message)
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
