//! STRICT_DNS and LOGICAL_DNS clusters: resolve each endpoint's host name and hand the result to
//! the manager as the cluster's hosts, again and again.
//!
//! Where the answer comes from:
//! - by default the system resolver (getaddrinfo), re-resolving every `dns_refresh_rate`;
//! - when the cluster sets `respect_dns_ttl` or names its own resolvers, Tern asks name servers
//!   itself ([`wire`]): the cluster's resolvers, else those in /etc/resolv.conf, after looking in
//!   /etc/hosts as c-ares does. With `respect_dns_ttl` the next refresh comes when the shortest
//!   TTL of the answers runs out, as in Envoy.

mod wire;

use super::{Command, ServerHandle};
use crate::config::address::Address;
use crate::config::cluster::{Cluster, Discovery, DnsFamily, DnsSettings, Endpoint};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Re-resolves `cluster` forever (the manager aborts the task when the cluster changes or goes).
pub async fn resolve_forever(cluster: Cluster, handle: ServerHandle) {
    let (settings, logical) = match &cluster.discovery {
        Discovery::StrictDns(settings) => (settings.clone(), false),
        Discovery::LogicalDns(settings) => (settings.clone(), true),
        _ => return,
    };
    loop {
        let (endpoints, ttl) =
            resolve(&cluster.load_assignment.endpoints, logical, &settings).await;
        handle.send(Command::SetHosts {
            cluster: cluster.name.clone(),
            endpoints,
        });
        let wait = match ttl {
            Some(ttl) if settings.respect_ttl && ttl > Duration::ZERO => ttl,
            _ => settings.refresh,
        };
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
}

/// Every configured endpoint becomes one host per resolved address (STRICT_DNS) or one host for
/// the first address (LOGICAL_DNS). A name that fails to resolve contributes no hosts this round.
/// Also returns the shortest TTL seen, when the answers carried TTLs.
async fn resolve(
    configured: &[Endpoint],
    logical: bool,
    settings: &DnsSettings,
) -> (Vec<Endpoint>, Option<Duration>) {
    let mut out = Vec::new();
    let mut shortest_ttl: Option<Duration> = None;
    for endpoint in configured {
        let (addresses, ttl): (Vec<SocketAddr>, Option<Duration>) = match &endpoint.address {
            Address::Socket(addr) => (vec![*addr], None),
            Address::Named { host, port } => {
                let (ips, ttl) = lookup(host, settings).await;
                (
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, *port))
                        .collect(),
                    ttl,
                )
            }
            Address::Pipe(_) => (Vec::new(), None),
        };
        if let Some(ttl) = ttl {
            shortest_ttl = Some(shortest_ttl.map_or(ttl, |s| s.min(ttl)));
        }
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
    (out, shortest_ttl)
}

/// Resolves one name to addresses of the wanted family, with a TTL when a name server answered.
async fn lookup(host: &str, settings: &DnsSettings) -> (Vec<IpAddr>, Option<Duration>) {
    if settings.resolvers.is_empty() && !settings.respect_ttl {
        return match tokio::net::lookup_host((host, 0)).await {
            Ok(found) => (
                by_family(found.map(|a| a.ip()).collect(), settings.family),
                None,
            ),
            Err(e) => {
                tracing::debug!(%host, "DNS resolution failed: {e}");
                (Vec::new(), None)
            }
        };
    }
    if settings.resolvers.is_empty() {
        let from_hosts = hosts_file_lookup(host);
        if !from_hosts.is_empty() {
            return (by_family(from_hosts, settings.family), None);
        }
    }
    let servers = if settings.resolvers.is_empty() {
        system_name_servers()
    } else {
        settings.resolvers.clone()
    };
    let kinds: &[wire::RecordType] = match settings.family {
        DnsFamily::V4Only => &[wire::RecordType::A],
        DnsFamily::V6Only => &[wire::RecordType::Aaaa],
        _ => &[wire::RecordType::A, wire::RecordType::Aaaa],
    };
    let mut answers = Vec::new();
    for kind in kinds {
        for server in &servers {
            match wire::query(*server, host, *kind, QUERY_TIMEOUT).await {
                Ok(found) => {
                    answers.extend(found);
                    break;
                }
                Err(e) => tracing::debug!(%host, %server, "DNS query failed: {e}"),
            }
        }
    }
    let ttl = answers.iter().map(|a| a.ttl).min();
    (
        by_family(answers.iter().map(|a| a.address).collect(), settings.family),
        ttl,
    )
}

/// The `nameserver` lines of /etc/resolv.conf (port 53).
fn system_name_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Addresses /etc/hosts gives `host`.
fn hosts_file_lookup(host: &str) -> Vec<IpAddr> {
    parse_hosts(
        &std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        host,
    )
}

fn parse_hosts(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            fields
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .collect()
}

/// Keeps the addresses `family` asks for, in the resolver's order.
fn by_family(found: Vec<IpAddr>, family: DnsFamily) -> Vec<IpAddr> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = found.iter().partition(|a| a.is_ipv4());
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
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let both = vec![v4, v6];
        assert_eq!(by_family(both.clone(), DnsFamily::Auto), [v6]);
        assert_eq!(by_family(vec![v4], DnsFamily::Auto), [v4]);
        assert_eq!(by_family(both.clone(), DnsFamily::V4Preferred), [v4]);
        assert_eq!(by_family(vec![v6], DnsFamily::V4Preferred), [v6]);
        assert_eq!(by_family(both.clone(), DnsFamily::V4Only), [v4]);
        assert_eq!(by_family(both.clone(), DnsFamily::V6Only), [v6]);
        assert_eq!(by_family(both.clone(), DnsFamily::All), both);
    }

    #[test]
    fn hosts_file_lines_match_any_alias_case_insensitively() {
        let text = "127.0.0.1 localhost\n# 10.0.0.9 db\n10.0.0.1 db.local DB  # primary\n::1 localhost ip6-localhost\n";
        assert_eq!(
            parse_hosts(text, "db"),
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(parse_hosts(text, "localhost").len(), 2);
        assert!(parse_hosts(text, "missing").is_empty());
    }
}
