//! STRICT_DNS and LOGICAL_DNS clusters: resolve each endpoint's host name with the system
//! resolver every `dns_refresh_rate` and hand the result to the manager as the cluster's hosts.
//!
//! The system resolver (getaddrinfo) does not report TTLs, so `respect_dns_ttl` cannot be
//! honoured yet: the refresh rate always applies.

use super::{Command, ServerHandle};
use crate::config::address::Address;
use crate::config::cluster::{Cluster, Discovery, Endpoint};
use std::net::SocketAddr;
use std::time::Duration;

/// Re-resolves `cluster` forever (the manager aborts the task when the cluster changes or goes).
pub async fn resolve_forever(cluster: Cluster, handle: ServerHandle) {
    let (refresh, logical) = match cluster.discovery {
        Discovery::StrictDns { refresh, .. } => (refresh, false),
        Discovery::LogicalDns { refresh, .. } => (refresh, true),
        _ => return,
    };
    let refresh = refresh.max(Duration::from_millis(100));
    loop {
        let endpoints = resolve(&cluster.load_assignment.endpoints, logical).await;
        handle.send(Command::SetHosts {
            cluster: cluster.name.clone(),
            endpoints,
        });
        tokio::time::sleep(refresh).await;
    }
}

/// Every configured endpoint becomes one host per resolved address (STRICT_DNS) or one host for
/// the first address (LOGICAL_DNS). A name that fails to resolve contributes no hosts this round.
async fn resolve(configured: &[Endpoint], logical: bool) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for endpoint in configured {
        let addresses: Vec<SocketAddr> = match &endpoint.address {
            Address::Socket(addr) => vec![*addr],
            Address::Named { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(found) => found.collect(),
                    Err(e) => {
                        tracing::debug!(%host, "DNS resolution failed: {e}");
                        Vec::new()
                    }
                }
            }
            Address::Pipe(_) => Vec::new(),
        };
        let take = if logical { 1 } else { addresses.len() };
        for address in addresses.into_iter().take(take) {
            let hostname = match &endpoint.address {
                Address::Named { host, .. } => host.clone(),
                _ => endpoint.hostname.clone(),
            };
            out.push(Endpoint {
                address: Address::Socket(address),
                hostname,
                ..endpoint.clone()
            });
        }
    }
    out
}
