//! Funnel-plot control limits, after Spiegelhalter DJ, "Funnel plots for comparing
//! institutional performance", Statistics in Medicine 2005;24:1185-1202.
//!
//! A clinic's indicator is plotted against its precision (here: its number of episodes).
//! Around the target (the value every clinic would show if it differed from the others
//! only by chance) two pairs of limits fan out: 95 % (about two standard errors) and
//! 99.8 % (about three). A small clinic needs a large departure to leave the funnel, so
//! it is not flagged for noise.
//!
//! Both indicators here are risk-adjusted, so their limits are the normal ones with the
//! indicator's own variance (the paper's approach for indicators with a known standard
//! error), plotted against an effective number of episodes:
//! - **Proportions** (a risk-adjusted responder rate `θ O / E`): its variance is
//!   `θ² Σ p_i (1 - p_i) / E²` (each episode a Bernoulli trial with its predicted
//!   probability `p_i`). The clinic is placed at the episodes `n` a clinic of average case
//!   mix would need for that variance, `θ (1 - θ) / variance`, and the limits are
//!   `θ ± z √(θ (1 - θ) / n)`. Exact binomial limits at the clinic's own count would be
//!   wrong here: a clinic of harder patients has a smaller E, so its ratio varies more.
//! - **Means** (a risk-adjusted mean change): `θ ± z σ / √n`, with σ the residual
//!   standard deviation of the case-mix model.
//!
//! Nothing here says whether a clinic is good or bad: a point outside the limits only
//! departs from the others by more than chance alone would usually explain.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Lower tail probabilities of the limits: 95 % two-sided and 99.8 % two-sided.
const INNER_LOWER: f64 = 0.025;
const OUTER_LOWER: f64 = 0.001;

/// The control limits at one precision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Lower 99.8 % limit.
    pub lower_outer: f64,
    /// Lower 95 % limit.
    pub lower_inner: f64,
    /// Upper 95 % limit.
    pub upper_inner: f64,
    /// Upper 99.8 % limit.
    pub upper_outer: f64,
}

impl Limits {
    /// Where `value` lies against these limits (on a limit counts as inside).
    #[must_use]
    pub fn position(&self, value: f64) -> Position {
        if value > self.upper_outer {
            Position::AboveOuter
        } else if value > self.upper_inner {
            Position::AboveInner
        } else if value < self.lower_outer {
            Position::BelowOuter
        } else if value < self.lower_inner {
            Position::BelowInner
        } else {
            Position::Within
        }
    }
}

/// Where a clinic lies in the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Below the 99.8 % limit.
    BelowOuter,
    /// Below the 95 % limit, within the 99.8 % one.
    BelowInner,
    /// Within the 95 % limits.
    Within,
    /// Above the 95 % limit, within the 99.8 % one.
    AboveInner,
    /// Above the 99.8 % limit.
    AboveOuter,
}

impl Position {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BelowOuter => "below_99_8",
            Self::BelowInner => "below_95",
            Self::Within => "within",
            Self::AboveInner => "above_95",
            Self::AboveOuter => "above_99_8",
        }
    }
}

/// The standard normal quantile at `p` (0 < p < 1).
#[must_use]
pub fn normal_quantile(p: f64) -> f64 {
    // Mean 0 and standard deviation 1 are always valid parameters.
    Normal::standard().inverse_cdf(p)
}

/// Normal limits around `target` for an indicator whose standard error is
/// `standard_error`. None when that is not a positive number.
#[must_use]
pub fn limits(target: f64, standard_error: f64) -> Option<Limits> {
    if !(standard_error.is_finite() && standard_error > 0.0) {
        return None;
    }
    let at = |p: f64| target + normal_quantile(p) * standard_error;
    Some(Limits {
        lower_outer: at(OUTER_LOWER),
        lower_inner: at(INNER_LOWER),
        upper_inner: at(1.0 - INNER_LOWER),
        upper_outer: at(1.0 - OUTER_LOWER),
    })
}

/// Normal limits around `target` for a mean of `n` values whose standard deviation is
/// `sd` (`n` may be an effective number: see [`crate::casemix`]). None when `n` or `sd`
/// is not a positive number.
#[must_use]
pub fn mean_limits(target: f64, sd: f64, n: f64) -> Option<Limits> {
    if !(n.is_finite() && n > 0.0) {
        return None;
    }
    limits(target, sd / n.sqrt())
}

/// Limits around the proportion `target` for `n` (effective) episodes: the normal
/// approximation, `θ ± z √(θ(1-θ)/n)`. They are not cut at 0 and 1: a risk-adjusted rate
/// (θ O / E) can pass 1, and its place against the limits must agree with its z-score.
/// None when `target` is not strictly between 0 and 1 (every clinic would then show it
/// exactly).
#[must_use]
pub fn proportion_limits(target: f64, n: f64) -> Option<Limits> {
    if !(target > 0.0 && target < 1.0) {
        return None;
    }
    mean_limits(target, (target * (1.0 - target)).sqrt(), n)
}

/// The share of the largest and of the smallest z-scores winsorised before the
/// overdispersion is estimated (the paper's 10 %).
const WINSORISED: f64 = 0.1;

/// The multiplicative overdispersion `φ` of a set of z-scores: the mean of the squared
/// z-scores after the largest and smallest 10 % are pulled in to the 10th and 90th
/// percentiles (Spiegelhalter 2005, section 5). Near 1 when clinics differ by chance
/// alone; well above 1 when they differ by more, and then the limits are too narrow to
/// read a point outside them as unusual. None for fewer than 10 scores.
#[must_use]
pub fn overdispersion(z_scores: &[f64]) -> Option<f64> {
    if z_scores.len() < 10 {
        return None;
    }
    let mut sorted: Vec<f64> = z_scores.iter().copied().filter(|z| z.is_finite()).collect();
    if sorted.len() < 10 {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let cut = ((n as f64) * WINSORISED).floor() as usize;
    let low = sorted[cut];
    let high = sorted[n - 1 - cut];
    let sum: f64 = sorted.iter().map(|z| z.clamp(low, high).powi(2)).sum();
    Some(sum / n as f64)
}
