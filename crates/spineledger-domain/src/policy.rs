//! Clinic-configurable limits the rules apply. Passed into `decide`, never read from the
//! environment here: the domain stays pure.

use crate::measures::{BodyWeightKg, Force};

/// Limits applied when deciding commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The highest traction force as a fraction of body weight (default 0.6).
    pub force_ceiling_fraction_of_body_weight: f64,
    /// The highest traction force when the latest evaluation has no body weight
    /// (default 900 N).
    pub force_ceiling_without_body_weight: Force,
}

impl Policy {
    /// The default fraction of body weight.
    pub const DEFAULT_FORCE_CEILING_FRACTION: f64 = 0.6;
    /// The default ceiling without a body weight, newtons.
    pub const DEFAULT_FORCE_CEILING_WITHOUT_BODY_WEIGHT_NEWTONS: f64 = 900.0;

    /// The force ceiling in newtons for a patient of `body_weight` (or unknown weight).
    #[must_use]
    pub fn force_ceiling_newtons(&self, body_weight: Option<BodyWeightKg>) -> f64 {
        match body_weight {
            Some(weight) => self.force_ceiling_fraction_of_body_weight * weight.weight_newtons(),
            None => self.force_ceiling_without_body_weight.newtons(),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            force_ceiling_fraction_of_body_weight: Self::DEFAULT_FORCE_CEILING_FRACTION,
            force_ceiling_without_body_weight: Force::from_newtons(
                Self::DEFAULT_FORCE_CEILING_WITHOUT_BODY_WEIGHT_NEWTONS,
            )
            .expect("900 N is within the force range"),
        }
    }
}
