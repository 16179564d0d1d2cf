//! `AccessLog.filter`.

use super::*;

/// A stdout logger printing the response code, behind `filter` (YAML flow mapping).
fn filtered(filter: &str) -> Result<AccessLog, String> {
    from_yaml(&format!(
        r#"
filter: {filter}
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
  log_format: {{text_format_source: {{inline_string: "%RESPONSE_CODE%"}}}}
"#
    ))
}

fn logged(log: &AccessLog, record: &LogRecord) -> bool {
    log.render(record).is_some()
}

fn with_code(code: u16) -> LogRecord {
    LogRecord {
        response_code: code,
        ..Default::default()
    }
}

#[test]
fn status_code_filter_compares_with_the_default_value() {
    let ge = filtered(
        "{status_code_filter: {comparison: {op: GE, value: {default_value: 400, runtime_key: k}}}}",
    )
    .expect("valid");
    assert!(logged(&ge, &with_code(503)));
    assert!(logged(&ge, &with_code(400)));
    assert!(!logged(&ge, &with_code(200)));
    let eq =
        filtered("{status_code_filter: {comparison: {value: {default_value: 0, runtime_key: k}}}}")
            .expect("valid");
    assert!(logged(&eq, &with_code(0)));
    assert!(!logged(&eq, &with_code(200)));
    let ne = filtered(
        "{status_code_filter: {comparison: {op: NE, value: {default_value: 200, runtime_key: k}}}}",
    )
    .expect("valid");
    assert!(logged(&ne, &with_code(204)));
    assert!(!logged(&ne, &with_code(200)));
}

#[test]
fn duration_filter_compares_whole_milliseconds() {
    let le = filtered(
        "{duration_filter: {comparison: {op: LE, value: {default_value: 10, runtime_key: k}}}}",
    )
    .expect("valid");
    let took = |micros| LogRecord {
        duration: Duration::from_micros(micros),
        ..Default::default()
    };
    assert!(logged(&le, &took(10_999)));
    assert!(!logged(&le, &took(11_000)));
}

#[test]
fn response_flag_filter_matches_any_listed_flag() {
    let listed = filtered("{response_flag_filter: {flags: [UH, UF]}}").expect("valid");
    let flags = |f: &str| LogRecord {
        response_flags: f.into(),
        ..Default::default()
    };
    assert!(logged(&listed, &flags("URX,UF")));
    assert!(logged(&listed, &flags("UH")));
    assert!(!logged(&listed, &flags("URX")));
    assert!(!logged(&listed, &flags("")));
    let any = filtered("{response_flag_filter: {}}").expect("valid");
    assert!(logged(&any, &flags("DC")));
    assert!(!logged(&any, &flags("")));
    assert!(!logged(&any, &flags("-")));
}

#[test]
fn and_or_and_not_health_check_filters_combine() {
    let and = filtered(
        "{and_filter: {filters: [{not_health_check_filter: {}}, {status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}]}}",
    )
    .expect("valid");
    assert!(logged(&and, &with_code(503)));
    assert!(!logged(&and, &with_code(404)));
    let or = filtered(
        "{or_filter: {filters: [{status_code_filter: {comparison: {value: {default_value: 404, runtime_key: k}}}}, {response_flag_filter: {flags: [NR]}}]}}",
    )
    .expect("valid");
    assert!(logged(&or, &with_code(404)));
    assert!(logged(
        &or,
        &LogRecord {
            response_flags: "NR".into(),
            ..Default::default()
        }
    ));
    assert!(!logged(&or, &with_code(200)));
}

#[test]
fn runtime_filter_samples_by_request_id() {
    let id = |id: &str| LogRecord {
        request_id: Some(id.into()),
        ..Default::default()
    };
    let half = filtered(
        "{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 50, denominator: HUNDRED}}}",
    )
    .expect("valid");
    // 0x00000031 % 100 = 49 < 50; 0x00000032 % 100 = 50.
    assert!(logged(&half, &id("00000031-aaaa-4aaa-8aaa-aaaaaaaaaaaa")));
    assert!(!logged(&half, &id("00000032-aaaa-4aaa-8aaa-aaaaaaaaaaaa")));
    let all = filtered(
        "{runtime_filter: {runtime_key: k, percent_sampled: {numerator: 100}, use_independent_randomness: true}}",
    )
    .expect("valid");
    assert!((0..100).all(|_| logged(&all, &LogRecord::default())));
    // Unset percent_sampled is Envoy's default 0%.
    let none = filtered("{runtime_filter: {runtime_key: k}}").expect("valid");
    assert!((0..100).all(|_| !logged(&none, &id("ffffffff-0000-4000-8000-000000000000"))));
}

#[test]
fn bad_filters_are_rejected_by_name() {
    let cases = [
        (
            "{and_filter: {filters: [{not_health_check_filter: {}}]}}",
            "filter.and_filter.filters: needs at least 2 filters",
        ),
        (
            "{status_code_filter: {}}",
            "filter.status_code_filter.comparison: value is required",
        ),
        (
            "{status_code_filter: {comparison: {op: GE}}}",
            "filter.status_code_filter.comparison.value: value is required",
        ),
        (
            "{response_flag_filter: {flags: [UF, XX]}}",
            "filter.response_flag_filter.flags[1]: unknown response flag \"XX\"",
        ),
        (
            "{runtime_filter: {runtime_key: \"\"}}",
            "filter.runtime_filter.runtime_key: must not be empty",
        ),
        ("{}", "filter: a filter type is required"),
        (
            "{traceable_filter: {}}",
            "filter: traceable_filter is not supported",
        ),
        (
            "{or_filter: {filters: [{not_health_check_filter: {}}, {header_filter: {header: {name: x}}}]}}",
            "filter.or_filter.filters[1]: header_filter is not supported",
        ),
        (
            "{grpc_status_filter: {statuses: [OK]}}",
            "filter: grpc_status_filter is not supported",
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            filtered(filter).expect_err("rejected"),
            expected,
            "{filter}"
        );
    }
}
