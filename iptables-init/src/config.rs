//! Capture configuration: Istio's stringly-typed settings (`RawConfig`, one field per
//! istio-iptables flag or env var) validated into a typed `CaptureConfig` the rule builders read.
//!
//! Invariants kept by `CaptureConfig::try_from(RawConfig)`:
//! - every port is a number in 1..=65535, every CIDR parses, the loopback CIDR is an IPv4 loopback
//!   range with a /8../32 mask, the TPROXY mark and route table are numbers;
//! - list order is preserved exactly as given (rule order follows it, as in Istio);
//! - an error names the flag (long and short form) and the offending value, so the binary can print
//!   one line and exit without touching the kernel.
//!
//! Deliberate difference from istio-iptables: Istio silently ignores unparsable CIDRs and ports
//! ("bug compatibility"); we reject them, because a typo there silently disables capture.

mod host;
mod types;

pub use host::{HostFacts, detect_ipv6, parse_resolv_conf, proxy_uid_from_passwd};
pub use types::{Cidr, InterceptionMode, IpRanges, OwnerGroups, PortSelection};

use std::net::IpAddr;

/// One configurable setting, used to name the flag in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    ProxyPort,
    InboundCapturePort,
    InboundTunnelPort,
    ProxyUid,
    ProxyGid,
    InterceptionMode,
    TproxyMark,
    TproxyRouteTable,
    InboundPorts,
    InboundPortsExclude,
    OutboundPorts,
    OutboundPortsExclude,
    OutboundIpRanges,
    OutboundIpRangesExclude,
    VirtualInterfaces,
    ExcludeInterfaces,
    OwnerGroups,
    OwnerGroupsExclude,
    DnsServers,
    HostIpv4LoopbackCidr,
}

impl Setting {
    /// How the user sets it: the istio-iptables flag (with short form) or env var.
    pub fn source(self) -> &'static str {
        match self {
            Self::ProxyPort => "--envoy-port (-p)",
            Self::InboundCapturePort => "--inbound-capture-port (-z)",
            Self::InboundTunnelPort => "--inbound-tunnel-port (-e)",
            Self::ProxyUid => "--proxy-uid (-u)",
            Self::ProxyGid => "--proxy-gid (-g)",
            Self::InterceptionMode => "--istio-inbound-interception-mode (-m)",
            Self::TproxyMark => "--istio-inbound-tproxy-mark (-t)",
            Self::TproxyRouteTable => "--istio-inbound-tproxy-route-table (-r)",
            Self::InboundPorts => "--istio-inbound-ports (-b)",
            Self::InboundPortsExclude => "--istio-local-exclude-ports (-d)",
            Self::OutboundPorts => "--istio-outbound-ports (-q)",
            Self::OutboundPortsExclude => "--istio-local-outbound-ports-exclude (-o)",
            Self::OutboundIpRanges => "--istio-service-cidr (-i)",
            Self::OutboundIpRangesExclude => "--istio-service-exclude-cidr (-x)",
            Self::VirtualInterfaces => "--kube-virt-interfaces (-k)",
            Self::ExcludeInterfaces => "--istio-exclude-interfaces (-c)",
            Self::OwnerGroups => "ISTIO_OUTBOUND_OWNER_GROUPS (--outbound-owner-groups)",
            Self::OwnerGroupsExclude => {
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE (--outbound-owner-groups-exclude)"
            }
            Self::DnsServers => "--dns-servers (or /etc/resolv.conf)",
            Self::HostIpv4LoopbackCidr => {
                "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (--host-ipv4-loopback-cidr)"
            }
        }
    }
}

/// A setting whose value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {}: {reason}", setting.source())]
pub struct ConfigError {
    pub setting: Setting,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(setting: Setting, value: &str, reason: impl Into<String>) -> Self {
        Self {
            setting,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Istio's settings as strings, exactly as flags and env vars deliver them. Field names follow
/// istio-iptables' `config.Config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawConfig {
    pub proxy_port: String,
    pub inbound_capture_port: String,
    pub inbound_tunnel_port: String,
    pub proxy_uid: String,
    pub proxy_gid: String,
    pub inbound_interception_mode: String,
    pub inbound_tproxy_mark: String,
    pub inbound_tproxy_route_table: String,
    pub inbound_ports_include: String,
    pub inbound_ports_exclude: String,
    pub owner_groups_include: String,
    pub owner_groups_exclude: String,
    pub outbound_ports_include: String,
    pub outbound_ports_exclude: String,
    pub outbound_ip_ranges_include: String,
    pub outbound_ip_ranges_exclude: String,
    pub reroute_virtual_interfaces: String,
    pub exclude_interfaces: String,
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    pub enable_ipv6: bool,
    /// Resolver addresses, IPv4 and IPv6 mixed, in resolv.conf order.
    pub dns_servers: Vec<String>,
    pub host_ipv4_loopback_cidr: String,
}

impl Default for RawConfig {
    /// istio-iptables' defaults (`config.DefaultConfig()` plus the flag defaults); the proxy UID
    /// default (ENVOY_USER's uid, else 1337) is resolved by the caller.
    fn default() -> Self {
        Self {
            proxy_port: "15001".into(),
            inbound_capture_port: "15006".into(),
            inbound_tunnel_port: "15008".into(),
            proxy_uid: "1337".into(),
            proxy_gid: String::new(),
            inbound_interception_mode: String::new(),
            inbound_tproxy_mark: "1337".into(),
            inbound_tproxy_route_table: "133".into(),
            inbound_ports_include: String::new(),
            inbound_ports_exclude: String::new(),
            owner_groups_include: "*".into(),
            owner_groups_exclude: String::new(),
            outbound_ports_include: String::new(),
            outbound_ports_exclude: String::new(),
            outbound_ip_ranges_include: String::new(),
            outbound_ip_ranges_exclude: String::new(),
            reroute_virtual_interfaces: String::new(),
            exclude_interfaces: String::new(),
            redirect_dns: false,
            capture_all_dns: false,
            drop_invalid: false,
            enable_ipv6: false,
            dns_servers: Vec::new(),
            host_ipv4_loopback_cidr: "127.0.0.1/32".into(),
        }
    }
}

/// DNS capture settings after Istio's "three DNS flags" rule: `redirect` is false when neither
/// capture-all nor any server is configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsCapture {
    pub redirect: bool,
    pub capture_all: bool,
    pub servers_v4: Vec<String>,
    pub servers_v6: Vec<String>,
}

/// The validated capture configuration the rule builders read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
    pub inbound_tunnel_port: u16,
    pub proxy_uids: Vec<String>,
    pub proxy_gids: Vec<String>,
    pub mode: InterceptionMode,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub inbound_ports: PortSelection,
    pub inbound_ports_exclude: Vec<u16>,
    pub outbound_ports_include: Vec<u16>,
    pub outbound_ports_exclude: Vec<u16>,
    pub outbound_ranges_include: IpRanges,
    pub outbound_ranges_exclude: Vec<Cidr>,
    pub virtual_interfaces: Vec<String>,
    pub exclude_interfaces: Vec<String>,
    pub owner_groups: OwnerGroups,
    pub dns: DnsCapture,
    pub drop_invalid: bool,
    pub enable_ipv6: bool,
    pub host_ipv4_loopback: Cidr,
}

/// Istio's `config.Split`: comma separated, empty items dropped.
pub fn split_list(value: &str) -> Vec<&str> {
    value.split(',').filter(|item| !item.is_empty()).collect()
}

impl TryFrom<RawConfig> for CaptureConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let proxy_uids = owner_ids(Setting::ProxyUid, &raw.proxy_uid)?;
        let proxy_gids = if raw.proxy_gid.is_empty() {
            proxy_uids.clone()
        } else {
            owner_ids(Setting::ProxyGid, &raw.proxy_gid)?
        };
        Ok(Self {
            proxy_port: port(Setting::ProxyPort, &raw.proxy_port)?,
            inbound_capture_port: port(Setting::InboundCapturePort, &raw.inbound_capture_port)?,
            inbound_tunnel_port: port(Setting::InboundTunnelPort, &raw.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            mode: InterceptionMode::parse(&raw.inbound_interception_mode)?,
            tproxy_mark: number(Setting::TproxyMark, &raw.inbound_tproxy_mark)?,
            tproxy_route_table: number(Setting::TproxyRouteTable, &raw.inbound_tproxy_route_table)?,
            inbound_ports: PortSelection::parse(&raw.inbound_ports_include)?,
            inbound_ports_exclude: ports(Setting::InboundPortsExclude, &raw.inbound_ports_exclude)?,
            outbound_ports_include: ports(Setting::OutboundPorts, &raw.outbound_ports_include)?,
            outbound_ports_exclude: ports(
                Setting::OutboundPortsExclude,
                &raw.outbound_ports_exclude,
            )?,
            outbound_ranges_include: IpRanges::parse(&raw.outbound_ip_ranges_include)?,
            outbound_ranges_exclude: excluded_ranges(&raw.outbound_ip_ranges_exclude)?,
            virtual_interfaces: interfaces(
                Setting::VirtualInterfaces,
                &raw.reroute_virtual_interfaces,
            )?,
            exclude_interfaces: interfaces(Setting::ExcludeInterfaces, &raw.exclude_interfaces)?,
            owner_groups: OwnerGroups::parse(&raw.owner_groups_include, &raw.owner_groups_exclude)?,
            dns: dns_capture(&raw)?,
            drop_invalid: raw.drop_invalid,
            enable_ipv6: raw.enable_ipv6,
            host_ipv4_loopback: Cidr::parse_ipv4_loopback(&raw.host_ipv4_loopback_cidr)?,
        })
    }
}

fn port(setting: Setting, value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConfigError::new(
            setting,
            value,
            "expected a port in 1-65535",
        )),
    }
}

fn ports(setting: Setting, value: &str) -> Result<Vec<u16>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|item| port(setting, item))
        .collect()
}

fn number(setting: Setting, value: &str) -> Result<u32, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(setting, value, "expected a non-negative integer"))
}

/// A user or group: a numeric id or a name (iptables' owner match accepts both).
fn owner_ids(setting: Setting, value: &str) -> Result<Vec<String>, ConfigError> {
    let ids = split_list(value);
    if ids.is_empty() {
        return Err(ConfigError::new(setting, value, "expected at least one id"));
    }
    ids.into_iter().map(|id| owner_name(setting, id)).collect()
}

fn owner_name(setting: Setting, id: &str) -> Result<String, ConfigError> {
    let valid = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(ConfigError::new(
            setting,
            id,
            "expected a numeric id or a name",
        ))
    }
}

fn interfaces(setting: Setting, value: &str) -> Result<Vec<String>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|name| {
            let valid = name.len() <= 15
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '/' | '"' | '\''));
            if valid {
                Ok(name.to_owned())
            } else {
                Err(ConfigError::new(
                    setting,
                    name,
                    "expected an interface name",
                ))
            }
        })
        .collect()
}

fn excluded_ranges(value: &str) -> Result<Vec<Cidr>, ConfigError> {
    if value == "*" {
        let reason = "the wildcard would exclude all outbound traffic; use -i \"\" instead";
        return Err(ConfigError::new(
            Setting::OutboundIpRangesExclude,
            value,
            reason,
        ));
    }
    split_list(value)
        .into_iter()
        .map(|item| Cidr::parse(Setting::OutboundIpRangesExclude, item))
        .collect()
}

fn dns_capture(raw: &RawConfig) -> Result<DnsCapture, ConfigError> {
    let mut dns = DnsCapture {
        redirect: raw.redirect_dns,
        capture_all: raw.capture_all_dns,
        ..DnsCapture::default()
    };
    for server in &raw.dns_servers {
        match server.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => dns.servers_v4.push(server.clone()),
            Ok(IpAddr::V6(_)) => dns.servers_v6.push(server.clone()),
            Err(_) => {
                return Err(ConfigError::new(
                    Setting::DnsServers,
                    server,
                    "expected an IP address",
                ));
            }
        }
    }
    let no_servers = dns.servers_v4.is_empty() && dns.servers_v6.is_empty();
    if dns.redirect && !dns.capture_all && no_servers {
        // istio-iptables: "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS
        // servers provided. DNS capture disabled."
        dns.redirect = false;
    }
    Ok(dns)
}

#[cfg(test)]
mod tests;
