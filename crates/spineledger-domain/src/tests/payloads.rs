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
