//! The string and header matchers the HTTP filters read from their configs
//! (`envoy.type.matcher.v3.StringMatcher`, `envoy.config.route.v3.HeaderMatcher`), with Envoy's
//! semantics: regexes match the whole value, `ignore_case` is ASCII-only and does not apply to
//! regexes, a header with several values is matched as the values joined by `,`, and a missing
//! header fails every matcher except `present_match: false` (inverted or not, as Envoy's
//! `HeaderUtility::matchHeaders` decides).
//!
//! Deliberately minimal: only what the fault and CORS filters need. When the route model's own
//! matchers land, these should fold into them.

use http::{HeaderMap, HeaderName};
use std::borrow::Cow;
use xds_client::pb::envoy::config::route::v3 as route;
use xds_client::pb::envoy::r#type::matcher::v3 as matcher;

/// A compiled `StringMatcher`.
#[derive(Debug, Clone)]
pub struct StringMatcher {
    pattern: Pattern,
    /// ASCII case-insensitive (patterns are stored lowercased); never set for regexes.
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Anchored at both ends: Envoy's `safe_regex` is a full match.
    Regex(regex::Regex),
}

impl StringMatcher {
    /// Compiles `p`; errors name `field`.
    pub fn from_proto(p: &matcher::StringMatcher, field: &str) -> Result<Self, String> {
        use matcher::string_matcher::MatchPattern;
        let folded = |s: &str| {
            if p.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let pattern = match &p.match_pattern {
            Some(MatchPattern::Exact(s)) => Pattern::Exact(folded(s)),
            Some(MatchPattern::Prefix(s)) => Pattern::Prefix(folded(s)),
            Some(MatchPattern::Suffix(s)) => Pattern::Suffix(folded(s)),
            Some(MatchPattern::Contains(s)) => Pattern::Contains(folded(s)),
            Some(MatchPattern::SafeRegex(r)) => {
                return Self::regex(&r.regex, &format!("{field}.safe_regex"));
            }
            Some(MatchPattern::Custom(c)) => {
                return Err(format!(
                    "{field}.custom: custom string matcher {:?} is not supported",
                    c.name
                ));
            }
            None => return Err(format!("{field}: no match pattern set")),
        };
        Ok(StringMatcher {
            pattern,
            ignore_case: p.ignore_case,
        })
    }

    /// A full-match regex (`safe_regex`); errors name `field`.
    pub fn regex(regex: &str, field: &str) -> Result<Self, String> {
        let anchored = format!("^(?:{regex})$");
        let compiled = regex::Regex::new(&anchored)
            .map_err(|e| format!("{field}: invalid regex {regex:?}: {e}"))?;
        Ok(StringMatcher {
            pattern: Pattern::Regex(compiled),
            ignore_case: false,
        })
    }

    fn literal(pattern: Pattern) -> Self {
        StringMatcher {
            pattern,
            ignore_case: false,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        let value: Cow<'_, str> = if self.ignore_case {
            Cow::Owned(value.to_ascii_lowercase())
        } else {
            Cow::Borrowed(value)
        };
        match &self.pattern {
            Pattern::Exact(s) => *value == **s,
            Pattern::Prefix(s) => value.starts_with(s.as_str()),
            Pattern::Suffix(s) => value.ends_with(s.as_str()),
            Pattern::Contains(s) => value.contains(s.as_str()),
            Pattern::Regex(r) => r.is_match(&value),
        }
    }
}

/// A compiled `HeaderMatcher` over regular (non-pseudo) request headers.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    name: HeaderName,
    test: HeaderTest,
    invert: bool,
    treat_missing_as_empty: bool,
}

#[derive(Debug, Clone)]
enum HeaderTest {
    /// The deprecated `exact_match`: an empty value matches any value.
    Exact(String),
    String(StringMatcher),
    /// `[start, end)` over the value parsed as an integer.
    Range {
        start: i64,
        end: i64,
    },
    Present(bool),
}

impl HeaderMatcher {
    /// Compiles `p`; errors name `field`. Pseudo-headers (`:path`, `:authority`, ...) are
    /// refused: the filters see only the regular header map.
    #[allow(deprecated)] // exact/prefix/suffix/contains/safe_regex_match are still sent
    pub fn from_proto(p: &route::HeaderMatcher, field: &str) -> Result<Self, String> {
        use route::header_matcher::HeaderMatchSpecifier as Spec;
        if p.name.starts_with(':') {
            return Err(format!(
                "{field}.name: matching pseudo-header {:?} is not supported here",
                p.name
            ));
        }
        let name = HeaderName::from_bytes(p.name.as_bytes())
            .map_err(|_| format!("{field}.name: invalid header name {:?}", p.name))?;
        let test = match &p.header_match_specifier {
            Some(Spec::ExactMatch(s)) => HeaderTest::Exact(s.clone()),
            Some(Spec::SafeRegexMatch(r)) => HeaderTest::String(StringMatcher::regex(
                &r.regex,
                &format!("{field}.safe_regex_match"),
            )?),
            Some(Spec::RangeMatch(r)) => HeaderTest::Range {
                start: r.start,
                end: r.end,
            },
            Some(Spec::PresentMatch(present)) => HeaderTest::Present(*present),
            Some(Spec::PrefixMatch(s)) => {
                HeaderTest::String(StringMatcher::literal(Pattern::Prefix(s.clone())))
            }
            Some(Spec::SuffixMatch(s)) => {
                HeaderTest::String(StringMatcher::literal(Pattern::Suffix(s.clone())))
            }
            Some(Spec::ContainsMatch(s)) => {
                HeaderTest::String(StringMatcher::literal(Pattern::Contains(s.clone())))
            }
            Some(Spec::StringMatch(m)) => HeaderTest::String(StringMatcher::from_proto(
                m,
                &format!("{field}.string_match"),
            )?),
            // Envoy treats a matcher with no specifier as `present_match: true`.
            None => HeaderTest::Present(true),
        };
        Ok(HeaderMatcher {
            name,
            test,
            invert: p.invert_match,
            treat_missing_as_empty: p.treat_missing_header_as_empty,
        })
    }

    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let value = joined_value(headers, &self.name);
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => Cow::Borrowed(""),
            None => {
                let present_false = matches!(self.test, HeaderTest::Present(false));
                let present_true = matches!(self.test, HeaderTest::Present(true));
                return if self.invert {
                    present_true
                } else {
                    present_false
                };
            }
        };
        let matched = match &self.test {
            HeaderTest::Exact(s) => s.is_empty() || *value == **s,
            HeaderTest::String(m) => m.matches(&value),
            HeaderTest::Range { start, end } => value
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| n >= *start && n < *end),
            HeaderTest::Present(present) => *present,
        };
        matched != self.invert
    }
}

/// Every value of `name` joined by `,` (Envoy's `getAllOfHeaderAsString`); `None` when absent.
fn joined_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let joined = out.to_mut();
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

/// Whether every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[HeaderMatcher], headers: &HeaderMap) -> bool {
    matchers.iter().all(|m| m.matches(headers))
}

#[cfg(test)]
#[allow(deprecated)] // the deprecated HeaderMatcher forms are tested on purpose
mod tests {
    use super::*;
    use matcher::string_matcher::MatchPattern;
    use route::header_matcher::HeaderMatchSpecifier as Spec;

    fn string(pattern: MatchPattern, ignore_case: bool) -> StringMatcher {
        StringMatcher::from_proto(
            &matcher::StringMatcher {
                ignore_case,
                match_pattern: Some(pattern),
            },
            "m",
        )
        .expect("valid")
    }

    fn header(name: &str, spec: Option<Spec>, invert: bool) -> HeaderMatcher {
        HeaderMatcher::from_proto(
            &route::HeaderMatcher {
                name: name.into(),
                invert_match: invert,
                header_match_specifier: spec,
                ..Default::default()
            },
            "h",
        )
        .expect("valid")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn string_matchers_follow_envoy_semantics() {
        assert!(string(MatchPattern::Exact("Abc".into()), true).matches("aBC"));
        assert!(!string(MatchPattern::Exact("Abc".into()), false).matches("aBC"));
        assert!(string(MatchPattern::Prefix("https://".into()), false).matches("https://a"));
        assert!(string(MatchPattern::Suffix(".COM".into()), true).matches("x.com"));
        assert!(string(MatchPattern::Contains("mid".into()), false).matches("amidst"));
        let re = string(
            MatchPattern::SafeRegex(matcher::RegexMatcher {
                regex: "a+b".into(),
                ..Default::default()
            }),
            false,
        );
        assert!(re.matches("aab"));
        assert!(!re.matches("xaab"), "regexes match the whole value");
    }

    #[test]
    fn bad_regex_and_custom_matchers_are_refused_by_field() {
        let err = StringMatcher::from_proto(
            &matcher::StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(matcher::RegexMatcher {
                    regex: "(".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            "allow_origin_string_match[0]",
        )
        .unwrap_err();
        assert!(
            err.starts_with("allow_origin_string_match[0].safe_regex:"),
            "{err}"
        );
    }

    #[test]
    fn missing_header_fails_unless_present_false() {
        let h = headers(&[]);
        assert!(!header("x", Some(Spec::ExactMatch("v".into())), false).matches(&h));
        assert!(
            !header("x", Some(Spec::ExactMatch("v".into())), true).matches(&h),
            "inversion does not make a missing header match"
        );
        assert!(header("x", Some(Spec::PresentMatch(false)), false).matches(&h));
        assert!(header("x", Some(Spec::PresentMatch(true)), true).matches(&h));
        assert!(!header("x", Some(Spec::PresentMatch(true)), false).matches(&h));
    }

    #[test]
    fn multiple_values_are_joined_with_commas() {
        let h = headers(&[("x", "a"), ("x", "b")]);
        assert!(header("x", Some(Spec::ExactMatch("a,b".into())), false).matches(&h));
        assert!(!header("x", Some(Spec::ExactMatch("a".into())), false).matches(&h));
        assert!(header("x", Some(Spec::ExactMatch("a".into())), true).matches(&h));
    }

    #[test]
    fn range_and_empty_exact() {
        let h = headers(&[("n", "10")]);
        let range = |start, end| {
            header(
                "n",
                Some(Spec::RangeMatch(
                    xds_client::pb::envoy::r#type::v3::Int64Range { start, end },
                )),
                false,
            )
        };
        assert!(range(10, 11).matches(&h));
        assert!(!range(0, 10).matches(&h), "the end is exclusive");
        assert!(header("n", Some(Spec::ExactMatch(String::new())), false).matches(&h));
    }

    #[test]
    fn pseudo_headers_are_refused() {
        let err = HeaderMatcher::from_proto(
            &route::HeaderMatcher {
                name: ":path".into(),
                ..Default::default()
            },
            "headers[0]",
        )
        .unwrap_err();
        assert!(err.starts_with("headers[0].name:"), "{err}");
    }
}
