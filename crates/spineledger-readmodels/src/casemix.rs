//! Case-mix adjusted comparison of clinics.
//!
//! A clinic that treats older patients, longer-standing pain or more sciatica will see
//! fewer responders whatever it does. To compare clinics fairly, a model fitted over the
//! episodes of every clinic predicts each episode's outcome from what the patient brought
//! to the first evaluation; a clinic's *observed* outcome is then set against the sum (or
//! mean) of its episodes' *expected* outcomes, and placed in a funnel plot
//! ([`crate::funnel`]). This compares clinics; it says nothing about whether the therapy
//! works.
//!
//! **Outcomes** (at the latest follow-up, as the outcome statistics define it):
//! - NRS responder (Ostelo 2008, [`crate::responder`]): a logistic regression, fitted by
//!   iteratively reweighted least squares.
//! - NRS change and ODI change (follow-up minus baseline, so negative is improvement):
//!   linear regressions, fitted by least squares.
//!
//! **Covariates**, all from the first evaluation: baseline back-pain NRS and baseline ODI
//! (linear, centred on their means), and the factors age band, sciatica (yes, no, not
//! recorded), chronicity (acute under 6 weeks, subacute 6-12, chronic more than 12, not
//! recorded) and primary diagnosis. A level of any factor held by fewer than
//! [`MIN_LEVEL_EPISODES`] episodes of the fit is pooled as `other` (or, when the pooled
//! levels together are still fewer, counted with the reference level), so that no
//! coefficient describes a handful of patients: with one patient alone in a level, a
//! linear model's coefficient would be that patient's residual. Each factor's most frequent level is its reference
//! (coefficient zero); the others are indicator terms. Sex is not a covariate: the
//! outcome facts do not carry it (they hold nothing identifying).
//!
//! **Fitting.** Least squares and Newton-Raphson (iteratively reweighted least squares)
//! on the normal equations, solved by Cholesky decomposition (`nalgebra`). A term whose
//! column is a combination of earlier ones (for instance "sciatica not recorded" and
//! "chronicity not recorded", which coincide on every evaluation older than those
//! fields) is aliased: left out and listed, as R's `lm` does. A logistic fit whose log
//! odds run past ±10 (outcomes separated by a covariate) is refused. A model is fitted
//! only with at least ten episodes per term (and, for the logistic model, ten of the
//! rarer outcome per term: Peduzzi et al., J Clin Epidemiol 1996;49:1373-9); otherwise
//! it is reported as not fitted, with the reason.
//!
//! **Fit statistics.** Linear: R², adjusted R², residual standard deviation. Logistic:
//! deviance and null deviance, McFadden's pseudo-R², the c-statistic (area under the ROC
//! curve) and the Brier score.
//!
//! **Comparison.** For each clinic with at least k episodes in the fit: observed and
//! expected (responders, or mean change), and the risk-adjusted figure: the overall rate
//! times observed / expected, or the overall mean plus observed minus expected. Its
//! funnel limits sit around the overall figure at the clinic's precision
//! ([`crate::funnel`]): the variance of a risk-adjusted rate is `θ² Σ p (1 - p) / E²`,
//! so a clinic of hard patients (small E) is judged with the wider limits its ratio
//! needs.
//!
//! **Who is in the fit.** The episodes of every clinic the caller may see ([`screen`]):
//! an analyst granted every clinic compares each against all of them; one granted some
//! compares them against each other. A model over clinics the caller may not see would
//! give their figures away.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::funnel::{self, Limits, Position};
use crate::outcomes::EpisodeOutcome;
use crate::responder::ResponderStatus;
use crate::statistics::MinCell;

/// A factor level needs this many episodes in the fit to keep its own term.
pub const MIN_LEVEL_EPISODES: usize = 30;

/// The ridge added to every term but the intercept of the logistic fit, for numerical
/// steadiness only.
pub const RIDGE: f64 = 1e-6;

/// A log odds this large (e^10: 22,000 to 1) only comes of outcomes a covariate separates:
/// such a fit is refused.
const SEPARATED: f64 = 10.0;

/// A term whose column is this close to a combination of the terms before it (its
/// squared residual, relative to its own square) is aliased and left out.
const ALIASED: f64 = 1e-9;

/// Episodes (or, logistic, the rarer outcome) needed per term.
const EPISODES_PER_TERM: usize = 10;

/// Newton steps the logistic fit may take.
const MAX_ITERATIONS: u32 = 50;

/// The outcome compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Back-pain NRS responder at the latest follow-up.
    NrsResponder,
    /// Back-pain NRS change, latest follow-up minus baseline.
    NrsChange,
    /// ODI change, latest follow-up minus baseline.
    OdiChange,
}

impl Measure {
    /// Every measure, in the order answers list them.
    pub const ALL: [Self; 3] = [Self::NrsResponder, Self::NrsChange, Self::OdiChange];

    /// The snake_case name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NrsResponder => "nrs_responder",
            Self::NrsChange => "nrs_change",
            Self::OdiChange => "odi_change",
        }
    }

    const fn is_binary(self) -> bool {
        matches!(self, Self::NrsResponder)
    }
}

/// What an episode brought to its first evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Covariates {
    /// Back-pain NRS at the first evaluation.
    pub baseline_nrs: f64,
    /// ODI at the first evaluation.
    pub baseline_odi: f64,
    /// The age band's label.
    pub age_band: String,
    /// `yes`, `no` or `not_recorded`.
    pub sciatica: String,
    /// `acute`, `subacute`, `chronic` or `not_recorded`.
    pub chronicity: String,
    /// The primary diagnosis key.
    pub diagnosis: String,
}

/// One episode in the comparison: its clinic, covariates and outcomes (None where the
/// episode has no follow-up that measures it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The UTC month of the first evaluation.
    pub month: Option<NaiveDate>,
    /// The covariates.
    pub covariates: Covariates,
    /// NRS responder at the latest follow-up.
    pub nrs_responder: Option<bool>,
    /// NRS change at the latest follow-up.
    pub nrs_change: Option<f64>,
    /// ODI change at the latest follow-up.
    pub odi_change: Option<f64>,
}

impl Subject {
    /// The subject of an episode; None before its first evaluation.
    #[must_use]
    pub fn of(outcome: &EpisodeOutcome) -> Option<Self> {
        let baseline_nrs = outcome.baseline_pain_back?;
        let baseline_odi = outcome.baseline_odi?;
        let latest = outcome.latest_follow_up;
        Some(Self {
            clinic_id: outcome.clinic_id,
            month: outcome.evaluated_month(),
            covariates: Covariates {
                baseline_nrs: f64::from(baseline_nrs),
                baseline_odi,
                age_band: outcome.age_band_key().to_owned(),
                sciatica: match outcome.sciatica {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not_recorded",
                }
                .to_owned(),
                chronicity: outcome
                    .chronicity()
                    .map_or("not_recorded", |band| band.as_str())
                    .to_owned(),
                diagnosis: outcome.diagnosis_key().to_owned(),
            },
            nrs_responder: match outcome.nrs_response {
                ResponderStatus::Responder => Some(true),
                ResponderStatus::NonResponder => Some(false),
                ResponderStatus::NotAssessed => None,
            },
            nrs_change: latest.map(|f| f64::from(f.pain_back) - f64::from(baseline_nrs)),
            odi_change: latest.and_then(|f| f.odi).map(|odi| odi - baseline_odi),
        })
    }

    /// The outcome `measure` takes: 0 or 1 for a responder, the change otherwise.
    #[must_use]
    pub fn outcome(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::NrsResponder => self.nrs_responder.map(|r| if r { 1.0 } else { 0.0 }),
            Measure::NrsChange => self.nrs_change,
            Measure::OdiChange => self.odi_change,
        }
    }
}

/// A factor: its reference level and the levels with a term of their own.
#[derive(Debug, Clone, PartialEq)]
struct Factor {
    name: &'static str,
    reference: String,
    levels: Vec<String>,
    /// Levels held by too few episodes for a term of their own ...
    pooled: BTreeSet<String>,
    /// ... and the level they count as: `other`, or the reference.
    pooled_into: String,
}

const OTHER: &str = "other";

/// Levels that say a value is missing or pooled rather than what it is.
const UNRECORDED: [&str; 3] = ["not_recorded", "unknown", OTHER];

impl Factor {
    /// The factor of `values`: levels held by fewer than [`MIN_LEVEL_EPISODES`] are
    /// pooled as `other`, or, when those together are still fewer, counted with the
    /// reference level, so that no term describes fewer episodes than that.
    fn new(name: &'static str, values: &[&str], minimum: usize) -> Self {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for value in values {
            *counts.entry(value).or_default() += 1;
        }
        let rare: BTreeSet<String> = counts
            .iter()
            .filter(|(_, count)| **count < minimum)
            .map(|(value, _)| (*value).to_owned())
            .collect();
        let pooled_count: usize = rare
            .iter()
            .filter_map(|value| counts.remove(value.as_str()))
            .sum();
        let own_level = pooled_count >= minimum;
        if own_level {
            *counts.entry(OTHER).or_default() += pooled_count;
        }
        // The most frequent recorded level is the reference (ties to the first by name);
        // "not recorded", "unknown" and "other" only when nothing else is left.
        let recorded = |value: &str| !UNRECORDED.contains(&value);
        let reference = counts
            .iter()
            .max_by(|a, b| {
                recorded(a.0)
                    .cmp(&recorded(b.0))
                    .then(a.1.cmp(b.1))
                    .then_with(|| b.0.cmp(a.0))
            })
            .map_or_else(|| OTHER.to_owned(), |(value, _)| (*value).to_owned());
        let levels = counts
            .keys()
            .filter(|value| **value != reference)
            .map(|value| (*value).to_owned())
            .collect();
        let pooled_into = if own_level {
            OTHER.to_owned()
        } else {
            reference.clone()
        };
        Self {
            name,
            reference,
            levels,
            pooled: rare,
            pooled_into,
        }
    }

    fn level_of<'a>(&'a self, value: &'a str) -> &'a str {
        if self.pooled.contains(value) {
            &self.pooled_into
        } else {
            value
        }
    }
}

/// How covariates become a row of the design matrix.
#[derive(Debug, Clone, PartialEq)]
struct Design {
    centre_nrs: f64,
    centre_odi: f64,
    factors: Vec<Factor>,
}

impl Design {
    fn new(subjects: &[&Subject], minimum: usize) -> Self {
        let n = subjects.len().max(1) as f64;
        let centre_nrs = subjects
            .iter()
            .map(|s| s.covariates.baseline_nrs)
            .sum::<f64>()
            / n;
        let centre_odi = subjects
            .iter()
            .map(|s| s.covariates.baseline_odi)
            .sum::<f64>()
            / n;
        let column = |f: fn(&Covariates) -> &str| -> Vec<&str> {
            subjects.iter().map(|s| f(&s.covariates)).collect()
        };
        let factors = vec![
            Factor::new("age_band", &column(|c| &c.age_band), minimum),
            Factor::new("sciatica", &column(|c| &c.sciatica), minimum),
            Factor::new("chronicity", &column(|c| &c.chronicity), minimum),
            Factor::new("diagnosis", &column(|c| &c.diagnosis), minimum),
        ];
        Self {
            centre_nrs,
            centre_odi,
            factors,
        }
    }

    fn terms(&self) -> Vec<String> {
        let mut terms = vec![
            "intercept".to_owned(),
            "baseline_nrs".to_owned(),
            "baseline_odi".to_owned(),
        ];
        for factor in &self.factors {
            terms.extend(
                factor
                    .levels
                    .iter()
                    .map(|level| format!("{}={level}", factor.name)),
            );
        }
        terms
    }

    fn row(&self, covariates: &Covariates) -> Vec<f64> {
        let mut row = vec![
            1.0,
            covariates.baseline_nrs - self.centre_nrs,
            covariates.baseline_odi - self.centre_odi,
        ];
        let values = [
            &covariates.age_band,
            &covariates.sciatica,
            &covariates.chronicity,
            &covariates.diagnosis,
        ];
        for (factor, value) in self.factors.iter().zip(values) {
            let level = factor.level_of(value);
            row.extend(
                factor
                    .levels
                    .iter()
                    .map(|l| if l == level { 1.0 } else { 0.0 }),
            );
        }
        row
    }

    /// The levels each factor compares against (the reference), for the record.
    fn references(&self) -> Vec<(String, String)> {
        self.factors
            .iter()
            .map(|factor| (factor.name.to_owned(), factor.reference.clone()))
            .collect()
    }
}

/// One coefficient of a fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coefficient {
    /// `intercept`, `baseline_nrs` (per point above the mean), `baseline_odi` (per
    /// point above the mean), or `factor=level` (against the factor's reference level).
    pub term: String,
    /// The estimate: log odds (logistic) or points of change (linear).
    pub estimate: f64,
    /// Its standard error.
    pub standard_error: f64,
}

/// How well a model fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fit {
    /// A least-squares fit of a change.
    Linear {
        /// Share of the outcome's variance the model explains.
        r_squared: f64,
        /// R² adjusted for the number of terms.
        adjusted_r_squared: f64,
        /// Residual standard deviation (n - terms degrees of freedom).
        residual_sd: f64,
    },
    /// A logistic fit of a responder.
    Logistic {
        /// Residual deviance.
        deviance: f64,
        /// Deviance of the intercept-only model.
        null_deviance: f64,
        /// McFadden's pseudo-R²: 1 - deviance / null deviance.
        pseudo_r_squared: f64,
        /// Area under the ROC curve: the chance that a random responder gets a higher
        /// prediction than a random non-responder (0.5 is no discrimination).
        c_statistic: f64,
        /// Mean squared difference between prediction and outcome.
        brier_score: f64,
        /// Newton steps taken.
        iterations: u32,
    },
}

/// A fitted case-mix model.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The outcome modelled.
    pub measure: Measure,
    /// Episodes fitted.
    pub episodes: u64,
    /// The mean outcome over them (the responder rate, or the mean change).
    pub mean_outcome: f64,
    /// The coefficients, in design order.
    pub coefficients: Vec<Coefficient>,
    /// Terms left out as combinations of earlier ones (aliased).
    pub aliased: Vec<String>,
    /// Each factor with its reference level.
    pub references: Vec<(String, String)>,
    /// The fit statistics.
    pub fit: Fit,
    design: Design,
    /// The design's columns the coefficients belong to.
    columns: Vec<usize>,
}

impl Model {
    /// The expected outcome of an episode with `covariates`: a probability (responder) or
    /// a change.
    #[must_use]
    pub fn expected(&self, covariates: &Covariates) -> f64 {
        let row = self.design.row(covariates);
        let linear: f64 = self
            .columns
            .iter()
            .zip(&self.coefficients)
            .map(|(column, c)| row[*column] * c.estimate)
            .sum();
        if self.measure.is_binary() {
            logistic(linear)
        } else {
            linear
        }
    }
}

/// Why a model was not fitted. The messages hold no count of episodes: a caller may not
/// see every clinic the fit would have used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum NotFitted {
    /// Too few episodes (or too few of the rarer outcome) for the terms.
    #[error("too few episodes: ten per term are needed ({needed} for {terms} terms)")]
    TooFewEpisodes {
        /// Episodes needed.
        needed: usize,
        /// The model's terms.
        terms: usize,
    },
    /// A covariate separates responders from non-responders, so the log odds run off.
    #[error("the outcomes are separated by a covariate: no finite model fits them")]
    Separated,
    /// The logistic fit did not converge.
    #[error("the logistic fit did not converge in {MAX_ITERATIONS} steps")]
    NotConverged,
    /// The normal equations could not be solved.
    #[error("the design is singular")]
    Singular,
}

/// Fits `measure` over the `subjects` that have it; a factor level of fewer than
/// `min_level` of them is pooled ([`MIN_LEVEL_EPISODES`] or k, whichever is larger, as
/// [`compare`] passes).
///
/// # Errors
/// [`NotFitted`] with the reason.
pub fn fit(measure: Measure, subjects: &[Subject], min_level: usize) -> Result<Model, NotFitted> {
    let fitted: Vec<&Subject> = subjects
        .iter()
        .filter(|s| s.outcome(measure).is_some_and(f64::is_finite))
        .collect();
    let min_level = min_level.max(MIN_LEVEL_EPISODES);
    let design = Design::new(&fitted, min_level);
    let all_terms = design.terms();
    let n = fitted.len();
    let y = DVector::from_iterator(n, fitted.iter().filter_map(|s| s.outcome(measure)));
    let rows: Vec<Vec<f64>> = fitted.iter().map(|s| design.row(&s.covariates)).collect();
    // Terms that are combinations of earlier ones (say, "sciatica not recorded" and
    // "chronicity not recorded" on every older evaluation) are left out, as R's lm does:
    // their split of an effect would be arbitrary.
    let columns = independent_columns(&rows, all_terms.len(), min_level as f64 / 2.0);
    let aliased = (0..all_terms.len())
        .filter(|j| !columns.contains(j))
        .map(|j| all_terms[j].clone())
        .collect();
    let p = columns.len();
    let available = if measure.is_binary() {
        let events = y.iter().filter(|v| **v > 0.5).count();
        events.min(n - events)
    } else {
        n
    };
    // With no episode at all no column is independent: count the design's terms.
    let terms = if n == 0 { all_terms.len() } else { p };
    let needed = (EPISODES_PER_TERM * terms).max(EPISODES_PER_TERM * 2);
    if available < needed || n <= p {
        return Err(NotFitted::TooFewEpisodes { needed, terms });
    }
    let x = DMatrix::from_fn(n, p, |i, j| rows[i][columns[j]]);
    let mean_outcome = y.mean();
    let (beta, covariance, fit) = if measure.is_binary() {
        fit_logistic(&x, &y)?
    } else {
        fit_linear(&x, &y)?
    };
    let coefficients = columns
        .iter()
        .enumerate()
        .map(|(j, column)| Coefficient {
            term: all_terms[*column].clone(),
            estimate: beta[j],
            standard_error: covariance[(j, j)].max(0.0).sqrt(),
        })
        .collect();
    Ok(Model {
        measure,
        episodes: n as u64,
        mean_outcome,
        coefficients,
        aliased,
        references: design.references(),
        fit,
        design,
        columns,
    })
}

/// The columns of the design (rows of `p` values) that are not (nearly) linear
/// combinations of the columns before them: a Cholesky decomposition of the
/// cross-product matrix, column by column, keeping a column when its squared residual on
/// the kept ones is more than [`ALIASED`] of its own square and at least `min_residual`.
/// The second bound is for near-aliasing: an indicator that differs from what the kept
/// columns add up to on a handful of episodes (one correction that records sciatica but
/// not the symptom duration) would have a coefficient those few episodes alone set.
fn independent_columns(rows: &[Vec<f64>], p: usize, min_residual: f64) -> Vec<usize> {
    let mut cross = DMatrix::<f64>::zeros(p, p);
    for row in rows {
        for a in 0..p {
            if row[a] == 0.0 {
                continue;
            }
            for b in 0..p {
                cross[(a, b)] += row[a] * row[b];
            }
        }
    }
    let mut kept: Vec<usize> = Vec::new();
    // The rows of the Cholesky factor L of the kept block, one per kept column.
    let mut factor: Vec<Vec<f64>> = Vec::new();
    for j in 0..p {
        let own = cross[(j, j)];
        if own <= 0.0 {
            continue;
        }
        // Solve L l = cross[kept, j] by forward substitution; the residual is own - l·l.
        let mut l = Vec::with_capacity(kept.len());
        for (i, column) in kept.iter().enumerate() {
            let dot: f64 = (0..i).map(|k| factor[i][k] * l[k]).sum();
            l.push((cross[(*column, j)] - dot) / factor[i][i]);
        }
        let residual = own - l.iter().map(|v| v * v).sum::<f64>();
        if residual > ALIASED * own && residual >= min_residual {
            l.push(residual.sqrt());
            factor.push(l);
            kept.push(j);
        }
    }
    kept
}

/// Solves `a β = b` and gives `a⁻¹` too.
fn solve(a: DMatrix<f64>, b: &DVector<f64>) -> Result<(DVector<f64>, DMatrix<f64>), NotFitted> {
    let cholesky = a.cholesky().ok_or(NotFitted::Singular)?;
    Ok((cholesky.solve(b), cholesky.inverse()))
}

type Fitted = (DVector<f64>, DMatrix<f64>, Fit);

fn fit_linear(x: &DMatrix<f64>, y: &DVector<f64>) -> Result<Fitted, NotFitted> {
    let (n, p) = x.shape();
    let xt = x.transpose();
    let (beta, inverse) = solve(&xt * x, &(&xt * y))?;
    let residuals = y - x * &beta;
    let rss = residuals.norm_squared();
    let mean = y.mean();
    let tss: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let dof = (n - p) as f64;
    let variance = rss / dof;
    let r_squared = if tss > 0.0 { 1.0 - rss / tss } else { 0.0 };
    let adjusted_r_squared = 1.0 - (1.0 - r_squared) * (n as f64 - 1.0) / dof;
    Ok((
        beta,
        inverse * variance,
        Fit::Linear {
            r_squared,
            adjusted_r_squared,
            residual_sd: variance.sqrt(),
        },
    ))
}

fn logistic(linear: f64) -> f64 {
    1.0 / (1.0 + (-linear).exp())
}

/// The binomial deviance of predictions `mu` for outcomes `y`.
fn deviance(y: &DVector<f64>, mu: impl Iterator<Item = f64>) -> f64 {
    const EDGE: f64 = 1e-15;
    -2.0 * y
        .iter()
        .zip(mu)
        .map(|(y, mu): (&f64, f64)| {
            let mu = mu.clamp(EDGE, 1.0 - EDGE);
            y * mu.ln() + (1.0 - y) * (1.0 - mu).ln()
        })
        .sum::<f64>()
}

/// Newton-Raphson (iteratively reweighted least squares) for the logistic model, the
/// information matrix summed row by row (no weighted copy of the design).
fn fit_logistic(x: &DMatrix<f64>, y: &DVector<f64>) -> Result<Fitted, NotFitted> {
    let (n, p) = x.shape();
    let mean = y.mean();
    let mut ridge = DMatrix::identity(p, p) * RIDGE;
    ridge[(0, 0)] = 0.0;
    // Start from the intercept-only fit.
    let mut beta = DVector::zeros(p);
    beta[0] = (mean / (1.0 - mean)).ln();
    let mut previous = f64::INFINITY;
    for iteration in 1..=MAX_ITERATIONS {
        let mut information = ridge.clone();
        let mut score = -(&ridge * &beta);
        for i in 0..n {
            let row = x.row(i);
            let mu = logistic(row.dot(&beta.transpose()));
            let weight = (mu * (1.0 - mu)).max(1e-12);
            for a in 0..p {
                if row[a] == 0.0 {
                    continue;
                }
                score[a] += row[a] * (y[i] - mu);
                for b in 0..p {
                    information[(a, b)] += weight * row[a] * row[b];
                }
            }
        }
        let (step, inverse) = solve(information, &score)?;
        beta += step;
        if beta
            .iter()
            .skip(1)
            .any(|b| !b.is_finite() || b.abs() > SEPARATED)
        {
            return Err(NotFitted::Separated);
        }
        let mu: DVector<f64> = (x * &beta).map(logistic);
        let current = deviance(y, mu.iter().copied());
        if (previous - current).abs() <= 1e-10 * (1.0 + current.abs()) {
            let null_deviance = deviance(y, std::iter::repeat_n(mean, n));
            let brier_score = y
                .iter()
                .zip(mu.iter())
                .map(|(y, m)| (y - m).powi(2))
                .sum::<f64>()
                / n as f64;
            let fit = Fit::Logistic {
                deviance: current,
                null_deviance,
                pseudo_r_squared: if null_deviance > 0.0 {
                    1.0 - current / null_deviance
                } else {
                    0.0
                },
                c_statistic: c_statistic(y, &mu),
                brier_score,
                iterations: iteration,
            };
            return Ok((beta, inverse, fit));
        }
        previous = current;
    }
    Err(NotFitted::NotConverged)
}

/// The area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties at half.
fn c_statistic(y: &DVector<f64>, mu: &DVector<f64>) -> f64 {
    let mut order: Vec<usize> = (0..y.len()).collect();
    order.sort_by(|a, b| mu[*a].total_cmp(&mu[*b]));
    let mut ranks = vec![0.0; y.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && mu[order[end + 1]] == mu[order[start]] {
            end += 1;
        }
        let rank = (start + end) as f64 / 2.0 + 1.0;
        for index in &order[start..=end] {
            ranks[*index] = rank;
        }
        start = end + 1;
    }
    let positives = y.iter().filter(|v| **v > 0.5).count() as f64;
    let negatives = y.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return 0.5;
    }
    let rank_sum: f64 = y
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.5)
        .map(|(_, r)| r)
        .sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// One clinic against the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicComparison {
    /// The clinic.
    pub clinic_id: Uuid,
    /// Its episodes in the fit.
    pub episodes: u64,
    /// Observed: responders (a count), or the mean change.
    pub observed: f64,
    /// Expected: the sum of the responder probabilities, or the mean expected change.
    pub expected: f64,
    /// The risk-adjusted figure plotted: overall rate x observed / expected, or overall
    /// mean + observed - expected.
    pub adjusted: f64,
    /// Where the funnel places the clinic: its episodes for a mean; for a rate, the
    /// episodes of a clinic of average case mix whose rate would be as precise
    /// (`θ (1 - θ)` over the variance of `adjusted`).
    pub precision: f64,
    /// The funnel limits at this clinic's episodes.
    pub limits: Limits,
    /// Where `adjusted` lies against them.
    pub position: Position,
    /// Standard errors between `adjusted` and the overall figure.
    pub z_score: f64,
}

/// A measure compared across clinics.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The outcome compared.
    pub measure: Measure,
    /// The model, or why there is none (then no clinic is compared).
    pub model: Result<Model, NotFitted>,
    /// The clinics asked about that hold at least k episodes of the fit.
    pub clinics: Vec<ClinicComparison>,
    /// Spiegelhalter's overdispersion estimate over every clinic of the fit with at
    /// least k episodes ([`funnel::overdispersion`]); None with fewer than 10.
    pub overdispersion: Option<f64>,
}

/// The subjects a model fitted for a caller who sees the clinics `visible` (None: every
/// clinic) may use: those of the visible clinics. A model over clinics the caller may not
/// see would give them away: its totals less the caller's own figures are theirs, and a
/// release rule on the others (at least five clinics a month, none dominant) still fell
/// to asking twice over time, to grants that change, and to levels one clinic holds.
#[must_use]
pub fn screen(subjects: Vec<Subject>, visible: Option<&BTreeSet<Uuid>>) -> Vec<Subject> {
    match visible {
        None => subjects,
        Some(visible) => subjects
            .into_iter()
            .filter(|s| visible.contains(&s.clinic_id))
            .collect(),
    }
}

/// Fits `measure` over every subject (already [`screen`]ed for the caller) and compares
/// the clinics of `compared` that hold at least `min_cell` episodes of the fit.
#[must_use]
pub fn compare(
    measure: Measure,
    subjects: &[Subject],
    compared: &BTreeSet<Uuid>,
    min_cell: MinCell,
) -> Comparison {
    let model = fit(measure, subjects, min_cell.get());
    let (clinics, overdispersion) = match &model {
        Ok(model) => {
            let all = clinic_comparisons(model, subjects, min_cell);
            let z: Vec<f64> = all.iter().map(|c| c.z_score).collect();
            let clinics = all
                .into_iter()
                .filter(|c| compared.contains(&c.clinic_id))
                .collect();
            (clinics, funnel::overdispersion(&z))
        }
        Err(_) => (Vec::new(), None),
    };
    Comparison {
        measure,
        model,
        clinics,
        overdispersion,
    }
}

fn clinic_comparisons(
    model: &Model,
    subjects: &[Subject],
    min_cell: MinCell,
) -> Vec<ClinicComparison> {
    let measure = model.measure;
    // Per clinic: episodes, observed sum, expected sum, and the sum of p (1 - p).
    let mut sums: BTreeMap<Uuid, (u64, f64, f64, f64)> = BTreeMap::new();
    for subject in subjects {
        let Some(outcome) = subject.outcome(measure).filter(|v| v.is_finite()) else {
            continue;
        };
        let expected = model.expected(&subject.covariates);
        let entry = sums.entry(subject.clinic_id).or_default();
        entry.0 += 1;
        entry.1 += outcome;
        entry.2 += expected;
        entry.3 += expected * (1.0 - expected);
    }
    let overall = model.mean_outcome;
    sums.into_iter()
        .filter(|(_, (n, ..))| *n >= min_cell.get() as u64)
        .filter_map(|(clinic_id, (n, observed, expected, bernoulli))| {
            let count = n as f64;
            let (observed, expected, adjusted, se, precision, limits) = if measure.is_binary() {
                if expected <= 0.0 || bernoulli <= 0.0 {
                    return None;
                }
                // θ O / E, each episode a Bernoulli trial with its predicted probability.
                let adjusted = overall * observed / expected;
                let se = overall * bernoulli.sqrt() / expected;
                let precision = overall * (1.0 - overall) / (se * se);
                let limits = funnel::proportion_limits(overall, precision)?;
                (observed, expected, adjusted, se, precision, limits)
            } else {
                let Fit::Linear { residual_sd, .. } = model.fit else {
                    return None;
                };
                let (observed, expected) = (observed / count, expected / count);
                let adjusted = overall + observed - expected;
                let limits = funnel::mean_limits(overall, residual_sd, count)?;
                let se = residual_sd / count.sqrt();
                (observed, expected, adjusted, se, count, limits)
            };
            Some(ClinicComparison {
                clinic_id,
                episodes: n,
                observed,
                expected,
                adjusted,
                precision,
                position: limits.position(adjusted),
                limits,
                z_score: if se > 0.0 {
                    (adjusted - overall) / se
                } else {
                    0.0
                },
            })
        })
        .collect()
}
