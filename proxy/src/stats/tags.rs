//! Envoy's tag extraction: turning a full stat name such as
//! `cluster.outbound|80||a.b.svc.cluster.local;.upstream_rq_200` into a tag-extracted name
//! (`cluster.upstream_rq`) and tags (`cluster_name`, `response_code`), driven by the
//! bootstrap's `stats_config` exactly as Envoy 1.40 does it:
//!
//! - Extractors come from the default list (unless `use_all_default_tags` is false), then
//!   `stats_tags` in order (a `tag_name` without `regex` adds the defaults of that name;
//!   `fixed_value` adds the same tag to every stat). With `allow_default_tag_overrides`, a
//!   default whose name a `stats_tags` entry also declares is left out.
//! - Extractors whose regex starts with `^word\.` (or a token pattern whose first token is a
//!   word) only run on names whose first token is that word, and run after all the others:
//!   this is the order tags are listed in, and so the order of Prometheus labels.
//! - A regex extractor's first capture group is the text removed from the name and its second
//!   (when present) is the tag's value; every extractor sees the full name and the removed
//!   ranges are merged. When several extractors share a tag name, the first that matches wins.
//! - `stats_tags` regexes are ECMAScript (Envoy compiles them with `std::regex`, lookahead
//!   included); the defaults are RE2 and need two groups, a non-empty first one, and fall back
//!   to the first group when the second is empty. Both are compiled with `fancy_regex`.
//!
//! Tags are produced once, when a stat is registered; nothing here runs per request or scrape.

use crate::config::ConfigError;
use fancy_regex::Regex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use xds_client::pb::envoy::config::metrics::v3 as proto;

/// A stat's tag-extracted name and tags in extraction order. The strings are shared: the store
/// interns them ([`Tags::interned`]), since a thousand clusters' stats repeat the same extracted
/// names, tag names and (per cluster) tag values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    pub extracted_name: Arc<str>,
    pub tags: Box<[(Arc<str>, Arc<str>)]>,
}

impl Tags {
    /// The same tags with every string taken from (or added to) `strings`.
    pub fn interned(self, strings: &mut HashSet<Arc<str>>) -> Tags {
        let mut intern = |s: Arc<str>| match strings.get(&*s) {
            Some(known) => known.clone(),
            None => {
                strings.insert(s.clone());
                s
            }
        };
        Tags {
            extracted_name: intern(self.extracted_name),
            tags: self
                .tags
                .into_vec()
                .into_iter()
                .map(|(k, v)| (intern(k), intern(v)))
                .collect(),
        }
    }
}

/// The configured extractors, grouped as Envoy runs them.
#[derive(Debug)]
pub struct TagProducer {
    unprefixed: Vec<Extractor>,
    by_prefix: HashMap<String, Vec<Extractor>>,
}

impl Default for TagProducer {
    /// Envoy's defaults: every built-in extractor.
    fn default() -> Self {
        TagProducer::new(&proto::StatsConfig::default()).expect("the default extractors compile")
    }
}

#[derive(Debug)]
struct Extractor {
    name: String,
    /// Another extractor has the same tag name: only the first that matches adds its tag.
    shared_name: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Regex {
        regex: Regex,
        /// RE2 rules (the defaults): two groups needed, empty value falls back to the first.
        re2: bool,
        /// Skip names that lack this substring (a cheap pre-filter; it never changes results).
        substr: &'static str,
        /// A value this extractor never produces (`admin` for `envoy.listener_address`).
        negative: &'static str,
    },
    Tokens {
        tokens: Vec<&'static str>,
        /// Index of the `$` token: the one whose input token is the value.
        value_at: usize,
    },
    Fixed(String),
}

impl TagProducer {
    /// The producer for a bootstrap's `stats_config`.
    pub fn new(config: &proto::StatsConfig) -> Result<Self, ConfigError> {
        let err = |field: String, reason: String| ConfigError::new("bootstrap", field, reason);
        let mut extractors = Vec::new();
        if config.use_all_default_tags.as_ref().is_none_or(|v| v.value) {
            let overrides = config
                .allow_default_tag_overrides
                .as_ref()
                .is_some_and(|v| v.value);
            let overridden: HashSet<&str> = if overrides {
                config
                    .stats_tags
                    .iter()
                    .map(|t| t.tag_name.as_str())
                    .collect()
            } else {
                HashSet::new()
            };
            extractors.extend(
                defaults()
                    .into_iter()
                    .filter(|e| !overridden.contains(e.name.as_str())),
            );
        }
        for (i, spec) in config.stats_tags.iter().enumerate() {
            let field = |f: &str| format!("stats_config.stats_tags[{i}]{f}");
            let name = spec.tag_name.as_str();
            if name.is_empty() {
                return Err(err(field(".tag_name"), "tag_name cannot be empty".into()));
            }
            use proto::tag_specifier::TagValue;
            match &spec.tag_value {
                Some(TagValue::FixedValue(value)) => extractors.push(Extractor {
                    name: name.to_string(),
                    shared_name: false,
                    kind: Kind::Fixed(value.clone()),
                }),
                Some(TagValue::Regex(regex)) if !regex.is_empty() => {
                    let compiled = Regex::new(regex).map_err(|e| {
                        err(field(".regex"), format!("invalid regex {regex:?}: {e}"))
                    })?;
                    extractors.push(Extractor {
                        name: name.to_string(),
                        shared_name: false,
                        kind: Kind::Regex {
                            regex: compiled,
                            re2: false,
                            substr: "",
                            negative: "",
                        },
                    });
                }
                _ => {
                    let before = extractors.len();
                    extractors.extend(defaults().into_iter().filter(|e| e.name == name));
                    if extractors.len() == before {
                        return Err(err(
                            field(""),
                            format!(
                                "No regex specified for tag specifier and no default regex for name: '{name}'"
                            ),
                        ));
                    }
                }
            }
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in &extractors {
            *counts.entry(e.name.clone()).or_default() += 1;
        }
        let mut producer = TagProducer {
            unprefixed: Vec::new(),
            by_prefix: HashMap::new(),
        };
        for mut e in extractors {
            e.shared_name = counts[&e.name] > 1;
            match e.prefix() {
                Some(prefix) => producer.by_prefix.entry(prefix).or_default().push(e),
                None => producer.unprefixed.push(e),
            }
        }
        Ok(producer)
    }

    /// The tag-extracted name and tags of `name`.
    pub fn produce(&self, name: &str) -> Tags {
        let first_token = name.split_once('.').map(|(t, _)| t);
        let prefixed = first_token
            .and_then(|t| self.by_prefix.get(t))
            .map_or(&[][..], Vec::as_slice);
        let tokens: Vec<&str> = name.split('.').collect();
        let mut tags = Vec::new();
        let mut removed: Vec<(usize, usize)> = Vec::new();
        let mut seen_shared: HashSet<&str> = HashSet::new();
        for e in self.unprefixed.iter().chain(prefixed) {
            if e.shared_name && seen_shared.contains(e.name.as_str()) {
                continue;
            }
            let Some((value, range)) = e.extract(name, &tokens) else {
                continue;
            };
            tags.push((Arc::from(e.name.as_str()), Arc::from(value)));
            if let Some(range) = range {
                removed.push(range);
            }
            if e.shared_name {
                seen_shared.insert(&e.name);
            }
        }
        Tags {
            extracted_name: remove_ranges(name, removed).into(),
            tags: tags.into(),
        }
    }
}

impl Extractor {
    /// The first token of the names this extractor can match, when its pattern pins one:
    /// Envoy's `extractRegexPrefix` for regexes (`^word` followed by `\.` or `(?=\.)`, or
    /// `^word$`), the first literal token for token patterns.
    fn prefix(&self) -> Option<String> {
        match &self.kind {
            Kind::Regex { regex, .. } => {
                let rest = regex.as_str().strip_prefix('^')?;
                let word_len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                if word_len == 0 || word_len == rest.len() {
                    return None;
                }
                let after = &rest[word_len..];
                let pinned =
                    after.starts_with("\\.") || after.starts_with("(?=\\.)") || after == "$";
                pinned.then(|| rest[..word_len].to_string())
            }
            Kind::Tokens { tokens, .. } => {
                let first = tokens.first()?;
                (!matches!(*first, "$" | "*" | "**")).then(|| first.to_string())
            }
            Kind::Fixed(_) => None,
        }
    }

    /// The tag value and the byte range to remove from the name, if this extractor matches.
    fn extract(&self, name: &str, tokens: &[&str]) -> Option<(String, Option<(usize, usize)>)> {
        match &self.kind {
            Kind::Fixed(value) => Some((value.clone(), None)),
            Kind::Regex {
                regex,
                re2,
                substr,
                negative,
            } => {
                if !substr.is_empty() && !name.contains(substr) {
                    return None;
                }
                let captures = regex.captures(name).ok()??;
                if captures.len() < 2 || (*re2 && captures.len() < 3) {
                    return None;
                }
                let remove = captures.get(1);
                let value = captures.get(2);
                let (value, range) = if *re2 {
                    let remove = remove.filter(|m| !m.as_str().is_empty())?;
                    let value = value.filter(|m| !m.as_str().is_empty()).unwrap_or(remove);
                    if !negative.is_empty() && value.as_str() == *negative {
                        return None;
                    }
                    (value.as_str(), Some((remove.start(), remove.end())))
                } else {
                    // std::regex: an unmatched group is an empty value and removes nothing.
                    let value = if captures.len() > 2 { value } else { remove };
                    (
                        value.map_or("", |m| m.as_str()),
                        remove.map(|m| (m.start(), m.end())),
                    )
                };
                Some((value.to_string(), range))
            }
            Kind::Tokens {
                tokens: pattern,
                value_at,
            } => {
                let mut found = None;
                if !search_tokens(pattern, *value_at, tokens, (0, 0, 0), &mut found) {
                    return None;
                }
                let (start, index) = found?;
                let value = tokens[index];
                let (mut start, mut end) = (start, start + value.len());
                if index + 1 < tokens.len() {
                    end += 1; // the dot after the value
                } else {
                    start = start.saturating_sub(1); // the dot before a last-token value
                }
                Some((value.to_string(), Some((start, end))))
            }
        }
    }
}

/// Matches token `pattern` (`*` one token, `**` any number, `$` the value) against the name's
/// tokens from `input`/`at`, `offset` being the byte offset of `tokens[input]`; on success
/// `found` holds the value's byte offset and token index (Envoy's `searchTags`).
fn search_tokens(
    pattern: &[&str],
    value_at: usize,
    tokens: &[&str],
    (mut input, mut at, mut offset): (usize, usize, usize),
    found: &mut Option<(usize, usize)>,
) -> bool {
    while input < tokens.len() && at < pattern.len() {
        if at == value_at {
            *found = Some((offset, input));
            offset += tokens[input].len() + 1;
        } else if pattern[at] == "**" {
            if at == pattern.len() - 1 {
                return true;
            }
            // The rest of the pattern must match from some later token.
            for from in input..tokens.len() {
                if search_tokens(pattern, value_at, tokens, (from, at + 1, offset), found) {
                    return true;
                }
                offset += tokens[from].len() + 1;
            }
            return false;
        } else if pattern[at] != "*" && pattern[at] != tokens[input] {
            return false;
        } else {
            offset += tokens[input].len() + 1;
        }
        input += 1;
        at += 1;
    }
    at == pattern.len() && input == tokens.len()
}

/// `name` without the bytes in `ranges` (which may overlap).
fn remove_ranges(name: &str, mut ranges: Vec<(usize, usize)>) -> String {
    if ranges.is_empty() {
        return name.to_string();
    }
    ranges.sort_unstable();
    let mut out = String::with_capacity(name.len());
    let mut kept_from = 0;
    for (start, end) in ranges {
        if start > kept_from {
            out.push_str(&name[kept_from..start]);
        }
        kept_from = kept_from.max(end);
    }
    out.push_str(&name[kept_from.min(name.len())..]);
    out
}

/// Envoy 1.40's built-in extractors (`source/common/config/well_known_names.cc`): the regex
/// ones first, then the token patterns, each group in Envoy's order.
fn defaults() -> Vec<Extractor> {
    let mut out = Vec::new();
    for &(name, pattern, substr, negative) in DEFAULT_REGEXES {
        let regex = Regex::new(&expand(pattern)).expect("built-in tag regex compiles");
        out.push(Extractor {
            name: name.to_string(),
            shared_name: false,
            kind: Kind::Regex {
                regex,
                re2: true,
                substr,
                negative,
            },
        });
    }
    for &(name, pattern) in DEFAULT_TOKENS {
        let tokens: Vec<&'static str> = pattern.split('.').collect();
        let value_at = tokens.iter().position(|t| *t == "$").unwrap_or(0);
        out.push(Extractor {
            name: name.to_string(),
            shared_name: false,
            kind: Kind::Tokens { tokens, value_at },
        });
    }
    out
}

/// Envoy's shorthands in the built-in regexes.
fn expand(pattern: &str) -> String {
    pattern
        .replace(
            "<ADDRESS>",
            r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)",
        )
        .replace("<CIPHER>", r"[\w-]+")
        .replace("<TLS_VERSION>", r"TLSv\d\.\d")
        .replace("<TAG_VALUE>", r"[^\.]+")
        .replace("<ROUTE_CONFIG_NAME>", r"[\w\-\.]+")
        .replace(
            "<LISTENER_OR_CLUSTER_WITH_NAME>",
            r"(?:listener|cluster)\..*?",
        )
}

/// (tag name, RE2 pattern, substring pre-filter, value never extracted)
const DEFAULT_REGEXES: &[(&str, &str, &str, &str)] = &[
    ("envoy.response_code", r"_rq(_(\d{3}))$", "_rq_", ""),
    ("envoy.response_code_class", r"_rq_((\d))xx$", "_rq_", ""),
    (
        "envoy.dynamo_partition_id",
        r"^http\.<TAG_VALUE>\.dynamodb\.table\.<TAG_VALUE>\.capacity\.<TAG_VALUE>(\.__partition_id=(\w{7}))$",
        ".dynamodb.table.",
        "",
    ),
    (
        "envoy.dynamo_operation",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:operation|table\.<TAG_VALUE>\.capacity)(\.(<TAG_VALUE>))(?:\.|$)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.dynamo_table",
        r"^http\.<TAG_VALUE>\.dynamodb.(?:table|error)\.((<TAG_VALUE>)\.)",
        ".dynamodb.",
        "",
    ),
    (
        "envoy.ssl_cipher",
        r"^listener\..*?\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.ssl_curve",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.curves(\.(<CIPHER>))$",
        ".ssl.curves.",
        "",
    ),
    (
        "envoy.ssl_sigalg",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.sigalgs(\.(<CIPHER>))$",
        ".ssl.sigalgs.",
        "",
    ),
    (
        "envoy.ssl_version",
        r"^<LISTENER_OR_CLUSTER_WITH_NAME>\.ssl\.versions(\.(<TLS_VERSION>))$",
        ".ssl.versions.",
        "",
    ),
    (
        "envoy.ssl_cipher_suite",
        r"^cluster\.<TAG_VALUE>\.ssl\.ciphers(\.(<CIPHER>))$",
        ".ssl.ciphers.",
        "",
    ),
    (
        "envoy.health_check_name",
        r"^cluster\.<TAG_VALUE>\.health_check(\.name\.(<TAG_VALUE>))\..+",
        ".health_check.name.",
        "",
    ),
    (
        "envoy.http_conn_manager_prefix",
        r"^listener\..*?\.http\.((<TAG_VALUE>)\.)",
        ".http.",
        "",
    ),
    (
        "envoy.worker_id",
        r"^(?:listener\.(?:<ADDRESS>|<TAG_VALUE>)|server|listener_manager|thread_local_cluster_manager)\.worker_((\d+)\.)",
        "",
        "",
    ),
    (
        "envoy.listener_address",
        r"^listener\.((<ADDRESS>|<TAG_VALUE>)\.)",
        "",
        "admin",
    ),
    (
        "envoy.rds_route_config",
        r"^http\.<TAG_VALUE>\.rds\.((<ROUTE_CONFIG_NAME>)\.)\w+?$",
        ".rds.",
        "",
    ),
];

/// (tag name, token pattern)
const DEFAULT_TOKENS: &[(&str, &str)] = &[
    (
        "envoy.mongo_callsite",
        "mongo.*.collection.*.callsite.$.query.**",
    ),
    ("envoy.mongo_collection", "mongo.*.collection.$.**.query.*"),
    ("envoy.mongo_cmd", "mongo.*.cmd.$.**"),
    ("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
    ("envoy.http_user_agent", "http.*.user_agent.$.**"),
    ("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
    ("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
    ("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
    ("envoy.tcp_prefix", "tcp.$.**"),
    ("envoy.udp_prefix", "udp.$.**"),
    ("envoy.clientssl_prefix", "auth.clientssl.$.**"),
    ("envoy.ratelimit_prefix", "ratelimit.$.**"),
    ("envoy.cluster_name", "cluster.$.**"),
    ("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
    ("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
    ("envoy.http_conn_manager_prefix", "http.$.**"),
    ("envoy.virtual_host", "vhost.$.**"),
    ("envoy.mongo_prefix", "mongo.$.**"),
    ("envoy.route", "vhost.*.route.$.**"),
    ("envoy.thrift_prefix", "thrift.$.**"),
    ("envoy.redis_prefix", "redis.$.**"),
    (
        "envoy.local_http_ratelimit_prefix",
        "$.http_local_rate_limit.**",
    ),
    (
        "envoy.local_network_ratelimit_prefix",
        "local_rate_limit.$.**",
    ),
    (
        "envoy.local_listener_ratelimit_prefix",
        "listener_local_ratelimit.$.**",
    ),
    ("envoy.dns_filter_prefix", "dns_filter.$.**"),
    ("envoy.connection_limit_prefix", "connection_limit.$.**"),
];

#[cfg(test)]
#[path = "tags/tests.rs"]
mod tests;
