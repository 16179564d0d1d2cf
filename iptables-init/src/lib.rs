//! Traffic capture for Tern sidecars: an `istio-iptables` compatible rule generator and applier.
//!
//! The pipeline is: command line and Istio env vars (`cli`) -> a validated `CaptureConfig`
//! (`config`) -> an ordered rule program (`iptables::build` or `nftables::build`, over the data
//! model in `rules`) -> text for `iptables-restore`/`ip6tables-restore` or `nft -f` -> one atomic
//! apply per family (`apply`).
//!
//! Invariants: rule generation is pure and matches Istio's golden outputs; nothing touches the
//! kernel until the whole configuration has validated; re-running converges to the same rules
//! (no duplicates), and `--cleanup-only` removes exactly the chains/tables this tool creates.
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod config;
pub mod iptables;
pub mod nftables;
pub mod rules;

pub use config::{CaptureConfig, ConfigError, RawConfig};

/// The flags Istio's sidecar injector passes to istio-iptables (istio-init), without the program
/// name: outbound to 15001, inbound to 15006, uid 1337 exempt, all inbound ports but Istio's own.
pub const ISTIO_INJECTOR_ARGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];
