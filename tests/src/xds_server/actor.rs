//! The control plane's single owner of state: the snapshot, every stream's subscriptions and what
//! it was sent, the nonces handed out, and the ACK/NACK verdicts with their waiters.

use super::file_secrets;
use super::{Recorded, Request, Snapshot, StreamKind, Verdict, Version};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::Status;
use xds_client::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use xds_client::pb::google::protobuf::Any;
use xds_client::resource::{CLUSTER, LISTENER, SECRET};

/// Where a stream's responses go.
pub(crate) enum Sink {
    StateOfTheWorld(mpsc::UnboundedSender<Result<DiscoveryResponse, Status>>),
    Delta(mpsc::UnboundedSender<Result<DeltaDiscoveryResponse, Status>>),
}

pub(crate) enum Command {
    Open {
        kind: StreamKind,
        sink: Sink,
        reply: oneshot::Sender<u64>,
    },
    Request {
        stream: u64,
        request: Box<Request>,
    },
    Close {
        stream: u64,
    },
    Push {
        snapshot: Snapshot,
        reply: oneshot::Sender<Version>,
    },
    Wait {
        version: Version,
        type_url: String,
        reply: oneshot::Sender<Verdict>,
    },
    Requests {
        reply: oneshot::Sender<Vec<Recorded>>,
    },
    DisconnectAll {
        reply: oneshot::Sender<()>,
    },
    Offer {
        type_url: String,
        reply: oneshot::Sender<Version>,
    },
    RefreshFiles {
        reply: oneshot::Sender<Option<Version>>,
    },
}

/// One stream's view of one type.
#[derive(Default)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client was sent (and, for delta, claimed on resume): name -> resource version.
    sent: BTreeMap<String, String>,
    /// The latest nonce sent for this type.
    nonce: String,
}

struct Stream {
    kind: StreamKind,
    sink: Sink,
    types: BTreeMap<String, Subscription>,
}

/// A stored resource: its body and its version (a hash of type and bytes).
#[derive(Clone)]
struct Stored {
    body: Any,
    version: String,
}

struct Actor {
    version_prefix: String,
    pushes: u64,
    version: Version,
    resources: BTreeMap<String, BTreeMap<String, Stored>>,
    streams: HashMap<u64, Stream>,
    next_stream: u64,
    next_nonce: u64,
    /// nonce -> (version, type_url) of the response that carried it.
    nonces: HashMap<String, (Version, String)>,
    verdicts: Vec<(Version, String, Verdict)>,
    waiters: Vec<(Version, String, oneshot::Sender<Verdict>)>,
    requests: Vec<Recorded>,
    requests_seen: watch::Sender<usize>,
}

pub(crate) fn spawn(
    version_prefix: String,
    requests_seen: watch::Sender<usize>,
) -> (mpsc::UnboundedSender<Command>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut actor = Actor {
        version_prefix,
        pushes: 0,
        version: String::new(),
        resources: BTreeMap::new(),
        streams: HashMap::new(),
        next_stream: 1,
        next_nonce: 1,
        nonces: HashMap::new(),
        verdicts: Vec::new(),
        waiters: Vec::new(),
        requests: Vec::new(),
        requests_seen,
    };
    let task = tokio::spawn(async move {
        while let Some(command) = rx.recv().await {
            actor.handle(command);
        }
    });
    (tx, task)
}

fn resource_version(type_url: &str, body: &Any) -> String {
    let mut hasher = DefaultHasher::new();
    type_url.hash(&mut hasher);
    body.value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Listener and Cluster: an empty SotW name list (or first delta subscription) is the wildcard.
fn legacy_wildcard(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

impl Actor {
    fn handle(&mut self, command: Command) {
        match command {
            Command::Open { kind, sink, reply } => {
                let id = self.next_stream;
                self.next_stream += 1;
                self.streams.insert(
                    id,
                    Stream {
                        kind,
                        sink,
                        types: BTreeMap::new(),
                    },
                );
                let _ = reply.send(id);
            }
            Command::Request { stream, request } => self.on_request(stream, *request),
            Command::Close { stream } => {
                self.streams.remove(&stream);
            }
            Command::Push { snapshot, reply } => {
                self.install(snapshot);
                let ids: Vec<u64> = self.streams.keys().copied().collect();
                for id in ids {
                    let types: Vec<String> = self.streams[&id].types.keys().cloned().collect();
                    for type_url in types {
                        self.send(id, &type_url, false);
                    }
                }
                let _ = reply.send(self.version.clone());
            }
            Command::Wait {
                version,
                type_url,
                reply,
            } => {
                match self
                    .verdicts
                    .iter()
                    .find(|(v, t, _)| *v == version && *t == type_url)
                {
                    Some((_, _, verdict)) => {
                        let _ = reply.send(verdict.clone());
                    }
                    None => self.waiters.push((version, type_url, reply)),
                }
            }
            Command::Requests { reply } => {
                let _ = reply.send(self.requests.clone());
            }
            Command::Offer { type_url, reply } => {
                let ids: Vec<u64> = self.streams.keys().copied().collect();
                for id in ids {
                    if let Some(stream) = self.streams.get_mut(&id) {
                        stream.types.entry(type_url.clone()).or_default().wildcard = true;
                    }
                    self.send(id, &type_url, true);
                }
                let _ = reply.send(self.version.clone());
            }
            Command::RefreshFiles { reply } => {
                let _ = reply.send(self.refresh_files());
            }
            Command::DisconnectAll { reply } => {
                for (_, stream) in self.streams.drain() {
                    let status = Status::unavailable("disconnected by the test control plane");
                    match stream.sink {
                        Sink::StateOfTheWorld(tx) => drop(tx.send(Err(status))),
                        Sink::Delta(tx) => drop(tx.send(Err(status))),
                    }
                }
                let _ = reply.send(());
            }
        }
    }

    fn next_version(&mut self) {
        self.pushes += 1;
        self.version = format!("{}{}", self.version_prefix, self.pushes);
    }

    /// Re-reads the files behind `file-cert:`/`file-root:` secrets; when any stream would now be
    /// served something else, a new version goes out with the changes.
    fn refresh_files(&mut self) -> Option<Version> {
        let changed = self.streams.values().any(|stream| {
            stream.types.get(SECRET).is_some_and(|sub| {
                let now: BTreeMap<String, String> = Self::view(&self.resources, SECRET, sub)
                    .into_iter()
                    .map(|(name, stored)| (name, stored.version))
                    .collect();
                now != sub.sent
            })
        });
        if !changed {
            return None;
        }
        self.next_version();
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        for id in ids {
            self.send(id, SECRET, false);
        }
        Some(self.version.clone())
    }

    fn install(&mut self, snapshot: Snapshot) {
        self.next_version();
        self.resources = snapshot
            .resources
            .into_iter()
            .map(|(type_url, named)| {
                let stored = named
                    .into_iter()
                    .map(|(name, body)| {
                        let version = resource_version(&type_url, &body);
                        (name, Stored { body, version })
                    })
                    .collect();
                (type_url, stored)
            })
            .collect();
    }

    fn on_request(&mut self, id: u64, request: Request) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        self.requests.push(Recorded {
            stream: id,
            kind: stream.kind,
            request: request.clone(),
        });
        self.requests_seen.send_replace(self.requests.len());
        self.record_verdict(&request);
        match request {
            Request::StateOfTheWorld(r) => self.on_sotw(id, r),
            Request::Delta(r) => self.on_delta(id, r),
        }
    }

    fn record_verdict(&mut self, request: &Request) {
        if request.nonce().is_empty() {
            return;
        }
        let Some((version, type_url)) = self.nonces.get(request.nonce()).cloned() else {
            return;
        };
        let verdict = match request.error_detail() {
            None => Verdict::Ack,
            Some(detail) => Verdict::Nack(detail.to_string()),
        };
        let waiters = std::mem::take(&mut self.waiters);
        for (v, t, reply) in waiters {
            if v == version && t == type_url {
                let _ = reply.send(verdict.clone());
            } else {
                self.waiters.push((v, t, reply));
            }
        }
        self.verdicts.push((version, type_url, verdict));
    }

    fn on_sotw(
        &mut self,
        id: u64,
        request: xds_client::pb::envoy::service::discovery::v3::DiscoveryRequest,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let first = !stream.types.contains_key(&request.type_url);
        let sub = stream.types.entry(request.type_url.clone()).or_default();
        if !first && !request.response_nonce.is_empty() && request.response_nonce != sub.nonce {
            return; // stale: answers an older response; the newer one is in flight
        }
        let wildcard = request.resource_names.iter().any(|n| n == "*")
            || (request.resource_names.is_empty() && legacy_wildcard(&request.type_url));
        let names: BTreeSet<String> = request
            .resource_names
            .into_iter()
            .filter(|n| n != "*")
            .collect();
        let changed = wildcard != sub.wildcard || names != sub.names;
        sub.wildcard = wildcard;
        sub.names = names;
        if first || changed {
            self.send(id, &request.type_url, true);
        }
    }

    fn on_delta(
        &mut self,
        id: u64,
        request: xds_client::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest,
    ) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let first = !stream.types.contains_key(&request.type_url);
        let sub = stream.types.entry(request.type_url.clone()).or_default();
        if first {
            sub.sent = request.initial_resource_versions.into_iter().collect();
            sub.wildcard =
                request.resource_names_subscribe.is_empty() && legacy_wildcard(&request.type_url);
        }
        for name in request.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = true;
            } else {
                sub.names.insert(name);
            }
        }
        for name in request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(&name);
            }
        }
        // What the client no longer subscribes to, it no longer holds.
        let (wildcard, names) = (sub.wildcard, sub.names.clone());
        sub.sent.retain(|name, _| wildcard || names.contains(name));
        self.send(id, &request.type_url, first);
    }

    /// The stream's in-scope resources of `type_url`: name -> stored. Secrets named after
    /// files that the snapshot does not hold are read from those files.
    fn view(
        resources: &BTreeMap<String, BTreeMap<String, Stored>>,
        type_url: &str,
        sub: &Subscription,
    ) -> BTreeMap<String, Stored> {
        let of_type = resources.get(type_url);
        let mut view: BTreeMap<String, Stored> = of_type
            .into_iter()
            .flatten()
            .filter(|(name, _)| sub.wildcard || sub.names.contains(*name))
            .map(|(name, stored)| (name.clone(), stored.clone()))
            .collect();
        if type_url == SECRET {
            for name in &sub.names {
                if view.contains_key(name) {
                    continue;
                }
                if let Some(body) = file_secrets::resolve(name) {
                    let version = resource_version(type_url, &body);
                    view.insert(name.clone(), Stored { body, version });
                }
            }
        }
        view
    }

    /// Sends what changed for `type_url` on stream `id` (everything in scope if `force`).
    fn send(&mut self, id: u64, type_url: &str, force: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(sub) = stream.types.get_mut(type_url) else {
            return;
        };
        let view = Self::view(&self.resources, type_url, sub);
        let now: BTreeMap<String, String> = view
            .iter()
            .map(|(name, stored)| (name.to_string(), stored.version.clone()))
            .collect();
        let nonce = format!("n{}", self.next_nonce);
        let sent = match &stream.sink {
            Sink::StateOfTheWorld(tx) => {
                if !force && now == sub.sent {
                    return;
                }
                tx.send(Ok(DiscoveryResponse {
                    version_info: self.version.clone(),
                    resources: view.values().map(|s| s.body.clone()).collect(),
                    type_url: type_url.to_string(),
                    nonce: nonce.clone(),
                    ..Default::default()
                }))
                .is_ok()
            }
            Sink::Delta(tx) => {
                let changed: Vec<Resource> = view
                    .iter()
                    .filter(|(name, stored)| sub.sent.get(name.as_str()) != Some(&stored.version))
                    .map(|(name, stored)| Resource {
                        name: name.to_string(),
                        version: stored.version.clone(),
                        resource: Some(stored.body.clone()),
                        ..Default::default()
                    })
                    .collect();
                let removed: Vec<String> = sub
                    .sent
                    .keys()
                    .filter(|name| !now.contains_key(*name))
                    .cloned()
                    .collect();
                if !force && changed.is_empty() && removed.is_empty() {
                    return;
                }
                tx.send(Ok(DeltaDiscoveryResponse {
                    system_version_info: self.version.clone(),
                    resources: changed,
                    type_url: type_url.to_string(),
                    removed_resources: removed,
                    nonce: nonce.clone(),
                    ..Default::default()
                }))
                .is_ok()
            }
        };
        if sent {
            sub.sent = now;
            sub.nonce = nonce.clone();
            self.next_nonce += 1;
            self.nonces
                .insert(nonce, (self.version.clone(), type_url.to_string()));
        }
    }
}
