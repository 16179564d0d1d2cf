//! Envoy `core.v3.Address` in the shapes Tern supports: IP socket addresses, named hosts (for DNS
//! clusters) and unix pipes (Istio's xDS and SDS sockets).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use xds_client::pb::envoy::config::core::v3 as core;

/// Where something listens or where an upstream lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Socket(SocketAddr),
    /// A host name and port, resolved by a DNS cluster.
    Named {
        host: String,
        port: u16,
    },
    /// A unix domain socket path (Envoy `pipe`); a leading `@` is the abstract namespace.
    Pipe(PathBuf),
}

impl Address {
    pub fn socket(&self) -> Option<SocketAddr> {
        match self {
            Address::Socket(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Socket(addr) => write!(f, "{addr}"),
            Address::Named { host, port } => write!(f, "{host}:{port}"),
            Address::Pipe(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Converts an address. `allow_names` permits host names (DNS clusters); elsewhere Envoy requires
/// an IP literal and so do we.
pub fn convert(address: Option<&core::Address>, allow_names: bool) -> Result<Address, String> {
    let inner = address
        .and_then(|a| a.address.as_ref())
        .ok_or("address is required")?;
    match inner {
        core::address::Address::SocketAddress(sa) => socket_address(sa, allow_names),
        core::address::Address::Pipe(pipe) if pipe.path.is_empty() => {
            Err("pipe.path is empty".into())
        }
        core::address::Address::Pipe(pipe) => Ok(Address::Pipe(PathBuf::from(&pipe.path))),
        core::address::Address::EnvoyInternalAddress(_) => {
            Err("envoy_internal_address is not supported".into())
        }
    }
}

/// Converts a `SocketAddress` (TCP only; named ports are not supported).
pub fn socket_address(sa: &core::SocketAddress, allow_names: bool) -> Result<Address, String> {
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        return Err(format!(
            "socket_address {}: only TCP is supported",
            sa.address
        ));
    }
    let port = match &sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).map_err(|_| format!("port_value {p} is out of range"))?
        }
        Some(core::socket_address::PortSpecifier::NamedPort(name)) => {
            return Err(format!("named_port {name:?} is not supported"));
        }
        None => 0,
    };
    match sa.address.parse::<IpAddr>() {
        Ok(ip) => Ok(Address::Socket(SocketAddr::new(ip, port))),
        Err(_) if allow_names && !sa.address.is_empty() => Ok(Address::Named {
            host: sa.address.clone(),
            port,
        }),
        Err(_) => Err(format!("malformed IP address: {:?}", sa.address)),
    }
}

/// Envoy's stat-name form of an address: `0.0.0.0_15001`, `[__]_15001` (`:` becomes `_`).
pub fn stat_name(addr: &SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}
