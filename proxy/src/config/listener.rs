//! Listeners: where to accept, which listener filters inspect a new connection, and which filter
//! chain (selected by Envoy's `filter_chain_match` rules) handles it.

use super::address::{self, Address};
use super::http_connection_manager::HttpConnectionManager;
use super::tcp_proxy::TcpProxy;
use super::tls::{self, Side, TransportSocket};
use super::{ConfigError, opt_duration};
use crate::listener::filter_chain_match::{FilterChainMatch, FilterChainSelector};
use crate::rbac::network::NetworkRbac;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use xds_client::any;
use xds_client::pb::envoy::config::core::v3::TrafficDirection;
use xds_client::pb::envoy::config::listener::v3 as proto;
use xds_client::pb::envoy::config::listener::v3::listener_filter_chain_match_predicate::Rule;

/// A validated listener.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// The `listener.<x>.` part of stat names: `stat_prefix` when set, else the address.
    pub stat_prefix: String,
    /// False for the per-destination listeners that only receive hand-offs from `use_original_dst`.
    pub bind_to_port: bool,
    /// Hand accepted connections to the listener bound to their original destination.
    pub use_original_dst: bool,
    pub listener_filters: Vec<ListenerFilter>,
    /// `None` when configured as 0 (no timeout), as in Envoy.
    pub listener_filters_timeout: Option<Duration>,
    pub continue_on_listener_filters_timeout: bool,
    pub filter_chains: FilterChainSelector<Arc<FilterChain>>,
    pub direction: Direction,
    /// `drain_type: MODIFY_ONLY`: the listener drains only when it is modified or removed, not
    /// while the server's health check is failed (`POST /healthcheck/fail`).
    pub modify_only_drain: bool,
}

/// `traffic_direction`, which `POST /drain_listeners?inboundonly` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Unspecified,
    Inbound,
    Outbound,
}

/// A listener filter and the destination ports for which it is disabled.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerFilter {
    pub kind: ListenerFilterKind,
    pub disabled: Option<PortPredicate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerFilterKind {
    /// Restore the pre-NAT destination (SO_ORIGINAL_DST) as the connection's local address.
    OriginalDst,
    /// Peek a TLS ClientHello for SNI and ALPN.
    TlsInspector,
    /// Peek an HTTP/1.x request line or the h2c preface for ALPN.
    HttpInspector,
}

/// `ListenerFilterChainMatchPredicate`: a boolean expression over the destination port.
#[derive(Debug, Clone, PartialEq)]
pub enum PortPredicate {
    Any,
    /// `[start, end)` as in Envoy's Int32Range.
    PortRange(i32, i32),
    Not(Box<PortPredicate>),
    And(Vec<PortPredicate>),
    Or(Vec<PortPredicate>),
}

impl PortPredicate {
    pub fn matches(&self, port: u16) -> bool {
        let port = i32::from(port);
        match self {
            PortPredicate::Any => true,
            PortPredicate::PortRange(start, end) => (*start..*end).contains(&port),
            PortPredicate::Not(inner) => !inner.matches(port as u16),
            PortPredicate::And(all) => all.iter().all(|p| p.matches(port as u16)),
            PortPredicate::Or(any) => any.iter().any(|p| p.matches(port as u16)),
        }
    }
}

/// A filter chain: the network filters a matched connection runs through.
#[derive(Debug)]
pub struct FilterChain {
    pub name: String,
    pub filters: Vec<NetworkFilter>,
    /// Plaintext, or TLS to terminate before the filters (`transport_socket`).
    pub transport: TransportSocket,
}

/// The network filters Tern knows.
#[derive(Debug)]
pub enum NetworkFilter {
    TcpProxy(Arc<TcpProxy>),
    /// `envoy.filters.network.http_connection_manager`: the HTTP data path.
    HttpConnectionManager(Arc<HttpConnectionManager>),
    /// Telemetry/metadata filters that change no traffic (Istio's stats and metadata exchange).
    NoOp {
        name: String,
    },
    /// `envoy.filters.network.rbac`: connections its rules deny are closed.
    Rbac(Arc<NetworkRbac>),
    /// A security filter Tern cannot enforce: every connection is closed (fail closed, never open).
    DenyAll {
        name: String,
    },
}

/// Filters accepted as no-ops, by the type URL of their config (after TypedStruct unwrapping).
const NO_OP_FILTER_TYPES: &[&str] = &[
    "type.googleapis.com/stats.PluginConfig",
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
    "type.googleapis.com/io.istio.network.peer_metadata.Config",
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
];

/// Security filters that must never be silently skipped.
const FAIL_CLOSED_FILTER_TYPES: &[&str] =
    &["type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"];

const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

impl TryFrom<&proto::Listener> for Listener {
    type Error = ConfigError;

    fn try_from(l: &proto::Listener) -> Result<Self, ConfigError> {
        let resource = format!("listener {:?}", l.name);
        let err = |field: &str, reason: String| ConfigError::new(&resource, field, reason);
        let address =
            match address::convert(l.address.as_ref(), false).map_err(|r| err("address", r))? {
                Address::Socket(addr) => addr,
                other => {
                    return Err(err(
                        "address",
                        format!("{other}: only IP listeners are supported"),
                    ));
                }
            };
        let use_original_dst = l.use_original_dst.as_ref().is_some_and(|b| b.value);
        let mut listener_filters = l
            .listener_filters
            .iter()
            .enumerate()
            .map(|(i, f)| listener_filter(f).map_err(|r| err(&format!("listener_filters[{i}]"), r)))
            .collect::<Result<Vec<_>, _>>()?;
        // As in Envoy, `use_original_dst` implies the original_dst listener filter, after the
        // configured ones: Istio's `virtualOutbound` names no listener filter at all.
        if use_original_dst
            && !listener_filters
                .iter()
                .any(|f| f.kind == ListenerFilterKind::OriginalDst && f.disabled.is_none())
        {
            listener_filters.push(ListenerFilter {
                kind: ListenerFilterKind::OriginalDst,
                disabled: None,
            });
        }
        let mut chains = Vec::with_capacity(l.filter_chains.len());
        for (i, chain) in l.filter_chains.iter().enumerate() {
            let field = format!("filter_chains[{i}]");
            let matcher = match &chain.filter_chain_match {
                Some(m) => FilterChainMatch::try_from(m)
                    .map_err(|e| err(&format!("{field}.filter_chain_match"), e.to_string()))?,
                None => FilterChainMatch::default(),
            };
            let converted =
                filter_chain(chain).map_err(|(f, r)| err(&format!("{field}.{f}"), r))?;
            chains.push((matcher, Arc::new(converted)));
        }
        let default = match &l.default_filter_chain {
            Some(chain) => {
                Some(Arc::new(filter_chain(chain).map_err(|(f, r)| {
                    err(&format!("default_filter_chain.{f}"), r)
                })?))
            }
            None => None,
        };
        let filter_chains = FilterChainSelector::build(chains, default)
            .map_err(|e| err("filter_chains", e.to_string()))?;
        Ok(Listener {
            name: l.name.clone(),
            address,
            stat_prefix: if l.stat_prefix.is_empty() {
                address::stat_name(&address)
            } else {
                l.stat_prefix.clone()
            },
            bind_to_port: l.bind_to_port.as_ref().is_none_or(|b| b.value),
            use_original_dst,
            listener_filters,
            listener_filters_timeout: match opt_duration(l.listener_filters_timeout.as_ref())
                .map_err(|r| err("listener_filters_timeout", r))?
            {
                None => Some(DEFAULT_LISTENER_FILTERS_TIMEOUT),
                Some(Duration::ZERO) => None,
                Some(d) => Some(d),
            },
            continue_on_listener_filters_timeout: l.continue_on_listener_filters_timeout,
            filter_chains,
            modify_only_drain: l.drain_type == proto::listener::DrainType::ModifyOnly as i32,
            direction: match TrafficDirection::try_from(l.traffic_direction) {
                Ok(TrafficDirection::Inbound) => Direction::Inbound,
                Ok(TrafficDirection::Outbound) => Direction::Outbound,
                _ => Direction::Unspecified,
            },
        })
    }
}

fn listener_filter(f: &proto::ListenerFilter) -> Result<ListenerFilter, String> {
    let type_url = match &f.config_type {
        Some(proto::listener_filter::ConfigType::TypedConfig(any)) => any::type_url(any),
        Some(proto::listener_filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(format!("{}: config_discovery is not supported", f.name));
        }
        None => String::new(),
    };
    let by_type = |suffix: &str| type_url.ends_with(suffix);
    let kind = if f.name == "envoy.filters.listener.original_dst"
        || by_type("original_dst.v3.OriginalDst")
    {
        ListenerFilterKind::OriginalDst
    } else if f.name == "envoy.filters.listener.tls_inspector"
        || by_type("tls_inspector.v3.TlsInspector")
    {
        ListenerFilterKind::TlsInspector
    } else if f.name == "envoy.filters.listener.http_inspector"
        || by_type("http_inspector.v3.HttpInspector")
    {
        ListenerFilterKind::HttpInspector
    } else {
        return Err(format!("unknown listener filter {:?} ({type_url})", f.name));
    };
    let disabled = f.filter_disabled.as_ref().map(port_predicate).transpose()?;
    Ok(ListenerFilter { kind, disabled })
}

fn port_predicate(p: &proto::ListenerFilterChainMatchPredicate) -> Result<PortPredicate, String> {
    let set = |rules: &[proto::ListenerFilterChainMatchPredicate]| {
        rules
            .iter()
            .map(port_predicate)
            .collect::<Result<Vec<_>, _>>()
    };
    match &p.rule {
        Some(Rule::AnyMatch(_)) => Ok(PortPredicate::Any),
        Some(Rule::DestinationPortRange(r)) => Ok(PortPredicate::PortRange(r.start, r.end)),
        Some(Rule::NotMatch(inner)) => Ok(PortPredicate::Not(Box::new(port_predicate(inner)?))),
        Some(Rule::AndMatch(m)) => Ok(PortPredicate::And(set(&m.rules)?)),
        Some(Rule::OrMatch(m)) => Ok(PortPredicate::Or(set(&m.rules)?)),
        None => Err("filter_disabled has no rule".into()),
    }
}

fn filter_chain(chain: &proto::FilterChain) -> Result<FilterChain, (String, String)> {
    let transport = match &chain.transport_socket {
        Some(ts) => tls::transport_socket(ts, Side::Downstream).map_err(|e| {
            let e = e.within("transport_socket");
            (e.field, e.reason)
        })?,
        None => TransportSocket::Plaintext,
    };
    let filters = chain
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| network_filter(f).map_err(|r| (format!("filters[{i}]"), r)))
        .collect::<Result<Vec<_>, _>>()?;
    if filters.is_empty() {
        return Err((
            "filters".into(),
            "a filter chain needs at least one network filter".into(),
        ));
    }
    Ok(FilterChain {
        name: chain.name.clone(),
        filters,
        transport,
    })
}

fn network_filter(f: &proto::Filter) -> Result<NetworkFilter, String> {
    let any = match &f.config_type {
        Some(proto::filter::ConfigType::TypedConfig(any)) => any,
        _ => return Err(format!("{}: typed_config is required", f.name)),
    };
    let type_url = any::type_url(any);
    use xds_client::pb::envoy::extensions::filters::network::{
        http_connection_manager::v3::HttpConnectionManager as HcmProto,
        rbac::v3::Rbac as RbacProto, tcp_proxy::v3::TcpProxy as TcpProxyProto,
    };
    if type_url == <TcpProxyProto as prost::Name>::type_url() {
        let proto: TcpProxyProto = any::unpack(any).map_err(|e| format!("{}: {e}", f.name))?;
        return Ok(NetworkFilter::TcpProxy(Arc::new(TcpProxy::try_from(
            &proto,
        )?)));
    }
    if type_url == <HcmProto as prost::Name>::type_url() {
        let hcm: HcmProto = any::unpack(any).map_err(|e| format!("{}: {e}", f.name))?;
        let config = HttpConnectionManager::from_proto(&hcm)
            .map_err(|e| format!("{}: {}: {}", f.name, e.field, e.reason))?;
        return Ok(NetworkFilter::HttpConnectionManager(Arc::new(config)));
    }
    if type_url == <RbacProto as prost::Name>::type_url() {
        let rbac: RbacProto = any::unpack(any).map_err(|e| format!("{}: {e}", f.name))?;
        let config = NetworkRbac::try_from(&rbac).map_err(|e| format!("{}: {e}", f.name))?;
        return Ok(NetworkFilter::Rbac(Arc::new(config)));
    }
    if NO_OP_FILTER_TYPES.contains(&type_url.as_str()) {
        return Ok(NetworkFilter::NoOp {
            name: f.name.clone(),
        });
    }
    if FAIL_CLOSED_FILTER_TYPES.contains(&type_url.as_str()) {
        return Ok(NetworkFilter::DenyAll {
            name: f.name.clone(),
        });
    }
    Err(format!("unknown network filter {:?} ({type_url})", f.name))
}

#[cfg(test)]
mod tests;
