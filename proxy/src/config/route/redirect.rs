//! `RedirectAction`: answer with a 3xx and a `Location` built from the request, Envoy's way.
//!
//! The Location is `scheme://host[:port]path`:
//! - scheme: `scheme_redirect`, else `https` for `https_redirect`, else the request's;
//! - host: `host_redirect` verbatim, else the request authority, whose port is dropped when a
//!   `port_redirect` replaces it or when the scheme changes and the port was the old scheme's
//!   default (`http://a:80` -> `https://a`);
//! - path: `path_redirect` (keeping the request's query unless it has its own), or the request
//!   path after `prefix_rewrite` / `regex_rewrite`; a leading `/` is ensured; `strip_query`
//!   drops the query unless `path_redirect` brought one.

use super::action::{regex_and_substitution, regex_rewrite, replace_prefix};
use super::err;
use crate::config::ConfigError;
use crate::config::matcher::RequestView;
use http::StatusCode;
use regex::Regex;
use std::borrow::Cow;
use xds_client::pb::envoy::config::route::v3 as proto;

/// A validated redirect.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: PathRedirect,
    /// 301 (default), 302, 303, 307 or 308.
    pub status: StatusCode,
    pub strip_query: bool,
    pub https_redirect: bool,
}

/// How the redirect's path is formed.
#[derive(Debug, Clone)]
pub enum PathRedirect {
    /// The request's path and query.
    Keep,
    /// `path_redirect`: this path; the request's query is kept unless this one has a `?`.
    Path(String),
    /// `prefix_rewrite`: the matched prefix of the request path replaced by this.
    Prefix(String),
    /// `regex_rewrite` over the path without query; replacement in `regex` crate syntax.
    Regex(Regex, String),
}

impl Redirect {
    /// The `Location` for a request. `matched_prefix` is the route's
    /// [`RouteMatch::matched_prefix`](super::RouteMatch::matched_prefix), used by prefix
    /// rewrites.
    pub fn location(&self, req: &RequestView<'_>, matched_prefix: Option<&str>) -> String {
        let scheme = match &self.scheme {
            Some(s) => s.as_str(),
            None if self.https_redirect => "https",
            None => req.scheme,
        };
        let host = match &self.host {
            Some(h) => h.as_str(),
            None => request_host(req.authority, req.scheme, scheme, self.port.is_some()),
        };
        let own_query = matches!(&self.path, PathRedirect::Path(p) if p.contains('?'));
        let mut path: Cow<'_, str> = match &self.path {
            PathRedirect::Keep => Cow::Borrowed(req.path),
            PathRedirect::Path(p) if own_query => Cow::Borrowed(p),
            PathRedirect::Path(p) => match req.path.find('?') {
                Some(q) => Cow::Owned(format!("{p}{}", &req.path[q..])),
                None => Cow::Borrowed(p),
            },
            // The route matched, so the path starts with the prefix (up to ASCII case when the
            // route ignores case); if a caller passes another prefix, keep the path.
            PathRedirect::Prefix(new_prefix) => {
                match replace_prefix(req.path, matched_prefix, true, new_prefix) {
                    Some(p) => Cow::Owned(p),
                    None => Cow::Borrowed(req.path),
                }
            }
            PathRedirect::Regex(re, sub) => Cow::Owned(regex_rewrite(req.path, re, sub)),
        };
        if !path.starts_with('/') {
            path = Cow::Owned(format!("/{path}"));
        }
        if self.strip_query
            && !own_query
            && let Some(q) = path.find('?')
        {
            path = Cow::Owned(path[..q].to_string());
        }
        match self.port {
            Some(port) => format!("{scheme}://{host}:{port}{path}"),
            None => format!("{scheme}://{host}{path}"),
        }
    }
}

/// The request authority for a redirect, without its port when the redirect sets a new port or
/// leaves the request's scheme while the port was that scheme's default.
fn request_host<'a>(
    authority: &'a str,
    request_scheme: &str,
    new_scheme: &str,
    new_port: bool,
) -> &'a str {
    let port_at = if authority.starts_with('[') {
        authority.rfind("]:").map(|at| at + 1)
    } else {
        authority.rfind(':')
    };
    let Some(at) = port_at else {
        return authority;
    };
    let port = &authority[at..];
    let default_port = matches!((request_scheme, port), ("https", ":443") | ("http", ":80"));
    if new_port || (new_scheme != request_scheme && default_port) {
        &authority[..at]
    } else {
        authority
    }
}

impl TryFrom<&proto::RedirectAction> for Redirect {
    type Error = ConfigError;

    fn try_from(r: &proto::RedirectAction) -> Result<Self, ConfigError> {
        use proto::redirect_action::{
            PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
        };
        let (scheme, https_redirect) = match &r.scheme_rewrite_specifier {
            Some(S::SchemeRedirect(s)) if !s.is_empty() => (Some(s.clone()), false),
            Some(S::HttpsRedirect(https)) => (None, *https),
            _ => (None, false),
        };
        let port = match r.port_redirect {
            0 => None,
            p => Some(
                u16::try_from(p).map_err(|_| err("port_redirect", format!("{p} is not a port")))?,
            ),
        };
        let path = match &r.path_rewrite_specifier {
            None => PathRedirect::Keep,
            Some(P::PathRedirect(p)) if p.is_empty() => PathRedirect::Keep,
            Some(P::PathRedirect(p)) => PathRedirect::Path(p.clone()),
            Some(P::PrefixRewrite(p)) if p.is_empty() => PathRedirect::Keep,
            Some(P::PrefixRewrite(p)) => PathRedirect::Prefix(p.clone()),
            Some(P::RegexRewrite(rr)) => {
                let (regex, sub) =
                    regex_and_substitution(rr).map_err(|e| e.within("regex_rewrite"))?;
                PathRedirect::Regex(regex, sub)
            }
            Some(P::PathRewrite(_)) => {
                return Err(err(
                    "path_rewrite",
                    "formatted path rewrites are not supported",
                ));
            }
        };
        let status = match C::try_from(r.response_code) {
            Ok(C::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(C::Found) => StatusCode::FOUND,
            Ok(C::SeeOther) => StatusCode::SEE_OTHER,
            Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => {
                return Err(err(
                    "response_code",
                    format!("unknown code {}", r.response_code),
                ));
            }
        };
        Ok(Self {
            scheme,
            host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
            port,
            path,
            status,
            strip_query: r.strip_query,
            https_redirect,
        })
    }
}
