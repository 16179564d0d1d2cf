//! HTTP routing: `envoy.config.route.v3.RouteConfiguration` as validated domain types, and the
//! lookup that picks a virtual host and a route for a request.
//!
//! The conversion applies Envoy's defaults (15 s route timeout, one retry, 25 ms back-off, 301
//! redirects...) and rejects what we do not implement when ignoring it would change where or how
//! traffic goes (VHDS, cluster specifier plugins, filter actions, matcher trees, ...). Purely
//! informational fields (decorator, metadata, tracing, stat prefixes) are accepted and dropped;
//! `typed_per_filter_config` entries are parsed here, by type, into the HTTP filters' own configs.
//!
//! Lookup follows Envoy exactly, with indexes that never change the answer:
//! - virtual host: exact domain (hash map), then the longest `*suffix` wildcard, then the longest
//!   `prefix*` wildcard (each bucketed by length, one hash probe per length), then `*`;
//! - route: the first route, in configuration order, whose match succeeds. Large tables are
//!   indexed by first path segment ([`index`]); candidates are still tried in order.

mod action;
mod header_ops;
mod index;
mod matching;
mod redirect;
mod retry;

#[cfg(test)]
mod tests;

pub use super::matcher::RequestView;
pub use action::{
    Action, ClusterSpecifier, ForwardAction, HashPolicy, HostRewrite, MirrorPolicy, RegexRewrite,
    Upgrade, WeightedCluster, WeightedClusters,
};
pub use header_ops::{AppendAction, HeaderAdd, HeaderOps};
pub use matching::{Fraction, PathMatch, QueryParameterMatcher, QueryRule, RouteMatch};
pub use redirect::{PathRedirect, Redirect};
pub use retry::{RetryOn, RetryPolicy};

use super::ConfigError;
use crate::http::filter::FilterOverride;
use index::RouteIndex;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use xds_client::pb::envoy::config::route::v3 as proto;
use xds_client::pb::google::protobuf::Any;

/// `typed_per_filter_config` by filter name, each entry parsed by its type.
#[derive(Debug, Clone, Default)]
pub struct PerFilterConfig(pub BTreeMap<String, FilterOverride>);

impl PerFilterConfig {
    fn from_proto(map: &HashMap<String, Any>) -> Result<Self, ConfigError> {
        map.iter()
            .map(|(name, value)| {
                FilterOverride::from_any(value)
                    .map(|parsed| (name.clone(), parsed))
                    .map_err(|e| err(format!("typed_per_filter_config[{name:?}]"), e))
            })
            .collect::<Result<_, _>>()
            .map(PerFilterConfig)
    }

    pub fn get(&self, filter: &str) -> Option<&FilterOverride> {
        self.0.get(filter)
    }
}

/// A validated route configuration.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// Route-configuration-level header mutations.
    pub headers: HeaderOps,
    /// Match virtual hosts on the authority without its port.
    pub ignore_port_in_host_matching: bool,
    /// Header mutations apply route-config, then virtual host, then route (so the route's win)
    /// instead of the reverse; see [`RouteConfig::header_ops`].
    pub most_specific_header_mutations_wins: bool,
    /// Headers removed from requests that do not come from inside the mesh (the HCM decides).
    pub internal_only_headers: Vec<http::HeaderName>,
    /// Route-configuration-level `typed_per_filter_config`, below virtual hosts and routes.
    pub per_filter_config: PerFilterConfig,
    domains: DomainIndex,
}

/// A validated virtual host.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    pub name: String,
    /// Lowercased, as configured (wildcards included).
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub headers: HeaderOps,
    /// Used by routes that have no retry policy of their own.
    pub retry_policy: Option<RetryPolicy>,
    pub per_filter_config: PerFilterConfig,
    /// Send `x-envoy-attempt-count` upstream.
    pub include_request_attempt_count: bool,
    /// Send `x-envoy-attempt-count` downstream.
    pub include_attempt_count_in_response: bool,
    index: Option<RouteIndex>,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub headers: HeaderOps,
    pub per_filter_config: PerFilterConfig,
}

impl RouteConfig {
    /// Envoy's virtual host selection for an authority (`Host`/`:authority` as received).
    /// `None` means no virtual host matches: the caller answers 404 with flag NR.
    pub fn find_virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        self.find_virtual_host_with(authority, false)
    }

    /// Like [`Self::find_virtual_host`], stripping the port first when `strip_port` is set (the
    /// HCM's `strip_any_host_port`, or `strip_matching_host_port` when the port is the
    /// listener's) or when the configuration says `ignore_port_in_host_matching`.
    pub fn find_virtual_host_with(
        &self,
        authority: &str,
        strip_port: bool,
    ) -> Option<&VirtualHost> {
        let host = if strip_port || self.ignore_port_in_host_matching {
            strip_host_port(authority)
        } else {
            authority
        };
        self.domains
            .find(host)
            .and_then(|i| self.virtual_hosts.get(i))
    }

    /// The virtual host for the request's authority, then its first matching route. `random`
    /// drives `runtime_fraction` matches (and should be the same value the caller uses for
    /// weighted clusters, as Envoy does).
    pub fn route(&self, req: &RequestView<'_>, random: u64) -> Option<(&VirtualHost, &Route)> {
        let vhost = self.find_virtual_host(req.authority)?;
        Some((vhost, vhost.find_route(req, random)?))
    }

    /// The header mutations for a route, in the order to apply them (the later ones win). With
    /// weighted clusters, the picked cluster's own `headers` go before these, as in Envoy.
    /// Each [`HeaderOps`] carries both sides; the order is the same for requests and responses.
    pub fn header_ops<'a>(
        &'a self,
        vhost: &'a VirtualHost,
        route: &'a Route,
    ) -> [&'a HeaderOps; 3] {
        self.ordered(&self.headers, &vhost.headers, &route.headers)
    }

    fn ordered<'a>(
        &self,
        config: &'a HeaderOps,
        vhost: &'a HeaderOps,
        route: &'a HeaderOps,
    ) -> [&'a HeaderOps; 3] {
        if self.most_specific_header_mutations_wins {
            [config, vhost, route]
        } else {
            [route, vhost, config]
        }
    }
}

impl VirtualHost {
    /// The first route, in configuration order, that matches the request.
    pub fn find_route(&self, req: &RequestView<'_>, random: u64) -> Option<&Route> {
        match &self.index {
            Some(index) => index.find(&self.routes, req, random),
            None => self.find_route_linear(req, random),
        }
    }

    /// Envoy's scan, and the reference the index must agree with.
    fn find_route_linear(&self, req: &RequestView<'_>, random: u64) -> Option<&Route> {
        let first = self.routes.first()?;
        let cut = matching::CutPath::new(req.path, first.matcher.ignore_path_parameters);
        self.routes
            .iter()
            .find(|r| r.matcher.matches_cut(req, cut, random))
    }
}

/// The authority without its port: `a.b:80` -> `a.b`, `[::1]:80` -> `[::1]`, `[::1]` unchanged.
pub fn strip_host_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if authority.rfind(']').is_none_or(|bracket| bracket < colon) => {
            &authority[..colon]
        }
        _ => authority,
    }
}

/// Virtual hosts by domain, shaped for Envoy's lookup order.
#[derive(Debug, Clone, Default)]
struct DomainIndex {
    exact: HashMap<String, usize>,
    /// `*.foo.com` stored as `.foo.com`, bucketed by that length, longest first.
    suffixes: Vec<(usize, HashMap<String, usize>)>,
    /// `foo.*` stored as `foo.`, bucketed by length, longest first.
    prefixes: Vec<(usize, HashMap<String, usize>)>,
    default: Option<usize>,
}

impl DomainIndex {
    /// Adds a lowercased domain; `Err` when another virtual host (or this one) already has it.
    fn insert(&mut self, domain: &str, vhost: usize) -> Result<(), String> {
        fn bucket(
            buckets: &mut Vec<(usize, HashMap<String, usize>)>,
            key: &str,
            vhost: usize,
        ) -> bool {
            let at = match buckets.binary_search_by(|(len, _)| key.len().cmp(len)) {
                Ok(at) => at,
                Err(at) => {
                    buckets.insert(at, (key.len(), HashMap::new()));
                    at
                }
            };
            buckets[at].1.insert(key.to_string(), vhost).is_none()
        }
        let fresh = if domain == "*" {
            self.default.replace(vhost).is_none()
        } else if let Some(suffix) = domain.strip_prefix('*') {
            bucket(&mut self.suffixes, suffix, vhost)
        } else if let Some(prefix) = domain.strip_suffix('*') {
            bucket(&mut self.prefixes, prefix, vhost)
        } else {
            self.exact.insert(domain.to_string(), vhost).is_none()
        };
        if fresh {
            Ok(())
        } else if domain == "*" {
            Err("only one virtual host may have the domain \"*\"".into())
        } else {
            Err(format!("duplicate domain {domain:?}"))
        }
    }

    fn find(&self, host: &str) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.default;
        }
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let host = host.as_ref();
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        // A wildcard must match at least one character, hence `len < host.len()`.
        let suffix = self.suffixes.iter().find_map(|(len, map)| {
            let tail = host.get(host.len().checked_sub(*len).filter(|&at| at > 0)?..)?;
            map.get(tail).copied()
        });
        let prefix = || {
            self.prefixes.iter().find_map(|(len, map)| {
                let head = host.get(..*len).filter(|_| *len < host.len())?;
                map.get(head).copied()
            })
        };
        suffix.or_else(prefix).or(self.default)
    }
}

/// What a virtual host inherits from the route configuration while it is converted.
struct Inherited<'a> {
    mirrors: &'a [MirrorPolicy],
    ignore_path_parameters: bool,
    max_direct_response_body: usize,
}

const DEFAULT_MAX_DIRECT_RESPONSE_BODY: u32 = 4096;

impl TryFrom<&proto::RouteConfiguration> for RouteConfig {
    type Error = ConfigError;

    fn try_from(c: &proto::RouteConfiguration) -> Result<Self, ConfigError> {
        convert_config(c).map_err(|mut e| {
            e.resource = format!("route_configuration {:?}", c.name);
            e
        })
    }
}

/// Errors from here down carry an empty resource; `try_from` names it.
fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::new("", field, reason)
}

fn convert_config(c: &proto::RouteConfiguration) -> Result<RouteConfig, ConfigError> {
    if c.vhds.is_some() {
        return Err(err(
            "vhds",
            "VHDS (on-demand virtual hosts) is not supported",
        ));
    }
    if !c.cluster_specifier_plugins.is_empty() {
        return Err(err(
            "cluster_specifier_plugins",
            "cluster specifier plugins are not supported",
        ));
    }
    if !c.route_specifiers.is_empty() {
        return Err(err(
            "route_specifiers",
            "route specifiers are not supported",
        ));
    }
    if !c.vhost_header.is_empty() {
        return Err(err("vhost_header", "only :authority selects virtual hosts"));
    }
    let mirrors = action::mirror_policies(&c.request_mirror_policies, "request_mirror_policies")?;
    let inherited = Inherited {
        mirrors: &mirrors,
        ignore_path_parameters: c.ignore_path_parameters_in_path_matching,
        max_direct_response_body: c
            .max_direct_response_body_size_bytes
            .as_ref()
            .map_or(DEFAULT_MAX_DIRECT_RESPONSE_BODY, |v| v.value)
            as usize,
    };
    let mut domains = DomainIndex::default();
    let mut virtual_hosts = Vec::with_capacity(c.virtual_hosts.len());
    for (i, vh) in c.virtual_hosts.iter().enumerate() {
        let field = format!("virtual_hosts[{i}]");
        let vhost = convert_virtual_host(vh, &inherited).map_err(|e| e.within(&field))?;
        for (j, domain) in vhost.domains.iter().enumerate() {
            domains
                .insert(domain, i)
                .map_err(|r| err(format!("{field}.domains[{j}]"), r))?;
        }
        virtual_hosts.push(vhost);
    }
    let internal_only_headers = c
        .internal_only_headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| err(format!("internal_only_headers[{i}]"), "invalid header name"))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteConfig {
        name: c.name.clone(),
        virtual_hosts,
        headers: HeaderOps::from_proto(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
        )?,
        ignore_port_in_host_matching: c.ignore_port_in_host_matching,
        most_specific_header_mutations_wins: c.most_specific_header_mutations_wins,
        internal_only_headers,
        per_filter_config: PerFilterConfig::from_proto(&c.typed_per_filter_config)?,
        domains,
    })
}

fn convert_virtual_host(
    vh: &proto::VirtualHost,
    inherited: &Inherited<'_>,
) -> Result<VirtualHost, ConfigError> {
    check_virtual_host(vh)?;
    let retry_policy = vh
        .retry_policy
        .as_ref()
        .map(RetryPolicy::try_from)
        .transpose()
        .map_err(|e| e.within("retry_policy"))?;
    let vhost_mirrors =
        action::mirror_policies(&vh.request_mirror_policies, "request_mirror_policies")?;
    let inherited = Inherited {
        mirrors: if vhost_mirrors.is_empty() {
            inherited.mirrors
        } else {
            &vhost_mirrors
        },
        ..*inherited
    };
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| convert_route(r, &inherited).map_err(|e| e.within(&format!("routes[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        index: RouteIndex::build(&routes, inherited.ignore_path_parameters),
        routes,
        headers: HeaderOps::from_proto(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )?,
        retry_policy,
        per_filter_config: PerFilterConfig::from_proto(&vh.typed_per_filter_config)?,
        include_request_attempt_count: vh.include_request_attempt_count,
        include_attempt_count_in_response: vh.include_attempt_count_in_response,
    })
}

/// Checks what a virtual host must have, and rejects the features we do not implement that
/// would change traffic if ignored.
// `cors` is deprecated in favour of the CORS filter's per-route config; we still check for it.
#[allow(deprecated)]
fn check_virtual_host(vh: &proto::VirtualHost) -> Result<(), ConfigError> {
    use proto::virtual_host::TlsRequirementType;
    if vh.name.is_empty() {
        return Err(err("name", "must not be empty"));
    }
    if vh.domains.is_empty() {
        return Err(err("domains", "at least one domain is required"));
    }
    if vh.matcher.is_some() {
        return Err(err(
            "matcher",
            "matcher trees are not supported; use routes",
        ));
    }
    if vh.require_tls != TlsRequirementType::None as i32 {
        return Err(err("require_tls", "TLS redirects are not supported"));
    }
    if vh.cors.is_some() {
        return Err(err(
            "cors",
            "the deprecated cors field is not supported; use typed_per_filter_config",
        ));
    }
    if vh.retry_policy_typed_config.is_some() {
        return Err(err(
            "retry_policy_typed_config",
            "retry policy extensions are not supported",
        ));
    }
    if let Some(h) = &vh.hedge_policy {
        action::check_hedge_policy(h).map_err(|e| e.within("hedge_policy"))?;
    }
    if !vh.route_specifiers.is_empty() {
        return Err(err(
            "route_specifiers",
            "route specifiers are not supported",
        ));
    }
    if !vh.rate_limits.is_empty() {
        tracing::debug!(vhost = %vh.name, "ignoring virtual host rate_limits");
    }
    Ok(())
}

fn convert_route(r: &proto::Route, inherited: &Inherited<'_>) -> Result<Route, ConfigError> {
    use proto::route::Action as A;
    let matcher = r
        .r#match
        .as_ref()
        .ok_or_else(|| err("", "is required"))
        .and_then(|m| RouteMatch::convert(m, inherited.ignore_path_parameters))
        .map_err(|e| e.within("match"))?;
    let action = match &r.action {
        Some(A::Route(ra)) => Action::Forward(
            ForwardAction::convert(ra, inherited.mirrors).map_err(|e| e.within("route"))?,
        ),
        Some(A::Redirect(rd)) => {
            Action::Redirect(Redirect::try_from(rd).map_err(|e| e.within("redirect"))?)
        }
        Some(A::DirectResponse(d)) => {
            action::direct_response(d, inherited.max_direct_response_body)
                .map_err(|e| e.within("direct_response"))?
        }
        Some(A::FilterAction(_)) => {
            return Err(err("filter_action", "filter actions are not supported"));
        }
        Some(A::NonForwardingAction(_)) => {
            return Err(err(
                "non_forwarding_action",
                "non-forwarding actions are not supported",
            ));
        }
        None => {
            return Err(err(
                "action",
                "one of route, redirect or direct_response is required",
            ));
        }
    };
    if !r.route_specifiers.is_empty() {
        return Err(err(
            "route_specifiers",
            "route specifiers are not supported",
        ));
    }
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        headers: HeaderOps::from_proto(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        per_filter_config: PerFilterConfig::from_proto(&r.typed_per_filter_config)?,
    })
}
