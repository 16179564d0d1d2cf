//! `outlier_detection` (envoy.config.cluster.v3.OutlierDetection) as a validated value with
//! Envoy's defaults applied. The detector itself is `crate::outlier`; this module only decides
//! what the numbers are and rejects the ones Envoy rejects (its proto validation rules plus
//! `max_ejection_time >= base_ejection_time`).

use crate::config::opt_duration;
use std::time::Duration;
use xds_client::pb::envoy::config::cluster::v3 as proto;
use xds_client::pb::google::protobuf::UInt32Value;

/// A cluster's outlier detection settings. Percentages are whole percents in 0..=100.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    /// Consecutive 5xx (or, unsplit, local-origin failures mapped to 5xx) before ejection; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 before ejection; 0 = off.
    pub consecutive_gateway_failure: u32,
    /// Consecutive local-origin failures before ejection (only with `split_external_local_origin_errors`).
    pub consecutive_local_origin_failure: u32,
    /// Time between sweeps (success rate, failure percentage, un-ejection).
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// Defaults to the larger of 300 s and `base_ejection_time`.
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    /// Eject one host even when that alone passes `max_ejection_percent`.
    pub always_eject_one_host: bool,
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// In thousandths: 1900 means mean - 1.9 * stdev.
    pub success_rate_stdev_factor: u32,
    pub failure_percentage_threshold: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    /// Count connect failures, resets and timeouts apart from HTTP status codes.
    pub split_external_local_origin_errors: bool,
}

impl Default for OutlierDetection {
    /// Envoy's defaults (`DetectorConfig` in outlier_detection_impl.h, checked against the proto docs).
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            always_eject_one_host: false,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            failure_percentage_threshold: 85,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            split_external_local_origin_errors: false,
        }
    }
}

const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

impl TryFrom<&proto::OutlierDetection> for OutlierDetection {
    /// `(field, reason)`, the field relative to `outlier_detection`.
    type Error = (&'static str, String);

    fn try_from(p: &proto::OutlierDetection) -> Result<Self, Self::Error> {
        let d = OutlierDetection::default();
        let count = |v: &Option<UInt32Value>, default: u32| v.as_ref().map_or(default, |v| v.value);
        let percent = |field: &'static str, v: &Option<UInt32Value>, default: u32| {
            let value = count(v, default);
            if value > 100 {
                Err((field, format!("{value} is not a percentage (0 to 100)")))
            } else {
                Ok(value)
            }
        };
        let positive = |field: &'static str,
                        v: Option<&xds_client::pb::google::protobuf::Duration>,
                        default: Duration| {
            match opt_duration(v).map_err(|r| (field, r))? {
                None => Ok(default),
                Some(Duration::ZERO) => Err((field, "must be greater than 0".to_string())),
                Some(d) => Ok(d),
            }
        };
        let base_ejection_time = positive(
            "base_ejection_time",
            p.base_ejection_time.as_ref(),
            d.base_ejection_time,
        )?;
        let max_ejection_time = positive(
            "max_ejection_time",
            p.max_ejection_time.as_ref(),
            DEFAULT_MAX_EJECTION_TIME.max(base_ejection_time),
        )?;
        if max_ejection_time < base_ejection_time {
            return Err((
                "max_ejection_time",
                format!(
                    "{max_ejection_time:?} cannot be smaller than base_ejection_time ({base_ejection_time:?})"
                ),
            ));
        }
        Ok(OutlierDetection {
            consecutive_5xx: count(&p.consecutive_5xx, d.consecutive_5xx),
            consecutive_gateway_failure: count(
                &p.consecutive_gateway_failure,
                d.consecutive_gateway_failure,
            ),
            consecutive_local_origin_failure: count(
                &p.consecutive_local_origin_failure,
                d.consecutive_local_origin_failure,
            ),
            interval: positive("interval", p.interval.as_ref(), d.interval)?,
            base_ejection_time,
            max_ejection_time,
            max_ejection_time_jitter: opt_duration(p.max_ejection_time_jitter.as_ref())
                .map_err(|r| ("max_ejection_time_jitter", r))?
                .unwrap_or(d.max_ejection_time_jitter),
            max_ejection_percent: percent(
                "max_ejection_percent",
                &p.max_ejection_percent,
                d.max_ejection_percent,
            )?,
            always_eject_one_host: p.always_eject_one_host.as_ref().is_some_and(|v| v.value),
            enforcing_consecutive_5xx: percent(
                "enforcing_consecutive_5xx",
                &p.enforcing_consecutive_5xx,
                d.enforcing_consecutive_5xx,
            )?,
            enforcing_consecutive_gateway_failure: percent(
                "enforcing_consecutive_gateway_failure",
                &p.enforcing_consecutive_gateway_failure,
                d.enforcing_consecutive_gateway_failure,
            )?,
            enforcing_consecutive_local_origin_failure: percent(
                "enforcing_consecutive_local_origin_failure",
                &p.enforcing_consecutive_local_origin_failure,
                d.enforcing_consecutive_local_origin_failure,
            )?,
            enforcing_success_rate: percent(
                "enforcing_success_rate",
                &p.enforcing_success_rate,
                d.enforcing_success_rate,
            )?,
            enforcing_local_origin_success_rate: percent(
                "enforcing_local_origin_success_rate",
                &p.enforcing_local_origin_success_rate,
                d.enforcing_local_origin_success_rate,
            )?,
            enforcing_failure_percentage: percent(
                "enforcing_failure_percentage",
                &p.enforcing_failure_percentage,
                d.enforcing_failure_percentage,
            )?,
            enforcing_failure_percentage_local_origin: percent(
                "enforcing_failure_percentage_local_origin",
                &p.enforcing_failure_percentage_local_origin,
                d.enforcing_failure_percentage_local_origin,
            )?,
            success_rate_minimum_hosts: count(
                &p.success_rate_minimum_hosts,
                d.success_rate_minimum_hosts,
            ),
            success_rate_request_volume: count(
                &p.success_rate_request_volume,
                d.success_rate_request_volume,
            ),
            success_rate_stdev_factor: count(
                &p.success_rate_stdev_factor,
                d.success_rate_stdev_factor,
            ),
            failure_percentage_threshold: percent(
                "failure_percentage_threshold",
                &p.failure_percentage_threshold,
                d.failure_percentage_threshold,
            )?,
            failure_percentage_minimum_hosts: count(
                &p.failure_percentage_minimum_hosts,
                d.failure_percentage_minimum_hosts,
            ),
            failure_percentage_request_volume: count(
                &p.failure_percentage_request_volume,
                d.failure_percentage_request_volume,
            ),
            split_external_local_origin_errors: p.split_external_local_origin_errors,
        })
    }
}
