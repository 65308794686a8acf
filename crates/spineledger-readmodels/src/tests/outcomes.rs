use std::collections::BTreeMap;

use serde_json::json;
use spineledger_domain::measures::{CodeSystem, Diagnosis, DischargeReason, Frequency, Tolerance};

use super::fixtures::*;
use crate::{
    AdherenceBand, AgeBand, Dimension, EpisodeOutcome, FollowUpScores, FrequencyPhase,
    ResponderStatus,
};

/// The shared treated episode, reassessed after session 4 (back 3, ODI 24), moved to
/// maintenance, two more sessions, an outcome after session 6 (back 2, ODI 18), discharged.
fn discharged_episode() -> (Log, uuid::Uuid, uuid::Uuid) {
    let mut log = treated_episode();
    let reassessment_id = log.push(reassessment(12.0, 4, 3, Some(24.0)));
    log.push(adjust_interval(12.0, Frequency::Maintenance, 14));
    log.push(session(26.0, 5, 3, Tolerance::Good));
    log.push(session(40.0, 6, 3, Tolerance::Good));
    let outcome_id = log.push(outcome(40.0, 6, 2, Some(18.0)));
    log.push(discharge(41.0, DischargeReason::GoalsMet));
    (log, reassessment_id, outcome_id)
}

fn session_id(log: &Log, number: u32) -> uuid::Uuid {
    log.events
        .iter()
        .find(|(_, event)| {
            matches!(event, spineledger_domain::EpisodeEvent::SessionRecorded(s) if s.session_number == number)
        })
        .map(|(id, _)| *id)
        .unwrap()
}

#[test]
fn a_discharged_episode_folds_to_its_outcome_facts() {
    let (log, _, _) = discharged_episode();
    let facts = log.outcome();
    assert_eq!(facts.evaluated_at, Some(at(0.0)));
    assert_eq!(facts.age_band, Some(AgeBand::From45To59));
    assert_eq!(facts.primary_diagnosis.as_deref(), Some("ICD10:M51.2"));
    assert_eq!(facts.initial_sessions, Some(4));
    assert_eq!(facts.sessions_completed, 6);
    assert!(facts.initial_phase_completed);
    assert_eq!(facts.frequency_phase, FrequencyPhase::Maintenance);
    assert_eq!(facts.baseline_pain_back, Some(7));
    assert_eq!(facts.baseline_odi, Some(40.0));
    let at_4 = FollowUpScores {
        pain_back: 3,
        odi: Some(24.0),
    };
    let at_6 = FollowUpScores {
        pain_back: 2,
        odi: Some(18.0),
    };
    assert_eq!(facts.at_session_4, Some(at_4));
    assert_eq!(facts.at_session_6, Some(at_6));
    assert_eq!(facts.at_discharge, Some(at_6));
    assert_eq!(facts.nrs_response, ResponderStatus::Responder);
    assert_eq!(facts.odi_response, ResponderStatus::Responder);
    assert_eq!(
        facts.pain_before_by_session,
        BTreeMap::from([(1, 7), (2, 6), (3, 5), (4, 4), (5, 3), (6, 3)])
    );
    // Session 3's pre-session pain (5, after 2 sessions) is the first 2-point drop from 7.
    assert_eq!(facts.sessions_to_first_nrs_response, Some(2));
    assert_eq!(facts.adherence_band, AdherenceBand::High);
    assert_eq!(facts.discharge_reason, Some(DischargeReason::GoalsMet));
    assert!(!facts.scores_corrected);
}

#[test]
fn an_ongoing_episode_has_no_discharge_facts() {
    let mut log = treated_episode();
    log.push(outcome(12.0, 4, 5, None));
    let facts = log.outcome();
    assert_eq!(facts.discharge_reason, None);
    assert_eq!(facts.at_discharge, None);
    assert_eq!(facts.frequency_phase, FrequencyPhase::InitialOnly);
    assert_eq!(
        facts.latest_follow_up,
        Some(FollowUpScores {
            pain_back: 5,
            odi: None
        })
    );
    assert_eq!(facts.odi_response, ResponderStatus::NotAssessed);
}

#[test]
fn the_last_follow_up_at_a_session_wins() {
    let mut log = treated_episode();
    log.push(outcome(11.0, 4, 5, Some(30.0)));
    log.push(reassessment(12.0, 4, 4, None));
    let facts = log.outcome();
    // Back pain from the last follow-up at 4; ODI from the last one that recorded it.
    assert_eq!(
        facts.at_session_4,
        Some(FollowUpScores {
            pain_back: 4,
            odi: Some(30.0)
        })
    );
}

#[test]
fn an_episode_without_a_plan_is_no_plan() {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 17));
    let facts = log.outcome();
    assert_eq!(facts.initial_sessions, None);
    assert!(!facts.initial_phase_completed);
    assert_eq!(facts.frequency_phase, FrequencyPhase::NoPlan);
    assert_eq!(Dimension::InitialSessions.key_of(&facts), "no_plan");
    assert_eq!(Dimension::AgeBand.key_of(&facts), "<18");
    assert_eq!(facts.adherence_band, AdherenceBand::NoneReported);
}

#[test]
fn an_unfinished_initial_phase_is_not_completed() {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 6, 3));
    log.push(session(1.0, 1, 7, Tolerance::Good));
    assert!(!log.outcome().initial_phase_completed);
}

#[test]
fn age_bands_have_the_published_boundaries() {
    let cases = [
        (0, "<18"),
        (17, "<18"),
        (18, "18-29"),
        (29, "18-29"),
        (30, "30-44"),
        (44, "30-44"),
        (45, "45-59"),
        (59, "45-59"),
        (60, "60-74"),
        (74, "60-74"),
        (75, "75+"),
        (120, "75+"),
    ];
    for (age, band) in cases {
        assert_eq!(AgeBand::of_age(age).as_str(), band, "age {age}");
        assert_eq!(
            serde_json::to_value(AgeBand::of_age(age)).unwrap(),
            json!(band)
        );
    }
}

#[test]
fn adherence_bands_follow_the_mean_of_all_reports() {
    assert_eq!(AdherenceBand::of_reports(0, 0), AdherenceBand::NoneReported);
    assert_eq!(AdherenceBand::of_reports(2, 99), AdherenceBand::Low);
    assert_eq!(AdherenceBand::of_reports(2, 100), AdherenceBand::Moderate);
    assert_eq!(AdherenceBand::of_reports(2, 159), AdherenceBand::Moderate);
    assert_eq!(AdherenceBand::of_reports(2, 160), AdherenceBand::High);
    let mut log = Log::new();
    log.push(adherence(1.0, 40));
    log.push(adherence(2.0, 70));
    let facts = log.outcome();
    assert_eq!(facts.adherence_mean(), Some(55.0));
    assert_eq!(facts.adherence_band, AdherenceBand::Moderate);
}

#[test]
fn snomed_diagnoses_are_keyed_with_their_system() {
    let mut log = Log::new();
    log.push(evaluation_with_diagnosis(
        0.0,
        Diagnosis::new(CodeSystem::SnomedCt, "23056005").unwrap(),
    ));
    assert_eq!(
        Dimension::Diagnosis.key_of(&log.outcome()),
        "SNOMED:23056005"
    );
}

#[test]
fn correcting_a_follow_up_score_changes_the_facts_and_flags_them() {
    let (mut log, reassessment_id, outcome_id) = discharged_episode();
    log.push(correction(
        42.0,
        reassessment_id,
        "ReassessmentRecorded",
        "pain_back",
        json!(6),
    ));
    log.push(correction(
        42.0,
        outcome_id,
        "OutcomeRecorded",
        "odi",
        json!({ "score": 33.0 }),
    ));
    let facts = log.outcome();
    assert_eq!(facts.at_session_4.map(|f| f.pain_back), Some(6));
    assert_eq!(facts.at_session_6.and_then(|f| f.odi), Some(33.0));
    assert_eq!(facts.at_discharge.and_then(|f| f.odi), Some(33.0));
    // ODI 40 -> 33: 7 points, 17.5 %, no longer a response.
    assert_eq!(facts.odi_response, ResponderStatus::NonResponder);
    assert!(facts.scores_corrected);
    assert_eq!(facts.corrections, 2);
}

#[test]
fn correcting_pre_session_pain_recomputes_trajectory_and_first_response() {
    let (mut log, _, _) = discharged_episode();
    let third = session_id(&log, 3);
    log.push(correction(
        42.0,
        third,
        "SessionRecorded",
        "pain_before",
        json!(6),
    ));
    let facts = log.outcome();
    assert_eq!(facts.pain_before_by_session.get(&3), Some(&6));
    // Now the first 2-point drop is session 4's pre-session pain (4), after 3 sessions.
    assert_eq!(facts.sessions_to_first_nrs_response, Some(3));
    assert!(facts.scores_corrected);
}

#[test]
fn correcting_the_baseline_changes_every_comparison() {
    let (mut log, _, _) = discharged_episode();
    let evaluation_id = log.events[0].0;
    log.push(correction(
        42.0,
        evaluation_id,
        "EvaluationRecorded",
        "odi",
        json!({"score": 20.0}),
    ));
    let facts = log.outcome();
    assert_eq!(facts.baseline_odi, Some(20.0));
    // 20 -> 18: 2 points, 10 %.
    assert_eq!(facts.odi_response, ResponderStatus::NonResponder);
    assert!(facts.scores_corrected);
}

#[test]
fn other_corrections_are_only_counted() {
    let (mut log, reassessment_id, _) = discharged_episode();
    let third = session_id(&log, 3);
    let before = log.outcome();
    log.push(correction(
        42.0,
        third,
        "SessionRecorded",
        "pain_after",
        json!(3),
    ));
    // Off the scale: not a value the facts can take.
    log.push(correction(
        42.0,
        reassessment_id,
        "ReassessmentRecorded",
        "pain_back",
        json!(11),
    ));
    // Names an event this episode never recorded.
    log.push(correction(
        42.0,
        uuid::Uuid::from_u128(999),
        "OutcomeRecorded",
        "pain_back",
        json!(1),
    ));
    let facts = log.outcome();
    assert_eq!(facts.corrections, 3);
    assert!(!facts.scores_corrected);
    let mut unchanged: EpisodeOutcome = before;
    unchanged.corrections = 3;
    // Off the scale, and naming an event never recorded: neither could be applied.
    unchanged.folded.unapplied = 2;
    assert_eq!(facts, unchanged);
}

#[test]
fn adverse_events_and_missed_sessions_are_counted() {
    let mut log = treated_episode();
    log.push(session_with_adverse_event(12.0, 5));
    log.push(missed(15.0, 5));
    log.push(missed(18.0, 5));
    log.push(discharge(20.0, DischargeReason::AdverseEvent));
    let facts = log.outcome();
    assert_eq!(facts.adverse_events, 1);
    assert_eq!(facts.missed_sessions, 2);
    assert_eq!(facts.discharge_reason, Some(DischargeReason::AdverseEvent));
}
