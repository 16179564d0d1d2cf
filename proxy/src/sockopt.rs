//! Socket options the proxy needs beyond std: the pre-NAT destination of a redirected
//! connection (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`) and SO_REUSEPORT listening sockets.
//!
//! Everything here goes through `nix` and `socket2`'s safe wrappers, so this module (like the rest
//! of the crate) contains no `unsafe`.

use nix::sys::socket::{getsockopt, sockopt};
use socket2::{Domain, Socket, Type};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

/// The destination the connection had before iptables REDIRECT/DNAT rewrote it, or `None` when
/// the connection was not NATed (the kernel answers ENOENT) or the family has no such option.
pub fn original_destination<S: AsFd>(socket: &S, local: SocketAddr) -> Option<SocketAddr> {
    match local {
        SocketAddr::V4(_) => getsockopt(socket, sockopt::OriginalDst).ok().map(|sa| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                u16::from_be(sa.sin_port),
            ))
        }),
        SocketAddr::V6(_) => getsockopt(socket, sockopt::Ip6tOriginalDst).ok().map(|sa| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sa.sin6_addr.s6_addr),
                u16::from_be(sa.sin6_port),
                sa.sin6_flowinfo,
                sa.sin6_scope_id,
            ))
        }),
    }
}

/// Listen backlog, as Envoy's default `tcp_backlog_size`.
pub const BACKLOG: i32 = 1024;

/// A listening TCP socket with SO_REUSEPORT so each worker can own one for the same address.
/// IPv6 sockets are V6ONLY: IPv4 is always a listener of its own, as in Envoy.
pub fn reuseport_listener(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
