//! Envoy's `FilterChainMatch` sieve: which filter chain of a listener serves a new connection.
//!
//! Istio's `virtualInbound` listener (port 15006) has one filter chain per (port, TLS mode, ALPN)
//! combination and relies on Envoy choosing among them exactly as Envoy does, so this module
//! reproduces `FilterChainManagerImpl::findFilterChain` rather than inventing a scoring rule.
//!
//! The criteria are tried as nested levels, most significant first:
//!
//! 1. destination port (an exact port beats "no port"),
//! 2. destination IP (longest matching `prefix_ranges` entry; chains without ranges are the
//!    fallback),
//! 3. server name (exact, then the longest `*.suffix` wildcard, then chains without names),
//! 4. transport protocol (exact, then chains that leave it empty),
//! 5. application protocols (the first client ALPN entry that some chain lists, in the client's
//!    order, then chains without ALPN),
//! 6. direct source IP (longest prefix, then chains without ranges),
//! 7. source type (`SAME_IP_OR_LOOPBACK` or `EXTERNAL` as the connection is, then `ANY`),
//! 8. source IP (longest prefix, then chains without ranges),
//! 9. source port (exact, then chains without ports).
//!
//! Invariant, as in Envoy: once a level has picked the most specific entry that matches, the
//! connection is committed to that subtree. If nothing below it matches, Envoy does **not** try a
//! less specific sibling (a chain with `destination_port: 80` that fails on server name never
//! falls back to a chain without a port); the connection gets the listener's default chain, or
//! none. The index is built once, at [`FilterChainSelector::build`]; selection walks it with a
//! handful of hash lookups per level and never backtracks.
//!
//! Not supported, as in Envoy: `address_suffix` / `suffix_len` (rejected), partial wildcards
//! such as `a*.example.com` (rejected). The listener-level `filter_chain_matcher` (unified
//! matcher API) is not handled here; this is the classic `filter_chain_match` path Istio uses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use envoy_types::pb::envoy::config::core::v3::CidrRange as ProtoCidrRange;
use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch as ProtoFilterChainMatch;
use envoy_types::pb::envoy::config::listener::v3::filter_chain_match::ConnectionSourceType;

#[cfg(test)]
mod tests;

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("malformed IP address {0:?}")]
    InvalidAddress(String),
    #[error("prefix length {prefix_len} is too long for {address}")]
    PrefixTooLong { address: String, prefix_len: u32 },
    #[error("malformed CIDR range {0:?}, expected <ip>/<prefix length>")]
    Malformed(String),
}

impl Cidr {
    /// The network `address/prefix_len`; host bits of `address` are cleared.
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > max_prefix_len(address) {
            return Err(CidrError::PrefixTooLong {
                address: address.to_string(),
                prefix_len: prefix_len.into(),
            });
        }
        Ok(Cidr {
            network: mask(address, prefix_len),
            prefix_len,
        })
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is inside this network. Families never mix: `10.0.0.1` is not in
    /// `::ffff:10.0.0.0/104`, as in Envoy's LC trie.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix_len) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `<ip>/<len>` strictly (the prefix length is required).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (address, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::Malformed(s.to_owned()))?;
        let address =
            IpAddr::from_str(address).map_err(|_| CidrError::InvalidAddress(address.to_owned()))?;
        let len = u8::from_str(len).map_err(|_| CidrError::Malformed(s.to_owned()))?;
        Cidr::new(address, len)
    }
}

impl TryFrom<&ProtoCidrRange> for Cidr {
    type Error = CidrError;

    /// Envoy's reading of a `CidrRange`: a missing `prefix_len` is 0 (the whole family), and a
    /// length above the family's width (but within the proto's bound of 128) is clamped to it.
    fn try_from(range: &ProtoCidrRange) -> Result<Self, Self::Error> {
        let address = IpAddr::from_str(&range.address_prefix)
            .map_err(|_| CidrError::InvalidAddress(range.address_prefix.clone()))?;
        let requested = range.prefix_len.as_ref().map_or(0, |len| len.value);
        if requested > 128 {
            return Err(CidrError::PrefixTooLong {
                address: range.address_prefix.clone(),
                prefix_len: requested,
            });
        }
        let clamped = u8::try_from(requested)
            .unwrap_or(u8::MAX)
            .min(max_prefix_len(address));
        Cidr::new(address, clamped)
    }
}

fn max_prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4)
                .checked_shr(32 - u32::from(prefix_len))
                .unwrap_or(0)
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6)
                .checked_shr(128 - u32::from(prefix_len))
                .unwrap_or(0)
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// `FilterChainMatch.source_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceType {
    #[default]
    Any,
    /// The source is `127.0.0.1` / `::1`, or the same IP as the destination.
    SameIpOrLoopback,
    /// Everything `SameIpOrLoopback` is not.
    External,
}

impl SourceType {
    fn index(self) -> usize {
        match self {
            SourceType::Any => 0,
            SourceType::SameIpOrLoopback => 1,
            SourceType::External => 2,
        }
    }
}

/// One entry of `server_names`, lower-cased as Envoy stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// Matches exactly this name.
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com`.
    Wildcard { suffix: String },
}

impl ServerName {
    /// Reads one configured name. `*.a.b` is a wildcard; any other `*` is refused, as Envoy does.
    pub fn parse(name: &str) -> Result<Self, FilterChainMatchError> {
        let lower = name.to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix('*')
            && suffix.starts_with('.')
            && !suffix.contains('*')
        {
            return Ok(ServerName::Wildcard {
                suffix: suffix.to_owned(),
            });
        }
        if lower.contains('*') {
            return Err(FilterChainMatchError::PartialWildcard(name.to_owned()));
        }
        Ok(ServerName::Exact(lower))
    }

    /// Whether a (lower-case) SNI matches this entry on its own. A wildcard matches any name
    /// with at least one more label: `*.example.com` matches `a.example.com` and
    /// `b.a.example.com` but not `example.com`. (Which entry wins among several is the
    /// selector's business: exact first, then the longest suffix.)
    pub fn matches(&self, sni: &str) -> bool {
        match self {
            ServerName::Exact(name) => name == sni,
            ServerName::Wildcard { suffix } => {
                suffix.len() > 1 && sni.len() > suffix.len() && sni.ends_with(suffix.as_str())
            }
        }
    }

    /// The key in the server-name level: the name itself, or `.suffix` for a wildcard. Envoy
    /// uses the same keys, so a bare `.example.com` entry behaves as `*.example.com` there too.
    fn index_key(&self) -> &str {
        match self {
            ServerName::Exact(name) => name,
            ServerName::Wildcard { suffix } => suffix,
        }
    }
}

/// The typed form of `config.listener.v3.FilterChainMatch`. An empty list or `None` means the
/// criterion is not constrained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FilterChainMatch {
    /// `None` for "any port"; the proto's 0 means the same.
    pub destination_port: Option<u16>,
    pub prefix_ranges: Vec<Cidr>,
    pub direct_source_prefix_ranges: Vec<Cidr>,
    pub source_type: SourceType,
    pub source_prefix_ranges: Vec<Cidr>,
    /// Port 0 in this list means "any", as in Envoy.
    pub source_ports: Vec<u16>,
    pub server_names: Vec<ServerName>,
    /// `""` (any), `"raw_buffer"` or `"tls"`; any other value is kept and compared verbatim.
    pub transport_protocol: String,
    pub application_protocols: Vec<String>,
}

/// Why a `FilterChainMatch` proto was refused. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterChainMatchError {
    #[error("{field}: {source}")]
    InvalidCidr {
        field: &'static str,
        #[source]
        source: CidrError,
    },
    #[error("destination_port: {0} is greater than 65535")]
    DestinationPortOutOfRange(u32),
    #[error("source_ports: {0} is greater than 65535")]
    SourcePortOutOfRange(u32),
    #[error("server_names: partial wildcards are not supported in \"server_names\" ({0:?})")]
    PartialWildcard(String),
    #[error("source_type: unknown value {0}")]
    UnknownSourceType(i32),
    #[error("{0}: unimplemented field")]
    Unimplemented(&'static str),
}

impl TryFrom<&ProtoFilterChainMatch> for FilterChainMatch {
    type Error = FilterChainMatchError;

    fn try_from(proto: &ProtoFilterChainMatch) -> Result<Self, Self::Error> {
        if !proto.address_suffix.is_empty() {
            return Err(FilterChainMatchError::Unimplemented("address_suffix"));
        }
        if proto.suffix_len.is_some() {
            return Err(FilterChainMatchError::Unimplemented("suffix_len"));
        }
        Ok(FilterChainMatch {
            destination_port: destination_port(proto)?,
            prefix_ranges: cidrs("prefix_ranges", &proto.prefix_ranges)?,
            direct_source_prefix_ranges: cidrs(
                "direct_source_prefix_ranges",
                &proto.direct_source_prefix_ranges,
            )?,
            source_type: source_type(proto.source_type)?,
            source_prefix_ranges: cidrs("source_prefix_ranges", &proto.source_prefix_ranges)?,
            source_ports: source_ports(&proto.source_ports)?,
            server_names: proto
                .server_names
                .iter()
                .map(|name| ServerName::parse(name))
                .collect::<Result<_, _>>()?,
            transport_protocol: proto.transport_protocol.clone(),
            application_protocols: proto.application_protocols.clone(),
        })
    }
}

fn destination_port(proto: &ProtoFilterChainMatch) -> Result<Option<u16>, FilterChainMatchError> {
    let Some(port) = proto.destination_port.as_ref().map(|p| p.value) else {
        return Ok(None);
    };
    let port =
        u16::try_from(port).map_err(|_| FilterChainMatchError::DestinationPortOutOfRange(port))?;
    Ok((port != 0).then_some(port))
}

fn source_ports(ports: &[u32]) -> Result<Vec<u16>, FilterChainMatchError> {
    ports
        .iter()
        .map(|&p| u16::try_from(p).map_err(|_| FilterChainMatchError::SourcePortOutOfRange(p)))
        .collect()
}

fn cidrs(
    field: &'static str,
    ranges: &[ProtoCidrRange],
) -> Result<Vec<Cidr>, FilterChainMatchError> {
    ranges
        .iter()
        .map(|r| {
            Cidr::try_from(r).map_err(|source| FilterChainMatchError::InvalidCidr { field, source })
        })
        .collect()
}

fn source_type(value: i32) -> Result<SourceType, FilterChainMatchError> {
    match ConnectionSourceType::try_from(value) {
        Ok(ConnectionSourceType::Any) => Ok(SourceType::Any),
        Ok(ConnectionSourceType::SameIpOrLoopback) => Ok(SourceType::SameIpOrLoopback),
        Ok(ConnectionSourceType::External) => Ok(SourceType::External),
        Err(_) => Err(FilterChainMatchError::UnknownSourceType(value)),
    }
}

/// What the listener knows about a connection when it picks a filter chain: the addresses
/// (after `original_dst` and any PROXY protocol header) and what the listener filters found.
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from a dual-stack socket) are matched as the
/// IPv4 address, as Envoy converts them when it reads the socket address.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo<'a> {
    /// The local address, restored to the original destination for redirected connections.
    pub destination: SocketAddr,
    /// The remote address (the PROXY protocol source if one was read).
    pub source: SocketAddr,
    /// The peer of the TCP connection itself.
    pub direct_source: SocketAddr,
    /// The SNI from `tls_inspector`, if any. Envoy keeps it lower-case; so should callers
    /// (`inspect_tls` does), though upper-case input is still matched correctly.
    pub server_name: Option<&'a str>,
    /// `"tls"` when `tls_inspector` saw a ClientHello, else `"raw_buffer"` (Envoy's default
    /// once the listener filters are done).
    pub transport_protocol: &'a str,
    /// ALPN from the ClientHello, or the single protocol `http_inspector` detected.
    pub application_protocols: &'a [String],
}

/// Why a listener's filter chains cannot be indexed. Chains are named by their position in
/// the list given to [`FilterChainSelector::build`]; the caller adds the listener's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterChainSelectorError {
    #[error(
        "multiple filter chains with the same matching rules are defined: chain #{chain} repeats chain #{existing}"
    )]
    DuplicateMatch { chain: usize, existing: usize },
    #[error(
        "multiple filter chains with overlapping matching rules are defined: chain #{chain} overlaps chain #{existing}"
    )]
    OverlappingMatch { chain: usize, existing: usize },
}

/// A listener's filter chains indexed for selection. `T` is whatever the listener wants back
/// (a built filter chain, or just its name in tests).
#[derive(Debug)]
pub struct FilterChainSelector<T> {
    chains: Vec<T>,
    default: Option<T>,
    by_destination_port: HashMap<u16, DestinationIps>,
}

/// Index of a chain in `FilterChainSelector::chains`.
type ChainId = usize;
/// Port 0 stands for "no port constraint" in the two port levels, as in Envoy.
const ANY_PORT: u16 = 0;
/// The empty key stands for "no constraint" in the string-keyed levels, as in Envoy.
const ANY: &str = "";

type DestinationIps = PrefixTable<ServerNames>;
type ServerNames = HashMap<String, TransportProtocols>;
type TransportProtocols = HashMap<String, ApplicationProtocols>;
type ApplicationProtocols = HashMap<String, DirectSourceIps>;
type DirectSourceIps = PrefixTable<SourceTypes>;
/// Indexed by [`SourceType::index`].
type SourceTypes = [Option<SourceIps>; 3];
type SourceIps = PrefixTable<SourcePorts>;
type SourcePorts = HashMap<u16, ChainId>;

impl<T> FilterChainSelector<T> {
    /// Indexes `chains` in order. Fails like Envoy when two chains have the same match, or when
    /// their matches overlap so that some connection would fit both equally well.
    pub fn build(
        chains: Vec<(FilterChainMatch, T)>,
        default: Option<T>,
    ) -> Result<Self, FilterChainSelectorError> {
        let mut seen: HashMap<&FilterChainMatch, ChainId> = HashMap::new();
        let mut by_destination_port = HashMap::new();
        for (id, (criteria, _)) in chains.iter().enumerate() {
            if let Some(&existing) = seen.get(criteria) {
                return Err(FilterChainSelectorError::DuplicateMatch {
                    chain: id,
                    existing,
                });
            }
            seen.insert(criteria, id);
            insert_chain(&mut by_destination_port, criteria, id)?;
        }
        Ok(FilterChainSelector {
            chains: chains.into_iter().map(|(_, chain)| chain).collect(),
            default,
            by_destination_port,
        })
    }

    /// The chain Envoy would pick for `conn`, else the default chain, else `None` (Envoy closes
    /// the connection).
    pub fn select(&self, conn: &ConnectionInfo<'_>) -> Option<&T> {
        match self.find(conn) {
            Some(id) => self.chains.get(id),
            None => self.default.as_ref(),
        }
    }

    /// The filter chains in the order given to `build` (without the default chain).
    pub fn chains(&self) -> &[T] {
        &self.chains
    }

    pub fn default_chain(&self) -> Option<&T> {
        self.default.as_ref()
    }

    fn find(&self, conn: &ConnectionInfo<'_>) -> Option<ChainId> {
        // An exact-port subtree, if one exists, is final: no retry with the port-less chains.
        let ips = self
            .by_destination_port
            .get(&conn.destination.port())
            .or_else(|| self.by_destination_port.get(&ANY_PORT))?;
        let names = ips.longest_match(conn.destination.ip().to_canonical())?;
        let protocols = find_server_name(names, conn.server_name.unwrap_or(ANY))?;
        let alpn = protocols
            .get(conn.transport_protocol)
            .or_else(|| protocols.get(ANY))?;
        let direct = find_application_protocol(alpn, conn.application_protocols)?;
        let types = direct.longest_match(conn.direct_source.ip().to_canonical())?;
        let sources = find_source_type(types, conn)?;
        let ports = sources.longest_match(conn.source.ip().to_canonical())?;
        let port = conn.source.port();
        ports.get(&port).or_else(|| ports.get(&ANY_PORT)).copied()
    }
}

fn find_server_name<'t>(names: &'t ServerNames, sni: &str) -> Option<&'t TransportProtocols> {
    let sni: Cow<'_, str> = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(sni.to_ascii_lowercase())
    } else {
        Cow::Borrowed(sni)
    };
    if let Some(found) = names.get(sni.as_ref()) {
        return Some(found);
    }
    wildcard_suffixes(&sni)
        .find_map(|suffix| names.get(suffix))
        .or_else(|| names.get(ANY))
}

/// `.a.example.com`, `.example.com`, `.com` for `www.a.example.com`, longest first. A dot in
/// the first or last position never starts a suffix, as in Envoy.
fn wildcard_suffixes(sni: &str) -> impl Iterator<Item = &str> {
    let last = sni.len().saturating_sub(1);
    sni.char_indices()
        .filter(move |&(pos, c)| c == '.' && pos >= 1 && pos < last)
        .map(move |(pos, _)| &sni[pos..])
}

fn find_application_protocol<'t>(
    alpn: &'t ApplicationProtocols,
    offered: &[String],
) -> Option<&'t DirectSourceIps> {
    offered
        .iter()
        .find_map(|protocol| alpn.get(protocol.as_str()))
        .or_else(|| alpn.get(ANY))
}

fn find_source_type<'t>(
    types: &'t SourceTypes,
    conn: &ConnectionInfo<'_>,
) -> Option<&'t SourceIps> {
    let [any, local, external] = types;
    if local.is_some() || external.is_some() {
        let specific = if is_same_ip_or_loopback(conn) {
            local
        } else {
            external
        };
        if let Some(found) = specific {
            return Some(found);
        }
    }
    any.as_ref()
}

/// Envoy's `isSameIpOrLoopback`: the source is exactly `127.0.0.1` or `::1` (not all of
/// 127/8), or the source IP equals the destination IP.
fn is_same_ip_or_loopback(conn: &ConnectionInfo<'_>) -> bool {
    let source = conn.source.ip().to_canonical();
    source == IpAddr::V4(Ipv4Addr::LOCALHOST)
        || source == IpAddr::V6(Ipv6Addr::LOCALHOST)
        || source == conn.destination.ip().to_canonical()
}

fn insert_chain(
    by_port: &mut HashMap<u16, DestinationIps>,
    criteria: &FilterChainMatch,
    id: ChainId,
) -> Result<(), FilterChainSelectorError> {
    let ips = by_port
        .entry(criteria.destination_port.unwrap_or(ANY_PORT))
        .or_default();
    ips.for_each_entry(&criteria.prefix_ranges, |names| {
        for name in keys_or_any(&criteria.server_names, ServerName::index_key) {
            let alpn = names
                .entry(name.to_owned())
                .or_default()
                .entry(criteria.transport_protocol.clone())
                .or_default();
            for protocol in keys_or_any(&criteria.application_protocols, String::as_str) {
                let direct = alpn.entry(protocol.to_owned()).or_default();
                insert_sources(direct, criteria, id)?;
            }
        }
        Ok(())
    })
}

/// The levels below application protocols: direct source IP, source type, source IP and port.
fn insert_sources(
    direct: &mut DirectSourceIps,
    criteria: &FilterChainMatch,
    id: ChainId,
) -> Result<(), FilterChainSelectorError> {
    direct.for_each_entry(&criteria.direct_source_prefix_ranges, |types| {
        types[criteria.source_type.index()]
            .get_or_insert_with(PrefixTable::default)
            .for_each_entry(&criteria.source_prefix_ranges, |ports| {
                insert_source_ports(ports, &criteria.source_ports, id)
            })
    })
}

/// The leaf level. Reaching an occupied leaf means two chains would tie for some connection.
fn insert_source_ports(
    leaf: &mut SourcePorts,
    source_ports: &[u16],
    id: ChainId,
) -> Result<(), FilterChainSelectorError> {
    let wanted: &[u16] = if source_ports.is_empty() {
        &[ANY_PORT]
    } else {
        source_ports
    };
    for &port in wanted {
        if let Some(&existing) = leaf.get(&port) {
            return Err(FilterChainSelectorError::OverlappingMatch {
                chain: id,
                existing,
            });
        }
        leaf.insert(port, id);
    }
    Ok(())
}

/// The keys a chain occupies in a string-keyed level: its values, or the "any" key.
fn keys_or_any<'a, V>(values: &'a [V], key: impl Fn(&'a V) -> &'a str) -> Vec<&'a str> {
    if values.is_empty() {
        vec![ANY]
    } else {
        values.iter().map(key).collect()
    }
}

/// A longest-prefix-match table. Lookups probe only the prefix lengths present, longest first,
/// so they cost a few hash lookups however many ranges there are. Entries for chains without
/// ranges live in `unconstrained` and are consulted only when no range contains the address.
/// (Envoy expands "no ranges" to `0.0.0.0/0` and `::/0`; keeping it apart makes an explicit
/// `0.0.0.0/0` strictly more specific, where Envoy's behaviour for that mix is unspecified.)
#[derive(Debug)]
struct PrefixTable<V> {
    ranges: HashMap<Cidr, V>,
    v4_lengths: Vec<u8>,
    v6_lengths: Vec<u8>,
    unconstrained: Option<V>,
}

impl<V> Default for PrefixTable<V> {
    fn default() -> Self {
        PrefixTable {
            ranges: HashMap::new(),
            v4_lengths: Vec::new(),
            v6_lengths: Vec::new(),
            unconstrained: None,
        }
    }
}

impl<V: Default> PrefixTable<V> {
    /// Runs `add` on each entry a chain with these ranges occupies, creating it if missing. A
    /// range listed twice visits its entry twice, so the leaf level reports the overlap, as
    /// Envoy does.
    fn for_each_entry<E>(
        &mut self,
        ranges: &[Cidr],
        mut add: impl FnMut(&mut V) -> Result<(), E>,
    ) -> Result<(), E> {
        if ranges.is_empty() {
            return add(self.unconstrained.get_or_insert_with(V::default));
        }
        for range in ranges {
            let lengths = match range.network {
                IpAddr::V4(_) => &mut self.v4_lengths,
                IpAddr::V6(_) => &mut self.v6_lengths,
            };
            // Longest first.
            if let Err(at) = lengths.binary_search_by(|len| range.prefix_len.cmp(len)) {
                lengths.insert(at, range.prefix_len);
            }
            add(self.ranges.entry(*range).or_default())?;
        }
        Ok(())
    }
}

impl<V> PrefixTable<V> {
    fn longest_match(&self, ip: IpAddr) -> Option<&V> {
        let lengths = match ip {
            IpAddr::V4(_) => &self.v4_lengths,
            IpAddr::V6(_) => &self.v6_lengths,
        };
        lengths
            .iter()
            .find_map(|&len| {
                let key = Cidr {
                    network: mask(ip, len),
                    prefix_len: len,
                };
                self.ranges.get(&key)
            })
            .or(self.unconstrained.as_ref())
    }
}
