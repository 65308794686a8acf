//! The patient stream: who the patient is, clinically. Names and contact details are
//! personal data kept apart and are not part of these events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{DecodeError, SCHEMA_VERSION, decode_payload, encode_payload};
use crate::ids::PatientId;
use crate::rejection::Rejection;

/// Sex as recorded for case-mix statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other.
    Other,
    /// Not known or not stated.
    Unknown,
}

/// A patient was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRegistered {
    /// When the patient was registered at the clinic.
    pub occurred_at: DateTime<Utc>,
    /// The patient.
    pub patient_id: PatientId,
    /// Year of birth, when given.
    pub birth_year: Option<i32>,
    /// Sex, when given.
    pub sex: Option<Sex>,
}

/// An event of a patient stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientEvent {
    /// See [`PatientRegistered`].
    PatientRegistered(PatientRegistered),
}

impl PatientEvent {
    /// The schema version written with every patient event.
    pub const SCHEMA_VERSION: i32 = SCHEMA_VERSION;

    /// The event type name stored with the event.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::PatientRegistered(_) => "PatientRegistered",
        }
    }

    /// When the fact happened in the clinic.
    #[must_use]
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::PatientRegistered(event) => event.occurred_at,
        }
    }

    /// The payload: the event's fields, without a type tag.
    #[must_use]
    pub fn to_payload(&self) -> serde_json::Value {
        match self {
            Self::PatientRegistered(event) => encode_payload(event),
        }
    }

    /// The event from its stored type, schema version and payload, upcasting older
    /// versions.
    ///
    /// # Errors
    /// A [`DecodeError`] for an unknown type, an unsupported version or a payload that does
    /// not fit the type.
    pub fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        let payload = match schema_version {
            1 => payload,
            other => {
                return Err(DecodeError::UnsupportedSchemaVersion {
                    event_type: event_type.to_owned(),
                    schema_version: other,
                });
            }
        };
        match event_type {
            "PatientRegistered" => decode_payload(event_type, payload).map(Self::PatientRegistered),
            other => Err(DecodeError::UnknownEventType(other.to_owned())),
        }
    }
}

/// Register a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterPatient {
    /// When the patient was registered at the clinic.
    pub occurred_at: DateTime<Utc>,
    /// The patient.
    pub patient_id: PatientId,
    /// Year of birth, when given.
    pub birth_year: Option<i32>,
    /// Sex, when given.
    pub sex: Option<Sex>,
}

/// The state of a patient stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientState {
    /// Whether the patient has been registered.
    pub registered: bool,
    /// The patient, once registered.
    pub patient_id: Option<PatientId>,
    /// The year of birth given at registration, if any.
    pub birth_year: Option<i32>,
}

impl PatientState {
    /// Applies one event. Total: never panics.
    pub fn apply(&mut self, event: &PatientEvent) {
        match event {
            PatientEvent::PatientRegistered(registered) => {
                self.registered = true;
                self.patient_id = Some(registered.patient_id);
                self.birth_year = registered.birth_year;
            }
        }
    }

    /// The state after `events`, in order.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a PatientEvent>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Decides whether a patient may be registered.
///
/// # Errors
/// [`Rejection::PatientAlreadyRegistered`] when the stream already holds a registration.
pub fn decide_patient(
    state: &PatientState,
    command: &RegisterPatient,
) -> Result<PatientEvent, Rejection> {
    if state.registered {
        return Err(Rejection::PatientAlreadyRegistered);
    }
    Ok(PatientEvent::PatientRegistered(PatientRegistered {
        occurred_at: command.occurred_at,
        patient_id: command.patient_id,
        birth_year: command.birth_year,
        sex: command.sex,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn register() -> RegisterPatient {
        RegisterPatient {
            occurred_at: DateTime::UNIX_EPOCH,
            patient_id: PatientId(Uuid::from_u128(1)),
            birth_year: Some(1970),
            sex: Some(Sex::Female),
        }
    }

    #[test]
    fn registering_a_new_patient_records_the_fact() {
        let event = decide_patient(&PatientState::default(), &register()).unwrap();
        let state = PatientState::fold([&event]);
        assert!(state.registered);
        assert_eq!(state.patient_id, Some(PatientId(Uuid::from_u128(1))));
    }

    #[test]
    fn registering_a_patient_twice_is_rejected() {
        let event = decide_patient(&PatientState::default(), &register()).unwrap();
        let state = PatientState::fold([&event]);
        let rejection = decide_patient(&state, &register()).unwrap_err();
        assert_eq!(rejection.reason(), "PATIENT_ALREADY_REGISTERED");
    }

    #[test]
    fn patient_registered_payload_round_trips() {
        let event = decide_patient(&PatientState::default(), &register()).unwrap();
        let decoded = PatientEvent::from_payload(
            event.event_type(),
            PatientEvent::SCHEMA_VERSION,
            event.to_payload(),
        )
        .unwrap();
        assert_eq!(decoded, event);
    }
}
