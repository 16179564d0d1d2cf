//! The xDS resource types Tern subscribes to, and how to learn a resource's name from its bytes.
//!
//! State-of-the-world responses carry bare `Any`s, so the name a resource is known by lives inside
//! the message (`name`, or `cluster_name` for endpoints). Every type here keeps it in field 1, but
//! the client decodes the whole message anyway: a resource that does not decode is rejected by
//! the client with a reason, before it reaches the consumer.

use crate::pb::envoy::config::cluster::v3::Cluster;
use crate::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use crate::pb::envoy::config::listener::v3::Listener;
use crate::pb::envoy::config::route::v3::RouteConfiguration;
use crate::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::Message;
use std::fmt;

/// Type URL of `envoy.config.listener.v3.Listener` (LDS).
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Type URL of `envoy.config.cluster.v3.Cluster` (CDS).
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// Type URL of `envoy.config.route.v3.RouteConfiguration` (RDS).
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// Type URL of `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// Type URL of `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Type URL of `envoy.config.route.v3.ScopedRouteConfiguration` (SRDS, not supported).
pub const SCOPED_ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
/// Type URL of `envoy.config.route.v3.VirtualHost` (VHDS, not supported).
pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
/// Type URL of `envoy.service.discovery.v3.Resource`, the wrapper a SotW response may use.
pub const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// A resource type the client subscribes to and hands to its consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl ResourceType {
    /// Every supported type, in the order a fresh stream requests them (CDS before LDS, as Envoy).
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => CLUSTER,
            ResourceType::Endpoint => ENDPOINT,
            ResourceType::Listener => LISTENER,
            ResourceType::Route => ROUTE,
            ResourceType::Secret => SECRET,
        }
    }

    /// The type for a type URL; `None` for anything Tern does not take over xDS (including
    /// ScopedRouteConfiguration and VirtualHost, which are refused with a NACK).
    pub fn from_type_url(type_url: &str) -> Option<ResourceType> {
        ResourceType::ALL
            .into_iter()
            .find(|t| t.type_url() == type_url)
    }

    /// Listener and Cluster: the types whose state-of-the-world responses carry the complete set,
    /// so a resource missing from a response has been removed (and whose legacy empty request
    /// means "everything").
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Decodes `bytes` as this type and returns the name the resource is known by.
    pub fn decode_name(self, bytes: &[u8]) -> Result<String, prost::DecodeError> {
        Ok(match self {
            ResourceType::Cluster => Cluster::decode(bytes)?.name,
            ResourceType::Endpoint => ClusterLoadAssignment::decode(bytes)?.cluster_name,
            ResourceType::Listener => Listener::decode(bytes)?.name,
            ResourceType::Route => RouteConfiguration::decode(bytes)?.name,
            ResourceType::Secret => Secret::decode(bytes)?.name,
        })
    }

    /// A short name for messages: `Cluster`, `Listener`, ...
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "Cluster",
            ResourceType::Endpoint => "ClusterLoadAssignment",
            ResourceType::Listener => "Listener",
            ResourceType::Route => "RouteConfiguration",
            ResourceType::Secret => "Secret",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// Why a response of `type_url` is refused as a whole.
pub fn unsupported_reason(type_url: &str) -> String {
    if type_url == SCOPED_ROUTE || type_url == VIRTUAL_HOST {
        format!("resource type {type_url} (SRDS/VHDS) is not supported")
    } else {
        format!("resource type {type_url} is not supported")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::envoy::config::route::v3::{ScopedRouteConfiguration, VirtualHost};
    use prost::Name;

    #[test]
    fn type_urls_are_the_generated_ones() {
        assert_eq!(CLUSTER, Cluster::type_url());
        assert_eq!(ENDPOINT, ClusterLoadAssignment::type_url());
        assert_eq!(LISTENER, Listener::type_url());
        assert_eq!(ROUTE, RouteConfiguration::type_url());
        assert_eq!(SECRET, Secret::type_url());
        assert_eq!(SCOPED_ROUTE, ScopedRouteConfiguration::type_url());
        assert_eq!(VIRTUAL_HOST, VirtualHost::type_url());
    }

    #[test]
    fn endpoint_name_is_cluster_name() {
        let cla = ClusterLoadAssignment {
            cluster_name: "outbound|80||a".into(),
            ..Default::default()
        };
        let name = ResourceType::Endpoint.decode_name(&cla.encode_to_vec());
        assert_eq!(name.unwrap(), "outbound|80||a");
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(
            ResourceType::Listener
                .decode_name(&[0xff, 0xff, 0xff])
                .is_err()
        );
    }
}
