//! `json_format`: typing, escaping, key order and `omit_empty_values`.

use super::*;

/// The JSON format of the Envoy comparison run (its `num: 7.5` left out: Envoy's YAML loader
/// turns non-integer YAML numbers into strings, which is not the formatter's doing).
const ENVOY_RUN_FORMAT: &str = r#"
name: json
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
  path: /dev/stdout
  log_format:
    json_format:
      code: "%RESPONSE_CODE%"
      code_str: "c=%RESPONSE_CODE%"
      bytes: "%BYTES_SENT%"
      empty: {}
      dur: "%DURATION%"
      rqdur: "%REQUEST_DURATION%"
      rsdur: "%RESPONSE_DURATION%"
      flags: "%RESPONSE_FLAGS%"
      missing: "%REQ(x-missing)%"
      missing2: "a %REQ(x-missing)% b"
      host: "%UPSTREAM_HOST%"
      plain: "plain"
      pct: "100%%"
      int: 3
      bool: true
      nul: null
      start: "%START_TIME%"
      nested: {a: "%REQ(x-missing)%", b: {c: "%REQ(x-missing)%"}}
      list: ["%REQ(x-missing)%", "%RESPONSE_CODE%", 1]
      emptylist: []
      attempts: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"
      conn: "%CONNECTION_ID%"
      details: "%RESPONSE_CODE_DETAILS%"
      ufr: "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
      ra: "%DOWNSTREAM_REMOTE_ADDRESS%"
      trunc: "%REQ(user-agent):4%"
      esc: "%REQ(x-esc)%"
"#;

#[test]
fn json_lines_match_envoy_for_a_failed_upstream() {
    let log = from_yaml(ENVOY_RUN_FORMAT).expect("valid");
    // As Envoy printed (less `num`).
    assert_eq!(
        log.render(&failed_upstream()).expect("rendered"),
        concat!(
            r#"{"attempts":2,"bool":true,"bytes":121,"code":503,"code_str":"c=503","conn":2,"#,
            r#""details":"upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}","#,
            r#""dur":9,"empty":{},"emptylist":[],"esc":null,"flags":"URX,UF","host":"127.0.0.1:1","int":3,"#,
            r#""list":[null,503,1],"missing":null,"missing2":"a - b","nested":{"a":null,"b":{"c":null}},"#,
            r#""nul":null,"pct":"100%","plain":"plain","ra":"127.0.0.1:52844","rqdur":0,"rsdur":null,"#,
            r#""start":"2026-11-22T18:33:14.250Z","trunc":"curl","ufr":"delayed_connect_error:_Connection_refused"}"#,
            "\n"
        )
    );
}

#[test]
fn json_values_are_escaped() {
    let log = from_yaml(ENVOY_RUN_FORMAT).expect("valid");
    let mut r = failed_upstream();
    r.request_headers = headers(&[("x-esc", r#"a"b\c"#)]);
    let line = log.render(&r).expect("rendered");
    // As Envoy printed for the same header.
    assert!(line.contains(r#""esc":"a\"b\\c""#), "{line}");
}

#[test]
fn omit_empty_values_drops_nulls_and_emptied_objects_like_envoy() {
    let log = from_yaml(
        r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  log_format:
    omit_empty_values: true
    json_format:
      code: "%RESPONSE_CODE%"
      missing: "%REQ(x-missing)%"
      missing2: "a %REQ(x-missing)% b"
      nested: {a: "%REQ(x-missing)%", b: {c: "%REQ(x-missing)%"}}
      nested2: {a: "%REQ(x-missing)%", k: "%RESPONSE_CODE%"}
      list: ["%REQ(x-missing)%", "%RESPONSE_CODE%"]
      emptylist: []
      nul: null
      empty: {}
      lst: [{a: "%REQ(x-missing)%"}, "%RESPONSE_CODE%", []]
"#,
    )
    .expect("valid");
    // As Envoy printed (the last two members from a second run).
    assert_eq!(
        log.render(&failed_upstream()).expect("rendered"),
        "{\"code\":503,\"emptylist\":[],\"list\":[503],\"lst\":[503,[]],\"missing2\":\"a  b\",\"nested2\":{\"k\":503}}\n"
    );
    // The root object is written even when everything is omitted.
    let all_missing = from_yaml(
        r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  log_format: {omit_empty_values: true, json_format: {a: "%REQ(x)%"}}
"#,
    )
    .expect("valid");
    assert_eq!(
        all_missing.render(&LogRecord::default()).expect("rendered"),
        "{}\n"
    );
}

#[test]
fn lone_operators_keep_their_type() {
    let log = from_yaml(
        r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  log_format:
    json_format:
      port: "%DOWNSTREAM_REMOTE_PORT%"
      time: "%START_TIME(%s)%"
      env: "%ENVIRONMENT(TERN_TEST_SURELY_UNSET_VARIABLE)%"
      literal_only: "%%"
      grpc: "%GRPC_STATUS(NUMBER)%"
      float: 0.25
      whole: 2.0
      big: 1.0e21
"#,
    )
    .expect("valid");
    assert_eq!(
        log.render(&full()).expect("rendered"),
        "{\"big\":1e+21,\"env\":\"-\",\"float\":0.25,\"grpc\":14,\"literal_only\":\"%\",\"port\":52828,\"time\":\"1704067200\",\"whole\":2}\n"
    );
}

#[test]
fn json_format_errors_name_the_key() {
    let err = from_yaml(
        r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  log_format: {json_format: {outer: {inner: "%NOPE%"}}}
"#,
    )
    .expect_err("rejected");
    assert_eq!(
        err,
        "typed_config.log_format.json_format.outer.inner: Not supported field in StreamInfo: NOPE"
    );
}

#[test]
fn deprecated_file_json_formats_still_work() {
    for field in ["json_format", "typed_json_format"] {
        let log = from_yaml(&format!(
            r#"
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
  path: /dev/stdout
  {field}: {{code: "%RESPONSE_CODE%", method: "%REQ(:METHOD)%"}}
"#
        ))
        .expect("valid");
        assert_eq!(
            log.render(&failed_upstream()).expect("rendered"),
            "{\"code\":503,\"method\":\"GET\"}\n",
            "{field}"
        );
    }
}
