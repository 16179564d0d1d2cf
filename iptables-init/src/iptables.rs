//! Builds istio-iptables' rules from a `CaptureConfig`, as two ordered rule sets (IPv4 for
//! `iptables-restore`, IPv6 for `ip6tables-restore`).
//!
//! The emission order is Istio's (`tools/istio-iptables/pkg/capture/run.go: Run`), step for step,
//! because rule order *is* the behaviour and the golden files pin it. Each step is one function
//! named after what it captures or exempts.
//!
//! Invariant: the IPv6 set stays empty unless `enable_ipv6`; rule bodies are iptables syntax
//! without the `-A CHAIN` / `-I CHAIN n` prefix (the renderer adds it).

mod restore;

pub use restore::{
    Residue, is_builtin_chain, jump_target, parse_save, render_restore, render_restore_over,
};

use crate::config::{CaptureConfig, InterceptionMode, IpRanges, OwnerGroups, PortSelection};
use crate::rules::RuleSet;

pub const FILTER: &str = "filter";
pub const MANGLE: &str = "mangle";
pub const NAT: &str = "nat";
pub const RAW: &str = "raw";
/// Tables in `iptables-restore` order (Istio sorts them by name).
pub const TABLES: [&str; 4] = [FILTER, MANGLE, NAT, RAW];

pub const PREROUTING: &str = "PREROUTING";
pub const OUTPUT: &str = "OUTPUT";
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
pub const ISTIO_DROP: &str = "ISTIO_DROP";
/// Every chain this tool may create; cleanup removes exactly these.
pub const ISTIO_CHAINS: [&str; 8] = [
    ISTIO_INBOUND,
    ISTIO_REDIRECT,
    ISTIO_IN_REDIRECT,
    ISTIO_OUTPUT,
    ISTIO_OUTPUT_DNS,
    ISTIO_DIVERT,
    ISTIO_TPROXY,
    ISTIO_DROP,
];

/// Where the agent's DNS proxy listens.
pub const AGENT_DNS_PORT: u16 = 15053;
/// Mark on the proxy's own loopback traffic to the pod IP in TPROXY mode.
pub const OUTBOUND_MARK: u32 = 1338;
/// Source address of inbound passthrough connections (`InboundPassthroughBindIpv4/6`).
const PASSTHROUGH_V4: &str = "127.0.0.6/32";
const PASSTHROUGH_V6: &str = "::6/128";
const LOOPBACK_V6: &str = "::1/128";

/// The IPv4 and IPv6 rule programs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IptablesPlan {
    pub v4: RuleSet,
    pub v6: RuleSet,
}

/// Builds Istio's rule program for `cfg`.
pub fn build(cfg: &CaptureConfig) -> IptablesPlan {
    let mut b = Builder {
        cfg,
        plan: IptablesPlan::default(),
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
    b.plan
}

struct Builder<'a> {
    cfg: &'a CaptureConfig,
    plan: IptablesPlan,
}

/// Which socket owner an exemption matches.
#[derive(Clone, Copy)]
enum Owner {
    Uid,
    Gid,
}

impl Owner {
    fn flag(self) -> &'static str {
        match self {
            Self::Uid => "--uid-owner",
            Self::Gid => "--gid-owner",
        }
    }
}

impl Builder<'_> {
    fn v4(&mut self, table: &'static str, chain: &'static str, body: String) {
        self.plan.v4.append(table, chain, body);
    }

    fn v6(&mut self, table: &'static str, chain: &'static str, body: String) {
        if self.cfg.enable_ipv6 {
            self.plan.v6.append(table, chain, body);
        }
    }

    fn both(&mut self, table: &'static str, chain: &'static str, body: String) {
        self.v4(table, chain, body.clone());
        self.v6(table, chain, body);
    }

    fn insert_v4(&mut self, table: &'static str, chain: &'static str, at: u32, body: String) {
        self.plan.v4.insert(table, chain, at, body);
    }

    fn insert_v6(&mut self, table: &'static str, chain: &'static str, at: u32, body: String) {
        if self.cfg.enable_ipv6 {
            self.plan.v6.insert(table, chain, at, body);
        }
    }

    fn insert_both(&mut self, table: &'static str, chain: &'static str, at: u32, body: String) {
        self.insert_v4(table, chain, at, body.clone());
        self.insert_v6(table, chain, at, body);
    }

    /// A rule whose address differs by family: `v4_addr` / `v6_addr` are passed to `body`.
    fn versioned(
        &mut self,
        table: &'static str,
        chain: &'static str,
        (v4_addr, v6_addr): (&str, &str),
        body: impl Fn(&str) -> String,
    ) {
        self.v4(table, chain, body(v4_addr));
        self.v6(table, chain, body(v6_addr));
    }

    fn loopback(&self) -> (String, &'static str) {
        (self.cfg.host_ipv4_loopback.to_string(), LOOPBACK_V6)
    }

    /// `-c`: neither direction is captured on these interfaces.
    fn exclude_interfaces(&mut self) {
        let ifaces = self.cfg.exclude_interfaces.clone();
        let mut tables = vec![NAT];
        if self.cfg.mode == InterceptionMode::Tproxy {
            tables.push(MANGLE);
        }
        for table in tables {
            for iface in &ifaces {
                self.both(table, PREROUTING, format!("-i {iface} -j RETURN"));
                self.both(table, OUTPUT, format!("-o {iface} -j RETURN"));
            }
        }
    }

    /// `-k`: traffic arriving on virtual interfaces is not inbound (it is treated as outbound
    /// later, by `outbound_ranges`).
    fn return_virtual_interfaces(&mut self) {
        for iface in self.cfg.virtual_interfaces.clone() {
            self.insert_both(NAT, PREROUTING, 1, format!("-i {iface} -j RETURN"));
        }
    }

    /// `--drop-invalid`: drop out-of-window packets instead of letting them reset connections.
    fn drop_invalid(&mut self) {
        if self.cfg.drop_invalid {
            let rule = format!("-m conntrack --ctstate INVALID -j {ISTIO_DROP}");
            self.both(MANGLE, PREROUTING, rule);
            self.both(MANGLE, ISTIO_DROP, "-j DROP".into());
        }
    }

    /// The tunnel (HBONE) port bypass and the two REDIRECT chains.
    fn base_chains(&mut self) {
        let cfg = self.cfg;
        let tunnel = format!("-p tcp --dport {} -j RETURN", cfg.inbound_tunnel_port);
        self.both(NAT, ISTIO_INBOUND, tunnel);
        let outbound = format!("-p tcp -j REDIRECT --to-ports {}", cfg.proxy_port);
        self.both(NAT, ISTIO_REDIRECT, outbound);
        let inbound = format!("-p tcp -j REDIRECT --to-ports {}", cfg.inbound_capture_port);
        self.both(NAT, ISTIO_IN_REDIRECT, inbound);
    }

    /// `-b`/`-d`: inbound capture, by REDIRECT (nat) or TPROXY (mangle).
    fn inbound_ports(&mut self) {
        if self.cfg.inbound_ports == PortSelection::None {
            return;
        }
        let tproxy = self.cfg.mode == InterceptionMode::Tproxy;
        let table = if tproxy { MANGLE } else { NAT };
        if tproxy {
            self.tproxy_chains();
        }
        self.both(table, PREROUTING, format!("-p tcp -j {ISTIO_INBOUND}"));
        match self.cfg.inbound_ports.clone() {
            PortSelection::None => {}
            PortSelection::All => self.inbound_all_ports(table, tproxy),
            PortSelection::Only(ports) => self.inbound_listed_ports(&ports, tproxy),
        }
    }

    fn tproxy_chains(&mut self) {
        let mark = self.cfg.tproxy_mark;
        let port = self.cfg.inbound_capture_port;
        self.both(MANGLE, ISTIO_DIVERT, format!("-j MARK --set-mark {mark}"));
        self.both(MANGLE, ISTIO_DIVERT, "-j ACCEPT".into());
        let (v4, v6) = self.loopback();
        self.versioned(MANGLE, ISTIO_TPROXY, (&v4, v6), |lo| {
            format!("! -d {lo} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}")
        });
    }

    fn inbound_all_ports(&mut self, table: &'static str, tproxy: bool) {
        for port in self.cfg.inbound_ports_exclude.clone() {
            self.both(
                table,
                ISTIO_INBOUND,
                format!("-p tcp --dport {port} -j RETURN"),
            );
        }
        if tproxy {
            let established =
                format!("-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j {ISTIO_DIVERT}");
            self.both(MANGLE, ISTIO_INBOUND, established);
            self.both(MANGLE, ISTIO_INBOUND, format!("-p tcp -j {ISTIO_TPROXY}"));
        } else {
            self.both(NAT, ISTIO_INBOUND, format!("-p tcp -j {ISTIO_IN_REDIRECT}"));
        }
    }

    fn inbound_listed_ports(&mut self, ports: &[u16], tproxy: bool) {
        for port in ports {
            if tproxy {
                let established = format!(
                    "-p tcp --dport {port} -m conntrack --ctstate RELATED,ESTABLISHED \
                     -j {ISTIO_DIVERT}"
                );
                self.both(MANGLE, ISTIO_INBOUND, established);
                let new = format!("-p tcp --dport {port} -j {ISTIO_TPROXY}");
                self.both(MANGLE, ISTIO_INBOUND, new);
            } else {
                let redirect = format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}");
                self.both(NAT, ISTIO_INBOUND, redirect);
            }
        }
    }

    /// All output goes through ISTIO_OUTPUT; `-o` ports leave first.
    fn output_jump_and_port_excludes(&mut self) {
        self.both(NAT, OUTPUT, format!("-j {ISTIO_OUTPUT}"));
        for port in self.cfg.outbound_ports_exclude.clone() {
            self.both(
                NAT,
                ISTIO_OUTPUT,
                format!("-p tcp --dport {port} -j RETURN"),
            );
            self.both(
                NAT,
                ISTIO_OUTPUT,
                format!("-p udp --dport {port} -j RETURN"),
            );
        }
        self.versioned(NAT, ISTIO_OUTPUT, (PASSTHROUGH_V4, PASSTHROUGH_V6), |src| {
            format!("-o lo -s {src} -j RETURN")
        });
    }

    /// `-u`/`-g`: the proxy's own traffic is never captured, except its loopback calls to the
    /// pod IP, which loop back through inbound capture.
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
        let flag = owner.flag();
        let tunnel = cfg.inbound_tunnel_port;
        // Istio skips port 53 here only for uids (DNS from the agent is matched by uid).
        let dports = match owner {
            Owner::Uid if cfg.dns.redirect => format!("-m multiport ! --dports 53,{tunnel}"),
            _ => format!("! --dport {tunnel}"),
        };
        let (v4, v6) = self.loopback();
        self.versioned(NAT, ISTIO_OUTPUT, (&v4, v6), |lo| {
            format!("-o lo ! -d {lo} -p tcp {dports} -m owner {flag} {id} -j {ISTIO_IN_REDIRECT}")
        });
        if !cfg.outbound_ranges_include.includes_loopback() {
            let dns_port = if cfg.dns.redirect {
                "-p tcp ! --dport 53 "
            } else {
                ""
            };
            let rule = format!("-o lo {dns_port}-m owner ! {flag} {id} -j RETURN");
            self.both(NAT, ISTIO_OUTPUT, rule);
        }
        self.both(NAT, ISTIO_OUTPUT, format!("-m owner {flag} {id} -j RETURN"));
    }

    /// Owner-group filter (env `ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE]`).
    fn owner_groups(&mut self) {
        match self.cfg.owner_groups.clone() {
            OwnerGroups::AllExcept(groups) => {
                for group in groups {
                    let rule = format!("-m owner --gid-owner {group} -j RETURN");
                    self.both(NAT, ISTIO_OUTPUT, rule);
                }
            }
            OwnerGroups::Only(groups) => {
                let none_of: String = groups
                    .iter()
                    .map(|g| format!("-m owner ! --gid-owner {g} "))
                    .collect();
                self.both(NAT, ISTIO_OUTPUT, format!("{none_of}-j RETURN"));
            }
        }
    }

    /// DNS to the configured resolvers (or all port-53 traffic) goes to the agent.
    fn dns_redirect(&mut self) {
        let dns = self.cfg.dns.clone();
        self.both(RAW, OUTPUT, format!("-j {ISTIO_OUTPUT_DNS}"));
        let jump = format!("-j {ISTIO_OUTPUT_DNS}");
        if dns.capture_all || !dns.servers_v4.is_empty() {
            self.v4(NAT, ISTIO_OUTPUT, jump.clone());
        }
        if dns.capture_all || !dns.servers_v6.is_empty() {
            self.v6(NAT, ISTIO_OUTPUT, jump);
        }
        for (proto, to_ports) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
            let redirect = format!("-j REDIRECT {to_ports} {AGENT_DNS_PORT}");
            if dns.capture_all {
                let rule = format!("-p {proto} --dport 53 {redirect}");
                self.both(NAT, ISTIO_OUTPUT_DNS, rule);
                continue;
            }
            for server in &dns.servers_v4 {
                let rule = format!("-p {proto} --dport 53 -d {server}/32 {redirect}");
                self.v4(NAT, ISTIO_OUTPUT_DNS, rule);
            }
            for server in &dns.servers_v6 {
                let rule = format!("-p {proto} --dport 53 -d {server}/128 {redirect}");
                self.v6(NAT, ISTIO_OUTPUT_DNS, rule);
            }
        }
    }

    /// Split DNS into two conntrack zones (agent<->resolver, app<->agent) to avoid UDP
    /// conntrack races.
    fn dns_conntrack_zones(&mut self) {
        let owners = self
            .cfg
            .proxy_uids
            .iter()
            .map(|id| (Owner::Uid, id.clone()));
        let owners: Vec<_> = owners
            .chain(
                self.cfg
                    .proxy_gids
                    .iter()
                    .map(|id| (Owner::Gid, id.clone())),
            )
            .collect();
        for (owner, id) in owners {
            let flag = owner.flag();
            let upstream = format!("-p udp --dport 53 -m owner {flag} {id} -j CT --zone 1");
            self.both(RAW, ISTIO_OUTPUT_DNS, upstream);
            let reply =
                format!("-p udp --sport {AGENT_DNS_PORT} -m owner {flag} {id} -j CT --zone 2");
            self.both(RAW, ISTIO_OUTPUT_DNS, reply);
        }
        let dns = self.cfg.dns.clone();
        if dns.capture_all {
            self.both(RAW, PREROUTING, format!("-j {ISTIO_INBOUND}"));
            self.both(
                RAW,
                ISTIO_OUTPUT_DNS,
                "-p udp --dport 53 -j CT --zone 2".into(),
            );
            self.both(
                RAW,
                ISTIO_INBOUND,
                "-p udp --sport 53 -j CT --zone 1".into(),
            );
            return;
        }
        self.dns_server_zones(&dns.servers_v4, "/32", false);
        self.dns_server_zones(&dns.servers_v6, "/128", true);
    }

    fn dns_server_zones(&mut self, servers: &[String], mask: &str, v6: bool) {
        let mut rules = Vec::new();
        if !servers.is_empty() {
            rules.push((PREROUTING, format!("-j {ISTIO_INBOUND}")));
        }
        for s in servers {
            let query = format!("-p udp --dport 53 -d {s}{mask} -j CT --zone 2");
            rules.push((ISTIO_OUTPUT_DNS, query));
            let answer = format!("-p udp --sport 53 -s {s}{mask} -j CT --zone 1");
            rules.push((ISTIO_INBOUND, answer));
        }
        for (chain, rule) in rules {
            if v6 {
                self.v6(RAW, chain, rule);
            } else {
                self.v4(RAW, chain, rule);
            }
        }
    }

    /// `-x`, `-q`, `-i` (and `-k` for virtual interfaces): which destinations go to the proxy.
    fn outbound_ranges(&mut self) {
        let (v4, v6) = self.loopback();
        self.versioned(NAT, ISTIO_OUTPUT, (&v4, v6), |lo| {
            format!("-d {lo} -j RETURN")
        });
        for cidr in &self.cfg.outbound_ranges_exclude {
            let rule = format!("-d {cidr} -j RETURN");
            if cidr.addr.is_ipv4() {
                self.plan.v4.append(NAT, ISTIO_OUTPUT, rule);
            } else if self.cfg.enable_ipv6 {
                self.plan.v6.append(NAT, ISTIO_OUTPUT, rule);
            }
        }
        for port in self.cfg.outbound_ports_include.clone() {
            let rule = format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}");
            self.both(NAT, ISTIO_OUTPUT, rule);
        }
        self.outbound_include(false);
        if self.cfg.enable_ipv6 {
            self.outbound_include(true);
        }
    }

    fn outbound_include(&mut self, v6: bool) {
        let cfg = self.cfg;
        let set = if v6 {
            &mut self.plan.v6
        } else {
            &mut self.plan.v4
        };
        let redirect = format!("-j {ISTIO_REDIRECT}");
        if cfg.outbound_ranges_include == IpRanges::All {
            set.append(NAT, ISTIO_OUTPUT, redirect.clone());
            for iface in &cfg.virtual_interfaces {
                set.insert(NAT, PREROUTING, 1, format!("-i {iface} {redirect}"));
            }
            return;
        }
        for cidr in cfg.outbound_ranges_include.of_family(v6) {
            for iface in &cfg.virtual_interfaces {
                set.insert(
                    NAT,
                    PREROUTING,
                    1,
                    format!("-i {iface} -d {cidr} {redirect}"),
                );
            }
            set.append(NAT, ISTIO_OUTPUT, format!("-d {cidr} {redirect}"));
        }
    }

    /// TPROXY mode: connection marks so replies route back through the proxy, and the inbound
    /// exemptions that must come first in ISTIO_INBOUND.
    fn tproxy_marks(&mut self) {
        let mark = self.cfg.tproxy_mark;
        let save = format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark");
        self.both(MANGLE, PREROUTING, save);
        let marked = format!("-p tcp -o lo -m mark --mark {mark} -j RETURN");
        self.both(MANGLE, OUTPUT, marked);
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
        let (v4, v6) = self.loopback();
        for (owner, id) in owners {
            let flag = owner.flag();
            self.versioned(MANGLE, OUTPUT, (&v4, v6), |lo| {
                format!(
                    "! -d {lo} -p tcp -o lo -m owner {flag} {id} -j MARK --set-mark {OUTBOUND_MARK}"
                )
            });
        }
        let restore = format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark");
        self.both(MANGLE, OUTPUT, restore);
        let own = format!("-p tcp -m mark --mark {mark} -j RETURN");
        self.insert_both(MANGLE, ISTIO_INBOUND, 1, own);
        let passthrough = |src: &str| format!("-p tcp -s {src} -i lo -j RETURN");
        self.insert_v4(MANGLE, ISTIO_INBOUND, 2, passthrough(PASSTHROUGH_V4));
        self.insert_v6(MANGLE, ISTIO_INBOUND, 2, passthrough(PASSTHROUGH_V6));
        let app_to_app = format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN");
        self.insert_both(MANGLE, ISTIO_INBOUND, 3, app_to_app);
    }
}
