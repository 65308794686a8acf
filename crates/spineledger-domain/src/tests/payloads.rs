use std::collections::BTreeSet;

use super::fixtures::*;
use crate::events::{DecodeError, EPISODE_EVENT_TYPES, EpisodeEvent};
use crate::measures::Tolerance;

/// One of every event type, as decided in a realistic episode.
pub fn one_of_each() -> Vec<EpisodeEvent> {
    let mut episode = Recorder::new();
    episode.record(evaluation());
    episode.record(plan(5, None));
    let session_id = episode.record(session(2, 300.0, Tolerance::Good));
    episode.record(missed(4));
    episode.record(outcome(5));
    episode.record(home_care(5));
    episode.record(adherence(6));
    for day in 7..11 {
        episode.record(session(day, 300.0, Tolerance::Good));
    }
    episode.record(reassessment(12));
    episode.record(adjust_to_maintenance(12));
    episode.record(discharge(30));
    episode.record(correction(31, session_id));
    episode.log.into_iter().map(|(_, event)| event).collect()
}

#[test]
fn every_event_type_round_trips_through_its_payload() {
    let events = one_of_each();
    let types: BTreeSet<&str> = events.iter().map(EpisodeEvent::event_type).collect();
    assert_eq!(types, EPISODE_EVENT_TYPES.into_iter().collect());
    for event in events {
        let payload = event.to_payload();
        assert!(payload.is_object(), "{}", event.event_type());
        assert!(payload.get("occurred_at").is_some());
        let decoded =
            EpisodeEvent::from_payload(event.event_type(), EpisodeEvent::SCHEMA_VERSION, payload)
                .unwrap();
        assert_eq!(decoded, event);
    }
}

#[test]
fn payload_holds_fields_without_a_type_tag() {
    let event = one_of_each().swap_remove(3);
    let payload = event.to_payload();
    assert_eq!(event.event_type(), "SessionMissed");
    assert_eq!(payload["reason"], "illness");
    assert_eq!(payload["sessions_done_at_miss"], 1);
    assert!(payload.get("SessionMissed").is_none());
}

#[test]
fn unknown_schema_version_is_a_typed_error() {
    let event = one_of_each().swap_remove(0);
    let error = EpisodeEvent::from_payload(event.event_type(), 2, event.to_payload()).unwrap_err();
    assert!(matches!(
        error,
        DecodeError::UnsupportedSchemaVersion {
            schema_version: 2,
            ..
        }
    ));
}

#[test]
fn unknown_event_type_is_a_typed_error() {
    let error =
        EpisodeEvent::from_payload("SessionTeleported", 1, serde_json::json!({})).unwrap_err();
    assert!(matches!(error, DecodeError::UnknownEventType(name) if name == "SessionTeleported"));
}

#[test]
fn out_of_scale_payload_is_refused_on_read() {
    let event = one_of_each().swap_remove(2);
    let mut payload = event.to_payload();
    payload["pain_after"] = serde_json::json!(11);
    let error = EpisodeEvent::from_payload(event.event_type(), 1, payload).unwrap_err();
    assert!(matches!(error, DecodeError::InvalidPayload { .. }));
}

#[test]
fn an_evaluation_without_the_later_fields_keeps_its_old_form_and_can_be_given_them() {
    use crate::events::FieldCorrection;
    use crate::measures::ShortText;
    let EpisodeEvent::EvaluationRecorded(mut recorded) = one_of_each().remove(0) else {
        panic!("the first event is the evaluation");
    };
    recorded.sciatica = None;
    recorded.symptom_duration_weeks = None;
    let old = EpisodeEvent::EvaluationRecorded(recorded);
    // The payload (hashed) and the command (fingerprinted) have no key for them: both read
    // and serialise as they did before the fields existed.
    let payload = old.to_payload();
    assert!(payload.get("sciatica").is_none() && payload.get("symptom_duration_weeks").is_none());
    let crate::commands::EpisodeCommand::RecordEvaluation(mut command) = evaluation() else {
        panic!("an evaluation command");
    };
    command.sciatica = None;
    command.symptom_duration_weeks = None;
    let serialised = serde_json::to_value(&command).unwrap();
    assert!(serialised.get("sciatica").is_none(), "{serialised}");
    assert!(serialised.get("symptom_duration_weeks").is_none());
    // A correction can record them later.
    let correction = |field: &str, value: serde_json::Value| FieldCorrection {
        field: ShortText::new(field).unwrap(),
        corrected_value: value,
    };
    let corrected = old
        .corrected(&[
            correction("sciatica", serde_json::json!(true)),
            correction("symptom_duration_weeks", serde_json::json!(20)),
        ])
        .unwrap();
    let EpisodeEvent::EvaluationRecorded(corrected) = corrected else {
        panic!("still an evaluation");
    };
    assert_eq!(corrected.sciatica, Some(true));
    assert_eq!(
        corrected
            .symptom_duration_weeks
            .map(crate::measures::SymptomWeeks::value),
        Some(20)
    );
    // Fields that never existed are still unknown.
    assert!(
        old.corrected(&[correction("sciatic", serde_json::json!(true))])
            .is_err()
    );
}
