//! Access log tests. The fixed records below replay requests sent through Envoy 1.40 with the
//! same formats; where a test says "as Envoy printed", the expected line is Envoy's own output.

mod config;
mod file;
mod filters;
mod json;
mod operators;

use super::{AccessLog, LogRecord};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xds_client::any;
use xds_client::pb::envoy::config::accesslog::v3 as proto;
use xds_client::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use xds_client::pb::envoy::extensions::access_loggers::stream::v3::{
    StdoutAccessLog, stdout_access_log,
};
use xds_client::proto_json::{self, ReadOptions};

/// Istio's default text access log format (meshConfig `accessLogFormat` unset).
const ISTIO_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

/// `curl -H 'user-agent: curl/test' localhost:18080/dead/x` against a cluster whose only host
/// refuses connections, with one retry on connect failure (Envoy's 503 URX,UF).
fn failed_upstream() -> LogRecord {
    LogRecord {
        start_time: Some(at(1_795_372_394, 250_370_000)),
        method: "GET".into(),
        path: "/dead/x".into(),
        protocol: "HTTP/1.1",
        authority: "localhost:18080".into(),
        request_headers: headers(&[
            ("user-agent", "curl/test"),
            ("x-request-id", "85f56769-b3ae-4ea9-977f-342ae284a9f6"),
        ]),
        response_code: 503,
        response_code_details:
            "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error: Connection refused}"
                .into(),
        response_flags: "URX,UF".into(),
        bytes_received: 0,
        bytes_sent: 121,
        duration: Duration::from_millis(9),
        request_duration: Some(Duration::from_micros(300)),
        upstream_host: Some("127.0.0.1:1".parse().expect("addr")),
        upstream_cluster: Some("dead".into()),
        upstream_transport_failure_reason: Some("delayed_connect_error: Connection refused".into()),
        downstream_remote_address: Some("127.0.0.1:52844".parse().expect("addr")),
        downstream_local_address: Some("127.0.0.1:18080".parse().expect("addr")),
        route_name: "dead".into(),
        request_id: Some("85f56769-b3ae-4ea9-977f-342ae284a9f6".into()),
        attempt_count: 2,
        connection_id: 2,
        ..Default::default()
    }
}

/// A proxied request with every field set, for operator-by-operator tests.
fn full() -> LogRecord {
    LogRecord {
        start_time: Some(at(1_704_067_200, 123_456_789)), // 2024-01-01T00:00:00.123456789Z
        method: "POST".into(),
        path: "/api/v1/items?page=2".into(),
        original_path: Some("/orig/items?page=2".into()),
        protocol: "HTTP/2",
        authority: "svc.ns:8080".into(),
        request_headers: headers(&[
            ("user-agent", "client/1.0"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-request-id", "0a1b2c3d-0000-4000-8000-000000000000"),
            ("x-empty", ""),
            ("x-multi", "first"),
            ("x-multi", "second"),
            ("content-type", "application/grpc"),
        ]),
        response_headers: headers(&[("x-envoy-upstream-service-time", "12"), ("server", "envoy")]),
        response_trailers: headers(&[("grpc-status", "14"), ("grpc-message", "down")]),
        response_code: 200,
        response_code_details: "via_upstream".into(),
        response_flags: String::new(),
        bytes_received: 154,
        bytes_sent: 2048,
        duration: Duration::from_micros(26_999),
        request_duration: Some(Duration::from_millis(3)),
        response_duration: Some(Duration::from_millis(20)),
        upstream_host: Some("10.1.2.3:8080".parse().expect("addr")),
        upstream_cluster: Some("outbound|8080||svc.ns.svc.cluster.local".into()),
        upstream_local_address: Some("10.0.0.5:40000".parse().expect("addr")),
        upstream_transport_failure_reason: None,
        downstream_remote_address: Some("[2001:db8::1]:52828".parse().expect("addr")),
        downstream_local_address: Some("10.0.0.5:15001".parse().expect("addr")),
        requested_server_name: Some("svc.ns.svc.cluster.local".into()),
        route_name: "default".into(),
        request_id: Some("0a1b2c3d-0000-4000-8000-000000000000".into()),
        attempt_count: 1,
        connection_id: 42,
    }
}

/// A `StdoutAccessLog` proto with `log_format`.
fn stdout_proto(format: SubstitutionFormatString) -> proto::AccessLog {
    proto::AccessLog {
        name: "test".into(),
        filter: None,
        config_type: Some(proto::access_log::ConfigType::TypedConfig(any::pack(
            &StdoutAccessLog {
                access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(format)),
            },
        ))),
    }
}

fn text_source(format: &str, omit_empty: bool) -> SubstitutionFormatString {
    SubstitutionFormatString {
        format: Some(substitution_format_string::Format::TextFormatSource(
            DataSource {
                specifier: Some(data_source::Specifier::InlineString(format.into())),
                ..Default::default()
            },
        )),
        omit_empty_values: omit_empty,
        ..Default::default()
    }
}

/// A stdout logger with `format` as its text format (nothing is written: tests call render).
fn text_log(format: &str) -> Result<AccessLog, String> {
    AccessLog::from_proto(&stdout_proto(text_source(format, false)))
}

/// The line `format` renders for `record`.
fn line(format: &str, record: &LogRecord) -> String {
    text_log(format)
        .expect("format parses")
        .render(record)
        .expect("no filter")
}

/// The config error for `format`, without the field path.
fn format_error(format: &str) -> String {
    let err = text_log(format).expect_err("format is rejected");
    let prefix = "typed_config.log_format.text_format_source.inline_string: ";
    err.strip_prefix(prefix).unwrap_or(&err).to_string()
}

/// An access log from YAML (`envoy.config.accesslog.v3.AccessLog`).
fn from_yaml(yaml: &str) -> Result<AccessLog, String> {
    let proto: proto::AccessLog =
        proto_json::from_text(yaml, "test.yaml", ReadOptions::default()).expect("valid yaml");
    AccessLog::from_proto(&proto)
}
