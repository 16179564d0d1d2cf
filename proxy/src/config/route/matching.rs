//! `RouteMatch`: whether one route applies to a request.
//!
//! Envoy's rules, kept exactly:
//! - path rules see the path without its query and fragment (everything from the first `?` or
//!   `#`), and without `;` parameters when the configuration asks to ignore them;
//! - `prefix` is a plain string prefix; `path_separated_prefix` also needs the path to end or
//!   continue with `/` right after it; `safe_regex` must match the whole path and ignores
//!   `case_sensitive`; case-insensitive rules fold ASCII only;
//! - a request without a path (CONNECT) can only match a `connect_matcher` route, and a
//!   `connect_matcher` route only matches CONNECT;
//! - query parameters are matched raw (not percent-decoded) against the first occurrence;
//! - `runtime_fraction` uses its default value only: match when `random % denominator <
//!   numerator`.

use super::err;
use crate::config::ConfigError;
pub use crate::config::fraction::Fraction;
use crate::config::matcher::{self, HeaderMatcher, RequestView, StringMatcher};
use regex::Regex;
use xds_client::pb::envoy::config::route::v3 as proto;

/// A validated route match.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// For prefix/path/path-separated-prefix rules (default true).
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only gRPC requests (`content-type: application/grpc` or `application/grpc+...`).
    pub grpc: bool,
    pub runtime_fraction: Option<Fraction>,
    /// The route configuration's `ignore_path_parameters_in_path_matching`.
    pub ignore_path_parameters: bool,
}

/// The path rule of a route.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
    PathSeparatedPrefix(String),
    /// Anchored: matches the whole path.
    Regex(Regex),
    /// `connect_matcher`: any CONNECT request.
    Connect,
}

/// A validated `QueryParameterMatcher`.
#[derive(Debug, Clone)]
pub struct QueryParameterMatcher {
    pub name: String,
    pub rule: QueryRule,
}

#[derive(Debug, Clone)]
pub enum QueryRule {
    /// `present_match`: true requires the parameter, false its absence.
    Present(bool),
    /// The first value of the parameter must match.
    String(StringMatcher),
}

impl QueryParameterMatcher {
    fn convert(m: &proto::QueryParameterMatcher) -> Result<Self, ConfigError> {
        use proto::query_parameter_matcher::QueryParameterMatchSpecifier as S;
        if m.name.is_empty() {
            return Err(err("name", "must not be empty"));
        }
        let rule = match &m.query_parameter_match_specifier {
            // No rule at all is Envoy's legacy presence check.
            None => QueryRule::Present(true),
            Some(S::PresentMatch(p)) => QueryRule::Present(*p),
            Some(S::StringMatch(s)) => {
                QueryRule::String(StringMatcher::try_from(s).map_err(|e| e.within("string_match"))?)
            }
        };
        Ok(Self {
            name: m.name.clone(),
            rule,
        })
    }

    /// Matches against the raw query string (after `?`).
    pub fn matches(&self, query: Option<&str>) -> bool {
        let value = query.and_then(|q| first_value(q, &self.name));
        match &self.rule {
            QueryRule::Present(want) => value.is_some() == *want,
            QueryRule::String(m) => value.is_some_and(|v| m.matches(v)),
        }
    }
}

/// The first value of `name` in a query string; a parameter without `=` has the empty value.
fn first_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|param| match param.split_once('=') {
            Some((n, v)) if n == name => Some(v),
            None if param == name => Some(""),
            _ => None,
        })
}

/// The part of a path that path rules see: before the first `?` or `#` (and `;`, if parameters
/// are ignored).
pub(super) fn path_for_matching(path: &str, ignore_parameters: bool) -> &str {
    let end = path
        .bytes()
        .position(|b| b == b'?' || b == b'#' || (ignore_parameters && b == b';'));
    end.map_or(path, |at| &path[..at])
}

/// A request path cut by [`path_for_matching`], remembering how.
#[derive(Clone, Copy)]
pub(super) struct CutPath<'p> {
    pub path: &'p str,
    pub ignore_parameters: bool,
}

impl<'p> CutPath<'p> {
    pub fn new(path: &'p str, ignore_parameters: bool) -> Self {
        Self {
            path: path_for_matching(path, ignore_parameters),
            ignore_parameters,
        }
    }
}

/// `path` without query and fragment.
pub(super) fn path_only(path: &str) -> &str {
    path_for_matching(path, false)
}

impl RouteMatch {
    /// Whether the route applies. `random` drives `runtime_fraction`.
    pub fn matches(&self, req: &RequestView<'_>, random: u64) -> bool {
        self.matches_cut(
            req,
            CutPath::new(req.path, self.ignore_path_parameters),
            random,
        )
    }

    /// [`Self::matches`] with the request's path already cut (the same for every route of a
    /// configuration), so a scan over many routes cuts it once.
    pub(super) fn matches_cut(&self, req: &RequestView<'_>, cut: CutPath<'_>, random: u64) -> bool {
        let path = if cut.ignore_parameters == self.ignore_path_parameters {
            cut.path
        } else {
            path_for_matching(req.path, self.ignore_path_parameters)
        };
        self.path_matches(req, path)
            && self.runtime_fraction.is_none_or(|f| f.sample(random))
            && (!self.grpc || is_grpc(req.headers))
            && matcher::all_match(&self.headers, req)
            && (self.query_parameters.is_empty() || {
                let query = req.path.split_once('?').map(|(_, q)| q);
                self.query_parameters.iter().all(|q| q.matches(query))
            })
    }

    fn path_matches(&self, req: &RequestView<'_>, path: &str) -> bool {
        if let PathMatch::Connect = self.path {
            return req.method == http::Method::CONNECT;
        }
        if req.path.is_empty() {
            return false;
        }
        let ic = !self.case_sensitive;
        match &self.path {
            PathMatch::Prefix(p) => matcher::starts_with(path, p, ic),
            PathMatch::Path(p) => path.len() == p.len() && matcher::starts_with(path, p, ic),
            PathMatch::PathSeparatedPrefix(p) => {
                matcher::starts_with(path, p, ic)
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path),
            PathMatch::Connect => false,
        }
    }

    /// The configured text a prefix rewrite replaces: the prefix, or the whole path for `path`
    /// rules. `None` for regex and CONNECT rules, where a prefix rewrite replaces the whole path
    /// (without its query).
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) | PathMatch::Path(p) | PathMatch::PathSeparatedPrefix(p) => {
                Some(p)
            }
            PathMatch::Regex(_) | PathMatch::Connect => None,
        }
    }

    pub(super) fn convert(
        m: &proto::RouteMatch,
        ignore_path_parameters: bool,
    ) -> Result<Self, ConfigError> {
        use proto::route_match::PathSpecifier as P;
        let path = match &m.path_specifier {
            Some(P::Prefix(p)) => PathMatch::Prefix(p.clone()),
            Some(P::Path(p)) => PathMatch::Path(p.clone()),
            Some(P::SafeRegex(re)) => {
                PathMatch::Regex(matcher::full_match_regex(re).map_err(|r| err("safe_regex", r))?)
            }
            Some(P::ConnectMatcher(_)) => PathMatch::Connect,
            Some(P::PathSeparatedPrefix(p)) => {
                if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']) {
                    return Err(err(
                        "path_separated_prefix",
                        "must start with '/', not end with '/', and contain no '?' or '#'",
                    ));
                }
                PathMatch::PathSeparatedPrefix(p.clone())
            }
            Some(P::PathMatchPolicy(ext)) => {
                return Err(err(
                    "path_match_policy",
                    format!("path match policy {:?} is not supported", ext.name),
                ));
            }
            None => return Err(err("", "a path specifier is required")),
        };
        reject_unsupported(m)?;
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HeaderMatcher::try_from(h).map_err(|e| e.within(&format!("headers[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let query_parameters = m
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| {
                QueryParameterMatcher::convert(q)
                    .map_err(|e| e.within(&format!("query_parameters[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let runtime_fraction = m
            .runtime_fraction
            .as_ref()
            .map(Fraction::from_runtime)
            .transpose()
            .map_err(|e| e.within("runtime_fraction"))?;
        Ok(Self {
            path,
            case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
            headers,
            query_parameters,
            grpc: m.grpc.is_some(),
            runtime_fraction,
            ignore_path_parameters,
        })
    }
}

/// Match conditions we do not implement; ignoring them would route more traffic than intended.
fn reject_unsupported(m: &proto::RouteMatch) -> Result<(), ConfigError> {
    if !m.cookies.is_empty() {
        return Err(err("cookies", "cookie matching is not supported"));
    }
    if m.tls_context.is_some() {
        return Err(err("tls_context", "TLS context matching is not supported"));
    }
    if !m.dynamic_metadata.is_empty() {
        return Err(err(
            "dynamic_metadata",
            "dynamic metadata matching is not supported",
        ));
    }
    if !m.filter_state.is_empty() {
        return Err(err(
            "filter_state",
            "filter state matching is not supported",
        ));
    }
    Ok(())
}

/// Envoy's gRPC test: `content-type` is `application/grpc` or `application/grpc+<codec>`
/// (`application/grpc-web` is not gRPC).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .is_some_and(|ct| ct.starts_with(GRPC) && matches!(ct.get(GRPC.len()), None | Some(b'+')))
}
