//! `envoy.filters.http.fault`: injected delays and aborts, decided before the router forwards.
//!
//! A [`FaultConfig`] is parsed once from an `HTTPFault` (the filter-level config or a per-route
//! override; the most specific one applies whole, Envoy merges nothing). [`FaultConfig::decide`]
//! then makes every per-request choice synchronously, as Envoy's `FaultFilter::decodeHeaders`
//! does: the target checks (`upstream_cluster`, `downstream_nodes`, `headers`), then the delay,
//! then the abort, each with its own independent percentage draw. The caller sleeps for the
//! delay, then sends the abort reply (or forwards), then drops the decision.
//!
//! `max_active_faults` is enforced, as in Envoy, against the `fault.active_faults` gauge shared
//! by every worker: a fuzzy limit (check, then increment), charged once per request however
//! many faults it gets, and released when the [`FaultDecision`] is dropped.
//!
//! Not supported: `response_rate_limit` (refused at config time), runtime overrides (the
//! `*_runtime` keys and `fault.http.<downstream-cluster>.*`; Tern has no runtime), and the
//! per-downstream-cluster stats `fault.<cluster>.{aborts,delays}_injected`.

use crate::config::fraction::Fraction;
use crate::config::matcher::HeaderMatcher;
use crate::http::local_reply::{self, Body};
use crate::stats::{Counter, Gauge, Store};
use http::{HeaderMap, HeaderName, Response, StatusCode};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use xds_client::any;
use xds_client::pb::envoy::extensions::filters::common::fault::v3 as common;
use xds_client::pb::envoy::extensions::filters::http::fault::v3 as proto;
use xds_client::pb::google::protobuf::Any;

/// The local reply body of an injected abort.
pub const ABORT_BODY: &str = "fault filter abort";
/// Response-code details of an injected abort.
pub const ABORT_DETAILS: &str = "fault_filter_abort";
/// Access-log response flag for an injected delay.
pub const DELAY_FLAG: &str = "DI";
/// Access-log response flag for an injected abort.
pub const ABORT_FLAG: &str = "FI";

const DELAY_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-delay-request");
const DELAY_REQUEST_PERCENTAGE: HeaderName =
    HeaderName::from_static("x-envoy-fault-delay-request-percentage");
const ABORT_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-abort-request");
const ABORT_GRPC_REQUEST: HeaderName = HeaderName::from_static("x-envoy-fault-abort-grpc-request");
const ABORT_REQUEST_PERCENTAGE: HeaderName =
    HeaderName::from_static("x-envoy-fault-abort-request-percentage");
const DOWNSTREAM_SERVICE_NODE: HeaderName =
    HeaderName::from_static("x-envoy-downstream-service-node");

/// One parsed `HTTPFault`.
#[derive(Debug)]
pub struct FaultConfig {
    delay: Option<DelaySpec>,
    abort: Option<AbortSpec>,
    /// Faults apply only to requests routed to this cluster.
    upstream_cluster: Option<String>,
    /// Faults apply only to requests whose `x-envoy-downstream-service-node` is one of these.
    downstream_nodes: Vec<String>,
    headers: Vec<HeaderMatcher>,
    max_active_faults: Option<u64>,
}

#[derive(Debug)]
struct DelaySpec {
    duration: DelaySource,
    percentage: Fraction,
}

#[derive(Debug)]
enum DelaySource {
    Fixed(Duration),
    /// `x-envoy-fault-delay-request` in milliseconds, percentage capped by
    /// `x-envoy-fault-delay-request-percentage`.
    Header,
}

#[derive(Debug)]
struct AbortSpec {
    status: AbortSource,
    percentage: Fraction,
    /// `response_body`, or [`ABORT_BODY`].
    body: Arc<str>,
}

#[derive(Debug)]
enum AbortSource {
    Http(StatusCode),
    Grpc(u32),
    /// `x-envoy-fault-abort-request` (HTTP status), else `x-envoy-fault-abort-grpc-request`,
    /// percentage capped by `x-envoy-fault-abort-request-percentage`.
    Header,
}

impl TryFrom<&proto::HttpFault> for FaultConfig {
    type Error = String;

    fn try_from(p: &proto::HttpFault) -> Result<Self, String> {
        if p.response_rate_limit.is_some() {
            return Err("response_rate_limit: not supported".into());
        }
        let headers = p
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HeaderMatcher::try_from(h).map_err(|e| e.relative_to(&format!("headers[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        Ok(FaultConfig {
            delay: p.delay.as_ref().map(delay_spec).transpose()?,
            abort: p.abort.as_ref().map(abort_spec).transpose()?,
            upstream_cluster: Some(p.upstream_cluster.clone()).filter(|c| !c.is_empty()),
            downstream_nodes: p.downstream_nodes.clone(),
            headers,
            max_active_faults: p.max_active_faults.map(|m| u64::from(m.value)),
        })
    }
}

fn delay_spec(d: &common::FaultDelay) -> Result<DelaySpec, String> {
    use common::fault_delay::FaultDelaySecifier as Spec;
    let duration = match &d.fault_delay_secifier {
        Some(Spec::FixedDelay(fixed)) => {
            let fixed =
                crate::config::duration(fixed).map_err(|e| format!("delay.fixed_delay: {e}"))?;
            if fixed.is_zero() {
                return Err("delay.fixed_delay: must be greater than 0".into());
            }
            DelaySource::Fixed(fixed)
        }
        Some(Spec::HeaderDelay(_)) => DelaySource::Header,
        None => return Err("delay: one of fixed_delay or header_delay is required".into()),
    };
    Ok(DelaySpec {
        duration,
        percentage: percentage(d.percentage.as_ref(), "delay.percentage")?,
    })
}

fn abort_spec(a: &proto::FaultAbort) -> Result<AbortSpec, String> {
    use proto::fault_abort::ErrorType;
    let status = match a.error_type {
        Some(ErrorType::HttpStatus(code)) => {
            let status = u16::try_from(code)
                .ok()
                .filter(|c| (200..600).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| {
                    format!("abort.http_status: {code} is not in the range [200, 600)")
                })?;
            AbortSource::Http(status)
        }
        Some(ErrorType::GrpcStatus(code)) => AbortSource::Grpc(code),
        Some(ErrorType::HeaderAbort(_)) => AbortSource::Header,
        None => {
            return Err(
                "abort: one of http_status, grpc_status or header_abort is required".into(),
            );
        }
    };
    let body = if a.response_body.is_empty() {
        ABORT_BODY
    } else {
        a.response_body.as_str()
    };
    Ok(AbortSpec {
        status,
        percentage: percentage(a.percentage.as_ref(), "abort.percentage")?,
        body: body.into(),
    })
}

/// An unset percentage is the proto default, 0/100: the fault never fires (as in Envoy).
fn percentage(
    p: Option<&xds_client::pb::envoy::r#type::v3::FractionalPercent>,
    field: &str,
) -> Result<Fraction, String> {
    Fraction::from_proto(&p.cloned().unwrap_or_default()).map_err(|e| e.relative_to(field))
}

impl FaultConfig {
    /// Parses an `HTTPFault` packed in an `Any` (filter-level `typed_config` or a route's
    /// `typed_per_filter_config` entry).
    pub fn from_any(any: &Any) -> Result<Arc<FaultConfig>, String> {
        let p: proto::HttpFault = any::unpack(any).map_err(|e| e.to_string())?;
        FaultConfig::try_from(&p).map(Arc::new)
    }

    /// Decides this request's faults. `cluster` is the cluster the route chose (for weighted
    /// clusters, the picked one; `None` when the route does not forward). Counts
    /// `delays_injected` / `aborts_injected` and charges `active_faults` for what it returns.
    pub fn decide(
        &self,
        stats: &FaultStats,
        headers: &HeaderMap,
        cluster: Option<&str>,
        rng: &mut impl Rng,
    ) -> FaultDecision {
        if !self.targets(headers, cluster) {
            return FaultDecision::none();
        }
        let delay = self.delay_for(headers, rng);
        let mut decision = FaultDecision::none();
        if let Some(delay) = delay {
            // A delay that cannot be charged is skipped; the abort below then cannot be
            // charged either (Envoy checks again and, without a racing release, fails again).
            if let Some(active) = self.try_activate(stats) {
                stats.delays_injected.inc();
                decision.delay = Some(delay);
                decision.active = Some(active);
            }
        }
        // Envoy draws the abort after the delay has elapsed; drawing it now is the same
        // independent draw.
        if let Some(abort) = self.abort_for(headers, rng) {
            if decision.active.is_none() {
                decision.active = self.try_activate(stats);
            }
            if decision.active.is_some() {
                stats.aborts_injected.inc();
                decision.abort = Some(abort);
            }
        }
        decision
    }

    /// `upstream_cluster`, `downstream_nodes` and `headers`, in Envoy's order.
    fn targets(&self, headers: &HeaderMap, cluster: Option<&str>) -> bool {
        if let Some(target) = &self.upstream_cluster
            && cluster != Some(target.as_str())
        {
            return false;
        }
        if !self.downstream_nodes.is_empty() {
            let node = headers
                .get(DOWNSTREAM_SERVICE_NODE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
            if !node.is_some_and(|n| self.downstream_nodes.iter().any(|d| *d == n)) {
                return false;
            }
        }
        self.headers.iter().all(|m| m.matches(headers))
    }

    fn delay_for(&self, headers: &HeaderMap, rng: &mut impl Rng) -> Option<Duration> {
        let spec = self.delay.as_ref()?;
        let enabled = match spec.duration {
            DelaySource::Fixed(_) => spec.percentage,
            DelaySource::Header => {
                header_percentage(spec.percentage, headers, DELAY_REQUEST_PERCENTAGE)
            }
        };
        if !enabled.draw(rng) {
            return None;
        }
        let duration = match spec.duration {
            DelaySource::Fixed(d) => d,
            DelaySource::Header => Duration::from_millis(first_number(headers, &DELAY_REQUEST)?),
        };
        Some(duration).filter(|d| !d.is_zero())
    }

    fn abort_for(&self, headers: &HeaderMap, rng: &mut impl Rng) -> Option<Abort> {
        let spec = self.abort.as_ref()?;
        let enabled = match spec.status {
            AbortSource::Header => {
                header_percentage(spec.percentage, headers, ABORT_REQUEST_PERCENTAGE)
            }
            _ => spec.percentage,
        };
        if !enabled.draw(rng) {
            return None;
        }
        let (http_status, grpc_status) = match spec.status {
            AbortSource::Http(status) => (status, None),
            AbortSource::Grpc(code) => (StatusCode::OK, Some(code)),
            AbortSource::Header => {
                let http = first_number(headers, &ABORT_REQUEST)
                    .filter(|c| (200..600).contains(c))
                    .and_then(|c| u16::try_from(c).ok())
                    .and_then(|c| StatusCode::from_u16(c).ok());
                match http {
                    Some(status) => (status, None),
                    None => {
                        let code = first_number(headers, &ABORT_GRPC_REQUEST)
                            .and_then(|c| u32::try_from(c).ok())?;
                        (StatusCode::OK, Some(code))
                    }
                }
            }
        };
        Some(Abort {
            http_status,
            grpc_status,
            body: spec.body.clone(),
        })
    }

    /// Charges one active fault unless `max_active_faults` is reached (counting an overflow).
    fn try_activate(&self, stats: &FaultStats) -> Option<ActiveFault> {
        let active = u64::try_from(stats.active_faults.value()).unwrap_or(0);
        if self.max_active_faults.is_some_and(|max| active >= max) {
            stats.faults_overflow.inc();
            return None;
        }
        stats.active_faults.inc();
        Some(ActiveFault(stats.active_faults.clone()))
    }
}

/// The configured percentage, lowered (never raised) by a numeric percentage header.
fn header_percentage(configured: Fraction, headers: &HeaderMap, name: HeaderName) -> Fraction {
    match first_number(headers, &name).map(|n| u32::try_from(n).unwrap_or(u32::MAX)) {
        Some(n) => configured.capped_at(n),
        None => configured,
    }
}

/// The first value of an (untrusted) header as an unsigned integer, as `absl::SimpleAtoi` reads
/// it (surrounding whitespace allowed).
fn first_number(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    value.trim().parse().ok()
}

/// What [`FaultConfig::decide`] chose for one request. Keep it until the delay has elapsed and
/// the abort (if any) is sent: dropping it releases the active fault.
#[derive(Debug, Default)]
#[must_use = "dropping the decision releases the active fault"]
pub struct FaultDecision {
    /// Hold the request this long first (Envoy's response flag `DI`).
    pub delay: Option<Duration>,
    /// Then reply locally instead of forwarding (Envoy's response flag `FI`).
    pub abort: Option<Abort>,
    active: Option<ActiveFault>,
}

impl FaultDecision {
    fn none() -> Self {
        FaultDecision::default()
    }

    /// No fault for this request.
    pub fn is_empty(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    /// The access-log response flags, in Envoy's order: `DI`, `FI`, `DI,FI` or "".
    pub fn response_flags(&self) -> &'static str {
        match (self.delay.is_some(), self.abort.is_some()) {
            (true, true) => "DI,FI",
            (true, false) => DELAY_FLAG,
            (false, true) => ABORT_FLAG,
            (false, false) => "",
        }
    }
}

/// An injected abort. A gRPC abort is HTTP 200 carrying `grpc_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    pub http_status: StatusCode,
    pub grpc_status: Option<u32>,
    /// The reply text: `fault filter abort` unless `response_body` is configured.
    pub body: Arc<str>,
}

impl Abort {
    /// The local reply: the body as `text/plain`, or for a gRPC request a trailers-only response
    /// with `grpc_status` (or the status mapped from `http_status`) and the body as
    /// `grpc-message`. Response-code details: [`ABORT_DETAILS`].
    pub fn response(&self, grpc_request: bool) -> Response<Body> {
        local_reply::reply_with_grpc_status(
            self.http_status,
            &self.body,
            grpc_request,
            self.grpc_status,
        )
    }
}

/// One charge on `fault.active_faults`, released on drop.
#[derive(Debug)]
struct ActiveFault(Gauge);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `http.<stat_prefix>.fault.*`, one set per connection manager (shared by its workers).
#[derive(Debug)]
pub struct FaultStats {
    pub aborts_injected: Counter,
    pub delays_injected: Counter,
    pub faults_overflow: Counter,
    /// Always 0: response rate limits are not supported.
    pub response_rl_injected: Counter,
    pub active_faults: Gauge,
}

impl FaultStats {
    /// `stat_prefix` is the connection manager's.
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let name = |stat: &str| format!("http.{stat_prefix}.fault.{stat}");
        FaultStats {
            aborts_injected: store.counter(&name("aborts_injected")),
            delays_injected: store.counter(&name("delays_injected")),
            faults_overflow: store.counter(&name("faults_overflow")),
            response_rl_injected: store.counter(&name("response_rl_injected")),
            active_faults: store.gauge(&name("active_faults")),
        }
    }
}

#[cfg(test)]
mod tests;
