//! `envoy.filters.http.cors`: answers CORS preflights locally and marks cross-origin responses.
//!
//! Policies come from the route, never from the filter's own config (`Cors` is empty): a
//! `CorsPolicy` in `typed_per_filter_config` (route, virtual host, route configuration) or, only
//! when none of those exists, the deprecated `cors` field of the route action and virtual host.
//! As in Envoy, the policies that apply to a request are merged field by field, most specific
//! first: each setting comes from the first policy that sets it ([`Cors::new`]).
//!
//! Behaviour, checked against Envoy 1.40:
//! - no `Origin` (or an empty one): nothing happens;
//! - the origin is checked against `allow_origin_string_match` (a matcher that matches the
//!   literal `*` allows every origin) and counted in `cors.origin_valid` / `origin_invalid`;
//! - `OPTIONS` with a non-empty `Access-Control-Request-Method` is a preflight: answered here with
//!   200 and no body, unless the origin is not allowed and `forward_not_matching_preflights`
//!   (default true) sends it upstream untouched;
//! - any other request from an allowed origin gets `access-control-allow-origin` (the request's
//!   origin, never `*`), `-allow-credentials` and `-expose-headers` on its response, local
//!   replies included. No `Vary: Origin` is added.
//! - `filter_enabled` (default 100%) and `shadow_enabled` (default off) are drawn once per
//!   request; shadow-only still counts the origin stats but changes nothing.

use crate::config::fraction::Fraction;
use crate::config::matcher::StringMatcher;
use crate::stats::{Counter, Store};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use rand::Rng;
use std::sync::Arc;
use xds_client::any;
use xds_client::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use xds_client::pb::envoy::config::route::v3 as route;
use xds_client::pb::envoy::extensions::filters::http::cors::v3 as proto;
use xds_client::pb::envoy::r#type::matcher::v3 as matcher;
use xds_client::pb::google::protobuf::{Any, BoolValue};

/// Response-code details of a preflight answered locally.
pub const PREFLIGHT_DETAILS: &str = "cors_response";

const ACCESS_CONTROL_REQUEST_METHOD: HeaderName =
    HeaderName::from_static("access-control-request-method");
const ACCESS_CONTROL_REQUEST_HEADERS: HeaderName =
    HeaderName::from_static("access-control-request-headers");
const ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
const ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// One parsed CORS policy (either proto shape). Unset fields defer to less specific policies.
#[derive(Debug)]
pub struct CorsPolicy {
    allow_origins: Vec<StringMatcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: Option<bool>,
    allow_private_network_access: Option<bool>,
    forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled`, 100% when unset.
    enabled: Fraction,
    /// `shadow_enabled`, off when unset.
    shadow: Option<Fraction>,
}

/// The fields both proto shapes share.
struct Fields<'a> {
    allow_origin_string_match: &'a [matcher::StringMatcher],
    allow_methods: &'a str,
    allow_headers: &'a str,
    expose_headers: &'a str,
    max_age: &'a str,
    allow_credentials: Option<&'a BoolValue>,
    filter_enabled: Option<&'a RuntimeFractionalPercent>,
    shadow_enabled: Option<&'a RuntimeFractionalPercent>,
    allow_private_network_access: Option<&'a BoolValue>,
    forward_not_matching_preflights: Option<&'a BoolValue>,
}

impl TryFrom<&proto::CorsPolicy> for CorsPolicy {
    type Error = String;

    /// The `typed_per_filter_config` shape (`envoy.extensions.filters.http.cors.v3.CorsPolicy`).
    fn try_from(p: &proto::CorsPolicy) -> Result<Self, String> {
        CorsPolicy::from_fields(Fields {
            allow_origin_string_match: &p.allow_origin_string_match,
            allow_methods: &p.allow_methods,
            allow_headers: &p.allow_headers,
            expose_headers: &p.expose_headers,
            max_age: &p.max_age,
            allow_credentials: p.allow_credentials.as_ref(),
            filter_enabled: p.filter_enabled.as_ref(),
            shadow_enabled: p.shadow_enabled.as_ref(),
            allow_private_network_access: p.allow_private_network_access.as_ref(),
            forward_not_matching_preflights: p.forward_not_matching_preflights.as_ref(),
        })
    }
}

impl TryFrom<&route::CorsPolicy> for CorsPolicy {
    type Error = String;

    /// The deprecated `VirtualHost.cors` / `RouteAction.cors` shape.
    fn try_from(p: &route::CorsPolicy) -> Result<Self, String> {
        let filter_enabled = p.enabled_specifier.as_ref().map(|s| match s {
            route::cors_policy::EnabledSpecifier::FilterEnabled(f) => f,
        });
        CorsPolicy::from_fields(Fields {
            allow_origin_string_match: &p.allow_origin_string_match,
            allow_methods: &p.allow_methods,
            allow_headers: &p.allow_headers,
            expose_headers: &p.expose_headers,
            max_age: &p.max_age,
            allow_credentials: p.allow_credentials.as_ref(),
            filter_enabled,
            shadow_enabled: p.shadow_enabled.as_ref(),
            allow_private_network_access: p.allow_private_network_access.as_ref(),
            forward_not_matching_preflights: p.forward_not_matching_preflights.as_ref(),
        })
    }
}

impl CorsPolicy {
    /// Parses a per-filter-config `CorsPolicy` packed in an `Any`.
    pub fn from_any(any: &Any) -> Result<Arc<CorsPolicy>, String> {
        let p: proto::CorsPolicy = any::unpack(any).map_err(|e| e.to_string())?;
        CorsPolicy::try_from(&p).map(Arc::new)
    }

    /// Parses the deprecated route-level shape (`VirtualHost.cors`, `RouteAction.cors`).
    pub fn from_route_cors(p: &route::CorsPolicy) -> Result<Arc<CorsPolicy>, String> {
        CorsPolicy::try_from(p).map(Arc::new)
    }

    fn from_fields(f: Fields<'_>) -> Result<Self, String> {
        let allow_origins = f
            .allow_origin_string_match
            .iter()
            .enumerate()
            .map(|(i, m)| {
                StringMatcher::try_from(m)
                    .map_err(|e| e.relative_to(&format!("allow_origin_string_match[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let header = |value: &str, field: &str| -> Result<Option<HeaderValue>, String> {
            if value.is_empty() {
                return Ok(None);
            }
            HeaderValue::from_str(value)
                .map(Some)
                .map_err(|_| format!("{field}: {value:?} is not a valid header value"))
        };
        Ok(CorsPolicy {
            allow_origins,
            allow_methods: header(f.allow_methods, "allow_methods")?,
            allow_headers: header(f.allow_headers, "allow_headers")?,
            expose_headers: header(f.expose_headers, "expose_headers")?,
            max_age: header(f.max_age, "max_age")?,
            allow_credentials: f.allow_credentials.map(|b| b.value),
            allow_private_network_access: f.allow_private_network_access.map(|b| b.value),
            forward_not_matching_preflights: f.forward_not_matching_preflights.map(|b| b.value),
            enabled: match f.filter_enabled {
                Some(r) => {
                    Fraction::from_runtime(r).map_err(|e| e.relative_to("filter_enabled"))?
                }
                None => Fraction::ALL,
            },
            shadow: f
                .shadow_enabled
                .map(|r| Fraction::from_runtime(r).map_err(|e| e.relative_to("shadow_enabled")))
                .transpose()?,
        })
    }
}

/// The effective policy for one request: the applicable policies merged, most specific first.
#[derive(Debug, Clone, Copy)]
pub struct Cors<'a> {
    allow_origins: &'a [StringMatcher],
    allow_methods: Option<&'a HeaderValue>,
    allow_headers: Option<&'a HeaderValue>,
    expose_headers: Option<&'a HeaderValue>,
    max_age: Option<&'a HeaderValue>,
    allow_credentials: bool,
    allow_private_network_access: bool,
    forward_not_matching_preflights: bool,
    enabled: Fraction,
    shadow: Option<Fraction>,
}

impl<'a> Cors<'a> {
    /// Merges `policies`, most specific first (weighted cluster, route, virtual host, route
    /// configuration). `None` when there is no policy: the filter does nothing.
    pub fn new<I>(policies: I) -> Option<Cors<'a>>
    where
        I: IntoIterator<Item = &'a CorsPolicy>,
        I::IntoIter: Clone,
    {
        let policies = policies.into_iter();
        let first = policies.clone().next()?;
        let pick =
            |get: fn(&'a CorsPolicy) -> Option<&'a HeaderValue>| policies.clone().find_map(get);
        let flag = |get: fn(&CorsPolicy) -> Option<bool>| policies.clone().find_map(get);
        Some(Cors {
            allow_origins: policies
                .clone()
                .map(|p| p.allow_origins.as_slice())
                .find(|o| !o.is_empty())
                .unwrap_or_default(),
            allow_methods: pick(|p| p.allow_methods.as_ref()),
            allow_headers: pick(|p| p.allow_headers.as_ref()),
            expose_headers: pick(|p| p.expose_headers.as_ref()),
            max_age: pick(|p| p.max_age.as_ref()),
            allow_credentials: flag(|p| p.allow_credentials).unwrap_or(false),
            allow_private_network_access: flag(|p| p.allow_private_network_access).unwrap_or(false),
            forward_not_matching_preflights: flag(|p| p.forward_not_matching_preflights)
                .unwrap_or(true),
            // Envoy reads both switches from the most specific policy only.
            enabled: first.enabled,
            shadow: first.shadow,
        })
    }

    /// Runs the filter on a request's headers: answers a preflight, or says what the response
    /// needs. Counts `cors.origin_valid` / `origin_invalid`.
    pub fn on_request(
        &self,
        stats: &CorsStats,
        method: &Method,
        headers: &HeaderMap,
        rng: &mut impl Rng,
    ) -> CorsVerdict {
        let enabled = self.enabled.draw(rng);
        let shadow = self.shadow.is_some_and(|s| s.draw(rng));
        if !enabled && !shadow {
            return CorsVerdict::Forward(None);
        }
        let Some(origin) = headers.get(http::header::ORIGIN).filter(|o| !o.is_empty()) else {
            return CorsVerdict::Forward(None);
        };
        let allowed = self.origin_allowed(origin);
        if allowed {
            stats.origin_valid.inc();
        } else {
            stats.origin_invalid.inc();
        }
        if !enabled {
            return CorsVerdict::Forward(None);
        }
        let decoration = allowed.then(|| CorsResponseHeaders {
            allow_origin: origin.clone(),
            allow_credentials: self.allow_credentials,
            expose_headers: self.expose_headers.cloned(),
        });
        let request_method = headers
            .get(&ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty());
        let Some(request_method) = request_method.filter(|_| *method == Method::OPTIONS) else {
            return CorsVerdict::Forward(decoration);
        };
        if !allowed && self.forward_not_matching_preflights {
            return CorsVerdict::Forward(None);
        }
        CorsVerdict::Preflight(self.preflight(origin, allowed, request_method, headers, decoration))
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        self.allow_origins
            .iter()
            .any(|m| m.matches("*") || m.matches(&origin))
    }

    /// Envoy's preflight reply: 200, no body, then its own response pass (which adds
    /// `-expose-headers` when the origin is allowed).
    fn preflight(
        &self,
        origin: &HeaderValue,
        allowed: bool,
        request_method: &HeaderValue,
        request: &HeaderMap,
        decoration: Option<CorsResponseHeaders>,
    ) -> Response<()> {
        use http::header;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        if allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.allow_credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(methods) = self.allow_methods {
            let value = if methods == "*" {
                request_method.clone()
            } else {
                methods.clone()
            };
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
        if let Some(allow) = self.allow_headers {
            let value = if allow == "*" {
                // Echoed, even when the request listed none (Envoy then sends it empty).
                request
                    .get(&ACCESS_CONTROL_REQUEST_HEADERS)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static(""))
            } else {
                allow.clone()
            };
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        if let Some(max_age) = self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        if self.allow_private_network_access
            && request
                .get(&ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK)
                .is_some_and(|v| v == "true")
        {
            headers.insert(ACCESS_CONTROL_ALLOW_PRIVATE_NETWORK, TRUE);
        }
        if let Some(d) = decoration {
            d.apply(headers);
        }
        response
    }
}

/// What the CORS filter decided for one request.
#[derive(Debug)]
pub enum CorsVerdict {
    /// A preflight answered here: send this (status 200, these headers, empty body; details
    /// [`PREFLIGHT_DETAILS`], no response flag) and do not forward.
    Preflight(Response<()>),
    /// Go on. `Some`: apply these to the response headers, whatever produced the response
    /// (upstream or a local reply from a later filter or the router).
    Forward(Option<CorsResponseHeaders>),
}

/// The headers a response to an allowed cross-origin request carries (owned, so they can be
/// kept across the upstream call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsResponseHeaders {
    allow_origin: HeaderValue,
    allow_credentials: bool,
    expose_headers: Option<HeaderValue>,
}

impl CorsResponseHeaders {
    /// Sets (replacing any upstream value) `access-control-allow-origin`, and when configured
    /// `-allow-credentials: true` and `-expose-headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        use http::header;
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin.clone(),
        );
        if self.allow_credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// `http.<stat_prefix>.cors.*`, one set per connection manager.
#[derive(Debug)]
pub struct CorsStats {
    pub origin_valid: Counter,
    pub origin_invalid: Counter,
}

impl CorsStats {
    /// `stat_prefix` is the connection manager's.
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        CorsStats {
            origin_valid: store.counter(&format!("http.{stat_prefix}.cors.origin_valid")),
            origin_invalid: store.counter(&format!("http.{stat_prefix}.cors.origin_invalid")),
        }
    }
}

#[cfg(test)]
mod tests;
