//! Clusters: how to find upstream hosts (discovery type, endpoints), how to pick one (load
//! balancing policy), and how to connect (timeout, source address, connection limits).

mod outlier;
pub mod transport;

pub use outlier::OutlierDetection;
pub use transport::{SocketMatchMetadata, UpstreamTransport};

use super::address::{self, Address};
use super::{ConfigError, opt_duration};
use crate::lb::{HostHealth, LbConfig, LbPolicy};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use xds_client::pb::envoy::config::cluster::v3 as proto;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::config::endpoint::v3 as endpoint;

/// How a cluster learns its hosts.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    Static,
    /// Re-resolve every `refresh`; all returned addresses are hosts.
    StrictDns(DnsSettings),
    /// Re-resolve every `refresh`; the first returned address is the one host.
    LogicalDns(DnsSettings),
    /// Endpoints arrive over EDS for `service_name` (the cluster name when empty).
    Eds {
        service_name: String,
    },
    /// The host is the downstream connection's original destination.
    OriginalDst,
}

/// How a DNS cluster resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// `dns_refresh_rate` (default 5 s).
    pub refresh: Duration,
    /// Re-resolve when the records' TTL runs out instead of every `refresh`.
    pub respect_ttl: bool,
    pub family: DnsFamily,
    /// Name servers the cluster names (`typed_dns_resolver_config`, `dns_resolution_config`,
    /// `dns_resolvers`); empty means the system's.
    pub resolvers: Vec<SocketAddr>,
}

/// `dns_lookup_family`: which address families a DNS answer contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    /// IPv6 if there is any, else IPv4 (Envoy's AUTO).
    Auto,
    V4Only,
    V6Only,
    /// IPv4 if there is any, else IPv6.
    V4Preferred,
    All,
}

/// Envoy's per-cluster circuit breaker thresholds (the DEFAULT priority).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// One upstream host as configured (static, DNS-resolved or from EDS).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub address: Address,
    pub hostname: String,
    pub weight: u32,
    pub priority: u32,
    /// Index of the host's locality among the localities of its priority.
    pub locality: usize,
    pub health: HostHealth,
    /// The endpoint's and its locality's `envoy.transport_socket_match` metadata, which picks
    /// the cluster's transport socket for it (`None`: neither has any).
    pub socket_match: Option<Arc<SocketMatchMetadata>>,
}

/// The hosts of a cluster with the per-locality weights EDS may give.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadAssignment {
    pub endpoints: Vec<Endpoint>,
    /// Per priority, per locality `load_balancing_weight` (0 when unset).
    pub locality_weights: Vec<Vec<u32>>,
    pub overprovisioning_factor: u32,
}

/// A validated cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// The name used in stats: `alt_stat_name` when set, else `name`.
    pub stat_name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub lb: LbConfig,
    pub load_assignment: LoadAssignment,
    /// Source address for upstream connections (`upstream_bind_config`, port 0).
    pub bind_source: Option<SocketAddr>,
    pub circuit_breakers: CircuitBreakers,
    /// How HTTP requests go upstream (`typed_extension_protocol_options` HttpProtocolOptions).
    pub http: UpstreamHttp,
    /// Passive health checking; `None` when the cluster has no `outlier_detection`.
    pub outlier_detection: Option<OutlierDetection>,
    /// `transport_socket` and `transport_socket_matches`: plaintext or TLS, per endpoint.
    pub transport: UpstreamTransport,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
pub const DEFAULT_OVERPROVISIONING: u32 = 140;

impl TryFrom<&proto::Cluster> for Cluster {
    type Error = ConfigError;

    fn try_from(c: &proto::Cluster) -> Result<Self, ConfigError> {
        let resource = format!("cluster {:?}", c.name);
        let err = |field: &str, reason: String| ConfigError::new(&resource, field, reason);
        if c.name.is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let discovery = discovery(c).map_err(|r| err("type", r))?;
        let connect_timeout = opt_duration(c.connect_timeout.as_ref())
            .map_err(|r| err("connect_timeout", r))?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let lb = lb_config(c, &discovery).map_err(|(field, r)| err(field, r))?;
        let allow_names = matches!(
            discovery,
            Discovery::StrictDns(_) | Discovery::LogicalDns(_)
        );
        let load_assignment = match &c.load_assignment {
            Some(la) => {
                load_assignment(la, allow_names).map_err(|e| e.within("load_assignment"))?
            }
            None => LoadAssignment {
                overprovisioning_factor: DEFAULT_OVERPROVISIONING,
                ..Default::default()
            },
        };
        if matches!(discovery, Discovery::LogicalDns(_)) && load_assignment.endpoints.len() != 1 {
            return Err(err(
                "load_assignment",
                "LOGICAL_DNS clusters must have a single host".into(),
            ));
        }
        let bind_source = bind_source(c.upstream_bind_config.as_ref())
            .map_err(|r| err("upstream_bind_config", r))?;
        let transport = transport::upstream_transport(c).map_err(|e| ConfigError {
            resource: resource.clone(),
            ..e
        })?;
        Ok(Cluster {
            name: c.name.clone(),
            stat_name: if c.alt_stat_name.is_empty() {
                c.name.clone()
            } else {
                c.alt_stat_name.clone()
            },
            discovery,
            connect_timeout,
            lb: {
                let lb = LbConfig {
                    overprovisioning_factor: load_assignment.overprovisioning_factor,
                    ..lb
                };
                lb.validate().map_err(|e| err("lb_config", e.to_string()))?;
                lb
            },
            load_assignment,
            bind_source,
            circuit_breakers: circuit_breakers(c.circuit_breakers.as_ref()),
            outlier_detection: c
                .outlier_detection
                .as_ref()
                .map(OutlierDetection::try_from)
                .transpose()
                .map_err(|(field, r)| err(&format!("outlier_detection.{field}"), r))?,
            http: upstream_http(c).map_err(|r| {
                err(
                    "typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]",
                    r,
                )
            })?,
            transport,
        })
    }
}

// `dns_refresh_rate`/`respect_dns_ttl` are deprecated in favour of a DNS extension, but Istio
// still sets them and Envoy still honours them.
#[allow(deprecated)]
fn discovery(c: &proto::Cluster) -> Result<Discovery, String> {
    use proto::cluster::{ClusterDiscoveryType, DiscoveryType};
    let kind = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(*t).map_err(|_| format!("unknown discovery type {t}"))?
        }
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            return Err(format!(
                "custom cluster type {:?} is not supported",
                custom.name
            ));
        }
    };
    let refresh = opt_duration(c.dns_refresh_rate.as_ref())?.unwrap_or(DEFAULT_DNS_REFRESH);
    use proto::cluster::DnsLookupFamily as F;
    let family = match F::try_from(c.dns_lookup_family) {
        Ok(F::V4Only) => DnsFamily::V4Only,
        Ok(F::V6Only) => DnsFamily::V6Only,
        Ok(F::V4Preferred) => DnsFamily::V4Preferred,
        Ok(F::All) => DnsFamily::All,
        _ => DnsFamily::Auto,
    };
    let dns = || -> Result<DnsSettings, String> {
        Ok(DnsSettings {
            refresh,
            respect_ttl: c.respect_dns_ttl,
            family,
            resolvers: dns_resolvers(c)?,
        })
    };
    Ok(match kind {
        DiscoveryType::Static => Discovery::Static,
        DiscoveryType::StrictDns => Discovery::StrictDns(dns()?),
        DiscoveryType::LogicalDns => Discovery::LogicalDns(dns()?),
        DiscoveryType::Eds => Discovery::Eds {
            service_name: c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .unwrap_or_default(),
        },
        DiscoveryType::OriginalDst => Discovery::OriginalDst,
    })
}

/// The name servers a cluster names, in Envoy's order of precedence: `typed_dns_resolver_config`
/// (c-ares), then `dns_resolution_config`, then the deprecated `dns_resolvers`.
#[allow(deprecated)]
fn dns_resolvers(c: &proto::Cluster) -> Result<Vec<SocketAddr>, String> {
    use xds_client::pb::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;
    let addresses = if let Some(typed) = &c.typed_dns_resolver_config {
        let any = typed
            .typed_config
            .as_ref()
            .ok_or("typed_dns_resolver_config.typed_config is required")?;
        let cares: CaresDnsResolverConfig = xds_client::any::unpack(any).map_err(|e| {
            format!("typed_dns_resolver_config: only the c-ares resolver is supported: {e}")
        })?;
        cares.resolvers
    } else if let Some(config) = &c.dns_resolution_config {
        config.resolvers.clone()
    } else {
        c.dns_resolvers.clone()
    };
    addresses
        .iter()
        .map(|a| match address::convert(Some(a), false)? {
            Address::Socket(addr) if addr.port() == 0 => Ok(SocketAddr::new(addr.ip(), 53)),
            Address::Socket(addr) => Ok(addr),
            other => Err(format!("DNS resolver {other} must be an IP address")),
        })
        .collect()
}

fn lb_config(
    c: &proto::Cluster,
    discovery: &Discovery,
) -> Result<LbConfig, (&'static str, String)> {
    use proto::cluster::{LbConfig as ProtoLbConfig, LbPolicy as P};
    let policy = P::try_from(c.lb_policy)
        .map_err(|_| ("lb_policy", format!("unknown policy {}", c.lb_policy)))?;
    let specific = c.lb_config.as_ref();
    let policy = match policy {
        P::RoundRobin => LbPolicy::RoundRobin,
        P::Random => LbPolicy::Random,
        P::LeastRequest => {
            let (choice_count, active_request_bias) = match specific {
                Some(ProtoLbConfig::LeastRequestLbConfig(lr)) => (
                    lr.choice_count.as_ref().map_or(2, |v| v.value),
                    lr.active_request_bias
                        .as_ref()
                        .map_or(1.0, |b| b.default_value),
                ),
                _ => (2, 1.0),
            };
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias,
            }
        }
        P::RingHash => {
            let (min, max) = match specific {
                Some(ProtoLbConfig::RingHashLbConfig(rh)) => {
                    if rh.hash_function != 0 {
                        return Err((
                            "lb_config.ring_hash_lb_config.hash_function",
                            "only XX_HASH is supported".into(),
                        ));
                    }
                    (
                        rh.minimum_ring_size.as_ref().map_or(1024, |v| v.value),
                        rh.maximum_ring_size
                            .as_ref()
                            .map_or(8 * 1024 * 1024, |v| v.value),
                    )
                }
                _ => (1024, 8 * 1024 * 1024),
            };
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
            }
        }
        P::Maglev => {
            let table_size = match specific {
                Some(ProtoLbConfig::MaglevLbConfig(m)) => {
                    m.table_size.as_ref().map_or(65537, |v| v.value)
                }
                _ => 65537,
            };
            LbPolicy::Maglev { table_size }
        }
        P::ClusterProvided if *discovery == Discovery::OriginalDst => LbPolicy::RoundRobin,
        other => {
            return Err((
                "lb_policy",
                format!("{} is not supported", other.as_str_name()),
            ));
        }
    };
    if *discovery == Discovery::OriginalDst
        && !matches!(P::try_from(c.lb_policy), Ok(P::ClusterProvided))
    {
        return Err((
            "lb_policy",
            "ORIGINAL_DST clusters require CLUSTER_PROVIDED".into(),
        ));
    }
    let common = c.common_lb_config.as_ref();
    let panic_threshold = common
        .and_then(|cl| cl.healthy_panic_threshold.as_ref())
        .map_or(50.0, |p| p.value);
    let locality_weighted = common.is_some_and(|cl| {
        matches!(
            cl.locality_config_specifier,
            Some(
                proto::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    _
                )
            )
        )
    });
    Ok(LbConfig {
        policy,
        overprovisioning_factor: DEFAULT_OVERPROVISIONING,
        panic_threshold,
        locality_weights: locality_weighted.then(Vec::new),
    })
}

/// Converts a `ClusterLoadAssignment` (static `load_assignment` now, EDS later).
pub fn load_assignment(
    la: &endpoint::ClusterLoadAssignment,
    allow_names: bool,
) -> Result<LoadAssignment, ConfigError> {
    let resource = format!("cluster_load_assignment {:?}", la.cluster_name);
    let mut out = LoadAssignment {
        overprovisioning_factor: la
            .policy
            .as_ref()
            .and_then(|p| p.overprovisioning_factor.as_ref())
            .map_or(DEFAULT_OVERPROVISIONING, |v| v.value),
        ..Default::default()
    };
    for (i, locality) in la.endpoints.iter().enumerate() {
        let priority = locality.priority as usize;
        if out.locality_weights.len() <= priority {
            out.locality_weights.resize(priority + 1, Vec::new());
        }
        let locality_index = out.locality_weights[priority].len();
        let locality_labels = transport::socket_match_labels(locality.metadata.as_ref());
        out.locality_weights[priority].push(
            locality
                .load_balancing_weight
                .as_ref()
                .map_or(0, |w| w.value),
        );
        for (j, lb_endpoint) in locality.lb_endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}].lb_endpoints[{j}]");
            let ep = convert_endpoint(lb_endpoint, allow_names)
                .map_err(|reason| ConfigError::new(&resource, &field, reason))?;
            let endpoint_labels = transport::socket_match_labels(lb_endpoint.metadata.as_ref());
            let socket_match =
                (endpoint_labels.is_some() || locality_labels.is_some()).then(|| {
                    Arc::new(SocketMatchMetadata {
                        endpoint: endpoint_labels,
                        locality: locality_labels.clone(),
                    })
                });
            out.endpoints.push(Endpoint {
                priority: locality.priority,
                locality: locality_index,
                socket_match,
                ..ep
            });
        }
    }
    Ok(out)
}

fn convert_endpoint(lb: &endpoint::LbEndpoint, allow_names: bool) -> Result<Endpoint, String> {
    let ep = match &lb.host_identifier {
        Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(endpoint::lb_endpoint::HostIdentifier::EndpointName(name)) => {
            return Err(format!(
                "endpoint_name {name:?} (named endpoints) is not supported"
            ));
        }
        None => return Err("endpoint is required".into()),
    };
    let address = address::convert(ep.address.as_ref(), allow_names)?;
    let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
    if weight == 0 {
        return Err("load_balancing_weight must be at least 1".into());
    }
    Ok(Endpoint {
        address,
        hostname: ep.hostname.clone(),
        weight,
        priority: 0,
        locality: 0,
        health: health(lb.health_status),
        socket_match: None,
    })
}

/// Envoy's `HealthStatus` as the balancer sees it: UNKNOWN and HEALTHY are healthy;
/// UNHEALTHY, DRAINING and TIMEOUT are excluded; DEGRADED is used only when healthy hosts run out.
pub fn health(status: i32) -> HostHealth {
    match core::HealthStatus::try_from(status) {
        Ok(core::HealthStatus::Unhealthy | core::HealthStatus::Timeout) => HostHealth::Unhealthy,
        Ok(core::HealthStatus::Draining) => HostHealth::Draining,
        Ok(core::HealthStatus::Degraded) => HostHealth::Degraded,
        _ => HostHealth::Healthy,
    }
}

fn bind_source(bind: Option<&core::BindConfig>) -> Result<Option<SocketAddr>, String> {
    let Some(sa) = bind.and_then(|b| b.source_address.as_ref()) else {
        return Ok(None);
    };
    match address::socket_address(sa, false)? {
        Address::Socket(addr) => Ok(Some(addr)),
        other => Err(format!("source_address {other} must be an IP address")),
    }
}

fn circuit_breakers(cb: Option<&proto::CircuitBreakers>) -> CircuitBreakers {
    thresholds(cb, core::RoutingPriority::Default)
}

/// The thresholds of one routing priority, Envoy's defaults where unset. Tern enforces the
/// DEFAULT priority's; `/clusters` shows both, as Envoy does.
pub fn thresholds(
    cb: Option<&proto::CircuitBreakers>,
    priority: core::RoutingPriority,
) -> CircuitBreakers {
    let defaults = CircuitBreakers::default();
    let Some(t) = cb.and_then(|cb| cb.thresholds.iter().find(|t| t.priority == priority as i32))
    else {
        return defaults;
    };
    let get = |v: &Option<xds_client::pb::google::protobuf::UInt32Value>, d| {
        v.as_ref().map_or(d, |v| v.value)
    };
    CircuitBreakers {
        max_connections: get(&t.max_connections, defaults.max_connections),
        max_pending_requests: get(&t.max_pending_requests, defaults.max_pending_requests),
        max_requests: get(&t.max_requests, defaults.max_requests),
        max_retries: get(&t.max_retries, defaults.max_retries),
    }
}

/// Which HTTP version a cluster speaks upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// The downstream request's version (`use_downstream_protocol_config`).
    UseDownstream,
}

/// A cluster's upstream HTTP settings, Envoy's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHttp {
    pub protocol: UpstreamProtocol,
    /// Close an upstream connection idle this long (default 1 h; `None` = never).
    pub idle_timeout: Option<Duration>,
    /// Requests per connection before it is closed (`None` = unlimited).
    pub max_requests_per_connection: Option<u32>,
    pub http2: crate::config::http_connection_manager::Http2Settings,
}

const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

// The deprecated `http2_protocol_options` and `max_requests_per_connection` are still honoured.
#[allow(deprecated)]
fn upstream_http(c: &proto::Cluster) -> Result<UpstreamHttp, String> {
    use crate::config::http_connection_manager::Http2Settings;
    use xds_client::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
    };
    let mut out = UpstreamHttp {
        protocol: UpstreamProtocol::Http1,
        idle_timeout: Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT),
        max_requests_per_connection: c
            .max_requests_per_connection
            .as_ref()
            .map(|v| v.value)
            .filter(|v| *v > 0),
        http2: Http2Settings::default(),
    };
    if let Some(h2) = &c.http2_protocol_options {
        out.protocol = UpstreamProtocol::Http2;
        out.http2 = Http2Settings::from_proto(Some(h2))
            .map_err(|(f, r)| format!("http2_protocol_options.{f}: {r}"))?;
    }
    let Some(any) = c
        .typed_extension_protocol_options
        .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    else {
        return Ok(out);
    };
    let opts: HttpProtocolOptions = xds_client::any::unpack(any).map_err(|e| e.to_string())?;
    if let Some(common) = &opts.common_http_protocol_options {
        out.idle_timeout = match crate::config::opt_duration(common.idle_timeout.as_ref())
            .map_err(|r| format!("common_http_protocol_options.idle_timeout: {r}"))?
        {
            None => out.idle_timeout,
            Some(Duration::ZERO) => None,
            Some(d) => Some(d),
        };
        if let Some(v) = common
            .max_requests_per_connection
            .as_ref()
            .filter(|v| v.value > 0)
        {
            out.max_requests_per_connection = Some(v.value);
        }
    }
    match &opts.upstream_protocol_options {
        None => {}
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                out.protocol = UpstreamProtocol::Http2;
                out.http2 = Http2Settings::from_proto(Some(h2)).map_err(|(f, r)| {
                    format!("explicit_http_config.http2_protocol_options.{f}: {r}")
                })?;
            }
            Some(ProtocolConfig::HttpProtocolOptions(_)) | None => {
                out.protocol = UpstreamProtocol::Http1;
            }
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                return Err("HTTP/3 upstreams are not supported".into());
            }
        },
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
            out.protocol = UpstreamProtocol::UseDownstream;
            if let Some(h2) = &d.http2_protocol_options {
                out.http2 = Http2Settings::from_proto(Some(h2)).map_err(|(f, r)| {
                    format!("use_downstream_protocol_config.http2_protocol_options.{f}: {r}")
                })?;
            }
        }
        Some(UpstreamProtocolOptions::AutoConfig(a)) => {
            // Without TLS there is no ALPN to negotiate with: Envoy's auto config then uses HTTP/1.1.
            out.protocol = UpstreamProtocol::Http1;
            if let Some(h2) = &a.http2_protocol_options {
                out.http2 = Http2Settings::from_proto(Some(h2))
                    .map_err(|(f, r)| format!("auto_config.http2_protocol_options.{f}: {r}"))?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
