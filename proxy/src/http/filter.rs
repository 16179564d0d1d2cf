//! The HCM's `http_filters` chain: which filters Tern runs, which it accepts as no-ops
//! (telemetry that changes no traffic), and which it refuses to skip (security filters fail
//! closed). The router must be last, as in Envoy.
//!
//! Filter configs are parsed once, when the listener or route configuration is converted: the
//! chain's own `typed_config` here, and every `typed_per_filter_config` entry into a
//! [`FilterOverride`] (by its type, as Envoy does, so a route configuration can be checked before
//! any listener uses it). [`run_request_filters`] then runs the chain for one request, in order,
//! taking each filter's most specific config: weighted cluster, route, virtual host, route
//! configuration, then the filter's own.

use super::ConnectionContext;
use super::cors::{Cors, CorsPolicy, CorsResponseHeaders, CorsStats, CorsVerdict};
use super::fault::{FaultConfig, FaultStats};
use super::local_ratelimit::{self, ConfigLevel, LocalRateLimit, RateDecision, XRateLimit};
use super::local_reply::{self, Body};
use super::rbac::{self, ChainRbacStats, RBAC_PER_ROUTE_TYPE, RBAC_TYPE, RbacFilter};
use crate::config::matcher::RequestView;
use crate::config::route::{PerFilterConfig, Route, RouteConfig, VirtualHost, WeightedCluster};
use crate::stats::Store;
use http::{HeaderMap, Method, Response};
use std::borrow::Cow;
use std::sync::Arc;
use xds_client::any;
use xds_client::pb::envoy::config::route::v3::FilterConfig;
use xds_client::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use xds_client::pb::google::protobuf::Any;

/// One configured HTTP filter.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// `envoy.filters.http.router`: the terminal filter.
    Router,
    /// `envoy.filters.http.fault` with its filter-level config (per-route configs replace it).
    Fault {
        name: String,
        config: Arc<FaultConfig>,
        disabled: bool,
    },
    /// `envoy.filters.http.cors`: policies come per route / virtual host.
    Cors { name: String, disabled: bool },
    /// `envoy.filters.http.local_ratelimit` with its filter-level bucket (per-route configs
    /// replace it).
    LocalRateLimit {
        name: String,
        config: Arc<LocalRateLimit>,
        disabled: bool,
    },
    /// `envoy.filters.http.rbac` (per-route `RBACPerRoute` configs replace its rules).
    Rbac {
        name: String,
        config: Arc<RbacFilter>,
        disabled: bool,
    },
    /// Telemetry and metadata filters that change no traffic.
    NoOp { name: String },
    /// A security filter Tern cannot enforce yet: every request is denied with 403.
    DenyAll { name: String },
}

/// One `typed_per_filter_config` entry, parsed by its type.
#[derive(Debug, Clone)]
pub enum FilterOverride {
    Fault(Arc<FaultConfig>),
    Cors(Arc<CorsPolicy>),
    LocalRateLimit(Arc<LocalRateLimit>),
    Rbac(Arc<RbacFilter>),
    /// `FilterConfig { disabled }` without a config: switches the filter off (or, for a filter
    /// disabled in the chain, on) for the requests this level covers.
    Switch {
        disabled: bool,
    },
    /// A config for a filter Tern runs as a no-op, fails closed, or does not have.
    Ignored,
}

impl FilterOverride {
    /// Parses one entry; `Err` says what is wrong with it.
    pub fn from_any(value: &Any) -> Result<FilterOverride, String> {
        let type_url = any::type_url(value);
        if type_url == FILTER_CONFIG_TYPE {
            let wrapper: FilterConfig = any::unpack(value).map_err(|e| e.to_string())?;
            return match &wrapper.config {
                Some(inner) if !inner.type_url.is_empty() && !wrapper.disabled => {
                    match FilterOverride::from_any(inner) {
                        Err(_) if wrapper.is_optional => Ok(FilterOverride::Ignored),
                        other => other.map_err(|e| format!("config: {e}")),
                    }
                }
                _ => Ok(FilterOverride::Switch {
                    disabled: wrapper.disabled,
                }),
            };
        }
        Ok(match type_url.as_str() {
            FAULT_TYPE => FilterOverride::Fault(FaultConfig::from_any(value)?),
            CORS_POLICY_TYPE => FilterOverride::Cors(CorsPolicy::from_any(value)?),
            LOCAL_RATELIMIT_TYPE => FilterOverride::LocalRateLimit(LocalRateLimit::from_any(
                value,
                ConfigLevel::PerRoute,
            )?),
            RBAC_PER_ROUTE_TYPE => FilterOverride::Rbac(RbacFilter::per_route_from_any(value)?),
            _ => FilterOverride::Ignored,
        })
    }
}

pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const FAULT_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
pub const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
pub const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
pub const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// Filters that only observe (Istio telemetry, peer metadata, ALPN override for mTLS).
const NO_OP_TYPES: &[&str] = &[
    "type.googleapis.com/stats.PluginConfig",
    "type.googleapis.com/io.istio.http.peer_metadata.Config",
    "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    // Response compression is optional in HTTP: an identity response is always valid, so the
    // compressors Istio's bootstrap puts on its Prometheus listener can be skipped safely.
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
];

/// Security filters: skipping them would let through what they would stop.
const FAIL_CLOSED_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
];

/// A filter's `typed_config`, which it cannot go without, parsed by `parse`; an error names the
/// field and the filter.
fn required_config<T, E: std::fmt::Display>(
    field: &str,
    f: &hcm::HttpFilter,
    typed: Option<&xds_client::pb::google::protobuf::Any>,
    parse: impl FnOnce(&xds_client::pb::google::protobuf::Any) -> Result<T, E>,
) -> Result<T, (String, String)> {
    let typed = typed.ok_or_else(|| {
        (
            field.to_string(),
            format!("{}: typed_config is required", f.name),
        )
    })?;
    parse(typed).map_err(|e| (format!("{field}.typed_config"), format!("{}: {e}", f.name)))
}

/// Parses the chain; `Err((field, reason))` names the offending entry.
pub fn parse_chain(filters: &[hcm::HttpFilter]) -> Result<Vec<HttpFilter>, (String, String)> {
    let mut chain = Vec::with_capacity(filters.len());
    for (i, f) in filters.iter().enumerate() {
        let field = format!("http_filters[{i}]");
        let typed = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(any)) => Some(any),
            Some(hcm::http_filter::ConfigType::ConfigDiscovery(_)) => {
                if f.is_optional {
                    continue;
                }
                return Err((
                    field,
                    format!("{}: config_discovery (ECDS) is not supported", f.name),
                ));
            }
            None => None,
        };
        let type_url = typed.map(any::type_url).unwrap_or_default();
        let by_name = |n: &str| typed.is_none() && f.name == n;
        let filter = if type_url == ROUTER_TYPE || by_name("envoy.filters.http.router") {
            HttpFilter::Router
        } else if type_url == FAULT_TYPE || by_name("envoy.filters.http.fault") {
            let config = match typed {
                Some(t) => FaultConfig::from_any(t),
                None => FaultConfig::try_from(&Default::default()).map(Arc::new),
            }
            .map_err(|e| (format!("{field}.typed_config"), format!("{}: {e}", f.name)))?;
            HttpFilter::Fault {
                name: f.name.clone(),
                config,
                disabled: f.disabled,
            }
        } else if type_url == CORS_TYPE || by_name("envoy.filters.http.cors") {
            HttpFilter::Cors {
                name: f.name.clone(),
                disabled: f.disabled,
            }
        } else if type_url == LOCAL_RATELIMIT_TYPE {
            let config = required_config(&field, f, typed, |t| {
                LocalRateLimit::from_any(t, ConfigLevel::Filter)
            })?;
            HttpFilter::LocalRateLimit {
                name: f.name.clone(),
                config,
                disabled: f.disabled,
            }
        } else if type_url == RBAC_TYPE {
            let config = required_config(&field, f, typed, RbacFilter::from_any)?;
            HttpFilter::Rbac {
                name: f.name.clone(),
                config,
                disabled: f.disabled,
            }
        } else if NO_OP_TYPES.contains(&type_url.as_str()) {
            HttpFilter::NoOp {
                name: f.name.clone(),
            }
        } else if FAIL_CLOSED_TYPES.contains(&type_url.as_str()) {
            HttpFilter::DenyAll {
                name: f.name.clone(),
            }
        } else if f.is_optional {
            tracing::info!(filter = %f.name, %type_url, "skipping unsupported optional HTTP filter");
            continue;
        } else {
            return Err((
                field,
                format!("unknown HTTP filter {:?} ({type_url})", f.name),
            ));
        };
        chain.push(filter);
    }
    match chain.iter().position(|f| matches!(f, HttpFilter::Router)) {
        Some(p) if p + 1 == chain.len() => Ok(chain),
        Some(p) => Err((
            format!("http_filters[{p}]"),
            "the router must be the last HTTP filter".into(),
        )),
        None => Err((
            "http_filters".into(),
            "the last HTTP filter must be envoy.filters.http.router".into(),
        )),
    }
}

/// The route a request matched, as the filters see it.
#[derive(Debug, Clone, Copy)]
pub struct RouteLevels<'a> {
    pub routes: &'a RouteConfig,
    pub vhost: &'a VirtualHost,
    pub route: &'a Route,
    /// The weighted cluster picked for this request, if the route splits traffic.
    pub weighted: Option<&'a WeightedCluster>,
}

impl<'a> RouteLevels<'a> {
    /// `filter`'s per-filter entries, most specific first.
    fn overrides(self, filter: &'a str) -> impl Iterator<Item = &'a FilterOverride> + Clone {
        let levels: [Option<&'a PerFilterConfig>; 4] = [
            self.weighted.map(|w| &w.per_filter_config),
            Some(&self.route.per_filter_config),
            Some(&self.vhost.per_filter_config),
            Some(&self.routes.per_filter_config),
        ];
        levels
            .into_iter()
            .flatten()
            .filter_map(move |c| c.get(filter))
    }
}

/// The most specific per-filter config of `filter` that `pick` accepts (switches and configs of
/// other types are skipped, as Envoy's `mostSpecificPerFilterConfig` does).
fn most_specific<'a, T>(
    route: Option<RouteLevels<'a>>,
    filter: &'a str,
    pick: impl Fn(&'a FilterOverride) -> Option<&'a T>,
) -> Option<&'a T> {
    route.and_then(|r| r.overrides(filter).find_map(pick))
}

/// Whether a filter runs for this request: the most specific per-filter entry decides (any
/// config enables, a `FilterConfig { disabled: true }` disables), else the chain's `disabled`.
fn filter_enabled(route: Option<RouteLevels<'_>>, name: &str, disabled_in_chain: bool) -> bool {
    match route.and_then(|r| r.overrides(name).next()) {
        Some(FilterOverride::Switch { disabled }) => !disabled,
        Some(_) => true,
        None => !disabled_in_chain,
    }
}

/// What the request-side filters leave on the response, whatever produces it (the upstream, a
/// later filter's local reply or the router's).
#[derive(Debug, Default)]
pub struct ResponseDecorations {
    cors: Option<CorsResponseHeaders>,
    x_ratelimit: Vec<XRateLimit>,
}

impl ResponseDecorations {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for x in &self.x_ratelimit {
            x.apply(headers);
        }
        if let Some(cors) = &self.cors {
            cors.apply(headers);
        }
    }
}

/// A filter answered the request itself.
pub struct FilterReply {
    pub response: Response<Body>,
    /// Envoy's response flag for the access log (`FI`, `RL`, or empty).
    pub flag: &'static str,
    pub details: Cow<'static, str>,
    /// Sent as Envoy's `sendLocalReply`, so the route's response header mutations apply. A CORS
    /// preflight is encoded directly instead and gets none.
    pub local_reply: bool,
}

/// `http.<stat_prefix>.fault.*` and `.cors.*`, present when the chain has those filters.
#[derive(Debug, Default)]
pub struct FilterStats {
    pub fault: Option<FaultStats>,
    pub cors: Option<CorsStats>,
    /// `http.<stat_prefix>.rbac.*`, by the RBAC filters' (rules, shadow) stat prefixes.
    pub rbac: ChainRbacStats,
}

impl FilterStats {
    pub fn new(store: &Store, stat_prefix: &str, chain: &[HttpFilter]) -> Self {
        let has = |f: fn(&HttpFilter) -> bool| chain.iter().any(f);
        FilterStats {
            fault: has(|f| matches!(f, HttpFilter::Fault { .. }))
                .then(|| FaultStats::new(store, stat_prefix)),
            cors: has(|f| matches!(f, HttpFilter::Cors { .. }))
                .then(|| CorsStats::new(store, stat_prefix)),
            rbac: rbac::chain_stats(
                store,
                stat_prefix,
                chain.iter().filter_map(|f| match f {
                    HttpFilter::Rbac { config, .. } => Some(&**config),
                    _ => None,
                }),
            ),
        }
    }
}

/// The request facts the filters read.
#[derive(Debug)]
pub struct FilterRequest<'a> {
    pub method: &'a Method,
    /// As routing saw them: scheme, authority and (normalised) path with query.
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    /// The cluster the route chose (for weighted clusters, the picked one).
    pub cluster: Option<&'a str>,
    pub grpc: bool,
}

/// Runs the decoding side of the chain for one request, in configuration order. Returns the
/// reply of a filter that answered (the chain stops there); injected delays are waited out
/// here. `flags` collects response flags of faults that did not end the request (`DI`).
pub async fn run_request_filters(
    ctx: &ConnectionContext,
    route: Option<RouteLevels<'_>>,
    request: &FilterRequest<'_>,
    headers: &mut HeaderMap,
    decorations: &mut ResponseDecorations,
    flags: &mut &'static str,
) -> Result<(), FilterReply> {
    for filter in &ctx.hcm.http_filters {
        match filter {
            HttpFilter::Router | HttpFilter::NoOp { .. } => {}
            HttpFilter::DenyAll { name } => {
                tracing::debug!(filter = %name, "denying request: filter not enforceable");
                return Err(FilterReply {
                    response: local_reply::reply(
                        http::StatusCode::FORBIDDEN,
                        "RBAC: access denied",
                        request.grpc,
                    ),
                    flag: "RBAC",
                    details: "rbac_access_denied_matched_policy[none]".into(),
                    local_reply: true,
                });
            }
            HttpFilter::Rbac {
                name,
                config,
                disabled,
            } => {
                if !filter_enabled(route, name, *disabled) {
                    continue;
                }
                // Per-route rules count into the filter's own counters, as in Envoy.
                let stats = ctx.stats.filters.rbac.get(&(
                    config.rules_stat_prefix.clone(),
                    config.shadow_rules_stat_prefix.clone(),
                ));
                let config = most_specific(route, name, |o| match o {
                    FilterOverride::Rbac(c) => Some(c),
                    _ => None,
                })
                .unwrap_or(config);
                let view = RequestView {
                    method: request.method,
                    scheme: request.scheme,
                    authority: request.authority,
                    path: request.path,
                    headers,
                };
                if let Err(details) = config.check(stats, &rbac::subject(ctx, view)) {
                    tracing::debug!(filter = %name, %details, "request denied by RBAC");
                    return Err(FilterReply {
                        response: local_reply::reply(
                            http::StatusCode::FORBIDDEN,
                            rbac::DENIED_BODY,
                            request.grpc,
                        ),
                        flag: "",
                        details: details.into(),
                        local_reply: true,
                    });
                }
            }
            HttpFilter::Cors { name, disabled } => {
                let (Some(route), Some(stats)) = (route, &ctx.stats.filters.cors) else {
                    continue;
                };
                if !filter_enabled(Some(route), name, *disabled) {
                    continue;
                }
                let policies = route.overrides(name).filter_map(|o| match o {
                    FilterOverride::Cors(p) => Some(&**p),
                    _ => None,
                });
                let Some(cors) = Cors::new(policies) else {
                    continue;
                };
                let verdict = {
                    let mut rng = ctx.worker.rng.borrow_mut();
                    cors.on_request(stats, request.method, headers, &mut *rng)
                };
                match verdict {
                    CorsVerdict::Preflight(response) => {
                        return Err(FilterReply {
                            response: response.map(|()| local_reply::empty()),
                            flag: "",
                            details: super::cors::PREFLIGHT_DETAILS.into(),
                            local_reply: false,
                        });
                    }
                    CorsVerdict::Forward(decoration) => decorations.cors = decoration,
                }
            }
            HttpFilter::Fault {
                name,
                config,
                disabled,
            } => {
                let Some(stats) = &ctx.stats.filters.fault else {
                    continue;
                };
                if !filter_enabled(route, name, *disabled) {
                    continue;
                }
                let config = most_specific(route, name, |o| match o {
                    FilterOverride::Fault(c) => Some(c),
                    _ => None,
                })
                .unwrap_or(config);
                let decision = {
                    let mut rng = ctx.worker.rng.borrow_mut();
                    config.decide(stats, headers, request.cluster, &mut *rng)
                };
                if decision.is_empty() {
                    continue;
                }
                if let Some(delay) = decision.delay {
                    tokio::time::sleep(delay).await;
                }
                if let Some(abort) = &decision.abort {
                    return Err(FilterReply {
                        response: abort.response(request.grpc),
                        flag: decision.response_flags(),
                        details: super::fault::ABORT_DETAILS.into(),
                        local_reply: true,
                    });
                }
                *flags = decision.response_flags();
            }
            HttpFilter::LocalRateLimit {
                name,
                config,
                disabled,
            } => {
                if !filter_enabled(route, name, *disabled) {
                    continue;
                }
                let config = most_specific(route, name, |o| match o {
                    FilterOverride::LocalRateLimit(c) => Some(c),
                    _ => None,
                })
                .unwrap_or(config);
                let decision = {
                    let mut rng = ctx.worker.rng.borrow_mut();
                    config.check(
                        &ctx.worker.shared.store,
                        std::time::Instant::now(),
                        &mut *rng,
                        headers,
                        &ctx.rate_limit_buckets,
                    )
                };
                match decision {
                    RateDecision::Allowed { x_ratelimit }
                    | RateDecision::LimitedNotEnforced { x_ratelimit } => {
                        decorations.x_ratelimit.extend(x_ratelimit);
                    }
                    RateDecision::Limited(reply) => {
                        return Err(FilterReply {
                            response: reply.response(request.grpc),
                            flag: local_ratelimit::LIMITED_FLAG,
                            details: local_ratelimit::LIMITED_DETAILS.into(),
                            local_reply: true,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: &str, type_url: Option<&str>) -> hcm::HttpFilter {
        hcm::HttpFilter {
            name: name.into(),
            config_type: type_url.map(|t| {
                hcm::http_filter::ConfigType::TypedConfig(Any {
                    type_url: t.into(),
                    value: vec![],
                })
            }),
            ..Default::default()
        }
    }

    #[test]
    fn router_must_be_last() {
        let chain = [
            filter("r", Some(ROUTER_TYPE)),
            filter("f", Some(FAULT_TYPE)),
        ];
        let (field, reason) = parse_chain(&chain).unwrap_err();
        assert_eq!(field, "http_filters[0]");
        assert!(reason.contains("last"), "{reason}");
        assert!(parse_chain(&[]).is_err());
    }

    #[test]
    fn istio_telemetry_is_accepted_and_security_fails_closed() {
        let chain = [
            filter("istio.metadata_exchange", Some(NO_OP_TYPES[1])),
            filter("envoy.filters.http.rbac", Some(RBAC_TYPE)),
            filter("envoy.filters.http.jwt_authn", Some(FAIL_CLOSED_TYPES[0])),
            filter("istio.stats", Some(NO_OP_TYPES[0])),
            filter("envoy.filters.http.router", Some(ROUTER_TYPE)),
        ];
        let parsed = parse_chain(&chain).expect("accepted");
        assert!(matches!(parsed[0], HttpFilter::NoOp { .. }));
        assert!(matches!(parsed[1], HttpFilter::Rbac { .. }));
        assert!(matches!(parsed[2], HttpFilter::DenyAll { .. }));
        assert!(matches!(parsed[4], HttpFilter::Router));
    }

    #[test]
    fn unknown_filter_is_named_unless_optional() {
        let chain = [
            filter("acme.magic", Some("type.googleapis.com/acme.Magic")),
            filter("envoy.filters.http.router", None),
        ];
        let (field, reason) = parse_chain(&chain).unwrap_err();
        assert_eq!(field, "http_filters[0]");
        assert!(reason.contains("acme.magic"), "{reason}");
        let mut optional = chain.clone();
        optional[0].is_optional = true;
        assert_eq!(parse_chain(&optional).expect("skipped").len(), 1);
    }
}
