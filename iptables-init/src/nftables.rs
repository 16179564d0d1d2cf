//! Builds the native nftables variant of the capture rules (istio-iptables `--native-nftables`,
//! Istio's `tools/istio-nftables`): three `inet` tables holding IPv4 and IPv6 rules together.
//!
//! Rule order mirrors `tools/istio-nftables/pkg/capture/run.go: Run`, with the fixes Istio's
//! current goldens carry (`skuid != <uid>` on the loopback return, `ip saddr` on DNS replies,
//! a `route` type mangle output chain). Every rule gets a `counter` just before its final
//! statement, as Istio's do.
//!
//! Invariant: only the `istio-proxy-*` tables are ever touched; re-applying replaces them whole.

mod render;

pub use render::{render, render_cleanup, render_replacing};

use crate::config::{CaptureConfig, InterceptionMode, IpRanges, OwnerGroups, PortSelection};
use crate::rules::RuleSet;

pub const NAT_TABLE: &str = "istio-proxy-nat";
pub const MANGLE_TABLE: &str = "istio-proxy-mangle";
pub const RAW_TABLE: &str = "istio-proxy-raw";
pub const TABLES: [&str; 3] = [NAT_TABLE, MANGLE_TABLE, RAW_TABLE];

const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const INBOUND: &str = "istio-inbound";
const REDIRECT: &str = "istio-redirect";
const IN_REDIRECT: &str = "istio-in-redirect";
const OUTPUT_CHAIN: &str = "istio-output";
const OUTPUT_DNS: &str = "istio-output-dns";
const DIVERT: &str = "istio-divert";
const TPROXY: &str = "istio-tproxy";
const DROP: &str = "istio-drop";

const AGENT_DNS_PORT: u16 = crate::iptables::AGENT_DNS_PORT;
const OUTBOUND_MARK: u32 = crate::iptables::OUTBOUND_MARK;
const LOOPBACK_V6: &str = "::1/128";

/// Builds the nftables rule program for `cfg` (all tables, emission order).
pub fn build(cfg: &CaptureConfig) -> RuleSet {
    let mut b = Builder {
        cfg,
        rules: RuleSet::default(),
    };
    b.exclude_interfaces();
    b.return_virtual_interfaces();
    b.drop_invalid();
    b.base_chains();
    b.inbound_ports();
    b.output_jump_and_port_excludes();
    b.proxy_owner_exemptions();
    b.owner_groups();
    if cfg.dns.redirect {
        b.dns_redirect();
        b.dns_conntrack_zones();
    }
    b.outbound_ranges();
    if cfg.mode == InterceptionMode::Tproxy {
        b.tproxy_marks();
    }
    b.rules
}

struct Builder<'a> {
    cfg: &'a CaptureConfig,
    rules: RuleSet,
}

/// `matches counter statement`.
fn body(matches: &str, statement: &str) -> String {
    if matches.is_empty() {
        format!("counter {statement}")
    } else {
        format!("{matches} counter {statement}")
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Uid,
    Gid,
}

impl Owner {
    fn key(self) -> &'static str {
        match self {
            Self::Uid => "skuid",
            Self::Gid => "skgid",
        }
    }
}

impl Builder<'_> {
    fn add(&mut self, table: &'static str, chain: &'static str, matches: &str, stmt: &str) {
        self.rules.append(table, chain, body(matches, stmt));
    }

    fn add_v6(&mut self, table: &'static str, chain: &'static str, matches: &str, stmt: &str) {
        if self.cfg.enable_ipv6 {
            self.add(table, chain, matches, stmt);
        }
    }

    fn insert(&mut self, table: &'static str, chain: &'static str, at: u32, m: &str, s: &str) {
        self.rules.insert(table, chain, at, body(m, s));
    }

    fn loopback_v4(&self) -> String {
        self.cfg.host_ipv4_loopback.to_string()
    }

    fn exclude_interfaces(&mut self) {
        let mut tables = vec![NAT_TABLE];
        if self.cfg.mode == InterceptionMode::Tproxy {
            tables.push(MANGLE_TABLE);
        }
        for table in tables {
            for iface in self.cfg.exclude_interfaces.clone() {
                self.add(table, PREROUTING, &format!("iifname {iface}"), "return");
                self.add(table, OUTPUT, &format!("oifname {iface}"), "return");
            }
        }
    }

    fn return_virtual_interfaces(&mut self) {
        for iface in self.cfg.virtual_interfaces.clone() {
            self.insert(
                NAT_TABLE,
                PREROUTING,
                0,
                &format!("iifname {iface}"),
                "return",
            );
        }
    }

    fn drop_invalid(&mut self) {
        if self.cfg.drop_invalid {
            let invalid = "meta l4proto tcp ct state invalid";
            self.add(MANGLE_TABLE, PREROUTING, invalid, &format!("jump {DROP}"));
            self.add(MANGLE_TABLE, DROP, "", "drop");
        }
    }

    fn base_chains(&mut self) {
        let cfg = self.cfg;
        let tunnel = format!("meta l4proto tcp tcp dport {}", cfg.inbound_tunnel_port);
        self.add(NAT_TABLE, INBOUND, &tunnel, "return");
        let to_proxy = format!("redirect to :{}", cfg.proxy_port);
        self.add(NAT_TABLE, REDIRECT, "meta l4proto tcp", &to_proxy);
        let to_inbound = format!("redirect to :{}", cfg.inbound_capture_port);
        self.add(NAT_TABLE, IN_REDIRECT, "meta l4proto tcp", &to_inbound);
    }

    fn inbound_ports(&mut self) {
        if self.cfg.inbound_ports == PortSelection::None {
            return;
        }
        let tproxy = self.cfg.mode == InterceptionMode::Tproxy;
        if tproxy {
            self.tproxy_chains();
        }
        let table = if tproxy { MANGLE_TABLE } else { NAT_TABLE };
        self.add(
            table,
            PREROUTING,
            "meta l4proto tcp",
            &format!("jump {INBOUND}"),
        );
        match self.cfg.inbound_ports.clone() {
            PortSelection::None => {}
            PortSelection::All => self.inbound_all_ports(table, tproxy),
            PortSelection::Only(ports) => self.inbound_listed_ports(&ports, tproxy),
        }
    }

    fn tproxy_chains(&mut self) {
        let (mark, port) = (self.cfg.tproxy_mark, self.cfg.inbound_capture_port);
        self.add(MANGLE_TABLE, DIVERT, "", &format!("meta mark set {mark}"));
        self.add(MANGLE_TABLE, DIVERT, "", "accept");
        let lo = self.loopback_v4();
        let v4 =
            format!("meta l4proto tcp ip daddr != {lo} tproxy ip to :{port} meta mark set {mark}");
        self.add(MANGLE_TABLE, TPROXY, &v4, "accept");
        let v6 = format!(
            "meta l4proto tcp ip6 daddr != {LOOPBACK_V6} tproxy ip6 to :{port} meta mark set {mark}"
        );
        self.add_v6(MANGLE_TABLE, TPROXY, &v6, "accept");
    }

    fn inbound_all_ports(&mut self, table: &'static str, tproxy: bool) {
        for port in self.cfg.inbound_ports_exclude.clone() {
            let matches = format!("meta l4proto tcp tcp dport {port}");
            self.add(table, INBOUND, &matches, "return");
        }
        if tproxy {
            let established = "meta l4proto tcp ct state related,established";
            self.add(
                MANGLE_TABLE,
                INBOUND,
                established,
                &format!("jump {DIVERT}"),
            );
            self.add(
                MANGLE_TABLE,
                INBOUND,
                "meta l4proto tcp",
                &format!("jump {TPROXY}"),
            );
        } else {
            let jump = format!("jump {IN_REDIRECT}");
            self.add(NAT_TABLE, INBOUND, "meta l4proto tcp", &jump);
        }
    }

    fn inbound_listed_ports(&mut self, ports: &[u16], tproxy: bool) {
        for port in ports {
            if tproxy {
                let established =
                    format!("meta l4proto tcp ct state related,established tcp dport {port}");
                self.add(
                    MANGLE_TABLE,
                    INBOUND,
                    &established,
                    &format!("jump {DIVERT}"),
                );
                let new = format!("meta l4proto tcp tcp dport {port}");
                self.add(MANGLE_TABLE, INBOUND, &new, &format!("jump {TPROXY}"));
            } else {
                let matches = format!("meta l4proto tcp tcp dport {port}");
                self.add(NAT_TABLE, INBOUND, &matches, &format!("jump {IN_REDIRECT}"));
            }
        }
    }

    fn output_jump_and_port_excludes(&mut self) {
        self.add(NAT_TABLE, OUTPUT, "", &format!("jump {OUTPUT_CHAIN}"));
        for port in self.cfg.outbound_ports_exclude.clone() {
            self.add(
                NAT_TABLE,
                OUTPUT_CHAIN,
                &format!("tcp dport {port}"),
                "return",
            );
            self.add(
                NAT_TABLE,
                OUTPUT_CHAIN,
                &format!("udp dport {port}"),
                "return",
            );
        }
        self.add(
            NAT_TABLE,
            OUTPUT_CHAIN,
            "oifname lo ip saddr 127.0.0.6/32",
            "return",
        );
        self.add_v6(
            NAT_TABLE,
            OUTPUT_CHAIN,
            "oifname lo ip6 saddr ::6/128",
            "return",
        );
    }

    fn proxy_owner_exemptions(&mut self) {
        for uid in self.cfg.proxy_uids.clone() {
            self.owner_exemption(Owner::Uid, &uid);
        }
        for gid in self.cfg.proxy_gids.clone() {
            self.owner_exemption(Owner::Gid, &gid);
        }
    }

    fn owner_exemption(&mut self, owner: Owner, id: &str) {
        let cfg = self.cfg;
        let key = owner.key();
        let tunnel = cfg.inbound_tunnel_port;
        let dports = match owner {
            Owner::Uid if cfg.dns.redirect => format!("{{ 53, {tunnel} }}"),
            _ => tunnel.to_string(),
        };
        let jump = format!("jump {IN_REDIRECT}");
        let lo = self.loopback_v4();
        let v4 = format!("oifname lo meta l4proto tcp ip daddr != {lo} tcp dport != {dports}");
        self.add(NAT_TABLE, OUTPUT_CHAIN, &format!("{v4} {key} {id}"), &jump);
        let v6 =
            format!("oifname lo meta l4proto tcp ip6 daddr != {LOOPBACK_V6} tcp dport != {dports}");
        self.add_v6(NAT_TABLE, OUTPUT_CHAIN, &format!("{v6} {key} {id}"), &jump);
        if !cfg.outbound_ranges_include.includes_loopback() {
            let dns_port = if cfg.dns.redirect {
                " meta l4proto tcp tcp dport != 53"
            } else {
                ""
            };
            let matches = format!("oifname lo{dns_port} {key} != {id}");
            self.add(NAT_TABLE, OUTPUT_CHAIN, &matches, "return");
        }
        self.add(NAT_TABLE, OUTPUT_CHAIN, &format!("{key} {id}"), "return");
    }

    fn owner_groups(&mut self) {
        match self.cfg.owner_groups.clone() {
            OwnerGroups::AllExcept(groups) => {
                for group in groups {
                    self.add(NAT_TABLE, OUTPUT_CHAIN, &format!("skgid {group}"), "return");
                }
            }
            OwnerGroups::Only(groups) => {
                let none_of: Vec<String> = groups.iter().map(|g| format!("skgid != {g}")).collect();
                self.add(NAT_TABLE, OUTPUT_CHAIN, &none_of.join(" "), "return");
            }
        }
    }

    fn dns_redirect(&mut self) {
        let dns = self.cfg.dns.clone();
        self.add(RAW_TABLE, OUTPUT, "", &format!("jump {OUTPUT_DNS}"));
        self.add(NAT_TABLE, OUTPUT_CHAIN, "", &format!("jump {OUTPUT_DNS}"));
        let to_agent = format!("redirect to :{AGENT_DNS_PORT}");
        for proto in ["tcp", "udp"] {
            if dns.capture_all {
                let l4 = if proto == "tcp" {
                    "meta l4proto tcp "
                } else {
                    ""
                };
                let matches = format!("{l4}{proto} dport 53");
                self.add(NAT_TABLE, OUTPUT_DNS, &matches, &to_agent);
                continue;
            }
            for s in &dns.servers_v4 {
                let matches = format!("ip daddr {s}/32 {proto} dport 53");
                self.add(NAT_TABLE, OUTPUT_DNS, &matches, &to_agent);
            }
            for s in &dns.servers_v6 {
                let matches = format!("ip6 daddr {s}/128 {proto} dport 53");
                self.add_v6(NAT_TABLE, OUTPUT_DNS, &matches, &to_agent);
            }
        }
    }

    fn dns_conntrack_zones(&mut self) {
        let owners: Vec<_> = (self
            .cfg
            .proxy_uids
            .iter()
            .map(|id| (Owner::Uid, id.clone())))
        .chain(
            self.cfg
                .proxy_gids
                .iter()
                .map(|id| (Owner::Gid, id.clone())),
        )
        .collect();
        for (owner, id) in owners {
            let key = owner.key();
            let upstream = format!("udp dport 53 meta {key} {id}");
            self.add(RAW_TABLE, OUTPUT_DNS, &upstream, "ct zone set 1");
            let reply = format!("udp sport {AGENT_DNS_PORT} meta {key} {id}");
            self.add(RAW_TABLE, OUTPUT_DNS, &reply, "ct zone set 2");
        }
        let dns = self.cfg.dns.clone();
        let jump = format!("jump {INBOUND}");
        if dns.capture_all {
            self.add(RAW_TABLE, PREROUTING, "", &jump);
            self.add(RAW_TABLE, OUTPUT_DNS, "udp dport 53", "ct zone set 2");
            self.add(RAW_TABLE, INBOUND, "udp sport 53", "ct zone set 1");
            return;
        }
        self.add(RAW_TABLE, PREROUTING, "", &jump);
        for s in &dns.servers_v4 {
            let query = format!("udp dport 53 ip daddr {s}/32");
            self.add(RAW_TABLE, OUTPUT_DNS, &query, "ct zone set 2");
            let answer = format!("udp sport 53 ip saddr {s}/32");
            self.add(RAW_TABLE, INBOUND, &answer, "ct zone set 1");
        }
        for s in &dns.servers_v6 {
            let query = format!("udp dport 53 ip6 daddr {s}/128");
            self.add_v6(RAW_TABLE, OUTPUT_DNS, &query, "ct zone set 2");
            let answer = format!("udp sport 53 ip6 saddr {s}/128");
            self.add_v6(RAW_TABLE, INBOUND, &answer, "ct zone set 1");
        }
    }

    fn outbound_ranges(&mut self) {
        let lo = self.loopback_v4();
        self.add(NAT_TABLE, OUTPUT_CHAIN, &format!("ip daddr {lo}"), "return");
        self.add_v6(
            NAT_TABLE,
            OUTPUT_CHAIN,
            &format!("ip6 daddr {LOOPBACK_V6}"),
            "return",
        );
        for cidr in self.cfg.outbound_ranges_exclude.clone() {
            if cidr.addr.is_ipv4() {
                self.add(
                    NAT_TABLE,
                    OUTPUT_CHAIN,
                    &format!("ip daddr {cidr}"),
                    "return",
                );
            } else {
                self.add_v6(
                    NAT_TABLE,
                    OUTPUT_CHAIN,
                    &format!("ip6 daddr {cidr}"),
                    "return",
                );
            }
        }
        for port in self.cfg.outbound_ports_include.clone() {
            let jump = format!("jump {REDIRECT}");
            self.add(NAT_TABLE, OUTPUT_CHAIN, &format!("tcp dport {port}"), &jump);
        }
        self.outbound_include();
    }

    fn outbound_include(&mut self) {
        let jump = format!("jump {REDIRECT}");
        let ifaces = self.cfg.virtual_interfaces.clone();
        if self.cfg.outbound_ranges_include == IpRanges::All {
            self.add(NAT_TABLE, OUTPUT_CHAIN, "", &jump);
            for iface in &ifaces {
                self.insert(NAT_TABLE, PREROUTING, 0, &format!("iifname {iface}"), &jump);
            }
            return;
        }
        let families = [(false, "ip"), (true, "ip6")];
        for (v6, keyword) in families {
            if v6 && !self.cfg.enable_ipv6 {
                continue;
            }
            for cidr in self.cfg.outbound_ranges_include.of_family(v6) {
                for iface in &ifaces {
                    let matches = format!("iifname {iface} {keyword} daddr {cidr}");
                    self.insert(NAT_TABLE, PREROUTING, 0, &matches, &jump);
                }
                let matches = format!("{keyword} daddr {cidr}");
                self.add(NAT_TABLE, OUTPUT_CHAIN, &matches, &jump);
            }
        }
    }

    fn tproxy_marks(&mut self) {
        let mark = self.cfg.tproxy_mark;
        let tcp_mark = format!("meta l4proto tcp mark {mark}");
        self.add(MANGLE_TABLE, PREROUTING, &tcp_mark, "ct mark set mark");
        self.add(
            MANGLE_TABLE,
            OUTPUT,
            &format!("oifname lo {tcp_mark}"),
            "return",
        );
        let owners: Vec<_> = (self
            .cfg
            .proxy_uids
            .iter()
            .map(|id| (Owner::Uid, id.clone())))
        .chain(
            self.cfg
                .proxy_gids
                .iter()
                .map(|id| (Owner::Gid, id.clone())),
        )
        .collect();
        let lo = self.loopback_v4();
        let set_mark = format!("meta mark set {OUTBOUND_MARK}");
        for (owner, id) in owners {
            let key = owner.key();
            let v4 = format!("oifname lo meta l4proto tcp ip daddr != {lo} {key} {id}");
            self.add(MANGLE_TABLE, OUTPUT, &v4, &set_mark);
            let v6 = format!("oifname lo meta l4proto tcp ip6 daddr != {LOOPBACK_V6} {key} {id}");
            self.add_v6(MANGLE_TABLE, OUTPUT, &v6, &set_mark);
        }
        let restore = format!("meta l4proto tcp ct mark {mark}");
        self.add(MANGLE_TABLE, OUTPUT, &restore, "meta mark set ct mark");
        self.insert(MANGLE_TABLE, INBOUND, 0, &tcp_mark, "return");
        let v4 = "iifname lo meta l4proto tcp ip saddr 127.0.0.6/32";
        self.insert(MANGLE_TABLE, INBOUND, 1, v4, "return");
        if self.cfg.enable_ipv6 {
            let v6 = "iifname lo meta l4proto tcp ip6 saddr ::6/128";
            self.insert(MANGLE_TABLE, INBOUND, 1, v6, "return");
        }
        let app = format!("iifname lo meta l4proto tcp mark != {OUTBOUND_MARK}");
        self.insert(MANGLE_TABLE, INBOUND, 2, &app, "return");
    }
}
