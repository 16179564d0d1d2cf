//! One entry point for fuzzing everything Tern does with bytes a control plane sends: the ADS
//! client's decoding and checks, then [`XdsState`]'s conversion, validation, warming and
//! subscription bookkeeping — the code that must never panic, whatever arrives.
//!
//! An input is a protocol byte (even: state of the world, odd: delta) followed by responses,
//! each a little-endian `u32` length and that many bytes of an encoded `DiscoveryResponse` /
//! `DeltaDiscoveryResponse`. All responses of one input go to one [`XdsState`], in order, so
//! sequences (a listener, then its routes, then a removal) are reachable.
//!
//! Used by the cargo-fuzz target in `proxy/fuzz/` and by the stable-toolchain mutation test
//! `tests/tests/xds_fuzz.rs`.

use super::settings::ControlPlane;
use super::{SecretSources, XdsSettings, XdsState};
use crate::stats::Store;
use std::time::{Duration, Instant};
use xds_client::ads::{Protocol, XdsAddress, read_encoded_response};

/// What one input did, so a harness can tell it reaches past decoding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Responses that decoded and had a supported type.
    pub responses: usize,
    /// Resources accepted by the client's checks and by the state.
    pub accepted: usize,
    /// Resources refused (by the client's checks or by conversion).
    pub rejected: usize,
}

/// Feeds one fuzz input (format above) through a fresh state.
pub fn apply_encoded_responses(input: &[u8]) -> Outcome {
    let Some((&protocol, mut rest)) = input.split_first() else {
        return Outcome::default();
    };
    let protocol = if protocol % 2 == 0 {
        Protocol::StateOfTheWorld
    } else {
        Protocol::Delta
    };
    let settings = XdsSettings {
        cds_initial_fetch_timeout: Some(Duration::from_secs(15)),
        static_eds: vec!["static-eds".into()],
        secret_sources: SecretSources {
            clusters: [(
                "sds-grpc".to_string(),
                Ok(ControlPlane {
                    address: XdsAddress::Unix("/sds".into()),
                    tls: None,
                }),
            )]
            .into(),
            statics: Default::default(),
        },
        ..XdsSettings::plain(XdsAddress::Tcp("http://127.0.0.1:1".into()), protocol)
    };
    let now = Instant::now();
    let mut state = XdsState::new(&settings, &Store::default(), now);
    let mut outcome = Outcome::default();
    while rest.len() >= 4 {
        let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let length = usize::try_from(length).map_or(rest.len() - 4, |l| l.min(rest.len() - 4));
        let (response, tail) = rest[4..].split_at(length);
        rest = tail;
        let Ok((update, refused)) = read_encoded_response(protocol, response) else {
            continue;
        };
        outcome.responses += 1;
        let offered = update.resources.len();
        let rejections = state.apply(update, now);
        outcome.rejected += refused.len() + rejections.len();
        outcome.accepted += offered.saturating_sub(rejections.len());
        let _ = state.sync_subscriptions();
        let _ = state.take_change();
    }
    state.expire(now + Duration::from_secs(3600));
    let _ = state.take_change();
    outcome
}

/// Builds an input from encoded responses (the inverse of the format above), for seeds.
pub fn encode_input(protocol: Protocol, responses: &[Vec<u8>]) -> Vec<u8> {
    let mut input = vec![u8::from(protocol == Protocol::Delta)];
    for response in responses {
        let length = u32::try_from(response.len()).unwrap_or(u32::MAX);
        input.extend_from_slice(&length.to_le_bytes());
        input.extend_from_slice(&response[..response.len().min(length as usize)]);
    }
    input
}
