//! Load-balancing configuration as the balancer takes it: the cluster's policy and its
//! settings, Envoy's defaults, and the validation Envoy's config schema applies.
//!
//! `LbConfig::validate` is for the config boundary (a bad value is a NACK there);
//! `LbConfig::sanitized` is what `LoadBalancer` uses, so that building a balancer never fails.

use super::maglev;

/// Envoy's default `overprovisioning_factor`, in percent.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;
/// Envoy's default `healthy_panic_threshold`, in percent.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
/// Envoy's default `least_request_lb_config.choice_count`.
pub const DEFAULT_CHOICE_COUNT: u32 = 2;
/// Envoy's default `active_request_bias`.
pub const DEFAULT_ACTIVE_REQUEST_BIAS: f64 = 1.0;
/// Envoy's default `ring_hash_lb_config.minimum_ring_size`.
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's default (and largest allowed) `ring_hash_lb_config.maximum_ring_size`.
pub const DEFAULT_MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's default `maglev_lb_config.table_size` (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65537;
/// Envoy's largest allowed Maglev table size.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// The cluster's `lb_policy` with its policy-specific settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
        active_request_bias: f64,
    },
    Random,
    RingHash {
        min_ring_size: u64,
        max_ring_size: u64,
    },
    Maglev {
        table_size: u64,
    },
}

impl LbPolicy {
    /// LEAST_REQUEST with Envoy's defaults.
    pub const LEAST_REQUEST: Self = Self::LeastRequest {
        choice_count: DEFAULT_CHOICE_COUNT,
        active_request_bias: DEFAULT_ACTIVE_REQUEST_BIAS,
    };
    /// RING_HASH with Envoy's defaults.
    pub const RING_HASH: Self = Self::RingHash {
        min_ring_size: DEFAULT_MIN_RING_SIZE,
        max_ring_size: DEFAULT_MAX_RING_SIZE,
    };
    /// MAGLEV with Envoy's defaults.
    pub const MAGLEV: Self = Self::Maglev {
        table_size: DEFAULT_MAGLEV_TABLE_SIZE,
    };
}

/// Everything about a cluster's load balancing except its hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    pub policy: LbPolicy,
    /// Percent; 140 means 1.4.
    pub overprovisioning_factor: u32,
    /// Percent of available hosts below which a priority panics; 0 disables panic.
    pub panic_threshold: f64,
    /// `[priority][locality]` weights; `Some` turns locality-weighted LB on. A locality without
    /// a weight gets no traffic, as in Envoy.
    pub locality_weights: Option<Vec<Vec<u32>>>,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            policy: LbPolicy::RoundRobin,
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            locality_weights: None,
        }
    }
}

/// A configuration Envoy would reject. `LoadBalancer::new` never fails: it replaces such values
/// (see `LbConfig::validate`), so callers should validate at the config boundary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LbConfigError {
    #[error("overprovisioning_factor must be greater than 0")]
    ZeroOverprovisioningFactor,
    #[error("healthy_panic_threshold {0} is not a percentage between 0 and 100")]
    PanicThresholdOutOfRange(f64),
    #[error("least_request choice_count {0} is below 2")]
    ChoiceCountTooSmall(u32),
    #[error("least_request active_request_bias {0} is not a finite number >= 0")]
    InvalidActiveRequestBias(f64),
    #[error("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})")]
    RingSizeOrder { min: u64, max: u64 },
    #[error("ring hash: ring size {0} exceeds {DEFAULT_MAX_RING_SIZE}")]
    RingSizeTooLarge(u64),
    #[error("maglev: table size {0} is not a prime number")]
    MaglevTableSizeNotPrime(u64),
    #[error("maglev: table size {0} exceeds {MAX_MAGLEV_TABLE_SIZE}")]
    MaglevTableSizeTooLarge(u64),
}

impl LbConfig {
    /// Checks the values Envoy's config validation checks.
    pub fn validate(&self) -> Result<(), LbConfigError> {
        if self.overprovisioning_factor == 0 {
            return Err(LbConfigError::ZeroOverprovisioningFactor);
        }
        if !(0.0..=100.0).contains(&self.panic_threshold) {
            return Err(LbConfigError::PanicThresholdOutOfRange(
                self.panic_threshold,
            ));
        }
        validate_policy(self.policy)
    }

    /// This config with values Envoy would reject replaced: a zero overprovisioning factor and
    /// an out-of-range or NaN panic threshold by the defaults; a choice count below 2 by 2; a
    /// negative or non-finite bias by 1.0; ring sizes capped at the maximum, with the minimum
    /// lowered to the maximum; a non-prime or oversized Maglev table by 65537.
    pub fn sanitized(&self) -> LbConfig {
        let mut config = self.clone();
        if config.overprovisioning_factor == 0 {
            config.overprovisioning_factor = DEFAULT_OVERPROVISIONING_FACTOR;
        }
        if !(0.0..=100.0).contains(&config.panic_threshold) {
            config.panic_threshold = DEFAULT_PANIC_THRESHOLD;
        }
        config.policy = sanitized_policy(config.policy);
        config
    }
}

fn validate_policy(policy: LbPolicy) -> Result<(), LbConfigError> {
    match policy {
        LbPolicy::LeastRequest { choice_count, .. } if choice_count < 2 => {
            Err(LbConfigError::ChoiceCountTooSmall(choice_count))
        }
        LbPolicy::LeastRequest {
            active_request_bias: bias,
            ..
        } if !(bias.is_finite() && bias >= 0.0) => {
            Err(LbConfigError::InvalidActiveRequestBias(bias))
        }
        LbPolicy::RingHash {
            min_ring_size: min,
            max_ring_size: max,
        } => {
            if min.max(max) > DEFAULT_MAX_RING_SIZE {
                Err(LbConfigError::RingSizeTooLarge(min.max(max)))
            } else if min > max {
                Err(LbConfigError::RingSizeOrder { min, max })
            } else {
                Ok(())
            }
        }
        LbPolicy::Maglev { table_size } if table_size > MAX_MAGLEV_TABLE_SIZE => {
            Err(LbConfigError::MaglevTableSizeTooLarge(table_size))
        }
        LbPolicy::Maglev { table_size } if !maglev::is_prime(table_size) => {
            Err(LbConfigError::MaglevTableSizeNotPrime(table_size))
        }
        _ => Ok(()),
    }
}

/// `policy` with values Envoy would reject replaced (see `LbConfig::sanitized`).
fn sanitized_policy(policy: LbPolicy) -> LbPolicy {
    match policy {
        LbPolicy::LeastRequest {
            choice_count,
            active_request_bias: bias,
        } => LbPolicy::LeastRequest {
            choice_count: choice_count.max(2),
            active_request_bias: if bias.is_finite() && bias >= 0.0 {
                bias
            } else {
                DEFAULT_ACTIVE_REQUEST_BIAS
            },
        },
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => {
            let max = max_ring_size.clamp(1, DEFAULT_MAX_RING_SIZE);
            LbPolicy::RingHash {
                min_ring_size: min_ring_size.min(max),
                max_ring_size: max,
            }
        }
        LbPolicy::Maglev { .. } if validate_policy(policy).is_err() => LbPolicy::MAGLEV,
        policy => policy,
    }
}
