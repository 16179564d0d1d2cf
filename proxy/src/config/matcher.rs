//! String and header matchers, shared by routes, retry policies and the HTTP filters that match
//! on requests.
//!
//! Envoy's `envoy.type.matcher.v3.StringMatcher` and `envoy.config.route.v3.HeaderMatcher` are
//! converted once into plain matchers with Envoy's semantics kept exactly:
//! - `safe_regex` is RE2 matched against the whole string; we compile it anchored
//!   (`^(?:...)$`) with a size limit, so a hostile pattern is a config error, not a memory spike;
//! - `ignore_case` is ASCII case folding and never applies to regexes;
//! - a header with several values matches when any one of its values does (Envoy 1.40 checks
//!   each value; `invert_match` then fails if any value matches);
//! - the pseudo-headers `:method`, `:authority`, `:scheme` and `:path` resolve to the request
//!   line through [`RequestView`], and `:status` to a response's status. `host` never matches: Envoy keeps an HTTP/1 `Host` as
//!   `:authority`, and its docs tell users to match that instead.
//!
//! Conversion errors carry the field path relative to the matcher and an empty resource; the
//! enclosing converter fills in the resource and prefixes its own path.

use super::ConfigError;
use http::HeaderMap;
use regex::{Regex, RegexBuilder};
use std::borrow::Cow;
use xds_client::pb::envoy::config::route::v3 as route_proto;
use xds_client::pb::envoy::r#type::matcher::v3 as proto;

#[cfg(test)]
pub(crate) mod tests;

/// The parts of a request that routing and matching read.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a http::Method,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// `Host` or `:authority` as received; may carry a port.
    pub authority: &'a str,
    /// Path and query as received, e.g. `/a/b?x=1`; empty for a CONNECT without a path.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Upper bound on a compiled regex program. RE2 in Envoy limits "program size" instead; this is
/// the `regex` crate's nearest equivalent and admits every realistic route pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles an Envoy `RegexMatcher` for whole-string matching.
pub fn full_match_regex(m: &proto::RegexMatcher) -> Result<Regex, String> {
    compile(&format!("^(?:{})$", m.regex))
}

/// Compiles a pattern for searching (rewrites), unanchored as in RE2's `GlobalReplace`.
pub fn search_regex(m: &proto::RegexMatcher) -> Result<Regex, String> {
    compile(&m.regex)
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

/// Converts an RE2 rewrite string (`\1` for group 1, `\0` for the whole match, `\\` for a
/// backslash) into the `regex` crate's replacement syntax (`${1}`, `$$` for a dollar), checking
/// that every group it names exists, as RE2 does.
pub fn re2_substitution(regex: &Regex, rewrite: &str) -> Result<String, String> {
    let mut out = String::with_capacity(rewrite.len() + 8);
    let mut chars = rewrite.chars();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(d @ '0'..='9') => {
                    let group = d as usize - '0' as usize;
                    if group >= regex.captures_len() {
                        return Err(format!(
                            "substitution refers to group {group} but the regex has {}",
                            regex.captures_len() - 1
                        ));
                    }
                    out.push_str(&format!("${{{group}}}"));
                }
                Some(other) => {
                    return Err(format!("invalid escape \\{other} in substitution"));
                }
                None => return Err("substitution ends with a lone backslash".into()),
            },
            other => out.push(other),
        }
    }
    Ok(out)
}

/// A validated `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone, PartialEq)]
pub struct StringMatcher {
    pub pattern: StringPattern,
    /// ASCII case-insensitive exact/prefix/suffix/contains; ignored for regexes, as in Envoy.
    pub ignore_case: bool,
}

#[derive(Debug, Clone)]
pub enum StringPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Anchored: matches the whole input.
    Regex(Regex),
}

/// Two patterns are equal when they are written the same (regexes: the same source).
impl PartialEq for StringPattern {
    fn eq(&self, other: &Self) -> bool {
        use StringPattern as P;
        match (self, other) {
            (P::Exact(a), P::Exact(b))
            | (P::Prefix(a), P::Prefix(b))
            | (P::Suffix(a), P::Suffix(b))
            | (P::Contains(a), P::Contains(b)) => a == b,
            (P::Regex(a), P::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl StringMatcher {
    /// A case-sensitive matcher from a legacy header field (`prefix_match` and friends).
    fn plain(pattern: StringPattern) -> Self {
        Self {
            pattern,
            ignore_case: false,
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        let ic = self.ignore_case;
        match &self.pattern {
            StringPattern::Exact(p) if ic => s.eq_ignore_ascii_case(p),
            StringPattern::Exact(p) => s == p,
            StringPattern::Prefix(p) => starts_with(s, p, ic),
            StringPattern::Suffix(p) => {
                s.len() >= p.len() && {
                    let tail = &s.as_bytes()[s.len() - p.len()..];
                    if ic {
                        tail.eq_ignore_ascii_case(p.as_bytes())
                    } else {
                        tail == p.as_bytes()
                    }
                }
            }
            StringPattern::Contains(p) if ic => contains_ignore_ascii_case(s, p),
            StringPattern::Contains(p) => s.contains(p.as_str()),
            StringPattern::Regex(re) => re.is_match(s),
        }
    }
}

/// `s` starts with `prefix`, optionally ignoring ASCII case.
pub(crate) fn starts_with(s: &str, prefix: &str, ignore_case: bool) -> bool {
    s.len() >= prefix.len() && {
        let head = &s.as_bytes()[..prefix.len()];
        if ignore_case {
            head.eq_ignore_ascii_case(prefix.as_bytes())
        } else {
            head == prefix.as_bytes()
        }
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl TryFrom<&proto::StringMatcher> for StringMatcher {
    type Error = ConfigError;

    fn try_from(m: &proto::StringMatcher) -> Result<Self, ConfigError> {
        use proto::string_matcher::MatchPattern as P;
        let non_empty = |field: &str, s: &String| {
            if s.is_empty() {
                Err(ConfigError::new("", field, "must not be empty"))
            } else {
                Ok(s.clone())
            }
        };
        let pattern = match &m.match_pattern {
            Some(P::Exact(s)) => StringPattern::Exact(s.clone()),
            Some(P::Prefix(s)) => StringPattern::Prefix(non_empty("prefix", s)?),
            Some(P::Suffix(s)) => StringPattern::Suffix(non_empty("suffix", s)?),
            Some(P::Contains(s)) => StringPattern::Contains(non_empty("contains", s)?),
            Some(P::SafeRegex(re)) => StringPattern::Regex(
                full_match_regex(re).map_err(|r| ConfigError::new("", "safe_regex", r))?,
            ),
            Some(P::Custom(ext)) => {
                return Err(ConfigError::new(
                    "",
                    "custom",
                    format!("custom string matcher {:?} is not supported", ext.name),
                ));
            }
            None => return Err(ConfigError::new("", "", "a match pattern is required")),
        };
        Ok(Self {
            pattern,
            ignore_case: m.ignore_case,
        })
    }
}

/// Where a header matcher reads its value from.
#[derive(Debug, Clone)]
enum HeaderKey {
    Method,
    Authority,
    Scheme,
    Path,
    /// Responses only.
    Status,
    /// Another pseudo-header, or `host`: never present (see the module docs).
    Absent,
    Name(http::HeaderName),
}

impl HeaderKey {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            ":method" => Self::Method,
            ":authority" => Self::Authority,
            ":scheme" => Self::Scheme,
            ":path" => Self::Path,
            ":status" => Self::Status,
            "host" => Self::Absent,
            pseudo if pseudo.starts_with(':') => Self::Absent,
            _ => Self::Name(
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name {name:?}"))?,
            ),
        })
    }
}

/// A validated `envoy.config.route.v3.HeaderMatcher`.
#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    /// Lowercased header name; may be a pseudo-header.
    pub name: String,
    key: HeaderKey,
    pub rule: HeaderRule,
    pub invert: bool,
    /// A missing header is matched as the empty string instead of failing.
    pub treat_missing_as_empty: bool,
}

/// What a header's value must satisfy.
#[derive(Debug, Clone)]
pub enum HeaderRule {
    String(StringMatcher),
    /// Legacy `exact_match: ""`: any value matches (Envoy's quirk, kept for old configs).
    AnyValue,
    /// `[start, end)` over the value parsed as a decimal i64.
    Range {
        start: i64,
        end: i64,
    },
    /// `present_match`: true requires the header, false requires its absence.
    Present(bool),
}

impl TryFrom<&route_proto::HeaderMatcher> for HeaderMatcher {
    type Error = ConfigError;

    // The legacy `*_match` fields are deprecated but still sent by older control planes.
    #[allow(deprecated)]
    fn try_from(m: &route_proto::HeaderMatcher) -> Result<Self, ConfigError> {
        use route_proto::header_matcher::HeaderMatchSpecifier as S;
        let name = m.name.to_ascii_lowercase();
        if name.is_empty() {
            return Err(ConfigError::new("", "name", "must not be empty"));
        }
        let key = HeaderKey::parse(&name).map_err(|r| ConfigError::new("", "name", r))?;
        let legacy = |field: &str, s: &String, make: fn(String) -> StringPattern| {
            if s.is_empty() {
                Err(ConfigError::new("", field, "must not be empty"))
            } else {
                Ok(HeaderRule::String(StringMatcher::plain(make(s.clone()))))
            }
        };
        let rule = match &m.header_match_specifier {
            None => HeaderRule::Present(true),
            Some(S::ExactMatch(s)) if s.is_empty() => HeaderRule::AnyValue,
            Some(S::ExactMatch(s)) => {
                HeaderRule::String(StringMatcher::plain(StringPattern::Exact(s.clone())))
            }
            Some(S::PrefixMatch(s)) => legacy("prefix_match", s, StringPattern::Prefix)?,
            Some(S::SuffixMatch(s)) => legacy("suffix_match", s, StringPattern::Suffix)?,
            Some(S::ContainsMatch(s)) => legacy("contains_match", s, StringPattern::Contains)?,
            Some(S::SafeRegexMatch(re)) => {
                HeaderRule::String(StringMatcher::plain(StringPattern::Regex(
                    full_match_regex(re)
                        .map_err(|r| ConfigError::new("", "safe_regex_match", r))?,
                )))
            }
            Some(S::RangeMatch(r)) => HeaderRule::Range {
                start: r.start,
                end: r.end,
            },
            Some(S::PresentMatch(p)) => HeaderRule::Present(*p),
            Some(S::StringMatch(s)) => HeaderRule::String(
                StringMatcher::try_from(s).map_err(|e| e.within("string_match"))?,
            ),
        };
        Ok(Self {
            name,
            key,
            rule,
            invert: m.invert_match,
            treat_missing_as_empty: m.treat_missing_header_as_empty,
        })
    }
}

impl HeaderMatcher {
    /// Matches against a request, resolving pseudo-headers to the request line.
    pub fn matches_request(&self, req: &RequestView<'_>) -> bool {
        fn non_empty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let value = match &self.key {
            HeaderKey::Method => Some(Cow::Borrowed(req.method.as_str())),
            HeaderKey::Authority => non_empty(req.authority).map(Cow::Borrowed),
            HeaderKey::Scheme => non_empty(req.scheme).map(Cow::Borrowed),
            HeaderKey::Path => non_empty(req.path).map(Cow::Borrowed),
            HeaderKey::Status | HeaderKey::Absent => None,
            HeaderKey::Name(name) => return self.matches_values(req.headers, name),
        };
        self.matches_value(value)
    }

    /// Matches against response headers, `:status` resolving to the status code (as for a retry
    /// policy's `retriable_headers`).
    pub fn matches_response(&self, status: http::StatusCode, headers: &HeaderMap) -> bool {
        match &self.key {
            HeaderKey::Status => self.matches_value(Some(Cow::Borrowed(status.as_str()))),
            HeaderKey::Name(name) => self.matches_values(headers, name),
            _ => self.matches_value(None),
        }
    }

    /// Matches against a bare header map; pseudo-headers are absent.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        match &self.key {
            HeaderKey::Name(name) => self.matches_values(headers, name),
            _ => self.matches_value(None),
        }
    }

    /// A regular header: any of its values matching counts (inverted: none may match).
    fn matches_values(&self, headers: &HeaderMap, name: &http::HeaderName) -> bool {
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            return self.matches_value(None);
        }
        let any = values.any(|v| {
            let v = String::from_utf8_lossy(v.as_bytes());
            self.rule_matches(&v)
        });
        any != self.invert
    }

    fn matches_value(&self, value: Option<Cow<'_, str>>) -> bool {
        let value = match value {
            Some(v) => v,
            None if self.treat_missing_as_empty => Cow::Borrowed(""),
            // Envoy: a missing header only satisfies a presence rule asking for absence (or,
            // inverted, for presence).
            None => return matches!(self.rule, HeaderRule::Present(p) if p == self.invert),
        };
        self.rule_matches(&value) != self.invert
    }

    fn rule_matches(&self, value: &str) -> bool {
        match &self.rule {
            HeaderRule::String(m) => m.matches(value),
            HeaderRule::AnyValue => true,
            HeaderRule::Range { start, end } => value
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .parse::<i64>()
                .is_ok_and(|v| v >= *start && v < *end),
            HeaderRule::Present(p) => *p,
        }
    }
}

/// All of `matchers` match the request (an empty list matches).
pub fn all_match(matchers: &[HeaderMatcher], req: &RequestView<'_>) -> bool {
    matchers.iter().all(|m| m.matches_request(req))
}
