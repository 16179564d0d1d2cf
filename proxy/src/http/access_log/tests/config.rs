//! Logger selection, format sources and config errors.

use super::super::DEFAULT_FORMAT;
use super::*;

#[test]
fn default_format_parses_and_is_used_when_none_is_given() {
    let expected = line(DEFAULT_FORMAT, &failed_upstream());
    for yaml in [
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}"#,
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog}}"#,
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stdout}}"#,
    ] {
        let log = from_yaml(yaml).expect("valid");
        assert_eq!(
            log.render(&failed_upstream()).as_deref(),
            Some(expected.as_str()),
            "{yaml}"
        );
    }
}

#[test]
fn every_text_format_field_is_read() {
    let r = failed_upstream();
    let cases = [
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stderr, format: "%RESPONSE_CODE%\n"}}"#,
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stderr, log_format: {text_format: "%RESPONSE_CODE%\n"}}}"#,
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog, log_format: {text_format_source: {inline_string: "%RESPONSE_CODE%\n"}}}}"#,
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format_source: {inline_bytes: "JVJFU1BPTlNFX0NPREUlCg=="}}}}"#,
    ];
    for yaml in cases {
        let log = from_yaml(yaml).expect("valid");
        assert_eq!(log.render(&r).as_deref(), Some("503\n"), "{yaml}");
    }
}

#[test]
fn text_format_source_may_be_a_file() {
    let path =
        std::env::temp_dir().join(format!("tern-accesslog-format-{}.txt", std::process::id()));
    std::fs::write(&path, "%REQ(:METHOD)% %RESPONSE_CODE%\n").expect("write format file");
    let log = from_yaml(&format!(
        r#"{{typed_config: {{"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {{text_format_source: {{filename: "{}"}}}}}}}}"#,
        path.display()
    ))
    .expect("valid");
    let _ = std::fs::remove_file(&path);
    assert_eq!(log.render(&failed_upstream()).as_deref(), Some("GET 503\n"));
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases = [
        ("{name: x}", "typed_config: is required"),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog}}"#,
            "typed_config.path: must not be empty",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig}}"#,
            "typed_config: unsupported access logger type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {omit_empty_values: true}}}"#,
            "typed_config.log_format: one of text_format, text_format_source or json_format is required",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stdout, format: "%NOPE%"}}"#,
            "typed_config.format: Not supported field in StreamInfo: NOPE",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/stdout, log_format: {text_format: "%REQ%"}}}"#,
            "typed_config.log_format.text_format: REQ requires parameters",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format_source: {inline_string: "%PROTOCOL(x)%"}}}}"#,
            "typed_config.log_format.text_format_source.inline_string: PROTOCOL does not take any parameters or length",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format_source: {environment_variable: TERN_TEST_SURELY_UNSET_VARIABLE}}}}"#,
            "typed_config.log_format.text_format_source.environment_variable: TERN_TEST_SURELY_UNSET_VARIABLE is not set",
        ),
        (
            r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format: x, formatters: [{name: f, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: x}}]}}}"#,
            "typed_config.log_format.formatters[0]: unsupported formatter \"f\" (type.googleapis.com/google.protobuf.StringValue)",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(from_yaml(yaml).expect_err("rejected"), expected, "{yaml}");
    }
}

#[test]
fn an_unwritable_path_is_a_config_error() {
    let err = from_yaml(
        r#"{typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /nonexistent-dir/tern/access.log}}"#,
    )
    .expect_err("rejected");
    assert!(
        err.starts_with("typed_config.path: cannot open /nonexistent-dir/tern/access.log: "),
        "{err}"
    );
}
