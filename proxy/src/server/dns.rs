//! STRICT_DNS and LOGICAL_DNS clusters: resolve each endpoint's host name with the system
//! resolver every `dns_refresh_rate` and hand the result to the manager as the cluster's hosts.
//!
//! The system resolver (getaddrinfo) does not report TTLs, so `respect_dns_ttl` cannot be
//! honoured yet: the refresh rate always applies.

use super::{Command, ServerHandle};
use crate::config::address::Address;
use crate::config::cluster::{Cluster, Discovery, DnsFamily, Endpoint};
use std::net::SocketAddr;
use std::time::Duration;

/// Re-resolves `cluster` forever (the manager aborts the task when the cluster changes or goes).
pub async fn resolve_forever(cluster: Cluster, handle: ServerHandle) {
    let (refresh, logical, family) = match cluster.discovery {
        Discovery::StrictDns {
            refresh, family, ..
        } => (refresh, false, family),
        Discovery::LogicalDns {
            refresh, family, ..
        } => (refresh, true, family),
        _ => return,
    };
    let refresh = refresh.max(Duration::from_millis(100));
    loop {
        let endpoints = resolve(&cluster.load_assignment.endpoints, logical, family).await;
        handle.send(Command::SetHosts {
            cluster: cluster.name.clone(),
            endpoints,
        });
        tokio::time::sleep(refresh).await;
    }
}

/// Every configured endpoint becomes one host per resolved address (STRICT_DNS) or one host for
/// the first address (LOGICAL_DNS). A name that fails to resolve contributes no hosts this round.
async fn resolve(configured: &[Endpoint], logical: bool, family: DnsFamily) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for endpoint in configured {
        let addresses: Vec<SocketAddr> = match &endpoint.address {
            Address::Socket(addr) => vec![*addr],
            Address::Named { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(found) => by_family(found.collect(), family),
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

/// Keeps the addresses `family` asks for, in the resolver's order.
fn by_family(found: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = found.iter().partition(|a| a.is_ipv4());
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::Auto if !v6.is_empty() => v6,
        DnsFamily::Auto => v4,
        DnsFamily::V4Preferred if !v4.is_empty() => v4,
        DnsFamily::V4Preferred => v6,
        DnsFamily::All => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_envoys_lookup_rules() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let both = vec![v4, v6];
        assert_eq!(by_family(both.clone(), DnsFamily::Auto), [v6]);
        assert_eq!(by_family(vec![v4], DnsFamily::Auto), [v4]);
        assert_eq!(by_family(both.clone(), DnsFamily::V4Preferred), [v4]);
        assert_eq!(by_family(vec![v6], DnsFamily::V4Preferred), [v6]);
        assert_eq!(by_family(both.clone(), DnsFamily::V4Only), [v4]);
        assert_eq!(by_family(both.clone(), DnsFamily::V6Only), [v6]);
        assert_eq!(by_family(both.clone(), DnsFamily::All), both);
    }
}
