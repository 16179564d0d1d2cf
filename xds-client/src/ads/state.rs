//! Per-type bookkeeping, free of I/O: subscriptions, what the consumer holds, versions, nonces,
//! and the checks that turn a response's raw resources into an [`Update`].
//!
//! Kept pure so every rule is unit-tested without a stream: which resources reach the consumer,
//! which are refused by the client itself, what counts as removed, and what an ACK/NACK carries.

use super::handler::{Rejection, Resource, Update};
use crate::pb::envoy::service::discovery::v3::Resource as WireResource;
use crate::pb::google::protobuf::Any;
use crate::pb::google::rpc::Status;
use crate::resource::{RESOURCE_WRAPPER, ResourceType};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

/// `google.rpc.Code.INVALID_ARGUMENT`, the code Envoy puts in a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// What the client knows about one resource type.
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeState {
    /// Subscribed to everything of this type.
    pub wildcard: bool,
    /// Subscribed by name.
    pub names: BTreeSet<String>,
    /// Resources the consumer accepted and still holds, with their versions.
    pub held: BTreeMap<String, String>,
    /// `version_info` of the last response accepted in full (SotW ACK/NACK carry it).
    pub accepted_version: String,
    /// Nonce of the last response on the current stream.
    pub nonce: String,
    /// Whether the current stream has sent this type's first request.
    pub requested: bool,
}

impl TypeState {
    /// Whether there is anything to ask the server for.
    pub fn interested(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Forgets the stream-scoped part; subscriptions and accepted versions survive a reconnect.
    pub fn reset_stream(&mut self) {
        self.nonce.clear();
        self.requested = false;
    }
}

/// A consumer's change of subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Subscribe(ResourceType, Vec<String>),
    Unsubscribe(ResourceType, Vec<String>),
}

/// What a [`Change`] changed, to put on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Applies a subscription change; names of a wildcard type are covered already.
pub(crate) fn apply_change(state: &mut TypeState, change: &Change) -> Diff {
    let mut diff = Diff::default();
    match change {
        Change::Subscribe(_, names) => {
            for name in names {
                if !state.wildcard && !name.is_empty() && state.names.insert(name.clone()) {
                    diff.added.push(name.clone());
                }
            }
        }
        Change::Unsubscribe(_, names) => {
            for name in names {
                if state.names.remove(name) {
                    // The consumer lets go of it: it is no longer held, nor resumed from.
                    state.held.remove(name);
                    diff.removed.push(name.clone());
                }
            }
        }
    }
    diff
}

/// One resource as it came off the wire.
#[derive(Clone, Debug)]
pub(crate) struct Incoming {
    /// The name the envelope gave (delta `Resource.name`), if any.
    pub name: Option<String>,
    /// The envelope's version (delta), else the response's version.
    pub version: String,
    pub body: Option<Any>,
}

/// How a response says what went away.
#[derive(Clone, Debug)]
pub(crate) enum Removal {
    /// A SotW response: for Listener/Cluster, what is absent is removed; otherwise nothing.
    StateOfTheWorld,
    /// Delta `removed_resources`.
    Names(Vec<String>),
}

/// A response checked by the client: what to deliver, and what the client refused itself.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub update: Update,
    pub rejected: Vec<Rejection>,
}

/// Checks a response's resources against the type and the subscription.
pub(crate) fn prepare(
    resource_type: ResourceType,
    state: &TypeState,
    version: &str,
    incoming: Vec<Incoming>,
    removal: Removal,
) -> Prepared {
    let mut rejected = Vec::new();
    let mut candidates: Vec<Resource> = Vec::new();
    let mut unnamed = false;
    for (index, item) in incoming.into_iter().enumerate() {
        match check_one(resource_type, item) {
            Ok(resource) => candidates.push(resource),
            Err((name, reason)) => {
                unnamed |= name.is_none();
                rejected.push(Rejection::new(
                    name.unwrap_or_else(|| format!("#{index}")),
                    reason,
                ));
            }
        }
    }
    // Every name the response mentions, good or bad: none of them is absent.
    let mut mentioned: BTreeMap<String, usize> = BTreeMap::new();
    for resource in &candidates {
        *mentioned.entry(resource.name.clone()).or_default() += 1;
    }
    for rejection in &rejected {
        mentioned.entry(rejection.name.clone()).or_default();
    }
    for (name, count) in &mentioned {
        if *count > 1 {
            rejected.push(Rejection::new(
                name.clone(),
                format!("appears {count} times in one response"),
            ));
        }
    }
    let resources = candidates
        .into_iter()
        .filter(|r| mentioned.get(&r.name) == Some(&1) && state.wants(&r.name))
        .collect();
    let removed = match removal {
        // A resource that could not even be named might be any held one: remove nothing.
        Removal::StateOfTheWorld if resource_type.is_full_state() && !unnamed => state
            .held
            .keys()
            .filter(|name| !mentioned.contains_key(*name))
            .cloned()
            .collect(),
        Removal::StateOfTheWorld => Vec::new(),
        Removal::Names(names) => names
            .into_iter()
            .filter(|name| state.held.contains_key(name))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    Prepared {
        update: Update {
            resource_type,
            version: version.to_string(),
            resources,
            removed,
        },
        rejected,
    }
}

/// One resource's checks; `Err((name if known, reason))`.
fn check_one(
    resource_type: ResourceType,
    item: Incoming,
) -> Result<Resource, (Option<String>, String)> {
    let Incoming {
        mut name,
        mut version,
        body,
    } = item;
    let Some(mut body) = body else {
        return Err((name, "resource has no body".to_string()));
    };
    if body.type_url == RESOURCE_WRAPPER {
        let wrapper = WireResource::decode(body.value.as_slice())
            .map_err(|e| (name.clone(), format!("cannot decode Resource wrapper: {e}")))?;
        if !wrapper.name.is_empty() {
            name = Some(wrapper.name);
        }
        if !wrapper.version.is_empty() {
            version = wrapper.version;
        }
        body = wrapper
            .resource
            .ok_or_else(|| (name.clone(), "Resource wrapper has no resource".to_string()))?;
    }
    if body.type_url != resource_type.type_url() {
        return Err((
            name,
            format!(
                "has type {} in a response for {}",
                body.type_url,
                resource_type.type_url()
            ),
        ));
    }
    let inner = resource_type
        .decode_name(&body.value)
        .map_err(|e| (name.clone(), format!("cannot decode {resource_type}: {e}")))?;
    if inner.is_empty() {
        return Err((name, format!("{resource_type} has no name")));
    }
    if let Some(outer) = &name
        && *outer != inner
    {
        return Err((
            name.clone(),
            format!("is named {inner:?} inside the resource"),
        ));
    }
    Ok(Resource {
        name: inner,
        version,
        body,
    })
}

/// Records the outcome of a response in `state` and returns the NACK detail, if any.
///
/// Accepted resources become held at their versions; rejected ones keep whatever version the
/// consumer held before (it keeps the last good copy); removed ones are forgotten. A response
/// with no rejection at all moves the SotW `accepted_version`.
pub(crate) fn commit(
    state: &mut TypeState,
    update: &Update,
    nonce: &str,
    rejected: &[Rejection],
) -> Option<Status> {
    state.nonce = nonce.to_string();
    let refused: BTreeSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
    for name in &update.removed {
        state.held.remove(name);
    }
    for resource in &update.resources {
        if !refused.contains(resource.name.as_str()) {
            state
                .held
                .insert(resource.name.clone(), resource.version.clone());
        }
    }
    if rejected.is_empty() {
        state.accepted_version = update.version.clone();
        return None;
    }
    Some(nack_status(update.resource_type, rejected))
}

/// The `error_detail` of a NACK: every rejected resource and why, one per clause.
pub(crate) fn nack_status(resource_type: ResourceType, rejected: &[Rejection]) -> Status {
    let reasons: Vec<String> = rejected
        .iter()
        .map(|r| format!("{}: {}", r.name, r.reason))
        .collect();
    Status {
        code: INVALID_ARGUMENT,
        message: format!(
            "{resource_type} update rejected ({} resource{}): {}",
            rejected.len(),
            if rejected.len() == 1 { "" } else { "s" },
            reasons.join("; ")
        ),
        details: Vec::new(),
    }
}

/// The `error_detail` of a NACK for a response the client cannot take at all.
pub(crate) fn whole_response_status(reason: String) -> Status {
    Status {
        code: INVALID_ARGUMENT,
        message: reason,
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
