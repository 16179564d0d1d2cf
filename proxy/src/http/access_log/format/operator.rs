//! Command operators: which commands exist (Envoy 1.40's set), their syntax, and what each
//! evaluates to for a [`LogRecord`].
//!
//! Pseudo-headers come from the record's fields (`:method`, `:path`, `:authority`, `:status`);
//! `host` and `:authority` stand in for each other as in Envoy's header map.

use super::super::LogRecord;
use super::super::time::{TimeFormat, contains_newline_conversion};
use super::{
    COMMAND_ONLY, Commands, PARAMS_OPTIONAL, PARAMS_OPTIONAL_LENGTH, PARAMS_REQUIRED_LENGTH,
    Syntax, Token, Value,
};
use http::HeaderMap;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::SystemTime;

/// A parsed command operator.
#[derive(Debug, Clone)]
pub(super) enum Operator {
    StartTime(TimeFormat),
    EmitTime(TimeFormat),
    Header(HeaderSource, HeaderSpec),
    Protocol,
    ResponseCode,
    ResponseCodeDetails {
        allow_whitespace: bool,
    },
    ResponseFlags {
        long: bool,
    },
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    Address(Endpoint, AddressPart),
    UpstreamCluster,
    UpstreamTransportFailureReason,
    RequestedServerName,
    RouteName,
    AttemptCount,
    ConnectionId,
    StreamId,
    GrpcStatus(GrpcFormat),
    /// A value fixed at config time (`%HOSTNAME%`, `%ENVIRONMENT(X)%`).
    Fixed(Option<String>),
    /// Known to Envoy, not recorded by Tern: always "not set".
    Unrecorded,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum HeaderSource {
    Request,
    /// `%REQ_WITHOUT_QUERY(...)%`: request header with any `?query` cut off.
    RequestWithoutQuery,
    Response,
    Trailer,
}

/// `main?alternative`, lowercased, with an optional maximum length in bytes.
#[derive(Debug, Clone)]
pub(super) struct HeaderSpec {
    main: String,
    alternative: String,
    max_len: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint {
    UpstreamHost,
    UpstreamLocal,
    DownstreamRemote,
    DownstreamLocal,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum AddressPart {
    WithPort,
    WithoutPort,
    Port,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum GrpcFormat {
    Camel,
    Snake,
    Number,
}

type Build = fn(&str, Option<usize>) -> Result<Operator, String>;

impl Operator {
    pub(super) fn parse(token: &Token<'_>, commands: Commands) -> Result<Self, String> {
        let command = token.command;
        let found = if command == "REQ_WITHOUT_QUERY" && commands.req_without_query {
            Some((PARAMS_REQUIRED_LENGTH, req_without_query as Build))
        } else {
            lookup(command)
        };
        let Some((syntax, build)) = found else {
            return Err(format!("Not supported field in StreamInfo: {command}"));
        };
        syntax.verify(command, token)?;
        build(token.subcommand, token.length)
    }

    pub(super) fn value<'r>(&'r self, r: &'r LogRecord) -> Value<'r> {
        use Operator as O;
        match self {
            O::StartTime(format) => r.start_time.map_or(Value::Null, |t| str(format.render(t))),
            O::EmitTime(format) => str(format.render(SystemTime::now())),
            O::Header(source, spec) => header_value(r, *source, spec),
            O::Protocol => non_empty(r.protocol),
            O::ResponseCode => Value::Num(u64::from(r.response_code)),
            O::ResponseCodeDetails { allow_whitespace } => {
                let details = r.response_code_details.as_str();
                if details.is_empty() {
                    Value::Null
                } else if !allow_whitespace && details.contains(is_envoy_space) {
                    str(details.replace(is_envoy_space, "_"))
                } else {
                    Value::Str(Cow::Borrowed(details))
                }
            }
            O::ResponseFlags { long: false } => match r.response_flags.as_str() {
                "" => Value::Str(Cow::Borrowed("-")),
                flags => Value::Str(Cow::Borrowed(flags)),
            },
            O::ResponseFlags { long: true } => str(long_flags(&r.response_flags)),
            O::BytesReceived => Value::Num(r.bytes_received),
            O::BytesSent => Value::Num(r.bytes_sent),
            O::Duration => millis(Some(r.duration)),
            O::RequestDuration => millis(r.request_duration),
            O::ResponseDuration => millis(r.response_duration),
            O::Address(endpoint, part) => address(endpoint.of(r), *part),
            O::UpstreamCluster => r.upstream_cluster.as_deref().map_or(Value::Null, non_empty),
            O::UpstreamTransportFailureReason => {
                match r.upstream_transport_failure_reason.as_deref() {
                    None | Some("") => Value::Null,
                    Some(reason) => str(reason.replace(' ', "_")),
                }
            }
            O::RequestedServerName => r
                .requested_server_name
                .as_deref()
                .map_or(Value::Null, |sni| {
                    sanitize_sni(sni).map_or(Value::Null, Value::Str)
                }),
            O::RouteName => non_empty(&r.route_name),
            O::AttemptCount => Value::Num(u64::from(r.attempt_count)),
            O::ConnectionId => Value::Num(r.connection_id),
            O::StreamId => r.request_id.as_deref().map_or(Value::Null, non_empty),
            O::GrpcStatus(format) => grpc_status(r, *format),
            O::Fixed(value) => value
                .as_deref()
                .map_or(Value::Null, |v| Value::Str(Cow::Borrowed(v))),
            O::Unrecorded => Value::Null,
        }
    }
}

/// The commands Envoy 1.40 knows, with their syntax and how Tern evaluates them.
fn lookup(command: &str) -> Option<(Syntax, Build)> {
    use AddressPart::*;
    use Endpoint::*;
    use Operator as O;
    Some(match command {
        "START_TIME" => (PARAMS_OPTIONAL, |sub, _| time_format(sub).map(O::StartTime)),
        // Tern renders local times in UTC.
        "START_TIME_LOCAL" => (PARAMS_OPTIONAL, |sub, _| time_format(sub).map(O::StartTime)),
        "EMIT_TIME" | "EMIT_TIME_LOCAL" => {
            (PARAMS_OPTIONAL, |sub, _| time_format(sub).map(O::EmitTime))
        }
        "REQ" | "REQUEST_HEADER" => (PARAMS_REQUIRED_LENGTH, |sub, len| {
            header(HeaderSource::Request, sub, len)
        }),
        "RESP" | "RESPONSE_HEADER" => (PARAMS_REQUIRED_LENGTH, |sub, len| {
            header(HeaderSource::Response, sub, len)
        }),
        "TRAILER" | "RESPONSE_TRAILER" => (PARAMS_REQUIRED_LENGTH, |sub, len| {
            header(HeaderSource::Trailer, sub, len)
        }),
        "PROTOCOL" => (COMMAND_ONLY, |_, _| Ok(O::Protocol)),
        "RESPONSE_CODE" => (COMMAND_ONLY, |_, _| Ok(O::ResponseCode)),
        "RESPONSE_CODE_DETAILS" => (PARAMS_OPTIONAL, |sub, _| {
            Ok(O::ResponseCodeDetails {
                allow_whitespace: sub == "ALLOW_WHITESPACES",
            })
        }),
        "RESPONSE_FLAGS" => (COMMAND_ONLY, |_, _| Ok(O::ResponseFlags { long: false })),
        "RESPONSE_FLAGS_LONG" => (COMMAND_ONLY, |_, _| Ok(O::ResponseFlags { long: true })),
        "BYTES_RECEIVED" => (COMMAND_ONLY, |_, _| Ok(O::BytesReceived)),
        "BYTES_SENT" => (COMMAND_ONLY, |_, _| Ok(O::BytesSent)),
        "DURATION" => (COMMAND_ONLY, |_, _| Ok(O::Duration)),
        "REQUEST_DURATION" => (COMMAND_ONLY, |_, _| Ok(O::RequestDuration)),
        "RESPONSE_DURATION" => (COMMAND_ONLY, |_, _| Ok(O::ResponseDuration)),
        // Tern records no host names, so these fall back to the address as Envoy's do.
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" | "UPSTREAM_HOST_NAME" => {
            (COMMAND_ONLY, |_, _| Ok(O::Address(UpstreamHost, WithPort)))
        }
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" | "UPSTREAM_HOST_NAME_WITHOUT_PORT" => {
            (COMMAND_ONLY, |_, _| {
                Ok(O::Address(UpstreamHost, WithoutPort))
            })
        }
        "UPSTREAM_REMOTE_PORT" => (COMMAND_ONLY, |_, _| Ok(O::Address(UpstreamHost, Port))),
        "UPSTREAM_LOCAL_ADDRESS" => (COMMAND_ONLY, |_, _| Ok(O::Address(UpstreamLocal, WithPort))),
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => (COMMAND_ONLY, |_, _| {
            Ok(O::Address(UpstreamLocal, WithoutPort))
        }),
        "UPSTREAM_LOCAL_PORT" => (COMMAND_ONLY, |_, _| Ok(O::Address(UpstreamLocal, Port))),
        // Tern records one downstream address pair; the DIRECT forms read the same.
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            (COMMAND_ONLY, |_, _| {
                Ok(O::Address(DownstreamRemote, WithPort))
            })
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => (COMMAND_ONLY, |_, _| {
            Ok(O::Address(DownstreamRemote, WithoutPort))
        }),
        "DOWNSTREAM_REMOTE_PORT" | "DOWNSTREAM_DIRECT_REMOTE_PORT" => {
            (COMMAND_ONLY, |_, _| Ok(O::Address(DownstreamRemote, Port)))
        }
        "DOWNSTREAM_LOCAL_ADDRESS" | "DOWNSTREAM_DIRECT_LOCAL_ADDRESS" => (COMMAND_ONLY, |_, _| {
            Ok(O::Address(DownstreamLocal, WithPort))
        }),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT" => (COMMAND_ONLY, |_, _| {
            Ok(O::Address(DownstreamLocal, WithoutPort))
        }),
        "DOWNSTREAM_LOCAL_PORT" | "DOWNSTREAM_DIRECT_LOCAL_PORT" => {
            (COMMAND_ONLY, |_, _| Ok(O::Address(DownstreamLocal, Port)))
        }
        // Tern knows one cluster name; it serves as the observability name too.
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => {
            (COMMAND_ONLY, |_, _| Ok(O::UpstreamCluster))
        }
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => {
            (COMMAND_ONLY, |_, _| Ok(O::UpstreamTransportFailureReason))
        }
        "REQUESTED_SERVER_NAME" => (COMMAND_ONLY, |_, _| Ok(O::RequestedServerName)),
        "ROUTE_NAME" => (COMMAND_ONLY, |_, _| Ok(O::RouteName)),
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => (COMMAND_ONLY, |_, _| Ok(O::AttemptCount)),
        "CONNECTION_ID" => (COMMAND_ONLY, |_, _| Ok(O::ConnectionId)),
        "STREAM_ID" => (COMMAND_ONLY, |_, _| Ok(O::StreamId)),
        "HOSTNAME" => (COMMAND_ONLY, |_, _| Ok(O::Fixed(hostname()))),
        // Tern writes access logs when a stream ends.
        "ACCESS_LOG_TYPE" => (COMMAND_ONLY, |_, _| {
            Ok(O::Fixed(Some("DownstreamEnd".to_string())))
        }),
        "ENVIRONMENT" => (PARAMS_REQUIRED_LENGTH, |sub, len| {
            let mut value = std::env::var(sub).unwrap_or_else(|_| "-".to_string());
            if let Some(max) = len {
                value = truncate(value.as_bytes(), Some(max)).into_owned();
            }
            Ok(O::Fixed(Some(value)))
        }),
        "GRPC_STATUS" => (PARAMS_OPTIONAL, |sub, _| {
            Ok(O::GrpcStatus(match sub {
                "" | "CAMEL_STRING" => GrpcFormat::Camel,
                "SNAKE_STRING" => GrpcFormat::Snake,
                "NUMBER" => GrpcFormat::Number,
                other => {
                    return Err(format!(
                        "GrpcStatusFormatter only supports CAMEL_STRING, SNAKE_STRING or NUMBER. Got: {other}"
                    ));
                }
            }))
        }),
        "GRPC_STATUS_NUMBER" => (COMMAND_ONLY, |_, _| Ok(O::GrpcStatus(GrpcFormat::Number))),
        other if UNRECORDED_COMMAND_ONLY.contains(&other) => (COMMAND_ONLY, unrecorded),
        other if UNRECORDED_PARAMS_OPTIONAL.contains(&other) => {
            (PARAMS_OPTIONAL_LENGTH, unrecorded)
        }
        other if UNRECORDED_PARAMS_REQUIRED.contains(&other) => {
            (PARAMS_REQUIRED_LENGTH, unrecorded)
        }
        _ => return None,
    })
}

fn req_without_query(sub: &str, len: Option<usize>) -> Result<Operator, String> {
    header(HeaderSource::RequestWithoutQuery, sub, len)
}

fn unrecorded(_: &str, _: Option<usize>) -> Result<Operator, String> {
    Ok(Operator::Unrecorded)
}

/// Envoy 1.40 command-only operators whose data Tern does not record.
const UNRECORDED_COMMAND_ONLY: &[&str] = &[
    "REQUEST_TX_DURATION",
    "RESPONSE_TX_DURATION",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "ROUNDTRIP_DURATION",
    "BYTES_RETRANSMITTED",
    "PACKETS_RETRANSMITTED",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "RESPONSE_TRAILERS_BYTES",
    "UPSTREAM_PROTOCOL",
    "CUSTOM_FLAGS",
    "UPSTREAM_CONNECTION_ID",
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_VERSION",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_PEER_DNS_SAN",
    "UPSTREAM_PEER_IP_SAN",
    "UPSTREAM_LOCAL_URI_SAN",
    "UPSTREAM_LOCAL_DNS_SAN",
    "UPSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_PEER_DNS_SAN",
    "DOWNSTREAM_PEER_IP_SAN",
    "DOWNSTREAM_PEER_EMAIL_SAN",
    "DOWNSTREAM_PEER_OTHERNAME_SAN",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_LOCAL_EMAIL_SAN",
    "DOWNSTREAM_LOCAL_OTHERNAME_SAN",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256",
    "DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1",
    "DOWNSTREAM_PEER_CHAIN_SERIALS",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_LOCAL_CLOSE_REASON",
    "DOWNSTREAM_DETECTED_CLOSE_TYPE",
    "UPSTREAM_LOCAL_CLOSE_REASON",
    "UPSTREAM_DETECTED_CLOSE_TYPE",
    "FILTER_CHAIN_NAME",
    "VIRTUAL_CLUSTER_NAME",
    "TLS_JA3_FINGERPRINT",
    "TLS_JA4_FINGERPRINT",
    "UNIQUE_ID",
    "TRACE_ID",
    "LOCAL_REPLY_BODY",
];

/// Envoy 1.40 operators with optional parameters whose data Tern does not record.
const UNRECORDED_PARAMS_OPTIONAL: &[&str] = &[
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "UPSTREAM_PEER_CERT_V_START",
    "UPSTREAM_PEER_CERT_V_END",
    "PATH",
];

/// Envoy 1.40 operators with required parameters whose data Tern does not record.
const UNRECORDED_PARAMS_REQUIRED: &[&str] = &[
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "COMMON_DURATION",
    "METADATA",
    "CEL",
    "QUERY_PARAM",
];

fn time_format(sub: &str) -> Result<TimeFormat, String> {
    if contains_newline_conversion(sub) {
        return Err("Invalid header configuration. Format string contains newline.".to_string());
    }
    Ok(if sub.is_empty() {
        TimeFormat::envoy_default()
    } else {
        TimeFormat::parse(sub)
    })
}

fn header(source: HeaderSource, sub: &str, max_len: Option<usize>) -> Result<Operator, String> {
    let mut names = sub.split('?');
    let main = names.next().unwrap_or_default().to_ascii_lowercase();
    let alternative = names.next().unwrap_or_default().to_ascii_lowercase();
    if names.next().is_some() {
        return Err(format!(
            "More than 1 alternative header specified in token: {sub}"
        ));
    }
    if !header_name_is_valid(&main) || !header_name_is_valid(&alternative) {
        return Err(
            "Invalid header configuration. Format string contains invalid characters.".to_string(),
        );
    }
    Ok(Operator::Header(
        source,
        HeaderSpec {
            main,
            alternative,
            max_len,
        },
    ))
}

/// An RFC 9110 token, optionally after a pseudo-header `:`; empty is allowed (no alternative).
fn header_name_is_valid(name: &str) -> bool {
    let name = name.strip_prefix(':').unwrap_or(name);
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_value<'r>(r: &'r LogRecord, source: HeaderSource, spec: &HeaderSpec) -> Value<'r> {
    let found =
        header_bytes(r, source, &spec.main).or_else(|| header_bytes(r, source, &spec.alternative));
    match found {
        None => Value::Null,
        Some(Cow::Borrowed(bytes)) => Value::Str(truncate(cut_query(source, bytes), spec.max_len)),
        Some(Cow::Owned(bytes)) => {
            str(truncate(cut_query(source, &bytes), spec.max_len).into_owned())
        }
    }
}

/// `%REQ_WITHOUT_QUERY%` drops everything from the first `?`.
fn cut_query(source: HeaderSource, bytes: &[u8]) -> &[u8] {
    match source {
        HeaderSource::RequestWithoutQuery => bytes.split(|&b| b == b'?').next().unwrap_or(bytes),
        _ => bytes,
    }
}

fn header_bytes<'r>(r: &'r LogRecord, source: HeaderSource, name: &str) -> Option<Cow<'r, [u8]>> {
    if name.is_empty() {
        return None;
    }
    match source {
        HeaderSource::Request | HeaderSource::RequestWithoutQuery => {
            request_header(r, name).map(Cow::Borrowed)
        }
        HeaderSource::Response if name == ":status" => {
            (r.response_code != 0).then(|| Cow::Owned(r.response_code.to_string().into_bytes()))
        }
        HeaderSource::Response => first(&r.response_headers, name).map(Cow::Borrowed),
        HeaderSource::Trailer => first(&r.response_trailers, name).map(Cow::Borrowed),
    }
}

/// A request header, pseudo-headers included; `host` and `:authority` stand for each other.
fn request_header<'r>(r: &'r LogRecord, name: &str) -> Option<&'r [u8]> {
    let field = |s: &'r str| (!s.is_empty()).then_some(s.as_bytes());
    match name {
        ":method" => field(&r.method),
        ":path" => field(&r.path),
        ":authority" => field(&r.authority).or_else(|| first(&r.request_headers, "host")),
        "host" => first(&r.request_headers, "host").or_else(|| field(&r.authority)),
        "x-envoy-original-path" => r
            .original_path
            .as_deref()
            .map(str::as_bytes)
            .or_else(|| first(&r.request_headers, name)),
        "x-request-id" => {
            first(&r.request_headers, name).or_else(|| r.request_id.as_deref().map(str::as_bytes))
        }
        pseudo if pseudo.starts_with(':') => None,
        _ => first(&r.request_headers, name),
    }
}

fn first<'m>(map: &'m HeaderMap, name: &str) -> Option<&'m [u8]> {
    map.get(name).map(|v| v.as_bytes())
}

/// At most `max` bytes of `bytes`, as text (a cut UTF-8 sequence shows as U+FFFD).
fn truncate(bytes: &[u8], max: Option<usize>) -> Cow<'_, str> {
    let bytes = match max {
        Some(max) if bytes.len() > max => &bytes[..max],
        _ => bytes,
    };
    String::from_utf8_lossy(bytes)
}

fn str<'a>(s: String) -> Value<'a> {
    Value::Str(Cow::Owned(s))
}

fn non_empty(s: &str) -> Value<'_> {
    if s.is_empty() {
        Value::Null
    } else {
        Value::Str(Cow::Borrowed(s))
    }
}

fn millis(d: Option<std::time::Duration>) -> Value<'static> {
    d.map_or(Value::Null, |d| {
        Value::Num(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// Envoy's `StringUtil::replaceAllEmptySpace` set.
fn is_envoy_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\n' | '\r')
}

impl Endpoint {
    fn of(self, r: &LogRecord) -> Option<SocketAddr> {
        match self {
            Endpoint::UpstreamHost => r.upstream_host,
            Endpoint::UpstreamLocal => r.upstream_local_address,
            Endpoint::DownstreamRemote => r.downstream_remote_address,
            Endpoint::DownstreamLocal => r.downstream_local_address,
        }
    }
}

fn address(addr: Option<SocketAddr>, part: AddressPart) -> Value<'static> {
    let Some(addr) = addr else {
        return Value::Null;
    };
    match part {
        AddressPart::WithPort => str(addr.to_string()),
        AddressPart::WithoutPort => str(addr.ip().to_string()),
        AddressPart::Port => Value::Num(u64::from(addr.port())),
    }
}

/// Envoy's `sanitizeInvalidHostname`: anything but `[A-Za-z0-9.-]` becomes `_`, and a changed
/// name is prefixed `invalid:`. Empty is "not set".
fn sanitize_sni(sni: &str) -> Option<Cow<'_, str>> {
    if sni.is_empty() {
        return None;
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    if sni.chars().all(valid) {
        return Some(Cow::Borrowed(sni));
    }
    let cleaned: String = sni
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .collect();
    Some(Cow::Owned(format!("invalid:{cleaned}")))
}

/// The hostname, read once at config time (`/proc/sys/kernel/hostname`: no unsafe gethostname).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim_end().to_string())
        .filter(|h| !h.is_empty())
}

/// Response flags: short name, long name (as `%RESPONSE_FLAGS_LONG%` prints it).
pub(in crate::http::access_log) const RESPONSE_FLAGS: &[(&str, &str)] = &[
    ("LH", "FailedLocalHealthCheck"),
    ("UH", "NoHealthyUpstream"),
    ("UT", "UpstreamRequestTimeout"),
    ("LR", "LocalReset"),
    ("UR", "UpstreamRemoteReset"),
    ("UF", "UpstreamConnectionFailure"),
    ("UC", "UpstreamConnectionTermination"),
    ("UO", "UpstreamOverflow"),
    ("NR", "NoRouteFound"),
    ("DI", "DelayInjected"),
    ("FI", "FaultInjected"),
    ("RL", "RateLimited"),
    ("UAEX", "UnauthorizedExternalService"),
    ("RLSE", "RateLimitServiceError"),
    ("DC", "DownstreamConnectionTermination"),
    ("URX", "UpstreamRetryLimitExceeded"),
    ("SI", "StreamIdleTimeout"),
    ("IH", "InvalidEnvoyRequestHeaders"),
    ("DPE", "DownstreamProtocolError"),
    ("UMSDR", "UpstreamMaxStreamDurationReached"),
    ("RFCF", "ResponseFromCacheFilter"),
    ("NFCF", "NoFilterConfigFound"),
    ("DT", "DurationTimeout"),
    ("UPE", "UpstreamProtocolError"),
    ("NC", "NoClusterFound"),
    ("OM", "OverloadManagerTerminated"),
    ("DF", "DnsResolutionFailed"),
    ("DO", "DropOverload"),
    ("DR", "DownstreamRemoteReset"),
    ("UDO", "UnconditionalDropOverload"),
];

/// `UF,URX` to `UpstreamConnectionFailure,UpstreamRetryLimitExceeded`; none is `-`.
fn long_flags(short: &str) -> String {
    if short.is_empty() || short == "-" {
        return "-".to_string();
    }
    short
        .split(',')
        .map(|flag| {
            RESPONSE_FLAGS
                .iter()
                .find(|(s, _)| *s == flag)
                .map_or(flag, |(_, long)| long)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `%GRPC_STATUS%`: for gRPC requests, `grpc-status` from trailers, then headers, else inferred
/// from the HTTP status as Envoy's `Grpc::Common::getGrpcStatus` does.
fn grpc_status(r: &LogRecord, format: GrpcFormat) -> Value<'static> {
    let is_grpc = first(&r.request_headers, "content-type").is_some_and(|ct| {
        ct == b"application/grpc"
            || ct.starts_with(b"application/grpc+")
            || ct.starts_with(b"application/grpc;")
    });
    if !is_grpc {
        return Value::Null;
    }
    let from_header = |map: &HeaderMap| -> Option<u64> {
        std::str::from_utf8(first(map, "grpc-status")?)
            .ok()?
            .parse()
            .ok()
    };
    let code = from_header(&r.response_trailers)
        .or_else(|| from_header(&r.response_headers))
        .or(grpc_from_http(r.response_code));
    let Some(code) = code else {
        return Value::Null;
    };
    const CAMEL: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    const SNAKE: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let named = |names: &[&'static str; 17]| {
        usize::try_from(code)
            .ok()
            .and_then(|i| names.get(i))
            .map_or_else(|| str(code.to_string()), |n| Value::Str(Cow::Borrowed(*n)))
    };
    match format {
        GrpcFormat::Number => Value::Num(code),
        GrpcFormat::Camel => named(&CAMEL),
        GrpcFormat::Snake => named(&SNAKE),
    }
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`; no response (0) has no status.
fn grpc_from_http(code: u16) -> Option<u64> {
    Some(match code {
        0 => return None,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    })
}
