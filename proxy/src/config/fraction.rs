//! Envoy's `FractionalPercent` and `RuntimeFractionalPercent`, shared by routes, HTTP filters and
//! access log filters: "does this request fall in the configured fraction?", decided as Envoy's
//! `featureEnabled` does, `random % denominator < numerator`, so a numerator at or above its
//! denominator always applies and 0 never does.
//!
//! Tern has no runtime layer: a `runtime_key` is accepted and ignored, and the default value
//! decides.

use super::ConfigError;
use rand::Rng;
use xds_client::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use xds_client::pb::envoy::r#type::v3::FractionalPercent;
use xds_client::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

/// A fraction with one of Envoy's denominators (100, 10 000 or 1 000 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

impl Fraction {
    /// 100%.
    pub const ALL: Fraction = Fraction {
        numerator: 100,
        denominator: 100,
    };

    /// Converts a `FractionalPercent`; the error's field is relative to it.
    pub fn from_proto(p: &FractionalPercent) -> Result<Self, ConfigError> {
        let denominator = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::Hundred) => 100,
            Ok(DenominatorType::TenThousand) => 10_000,
            Ok(DenominatorType::Million) => 1_000_000,
            Err(_) => {
                return Err(ConfigError::new(
                    "",
                    "denominator",
                    format!("unknown denominator {}", p.denominator),
                ));
            }
        };
        Ok(Fraction {
            numerator: p.numerator,
            denominator,
        })
    }

    /// Converts a `RuntimeFractionalPercent` (its `default_value` is required; runtime keys
    /// are not consulted).
    pub fn from_runtime(p: &RuntimeFractionalPercent) -> Result<Self, ConfigError> {
        let default = p
            .default_value
            .as_ref()
            .ok_or_else(|| ConfigError::new("", "default_value", "required"))?;
        Fraction::from_proto(default).map_err(|e| e.within("default_value"))
    }

    /// The same denominator with at most `numerator` (a header may lower a configured
    /// percentage, never raise it).
    pub fn capped_at(self, numerator: u32) -> Fraction {
        Fraction {
            numerator: self.numerator.min(numerator),
            ..self
        }
    }

    /// Envoy's `featureEnabled` with a random value the caller already has.
    pub fn sample(self, random: u64) -> bool {
        random % u64::from(self.denominator.max(1)) < u64::from(self.numerator)
    }

    /// One draw from `rng`: whether this request is in the fraction (no draw for 0% or 100%).
    pub fn draw(self, rng: &mut impl Rng) -> bool {
        if self.numerator == 0 {
            return false;
        }
        if self.numerator >= self.denominator {
            return true;
        }
        self.sample(rng.random())
    }

    /// Parts per million, capped at 1 000 000.
    pub fn ppm(self) -> u32 {
        let scaled = u64::from(self.numerator) * 1_000_000 / u64::from(self.denominator.max(1));
        scaled.min(1_000_000) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn fraction(numerator: u32, denominator: DenominatorType) -> Fraction {
        Fraction::from_proto(&FractionalPercent {
            numerator,
            denominator: denominator as i32,
        })
        .expect("valid")
    }

    #[test]
    fn samples_close_to_the_fraction_for_every_denominator() {
        let mut rng = SmallRng::seed_from_u64(7);
        for f in [
            fraction(30, DenominatorType::Hundred),
            fraction(3_000, DenominatorType::TenThousand),
            fraction(300_000, DenominatorType::Million),
        ] {
            let hits = (0..1000).filter(|_| f.draw(&mut rng)).count();
            assert!((250..=350).contains(&hits), "{f:?}: {hits} of 1000");
        }
    }

    #[test]
    fn zero_never_and_full_always() {
        let mut rng = SmallRng::seed_from_u64(1);
        let none = fraction(0, DenominatorType::Hundred);
        let over = fraction(200, DenominatorType::Hundred);
        assert!((0..100).all(|_| !none.draw(&mut rng)));
        assert!((0..100).all(|_| over.draw(&mut rng)));
        assert!((0..100).all(|_| Fraction::ALL.draw(&mut rng)));
    }

    #[test]
    fn unknown_denominator_and_missing_default_are_refused() {
        let err = Fraction::from_proto(&FractionalPercent {
            numerator: 1,
            denominator: 9,
        })
        .unwrap_err()
        .relative_to("abort.percentage");
        assert_eq!(err, "abort.percentage.denominator: unknown denominator 9");
        let err = Fraction::from_runtime(&RuntimeFractionalPercent::default())
            .unwrap_err()
            .relative_to("filter_enabled");
        assert_eq!(err, "filter_enabled.default_value: required");
    }
}
