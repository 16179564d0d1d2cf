//! `AccessLog.filter`: which finished requests are written.
//!
//! Supported: `status_code_filter`, `duration_filter` (both against the comparison's
//! `default_value`: Tern has no runtime), `not_health_check_filter` (Tern sends no health
//! checks through the HTTP connection manager, so every request passes), `response_flag_filter`,
//! `and_filter`, `or_filter` and `runtime_filter` (its default `percent_sampled`, drawn from the
//! request ID like Envoy unless `use_independent_randomness`). Any other filter is a config
//! error: a filter Tern cannot evaluate must not silently log everything or nothing.

use super::LogRecord;
use super::format::RESPONSE_FLAGS;
use crate::config::fraction::Fraction;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use xds_client::pb::envoy::config::accesslog::v3::{
    self as proto, access_log_filter::FilterSpecifier, comparison_filter,
};

/// A parsed access log filter.
#[derive(Debug, Clone)]
pub(super) enum Filter {
    StatusCode(Comparison),
    Duration(Comparison),
    NotHealthCheck,
    /// Any of these flags; empty means any flag at all.
    ResponseFlag(Vec<String>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Runtime(Sampling),
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Comparison {
    op: comparison_filter::Op,
    value: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Sampling {
    fraction: Fraction,
    independent: bool,
}

impl Filter {
    /// Converts `p`; `path` names it in errors (`filter.and_filter.filters[1]`).
    pub(super) fn from_proto(p: &proto::AccessLogFilter, path: &str) -> Result<Self, String> {
        let Some(specifier) = &p.filter_specifier else {
            return Err(format!("{path}: a filter type is required"));
        };
        Ok(match specifier {
            FilterSpecifier::StatusCodeFilter(f) => Filter::StatusCode(Comparison::from_proto(
                f.comparison.as_ref(),
                &format!("{path}.status_code_filter"),
            )?),
            FilterSpecifier::DurationFilter(f) => Filter::Duration(Comparison::from_proto(
                f.comparison.as_ref(),
                &format!("{path}.duration_filter"),
            )?),
            FilterSpecifier::NotHealthCheckFilter(_) => Filter::NotHealthCheck,
            FilterSpecifier::ResponseFlagFilter(f) => {
                for (i, flag) in f.flags.iter().enumerate() {
                    if !RESPONSE_FLAGS.iter().any(|(short, _)| short == flag) {
                        return Err(format!(
                            "{path}.response_flag_filter.flags[{i}]: unknown response flag {flag:?}"
                        ));
                    }
                }
                Filter::ResponseFlag(f.flags.clone())
            }
            FilterSpecifier::AndFilter(f) => {
                Filter::And(list(&f.filters, &format!("{path}.and_filter"))?)
            }
            FilterSpecifier::OrFilter(f) => {
                Filter::Or(list(&f.filters, &format!("{path}.or_filter"))?)
            }
            FilterSpecifier::RuntimeFilter(f) => {
                Filter::Runtime(Sampling::from_proto(f, &format!("{path}.runtime_filter"))?)
            }
            other => {
                return Err(format!(
                    "{path}: {} is not supported",
                    unsupported_name(other)
                ));
            }
        })
    }

    /// Whether `record` is to be logged.
    pub(super) fn matches(&self, record: &LogRecord) -> bool {
        match self {
            Filter::StatusCode(c) => c.holds(u64::from(record.response_code)),
            Filter::Duration(c) => {
                c.holds(u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX))
            }
            Filter::NotHealthCheck => true,
            Filter::ResponseFlag(wanted) => {
                let mut set = record
                    .response_flags
                    .split(',')
                    .filter(|f| !f.is_empty() && *f != "-");
                if wanted.is_empty() {
                    set.next().is_some()
                } else {
                    set.any(|f| wanted.iter().any(|w| w == f))
                }
            }
            Filter::And(all) => all.iter().all(|f| f.matches(record)),
            Filter::Or(any) => any.iter().any(|f| f.matches(record)),
            Filter::Runtime(sampling) => sampling.sample(record),
        }
    }
}

fn list(filters: &[proto::AccessLogFilter], path: &str) -> Result<Vec<Filter>, String> {
    if filters.len() < 2 {
        return Err(format!("{path}.filters: needs at least 2 filters"));
    }
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| Filter::from_proto(f, &format!("{path}.filters[{i}]")))
        .collect()
}

fn unsupported_name(specifier: &FilterSpecifier) -> &'static str {
    match specifier {
        FilterSpecifier::TraceableFilter(_) => "traceable_filter",
        FilterSpecifier::HeaderFilter(_) => "header_filter",
        FilterSpecifier::GrpcStatusFilter(_) => "grpc_status_filter",
        FilterSpecifier::ExtensionFilter(_) => "extension_filter",
        FilterSpecifier::MetadataFilter(_) => "metadata_filter",
        FilterSpecifier::LogTypeFilter(_) => "log_type_filter",
        _ => "this filter",
    }
}

impl Comparison {
    fn from_proto(c: Option<&proto::ComparisonFilter>, path: &str) -> Result<Self, String> {
        let Some(c) = c else {
            return Err(format!("{path}.comparison: value is required"));
        };
        let op = comparison_filter::Op::try_from(c.op)
            .map_err(|_| format!("{path}.comparison.op: unknown operator {}", c.op))?;
        let Some(value) = &c.value else {
            return Err(format!("{path}.comparison.value: value is required"));
        };
        Ok(Comparison {
            op,
            value: u64::from(value.default_value),
        })
    }

    fn holds(self, actual: u64) -> bool {
        use comparison_filter::Op;
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ge => actual >= self.value,
            Op::Le => actual <= self.value,
            Op::Ne => actual != self.value,
        }
    }
}

impl Sampling {
    fn from_proto(f: &proto::RuntimeFilter, path: &str) -> Result<Self, String> {
        if f.runtime_key.is_empty() {
            return Err(format!("{path}.runtime_key: must not be empty"));
        }
        // Unset is Envoy's default FractionalPercent: 0/100.
        let fraction = Fraction::from_proto(&f.percent_sampled.unwrap_or_default())
            .map_err(|e| e.relative_to(&format!("{path}.percent_sampled")))?;
        Ok(Sampling {
            fraction,
            independent: f.use_independent_randomness,
        })
    }

    /// Envoy's `featureEnabled`: `random % denominator < numerator`, the random value being the
    /// request ID's first eight hex digits unless independent randomness is asked for.
    fn sample(&self, record: &LogRecord) -> bool {
        let from_request_id = (!self.independent)
            .then(|| request_id_integer(record))
            .flatten();
        let value = from_request_id.unwrap_or_else(random);
        self.fraction.sample(value)
    }
}

fn request_id_integer(record: &LogRecord) -> Option<u64> {
    let id = match &record.request_id {
        Some(id) => id.as_bytes(),
        None => record.request_headers.get("x-request-id")?.as_bytes(),
    };
    let hex = std::str::from_utf8(id.get(..8)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

fn random() -> u64 {
    RNG.with(|rng| rng.borrow_mut().random())
}
