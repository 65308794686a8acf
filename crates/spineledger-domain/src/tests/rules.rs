use uuid::Uuid;

use super::fixtures::*;
use crate::commands::{EpisodeCommand, decide};
use crate::episode::{Episode, PlanPhase};
use crate::events::{EpisodeEvent, FieldCorrection};
use crate::ids::PatientId;
use crate::measures::*;
use crate::policy::Policy;
use crate::rejection::Rejection;

#[test]
fn whole_episode_from_evaluation_to_correction_after_discharge() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    assert!(episode.state.started);
    episode.record(plan(5, None));
    assert_eq!(episode.state.plan.unwrap().phase, PlanPhase::Initial);

    episode.record(session(2, 300.0, Tolerance::Good));
    episode.record(session(4, 340.0, Tolerance::Discomfort));
    // After discomfort the force comes down.
    let lowered = episode.record(session(7, 320.0, Tolerance::Good));
    episode.record(missed(9));
    assert!(matches!(
        episode.last_event(),
        EpisodeEvent::SessionMissed(missed) if missed.sessions_done_at_miss == 3
    ));
    episode.record(session(11, 330.0, Tolerance::Good));
    episode.record(home_care(11));
    episode.record(session(14, 340.0, Tolerance::Fair));
    match episode.last_event() {
        EpisodeEvent::SessionRecorded(s) => {
            assert_eq!((s.session_number, s.phase_session_number), (5, 5));
        }
        other => panic!("expected a session, got {other:?}"),
    }
    assert!(episode.state.plan.unwrap().initial_phase_complete());

    episode.record(outcome(15));
    assert!(matches!(
        episode.last_event(),
        EpisodeEvent::OutcomeRecorded(o) if o.after_session == 5
    ));
    episode.record(adherence(16));
    episode.record(reassessment(16));
    episode.record(adjust_to_maintenance(16));
    assert_eq!(
        episode.state.plan.unwrap().phase,
        PlanPhase::Personalised(Frequency::Maintenance)
    );
    episode.record(session(30, 340.0, Tolerance::Good));
    match episode.last_event() {
        EpisodeEvent::SessionRecorded(s) => {
            assert_eq!((s.session_number, s.phase_session_number), (6, 1));
        }
        other => panic!("expected a session, got {other:?}"),
    }
    episode.record(discharge(44));
    assert!(episode.state.discharged);
    assert_eq!(episode.state.plan.unwrap().phase, PlanPhase::Discharged);

    episode.record(correction(45, lowered));
    match episode.last_event() {
        EpisodeEvent::RecordCorrected(c) => {
            assert_eq!(c.corrected_event_id, lowered);
            assert_eq!(c.corrected_event_type, "SessionRecorded");
        }
        other => panic!("expected a correction, got {other:?}"),
    }
    let refolded = Episode::fold(episode.log.iter().map(|(id, event)| (*id, event)));
    assert_eq!(refolded, episode.state);
}

#[test]
fn command_on_unknown_episode_is_rejected_as_not_started() {
    let episode = Recorder::new();
    assert_eq!(
        episode.rejection(plan(5, None)),
        Rejection::EpisodeNotStarted
    );
    assert_eq!(
        episode.rejection(discharge(1)).reason(),
        "EPISODE_NOT_STARTED"
    );
}

#[test]
fn evaluation_starts_an_episode() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    assert!(episode.state.started);
    assert_eq!(episode.state.patient_id, Some(patient()));
}

#[test]
fn later_evaluation_naming_another_patient_is_rejected() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    let mut other = evaluation();
    if let EpisodeCommand::RecordEvaluation(c) = &mut other {
        c.patient_id = PatientId(Uuid::from_u128(0xB));
    }
    assert_eq!(episode.rejection(other).reason(), "PATIENT_MISMATCH");
}

#[test]
fn anything_but_a_correction_after_discharge_is_rejected() {
    let mut episode = Recorder::with_plan(5);
    episode.record(discharge(3));
    assert_eq!(
        episode
            .rejection(session(4, 300.0, Tolerance::Good))
            .reason(),
        "EPISODE_DISCHARGED"
    );
    let mut late_evaluation = evaluation();
    if let EpisodeCommand::RecordEvaluation(c) = &mut late_evaluation {
        c.occurred_at = at(4);
    }
    assert_eq!(
        episode.rejection(late_evaluation).reason(),
        "EPISODE_DISCHARGED"
    );
    assert_eq!(episode.rejection(outcome(4)).reason(), "EPISODE_DISCHARGED");
}

#[test]
fn a_fact_dated_before_the_discharge_is_a_late_entry_judged_as_the_episode_then_stood() {
    let mut episode = Recorder::with_plan(5);
    episode.record(session(2, 300.0, Tolerance::Good));
    episode.record(discharge(6));
    // Entered after the discharge, dated before it: the plan was active then.
    episode.record(session(4, 300.0, Tolerance::Good));
    episode.record(outcome(5));
    // A discharge cannot precede care already recorded.
    assert_eq!(
        episode.rejection(discharge(3)).reason(),
        "OCCURRED_OUT_OF_ORDER"
    );
}

#[test]
fn plan_start_without_an_evaluation_is_rejected() {
    // Only a log written by other means can hold events but no evaluation.
    let mut state = Episode::default();
    let EpisodeCommand::GiveHomeCareInstructions(instructions) = home_care(0) else {
        unreachable!()
    };
    state.apply(
        Uuid::from_u128(1),
        &EpisodeEvent::HomeCareInstructed(crate::events::HomeCareInstructed {
            occurred_at: instructions.occurred_at,
            instructions: instructions.instructions,
        }),
    );
    let rejection = decide(&state, &plan(5, None), &Policy::default()).unwrap_err();
    assert_eq!(rejection.reason(), "EVALUATION_REQUIRED");
}

#[test]
fn plan_start_with_present_absolute_contraindication_is_rejected() {
    let mut episode = Recorder::new();
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::VertebralFracture, Finding::Present),
        Some(80.0),
    ));
    assert_eq!(
        episode.rejection(plan(5, None)),
        Rejection::ContraindicationPresent {
            contraindications: vec![Contraindication::VertebralFracture]
        }
    );
}

#[test]
fn newer_evaluation_clearing_the_contraindication_allows_the_plan() {
    let mut episode = Recorder::new();
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::Pregnancy, Finding::Present),
        Some(80.0),
    ));
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::Pregnancy, Finding::Unknown),
        Some(80.0),
    ));
    episode.record(plan(5, None));
}

#[test]
fn correction_of_a_mistaken_contraindication_allows_the_plan() {
    let mut episode = Recorder::new();
    let evaluation_id = episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::Pregnancy, Finding::Present),
        Some(80.0),
    ));
    episode.record(EpisodeCommand::RecordCorrection(
        crate::commands::RecordCorrection {
            occurred_at: at(0),
            corrected_event_id: evaluation_id,
            corrections: vec![FieldCorrection {
                field: ShortText::new("contraindications.pregnancy").unwrap(),
                corrected_value: serde_json::json!("absent"),
            }],
            reason: Note::new("ticked the wrong box").unwrap(),
        },
    ));
    episode.record(plan(5, None));
}

#[test]
fn relative_contraindication_present_does_not_block_a_plan() {
    let mut episode = Recorder::new();
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::PriorFailedBackSurgery, Finding::Present)
            .with(Contraindication::AnticoagulantTherapy, Finding::Present),
        None,
    ));
    episode.record(plan(5, None));
}

#[test]
fn session_after_a_contraindication_found_at_reevaluation_is_rejected() {
    let mut episode = Recorder::with_plan(5);
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::CaudaEquinaSigns, Finding::Present),
        Some(80.0),
    ));
    assert_eq!(
        episode
            .rejection(session(3, 300.0, Tolerance::Good))
            .reason(),
        "CONTRAINDICATION_PRESENT"
    );
}

#[test]
fn initial_phase_outside_four_to_six_without_justification_is_rejected() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    for sessions in [1, 3, 7, 12] {
        assert_eq!(
            episode.rejection(plan(sessions, None)),
            Rejection::InitialPhaseOutOfRangeWithoutJustification {
                initial_sessions: sessions
            }
        );
    }
    assert_eq!(
        episode.rejection(plan(8, Some("   "))).reason(),
        "INITIAL_PHASE_OUT_OF_RANGE_WITHOUT_JUSTIFICATION"
    );
}

#[test]
fn initial_phase_outside_four_to_six_with_justification_is_accepted() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    episode.record(plan(8, Some("severe, chronic presentation")));
}

#[test]
fn second_plan_while_one_is_active_is_rejected() {
    let episode = Recorder::with_plan(5);
    assert_eq!(
        episode.rejection(plan(5, None)).reason(),
        "PLAN_ALREADY_ACTIVE"
    );
}

#[test]
fn session_missed_session_reassessment_and_adjustment_before_a_plan_are_rejected() {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    for command in [
        session(2, 300.0, Tolerance::Good),
        missed(2),
        reassessment(2),
        adjust_to_maintenance(2),
    ] {
        assert_eq!(episode.rejection(command), Rejection::PlanNotActive);
    }
}

#[test]
fn force_increase_after_poor_tolerance_is_rejected() {
    for poor in [Tolerance::Discomfort, Tolerance::StoppedEarly] {
        let mut episode = Recorder::with_plan(5);
        episode.record(session(2, 350.0, poor));
        assert_eq!(
            episode.rejection(session(4, 360.0, Tolerance::Good)),
            Rejection::ForceIncreaseAfterPoorTolerance {
                previous_peak_newtons: 350.0,
                requested_newtons: 360.0
            }
        );
        // The same force, or less, is fine.
        episode.record(session(4, 350.0, Tolerance::Good));
    }
}

#[test]
fn force_increase_after_good_tolerance_is_accepted() {
    let mut episode = Recorder::with_plan(5);
    episode.record(session(2, 300.0, Tolerance::Fair));
    episode.record(session(4, 380.0, Tolerance::Good));
}

#[test]
fn force_above_fraction_of_body_weight_is_rejected() {
    // 80 kg x 9.80665 x 0.6 = 470.7 N
    let mut episode = Recorder::with_plan(5);
    assert_eq!(
        episode
            .rejection(session(2, 480.0, Tolerance::Good))
            .reason(),
        "FORCE_ABOVE_CEILING"
    );
    episode.record(session(2, 470.0, Tolerance::Good));
}

#[test]
fn starting_force_above_ceiling_without_body_weight_is_rejected() {
    let mut episode = Recorder::new();
    episode.record(evaluation_with(
        ContraindicationScreening::all(Finding::Absent),
        None,
    ));
    let mut heavy = plan(5, None);
    if let EpisodeCommand::StartTreatmentPlan(c) = &mut heavy {
        c.starting_force = newtons(901.0);
    }
    assert_eq!(
        episode.rejection(heavy),
        Rejection::ForceAboveCeiling {
            requested_newtons: 901.0,
            ceiling_newtons: 900.0
        }
    );
}

#[test]
fn adjustment_before_the_initial_phase_is_done_is_rejected() {
    let mut episode = Recorder::with_plan(5);
    for day in 0..4 {
        episode.record(session(day + 2, 300.0, Tolerance::Good));
    }
    episode.record(reassessment(7));
    assert_eq!(
        episode.rejection(adjust_to_maintenance(7)),
        Rejection::InitialPhaseIncomplete {
            sessions_done: 4,
            initial_sessions: 5
        }
    );
}

#[test]
fn adjustment_without_reassessment_after_the_initial_phase_is_rejected() {
    let mut episode = Recorder::with_plan(4);
    episode.record(session(2, 300.0, Tolerance::Good));
    // A reassessment during the initial phase does not count.
    episode.record(reassessment(3));
    for day in 4..7 {
        episode.record(session(day, 300.0, Tolerance::Good));
    }
    assert_eq!(
        episode.rejection(adjust_to_maintenance(8)).reason(),
        "REASSESSMENT_REQUIRED"
    );
    episode.record(reassessment(8));
    episode.record(adjust_to_maintenance(8));
}

#[test]
fn second_adjustment_needs_a_new_reassessment() {
    let mut episode = Recorder::with_plan(4);
    for day in 2..6 {
        episode.record(session(day, 300.0, Tolerance::Good));
    }
    episode.record(reassessment(6));
    episode.record(adjust_to_maintenance(6));
    assert_eq!(
        episode.rejection(adjust_to_maintenance(20)),
        Rejection::ReassessmentRequired
    );
    episode.record(reassessment(20));
    episode.record(adjust_to_maintenance(20));
}

#[test]
fn adherence_report_before_home_care_instructions_is_rejected() {
    let mut episode = Recorder::with_plan(5);
    assert_eq!(
        episode.rejection(adherence(3)),
        Rejection::HomeCareNotInstructed
    );
    episode.record(home_care(3));
    episode.record(adherence(10));
}

#[test]
fn correction_naming_an_unknown_event_is_rejected() {
    let episode = Recorder::with_plan(5);
    let unknown = Uuid::from_u128(999);
    assert_eq!(
        episode.rejection(correction(3, unknown)),
        Rejection::CorrectedEventNotFound { event_id: unknown }
    );
}

#[test]
fn correction_of_a_correction_is_rejected() {
    let mut episode = Recorder::with_plan(5);
    let session_id = episode.record(session(2, 300.0, Tolerance::Good));
    let correction_id = episode.record(correction(3, session_id));
    assert_eq!(
        episode.rejection(correction(4, correction_id)).reason(),
        "CORRECTION_OF_CORRECTION_NOT_ALLOWED"
    );
}

#[test]
fn corrected_peak_force_is_what_the_next_session_is_compared_with() {
    let mut episode = Recorder::with_plan(5);
    let session_id = episode.record(session(2, 400.0, Tolerance::Discomfort));
    episode.record(EpisodeCommand::RecordCorrection(
        crate::commands::RecordCorrection {
            occurred_at: at(2),
            corrected_event_id: session_id,
            corrections: vec![FieldCorrection {
                field: ShortText::new("peak_force").unwrap(),
                corrected_value: serde_json::json!(350.0),
            }],
            reason: Note::new("device showed lbf, not N").unwrap(),
        },
    ));
    assert_eq!(
        episode
            .rejection(session(4, 380.0, Tolerance::Good))
            .reason(),
        "FORCE_INCREASE_AFTER_POOR_TOLERANCE"
    );
}

#[test]
fn commands_breaking_shape_invariants_are_rejected_as_invalid() {
    let mut episode = Recorder::with_plan(5);
    let mut inverted = session(2, 300.0, Tolerance::Good);
    if let EpisodeCommand::RecordSession(c) = &mut inverted {
        c.rest_force = newtons(310.0);
    }
    let rejection = episode.rejection(inverted);
    assert!(rejection.is_invalid_command());
    assert_eq!(rejection.reason(), "INVALID_COMMAND");

    let mut as_needed_weekly = adjust_to_maintenance(3);
    if let EpisodeCommand::AdjustTreatmentPlan(c) = &mut as_needed_weekly {
        c.frequency = Frequency::AsNeeded;
    }
    assert!(episode.rejection(as_needed_weekly).is_invalid_command());
    episode.record(session(2, 300.0, Tolerance::Good));
}

#[test]
fn domain_decides_session_numbers_and_after_session() {
    let mut episode = Recorder::with_plan(5);
    episode.record(session(2, 300.0, Tolerance::Good));
    episode.record(session(3, 300.0, Tolerance::Good));
    episode.record(reassessment(3));
    assert!(matches!(
        episode.last_event(),
        EpisodeEvent::ReassessmentRecorded(r) if r.after_session == 2
    ));
}

#[test]
fn rejection_messages_carry_no_personal_data() {
    let rejection = Rejection::ContraindicationPresent {
        contraindications: vec![Contraindication::Pregnancy],
    };
    assert!(!rejection.to_string().contains("pregnancy"));
    assert_eq!(
        rejection.metadata(),
        vec![("contraindications", "pregnancy".to_owned())]
    );
}

#[test]
fn commands_serialize_deterministically_for_fingerprints() {
    let first = serde_json::to_string(&session(2, 300.0, Tolerance::Good)).unwrap();
    let second = serde_json::to_string(&session(2, 300.0, Tolerance::Good)).unwrap();
    assert_eq!(first, second);
    assert!(first.starts_with(r#"{"command":"record_session""#));
    let back: EpisodeCommand = serde_json::from_str(&first).unwrap();
    assert_eq!(back, session(2, 300.0, Tolerance::Good));
}
