//! `envoy.filters.network.http_connection_manager`: how a connection's bytes become HTTP requests,
//! which route table they are matched against and which HTTP filters run on them.
//!
//! Defaults are Envoy's (documented on each field). Anything that would change traffic if it
//! were ignored is either implemented or rejected; telemetry-only settings are accepted and
//! ignored, as Istio's readiness needs the config accepted (see istio-dropin.md 4.7).

use super::route::RouteConfig;
use super::{ConfigError, opt_duration};
use crate::http::filter::HttpFilter;
use std::sync::Arc;
use std::time::Duration;
use xds_client::pb::envoy::extensions::filters::network::http_connection_manager::v3 as proto;

/// A validated HTTP connection manager.
#[derive(Debug, Clone)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: RouteSource,
    pub http_filters: Vec<HttpFilter>,
    /// The `server` response header value (Envoy's default "envoy").
    pub server_name: String,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub via: Option<String>,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub normalize_path: bool,
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub strip_port: StripPort,
    /// Reset a stream with no activity for this long (default 5 min; `None` = disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// Time allowed for the whole request to arrive (default disabled).
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    /// Close a connection with no active streams after this long (default 1 h).
    pub idle_timeout: Option<Duration>,
    pub max_stream_duration: Option<Duration>,
    /// `common_http_protocol_options.max_connection_duration`: then the connection drains.
    pub max_connection_duration: Option<Duration>,
    /// Maximum header bytes of a request (default 60 KiB); more gets 431.
    pub max_request_headers_bytes: usize,
    /// Maximum header count (default 100); more gets 431.
    pub max_headers_count: usize,
    pub headers_with_underscores: UnderscoreAction,
    pub http2: Http2Settings,
    pub upgrades: Vec<String>,
    pub forward_client_cert: ForwardClientCert,
    pub drain_timeout: Duration,
    pub access_log: Vec<crate::http::access_log::AccessLog>,
}

/// Which codec the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/2 when the connection starts with the h2 preface, else HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

/// Where the route table comes from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    Inline(Arc<RouteConfig>),
    /// RDS: the named route configuration from the snapshot.
    Rds(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapedSlashes {
    KeepUnchanged,
    RejectRequest,
    UnescapeAndRedirect,
    UnescapeAndForward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripPort {
    None,
    Any,
    /// Strip the port only when it matches the listener's port.
    Matching,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoreAction {
    Allow,
    RejectRequest,
    DropHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// HTTP/2 codec settings (Envoy's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    pub max_concurrent_streams: u32,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 2_147_483_647,
            initial_stream_window_size: 268_435_456,
            initial_connection_window_size: 268_435_456,
        }
    }
}

impl Http2Settings {
    /// From `http2_protocol_options`, validating Envoy's ranges.
    pub fn from_proto(
        p: Option<&xds_client::pb::envoy::config::core::v3::Http2ProtocolOptions>,
    ) -> Result<Self, (String, String)> {
        let mut s = Http2Settings::default();
        let Some(p) = p else { return Ok(s) };
        if let Some(v) = &p.max_concurrent_streams {
            if v.value == 0 {
                return Err(("max_concurrent_streams".into(), "must be at least 1".into()));
            }
            s.max_concurrent_streams = v.value;
        }
        if let Some(v) = &p.initial_stream_window_size {
            if !(65_535..=2_147_483_647).contains(&v.value) {
                return Err((
                    "initial_stream_window_size".into(),
                    format!("{} is outside 65535..=2147483647", v.value),
                ));
            }
            s.initial_stream_window_size = v.value;
        }
        if let Some(v) = &p.initial_connection_window_size {
            if !(65_535..=2_147_483_647).contains(&v.value) {
                return Err((
                    "initial_connection_window_size".into(),
                    format!("{} is outside 65535..=2147483647", v.value),
                ));
            }
            s.initial_connection_window_size = v.value;
        }
        Ok(s)
    }
}

const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_HEADERS_KB: u32 = 60;
const MAX_HEADERS_KB: u32 = 8192;
const DEFAULT_MAX_HEADERS_COUNT: usize = 100;

/// `Some(d)` for a positive duration, `None` for zero (Envoy's "0 disables").
fn zero_disables(d: Option<Duration>, default: Option<Duration>) -> Option<Duration> {
    match d {
        None => default,
        Some(Duration::ZERO) => None,
        Some(d) => Some(d),
    }
}

impl HttpConnectionManager {
    /// Converts the filter's proto; errors name the field inside the filter.
    pub fn from_proto(p: &proto::HttpConnectionManager) -> Result<Self, ConfigError> {
        let resource = "http_connection_manager";
        let err = |field: &str, reason: String| ConfigError::new(resource, field, reason);
        if p.stat_prefix.is_empty() {
            return Err(err("stat_prefix", "must not be empty".into()));
        }
        use proto::http_connection_manager::{
            CodecType, ForwardClientCertDetails, PathWithEscapedSlashesAction, RouteSpecifier,
            ServerHeaderTransformation, StripPortMode,
        };
        let codec = match CodecType::try_from(p.codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            _ => {
                return Err(err(
                    "codec_type",
                    format!("{} is not supported (AUTO, HTTP1, HTTP2)", p.codec_type),
                ));
            }
        };
        let routes = match &p.route_specifier {
            Some(RouteSpecifier::RouteConfig(rc)) => RouteSource::Inline(Arc::new(
                RouteConfig::try_from(rc).map_err(|e| e.within("route_config"))?,
            )),
            Some(RouteSpecifier::Rds(rds)) => {
                if rds.route_config_name.is_empty() {
                    return Err(err("rds.route_config_name", "must not be empty".into()));
                }
                RouteSource::Rds(rds.route_config_name.clone())
            }
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(err(
                    "scoped_routes",
                    "scoped routes are not supported".into(),
                ));
            }
            None => {
                return Err(err(
                    "route_specifier",
                    "rds or route_config is required".into(),
                ));
            }
        };
        let http_filters = crate::http::filter::parse_chain(&p.http_filters)
            .map_err(|(field, reason)| err(&field, reason))?;
        let server_header =
            match ServerHeaderTransformation::try_from(p.server_header_transformation) {
                Ok(ServerHeaderTransformation::Overwrite) => ServerHeader::Overwrite,
                Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
                Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
                Err(_) => {
                    return Err(err(
                        "server_header_transformation",
                        format!("unknown value {}", p.server_header_transformation),
                    ));
                }
            };
        let escaped_slashes =
            match PathWithEscapedSlashesAction::try_from(p.path_with_escaped_slashes_action) {
                Ok(
                    PathWithEscapedSlashesAction::ImplementationSpecificDefault
                    | PathWithEscapedSlashesAction::KeepUnchanged,
                ) => EscapedSlashes::KeepUnchanged,
                Ok(PathWithEscapedSlashesAction::RejectRequest) => EscapedSlashes::RejectRequest,
                Ok(PathWithEscapedSlashesAction::UnescapeAndRedirect) => {
                    EscapedSlashes::UnescapeAndRedirect
                }
                Ok(PathWithEscapedSlashesAction::UnescapeAndForward) => {
                    EscapedSlashes::UnescapeAndForward
                }
                Err(_) => {
                    return Err(err(
                        "path_with_escaped_slashes_action",
                        format!("unknown value {}", p.path_with_escaped_slashes_action),
                    ));
                }
            };
        let strip_port = match &p.strip_port_mode {
            Some(StripPortMode::StripAnyHostPort(true)) => StripPort::Any,
            _ if p.strip_matching_host_port => StripPort::Matching,
            _ => StripPort::None,
        };
        let forward_client_cert =
            match ForwardClientCertDetails::try_from(p.forward_client_cert_details) {
                Ok(ForwardClientCertDetails::Sanitize) => ForwardClientCert::Sanitize,
                Ok(ForwardClientCertDetails::ForwardOnly) => ForwardClientCert::ForwardOnly,
                Ok(ForwardClientCertDetails::AppendForward) => ForwardClientCert::AppendForward,
                Ok(ForwardClientCertDetails::SanitizeSet) => ForwardClientCert::SanitizeSet,
                Ok(ForwardClientCertDetails::AlwaysForwardOnly) => {
                    ForwardClientCert::AlwaysForwardOnly
                }
                Err(_) => {
                    return Err(err(
                        "forward_client_cert_details",
                        format!("unknown value {}", p.forward_client_cert_details),
                    ));
                }
            };
        let dur = |field: &str, d: Option<&xds_client::pb::google::protobuf::Duration>| {
            opt_duration(d).map_err(|r| err(field, r))
        };
        let stream_idle_timeout = zero_disables(
            dur("stream_idle_timeout", p.stream_idle_timeout.as_ref())?,
            Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        );
        let request_timeout =
            zero_disables(dur("request_timeout", p.request_timeout.as_ref())?, None);
        let request_headers_timeout = zero_disables(
            dur(
                "request_headers_timeout",
                p.request_headers_timeout.as_ref(),
            )?,
            None,
        );
        let drain_timeout =
            dur("drain_timeout", p.drain_timeout.as_ref())?.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        let common = p.common_http_protocol_options.as_ref();
        let idle_timeout = zero_disables(
            dur(
                "common_http_protocol_options.idle_timeout",
                common.and_then(|c| c.idle_timeout.as_ref()),
            )?,
            Some(DEFAULT_IDLE_TIMEOUT),
        );
        let max_stream_duration = zero_disables(
            dur(
                "common_http_protocol_options.max_stream_duration",
                common.and_then(|c| c.max_stream_duration.as_ref()),
            )?,
            None,
        );
        let max_connection_duration = zero_disables(
            dur(
                "common_http_protocol_options.max_connection_duration",
                common.and_then(|c| c.max_connection_duration.as_ref()),
            )?,
            None,
        );
        let max_headers_count = match common.and_then(|c| c.max_headers_count.as_ref()) {
            Some(v) if v.value == 0 => {
                return Err(err(
                    "common_http_protocol_options.max_headers_count",
                    "must be at least 1".into(),
                ));
            }
            Some(v) => v.value as usize,
            None => DEFAULT_MAX_HEADERS_COUNT,
        };
        use xds_client::pb::envoy::config::core::v3::http_protocol_options::HeadersWithUnderscoresAction as U;
        let headers_with_underscores = match common
            .map(|c| U::try_from(c.headers_with_underscores_action))
            .unwrap_or(Ok(U::Allow))
        {
            Ok(U::Allow) => UnderscoreAction::Allow,
            Ok(U::RejectRequest) => UnderscoreAction::RejectRequest,
            Ok(U::DropHeader) => UnderscoreAction::DropHeader,
            Err(_) => {
                return Err(err(
                    "common_http_protocol_options.headers_with_underscores_action",
                    "unknown value".into(),
                ));
            }
        };
        let max_kb = p
            .max_request_headers_kb
            .as_ref()
            .map_or(DEFAULT_MAX_HEADERS_KB, |v| v.value);
        if max_kb == 0 || max_kb > MAX_HEADERS_KB {
            return Err(err(
                "max_request_headers_kb",
                format!("{max_kb} is outside 1..=8192"),
            ));
        }
        let http2 = Http2Settings::from_proto(p.http2_protocol_options.as_ref())
            .map_err(|(f, r)| err(&format!("http2_protocol_options.{f}"), r))?;
        let mut upgrades = Vec::new();
        for (i, u) in p.upgrade_configs.iter().enumerate() {
            if !u.filters.is_empty() {
                return Err(err(
                    &format!("upgrade_configs[{i}].filters"),
                    "per-upgrade filter chains are not supported".into(),
                ));
            }
            if u.enabled.as_ref().is_none_or(|e| e.value) {
                upgrades.push(u.upgrade_type.to_ascii_lowercase());
            }
        }
        let access_log = p
            .access_log
            .iter()
            .enumerate()
            .map(|(i, a)| {
                crate::http::access_log::AccessLog::from_proto(a)
                    .map_err(|r| err(&format!("access_log[{i}]"), r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpConnectionManager {
            stat_prefix: p.stat_prefix.clone(),
            codec,
            routes,
            http_filters,
            server_name: if p.server_name.is_empty() {
                "envoy".into()
            } else {
                p.server_name.clone()
            },
            server_header,
            use_remote_address: p.use_remote_address.as_ref().is_some_and(|v| v.value),
            xff_num_trusted_hops: p.xff_num_trusted_hops,
            skip_xff_append: p.skip_xff_append,
            via: (!p.via.is_empty()).then(|| p.via.clone()),
            generate_request_id: p.generate_request_id.as_ref().is_none_or(|v| v.value),
            preserve_external_request_id: p.preserve_external_request_id,
            always_set_request_id_in_response: p.always_set_request_id_in_response,
            normalize_path: p.normalize_path.as_ref().is_some_and(|v| v.value),
            merge_slashes: p.merge_slashes,
            escaped_slashes,
            strip_port,
            stream_idle_timeout,
            request_timeout,
            request_headers_timeout,
            idle_timeout,
            max_stream_duration,
            max_connection_duration,
            max_request_headers_bytes: max_kb as usize * 1024,
            max_headers_count,
            headers_with_underscores,
            http2,
            upgrades,
            forward_client_cert,
            drain_timeout,
            access_log,
        })
    }
}
