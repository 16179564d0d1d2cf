//! Facts istio-iptables reads from the host when a flag is not given: the proxy user's uid
//! (`ENVOY_USER`, default `istio-proxy`, else 1337), the resolvers in `/etc/resolv.conf` (for DNS
//! capture) and whether the pod is IPv6 (which enables the ip6tables half of the rules).
//!
//! The parsers take file contents so they are testable; `HostFacts::read` does the I/O and treats
//! an unreadable file as "no information", never as an error (the defaults then apply).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What was learned from the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// UID of `ENVOY_USER` if that user exists.
    pub proxy_uid: Option<String>,
    /// `nameserver` entries of resolv.conf, in order.
    pub dns_servers: Vec<String>,
    /// Whether istio-iptables would enable IPv6 rules for this pod.
    pub ipv6: bool,
}

impl HostFacts {
    /// Reads `/etc/passwd`, `/etc/resolv.conf`, `/proc/net/fib_trie` and `/proc/net/if_inet6`.
    pub fn read(envoy_user: &str, dual_stack: bool) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        Self {
            proxy_uid: proxy_uid_from_passwd(&read("/etc/passwd"), envoy_user),
            dns_servers: parse_resolv_conf(&read("/etc/resolv.conf")),
            ipv6: detect_ipv6(
                &read("/proc/net/fib_trie"),
                &read("/proc/net/if_inet6"),
                dual_stack,
            ),
        }
    }
}

/// The uid of `user` in passwd(5) contents.
pub fn proxy_uid_from_passwd(passwd: &str, user: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(user))
            .then(|| fields.nth(1).map(str::to_owned))
            .flatten()
    })
}

/// `nameserver` addresses in resolv.conf(5) contents, skipping malformed entries.
pub fn parse_resolv_conf(contents: &str) -> Vec<String> {
    contents
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter(|addr| addr.parse::<IpAddr>().is_ok())
        .map(str::to_owned)
        .collect()
}

/// istio-iptables' rule: the pod is "IPv6" when its first usable (non-loopback, non-link-local)
/// address is IPv6, or, in dual-stack mode, when it has any usable IPv6 address.
pub fn detect_ipv6(fib_trie: &str, if_inet6: &str, dual_stack: bool) -> bool {
    let has_v6 = if_inet6.lines().any(usable_inet6_line);
    let has_v4 = local_ipv4_addrs(fib_trie).any(|a| !a.is_loopback() && !a.is_link_local());
    if dual_stack {
        has_v6
    } else {
        has_v6 && !has_v4
    }
}

/// `/proc/net/if_inet6`: `<32 hex digits> <ifindex> <prefix len> <scope> <flags> <name>`.
fn usable_inet6_line(line: &str) -> bool {
    let Some(hex) = line.split_whitespace().next() else {
        return false;
    };
    let Ok(bits) = u128::from_str_radix(hex, 16) else {
        return false;
    };
    let addr = Ipv6Addr::from(bits);
    let link_local = (addr.segments()[0] & 0xffc0) == 0xfe80;
    !addr.is_loopback() && !link_local && !addr.is_unspecified()
}

/// `/proc/net/fib_trie` lists each local address as `|-- a.b.c.d` followed by `/32 host LOCAL`.
fn local_ipv4_addrs(fib_trie: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let lines: Vec<&str> = fib_trie.lines().collect();
    let mut found = Vec::new();
    for pair in lines.windows(2) {
        let addr = pair[0].trim().strip_prefix("|-- ");
        if let Some(addr) = addr.filter(|_| pair[1].contains("/32 host LOCAL")) {
            found.extend(addr.parse::<Ipv4Addr>().ok());
        }
    }
    found.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_finds_the_envoy_user() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/:/sbin/nologin\n";
        assert_eq!(
            proxy_uid_from_passwd(passwd, "istio-proxy").as_deref(),
            Some("1337")
        );
        assert_eq!(proxy_uid_from_passwd(passwd, "nobody"), None);
    }

    #[test]
    fn resolv_conf_yields_nameservers_in_order() {
        let conf = "search svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\n\
                    nameserver bogus\noptions ndots:5\n";
        assert_eq!(parse_resolv_conf(conf), ["10.96.0.10", "fd00::a"]);
    }

    const FIB_TRIE: &str = "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.1.2.3\n        \
                            /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
    const INET6: &str = "00000000000000000000000000000001 01 80 10 80       lo\n\
                         fd000000000000000000000000000005 02 40 00 80     eth0\n";

    #[test]
    fn ipv4_pod_with_ipv6_address_is_ipv6_only_in_dual_stack() {
        assert!(!detect_ipv6(FIB_TRIE, INET6, false));
        assert!(detect_ipv6(FIB_TRIE, INET6, true));
    }

    #[test]
    fn ipv6_only_pod_is_ipv6() {
        let loopback_only = "Local:\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert!(detect_ipv6(loopback_only, INET6, false));
        assert!(!detect_ipv6(loopback_only, "", false));
    }
}
