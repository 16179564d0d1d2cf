//! The seam between the client and its consumer: [`Update`]s in, per-resource verdicts out.
//!
//! The consumer (Tern's snapshot builder) decodes and validates each resource, applies what it
//! accepts and returns a [`Rejection`] for each resource it refused; the client turns an empty
//! list into an ACK and anything else into a NACK naming those resources. Resources the consumer
//! does not reject are accepted: their versions are what a delta stream resumes from.

use crate::pb::google::protobuf::Any;
use crate::resource::ResourceType;
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// One resource of a response, already checked by the client: its type is the update's type,
/// it decodes, it has a name unique in the response, and the consumer subscribed to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Per-resource version (delta), or the response's `version_info` (state of the world).
    pub version: String,
    pub body: Any,
}

/// What one response changed for one resource type.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub resource_type: ResourceType,
    /// `version_info` (SotW) or `system_version_info` (delta) of the response.
    pub version: String,
    /// Added or changed resources.
    pub resources: Vec<Resource>,
    /// Names of resources the consumer held that are gone.
    pub removed: Vec<String>,
}

/// The consumer's (or the client's) refusal of one resource, with the reason for the NACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Rejection {
        Rejection {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// The consumer of updates. Called once per response, in order, never concurrently.
pub trait Handler: Send {
    /// Applies what it accepts of `update` and returns the resources it rejected (empty: all
    /// accepted). Removals are facts and cannot be rejected.
    fn apply(&mut self, update: Update) -> impl Future<Output = Vec<Rejection>> + Send;
}

/// One update handed over a channel, with the place to put the verdicts.
#[derive(Debug)]
pub struct Delivery {
    pub update: Update,
    reply: oneshot::Sender<Vec<Rejection>>,
}

impl Delivery {
    /// Answers the client; dropping a `Delivery` unanswered accepts everything in it.
    pub fn reply(self, rejections: Vec<Rejection>) {
        let _ = self.reply.send(rejections);
    }
}

/// A [`Handler`] that hands each update to another task over a channel and waits for its verdict,
/// for a consumer that lives on its own task (or a test).
#[derive(Debug)]
pub struct ChannelHandler {
    deliveries: mpsc::Sender<Delivery>,
}

impl ChannelHandler {
    pub fn new(capacity: usize) -> (ChannelHandler, mpsc::Receiver<Delivery>) {
        let (deliveries, rx) = mpsc::channel(capacity.max(1));
        (ChannelHandler { deliveries }, rx)
    }
}

impl Handler for ChannelHandler {
    async fn apply(&mut self, update: Update) -> Vec<Rejection> {
        let (reply, verdict) = oneshot::channel();
        if self
            .deliveries
            .send(Delivery { update, reply })
            .await
            .is_err()
        {
            // Nobody consumes updates any more; there is nothing left to refuse them.
            return Vec::new();
        }
        verdict.await.unwrap_or_default()
    }
}
