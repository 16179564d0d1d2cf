//! `envoy.filters.http.local_ratelimit`: a token bucket checked before the router forwards.
//!
//! A [`LocalRateLimit`] is parsed once per config (the filter-level `typed_config`, or one
//! route's / virtual host's `typed_per_filter_config` entry; the most specific applies whole) and
//! owns its bucket, so every route config gets its own bucket and a config update starts a full
//! one, as in Envoy. The bucket is shared by all workers (rates are per process) unless
//! `local_rate_limit_per_downstream_connection` asks for one per connection ([`ConnectionBuckets`]).
//!
//! The bucket is Envoy's current (timer-less) design: tokens accrue continuously at
//! `tokens_per_fill / fill_interval`, up to `max_tokens`, and the bucket starts full. Its whole
//! state is one `AtomicU64` (the instant at which it would be empty), refilled lazily by each
//! check from the caller's monotonic `now`: no timer, no lock, and a compare-and-swap loop makes
//! concurrent takes never exceed what has accrued.
//!
//! Semantics follow Envoy 1.40: the filter does nothing unless `filter_enabled` is set (and its
//! draw hits); over the limit it replies `local_rate_limited` with `status` (default 429, gRPC
//! `UNAVAILABLE` or `RESOURCE_EXHAUSTED`) only if `filter_enforced` is set and hits, otherwise it
//! adds `request_headers_to_add_when_not_enforced` and forwards. A filter-level config without a
//! `token_bucket` allows everything; a per-route config must have one.
//!
//! Not supported (refused at config time): `descriptors`, `rate_limits`,
//! `local_cluster_rate_limit`, and `%...%` substitutions in header values.

use crate::config::fraction::Fraction;
use crate::http::local_reply::{self, Body};
use crate::stats::{Counter, Store};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use rand::Rng;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use xds_client::any;
use xds_client::pb::envoy::config::core::v3::HeaderValueOption;
use xds_client::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use xds_client::pb::envoy::extensions::common::ratelimit::v3::XRateLimitHeadersRfcVersion;
use xds_client::pb::envoy::extensions::filters::http::local_ratelimit::v3 as proto;
use xds_client::pb::google::protobuf::Any;

/// The body of a rate-limited local reply (also its `grpc-message`).
pub const LIMITED_BODY: &str = "local_rate_limited";
/// Response-code details of a rate-limited local reply.
pub const LIMITED_DETAILS: &str = "local_rate_limited";
/// Access-log response flag of a rate-limited request.
pub const LIMITED_FLAG: &str = "RL";

/// Envoy refuses faster fill intervals.
const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);
/// gRPC `RESOURCE_EXHAUSTED`, for `rate_limited_as_resource_exhausted`.
const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Where a config came from: a per-route config must carry a token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigLevel {
    /// The HCM's `http_filters` entry.
    Filter,
    /// A route's, virtual host's or route configuration's `typed_per_filter_config`.
    PerRoute,
}

/// One parsed `LocalRateLimit`, with its (process-wide) bucket.
#[derive(Debug)]
pub struct LocalRateLimit {
    /// Identifies this config's per-connection buckets.
    id: u64,
    stat_prefix: String,
    /// Created in the server's store by the first request (configs are parsed without one).
    stats: OnceLock<LocalRateLimitStats>,
    status: StatusCode,
    grpc_status: Option<u32>,
    bucket: Option<BucketSpec>,
    /// The bucket every worker takes from (absent without a token bucket or per connection).
    shared: Option<TokenBucket>,
    per_connection: bool,
    /// `filter_enabled`; unset: the filter does nothing.
    enabled: Option<Fraction>,
    /// `filter_enforced`; unset: never enforced.
    enforced: Option<Fraction>,
    response_headers_to_add: Vec<HeaderAction>,
    request_headers_to_add_when_not_enforced: Vec<HeaderAction>,
    x_ratelimit_headers: bool,
    retry_after_header: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl LocalRateLimit {
    /// Parses a `LocalRateLimit` packed in an `Any` and starts its bucket (full) now.
    pub fn from_any(any: &Any, level: ConfigLevel) -> Result<Arc<Self>, String> {
        let p: proto::LocalRateLimit = any::unpack(any).map_err(|e| e.to_string())?;
        LocalRateLimit::from_proto(&p, level, Instant::now()).map(Arc::new)
    }

    /// Parses `p`, starting its bucket (full) at `now`.
    pub fn from_proto(
        p: &proto::LocalRateLimit,
        level: ConfigLevel,
        now: Instant,
    ) -> Result<Self, String> {
        if p.stat_prefix.is_empty() {
            return Err("stat_prefix: must not be empty".into());
        }
        if !p.descriptors.is_empty() {
            return Err("descriptors: not supported".into());
        }
        if !p.rate_limits.is_empty() {
            return Err("rate_limits: not supported".into());
        }
        if p.local_cluster_rate_limit.is_some() {
            return Err("local_cluster_rate_limit: not supported".into());
        }
        let bucket = p
            .token_bucket
            .as_ref()
            .map(BucketSpec::from_proto)
            .transpose()?;
        if bucket.is_none() && level == ConfigLevel::PerRoute {
            return Err("token_bucket: required in a per-route config".into());
        }
        let per_connection = p.local_rate_limit_per_downstream_connection;
        let fraction = |f: Option<_>, field: &str| {
            f.map(|r| Fraction::from_runtime(r).map_err(|e| e.relative_to(field)))
                .transpose()
        };
        let status = p
            .status
            .as_ref()
            .and_then(|s| u16::try_from(s.code).ok())
            .filter(|c| *c >= 400)
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        Ok(LocalRateLimit {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stat_prefix: p.stat_prefix.clone(),
            stats: OnceLock::new(),
            status,
            grpc_status: p
                .rate_limited_as_resource_exhausted
                .then_some(GRPC_RESOURCE_EXHAUSTED),
            shared: bucket
                .filter(|_| !per_connection)
                .map(|spec| TokenBucket::new(spec, now)),
            bucket,
            per_connection,
            enabled: fraction(p.filter_enabled.as_ref(), "filter_enabled")?,
            enforced: fraction(p.filter_enforced.as_ref(), "filter_enforced")?,
            response_headers_to_add: header_actions(
                &p.response_headers_to_add,
                "response_headers_to_add",
            )?,
            request_headers_to_add_when_not_enforced: header_actions(
                &p.request_headers_to_add_when_not_enforced,
                "request_headers_to_add_when_not_enforced",
            )?,
            x_ratelimit_headers: p.enable_x_ratelimit_headers
                == XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
            retry_after_header: p.enable_retry_after_header,
        })
    }

    /// Checks one request at `now`, counting in `store`'s `<stat_prefix>.http_local_rate_limit.*`. When it is over the limit but not enforced, the configured
    /// `request_headers_to_add_when_not_enforced` are applied to `request_headers` here.
    /// `connection` holds this downstream connection's buckets (used only by configs with
    /// `local_rate_limit_per_downstream_connection`).
    pub fn check(
        &self,
        store: &Store,
        now: Instant,
        rng: &mut impl Rng,
        request_headers: &mut HeaderMap,
        connection: &ConnectionBuckets,
    ) -> RateDecision<'_> {
        if !self.enabled.is_some_and(|f| f.draw(rng)) {
            return RateDecision::Allowed { x_ratelimit: None };
        }
        let stats = self.stats(store);
        stats.enabled.inc();
        let taken = match (&self.shared, self.bucket) {
            (Some(shared), _) => Some(Taken::take_one(shared, now)),
            (None, Some(spec)) if self.per_connection => Some(connection.take(self.id, spec, now)),
            _ => None,
        };
        let x_ratelimit = taken
            .as_ref()
            .filter(|_| self.x_ratelimit_headers)
            .map(|t| t.x_ratelimit);
        if taken.as_ref().is_none_or(|t| t.allowed) {
            stats.ok.inc();
            return RateDecision::Allowed { x_ratelimit };
        }
        stats.rate_limited.inc();
        if !self.enforced.is_some_and(|f| f.draw(rng)) {
            for action in &self.request_headers_to_add_when_not_enforced {
                action.apply(request_headers);
            }
            return RateDecision::LimitedNotEnforced { x_ratelimit };
        }
        stats.enforced.inc();
        RateDecision::Limited(LimitedReply {
            config: self,
            x_ratelimit,
            retry_after_secs: taken.map_or(1, |t| t.next_token_secs.max(1)),
        })
    }

    /// This config's stats in `store` (the first store asked keeps them).
    pub fn stats(&self, store: &Store) -> &LocalRateLimitStats {
        self.stats
            .get_or_init(|| LocalRateLimitStats::new(store, &self.stat_prefix))
    }
}

/// What [`LocalRateLimit::check`] decided.
#[derive(Debug)]
pub enum RateDecision<'a> {
    /// Forward. With `x_ratelimit` (when `enable_x_ratelimit_headers: DRAFT_VERSION_03`), add
    /// those headers to the response, whatever produces it.
    Allowed { x_ratelimit: Option<XRateLimit> },
    /// Over the limit, not enforced: forward (request headers already added), as `Allowed`.
    LimitedNotEnforced { x_ratelimit: Option<XRateLimit> },
    /// Reply with [`LimitedReply::response`] instead of forwarding (flag `RL`).
    Limited(LimitedReply<'a>),
}

/// An enforced rate limit: the local reply to send.
#[derive(Debug)]
pub struct LimitedReply<'a> {
    config: &'a LocalRateLimit,
    x_ratelimit: Option<XRateLimit>,
    retry_after_secs: u64,
}

impl LimitedReply<'_> {
    pub fn status(&self) -> StatusCode {
        self.config.status
    }

    /// `local_rate_limited` with the configured status (a gRPC request gets HTTP 200 with
    /// `grpc-status` 14, or 8 with `rate_limited_as_resource_exhausted`), then
    /// `response_headers_to_add`, `x-ratelimit-*` and, when enabled for a 429, `retry-after`.
    pub fn response(&self, grpc_request: bool) -> Response<Body> {
        let config = self.config;
        let mut response = local_reply::reply_with_grpc_status(
            config.status,
            LIMITED_BODY,
            grpc_request,
            config.grpc_status,
        );
        let headers = response.headers_mut();
        for action in &config.response_headers_to_add {
            action.apply(headers);
        }
        if let Some(x) = &self.x_ratelimit {
            x.apply(headers);
        }
        if config.retry_after_header
            && config.status == StatusCode::TOO_MANY_REQUESTS
            && !headers.contains_key(http::header::RETRY_AFTER)
        {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs),
            );
        }
        response
    }
}

/// `x-ratelimit-limit`, `-remaining` and `-reset` (draft 03) as Envoy computes them after the
/// take: remaining whole tokens, and the reset in seconds (0 while a token is left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XRateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
}

impl XRateLimit {
    /// Appends the three headers (Envoy adds, it does not replace).
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.append(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.append(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.append(X_RATELIMIT_RESET, HeaderValue::from(self.reset));
    }
}

/// The outcome of one take, with what the response headers report.
struct Taken {
    allowed: bool,
    x_ratelimit: XRateLimit,
    next_token_secs: u64,
}

impl Taken {
    fn take_one(bucket: &TokenBucket, now: Instant) -> Self {
        let allowed = bucket.try_take(now);
        let remaining = bucket.remaining(now);
        Taken {
            allowed,
            x_ratelimit: XRateLimit {
                limit: bucket.spec.max_tokens,
                remaining,
                reset: if remaining >= 1 {
                    0
                } else {
                    bucket.spec.token_interval_ms() / 1000
                },
            },
            next_token_secs: bucket.next_token_in(now).as_secs_f64().ceil() as u64,
        }
    }
}

/// `token_bucket`: capacity and refill rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: Duration,
}

impl BucketSpec {
    fn from_proto(p: &xds_client::pb::envoy::r#type::v3::TokenBucket) -> Result<Self, String> {
        let tokens_per_fill = p.tokens_per_fill.map_or(1, |t| t.value);
        if tokens_per_fill == 0 {
            return Err("token_bucket.tokens_per_fill: must be greater than 0".into());
        }
        let fill_interval = p
            .fill_interval
            .as_ref()
            .ok_or("token_bucket.fill_interval: required")?;
        let fill_interval = crate::config::duration(fill_interval)
            .map_err(|e| format!("token_bucket.fill_interval: {e}"))?;
        if fill_interval < MIN_FILL_INTERVAL {
            return Err(format!(
                "token_bucket.fill_interval: {fill_interval:?} is below the minimum of 50ms"
            ));
        }
        Ok(BucketSpec {
            max_tokens: u64::from(p.max_tokens),
            tokens_per_fill: u64::from(tokens_per_fill),
            fill_interval,
        })
    }

    fn interval_ns(&self) -> u128 {
        self.fill_interval.as_nanos()
    }

    /// Milliseconds one token takes to accrue, rounded up (Envoy's `nextTokenAvailable`).
    fn token_interval_ms(&self) -> u64 {
        let ms = self
            .interval_ns()
            .div_ceil(u128::from(self.tokens_per_fill) * 1_000_000);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// A lock-free continuous token bucket.
///
/// Time is counted in nanoseconds on a private axis that starts `full_ns` (the time an empty
/// bucket takes to fill) before `created`, so a new bucket is full. The state `empty_at` is the
/// point on that axis where the bucket held zero tokens; at time `t` it holds
/// `min(max_tokens, (t - empty_at) * rate)`. A take moves `empty_at` forward by one token's worth
/// with a compare-and-swap, so racing takes from any number of threads consume distinct tokens.
/// Amounts are kept in "token-nanoseconds" (`tokens × fill_interval_ns`) so the rate
/// `tokens_per_fill / fill_interval` needs no division.
#[derive(Debug)]
pub struct TokenBucket {
    spec: BucketSpec,
    created: Instant,
    full_ns: u64,
    empty_at: AtomicU64,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(spec: BucketSpec, now: Instant) -> Self {
        let capacity = spec.max_tokens as u128 * spec.interval_ns();
        let full_ns = capacity.div_ceil(u128::from(spec.tokens_per_fill));
        TokenBucket {
            spec,
            created: now,
            // Far beyond any sane config; keeps the axis clear of overflow.
            full_ns: u64::try_from(full_ns)
                .unwrap_or(u64::MAX >> 2)
                .min(u64::MAX >> 2),
            empty_at: AtomicU64::new(0),
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&self, now: Instant) -> bool {
        let at = self.axis(now);
        let cost = self.spec.interval_ns();
        let mut empty_at = self.empty_at.load(Ordering::Relaxed);
        loop {
            let available = self.available(at, empty_at);
            if available < cost {
                return false;
            }
            // What is left, as time since empty (rounded so that nothing is created).
            let left_ns = (available - cost) / u128::from(self.spec.tokens_per_fill);
            let new_empty_at = at.saturating_sub(u64::try_from(left_ns).unwrap_or(u64::MAX));
            match self.empty_at.compare_exchange_weak(
                empty_at,
                new_empty_at,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(current) => empty_at = current,
            }
        }
    }

    /// Whole tokens available at `now`.
    pub fn remaining(&self, now: Instant) -> u64 {
        let available = self.available(self.axis(now), self.empty_at.load(Ordering::Relaxed));
        u64::try_from(available / self.spec.interval_ns()).unwrap_or(u64::MAX)
    }

    /// How long until a token is available (zero when one is).
    pub fn next_token_in(&self, now: Instant) -> Duration {
        let available = self.available(self.axis(now), self.empty_at.load(Ordering::Relaxed));
        let missing = self.spec.interval_ns().saturating_sub(available);
        let ns = missing.div_ceil(u128::from(self.spec.tokens_per_fill));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// `now` on the bucket's time axis.
    fn axis(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.created).as_nanos();
        self.full_ns
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// Token-nanoseconds accrued between `empty_at` and `at`, capped at the capacity.
    fn available(&self, at: u64, empty_at: u64) -> u128 {
        let capacity = self.spec.max_tokens as u128 * self.spec.interval_ns();
        (u128::from(at.saturating_sub(empty_at)) * u128::from(self.spec.tokens_per_fill))
            .min(capacity)
    }
}

/// One downstream connection's buckets for configs with
/// `local_rate_limit_per_downstream_connection` (one per config, created full on first use).
/// Lives in the connection's context, on its worker.
#[derive(Debug, Default)]
pub struct ConnectionBuckets(RefCell<Vec<(u64, TokenBucket)>>);

impl ConnectionBuckets {
    fn take(&self, id: u64, spec: BucketSpec, now: Instant) -> Taken {
        let mut buckets = self.0.borrow_mut();
        let index = match buckets.iter().position(|(i, _)| *i == id) {
            Some(index) => index,
            None => {
                buckets.push((id, TokenBucket::new(spec, now)));
                buckets.len() - 1
            }
        };
        Taken::take_one(&buckets[index].1, now)
    }
}

/// One `HeaderValueOption` with a literal value.
#[derive(Debug, Clone)]
struct HeaderAction {
    name: HeaderName,
    value: HeaderValue,
    append: AppendAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

impl HeaderAction {
    fn apply(&self, headers: &mut HeaderMap) {
        let exists = headers.contains_key(&self.name);
        match self.append {
            AppendAction::AppendIfExistsOrAdd => {
                headers.append(self.name.clone(), self.value.clone());
            }
            AppendAction::AddIfAbsent if !exists => {
                headers.insert(self.name.clone(), self.value.clone());
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                headers.insert(self.name.clone(), self.value.clone());
            }
            AppendAction::OverwriteIfExists if exists => {
                headers.insert(self.name.clone(), self.value.clone());
            }
            AppendAction::AddIfAbsent | AppendAction::OverwriteIfExists => {}
        }
    }
}

/// Parses header additions; an empty value is dropped unless `keep_empty_value`.
fn header_actions(options: &[HeaderValueOption], field: &str) -> Result<Vec<HeaderAction>, String> {
    let mut actions = Vec::with_capacity(options.len());
    for (i, option) in options.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let header = option
            .header
            .as_ref()
            .ok_or_else(|| format!("{field}.header: required"))?;
        if header.key.starts_with(':') {
            return Err(format!(
                "{field}.header.key: pseudo-header {:?} cannot be added",
                header.key
            ));
        }
        let name = HeaderName::from_bytes(header.key.as_bytes())
            .map_err(|_| format!("{field}.header.key: invalid header name {:?}", header.key))?;
        let raw: &[u8] = if header.value.is_empty() {
            &header.raw_value
        } else {
            header.value.as_bytes()
        };
        let literal = unescape_literal(raw).ok_or_else(|| {
            format!("{field}.header.value: %-substitution formatters are not supported")
        })?;
        let value = HeaderValue::from_bytes(&literal)
            .map_err(|_| format!("{field}.header.value: not a valid header value"))?;
        let append = append_action(option, &field)?;
        if value.is_empty() && !option.keep_empty_value {
            continue;
        }
        actions.push(HeaderAction {
            name,
            value,
            append,
        });
    }
    Ok(actions)
}

/// `append_action`, or the deprecated `append` (true: append, false: overwrite).
#[allow(deprecated)] // `append` is still sent by older control planes
fn append_action(option: &HeaderValueOption, field: &str) -> Result<AppendAction, String> {
    let action = HeaderAppendAction::try_from(option.append_action).map_err(|_| {
        format!(
            "{field}.append_action: unknown action {}",
            option.append_action
        )
    })?;
    Ok(match (option.append, action) {
        (Some(_), a) if a != HeaderAppendAction::AppendIfExistsOrAdd => {
            return Err(format!("{field}: append and append_action are both set"));
        }
        (Some(append), _) if append.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
        (None, HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
        (None, HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
        (None, HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
    })
}

/// A header value without formatter commands: `%%` is a literal `%`, any other `%` is a command.
fn unescape_literal(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied();
    while let Some(b) = bytes.next() {
        if b == b'%' && bytes.next() != Some(b'%') {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

/// `<stat_prefix>.http_local_rate_limit.*` (Envoy's names; not under `http.`).
#[derive(Debug)]
pub struct LocalRateLimitStats {
    pub enabled: Counter,
    pub enforced: Counter,
    pub rate_limited: Counter,
    pub ok: Counter,
    /// Always 0: only descriptors can be in shadow mode.
    pub shadow_mode: Counter,
}

impl LocalRateLimitStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let name = |stat: &str| format!("{stat_prefix}.http_local_rate_limit.{stat}");
        LocalRateLimitStats {
            enabled: store.counter(&name("enabled")),
            enforced: store.counter(&name("enforced")),
            rate_limited: store.counter(&name("rate_limited")),
            ok: store.counter(&name("ok")),
            shadow_mode: store.counter(&name("shadow_mode")),
        }
    }
}

#[cfg(test)]
mod tests;
