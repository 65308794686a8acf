//! Clinically meaningful improvement, by the consensus thresholds of Ostelo RWJG et al.,
//! "Interpreting change scores for pain and functional status in low back pain", Spine
//! 2008;33(1):90-94:
//!
//! - pain on the numeric rating scale (NRS 0-10): an improvement of at least 2 points, or of
//!   at least 30 % of the baseline;
//! - Oswestry Disability Index (ODI 0-100): an improvement of at least 10 points, or of at
//!   least 30 % of the baseline.
//!
//! Improvement is baseline minus follow-up (both scales: lower is better). The relative
//! criterion needs a real improvement (more than zero points), so a patient with a baseline
//! of 0 can never be a responder by "30 % of nothing".

use serde::{Deserialize, Serialize};

/// Points of NRS improvement that are clinically meaningful on their own.
pub const NRS_MIN_POINTS: u8 = 2;
/// Points of ODI improvement that are clinically meaningful on their own.
pub const ODI_MIN_POINTS: f64 = 10.0;
/// Relative improvement (of the baseline) that is clinically meaningful, in percent.
pub const MIN_PERCENT: u8 = 30;

/// Tolerance for comparing ODI scores, which are kept to one decimal.
const ODI_EPSILON: f64 = 1e-9;

/// Whether a follow-up measure shows clinically meaningful improvement over the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponderStatus {
    /// No baseline, or no follow-up measurement after it.
    NotAssessed,
    /// The improvement meets the threshold.
    Responder,
    /// The improvement does not meet the threshold.
    NonResponder,
}

impl ResponderStatus {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotAssessed => "not_assessed",
            Self::Responder => "responder",
            Self::NonResponder => "non_responder",
        }
    }

    const fn from_met(met: bool) -> Self {
        if met {
            Self::Responder
        } else {
            Self::NonResponder
        }
    }
}

/// Whether the NRS change from `baseline` to `follow_up` meets the threshold: at least 2
/// points, or more than 0 points and at least 30 % of the baseline.
#[must_use]
pub fn nrs_improved(baseline: u8, follow_up: u8) -> bool {
    let improvement = i32::from(baseline) - i32::from(follow_up);
    if improvement <= 0 {
        return false;
    }
    improvement >= i32::from(NRS_MIN_POINTS)
        || improvement * 100 >= i32::from(baseline) * i32::from(MIN_PERCENT)
}

/// Whether the ODI change from `baseline` to `follow_up` meets the threshold: at least 10
/// points, or more than 0 points and at least 30 % of the baseline.
#[must_use]
pub fn odi_improved(baseline: f64, follow_up: f64) -> bool {
    let improvement = baseline - follow_up;
    if improvement <= ODI_EPSILON {
        return false;
    }
    improvement + ODI_EPSILON >= ODI_MIN_POINTS
        || improvement * 100.0 + ODI_EPSILON >= baseline * f64::from(MIN_PERCENT)
}

/// The NRS responder status of a follow-up against a baseline; not assessed without both.
#[must_use]
pub fn nrs_status(baseline: Option<u8>, follow_up: Option<u8>) -> ResponderStatus {
    match (baseline, follow_up) {
        (Some(baseline), Some(follow_up)) => {
            ResponderStatus::from_met(nrs_improved(baseline, follow_up))
        }
        _ => ResponderStatus::NotAssessed,
    }
}

/// The ODI responder status of a follow-up against a baseline; not assessed without both.
#[must_use]
pub fn odi_status(baseline: Option<f64>, follow_up: Option<f64>) -> ResponderStatus {
    match (baseline, follow_up) {
        (Some(baseline), Some(follow_up)) => {
            ResponderStatus::from_met(odi_improved(baseline, follow_up))
        }
        _ => ResponderStatus::NotAssessed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nrs_two_points_or_thirty_percent_is_a_response() {
        assert!(nrs_improved(7, 5));
        assert!(!nrs_improved(7, 6));
        // 1 point of 3 is 33 %.
        assert!(nrs_improved(3, 2));
        // 1 point of 4 is 25 %.
        assert!(!nrs_improved(4, 3));
        assert!(!nrs_improved(0, 0));
        assert!(!nrs_improved(2, 4));
    }

    #[test]
    fn odi_ten_points_or_thirty_percent_is_a_response() {
        assert!(odi_improved(40.0, 30.0));
        assert!(!odi_improved(40.0, 30.1));
        assert!(odi_improved(20.0, 14.0));
        assert!(!odi_improved(20.0, 14.2));
        assert!(!odi_improved(0.0, 0.0));
    }

    #[test]
    fn status_without_both_measures_is_not_assessed() {
        assert_eq!(nrs_status(Some(7), None), ResponderStatus::NotAssessed);
        assert_eq!(odi_status(None, Some(10.0)), ResponderStatus::NotAssessed);
        assert_eq!(nrs_status(Some(7), Some(3)), ResponderStatus::Responder);
        assert_eq!(
            odi_status(Some(40.0), Some(38.0)),
            ResponderStatus::NonResponder
        );
    }
}
