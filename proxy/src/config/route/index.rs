//! Route lookup index for large virtual hosts.
//!
//! Envoy walks the route list in order for every request. With thousands of routes that is
//! thousands of matches; most of them are prefix or path rules whose first path segment alone
//! rules them out. The index keeps, per first segment, the positions of the routes that can only
//! match paths with that segment, plus the positions of all other routes ("rest": regexes,
//! case-insensitive rules, `/`, prefixes that end inside a segment). A lookup merges the two
//! ascending lists and runs the full match on each candidate in order, so the first match is
//! exactly the route a linear scan would pick: the index only skips routes that cannot match.

use super::Route;
use super::matching::{CutPath, PathMatch, RouteMatch};
use crate::config::matcher::RequestView;
use std::collections::HashMap;

/// Below this many routes a linear scan is as fast as the index.
const MIN_ROUTES: usize = 8;

#[derive(Debug, Clone)]
pub(super) struct RouteIndex {
    by_segment: HashMap<Box<str>, Vec<u32>>,
    rest: Vec<u32>,
    ignore_path_parameters: bool,
}

impl RouteIndex {
    /// The index for a route list, or `None` when the list is too short to need one.
    pub(super) fn build(routes: &[Route], ignore_path_parameters: bool) -> Option<Self> {
        if routes.len() < MIN_ROUTES || u32::try_from(routes.len()).is_err() {
            return None;
        }
        Some(Self::build_always(routes, ignore_path_parameters))
    }

    pub(super) fn build_always(routes: &[Route], ignore_path_parameters: bool) -> Self {
        let mut index = Self {
            by_segment: HashMap::new(),
            rest: Vec::new(),
            ignore_path_parameters,
        };
        for (i, route) in (0u32..).zip(routes) {
            match segment_key(&route.matcher) {
                Some(key) => index.by_segment.entry(key.into()).or_default().push(i),
                None => index.rest.push(i),
            }
        }
        index
    }

    pub(super) fn find<'r>(
        &self,
        routes: &'r [Route],
        req: &RequestView<'_>,
        random: u64,
    ) -> Option<&'r Route> {
        let cut = CutPath::new(req.path, self.ignore_path_parameters);
        let keyed: &[u32] = first_segment(cut.path)
            .and_then(|segment| self.by_segment.get(segment))
            .map_or(&[], Vec::as_slice);
        let (mut a, mut b) = (keyed.iter().peekable(), self.rest.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            };
            let route = next.and_then(|&i| routes.get(i as usize))?;
            if route.matcher.matches_cut(req, cut, random) {
                return Some(route);
            }
        }
    }
}

/// The first segment of a path: `/a/b` -> `a`, `/a` -> `a`, `/` -> ``; `None` without a leading
/// `/`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split_once('/').map_or(rest, |(segment, _)| segment))
}

/// The first segment every path matching this rule has, if the rule pins one down.
fn segment_key(m: &RouteMatch) -> Option<&str> {
    if !m.case_sensitive {
        return None;
    }
    match &m.path {
        // The whole path part equals `p`, so its first segment is `p`'s.
        PathMatch::Path(p) => first_segment(p),
        // Any path of the form `p` or `p/...`.
        PathMatch::PathSeparatedPrefix(p) => first_segment(p),
        // Only when the prefix contains the end of its first segment: `/a/` or `/a/b` pin `a`,
        // while `/a` also matches `/ab`.
        PathMatch::Prefix(p) => {
            let rest = p.strip_prefix('/')?;
            rest.split_once('/').map(|(segment, _)| segment)
        }
        PathMatch::Regex(_) | PathMatch::Connect => None,
    }
}
