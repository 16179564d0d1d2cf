//! Typed values inside `CaptureConfig`: CIDRs, port and range selections with Istio's `*`
//! wildcard, the owner-group filter and the inbound interception mode.

use std::fmt;
use std::net::IpAddr;

use super::{ConfigError, Setting, split_list};

/// An address prefix as the user wrote it (host bits are kept, as in Go's `netip.Prefix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(setting: Setting, value: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::new(setting, value, reason);
        let (addr, len) = value
            .split_once('/')
            .ok_or_else(|| bad("expected a CIDR such as 10.0.0.0/8"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(len) if len <= max => Ok(Self { addr, len }),
            _ => Err(bad("prefix length out of range")),
        }
    }

    /// The host's IPv4 loopback range: IPv4, in 127/8, mask /8 to /32.
    pub fn parse_ipv4_loopback(value: &str) -> Result<Self, ConfigError> {
        let setting = Setting::HostIpv4LoopbackCidr;
        let cidr = Self::parse(setting, value)?;
        if !cidr.addr.is_ipv4() || !cidr.addr.is_loopback() {
            return Err(ConfigError::new(
                setting,
                value,
                "expected an IPv4 loopback CIDR",
            ));
        }
        if cidr.len < 8 {
            return Err(ConfigError::new(setting, value, "mask must be /8 to /32"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `-m`: how inbound connections reach the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterceptionMode {
    /// NAT REDIRECT to the inbound capture port (the injector default).
    #[default]
    Redirect,
    /// TPROXY in the mangle table, keeping the original destination; needs policy routing.
    Tproxy,
}

impl InterceptionMode {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "" | "REDIRECT" => Ok(Self::Redirect),
            "TPROXY" => Ok(Self::Tproxy),
            _ => Err(ConfigError::new(
                Setting::InterceptionMode,
                value,
                "expected REDIRECT or TPROXY",
            )),
        }
    }
}

/// `-b`: which inbound ports are captured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PortSelection {
    /// Empty list: no inbound capture.
    #[default]
    None,
    /// `*`: every port except `-d`.
    All,
    /// An explicit list.
    Only(Vec<u16>),
}

impl PortSelection {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if value == "*" {
            return Ok(Self::All);
        }
        let ports = super::ports(Setting::InboundPorts, value)?;
        Ok(if ports.is_empty() {
            Self::None
        } else {
            Self::Only(ports)
        })
    }
}

/// `-i`: outbound destinations sent to the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpRanges {
    /// `*`: all outbound traffic.
    All,
    /// An explicit list (empty: no outbound capture).
    Only(Vec<Cidr>),
}

impl Default for IpRanges {
    fn default() -> Self {
        Self::Only(Vec::new())
    }
}

impl IpRanges {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        if value == "*" {
            return Ok(Self::All);
        }
        split_list(value)
            .into_iter()
            .map(|item| Cidr::parse(Setting::OutboundIpRanges, item))
            .collect::<Result<_, _>>()
            .map(Self::Only)
    }

    /// Ranges of one family (`v6` selects IPv6); empty for the wildcard.
    pub fn of_family(&self, v6: bool) -> Vec<Cidr> {
        match self {
            Self::All => Vec::new(),
            Self::Only(cidrs) => cidrs
                .iter()
                .filter(|c| c.addr.is_ipv6() == v6)
                .copied()
                .collect(),
        }
    }

    /// Whether a loopback range was explicitly included; Istio then stops returning the
    /// application's own loopback traffic early.
    pub fn includes_loopback(&self) -> bool {
        matches!(self, Self::Only(cidrs) if cidrs.iter().any(|c| c.addr.is_loopback()))
    }
}

/// Istio caps the include list because all groups go into one rule.
const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

/// Outbound capture by the sending socket's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Include `*`: capture every group except these.
    AllExcept(Vec<String>),
    /// Capture only these groups.
    Only(Vec<String>),
}

impl OwnerGroups {
    pub fn parse(include: &str, exclude: &str) -> Result<Self, ConfigError> {
        if include == "*" {
            return names(Setting::OwnerGroupsExclude, exclude).map(Self::AllExcept);
        }
        let groups = names(Setting::OwnerGroups, include)?;
        if groups.len() > MAX_OWNER_GROUPS_INCLUDE {
            let reason = format!("at most {MAX_OWNER_GROUPS_INCLUDE} groups can be included");
            return Err(ConfigError::new(Setting::OwnerGroups, include, reason));
        }
        Ok(Self::Only(groups))
    }
}

fn names(setting: Setting, value: &str) -> Result<Vec<String>, ConfigError> {
    split_list(value)
        .into_iter()
        .map(|name| super::owner_name(setting, name))
        .collect()
}
