//! Funnel-plot control limits, after Spiegelhalter DJ, "Funnel plots for comparing
//! institutional performance", Statistics in Medicine 2005;24:1185-1202.
//!
//! A clinic's indicator is plotted against its precision (here: its number of episodes).
//! Around the target (the value every clinic would show if it differed from the others
//! only by chance) two pairs of limits fan out: 95 % (about two standard errors) and
//! 99.8 % (about three). A small clinic needs a large departure to leave the funnel, so
//! it is not flagged for noise.
//!
//! - **Proportions** (a risk-adjusted responder rate): the exact binomial limits with the
//!   paper's interpolation (its appendix): for the `p`-quantile `r_p` of Binomial(n, θ),
//!   `α = (F(r_p) - p) / (F(r_p) - F(r_p - 1))` and the limit is `(r_p - α) / n`. The
//!   interpolation gives a smooth funnel instead of the staircase of whole counts.
//! - **Means** (a risk-adjusted mean change): the normal limits `θ ± z_p σ / √n`, with σ
//!   the residual standard deviation of the case-mix model.
//!
//! Nothing here says whether a clinic is good or bad: a point outside the limits only
//! departs from the others by more than chance alone would usually explain.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

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

/// Normal limits around `target` for a mean of `n` values whose standard deviation is
/// `sd`. None when `n` is zero or `sd` is not a positive number.
#[must_use]
pub fn mean_limits(target: f64, sd: f64, n: u64) -> Option<Limits> {
    if n == 0 || !(sd.is_finite() && sd > 0.0) {
        return None;
    }
    let se = sd / (n as f64).sqrt();
    let at = |p: f64| target + normal_quantile(p) * se;
    Some(Limits {
        lower_outer: at(OUTER_LOWER),
        lower_inner: at(INNER_LOWER),
        upper_inner: at(1.0 - INNER_LOWER),
        upper_outer: at(1.0 - OUTER_LOWER),
    })
}

/// Exact binomial limits with interpolation around the proportion `target` for `n`
/// episodes. None when `n` is zero or `target` is not strictly between 0 and 1 (every
/// clinic would then show the target exactly).
#[must_use]
pub fn proportion_limits(target: f64, n: u64) -> Option<Limits> {
    if n == 0 || !(target > 0.0 && target < 1.0) {
        return None;
    }
    let binomial = Binomial::new(target, n).ok()?;
    let at = |p: f64| {
        let r = quantile(&binomial, n, p);
        let at_r = binomial.cdf(r);
        let below_r = if r == 0 { 0.0 } else { binomial.cdf(r - 1) };
        let alpha = if at_r > below_r {
            (at_r - p) / (at_r - below_r)
        } else {
            0.0
        };
        ((r as f64 - alpha) / n as f64).clamp(0.0, 1.0)
    };
    Some(Limits {
        lower_outer: at(OUTER_LOWER),
        lower_inner: at(INNER_LOWER),
        upper_inner: at(1.0 - INNER_LOWER),
        upper_outer: at(1.0 - OUTER_LOWER),
    })
}

/// The smallest `r` in `0..=n` with `F(r) >= p`, by bisection on the CDF (statrs's own
/// `inverse_cdf` can panic on extreme parameters, and a query must never panic).
fn quantile(binomial: &Binomial, n: u64, p: f64) -> u64 {
    let (mut low, mut high) = (0, n);
    while low < high {
        let middle = low + (high - low) / 2;
        if binomial.cdf(middle) >= p {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
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
