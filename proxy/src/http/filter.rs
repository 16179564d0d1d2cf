//! The HCM's `http_filters` chain: which filters Tern runs, which it accepts as no-ops
//! (telemetry that changes no traffic), and which it refuses to skip (security filters fail
//! closed). The router must be last, as in Envoy.

use xds_client::any;
use xds_client::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use xds_client::pb::google::protobuf::Any;

/// One configured HTTP filter.
#[derive(Debug, Clone)]
pub enum HttpFilter {
    /// `envoy.filters.http.router`: the terminal filter.
    Router,
    /// `envoy.filters.http.fault`: its filter-level config (per-route configs override it).
    Fault { name: String, config: Any },
    /// `envoy.filters.http.cors`: policies come per route / virtual host.
    Cors { name: String },
    /// `envoy.filters.http.local_ratelimit`: filter-level bucket (per-route configs override).
    LocalRateLimit { name: String, config: Any },
    /// Telemetry and metadata filters that change no traffic.
    NoOp { name: String },
    /// A security filter Tern cannot enforce yet: every request is denied with 403.
    DenyAll { name: String },
}

pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const FAULT_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
pub const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
pub const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
pub const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

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
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
];

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
            HttpFilter::Fault {
                name: f.name.clone(),
                config: typed.cloned().unwrap_or_default(),
            }
        } else if type_url == CORS_TYPE || by_name("envoy.filters.http.cors") {
            HttpFilter::Cors {
                name: f.name.clone(),
            }
        } else if type_url == LOCAL_RATELIMIT_TYPE {
            HttpFilter::LocalRateLimit {
                name: f.name.clone(),
                config: typed.cloned().unwrap_or_default(),
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
            filter("envoy.filters.http.rbac", Some(FAIL_CLOSED_TYPES[0])),
            filter("istio.stats", Some(NO_OP_TYPES[0])),
            filter("envoy.filters.http.router", Some(ROUTER_TYPE)),
        ];
        let parsed = parse_chain(&chain).expect("accepted");
        assert!(matches!(parsed[0], HttpFilter::NoOp { .. }));
        assert!(matches!(parsed[1], HttpFilter::DenyAll { .. }));
        assert!(matches!(parsed[3], HttpFilter::Router));
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
