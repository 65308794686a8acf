use spineledger_domain::measures::{DischargeReason, Frequency, SessionMode, Tolerance};

use super::fixtures::*;
use crate::{PhaseCadence, PlanPhase, ResponderStatus, ToleranceTrend, TreatmentPlanView};

#[test]
fn a_new_view_awaits_a_plan_and_has_nothing_due() {
    let view = TreatmentPlanView::new(clinic(), episode());
    assert_eq!(view.phase, PlanPhase::AwaitingPlan);
    assert_eq!(view.next_session_due(), None);
    assert!(!view.reassessment_due());
    let status = view.status_at(at(10.0));
    assert_eq!(status.expected_sessions_by_today, None);
    assert_eq!(status.pacing, None);
    assert!(!status.flags.overdue && !status.flags.under_scheduled);
}

#[test]
fn the_initial_phase_spreads_planned_sessions_over_its_span() {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 4, 2));
    let view = log.plan_view();
    assert_eq!(view.phase, PlanPhase::Initial);
    assert_eq!(
        view.cadence,
        Some(PhaseCadence::Spread {
            sessions: 4,
            span_days: 14
        })
    );
    // No session yet: due one interval (3.5 days) after the plan start.
    assert_eq!(view.next_session_due(), Some(at(4.5)));
    // On the day the plan starts one session is expected.
    assert_eq!(view.status_at(at(1.0)).expected_sessions_by_today, Some(1));
    assert_eq!(view.status_at(at(0.0)).expected_sessions_by_today, Some(0));
}

#[test]
fn a_whole_episode_folds_to_the_expected_plan_view() {
    let mut log = treated_episode();
    let after_initial = log.plan_view();
    assert_eq!(after_initial.phase, PlanPhase::Initial);
    assert_eq!(after_initial.sessions_total, 4);
    assert_eq!(after_initial.sessions_in_phase, 4);
    assert_eq!(after_initial.next_session_due(), Some(at(14.5)));
    assert!(after_initial.reassessment_due());
    let on_day_12 = after_initial.status_at(at(12.0));
    // min(4, floor(11 / 3.5) + 1) = 4 expected, 4 attended.
    assert_eq!(on_day_12.expected_sessions_by_today, Some(4));
    assert_eq!(on_day_12.pacing, Some(0));
    assert!(on_day_12.flags.reassessment_due);
    assert_eq!(after_initial.tolerance_trend(), ToleranceTrend::Improving);
    assert_eq!(after_initial.nrs_response, ResponderStatus::NotAssessed);
    assert_eq!(after_initial.adherence_last_percent, Some(90));

    log.push(reassessment(12.0, 4, 3, Some(24.0)));
    let reassessed = log.plan_view();
    assert!(!reassessed.reassessment_due());
    assert_eq!(reassessed.sessions_at_last_reassessment, Some(4));
    assert_eq!(reassessed.nrs_response, ResponderStatus::Responder);
    assert_eq!(reassessed.odi_response, ResponderStatus::Responder);

    log.push(adjust_interval(12.0, Frequency::Maintenance, 14));
    let maintenance = log.plan_view();
    assert_eq!(maintenance.phase, PlanPhase::Maintenance);
    assert_eq!(maintenance.sessions_in_phase, 0);
    assert_eq!(maintenance.phase_started_at, Some(at(12.0)));
    assert_eq!(maintenance.next_session_due(), Some(at(25.0)));

    log.push(session(26.0, 5, 3, Tolerance::Good));
    let in_maintenance = log.plan_view();
    assert_eq!(in_maintenance.sessions_total, 5);
    assert_eq!(in_maintenance.sessions_in_phase, 1);
    assert_eq!(in_maintenance.next_session_due(), Some(at(40.0)));
    let on_day_41 = in_maintenance.status_at(at(41.0));
    // floor(29 / 14) = 2 expected since the phase began, 1 attended.
    assert_eq!(on_day_41.expected_sessions_by_today, Some(2));
    assert_eq!(on_day_41.attended, 1);
    assert_eq!(on_day_41.pacing, Some(-1));
    assert!(!on_day_41.flags.under_scheduled);

    log.push(discharge(30.0, DischargeReason::GoalsMet));
    let discharged = log.plan_view();
    assert_eq!(discharged.phase, PlanPhase::Discharged);
    assert_eq!(discharged.phase.as_str(), "discharged");
    assert_eq!(discharged.discharge_reason, Some(DischargeReason::GoalsMet));
    assert_eq!(discharged.discharged_at, Some(at(30.0)));
    assert_eq!(discharged.sessions_total, 5);
    assert_eq!(discharged.next_session_due(), None);
    assert!(!discharged.reassessment_due());
    assert_eq!(discharged.status_at(at(60.0)).pacing, None);
    assert!(!discharged.status_at(at(60.0)).flags.overdue);
}

#[test]
fn the_view_keeps_last_settings_and_scores() {
    let mut log = treated_episode();
    log.push(outcome(12.0, 4, 4, None));
    let view = log.plan_view();
    let settings = view.last_settings.as_ref().unwrap();
    assert_eq!(settings.session_number, 4);
    assert_eq!(settings.mode, SessionMode::Intermittent);
    assert!((settings.peak_force_newtons - 320.0).abs() < 1e-9);
    assert_eq!(view.last_session_at, Some(at(11.0)));
    let baseline = view.baseline.as_ref().unwrap();
    assert_eq!((baseline.pain_back, baseline.odi), (7, Some(40.0)));
    assert_eq!(view.latest_nrs.as_ref().unwrap().pain_back, 4);
    // The outcome recorded no ODI: the latest ODI is still the evaluation's.
    assert_eq!(view.latest_odi.as_ref().unwrap().odi, 40.0);
    assert_eq!(view.nrs_response, ResponderStatus::Responder);
    assert_eq!(view.odi_response, ResponderStatus::NotAssessed);
}

#[test]
fn a_small_improvement_is_a_non_responder() {
    let mut log = treated_episode();
    log.push(outcome(12.0, 4, 6, Some(35.0)));
    let view = log.plan_view();
    assert_eq!(view.nrs_response, ResponderStatus::NonResponder);
    assert_eq!(view.odi_response, ResponderStatus::NonResponder);
}

#[test]
fn a_plan_far_behind_its_cadence_is_overdue_and_under_scheduled() {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 6, 3));
    log.push(session(1.0, 1, 7, Tolerance::Good));
    log.push(missed(4.5, 1));
    let view = log.plan_view();
    let status = view.status_at(at(15.0));
    // One every 3.5 days: min(6, floor(14 / 3.5) + 1) = 5 expected by day 15.
    assert_eq!(status.expected_sessions_by_today, Some(5));
    assert_eq!(status.pacing, Some(-4));
    assert_eq!(status.next_session_due, Some(at(4.5)));
    assert!(status.flags.overdue);
    assert!(status.flags.under_scheduled);
    assert!(status.flags.missed_sessions);
    assert!(!status.flags.adverse_event);
}

#[test]
fn a_plan_on_its_cadence_raises_no_flags() {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 6, 3));
    log.push(session(1.0, 1, 7, Tolerance::Good));
    log.push(session(4.5, 2, 6, Tolerance::Good));
    let status = log.plan_view().status_at(at(6.0));
    assert_eq!(status.expected_sessions_by_today, Some(2));
    assert_eq!(status.pacing, Some(0));
    assert_eq!(status.flags, crate::PlanFlags::default());
}

#[test]
fn overdue_allows_one_day_of_grace_after_the_due_date() {
    let mut log = treated_episode();
    log.push(reassessment(12.0, 4, 3, Some(24.0)));
    log.push(adjust_interval(12.0, Frequency::Maintenance, 14));
    let view = log.plan_view();
    // Due on day 25 (last session day 11 + 14).
    assert!(!view.status_at(at(26.0)).flags.overdue);
    assert!(view.status_at(at(26.1)).flags.overdue);
}

#[test]
fn pacing_two_behind_is_under_scheduled() {
    let mut log = treated_episode();
    log.push(reassessment(12.0, 4, 3, Some(24.0)));
    log.push(adjust_per_week(12.0, Frequency::Intensive, 2.0));
    let view = log.plan_view();
    assert_eq!(
        view.cadence.and_then(PhaseCadence::interval),
        Some(chrono::TimeDelta::seconds(302_400))
    );
    // Two a week: floor(7 days / 3.5 days) = 2 expected, none attended.
    let status = view.status_at(at(19.0));
    assert_eq!(status.pacing, Some(-2));
    assert!(status.flags.under_scheduled);
    assert!(!view.status_at(at(17.0)).flags.under_scheduled);
}

#[test]
fn a_personalised_phase_needs_reassessment_after_six_sessions() {
    let mut log = treated_episode();
    log.push(reassessment(12.0, 4, 3, Some(24.0)));
    log.push(adjust_per_week(12.0, Frequency::Tapering, 1.0));
    for n in 0..5 {
        log.push(session(
            13.0 + f64::from(n) * 7.0,
            5 + n,
            3,
            Tolerance::Good,
        ));
    }
    assert!(!log.plan_view().reassessment_due());
    log.push(session(50.0, 10, 3, Tolerance::Good));
    assert!(log.plan_view().reassessment_due());
    log.push(reassessment(51.0, 10, 2, None));
    assert!(!log.plan_view().reassessment_due());
}

#[test]
fn as_needed_has_no_cadence_and_nothing_due() {
    let mut log = treated_episode();
    log.push(reassessment(12.0, 4, 3, Some(24.0)));
    log.push(spineledger_domain::EpisodeEvent::TreatmentPlanAdjusted(
        spineledger_domain::events::TreatmentPlanAdjusted {
            occurred_at: at(12.0),
            frequency: Frequency::AsNeeded,
            cadence: spineledger_domain::measures::Cadence::None,
            reason: None,
        },
    ));
    let view = log.plan_view();
    assert_eq!(view.phase, PlanPhase::AsNeeded);
    assert_eq!(view.cadence, None);
    assert_eq!(view.next_session_due(), None);
    assert_eq!(view.status_at(at(90.0)).expected_sessions_by_today, None);
}

#[test]
fn tolerance_trend_compares_the_newest_two_sessions_with_the_earlier_ones() {
    let trend = |tolerances: &[Tolerance]| {
        let mut log = Log::new();
        log.push(plan(0.0, 6, 3));
        for (n, tolerance) in (1..).zip(tolerances) {
            log.push(session(f64::from(n), n, 5, *tolerance));
        }
        log.plan_view().tolerance_trend()
    };
    use Tolerance::*;
    assert_eq!(trend(&[Good]), ToleranceTrend::Unknown);
    // Two sessions are enough to compare (the proto's UNKNOWN means fewer than two).
    assert_eq!(trend(&[Good, Good]), ToleranceTrend::Stable);
    assert_eq!(trend(&[Good, Discomfort]), ToleranceTrend::Worsening);
    assert_eq!(trend(&[StoppedEarly, Fair]), ToleranceTrend::Improving);
    assert_eq!(trend(&[Good, Good, Good]), ToleranceTrend::Stable);
    assert_eq!(trend(&[Good, Fair, Discomfort]), ToleranceTrend::Worsening);
    assert_eq!(
        trend(&[StoppedEarly, Fair, Good]),
        ToleranceTrend::Improving
    );
    // Only the last five count: the early stops have left the window.
    let view_window = [StoppedEarly, StoppedEarly, Good, Good, Good, Good, Good];
    assert_eq!(trend(&view_window), ToleranceTrend::Stable);
}

#[test]
fn recent_tolerances_keep_the_last_five_oldest_first() {
    let mut log = Log::new();
    log.push(plan(0.0, 6, 3));
    let tolerances = [
        Tolerance::StoppedEarly,
        Tolerance::Discomfort,
        Tolerance::Fair,
        Tolerance::Good,
        Tolerance::Good,
        Tolerance::Fair,
    ];
    for (n, tolerance) in (1..).zip(tolerances) {
        log.push(session(f64::from(n), n, 5, tolerance));
    }
    assert_eq!(log.plan_view().recent_tolerances, tolerances[1..]);
}

#[test]
fn adherence_mean_covers_the_last_three_reports() {
    let mut log = Log::new();
    for (day, percent) in [(1.0, 10), (2.0, 50), (3.0, 60), (4.0, 100)] {
        log.push(adherence(day, percent));
    }
    let view = log.plan_view();
    assert_eq!(view.adherence_last_percent, Some(100));
    assert_eq!(view.adherence_recent_percents, vec![50, 60, 100]);
    assert_eq!(view.adherence_mean_recent, Some(70.0));
}

#[test]
fn adverse_events_and_missed_sessions_are_counted_and_flagged() {
    let mut log = treated_episode();
    log.push(session_with_adverse_event(12.0, 5));
    log.push(missed(15.0, 5));
    let view = log.plan_view();
    assert_eq!(view.adverse_events, 1);
    assert_eq!(view.last_adverse_event_at, Some(at(12.0)));
    assert_eq!(view.missed_sessions, 1);
    assert_eq!(view.last_missed_at, Some(at(15.0)));
    let flags = view.status_at(at(16.0)).flags;
    assert!(flags.adverse_event && flags.missed_sessions);
}

#[test]
fn a_session_before_any_plan_is_counted_without_a_schedule() {
    let mut log = Log::new();
    log.push(session(0.0, 1, 5, Tolerance::Good));
    let view = log.plan_view();
    assert_eq!(view.phase, PlanPhase::AwaitingPlan);
    assert_eq!(view.sessions_total, 1);
    assert_eq!(view.next_session_due(), None);
}

#[test]
fn corrections_are_counted_and_fix_the_baseline_score() {
    let mut log = Log::new();
    let evaluation_id = log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 4, 2));
    log.push(outcome(5.0, 2, 5, Some(38.0)));
    let view = log.plan_view();
    assert_eq!(view.nrs_response, ResponderStatus::Responder);
    log.push(correction(
        6.0,
        evaluation_id,
        "EvaluationRecorded",
        "pain_back",
        serde_json::json!(6),
    ));
    let corrected = log.plan_view();
    assert_eq!(corrected.baseline.as_ref().unwrap().pain_back, 6);
    // 6 -> 5 is one point (17 %): no longer a response.
    assert_eq!(corrected.nrs_response, ResponderStatus::NonResponder);
    assert_eq!(corrected.corrections, 1);
    assert!(corrected.measurement_corrected);
}

#[test]
fn a_correction_of_a_non_measurement_is_counted_only() {
    let mut log = Log::new();
    let plan_id = log.push(plan(1.0, 4, 2));
    log.push(correction(
        2.0,
        plan_id,
        "TreatmentPlanStarted",
        "goals",
        serde_json::json!([]),
    ));
    let view = log.plan_view();
    assert_eq!(view.corrections, 1);
    assert!(!view.measurement_corrected);
}

#[test]
fn a_plan_started_after_discharge_does_not_reopen_the_episode() {
    let mut log = Log::new();
    log.push(discharge(0.0, DischargeReason::Referred));
    log.push(plan(1.0, 4, 2));
    log.push(adjust_interval(2.0, Frequency::Maintenance, 14));
    let view = log.plan_view();
    assert_eq!(view.phase, PlanPhase::Discharged);
    assert_eq!(view.initial_sessions, Some(4));
    assert_eq!(view.next_session_due(), None);
}

#[test]
fn phases_serialize_in_snake_case() {
    for phase in [
        PlanPhase::AwaitingPlan,
        PlanPhase::Initial,
        PlanPhase::Intensive,
        PlanPhase::Tapering,
        PlanPhase::Maintenance,
        PlanPhase::AsNeeded,
        PlanPhase::Discharged,
    ] {
        assert_eq!(
            serde_json::to_value(phase).unwrap(),
            serde_json::json!(phase.as_str())
        );
    }
}

#[test]
fn a_view_stored_before_fold_marks_is_derived_again_not_extended() {
    let log = treated_episode();
    let mut stored = serde_json::to_value(log.plan_view()).unwrap();
    let object = stored.as_object_mut().unwrap();
    object.remove("folded");
    object.remove("corrected_fields");
    let mut view: TreatmentPlanView = serde_json::from_value(stored).unwrap();
    assert!(!crate::extend(
        &mut view,
        uuid::Uuid::from_u128(500),
        500,
        &session(40.0, 6, 3, Tolerance::Good)
    ));
}
