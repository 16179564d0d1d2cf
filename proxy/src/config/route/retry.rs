//! `RetryPolicy`: when and how often the router retries, with Envoy's defaults (one retry when a
//! policy exists, 25 ms base back-off capped at ten times the base).
//!
//! `retry_on` is Envoy's comma list; unknown names are ignored, as Envoy does, so a newer
//! control plane cannot make us reject a whole route table. Host predicates other than
//! `previous_hosts`, retry priorities and option predicates change which hosts retries go to,
//! and are rejected.

use super::err;
use crate::config::matcher::HeaderMatcher;
use crate::config::{ConfigError, opt_duration};
use std::time::Duration;
use xds_client::pb::envoy::config::route::v3 as proto;

/// The `retry_on` conditions, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const NONE: RetryOn = RetryOn(0);
    pub const FIVE_XX: RetryOn = RetryOn(1 << 0);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 3);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 7);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 8);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 9);
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    // gRPC status codes in the response trailers (or trailers-only headers).
    pub const CANCELLED: RetryOn = RetryOn(1 << 16);
    pub const DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 17);
    pub const INTERNAL: RetryOn = RetryOn(1 << 18);
    pub const RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 19);
    pub const UNAVAILABLE: RetryOn = RetryOn(1 << 20);

    const NAMES: [(&'static str, RetryOn); 16] = [
        ("5xx", Self::FIVE_XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("reset-before-request", Self::RESET_BEFORE_REQUEST),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
        ("envoy-ratelimited", Self::ENVOY_RATELIMITED),
        (
            "http3-post-connect-failure",
            Self::HTTP3_POST_CONNECT_FAILURE,
        ),
        ("cancelled", Self::CANCELLED),
        ("deadline-exceeded", Self::DEADLINE_EXCEEDED),
        ("internal", Self::INTERNAL),
        ("resource-exhausted", Self::RESOURCE_EXHAUSTED),
        ("unavailable", Self::UNAVAILABLE),
    ];

    /// Parses Envoy's comma-separated list (`"5xx,connect-failure"`); unknown names are ignored.
    pub fn parse(list: &str) -> RetryOn {
        list.split(',')
            .map(str::trim)
            .filter_map(|name| Self::NAMES.iter().find(|(n, _)| *n == name))
            .fold(Self::NONE, |acc, (_, bit)| acc | *bit)
    }

    /// Every condition in `other` is in `self`.
    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;

    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

/// A validated retry policy.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    /// Retries after the first attempt (default 1).
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// For `retriable-headers`: matched with [`HeaderMatcher::matches_response`].
    pub retriable_headers: Vec<HeaderMatcher>,
    /// The request must match all of these for any retry.
    pub retriable_request_headers: Vec<HeaderMatcher>,
    /// `envoy.retry_host_predicates.previous_hosts`: retries avoid hosts already tried.
    pub previous_hosts: bool,
    /// Host selections per retry when a predicate rejects hosts (default 1).
    pub host_selection_retry_max_attempts: u32,
    /// Whole milliseconds, at least 1 ms (default 25 ms).
    pub backoff_base: Duration,
    /// Default ten times the base.
    pub backoff_max: Duration,
}

const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

impl TryFrom<&proto::RetryPolicy> for RetryPolicy {
    type Error = ConfigError;

    fn try_from(p: &proto::RetryPolicy) -> Result<Self, ConfigError> {
        if p.retry_priority.is_some() {
            return Err(err("retry_priority", "retry priorities are not supported"));
        }
        if !p.retry_options_predicates.is_empty() {
            return Err(err(
                "retry_options_predicates",
                "retry options predicates are not supported",
            ));
        }
        let previous_hosts = previous_hosts(&p.retry_host_predicate)?;
        let (backoff_base, backoff_max) = backoff(p.retry_back_off.as_ref())?;
        let ms_or_none = |field: &str, d| -> Result<Option<Duration>, ConfigError> {
            Ok(opt_duration(d)
                .map_err(|r| err(field, r))?
                .filter(|d| !d.is_zero()))
        };
        Ok(Self {
            retry_on: RetryOn::parse(&p.retry_on),
            num_retries: p.num_retries.as_ref().map_or(1, |v| v.value),
            per_try_timeout: ms_or_none("per_try_timeout", p.per_try_timeout.as_ref())?,
            per_try_idle_timeout: ms_or_none(
                "per_try_idle_timeout",
                p.per_try_idle_timeout.as_ref(),
            )?,
            retriable_status_codes: p
                .retriable_status_codes
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    u16::try_from(c).map_err(|_| {
                        err(
                            format!("retriable_status_codes[{i}]"),
                            format!("{c} is not a status"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            retriable_headers: header_matchers(&p.retriable_headers, "retriable_headers")?,
            retriable_request_headers: header_matchers(
                &p.retriable_request_headers,
                "retriable_request_headers",
            )?,
            previous_hosts,
            host_selection_retry_max_attempts: match p.host_selection_retry_max_attempts {
                0 => 1,
                n => u32::try_from(n).map_err(|_| {
                    err(
                        "host_selection_retry_max_attempts",
                        format!("{n} is out of range"),
                    )
                })?,
            },
            backoff_base,
            backoff_max,
        })
    }
}

/// Whether the predicates ask for `previous_hosts`; any other predicate is rejected.
fn previous_hosts(
    predicates: &[proto::retry_policy::RetryHostPredicate],
) -> Result<bool, ConfigError> {
    let mut previous_hosts = false;
    for (i, predicate) in predicates.iter().enumerate() {
        use proto::retry_policy::retry_host_predicate::ConfigType;
        let type_url = match &predicate.config_type {
            Some(ConfigType::TypedConfig(any)) => xds_client::any::type_url(any),
            None => String::new(),
        };
        if type_url == PREVIOUS_HOSTS_TYPE
            || (type_url.is_empty() && predicate.name == PREVIOUS_HOSTS)
        {
            previous_hosts = true;
        } else {
            return Err(err(
                format!("retry_host_predicate[{i}]"),
                format!("host predicate {:?} is not supported", predicate.name),
            ));
        }
    }
    Ok(previous_hosts)
}

fn header_matchers(
    matchers: &[proto::HeaderMatcher],
    field: &str,
) -> Result<Vec<HeaderMatcher>, ConfigError> {
    matchers
        .iter()
        .enumerate()
        .map(|(i, h)| HeaderMatcher::try_from(h).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

/// Envoy keeps back-off intervals in whole milliseconds, at least 1.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis((d.as_millis() as u64).max(1))
}

fn backoff(
    b: Option<&proto::retry_policy::RetryBackOff>,
) -> Result<(Duration, Duration), ConfigError> {
    let Some(b) = b else {
        return Ok((DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_BASE * 10));
    };
    let base = opt_duration(b.base_interval.as_ref())
        .map_err(|r| err("retry_back_off.base_interval", r))?
        .ok_or_else(|| err("retry_back_off.base_interval", "is required"))
        .map(whole_ms)?;
    let max = opt_duration(b.max_interval.as_ref())
        .map_err(|r| err("retry_back_off.max_interval", r))?
        .map(whole_ms);
    match max {
        Some(max) if max < base => Err(err(
            "retry_back_off.max_interval",
            "must be at least base_interval",
        )),
        Some(max) => Ok((base, max)),
        None => Ok((base, base * 10)),
    }
}
