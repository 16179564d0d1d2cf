//! The ADS and SDS client: one gRPC stream to a control plane, state-of-the-world or delta.
//!
//! The client owns the protocol and nothing else. It keeps, per resource type, what the consumer
//! subscribed to, which resources (and versions) the consumer accepted, the last accepted
//! `version_info` and the last nonce; it turns each response into an [`Update`] for a
//! [`Handler`] and the handler's per-resource verdicts into an ACK or a NACK.
//!
//! Invariants:
//! - Nothing from the wire panics the client: an undecodable resource, a wrong `type_url`, a
//!   nameless or duplicated name, an unsupported type (SRDS, VHDS, anything unknown) is rejected
//!   with a reason naming it, and the NACK's `error_detail` carries every reason.
//! - The accepted resources of a partly rejected response still reach the consumer; only the
//!   rejected ones are held back (the consumer keeps their last good version).
//! - The consumer only ever sees resources it subscribed to (wildcard or by name), and removals
//!   only of resources it holds: delta `removed_resources`, or absence from a state-of-the-world
//!   Listener/Cluster response (never for the other types, per Envoy's rules).
//! - A lost stream is re-opened with exponential back-off and jitter; the subscriptions and the
//!   accepted versions survive it (delta resumes with `initial_resource_versions`, listing only
//!   resources the consumer accepted).

mod client;
mod handler;
mod state;
mod tls;
mod transport;
mod wire;

pub use client::{AdsClient, AdsHandle, StreamStatus};
pub use handler::{ChannelHandler, Delivery, Handler, Rejection, Resource, Update};
pub use tls::{
    ClientCertificate, HandshakeError, SanMatcher, SubjectAltName, TlsConfigError, TlsOptions,
    TlsVersion, XdsTls, subject_alt_names,
};
pub use transport::{ConnectError, XdsAddress};

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::config::core::v3::api_config_source::ApiType;
use crate::resource::ResourceType;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Reads one encoded `DiscoveryResponse` (state of the world) or `DeltaDiscoveryResponse` the
/// way the client reads a control plane's: decoded, its type resolved, each resource checked,
/// for a consumer subscribed to everything of that type. `Err` when the bytes are no response or
/// the type is unsupported (the client NACKs those whole). For fuzzing the wire-to-consumer path
/// without a stream.
pub fn read_encoded_response(
    protocol: Protocol,
    bytes: &[u8],
) -> Result<(Update, Vec<Rejection>), String> {
    use crate::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
    use prost::Message;
    use wire::Wire;
    let parsed = match protocol {
        Protocol::StateOfTheWorld => wire::StateOfTheWorld::parse(
            DiscoveryResponse::decode(bytes).map_err(|e| e.to_string())?,
        ),
        Protocol::Delta => {
            wire::Delta::parse(DeltaDiscoveryResponse::decode(bytes).map_err(|e| e.to_string())?)
        }
    };
    let ty = ResourceType::from_type_url(&parsed.type_url)
        .ok_or_else(|| format!("unsupported type {:?}", parsed.type_url))?;
    let everything = state::TypeState {
        wildcard: true,
        ..Default::default()
    };
    let prepared = state::prepare(
        ty,
        &everything,
        &parsed.version,
        parsed.incoming,
        parsed.removal,
    );
    Ok((prepared.update, prepared.rejected))
}

/// Which variant of the xDS protocol the stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `StreamAggregatedResources` / `StreamSecrets`: full state per response (`api_type: GRPC`).
    StateOfTheWorld,
    /// `DeltaAggregatedResources`: incremental (`api_type: DELTA_GRPC`, Istio's default).
    Delta,
}

/// Which gRPC service the stream calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `envoy.service.discovery.v3.AggregatedDiscoveryService`: every type on one stream.
    Aggregated,
    /// `envoy.service.secret.v3.SecretDiscoveryService.StreamSecrets`: secrets only, SotW only.
    Secrets,
}

/// The bootstrap's `ads_config.api_type` as a [`Protocol`].
pub fn protocol_from_api_type(api_type: i32) -> Result<Protocol, ConfigError> {
    match ApiType::try_from(api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => Ok(Protocol::StateOfTheWorld),
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => Ok(Protocol::Delta),
        Ok(other) => Err(ConfigError::UnsupportedApiType(
            other.as_str_name().to_string(),
        )),
        Err(_) => Err(ConfigError::UnsupportedApiType(api_type.to_string())),
    }
}

/// A client configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("ads_config.api_type {0} is not supported (GRPC or DELTA_GRPC)")]
    UnsupportedApiType(String),
    #[error("SDS (StreamSecrets) has no delta variant")]
    DeltaSecrets,
}

/// Re-connection pacing: the n-th consecutive failure waits a random time in
/// `[d/2, d]` where `d = min(max, initial * 2^n)`. A stream that delivered a response resets n.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Envoy's gRPC mux defaults: 500 ms base, 30 s cap.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `failures` (0 = after the first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let mut rng = SmallRng::from_os_rng();
        half + Duration::from_micros(rng.random_range(0..=spread))
    }
}

/// Everything the client needs to run.
#[derive(Clone, Debug)]
pub struct AdsConfig {
    pub address: XdsAddress,
    /// TLS to the control plane (`None`: plaintext h2c).
    pub tls: Option<XdsTls>,
    pub protocol: Protocol,
    pub service: Service,
    /// Sent on the first request of each stream, or on every request when
    /// `node_on_first_message_only` is false (`ads_config.set_node_on_first_message_only`).
    pub node: Node,
    pub node_on_first_message_only: bool,
    /// Types subscribed as wildcard from the start (Listener and Cluster for ADS; none for SDS).
    pub wildcard: Vec<ResourceType>,
    pub backoff: Backoff,
    /// How long establishing one connection may take.
    pub connect_timeout: Duration,
}

impl AdsConfig {
    /// ADS as Istio's bootstrap asks for it: wildcard LDS and CDS, node on the first message.
    pub fn ads(address: XdsAddress, protocol: Protocol, node: Node) -> AdsConfig {
        AdsConfig {
            address,
            tls: None,
            protocol,
            service: Service::Aggregated,
            node,
            node_on_first_message_only: true,
            wildcard: vec![ResourceType::Cluster, ResourceType::Listener],
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// SDS (`StreamSecrets`): state of the world, named secrets only.
    pub fn sds(address: XdsAddress, node: Node) -> AdsConfig {
        AdsConfig {
            service: Service::Secrets,
            protocol: Protocol::StateOfTheWorld,
            wildcard: Vec::new(),
            ..AdsConfig::ads(address, Protocol::StateOfTheWorld, node)
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.service == Service::Secrets && self.protocol == Protocol::Delta {
            return Err(ConfigError::DeltaSecrets);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_type_maps_to_protocol() {
        assert_eq!(
            protocol_from_api_type(ApiType::Grpc as i32).unwrap(),
            Protocol::StateOfTheWorld
        );
        assert_eq!(
            protocol_from_api_type(ApiType::DeltaGrpc as i32).unwrap(),
            Protocol::Delta
        );
        let err = protocol_from_api_type(ApiType::Rest as i32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ads_config.api_type REST is not supported (GRPC or DELTA_GRPC)"
        );
        assert!(protocol_from_api_type(42).is_err());
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = backoff.delay(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff.delay(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }
}
