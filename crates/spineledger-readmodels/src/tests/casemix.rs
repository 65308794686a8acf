//! The case-mix model recovers effects planted in synthetic cohorts, the funnel limits
//! match their textbook values, and a clinic is judged by its patients' expectations.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::casemix::{Covariates, Fit, Measure, NotFitted, Subject, compare, fit};
use crate::funnel::{Position, mean_limits, normal_quantile, overdispersion, proportion_limits};
use crate::statistics::MinCell;

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance
}

#[test]
fn the_limits_use_the_textbook_normal_quantiles() {
    // Spiegelhalter 2005: 95 % at 1.96 and 99.8 % at 3.09 standard errors.
    assert!(close(normal_quantile(0.975), 1.959_964, 1e-6));
    assert!(close(normal_quantile(0.999), 3.090_232, 1e-6));
    let limits = mean_limits(-2.0, 1.5, 25.0).unwrap();
    assert!(close(limits.lower_inner, -2.0 - 1.959_964 * 0.3, 1e-6));
    assert!(close(limits.upper_outer, -2.0 + 3.090_232 * 0.3, 1e-6));
    assert!(mean_limits(0.0, 0.0, 25.0).is_none());
    assert!(mean_limits(0.0, 1.0, 0.0).is_none());
}

#[test]
fn proportion_limits_are_normal_around_the_rate_and_stay_within_0_and_1() {
    // theta = 0.5 at n = 100: standard error 0.05, so 0.5 -+ 1.96 x 0.05 and 3.09 x 0.05.
    let l = proportion_limits(0.5, 100.0).unwrap();
    assert!(close(l.lower_inner, 0.5 - 1.959_964 * 0.05, 1e-6));
    assert!(close(l.upper_inner, 0.5 + 1.959_964 * 0.05, 1e-6));
    assert!(close(l.lower_outer, 0.5 - 3.090_232 * 0.05, 1e-6));
    assert!(close(l.upper_outer, 0.5 + 3.090_232 * 0.05, 1e-6));
    // Not cut at 1: a risk-adjusted rate can pass it, and must be placed as its z says.
    let l = proportion_limits(0.9, 10.0).unwrap();
    assert!(close(
        l.upper_outer,
        0.9 + 3.090_232 * (0.09f64 / 10.0).sqrt(),
        1e-6
    ));
    assert!(l.upper_outer > 1.0);
    assert!(proportion_limits(0.0, 10.0).is_none());
    assert!(proportion_limits(1.0, 10.0).is_none());
}

#[test]
fn a_value_is_placed_against_the_limits() {
    let l = mean_limits(0.0, 1.0, 1.0).unwrap();
    assert_eq!(l.position(0.0), Position::Within);
    assert_eq!(l.position(1.95), Position::Within);
    assert_eq!(l.position(2.5), Position::AboveInner);
    assert_eq!(l.position(3.2), Position::AboveOuter);
    assert_eq!(l.position(-2.5), Position::BelowInner);
    assert_eq!(l.position(-3.2), Position::BelowOuter);
}

#[test]
fn overdispersion_is_the_mean_winsorised_squared_z() {
    assert_eq!(overdispersion(&[1.0; 9]), None);
    assert!(close(overdispersion(&[1.0; 10]).unwrap(), 1.0, 1e-12));
    // Twenty scores: the two largest and two smallest are pulled in to the third from
    // each end, so one wild clinic cannot inflate the estimate.
    let mut z: Vec<f64> = (1..=20).map(|i| f64::from(i) / 10.0).collect();
    z[19] = 100.0;
    let pulled: f64 = z.iter().map(|v| v.clamp(0.3, 1.8).powi(2)).sum::<f64>() / 20.0;
    assert!(close(overdispersion(&z).unwrap(), pulled, 1e-12));
}

const AGE_BANDS: [&str; 4] = ["30-44", "45-59", "60-74", "75+"];
const DIAGNOSES: [&str; 3] = ["ICD10:M51.2", "ICD10:M54.4", "ICD10:M54.5"];

/// A synthetic episode: covariates drawn at random, or harder (older, chronic, sciatica)
/// when `hard`.
fn covariates(rng: &mut ChaCha8Rng, hard: bool) -> Covariates {
    let chronic_chance = if hard { 0.8 } else { 0.2 };
    Covariates {
        baseline_nrs: f64::from(rng.random_range(3..=10u8)),
        baseline_odi: f64::from(rng.random_range(10..=70u8)),
        age_band: AGE_BANDS[if hard { 3 } else { rng.random_range(0..3) }].to_owned(),
        sciatica: if rng.random_bool(if hard { 0.8 } else { 0.2 }) {
            "yes"
        } else {
            "no"
        }
        .to_owned(),
        chronicity: if rng.random_bool(chronic_chance) {
            "chronic"
        } else if rng.random_bool(0.5) {
            "subacute"
        } else {
            "acute"
        }
        .to_owned(),
        diagnosis: DIAGNOSES[rng.random_range(0..DIAGNOSES.len())].to_owned(),
    }
}

/// The planted effects on the log odds of responding and on the NRS change.
fn planted_logit(c: &Covariates) -> f64 {
    0.3 - 0.15 * (c.baseline_nrs - 6.5) + 0.02 * (c.baseline_odi - 40.0)
        - 0.9 * f64::from(u8::from(c.sciatica == "yes"))
        - 1.2 * f64::from(u8::from(c.chronicity == "chronic"))
        - 0.4 * f64::from(u8::from(c.age_band == "75+"))
        + 0.5 * f64::from(u8::from(c.diagnosis == "ICD10:M54.5"))
}

fn planted_change(c: &Covariates) -> f64 {
    -2.0 - 0.4 * (c.baseline_nrs - 6.5)
        + 1.1 * f64::from(u8::from(c.sciatica == "yes"))
        + 0.8 * f64::from(u8::from(c.chronicity == "chronic"))
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller.
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn subject(rng: &mut ChaCha8Rng, clinic: Uuid, hard: bool, clinic_effect: f64) -> Subject {
    let covariates = covariates(rng, hard);
    let p = 1.0 / (1.0 + (-(planted_logit(&covariates) + clinic_effect)).exp());
    let change = planted_change(&covariates) + 1.5 * normal(rng);
    Subject {
        clinic_id: clinic,
        month: None,
        nrs_responder: Some(rng.random_bool(p)),
        nrs_change: Some(change),
        odi_change: None,
        covariates,
    }
}

fn estimate(model: &crate::casemix::Model, term: &str) -> (f64, f64) {
    let c = model
        .coefficients
        .iter()
        .find(|c| c.term == term)
        .unwrap_or_else(|| panic!("no term {term}"));
    (c.estimate, c.standard_error)
}

#[test]
fn the_models_recover_planted_effects() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let subjects: Vec<Subject> = (0..20_000)
        .map(|i| subject(&mut rng, Uuid::from_u128(i % 40), i % 3 == 0, 0.0))
        .collect();
    let logistic = fit(Measure::NrsResponder, &subjects, 8).unwrap();
    // Reference levels are the most frequent ones: sciatica "no", chronicity "chronic"
    // (hard patients make it the commonest), age band and diagnosis by count.
    let references: Vec<(String, String)> = logistic.references.clone();
    assert!(
        references.contains(&("sciatica".into(), "no".into())),
        "{references:?}"
    );
    assert!(
        references.contains(&("chronicity".into(), "chronic".into())),
        "{references:?}"
    );
    assert!(
        references.contains(&("age_band".into(), "75+".into())),
        "{references:?}"
    );
    let checks = [
        ("baseline_nrs", -0.15),
        ("baseline_odi", 0.02),
        ("sciatica=yes", -0.9),
        // Against chronic: acute and subacute are 1.2 better.
        ("chronicity=acute", 1.2),
        ("chronicity=subacute", 1.2),
        // Against 75 and over: the younger bands are 0.4 better, all alike.
        ("age_band=30-44", 0.4),
        ("age_band=60-74", 0.4),
    ];
    for (term, planted) in checks {
        let (estimate, se) = estimate(&logistic, term);
        assert!(
            (estimate - planted).abs() <= 4.0 * se,
            "{term}: {estimate} +- {se} against {planted}"
        );
        assert!(se < 0.1, "{term}: standard error {se}");
    }
    // Diagnosis: M54.5 is 0.5 better than either other, whichever is the reference.
    let effect = |code: &str| {
        logistic
            .coefficients
            .iter()
            .find(|c| c.term == format!("diagnosis={code}"))
            .map_or((0.0, 0.0), |c| (c.estimate, c.standard_error))
    };
    let (favoured, se_a) = effect("ICD10:M54.5");
    let (other, se_b) = effect("ICD10:M51.2");
    assert!(
        ((favoured - other) - 0.5).abs() <= 4.0 * (se_a + se_b).max(0.05),
        "{favoured} - {other}"
    );
    // The intercept is the log odds of an episode at the reference levels and the mean
    // baseline scores: the planted value there.
    let (intercept, se) = estimate(&logistic, "intercept");
    let at_reference = {
        let mean_nrs = subjects
            .iter()
            .map(|s| s.covariates.baseline_nrs)
            .sum::<f64>()
            / 20_000.0;
        let mean_odi = subjects
            .iter()
            .map(|s| s.covariates.baseline_odi)
            .sum::<f64>()
            / 20_000.0;
        let reference_diagnosis = logistic
            .references
            .iter()
            .find(|(factor, _)| factor == "diagnosis")
            .map(|(_, level)| level.clone())
            .unwrap();
        planted_logit(&Covariates {
            baseline_nrs: mean_nrs,
            baseline_odi: mean_odi,
            age_band: "75+".into(),
            sciatica: "no".into(),
            chronicity: "chronic".into(),
            diagnosis: reference_diagnosis,
        })
    };
    assert!(
        (intercept - at_reference).abs() <= 4.0 * se,
        "{intercept} against {at_reference}"
    );
    let Fit::Logistic {
        c_statistic,
        pseudo_r_squared,
        brier_score,
        ..
    } = logistic.fit
    else {
        panic!("a responder model is logistic");
    };
    assert!((0.6..0.9).contains(&c_statistic), "c {c_statistic}");
    assert!(pseudo_r_squared > 0.05, "{pseudo_r_squared}");
    assert!(brier_score < 0.25, "{brier_score}");

    let linear = fit(Measure::NrsChange, &subjects, 8).unwrap();
    for (term, planted) in [
        ("baseline_nrs", -0.4),
        ("baseline_odi", 0.0),
        ("sciatica=yes", 1.1),
        ("chronicity=acute", -0.8),
        ("age_band=30-44", 0.0),
    ] {
        let (estimate, se) = estimate(&linear, term);
        assert!(
            (estimate - planted).abs() <= 4.0 * se,
            "{term}: {estimate} +- {se} against {planted}"
        );
    }
    let Fit::Linear {
        residual_sd,
        r_squared,
        ..
    } = linear.fit
    else {
        panic!("a change model is linear");
    };
    assert!(close(residual_sd, 1.5, 0.05), "{residual_sd}");
    assert!(r_squared > 0.2, "{r_squared}");
    // No episode has an ODI follow-up here.
    assert_eq!(
        fit(Measure::OdiChange, &subjects, 8).unwrap_err(),
        NotFitted::TooFewEpisodes {
            terms: 3,
            needed: 30
        }
    );
}

#[test]
fn a_clinic_of_harder_patients_is_judged_by_what_they_could_expect() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let hard = Uuid::from_u128(1);
    let better = Uuid::from_u128(2);
    let mut subjects: Vec<Subject> = Vec::new();
    // Forty ordinary clinics, one whose patients are harder, one that does better than
    // its patients would predict (planted: +1 on the log odds).
    for clinic in 10..50u128 {
        subjects.extend((0..150).map(|_| subject(&mut rng, Uuid::from_u128(clinic), false, 0.0)));
    }
    subjects.extend((0..300).map(|_| subject(&mut rng, hard, true, 0.0)));
    subjects.extend((0..300).map(|_| subject(&mut rng, better, false, 1.0)));
    let compared: BTreeSet<Uuid> = [hard, better].into();
    let comparison = compare(
        Measure::NrsResponder,
        &subjects,
        &compared,
        MinCell::DEFAULT,
    );
    let model = comparison.model.as_ref().unwrap();
    assert_eq!(comparison.clinics.len(), 2, "only the clinics asked about");
    let of = |clinic| {
        comparison
            .clinics
            .iter()
            .find(|c| c.clinic_id == clinic)
            .unwrap()
    };
    let crude_hard = of(hard).observed / 300.0;
    assert!(
        crude_hard < model.mean_outcome - 0.15,
        "the hard clinic's crude rate {crude_hard} is well below {}",
        model.mean_outcome
    );
    assert!(
        matches!(of(hard).position, Position::Within),
        "adjusted, it is within the funnel: {:?}",
        of(hard)
    );
    assert_eq!(
        of(better).position,
        Position::AboveOuter,
        "{:?}",
        of(better)
    );
    // Expected is the sum of the episodes' predicted probabilities.
    let expected: f64 = subjects
        .iter()
        .filter(|s| s.clinic_id == hard)
        .map(|s| model.expected(&s.covariates))
        .sum();
    assert!(close(of(hard).expected, expected, 1e-9));
    assert!(close(
        of(hard).adjusted,
        model.mean_outcome * of(hard).observed / expected,
        1e-12
    ));
    // Forty-two clinics with chance differences (and one real one): near 1.
    let phi = comparison.overdispersion.unwrap();
    assert!((0.5..2.0).contains(&phi), "{phi}");
}

#[test]
fn rare_levels_are_pooled_and_small_clinics_are_not_compared() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let small = Uuid::from_u128(99);
    let mut subjects: Vec<Subject> = (0..2_000)
        .map(|i| subject(&mut rng, Uuid::from_u128(i % 10), false, 0.0))
        .collect();
    // Seven episodes of a clinic too small to be compared (k = 8), with a diagnosis and
    // age band no one else has: in the fit, but too few for a term, even pooled; they
    // count with the reference levels.
    for _ in 0..7 {
        let mut s = subject(&mut rng, small, false, 0.0);
        s.covariates.diagnosis = "ICD10:M48.06".to_owned();
        s.covariates.age_band = "<18".to_owned();
        subjects.push(s);
    }
    let all: BTreeSet<Uuid> = subjects.iter().map(|s| s.clinic_id).collect();
    let comparison = compare(Measure::NrsChange, &subjects, &all, MinCell::DEFAULT);
    let model = comparison.model.as_ref().unwrap();
    let terms: Vec<&str> = model.coefficients.iter().map(|c| c.term.as_str()).collect();
    assert!(
        !terms
            .iter()
            .any(|t| t.contains("M48.06") || t.contains("<18") || t.contains("other")),
        "{terms:?}"
    );
    assert_eq!(comparison.clinics.len(), 10);
    assert!(comparison.clinics.iter().all(|c| c.clinic_id != small));

    // Three rare diagnoses of 12 episodes each: together enough for an `other` term.
    for (i, code) in ["ICD10:M48.06", "ICD10:M47.26", "ICD10:M43.16"]
        .iter()
        .enumerate()
    {
        for _ in 0..12 {
            let mut s = subject(&mut rng, Uuid::from_u128(i as u128), false, 0.0);
            s.covariates.diagnosis = (*code).to_owned();
            subjects.push(s);
        }
    }
    let model = fit(Measure::NrsChange, &subjects, 8).unwrap();
    let terms: Vec<&str> = model.coefficients.iter().map(|c| c.term.as_str()).collect();
    assert!(terms.contains(&"diagnosis=other"), "{terms:?}");
    assert!(!terms.iter().any(|t| t.contains("M4")), "{terms:?}");
}

#[test]
fn a_model_holds_only_the_clinics_its_caller_may_see() {
    use crate::casemix::screen;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let subjects: Vec<Subject> = (0..60)
        .map(|i| subject(&mut rng, Uuid::from_u128(i % 6), false, 0.0))
        .collect();
    let visible: BTreeSet<Uuid> = [Uuid::from_u128(1), Uuid::from_u128(2)].into();
    let kept = screen(subjects.clone(), Some(&visible));
    assert_eq!(kept.len(), 20);
    assert!(kept.iter().all(|s| visible.contains(&s.clinic_id)));
    // A caller who sees every clinic gets them all.
    assert_eq!(screen(subjects.clone(), None).len(), subjects.len());
}

#[test]
fn coinciding_terms_are_aliased_and_left_out() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // Older evaluations record neither sciatica nor duration: the two "not recorded"
    // columns are the same column.
    let subjects: Vec<Subject> = (0..3_000)
        .map(|i| {
            let mut s = subject(&mut rng, Uuid::from_u128(i % 10), false, 0.0);
            if i % 3 == 0 {
                s.covariates.sciatica = "not_recorded".into();
                s.covariates.chronicity = "not_recorded".into();
            }
            s
        })
        .collect();
    let model = fit(Measure::NrsChange, &subjects, 8).unwrap();
    // "Not recorded" is never the reference while a recorded level exists, so the second
    // of the two coinciding indicators is the one left out; the first carries both.
    assert_eq!(
        model.aliased,
        ["chronicity=not_recorded"],
        "{:?}",
        model.coefficients
    );
    assert!(
        model
            .references
            .iter()
            .all(|(_, level)| level != "not_recorded"),
        "{:?}",
        model.references
    );
    for c in &model.coefficients {
        assert!(
            c.standard_error < 1.0,
            "{} has standard error {}",
            c.term,
            c.standard_error
        );
    }
    // The kept term carries the joint effect; predictions use the kept columns.
    let s = &subjects[0];
    assert!(model.expected(&s.covariates).is_finite());
}

#[test]
fn separated_outcomes_are_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let subjects: Vec<Subject> = (0..2_000)
        .map(|i| {
            let mut s = subject(&mut rng, Uuid::from_u128(i % 10), false, 0.0);
            // Everyone with sciatica responds: a perfect predictor.
            if s.covariates.sciatica == "yes" {
                s.nrs_responder = Some(true);
            }
            s
        })
        .collect();
    assert_eq!(
        fit(Measure::NrsResponder, &subjects, 8).unwrap_err(),
        NotFitted::Separated
    );
}

#[test]
fn a_rate_is_judged_with_the_variance_of_its_own_case_mix() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let hard = Uuid::from_u128(1);
    let easy = Uuid::from_u128(2);
    let mut subjects: Vec<Subject> = Vec::new();
    for clinic in 10..30u128 {
        subjects.extend((0..100).map(|_| subject(&mut rng, Uuid::from_u128(clinic), false, 0.0)));
    }
    subjects.extend((0..200).map(|_| subject(&mut rng, hard, true, 0.0)));
    subjects.extend((0..200).map(|_| subject(&mut rng, easy, false, 0.0)));
    let compared: BTreeSet<Uuid> = [hard, easy].into();
    let comparison = compare(
        Measure::NrsResponder,
        &subjects,
        &compared,
        MinCell::DEFAULT,
    );
    let model = comparison.model.as_ref().unwrap();
    let theta = model.mean_outcome;
    for clinic in &comparison.clinics {
        // By hand: the variance of theta O / E is theta^2 sum p (1 - p) / E^2.
        let p: Vec<f64> = subjects
            .iter()
            .filter(|s| s.clinic_id == clinic.clinic_id)
            .map(|s| model.expected(&s.covariates))
            .collect();
        let e: f64 = p.iter().sum();
        let variance = theta * theta * p.iter().map(|p| p * (1.0 - p)).sum::<f64>() / (e * e);
        assert!(close(
            clinic.precision,
            theta * (1.0 - theta) / variance,
            1e-6
        ));
        assert!(close(
            clinic.z_score,
            (clinic.adjusted - theta) / variance.sqrt(),
            1e-9
        ));
        assert!(close(
            clinic.limits.upper_inner,
            theta + 1.959_964 * variance.sqrt(),
            1e-5
        ));
    }
    let of = |id| {
        comparison
            .clinics
            .iter()
            .find(|c| c.clinic_id == id)
            .unwrap()
    };
    // Same number of episodes; the harder patients' ratio is the less precise.
    assert_eq!(of(hard).episodes, of(easy).episodes);
    assert!(
        of(hard).precision < of(easy).precision * 0.8,
        "{:?} {:?}",
        of(hard),
        of(easy)
    );
}

#[test]
fn indicators_that_differ_on_a_handful_of_episodes_are_aliased_too() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // As above, but five older evaluations were corrected to record sciatica and not the
    // duration: the two "not recorded" columns differ on five rows only, and a term for
    // the difference would be set by those five patients.
    let subjects: Vec<Subject> = (0..3_000)
        .map(|i| {
            let mut s = subject(&mut rng, Uuid::from_u128(i % 10), false, 0.0);
            if i % 3 == 0 {
                s.covariates.chronicity = "not_recorded".into();
                s.covariates.sciatica = if i < 15 { "yes" } else { "not_recorded" }.into();
            }
            s
        })
        .collect();
    let model = fit(Measure::NrsChange, &subjects, 8).unwrap();
    assert_eq!(
        model.aliased,
        ["chronicity=not_recorded"],
        "{:?}",
        model.coefficients
    );
    for c in &model.coefficients {
        assert!(
            c.standard_error < 0.5,
            "{} has standard error {}",
            c.term,
            c.standard_error
        );
    }
    assert!(fit(Measure::NrsResponder, &subjects, 8).is_ok());
}
