//! Format string parsing and every operator's rendering.

use super::super::DEFAULT_FORMAT;
use super::*;

#[test]
fn default_format_matches_envoy_for_a_failed_upstream() {
    // As Envoy printed.
    assert_eq!(
        line(DEFAULT_FORMAT, &failed_upstream()),
        "[2026-11-22T18:33:14.250Z] \"GET /dead/x HTTP/1.1\" 503 URX,UF 0 121 9 - \"-\" \"curl/test\" \"85f56769-b3ae-4ea9-977f-342ae284a9f6\" \"localhost:18080\" \"127.0.0.1:1\"\n"
    );
}

#[test]
fn istio_default_format_matches_envoy_for_a_failed_upstream() {
    // As Envoy printed.
    assert_eq!(
        line(ISTIO_FORMAT, &failed_upstream()),
        "[2026-11-22T18:33:14.250Z] \"GET /dead/x HTTP/1.1\" 503 URX,UF upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused} - \"delayed_connect_error:_Connection_refused\" 0 121 9 - \"-\" \"curl/test\" \"85f56769-b3ae-4ea9-977f-342ae284a9f6\" \"localhost:18080\" \"127.0.0.1:1\" dead - 127.0.0.1:18080 127.0.0.1:52844 - dead\n"
    );
}

#[test]
fn istio_default_format_renders_every_field_of_a_proxied_request() {
    assert_eq!(
        line(ISTIO_FORMAT, &full()),
        "[2024-01-01T00:00:00.123Z] \"POST /orig/items?page=2 HTTP/2\" 200 - via_upstream - \"-\" 154 2048 26 12 \"10.0.0.1\" \"client/1.0\" \"0a1b2c3d-0000-4000-8000-000000000000\" \"svc.ns:8080\" \"10.1.2.3:8080\" outbound|8080||svc.ns.svc.cluster.local 10.0.0.5:40000 10.0.0.5:15001 [2001:db8::1]:52828 svc.ns.svc.cluster.local default\n"
    );
}

#[test]
fn an_empty_record_prints_dashes_where_envoy_does() {
    assert_eq!(
        line(DEFAULT_FORMAT, &LogRecord::default()),
        "[-] \"- - -\" 0 - 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
    );
}

#[test]
fn each_operator_renders_from_the_record() {
    let r = full();
    let cases = [
        ("%PROTOCOL%", "HTTP/2"),
        ("%RESPONSE_CODE%", "200"),
        ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
        ("%RESPONSE_FLAGS%", "-"),
        ("%RESPONSE_FLAGS_LONG%", "-"),
        ("%BYTES_RECEIVED%", "154"),
        ("%BYTES_SENT%", "2048"),
        ("%DURATION%", "26"),
        ("%REQUEST_DURATION%", "3"),
        ("%RESPONSE_DURATION%", "20"),
        ("%UPSTREAM_HOST%", "10.1.2.3:8080"),
        ("%UPSTREAM_REMOTE_ADDRESS%", "10.1.2.3:8080"),
        ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.1.2.3"),
        ("%UPSTREAM_REMOTE_PORT%", "8080"),
        (
            "%UPSTREAM_CLUSTER%",
            "outbound|8080||svc.ns.svc.cluster.local",
        ),
        (
            "%UPSTREAM_CLUSTER_RAW%",
            "outbound|8080||svc.ns.svc.cluster.local",
        ),
        ("%UPSTREAM_LOCAL_ADDRESS%", "10.0.0.5:40000"),
        ("%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"),
        ("%UPSTREAM_LOCAL_PORT%", "40000"),
        ("%UPSTREAM_TRANSPORT_FAILURE_REASON%", "-"),
        ("%DOWNSTREAM_REMOTE_ADDRESS%", "[2001:db8::1]:52828"),
        ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "2001:db8::1"),
        ("%DOWNSTREAM_REMOTE_PORT%", "52828"),
        ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "[2001:db8::1]:52828"),
        ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.5:15001"),
        ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "10.0.0.5"),
        ("%DOWNSTREAM_LOCAL_PORT%", "15001"),
        ("%REQUESTED_SERVER_NAME%", "svc.ns.svc.cluster.local"),
        ("%ROUTE_NAME%", "default"),
        ("%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "1"),
        ("%CONNECTION_ID%", "42"),
        ("%STREAM_ID%", "0a1b2c3d-0000-4000-8000-000000000000"),
        ("%CONNECTION_TERMINATION_DETAILS%", "-"),
        ("%ACCESS_LOG_TYPE%", "DownstreamEnd"),
        ("%REQ(:METHOD)%", "POST"),
        ("%REQ(:PATH)%", "/api/v1/items?page=2"),
        ("%REQ(:AUTHORITY)%", "svc.ns:8080"),
        ("%REQ(HOST)%", "svc.ns:8080"),
        ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/orig/items?page=2"),
        ("%REQ(User-Agent)%", "client/1.0"),
        ("%REQUEST_HEADER(user-agent)%", "client/1.0"),
        ("%REQ(x-multi)%", "first"),
        ("%REQ(x-empty)%", ""),
        ("%REQ(x-absent)%", "-"),
        ("%REQ(x-absent?user-agent)%", "client/1.0"),
        ("%REQ(?user-agent)%", "client/1.0"),
        ("%REQ(user-agent?)%", "client/1.0"),
        ("%REQ(:path):7%", "/api/v1"),
        ("%REQ(:path):0%", ""),
        ("%REQ(:scheme)%", "-"),
        ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "12"),
        ("%RESP(:status)%", "200"),
        ("%RESPONSE_HEADER(server)%", "envoy"),
        ("%RESP(x-absent?server):3%", "env"),
        ("%TRAILER(grpc-message)%", "down"),
        ("%RESPONSE_TRAILER(grpc-status)%", "14"),
        ("%TRAILER(server)%", "-"),
        ("%GRPC_STATUS%", "Unavailable"),
        ("%GRPC_STATUS(SNAKE_STRING)%", "UNAVAILABLE"),
        ("%GRPC_STATUS(NUMBER)%", "14"),
        ("%GRPC_STATUS_NUMBER%", "14"),
        ("%DYNAMIC_METADATA(istio.mixer:status)%", "-"),
        ("%FILTER_STATE(key:PLAIN):10%", "-"),
        ("%DOWNSTREAM_PEER_URI_SAN%", "-"),
        ("%UPSTREAM_TLS_VERSION%", "-"),
    ];
    for (format, expected) in cases {
        assert_eq!(line(format, &r), expected, "{format}");
    }
}

#[test]
fn start_time_takes_envoy_and_strftime_formats() {
    let r = full();
    assert_eq!(line("%START_TIME%", &r), "2024-01-01T00:00:00.123Z");
    assert_eq!(line("%START_TIME()%", &r), "2024-01-01T00:00:00.123Z");
    assert_eq!(
        line("%START_TIME(%Y-%m-%dT%H:%M:%S%z)%", &r),
        "2024-01-01T00:00:00+0000"
    );
    assert_eq!(line("%START_TIME(%s.%3f)%", &r), "1704067200.123");
    assert_eq!(
        line("%START_TIME(%f|%3f|%6f|%9f|%1f)%", &r),
        "123456789|123|123456|123456789|1"
    );
    assert_eq!(line("%START_TIME(%s)%", &r), "1704067200");
    // The subcommand is the shortest text after which the command closes, as in Envoy.
    assert_eq!(line("%START_TIME(%H%)%", &r), "00%");
    assert_eq!(line("%START_TIME_LOCAL(%Y)%", &r), "2024");
    assert_eq!(line("%START_TIME%", &LogRecord::default()), "-");
}

#[test]
fn literals_and_escapes_pass_through() {
    let r = full();
    assert_eq!(line("", &r), "");
    assert_eq!(line("plain text\n", &r), "plain text\n");
    assert_eq!(line("100%% of %RESPONSE_CODE%%%", &r), "100% of 200%");
    assert_eq!(line("%%RESPONSE_CODE%%", &r), "%RESPONSE_CODE%");
    // A subcommand may hold ')' when the shorter match does not close the command.
    assert_eq!(line("(%START_TIME(%Y)x)%)", &r), "(2024)x)");
}

#[test]
fn response_details_and_failure_reasons_lose_their_spaces() {
    let mut r = full();
    r.response_code_details = "upstream reset\tafter headers".into();
    r.upstream_transport_failure_reason = Some("TLS error: 268435703".into());
    assert_eq!(
        line("%RESPONSE_CODE_DETAILS%", &r),
        "upstream_reset_after_headers"
    );
    assert_eq!(
        line("%RESPONSE_CODE_DETAILS(ALLOW_WHITESPACES)%", &r),
        "upstream reset\tafter headers"
    );
    assert_eq!(
        line("%UPSTREAM_TRANSPORT_FAILURE_REASON%", &r),
        "TLS_error:_268435703"
    );
}

#[test]
fn response_flags_print_short_and_long_names() {
    let mut r = full();
    r.response_flags = "URX,UF".into();
    assert_eq!(line("%RESPONSE_FLAGS%", &r), "URX,UF");
    // As Envoy printed for the same flags.
    assert_eq!(
        line("%RESPONSE_FLAGS_LONG%", &r),
        "UpstreamRetryLimitExceeded,UpstreamConnectionFailure"
    );
    r.response_flags = "DPE".into();
    assert_eq!(line("%RESPONSE_FLAGS_LONG%", &r), "DownstreamProtocolError");
}

#[test]
fn requested_server_name_is_sanitised_like_envoy() {
    let mut r = full();
    r.requested_server_name = Some("outbound_.8080_._.svc".into());
    assert_eq!(
        line("%REQUESTED_SERVER_NAME%", &r),
        "invalid:outbound_.8080_._.svc"
    );
    r.requested_server_name = Some(String::new());
    assert_eq!(line("%REQUESTED_SERVER_NAME%", &r), "-");
}

#[test]
fn grpc_status_needs_a_grpc_request_and_falls_back_to_the_http_status() {
    let mut r = full();
    r.response_trailers = HeaderMap::new();
    r.response_code = 503;
    assert_eq!(line("%GRPC_STATUS%", &r), "Unavailable");
    r.response_headers = headers(&[("grpc-status", "0")]);
    assert_eq!(line("%GRPC_STATUS%", &r), "OK");
    r.request_headers = headers(&[("content-type", "application/json")]);
    assert_eq!(line("%GRPC_STATUS%", &r), "-");
}

#[test]
fn missing_values_print_dash_or_nothing_with_omit_empty_values() {
    let format = "[%REQ(x-absent)%][%UPSTREAM_HOST%][%RESPONSE_FLAGS%][%REQ(x-empty)%]\n";
    let r = LogRecord {
        request_headers: headers(&[("x-empty", "")]),
        ..Default::default()
    };
    assert_eq!(line(format, &r), "[-][-][-][]\n");
    let omit = AccessLog::from_proto(&stdout_proto(text_source(format, true))).expect("valid");
    // As Envoy printed: RESPONSE_FLAGS is "-" itself, not a missing value.
    assert_eq!(omit.render(&r).expect("rendered"), "[][][-][]\n");
}

#[test]
fn environment_and_hostname_are_read_at_config_time() {
    let r = LogRecord::default();
    let path = std::env::var("PATH").unwrap_or_else(|_| "-".into());
    assert_eq!(line("%ENVIRONMENT(PATH)%", &r), path);
    assert_eq!(
        line("%ENVIRONMENT(PATH):3%", &r),
        path.get(..3).unwrap_or(&path)
    );
    assert_eq!(
        line("%ENVIRONMENT(TERN_TEST_SURELY_UNSET_VARIABLE)%", &r),
        "-"
    );
    let host = line("%HOSTNAME%", &r);
    assert!(!host.is_empty() && !host.contains('\n'), "{host:?}");
}

#[test]
fn emit_time_is_now() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs();
    let emitted: u64 = line("%EMIT_TIME(%s)%", &LogRecord::default())
        .parse()
        .expect("seconds");
    assert!(emitted >= before && emitted <= before + 60, "{emitted}");
}

#[test]
fn req_without_query_needs_its_formatter_extension() {
    assert_eq!(
        format_error("%REQ_WITHOUT_QUERY(:PATH)%"),
        "Not supported field in StreamInfo: REQ_WITHOUT_QUERY"
    );
    let mut format = text_source("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH):10%", false);
    format.formatters.push(
        xds_client::pb::envoy::config::core::v3::TypedExtensionConfig {
            name: "envoy.formatter.req_without_query".into(),
            typed_config: Some(xds_client::pb::google::protobuf::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
                        .into(),
                value: vec![],
            }),
        },
    );
    let log = AccessLog::from_proto(&stdout_proto(format)).expect("valid");
    assert_eq!(log.render(&full()).expect("rendered"), "/orig/item");
}

#[test]
fn format_errors_read_as_envoys() {
    // Each message is Envoy 1.40's for the same format.
    let cases = [
        ("%FOO%", "Not supported field in StreamInfo: FOO"),
        ("%METHOD%", "Not supported field in StreamInfo: METHOD"),
        (
            "%DOWNSTREAM_PEER_ADDRESS%",
            "Not supported field in StreamInfo: DOWNSTREAM_PEER_ADDRESS",
        ),
        ("%_%", "Not supported field in StreamInfo: _"),
        (
            "%PROTOCOL(x)%",
            "PROTOCOL does not take any parameters or length",
        ),
        (
            "%DURATION:3%",
            "DURATION does not take any parameters or length",
        ),
        ("%REQ%", "REQ requires parameters"),
        ("%REQ()%", "REQ requires parameters"),
        ("%ENVIRONMENT%", "ENVIRONMENT requires parameters"),
        (
            "%START_TIME(%Y):3%",
            "START_TIME does not allow length to be specified.",
        ),
        (
            "abc %REQ(x",
            "Incorrect configuration: abc %REQ(x. Couldn't find valid command at position 4",
        ),
        (
            "abc % def",
            "Incorrect configuration: abc % def. Couldn't find valid command at position 4",
        ),
        (
            "%REQ(x):abc%",
            "Incorrect configuration: %REQ(x):abc%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(x)%%",
            "Incorrect configuration: %REQ(x)%%. Couldn't find valid command at position 8",
        ),
        (
            "%a%",
            "Incorrect configuration: %a%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(x):99999999999999999999999%",
            "Incorrect configuration: %REQ(x):99999999999999999999999%. Couldn't find valid command at position 0",
        ),
        (
            "%REQ(a?b?c)%",
            "More than 1 alternative header specified in token: a?b?c",
        ),
        (
            "%REQ(a b)%",
            "Invalid header configuration. Format string contains invalid characters.",
        ),
        (
            "%START_TIME(%n)%",
            "Invalid header configuration. Format string contains newline.",
        ),
        (
            "%GRPC_STATUS(FOO)%",
            "GrpcStatusFormatter only supports CAMEL_STRING, SNAKE_STRING or NUMBER. Got: FOO",
        ),
        (
            "%STREAM_ID(x)%",
            "STREAM_ID does not take any parameters or length",
        ),
    ];
    for (format, expected) in cases {
        assert_eq!(format_error(format), expected, "{format}");
    }
}

#[test]
fn a_newline_never_belongs_to_a_subcommand() {
    assert!(
        format_error("%REQ(a\n)%").starts_with("Incorrect configuration"),
        "a newline ends the search for ')'"
    );
}
