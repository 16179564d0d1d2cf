//! What came of one case through one proxy, checked against the table and against the other
//! proxy.
//!
//! An [`Outcome`] is everything a client and the backends could see: status, response headers
//! and body, and, when a backend answered, the request as it arrived there (from the backend's
//! JSON), plus how many requests each backend received meanwhile.

use super::case::{Case, Expect, Reached};
use std::collections::{BTreeMap, BTreeSet};
use tern_tests::http_backend::Response;

/// Backend names in the order of the request counters.
pub const BACKENDS: [&str; 3] = ["a", "b", "c"];

/// Response headers that legitimately differ between two proxies or two runs: compared by
/// presence only. (`server` is `envoy` from Envoy; `x-envoy-upstream-service-time` is a
/// duration.)
const RESPONSE_NAME_ONLY: [&str; 3] = ["date", "server", "x-envoy-upstream-service-time"];
/// Response headers about framing, not content: a proxy may frame a body either way.
const RESPONSE_FRAMING: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];
/// Upstream request headers compared by presence only (a fresh UUID per request).
const UPSTREAM_NAME_ONLY: [&str; 1] = ["x-request-id"];

/// The request as it reached a backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub backend: String,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub version: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: u16,
    pub response_headers: BTreeMap<String, Vec<String>>,
    pub body: String,
    /// Present when a backend's JSON answered.
    pub upstream: Option<Upstream>,
    /// Requests each of [`BACKENDS`] received while the case ran.
    pub reached: [usize; 3],
}

impl Outcome {
    pub fn new(response: &Response, reached: [usize; 3]) -> Outcome {
        let mut response_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in response.headers.keys() {
            response_headers.insert(
                name.as_str().to_string(),
                response.header_values(name.as_str()),
            );
        }
        Outcome {
            status: response.status,
            response_headers,
            body: response.text(),
            upstream: response.json.as_ref().and_then(upstream_from_json),
            reached,
        }
    }

    /// For printing: without the body when it is a backend's JSON (`upstream` shows it).
    pub fn brief(&self) -> Outcome {
        let mut brief = self.clone();
        if brief.upstream.is_some() {
            brief.body = "(backend JSON, see upstream)".to_string();
        }
        brief
    }

    fn backend(&self) -> Option<&str> {
        self.upstream.as_ref().map(|u| u.backend.as_str())
    }
}

fn upstream_from_json(json: &serde_json::Value) -> Option<Upstream> {
    let text = |key: &str| json.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let headers = json
        .get("headers")?
        .as_object()?
        .iter()
        .map(|(name, values)| {
            let values = values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            (name.clone(), values)
        })
        .collect();
    Some(Upstream {
        backend: text("backend")?,
        method: text("method")?,
        path: text("path")?,
        authority: text("authority").unwrap_or_default(),
        version: text("version")?,
        headers,
        body_len: json.get("body_len")?.as_u64()?,
    })
}

/// Where `outcome` departs from the table row `case`; empty when it agrees.
pub fn check(case: &Case, outcome: &Outcome) -> Vec<String> {
    let expect = &case.expect;
    let mut problems = Vec::new();
    let mut differ = |what: &str, want: String, got: String| {
        if want != got {
            problems.push(format!("{what}: want {want}, got {got}"));
        }
    };
    differ(
        "status",
        expect.status.to_string(),
        outcome.status.to_string(),
    );
    differ(
        "answered by backend",
        format!("{:?}", expect.backend),
        format!("{:?}", outcome.backend()),
    );
    differ(
        "requests reached (a, b, c)",
        format!("{:?}", expected_reach(expect)),
        format!("{:?}", outcome.reached),
    );
    if let (Some(_), Some(upstream)) = (expect.backend, &outcome.upstream) {
        let path = expect.upstream_path.unwrap_or(case.path);
        let authority = expect.upstream_authority.unwrap_or(case.authority);
        differ(
            "upstream method",
            case.method.into(),
            upstream.method.clone(),
        );
        differ("upstream path", path.into(), upstream.path.clone());
        differ(
            "upstream authority",
            authority.into(),
            upstream.authority.clone(),
        );
        differ(
            "upstream version",
            expect.upstream_version.into(),
            upstream.version.clone(),
        );
        if let Some(len) = expect.upstream_body_len {
            differ(
                "upstream body length",
                len.to_string(),
                upstream.body_len.to_string(),
            );
        }
        check_headers(
            &mut differ,
            "upstream header",
            (&expect.upstream_headers, &expect.upstream_absent),
            &upstream.headers,
        );
    }
    check_headers(
        &mut differ,
        "response header",
        (&expect.response_headers, &expect.response_absent),
        &outcome.response_headers,
    );
    if let Some(body) = expect.body {
        differ("body", format!("{body:?}"), format!("{:?}", outcome.body));
    }
    problems
}

/// Headers that must have exactly these values, and headers that must be absent.
type HeaderExpectation<'a> = (&'a [(&'static str, Vec<&'static str>)], &'a [&'static str]);

fn check_headers(
    differ: &mut impl FnMut(&str, String, String),
    what: &str,
    (present, absent): HeaderExpectation<'_>,
    got: &BTreeMap<String, Vec<String>>,
) {
    for (name, values) in present {
        let seen = got.get(*name).cloned().unwrap_or_default();
        differ(
            &format!("{what} {name}"),
            format!("{values:?}"),
            format!("{seen:?}"),
        );
    }
    for name in absent {
        if let Some(values) = got.get(*name) {
            differ(
                &format!("{what} {name}"),
                "absent".into(),
                format!("{values:?}"),
            );
        }
    }
}

fn expected_reach(expect: &Expect) -> [usize; 3] {
    let target = match expect.reached {
        Reached::Answerer => expect.backend,
        Reached::Backend(name) => Some(name),
    };
    BACKENDS.map(|name| usize::from(target == Some(name)))
}

/// Where Tern's outcome departs from Envoy's: everything a client or backend could observe,
/// except values that are volatile by nature (request ids, dates) and body framing. A header
/// the case names is compared by value whatever it is.
pub fn differences(case: &Case, envoy: &Outcome, tern: &Outcome) -> Vec<String> {
    let expect = &case.expect;
    let upstream_named: Vec<&str> = (expect.upstream_headers.iter().map(|(name, _)| *name))
        .chain(expect.upstream_absent.iter().copied())
        .collect();
    let response_named: Vec<&str> = (expect.response_headers.iter().map(|(name, _)| *name))
        .chain(expect.response_absent.iter().copied())
        .collect();
    let except = |list: &[&'static str], named: &[&str]| -> Vec<&'static str> {
        list.iter()
            .copied()
            .filter(|name| !named.contains(name))
            .collect()
    };

    let mut out = Vec::new();
    let mut differ = |what: &str, envoy: String, tern: String| {
        if envoy != tern {
            out.push(format!("{what}: envoy {envoy}, tern {tern}"));
        }
    };
    differ("status", envoy.status.to_string(), tern.status.to_string());
    differ(
        "answered by backend",
        format!("{:?}", envoy.backend()),
        format!("{:?}", tern.backend()),
    );
    differ(
        "requests reached (a, b, c)",
        format!("{:?}", envoy.reached),
        format!("{:?}", tern.reached),
    );
    if let (Some(e), Some(t)) = (&envoy.upstream, &tern.upstream) {
        differ("upstream method", e.method.clone(), t.method.clone());
        differ("upstream path", e.path.clone(), t.path.clone());
        differ(
            "upstream authority",
            e.authority.clone(),
            t.authority.clone(),
        );
        differ("upstream version", e.version.clone(), t.version.clone());
        differ(
            "upstream body length",
            e.body_len.to_string(),
            t.body_len.to_string(),
        );
        let rules = HeaderRules {
            name_only: except(&UPSTREAM_NAME_ONLY, &upstream_named),
            ignored: Vec::new(),
        };
        rules.compare(&mut differ, "upstream header", &e.headers, &t.headers);
    } else {
        // Nobody's JSON: the proxies answered themselves, so the body is theirs to compare.
        differ(
            "body",
            format!("{:?}", envoy.body),
            format!("{:?}", tern.body),
        );
    }
    let rules = HeaderRules {
        name_only: except(&RESPONSE_NAME_ONLY, &response_named),
        ignored: except(&RESPONSE_FRAMING, &response_named),
    };
    rules.compare(
        &mut differ,
        "response header",
        &envoy.response_headers,
        &tern.response_headers,
    );
    out
}

/// How two header maps are compared: every name present on either side, values too unless the
/// name is in `name_only`; names in `ignored` are skipped.
struct HeaderRules {
    name_only: Vec<&'static str>,
    ignored: Vec<&'static str>,
}

impl HeaderRules {
    fn compare(
        &self,
        differ: &mut impl FnMut(&str, String, String),
        what: &str,
        envoy: &BTreeMap<String, Vec<String>>,
        tern: &BTreeMap<String, Vec<String>>,
    ) {
        let names: BTreeSet<&String> = envoy.keys().chain(tern.keys()).collect();
        for name in names {
            if self.ignored.contains(&name.as_str()) {
                continue;
            }
            let show = |values: Option<&Vec<String>>| match values {
                None => "absent".to_string(),
                Some(_) if self.name_only.contains(&name.as_str()) => "present".to_string(),
                Some(values) => format!("{values:?}"),
            };
            differ(
                &format!("{what} {name}"),
                show(envoy.get(name)),
                show(tern.get(name)),
            );
        }
    }
}
