//! The two wire variants: what each request carries and how a response is read.
//!
//! State of the world: every request names the full subscription and echoes the last accepted
//! `version_info`; ACK, NACK and subscription change are all such a request with the latest
//! nonce. Delta: the first request per type carries the subscription and the resume versions,
//! later ones only what changed; an ACK/NACK carries the nonce and nothing else.

use super::state::{Diff, Incoming, Removal, TypeState};
use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::pb::google::rpc::Status;
use crate::resource::ResourceType;

/// The explicit wildcard name.
const WILDCARD: &str = "*";

/// A response, read the same way for both variants.
pub(crate) struct Parsed {
    pub type_url: String,
    pub nonce: String,
    pub version: String,
    pub incoming: Vec<Incoming>,
    pub removal: Removal,
    /// The response's `control_plane.identifier`, when it names one.
    pub identifier: Option<String>,
}

/// One wire variant's request shapes.
pub(crate) trait Wire {
    type Request: Send + 'static;
    type Response;

    /// The first request for a type on a stream.
    fn initial(ty: ResourceType, state: &TypeState) -> Self::Request;
    /// A subscription change after the first request.
    fn change(ty: ResourceType, state: &TypeState, diff: &Diff) -> Self::Request;
    /// ACK (`detail` None) or NACK of the response with `nonce`; for a type the client does not
    /// know, `state` is a blank one.
    fn answer(
        type_url: &str,
        state: &TypeState,
        nonce: &str,
        detail: Option<Status>,
    ) -> Self::Request;
    fn set_node(request: &mut Self::Request, node: Node);
    fn parse(response: Self::Response) -> Parsed;
}

/// `StreamAggregatedResources` / `StreamSecrets`.
pub(crate) struct StateOfTheWorld;

fn sotw_names(ty: ResourceType, state: &TypeState) -> Vec<String> {
    if state.wildcard {
        // Listener/Cluster: the legacy empty list means everything; others need "*".
        if ty.is_full_state() {
            Vec::new()
        } else {
            vec![WILDCARD.to_string()]
        }
    } else {
        state.names.iter().cloned().collect()
    }
}

impl Wire for StateOfTheWorld {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn initial(ty: ResourceType, state: &TypeState) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: state.accepted_version.clone(),
            resource_names: sotw_names(ty, state),
            type_url: ty.type_url().to_string(),
            ..Default::default()
        }
    }

    fn change(ty: ResourceType, state: &TypeState, _diff: &Diff) -> DiscoveryRequest {
        DiscoveryRequest {
            response_nonce: state.nonce.clone(),
            ..Self::initial(ty, state)
        }
    }

    fn answer(
        type_url: &str,
        state: &TypeState,
        nonce: &str,
        detail: Option<Status>,
    ) -> DiscoveryRequest {
        let resource_names = ResourceType::from_type_url(type_url)
            .map(|ty| sotw_names(ty, state))
            .unwrap_or_default();
        DiscoveryRequest {
            version_info: state.accepted_version.clone(),
            resource_names,
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: detail,
            ..Default::default()
        }
    }

    fn set_node(request: &mut DiscoveryRequest, node: Node) {
        request.node = Some(node);
    }

    fn parse(response: DiscoveryResponse) -> Parsed {
        let version = response.version_info;
        Parsed {
            identifier: response.control_plane.map(|c| c.identifier),
            incoming: response
                .resources
                .into_iter()
                .map(|body| Incoming {
                    name: None,
                    version: version.clone(),
                    body: Some(body),
                })
                .collect(),
            type_url: response.type_url,
            nonce: response.nonce,
            version,
            removal: Removal::StateOfTheWorld,
        }
    }
}

/// `DeltaAggregatedResources`.
pub(crate) struct Delta;

impl Wire for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn initial(ty: ResourceType, state: &TypeState) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: ty.type_url().to_string(),
            resource_names_subscribe: sotw_names(ty, state),
            initial_resource_versions: state
                .held
                .iter()
                .map(|(name, version)| (name.clone(), version.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn change(ty: ResourceType, _state: &TypeState, diff: &Diff) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: ty.type_url().to_string(),
            resource_names_subscribe: diff.added.clone(),
            resource_names_unsubscribe: diff.removed.clone(),
            ..Default::default()
        }
    }

    fn answer(
        type_url: &str,
        _state: &TypeState,
        nonce: &str,
        detail: Option<Status>,
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: detail,
            ..Default::default()
        }
    }

    fn set_node(request: &mut DeltaDiscoveryRequest, node: Node) {
        request.node = Some(node);
    }

    fn parse(response: DeltaDiscoveryResponse) -> Parsed {
        Parsed {
            identifier: response.control_plane.map(|c| c.identifier),
            incoming: response
                .resources
                .into_iter()
                .map(|r| Incoming {
                    name: Some(r.name).filter(|n| !n.is_empty()),
                    version: r.version,
                    body: r.resource,
                })
                .collect(),
            type_url: response.type_url,
            nonce: response.nonce,
            version: response.system_version_info,
            removal: Removal::Names(response.removed_resources),
        }
    }
}
