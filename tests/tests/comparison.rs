//! CompareClinics as an analyst uses it: each granted clinic's observed outcomes, counted
//! here by hand from the log (the oracle's plain fold), against a model fitted over every
//! clinic the analyst's answer cannot give away: a third clinic, alone outside the
//! analyst's grant, stays out of the model; an analyst granted all three gets it in.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_auth::Role;
use spineledger_e2e::Harness;
use spineledger_e2e::oracle::{self, all_events};
use spineledger_readmodels::responder::nrs_improved;
use spineledger_tools::simulate::{self, Cohort};
use tonic::Code;
use uuid::Uuid;

/// Per clinic, from the events alone: (NRS responders, episodes assessed, sum of NRS
/// changes) over the episodes of released clinic-months.
fn observed_by_hand(
    events: &[spineledger_store::RecordedEvent],
) -> BTreeMap<Uuid, (u32, u32, i64)> {
    let released = oracle::released_episodes(events);
    let mut by_clinic: BTreeMap<Uuid, (u32, u32, i64)> = BTreeMap::new();
    for (key, outcome) in oracle::expected_outcomes(events) {
        let (Some(baseline), Some(latest)) = (
            outcome.baseline_pain_back,
            outcome.latest_follow_up_pain_back,
        ) else {
            continue;
        };
        if !released.contains(&key) {
            continue;
        }
        let entry = by_clinic.entry(key.0).or_default();
        entry.0 += u32::from(nrs_improved(baseline, latest));
        entry.1 += 1;
        entry.2 += i64::from(latest) - i64::from(baseline);
    }
    by_clinic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clinics_are_compared_against_a_model_of_every_clinic() {
    let harness = Harness::start().await;
    let clinics: Vec<Uuid> = (0..3).map(|_| harness.clinic()).collect();
    let cohort = Cohort {
        clinics: clinics.clone(),
        patients_per_clinic: 250,
        seed: 41,
        start_date: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
        concurrency: 8,
    };
    let token = harness.bearer(Role::Integration, &clinics);
    let report = simulate::run(harness.plain_channel().await, &token, &cohort)
        .await
        .expect("simulate");
    assert_eq!(report.total_rejected(), 0, "{}", report.render());
    let db = harness.database();
    let events = all_events(
        db.projector_pool(),
        Some(usize::try_from(report.total_accepted()).expect("count")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;

    // The analyst sees the first two clinics only.
    let granted = &clinics[..2];
    let mut analyst = OutcomeStatisticsServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Analyst, granted),
    );
    let answer = analyst
        .compare_clinics(v1::CompareClinicsRequest::default())
        .await
        .expect("compare")
        .into_inner();
    assert_eq!(answer.min_cell_size, 8);
    let reflected: BTreeSet<String> = answer
        .reflects
        .iter()
        .map(|r| r.clinic_id.clone())
        .collect();
    let granted_ids: BTreeSet<String> = granted.iter().map(Uuid::to_string).collect();
    assert_eq!(
        reflected, granted_ids,
        "positions of the compared clinics only"
    );
    assert!(answer.reflects.iter().all(|r| r.position > 0));

    let by_hand = observed_by_hand(&events);
    let measure = |m: v1::CaseMixMeasure| {
        answer
            .comparisons
            .iter()
            .find(|c| c.measure == m as i32)
            .unwrap_or_else(|| panic!("no {m:?} in {answer:?}"))
    };

    // The responder model: fitted over the two granted clinics only. The third is the
    // only clinic outside the grant, and the model's totals less the analyst's own
    // figures would be its figures.
    let responders = measure(v1::CaseMixMeasure::NrsResponder);
    let model = responders
        .model
        .as_ref()
        .unwrap_or_else(|| panic!("not fitted: {}", responders.not_fitted_reason));
    let (all_responders, all_assessed) = granted
        .iter()
        .map(|clinic| by_hand[clinic])
        .fold((0, 0), |(r, n), (cr, cn, _)| (r + cr, n + cn));
    assert_eq!(
        model.episodes,
        i64::from(all_assessed),
        "the granted clinics' episodes"
    );
    let overall = f64::from(all_responders) / f64::from(all_assessed);
    assert!((model.mean_outcome - overall).abs() < 1e-12);
    assert!(model.c_statistic.is_some_and(|c| (0.5..=1.0).contains(&c)));
    assert!(model.r_squared.is_none(), "a logistic model has no R²");
    let terms: Vec<&str> = model.coefficients.iter().map(|c| c.term.as_str()).collect();
    for term in ["intercept", "baseline_nrs", "baseline_odi"] {
        assert!(terms.contains(&term), "{term} in {terms:?}");
    }
    // Every factor the evaluations recorded has terms against its commonest level.
    for factor in ["age_band=", "sciatica=", "chronicity=", "diagnosis="] {
        assert!(
            terms.iter().any(|t| t.starts_with(factor)),
            "{factor} in {terms:?}"
        );
    }
    assert_eq!(model.references.len(), 4);
    // Only the granted clinics are compared, with the counts made by hand.
    let compared: BTreeSet<String> = responders
        .clinics
        .iter()
        .map(|c| c.clinic_id.clone())
        .collect();
    assert_eq!(compared, granted_ids);
    for clinic in &responders.clinics {
        let id: Uuid = clinic.clinic_id.parse().expect("uuid");
        let (responders_here, assessed, _) = by_hand[&id];
        assert_eq!(clinic.episodes, i64::from(assessed));
        assert!((clinic.observed - f64::from(responders_here)).abs() < 1e-9);
        assert!(clinic.expected > 0.0 && clinic.expected < f64::from(assessed));
        let adjusted = overall * clinic.observed / clinic.expected;
        assert!((clinic.adjusted - adjusted).abs() < 1e-9);
        // Placed at a precision near its episodes (of mixed case mix, a little above).
        assert!(clinic.precision > 0.5 * f64::from(assessed), "{clinic:?}");
        let limits = clinic.limits.expect("limits");
        assert!(limits.lower_99_8 < limits.lower_95 && limits.lower_95 < overall);
        assert!(overall < limits.upper_95 && limits.upper_95 < limits.upper_99_8);
        let inside = (limits.lower_95..=limits.upper_95).contains(&clinic.adjusted);
        assert_eq!(
            inside,
            clinic.position == v1::FunnelPosition::Within as i32,
            "{clinic:?}"
        );
    }

    // The NRS change model: observed means by hand.
    let change = measure(v1::CaseMixMeasure::NrsChange);
    let model = change.model.as_ref().expect("change model");
    assert!(model.residual_sd.is_some_and(|sd| sd > 0.0));
    for clinic in &change.clinics {
        let id: Uuid = clinic.clinic_id.parse().expect("uuid");
        let (_, assessed, sum) = by_hand[&id];
        let mean = sum as f64 / f64::from(assessed);
        assert!(
            (clinic.observed - mean).abs() < 1e-9,
            "{clinic:?} against {mean}"
        );
        assert!(
            (clinic.adjusted - (model.mean_outcome + clinic.observed - clinic.expected)).abs()
                < 1e-9
        );
    }

    // The third clinic is not the analyst's to compare.
    let refused = analyst
        .compare_clinics(v1::CompareClinicsRequest {
            clinic_ids: vec![clinics[2].to_string()],
            ..Default::default()
        })
        .await
        .expect_err("not granted");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Windows are whole months, as for the statistics.
    let refused = analyst
        .compare_clinics(v1::CompareClinicsRequest {
            evaluated_from: Some(prost_types::Timestamp {
                seconds: 1_767_225_600 + 3_600, // 2026-01-01T01:00:00Z
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect_err("not a month");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("evaluated_from"), "{refused:?}");
    // A window with no episode: nothing to fit, said so.
    let empty = analyst
        .compare_clinics(v1::CompareClinicsRequest {
            evaluated_from: Some(prost_types::Timestamp {
                seconds: 1_893_456_000, // 2030-01-01
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("empty window")
        .into_inner();
    assert!(empty.comparisons.iter().all(|c| c.model.is_none()
        && c.clinics.is_empty()
        && c.not_fitted_reason.contains("needed")));
    // An analyst granted all three clinics has them all in the model.
    let mut everything = OutcomeStatisticsServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Analyst, &clinics),
    );
    let answer = everything
        .compare_clinics(v1::CompareClinicsRequest::default())
        .await
        .expect("compare all")
        .into_inner();
    let all: u32 = by_hand.values().map(|(_, assessed, _)| *assessed).sum();
    let model = answer
        .comparisons
        .iter()
        .find(|c| c.measure == v1::CaseMixMeasure::NrsResponder as i32)
        .and_then(|c| c.model.as_ref())
        .expect("fitted");
    assert_eq!(model.episodes, i64::from(all));
    harness.stop().await;
}
