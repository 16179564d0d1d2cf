//! What a matched route does: forward upstream (`RouteAction`), redirect, or answer directly.
//!
//! Forwarding carries everything the router needs per request: the cluster choice (one name,
//! a request header, or weighted clusters picked the way Envoy does), path and host rewrites,
//! timeouts with Envoy's defaults, retries, hash and mirror policies. Options that would change
//! traffic and that we do not implement are rejected here rather than silently dropped.

use super::matching::{Fraction, RouteMatch, path_only};
use super::{HeaderOps, PerFilterConfig, Redirect, RetryPolicy, err};
use crate::config::matcher::{re2_substitution, search_regex};
use crate::config::{ConfigError, opt_duration};
use bytes::Bytes;
use http::{HeaderName, StatusCode};
use regex::Regex;
use std::time::Duration;
use xds_client::pb::envoy::config::core::v3 as core;
use xds_client::pb::envoy::config::route::v3 as proto;
use xds_client::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;

/// The action of a route.
// Nearly every route forwards; boxing the big variant would cost the common case a pointer chase.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Action {
    Forward(ForwardAction),
    Redirect(Redirect),
    DirectResponse {
        status: StatusCode,
        body: Option<Bytes>,
    },
}

/// A compiled rewrite: the regex and its replacement in `regex` crate syntax.
pub type RegexRewrite = (Regex, String);

/// A validated `RouteAction`.
#[derive(Debug, Clone)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    /// Status when the chosen cluster does not exist (Envoy default 503).
    pub cluster_not_found_status: StatusCode,
    pub prefix_rewrite: Option<String>,
    /// Applied to the path without its query; the replacement uses the `regex` crate's syntax
    /// (`${1}`), converted from Envoy's RE2 `\1`.
    pub regex_rewrite: Option<RegexRewrite>,
    pub host_rewrite: HostRewrite,
    /// Add the original host to `x-forwarded-host` when rewriting it.
    pub append_x_forwarded_host: bool,
    /// Upstream response timeout: Envoy's 15 s when unset, `None` when configured as 0. Not
    /// used when [`Self::uses_stream_duration`].
    pub timeout: Option<Duration>,
    /// Overrides the HCM's stream idle timeout; `Some(ZERO)` disables it.
    pub idle_timeout: Option<Duration>,
    /// The route's own retry policy; callers fall back to the virtual host's.
    pub retry_policy: Option<RetryPolicy>,
    pub hash_policy: Vec<HashPolicy>,
    /// The route's mirrors, else the virtual host's, else the route configuration's.
    pub mirror_policies: Vec<MirrorPolicy>,
    /// `max_stream_duration.max_stream_duration`.
    pub max_stream_duration: Option<Duration>,
    /// Cap on a `grpc-timeout` header (from `max_stream_duration.grpc_timeout_header_max`, or the
    /// deprecated `max_grpc_timeout`); `Some(ZERO)` honours `grpc-timeout` without a cap, `None`
    /// ignores it.
    pub max_grpc_timeout: Option<Duration>,
    /// Subtracted from a `grpc-timeout` header.
    pub grpc_timeout_header_offset: Option<Duration>,
    /// `max_stream_duration` is present (Envoy's "new timeouts"): the router has no response
    /// timeout of its own (`timeout` and `max_grpc_timeout` are ignored) and the `grpc-timeout`
    /// cap bounds the whole stream's duration instead, ending it with `DEADLINE_EXCEEDED`.
    pub uses_stream_duration: bool,
    pub include_vh_rate_limits: bool,
    /// `upgrade_configs`: per upgrade type (lowercase), whether it is allowed.
    pub upgrades: Vec<Upgrade>,
}

/// One `upgrade_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Lowercased, e.g. `websocket`, `connect`.
    pub upgrade_type: String,
    pub enabled: bool,
    /// CONNECT only: terminate the CONNECT and forward its payload (`connect_config` set).
    pub terminate_connect: bool,
    /// CONNECT termination also accepts POST.
    pub allow_post: bool,
}

/// Which cluster a request goes to.
#[derive(Debug, Clone)]
pub enum ClusterSpecifier {
    Name(String),
    /// The cluster named by the first value of this request header.
    Header(HeaderName),
    Weighted(WeightedClusters),
}

/// Weighted clusters; `total_weight` is the sum of the weights and is never 0.
#[derive(Debug, Clone)]
pub struct WeightedClusters {
    pub clusters: Vec<WeightedCluster>,
    pub total_weight: u64,
}

#[derive(Debug, Clone)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub headers: HeaderOps,
    pub host_rewrite: Option<String>,
    pub per_filter_config: PerFilterConfig,
}

impl WeightedClusters {
    /// Envoy's pick: `random % total_weight` falls in one cluster's slice of `[0, total)`, the
    /// slices laid out in configuration order.
    ///
    /// # Panics
    /// If `clusters` is empty, which a converted configuration never is.
    pub fn pick(&self, random: u64) -> &WeightedCluster {
        let target = random % self.total_weight.max(1);
        let mut end = 0u64;
        for cluster in &self.clusters {
            end += u64::from(cluster.weight);
            if target < end {
                return cluster;
            }
        }
        &self.clusters[self.clusters.len() - 1]
    }
}

/// How the upstream `:authority` is rewritten.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    None,
    Literal(String),
    /// `auto_host_rewrite`: the selected upstream host's hostname.
    Auto,
    /// The first value of this request header, when present and non-empty.
    Header(HeaderName),
    /// The path (without query) rewritten by the regex; replacement in `regex` crate syntax.
    PathRegex(Regex, String),
}

/// A `hash_policy` entry for consistent-hash load balancing.
#[derive(Debug, Clone, PartialEq)]
pub enum HashPolicy {
    Header {
        name: HeaderName,
        terminal: bool,
    },
    Cookie {
        name: String,
        /// When set, the router generates the cookie if missing (`Some(ZERO)`: a session cookie).
        ttl: Option<Duration>,
        path: Option<String>,
        terminal: bool,
    },
    QueryParameter {
        name: String,
        terminal: bool,
    },
    SourceIp {
        terminal: bool,
    },
}

/// A request mirror (shadow) target.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPolicy {
    pub cluster: String,
    /// Share of requests mirrored, in parts per million (default all).
    pub fraction_ppm: u32,
    /// Keep the host as is instead of appending `-shadow`.
    pub disable_shadow_host_suffix_append: bool,
}

impl MirrorPolicy {
    /// Whether this request is mirrored, for a random value.
    pub fn sample(&self, random: u64) -> bool {
        random % 1_000_000 < u64::from(self.fraction_ppm)
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

impl ForwardAction {
    /// The new path and query when a `prefix_rewrite` or `regex_rewrite` applies, `None` when
    /// the route rewrites nothing (or the path no longer starts with the matched prefix).
    /// `matcher` is the route's own match, which says what the prefix rewrite replaces.
    pub fn rewrite_path(&self, matcher: &RouteMatch, path_and_query: &str) -> Option<String> {
        if let Some(new_prefix) = &self.prefix_rewrite {
            return replace_prefix(
                path_and_query,
                matcher.matched_prefix(),
                !matcher.case_sensitive,
                new_prefix,
            );
        }
        let (regex, replacement) = self.regex_rewrite.as_ref()?;
        Some(regex_rewrite(path_and_query, regex, replacement))
    }

    pub(super) fn convert(
        ra: &proto::RouteAction,
        inherited_mirrors: &[MirrorPolicy],
    ) -> Result<Self, ConfigError> {
        unsupported(ra)?;
        let (prefix_rewrite, regex_rewrite) = path_rewrites(ra)?;
        let timeout = match opt_duration(ra.timeout.as_ref()).map_err(|r| err("timeout", r))? {
            None => Some(DEFAULT_TIMEOUT),
            Some(Duration::ZERO) => None,
            Some(d) => Some(d),
        };
        let idle_timeout =
            opt_duration(ra.idle_timeout.as_ref()).map_err(|r| err("idle_timeout", r))?;
        let stream = grpc_timeouts(ra)?;
        let mirror_policies =
            mirror_policies(&ra.request_mirror_policies, "request_mirror_policies")?;
        if !ra.rate_limits.is_empty() {
            tracing::debug!("ignoring route rate_limits");
        }
        Ok(Self {
            cluster: cluster_specifier(ra)?,
            cluster_not_found_status: cluster_not_found_status(ra.cluster_not_found_response_code)?,
            prefix_rewrite,
            regex_rewrite,
            host_rewrite: host_rewrite(ra)?,
            append_x_forwarded_host: ra.append_x_forwarded_host,
            timeout,
            idle_timeout,
            retry_policy: ra
                .retry_policy
                .as_ref()
                .map(RetryPolicy::try_from)
                .transpose()
                .map_err(|e| e.within("retry_policy"))?,
            hash_policy: hash_policies(&ra.hash_policy)?,
            mirror_policies: if mirror_policies.is_empty() {
                inherited_mirrors.to_vec()
            } else {
                mirror_policies
            },
            max_stream_duration: stream.max_stream_duration,
            max_grpc_timeout: stream.max_grpc_timeout,
            grpc_timeout_header_offset: stream.grpc_timeout_header_offset,
            uses_stream_duration: ra.max_stream_duration.is_some(),
            #[allow(deprecated)]
            include_vh_rate_limits: ra.include_vh_rate_limits.as_ref().is_some_and(|b| b.value),
            upgrades: upgrades(&ra.upgrade_configs)?,
        })
    }
}

/// Replaces the matched prefix of `path_and_query` (or, with no prefix, the whole path before the
/// query) by `new_prefix`, as Envoy's prefix rewrite does.
pub(super) fn replace_prefix(
    path_and_query: &str,
    matched: Option<&str>,
    ignore_case: bool,
    new_prefix: &str,
) -> Option<String> {
    let cut = match matched {
        Some(prefix) => {
            let head = path_and_query.get(..prefix.len())?;
            let same = if ignore_case {
                head.eq_ignore_ascii_case(prefix)
            } else {
                head == prefix
            };
            if !same {
                return None;
            }
            prefix.len()
        }
        None => path_only(path_and_query).len(),
    };
    Some(format!("{new_prefix}{}", &path_and_query[cut..]))
}

/// Rewrites the path part with the regex, keeping the query (and fragment).
pub(super) fn regex_rewrite(path_and_query: &str, regex: &Regex, replacement: &str) -> String {
    let path = path_only(path_and_query);
    let mut out = regex.replace_all(path, replacement).into_owned();
    out.push_str(&path_and_query[path.len()..]);
    out
}

/// Compiles a `RegexMatchAndSubstitute` for rewriting.
pub(super) fn regex_and_substitution(
    r: &RegexMatchAndSubstitute,
) -> Result<RegexRewrite, ConfigError> {
    let pattern = r
        .pattern
        .as_ref()
        .ok_or_else(|| err("pattern", "is required"))?;
    let regex = search_regex(pattern).map_err(|r| err("pattern", r))?;
    let substitution =
        re2_substitution(&regex, &r.substitution).map_err(|r| err("substitution", r))?;
    Ok((regex, substitution))
}

// `internal_redirect_action` and `cors` are deprecated, but a control plane may still send them.
#[allow(deprecated)]
fn unsupported(ra: &proto::RouteAction) -> Result<(), ConfigError> {
    use proto::route_action::InternalRedirectAction;
    if ra.internal_redirect_policy.is_some()
        || ra.internal_redirect_action == InternalRedirectAction::HandleInternalRedirect as i32
    {
        return Err(err(
            "internal_redirect_policy",
            "internal redirects are not supported",
        ));
    }
    if ra.path_rewrite_policy.is_some() {
        return Err(err(
            "path_rewrite_policy",
            "path rewrite extensions are not supported",
        ));
    }
    if !ra.path_rewrite.is_empty() {
        return Err(err(
            "path_rewrite",
            "formatted path rewrites are not supported",
        ));
    }
    if ra.retry_policy_typed_config.is_some() {
        return Err(err(
            "retry_policy_typed_config",
            "retry policy extensions are not supported",
        ));
    }
    if let Some(h) = &ra.hedge_policy {
        check_hedge_policy(h).map_err(|e| e.within("hedge_policy"))?;
    }
    if ra.cors.is_some() {
        return Err(err(
            "cors",
            "the deprecated cors field is not supported; use typed_per_filter_config",
        ));
    }
    Ok(())
}

/// Hedging is not implemented; a hedge policy that would hedge is rejected.
pub(super) fn check_hedge_policy(h: &proto::HedgePolicy) -> Result<(), ConfigError> {
    let extra_requests = h.initial_requests.as_ref().is_some_and(|v| v.value > 1)
        || h.additional_request_chance
            .as_ref()
            .is_some_and(|f| f.numerator > 0)
        || h.hedge_on_per_try_timeout;
    if extra_requests {
        return Err(err("", "request hedging is not supported"));
    }
    Ok(())
}

fn path_rewrites(
    ra: &proto::RouteAction,
) -> Result<(Option<String>, Option<RegexRewrite>), ConfigError> {
    let prefix = (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone());
    let regex = ra
        .regex_rewrite
        .as_ref()
        .map(regex_and_substitution)
        .transpose()
        .map_err(|e| e.within("regex_rewrite"))?;
    if prefix.is_some() && regex.is_some() {
        return Err(err(
            "regex_rewrite",
            "only one of prefix_rewrite and regex_rewrite may be set",
        ));
    }
    Ok((prefix, regex))
}

/// `max_stream_duration`, the `grpc-timeout` cap and the `grpc-timeout` offset.
struct StreamTimeouts {
    max_stream_duration: Option<Duration>,
    max_grpc_timeout: Option<Duration>,
    grpc_timeout_header_offset: Option<Duration>,
}

fn grpc_timeouts(ra: &proto::RouteAction) -> Result<StreamTimeouts, ConfigError> {
    let d = |field: &str, v| opt_duration(v).map_err(|r| err(field, r));
    // Envoy reads the gRPC timeouts from max_stream_duration once it is present at all.
    Ok(match &ra.max_stream_duration {
        Some(msd) => StreamTimeouts {
            max_stream_duration: d(
                "max_stream_duration.max_stream_duration",
                msd.max_stream_duration.as_ref(),
            )?,
            max_grpc_timeout: d(
                "max_stream_duration.grpc_timeout_header_max",
                msd.grpc_timeout_header_max.as_ref(),
            )?,
            grpc_timeout_header_offset: d(
                "max_stream_duration.grpc_timeout_header_offset",
                msd.grpc_timeout_header_offset.as_ref(),
            )?,
        },
        #[allow(deprecated)]
        None => StreamTimeouts {
            max_stream_duration: None,
            max_grpc_timeout: d("max_grpc_timeout", ra.max_grpc_timeout.as_ref())?,
            grpc_timeout_header_offset: d("grpc_timeout_offset", ra.grpc_timeout_offset.as_ref())?,
        },
    })
}

fn cluster_not_found_status(code: i32) -> Result<StatusCode, ConfigError> {
    use proto::route_action::ClusterNotFoundResponseCode as C;
    match C::try_from(code) {
        Ok(C::ServiceUnavailable) => Ok(StatusCode::SERVICE_UNAVAILABLE),
        Ok(C::NotFound) => Ok(StatusCode::NOT_FOUND),
        Ok(C::InternalServerError) => Ok(StatusCode::INTERNAL_SERVER_ERROR),
        Err(_) => Err(err(
            "cluster_not_found_response_code",
            format!("unknown code {code}"),
        )),
    }
}

fn header_name(field: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| err(field, format!("invalid header name {name:?}")))
}

fn cluster_specifier(ra: &proto::RouteAction) -> Result<ClusterSpecifier, ConfigError> {
    use proto::route_action::ClusterSpecifier as C;
    Ok(match &ra.cluster_specifier {
        Some(C::Cluster(name)) if name.is_empty() => {
            return Err(err("cluster", "must not be empty"));
        }
        Some(C::Cluster(name)) => ClusterSpecifier::Name(name.clone()),
        Some(C::ClusterHeader(h)) => ClusterSpecifier::Header(header_name("cluster_header", h)?),
        Some(C::WeightedClusters(w)) => ClusterSpecifier::Weighted(
            weighted_clusters(w).map_err(|e| e.within("weighted_clusters"))?,
        ),
        Some(C::ClusterSpecifierPlugin(_)) => {
            return Err(err(
                "cluster_specifier_plugin",
                "cluster specifier plugins are not supported",
            ));
        }
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return Err(err(
                "inline_cluster_specifier_plugin",
                "cluster specifier plugins are not supported",
            ));
        }
        None => return Err(err("cluster_specifier", "a cluster is required")),
    })
}

fn weighted_clusters(w: &proto::WeightedCluster) -> Result<WeightedClusters, ConfigError> {
    use proto::weighted_cluster::RandomValueSpecifier as R;
    use proto::weighted_cluster::cluster_weight::HostRewriteSpecifier;
    match &w.random_value_specifier {
        Some(R::HeaderName(h)) if !h.is_empty() => {
            return Err(err(
                "header_name",
                "taking the random value from a header is not supported",
            ));
        }
        Some(R::UseHashPolicy(b)) if b.value => {
            return Err(err("use_hash_policy", "hash-based picks are not supported"));
        }
        _ => {}
    }
    if w.clusters.is_empty() {
        return Err(err("clusters", "at least one cluster is required"));
    }
    let mut clusters = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let at = |e: ConfigError| e.within(&format!("clusters[{i}]"));
        if !c.cluster_header.is_empty() {
            return Err(at(err(
                "cluster_header",
                "cluster_header in weighted clusters is not supported",
            )));
        }
        if c.name.is_empty() {
            return Err(at(err("name", "must not be empty")));
        }
        clusters.push(WeightedCluster {
            name: c.name.clone(),
            weight: c.weight.as_ref().map_or(0, |v| v.value),
            headers: HeaderOps::from_proto(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )
            .map_err(at)?,
            host_rewrite: match &c.host_rewrite_specifier {
                Some(HostRewriteSpecifier::HostRewriteLiteral(h)) if !h.is_empty() => {
                    Some(h.clone())
                }
                _ => None,
            },
            per_filter_config: PerFilterConfig::from_proto(&c.typed_per_filter_config)
                .map_err(at)?,
        });
    }
    let total_weight = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total_weight == 0 {
        return Err(err(
            "clusters",
            "the sum of the weights must be greater than 0",
        ));
    }
    Ok(WeightedClusters {
        clusters,
        total_weight,
    })
}

fn host_rewrite(ra: &proto::RouteAction) -> Result<HostRewrite, ConfigError> {
    use proto::route_action::HostRewriteSpecifier as H;
    Ok(match &ra.host_rewrite_specifier {
        None => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) if h.is_empty() => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
        Some(H::AutoHostRewrite(b)) if b.value => HostRewrite::Auto,
        Some(H::AutoHostRewrite(_)) => HostRewrite::None,
        Some(H::HostRewriteHeader(h)) => {
            HostRewrite::Header(header_name("host_rewrite_header", h)?)
        }
        Some(H::HostRewritePathRegex(r)) => {
            let (regex, sub) =
                regex_and_substitution(r).map_err(|e| e.within("host_rewrite_path_regex"))?;
            HostRewrite::PathRegex(regex, sub)
        }
        Some(H::HostRewrite(_)) => {
            return Err(err(
                "host_rewrite",
                "formatted host rewrites are not supported",
            ));
        }
    })
}

fn hash_policies(
    policies: &[proto::route_action::HashPolicy],
) -> Result<Vec<HashPolicy>, ConfigError> {
    use proto::route_action::hash_policy::PolicySpecifier as P;
    let mut out = Vec::with_capacity(policies.len());
    for (i, policy) in policies.iter().enumerate() {
        let field = |sub: &str| format!("hash_policy[{i}].{sub}");
        let terminal = policy.terminal;
        out.push(match &policy.policy_specifier {
            Some(P::Header(h)) => {
                if h.regex_rewrite.is_some() {
                    return Err(err(field("header.regex_rewrite"), "is not supported"));
                }
                if h.header_name.starts_with(':') {
                    return Err(err(
                        field("header.header_name"),
                        "hashing on pseudo-headers is not supported",
                    ));
                }
                HashPolicy::Header {
                    name: header_name(&field("header.header_name"), &h.header_name)?,
                    terminal,
                }
            }
            Some(P::Cookie(c)) => {
                if c.name.is_empty() {
                    return Err(err(field("cookie.name"), "must not be empty"));
                }
                if !c.attributes.is_empty() {
                    return Err(err(field("cookie.attributes"), "are not supported"));
                }
                HashPolicy::Cookie {
                    name: c.name.clone(),
                    ttl: opt_duration(c.ttl.as_ref()).map_err(|r| err(field("cookie.ttl"), r))?,
                    path: (!c.path.is_empty()).then(|| c.path.clone()),
                    terminal,
                }
            }
            // `source_ip: false` hashes nothing, as in Envoy.
            Some(P::ConnectionProperties(p)) if !p.source_ip => continue,
            Some(P::ConnectionProperties(_)) => HashPolicy::SourceIp { terminal },
            Some(P::QueryParameter(q)) if q.name.is_empty() => {
                return Err(err(field("query_parameter.name"), "must not be empty"));
            }
            Some(P::QueryParameter(q)) => HashPolicy::QueryParameter {
                name: q.name.clone(),
                terminal,
            },
            Some(P::FilterState(f)) => {
                return Err(err(
                    field("filter_state"),
                    format!("hashing on filter state {:?} is not supported", f.key),
                ));
            }
            None => return Err(err(format!("hash_policy[{i}]"), "a policy is required")),
        });
    }
    Ok(out)
}

/// Converts `request_mirror_policies` (route, virtual host or route configuration level).
pub(super) fn mirror_policies(
    policies: &[proto::route_action::RequestMirrorPolicy],
    field: &str,
) -> Result<Vec<MirrorPolicy>, ConfigError> {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| mirror_policy(p).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

fn mirror_policy(
    p: &proto::route_action::RequestMirrorPolicy,
) -> Result<MirrorPolicy, ConfigError> {
    if !p.cluster_header.is_empty() {
        return Err(err(
            "cluster_header",
            "mirroring to a header-named cluster is not supported",
        ));
    }
    if p.cluster.is_empty() {
        return Err(err("cluster", "must not be empty"));
    }
    if !p.request_headers_mutations.is_empty() {
        return Err(err("request_headers_mutations", "are not supported"));
    }
    if !p.host_rewrite_literal.is_empty() {
        return Err(err("host_rewrite_literal", "is not supported"));
    }
    let fraction = p
        .runtime_fraction
        .as_ref()
        .map(Fraction::from_runtime)
        .transpose()
        .map_err(|e| e.within("runtime_fraction"))?
        .unwrap_or(Fraction::ALL);
    Ok(MirrorPolicy {
        cluster: p.cluster.clone(),
        fraction_ppm: fraction.ppm(),
        disable_shadow_host_suffix_append: p.disable_shadow_host_suffix_append,
    })
}

fn upgrades(configs: &[proto::route_action::UpgradeConfig]) -> Result<Vec<Upgrade>, ConfigError> {
    let mut out: Vec<Upgrade> = Vec::with_capacity(configs.len());
    for (i, u) in configs.iter().enumerate() {
        let field = |sub: &str| format!("upgrade_configs[{i}].{sub}");
        let upgrade_type = u.upgrade_type.to_ascii_lowercase();
        if upgrade_type.is_empty() {
            return Err(err(field("upgrade_type"), "must not be empty"));
        }
        if out.iter().any(|o| o.upgrade_type == upgrade_type) {
            return Err(err(
                field("upgrade_type"),
                format!("duplicate upgrade {upgrade_type:?}"),
            ));
        }
        let connect = u.connect_config.as_ref();
        if connect.is_some() && upgrade_type != "connect" {
            return Err(err(
                field("connect_config"),
                "only the CONNECT upgrade has a connect_config",
            ));
        }
        if connect.is_some_and(|c| c.proxy_protocol_config.is_some()) {
            return Err(err(
                field("connect_config.proxy_protocol_config"),
                "is not supported",
            ));
        }
        out.push(Upgrade {
            upgrade_type,
            enabled: u.enabled.as_ref().is_none_or(|b| b.value),
            terminate_connect: connect.is_some(),
            allow_post: connect.is_some_and(|c| c.allow_post),
        });
    }
    Ok(out)
}

/// Converts a `DirectResponseAction`.
pub(super) fn direct_response(
    d: &proto::DirectResponseAction,
    max_body: usize,
) -> Result<Action, ConfigError> {
    use core::data_source::Specifier as S;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| err("status", format!("{} is not in [200, 600)", d.status)))?;
    if d.body_format.is_some() {
        return Err(err("body_format", "formatted bodies are not supported"));
    }
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(S::InlineString(s)) => Some(Bytes::from(s.clone())),
        Some(S::InlineBytes(b)) => Some(Bytes::from(b.clone())),
        Some(S::Filename(_)) | Some(S::EnvironmentVariable(_)) => {
            return Err(err("body", "only inline bodies are supported"));
        }
    };
    if let Some(b) = &body
        && b.len() > max_body
    {
        return Err(err(
            "body",
            format!("body is {} bytes; the maximum is {max_body}", b.len()),
        ));
    }
    Ok(Action::DirectResponse { status, body })
}
