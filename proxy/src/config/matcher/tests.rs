use super::*;
use http::{HeaderValue, Method};
use serde_json::{Value, json};
use xds_client::proto_json::{ReadOptions, from_value};

/// An owned request to borrow [`RequestView`]s from in tests.
pub(crate) struct TestRequest {
    pub method: Method,
    pub scheme: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: HeaderMap,
}

impl TestRequest {
    pub fn get(authority: &str, path: &str) -> Self {
        Self {
            method: Method::GET,
            scheme: "http",
            authority: authority.into(),
            path: path.into(),
            headers: HeaderMap::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let value = HeaderValue::from_str(value).expect("valid header value");
        self.headers.append(name, value);
        self
    }

    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    pub fn scheme(mut self, scheme: &'static str) -> Self {
        self.scheme = scheme;
        self
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: self.scheme,
            authority: &self.authority,
            path: &self.path,
            headers: &self.headers,
        }
    }
}

fn string_matcher(value: Value) -> Result<StringMatcher, ConfigError> {
    let proto: proto::StringMatcher = from_value(value, ReadOptions::default()).expect("proto");
    StringMatcher::try_from(&proto)
}

fn header_matcher(value: Value) -> HeaderMatcher {
    try_header_matcher(value).expect("valid header matcher")
}

fn try_header_matcher(value: Value) -> Result<HeaderMatcher, ConfigError> {
    let proto: route_proto::HeaderMatcher =
        from_value(value, ReadOptions::default()).expect("proto");
    HeaderMatcher::try_from(&proto)
}

#[test]
fn string_matcher_kinds_match_like_envoy() {
    let cases = [
        (json!({"exact": "abc"}), "abc", true),
        (json!({"exact": "abc"}), "abcd", false),
        (json!({"exact": "abc", "ignore_case": true}), "ABC", true),
        (json!({"exact": ""}), "", true),
        (json!({"prefix": "ab"}), "abc", true),
        (json!({"prefix": "ab"}), "xab", false),
        (json!({"prefix": "AB", "ignore_case": true}), "abc", true),
        (json!({"suffix": "bc"}), "abc", true),
        (json!({"suffix": "bc"}), "c", false),
        (json!({"suffix": "BC", "ignore_case": true}), "abc", true),
        (json!({"contains": "b"}), "abc", true),
        (json!({"contains": "B"}), "abc", false),
        (json!({"contains": "B", "ignore_case": true}), "abc", true),
        (json!({"safe_regex": {"regex": "a.c"}}), "abc", true),
        // Whole-string semantics: a partial match is not a match.
        (json!({"safe_regex": {"regex": "b"}}), "abc", false),
        (json!({"safe_regex": {"regex": "a|b"}}), "b", true),
        // ignore_case never applies to regexes.
        (
            json!({"safe_regex": {"regex": "abc"}, "ignore_case": true}),
            "ABC",
            false,
        ),
    ];
    for (config, input, expected) in cases {
        let m = string_matcher(config.clone()).unwrap();
        assert_eq!(m.matches(input), expected, "{config} on {input:?}");
    }
}

#[test]
fn string_matcher_rejections_name_the_field() {
    let cases = [
        (json!({"prefix": ""}), "prefix"),
        (json!({"suffix": ""}), "suffix"),
        (json!({"contains": ""}), "contains"),
        (json!({"safe_regex": {"regex": "a("}}), "safe_regex"),
        (json!({}), ""),
    ];
    for (config, field) in cases {
        let e = string_matcher(config.clone()).unwrap_err();
        assert_eq!(e.field, field, "{config}: {e}");
    }
}

#[test]
fn oversized_regex_is_rejected_not_compiled() {
    let e = string_matcher(json!({"safe_regex": {"regex": "(\\w{100}){100}"}})).unwrap_err();
    assert_eq!(e.field, "safe_regex");
    assert!(e.reason.contains("invalid regex"), "{e}");
}

#[test]
fn header_matcher_kinds_match_like_envoy() {
    let req = TestRequest::get("a.example:8080", "/p?q=1")
        .header("x-v", "abc")
        .header("x-n", "42");
    let cases = [
        (
            json!({"name": "x-v", "string_match": {"exact": "abc"}}),
            true,
        ),
        (
            json!({"name": "X-V", "string_match": {"exact": "abc"}}),
            true,
        ),
        (
            json!({"name": "x-v", "string_match": {"exact": "ab"}}),
            false,
        ),
        (json!({"name": "x-v", "exact_match": "abc"}), true),
        (json!({"name": "x-v", "exact_match": "zzz"}), false),
        // Legacy empty exact_match: any value.
        (json!({"name": "x-v", "exact_match": ""}), true),
        (json!({"name": "x-v", "prefix_match": "ab"}), true),
        (json!({"name": "x-v", "suffix_match": "bc"}), true),
        (json!({"name": "x-v", "contains_match": "b"}), true),
        (
            json!({"name": "x-v", "safe_regex_match": {"regex": "a.c"}}),
            true,
        ),
        (
            json!({"name": "x-v", "safe_regex_match": {"regex": "a"}}),
            false,
        ),
        (
            json!({"name": "x-n", "range_match": {"start": 40, "end": 43}}),
            true,
        ),
        (
            json!({"name": "x-n", "range_match": {"start": 40, "end": 42}}),
            false,
        ),
        (
            json!({"name": "x-v", "range_match": {"start": 0, "end": 100}}),
            false,
        ),
        (json!({"name": "x-v", "present_match": true}), true),
        (json!({"name": "x-v", "present_match": false}), false),
        (json!({"name": "x-missing", "present_match": false}), true),
        (json!({"name": "x-missing", "present_match": true}), false),
        // No rule at all is a presence check.
        (json!({"name": "x-v"}), true),
        (json!({"name": "x-missing"}), false),
    ];
    for (config, expected) in cases {
        let m = header_matcher(config.clone());
        assert_eq!(m.matches_request(&req.view()), expected, "{config}");
    }
}

#[test]
fn invert_flips_present_headers_but_not_missing_ones() {
    let req = TestRequest::get("a", "/").header("x-v", "abc");
    let cases = [
        (
            json!({"name": "x-v", "string_match": {"exact": "abc"}}),
            false,
        ),
        (
            json!({"name": "x-v", "string_match": {"exact": "zzz"}}),
            true,
        ),
        (json!({"name": "x-v", "present_match": true}), false),
        // A missing header fails every value rule, inverted or not...
        (
            json!({"name": "x-missing", "string_match": {"exact": "abc"}}),
            false,
        ),
        (
            json!({"name": "x-missing", "range_match": {"start": 0, "end": 10}}),
            false,
        ),
        // ...but satisfies an inverted presence rule.
        (json!({"name": "x-missing", "present_match": true}), true),
        (json!({"name": "x-missing", "present_match": false}), false),
    ];
    for (mut config, expected) in cases {
        config["invert_match"] = json!(true);
        let m = header_matcher(config.clone());
        assert_eq!(m.matches_request(&req.view()), expected, "{config}");
    }
}

#[test]
fn treat_missing_header_as_empty_matches_the_empty_string() {
    let req = TestRequest::get("a", "/");
    let cases = [
        (json!({"name": "x", "string_match": {"exact": ""}}), true),
        (json!({"name": "x", "string_match": {"prefix": "a"}}), false),
        // Envoy's own example: an empty value is outside any range, so inverted it matches.
        (
            json!({"name": "x", "range_match": {"start": 0, "end": 10}, "invert_match": true}),
            true,
        ),
    ];
    for (mut config, expected) in cases {
        config["treat_missing_header_as_empty"] = json!(true);
        let m = header_matcher(config.clone());
        assert_eq!(m.matches_request(&req.view()), expected, "{config}");
    }
}

/// Envoy 1.40 (checked in tests/tests/http_routes.rs): any one value of a repeated header
/// matching is enough, values are not joined, and an inverted matcher fails if any value matches.
#[test]
fn any_value_of_a_repeated_header_matches() {
    let req = TestRequest::get("a", "/")
        .header("x-multi", "a")
        .header("x-multi", "b");
    let joined = header_matcher(json!({"name": "x-multi", "string_match": {"exact": "a,b"}}));
    let second = header_matcher(json!({"name": "x-multi", "string_match": {"exact": "b"}}));
    let inverted = header_matcher(
        json!({"name": "x-multi", "string_match": {"exact": "a"}, "invert_match": true}),
    );
    assert!(!joined.matches_request(&req.view()));
    assert!(second.matches_request(&req.view()));
    assert!(second.matches(&req.headers));
    assert!(!inverted.matches_request(&req.view()));
}

#[test]
fn pseudo_headers_resolve_to_the_request_line() {
    let req = TestRequest::get("Shop.Example:443", "/cart?id=7")
        .method(Method::POST)
        .scheme("https")
        .header("host", "Shop.Example:443");
    let cases = [
        (
            json!({"name": ":method", "string_match": {"exact": "POST"}}),
            true,
        ),
        (
            json!({"name": ":authority", "string_match": {"exact": "Shop.Example:443"}}),
            true,
        ),
        (
            json!({"name": ":scheme", "string_match": {"exact": "https"}}),
            true,
        ),
        (
            json!({"name": ":path", "string_match": {"exact": "/cart?id=7"}}),
            true,
        ),
        (json!({"name": ":protocol", "present_match": true}), false),
        // Envoy keeps the HTTP/1 Host as :authority; a `host` matcher sees nothing.
        (json!({"name": "host", "present_match": true}), false),
    ];
    for (config, expected) in cases {
        let m = header_matcher(config.clone());
        assert_eq!(m.matches_request(&req.view()), expected, "{config}");
    }
    // Against a bare header map (responses), pseudo-headers are absent.
    let method = header_matcher(json!({"name": ":method", "present_match": true}));
    assert!(!method.matches(&req.headers));
}

#[test]
fn header_matcher_rejections_name_the_field() {
    let cases = [
        (json!({"name": ""}), "name"),
        (json!({"name": "bad header"}), "name"),
        (json!({"name": "x", "prefix_match": ""}), "prefix_match"),
        (
            json!({"name": "x", "safe_regex_match": {"regex": "("}}),
            "safe_regex_match",
        ),
        (
            json!({"name": "x", "string_match": {"suffix": ""}}),
            "string_match.suffix",
        ),
    ];
    for (config, field) in cases {
        let e = try_header_matcher(config.clone()).unwrap_err();
        assert_eq!(e.field, field, "{config}: {e}");
    }
}

#[test]
fn re2_substitutions_become_regex_crate_replacements() {
    let re = Regex::new("^/(a)(b)$").unwrap();
    assert_eq!(
        re2_substitution(&re, r"\2-\1-\0").unwrap(),
        "${2}-${1}-${0}"
    );
    assert_eq!(re2_substitution(&re, r"cost $5 \\").unwrap(), r"cost $$5 \");
    assert!(re2_substitution(&re, r"\3").is_err());
    assert!(re2_substitution(&re, r"\x").is_err());
    assert!(re2_substitution(&re, "\\").is_err());
    let out = re.replace_all("/ab", re2_substitution(&re, r"\2\1$").unwrap().as_str());
    assert_eq!(out, "ba$");
}

#[test]
fn status_pseudo_header_matches_responses_only() {
    let m = header_matcher(json!({"name": ":status", "range_match": {"start": 500, "end": 600}}));
    let headers = HeaderMap::new();
    assert!(m.matches_response(http::StatusCode::BAD_GATEWAY, &headers));
    assert!(!m.matches_response(http::StatusCode::OK, &headers));
    assert!(!m.matches(&headers));
    assert!(!m.matches_request(&TestRequest::get("a", "/").view()));
}
