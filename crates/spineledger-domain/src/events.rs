//! The facts an episode of care is made of. Events are past tense
//! and immutable; a mistake is fixed by a [`RecordCorrected`] that names the event it
//! corrects. Every event carries `occurred_at`, the time of the fact in the clinic, which
//! is distinct from the time it was recorded (event metadata, kept by the store).
//!
//! The stored form is an event type name, a schema version and a JSON payload holding only
//! the struct's fields; [`EpisodeEvent::from_payload`] upcasts older versions on read.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{EpisodeId, PatientId};
use crate::measures::{
    AdherencePercent, AdverseEvent, AgeYears, BodyWeightKg, Cadence, ContraindicationScreening,
    Cycles, Diagnosis, DischargeReason, DurationMinutes, Force, Frequency, HoldSeconds,
    HomeCareInstruction, InitialSpanWeeks, LumbarFlexionCm, MissedReason, Note, OswestryIndex,
    OverallHealth, PainNrs, PeriodDays, Pgic, Recommendation, RelaxSeconds, RolandMorris,
    SciaticaSymptoms, SessionMode, ShortText, SleepQuality, SpinalLevel, StraightLegRaise,
    SymptomWeeks, Tolerance, TractionAngleDegrees,
};

/// The schema version every event is written with today.
pub const SCHEMA_VERSION: i32 = 1;

/// A stored event could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event type name is not one this version knows.
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    /// The schema version is not one this version can read or upcast.
    #[error("event type {event_type} has unsupported schema version {schema_version}")]
    UnsupportedSchemaVersion {
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: i32,
    },
    /// The payload does not fit the event type.
    #[error("payload of {event_type} does not fit its schema")]
    InvalidPayload {
        /// The stored event type.
        event_type: String,
        /// Why it does not fit.
        #[source]
        source: serde_json::Error,
    },
}

pub(crate) fn encode_payload<T: Serialize>(event: &T) -> serde_json::Value {
    // Payload types hold only string-keyed maps, strings, integers and finite floats (every
    // float is a validated measure), which serde_json always represents.
    serde_json::to_value(event).expect("event payloads are always representable as JSON")
}

pub(crate) fn decode_payload<T: DeserializeOwned>(
    event_type: &str,
    payload: serde_json::Value,
) -> Result<T, DecodeError> {
    serde_json::from_value(payload).map_err(|source| DecodeError::InvalidPayload {
        event_type: event_type.to_owned(),
        source,
    })
}

/// A provider assessed the patient: pain, function, examination, diagnoses and
/// contraindication screening. The first evaluation starts the episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRecorded {
    /// When the evaluation took place.
    pub occurred_at: DateTime<Utc>,
    /// The episode it belongs to.
    pub episode_id: EpisodeId,
    /// The patient evaluated.
    pub patient_id: PatientId,
    /// The evaluating provider's id (no name), at most 200 characters.
    pub provider_id: ShortText,
    /// Age in whole years, kept so statistics survive erasure of personal data.
    pub age_years: AgeYears,
    /// Back pain, NRS 0-10.
    pub pain_back: PainNrs,
    /// Leg pain, NRS 0-10.
    pub pain_leg: PainNrs,
    /// Oswestry Disability Index, 0-100 %.
    pub odi: OswestryIndex,
    /// Roland-Morris score, 0-24.
    pub rmdq: Option<RolandMorris>,
    /// Straight leg raise tests.
    pub straight_leg_raise: Vec<StraightLegRaise>,
    /// Lumbar flexion, cm 0-15.
    pub lumbar_flexion_cm: Option<LumbarFlexionCm>,
    /// Sleep quality, 0-10.
    pub sleep_quality: Option<SleepQuality>,
    /// Posture observations, at most 2000 characters.
    pub posture_notes: Option<Note>,
    /// Self-rated overall health, 0-10.
    pub overall_health: Option<OverallHealth>,
    /// Body weight, kg 20-350.
    pub body_weight_kg: Option<BodyWeightKg>,
    /// Diagnoses, at least one.
    pub diagnoses: Vec<Diagnosis>,
    /// The contraindication screening, every item exactly once.
    pub contraindications: ContraindicationScreening,
    /// Whether the patient has sciatica (leg pain radiating below the knee), when the
    /// provider recorded it. Added after schema version 1 was in use: absent from older
    /// payloads and left out of the payload when not recorded, so older events read and
    /// hash exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sciatica: Option<bool>,
    /// Weeks since the symptoms began, when recorded (added like `sciatica`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_duration_weeks: Option<SymptomWeeks>,
}

/// A treatment plan began with its initial phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentPlanStarted {
    /// When the plan was agreed.
    pub occurred_at: DateTime<Utc>,
    /// Sessions in the initial phase (typically 4-6).
    pub initial_sessions: u8,
    /// Weeks the initial phase is spread over, 1-12.
    pub initial_span_weeks: InitialSpanWeeks,
    /// The spinal levels targeted, at least one.
    pub target_levels: Vec<SpinalLevel>,
    /// The starting traction force.
    pub starting_force: Force,
    /// Goals, each at most 200 characters.
    pub goals: Vec<ShortText>,
    /// Why the initial phase is outside 4-6 sessions, when it is.
    pub justification: Option<Note>,
}

/// A decompression session took place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecorded {
    /// When the session took place.
    pub occurred_at: DateTime<Utc>,
    /// Number of the session within the episode, from 1.
    pub session_number: u32,
    /// Number of the session within the current phase, from 1.
    pub phase_session_number: u32,
    /// How traction was delivered.
    pub mode: SessionMode,
    /// Peak traction force.
    pub peak_force: Force,
    /// Rest (relax) traction force, at most the peak.
    pub rest_force: Force,
    /// Hold time, seconds 0-600.
    pub hold_seconds: HoldSeconds,
    /// Relax time, seconds 0-600.
    pub relax_seconds: RelaxSeconds,
    /// Cycles, 0-200.
    pub cycles: Cycles,
    /// Duration, minutes 1-60.
    pub duration_minutes: DurationMinutes,
    /// Traction angle, degrees 0-45.
    pub angle_degrees: TractionAngleDegrees,
    /// The spinal levels treated.
    pub levels: Vec<SpinalLevel>,
    /// Pain before the session, NRS 0-10.
    pub pain_before: PainNrs,
    /// Pain after the session, NRS 0-10.
    pub pain_after: PainNrs,
    /// How the patient tolerated it.
    pub tolerance: Tolerance,
    /// An adverse event, if one happened.
    pub adverse_event: Option<AdverseEvent>,
    /// The provider's id, at most 200 characters.
    pub provider_id: ShortText,
}

impl SessionRecorded {
    /// The fields that are the session's decompression settings (as the payload and the
    /// request name them), as opposed to its pain scores, tolerance and provider.
    pub const SETTINGS: [&'static str; 9] = [
        "mode",
        "peak_force",
        "rest_force",
        "hold_seconds",
        "relax_seconds",
        "cycles",
        "duration_minutes",
        "angle_degrees",
        "levels",
    ];
}

/// A planned session did not take place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMissed {
    /// When the session was due.
    pub occurred_at: DateTime<Utc>,
    /// Why it was missed.
    pub reason: MissedReason,
    /// Sessions done in the episode when it was missed.
    pub sessions_done_at_miss: u32,
}

/// Outcome measures were taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecorded {
    /// When the measures were taken.
    pub occurred_at: DateTime<Utc>,
    /// Sessions done in the episode when measured.
    pub after_session: u32,
    /// Back pain, NRS 0-10.
    pub pain_back: PainNrs,
    /// Leg pain, NRS 0-10.
    pub pain_leg: PainNrs,
    /// Oswestry Disability Index, 0-100 %.
    pub odi: Option<OswestryIndex>,
    /// Roland-Morris score, 0-24.
    pub rmdq: Option<RolandMorris>,
    /// Straight leg raise tests.
    pub straight_leg_raise: Vec<StraightLegRaise>,
    /// Lumbar flexion, cm 0-15.
    pub lumbar_flexion_cm: Option<LumbarFlexionCm>,
    /// Sleep quality, 0-10.
    pub sleep_quality: Option<SleepQuality>,
    /// Global impression of change, 1-7.
    pub pgic: Option<Pgic>,
    /// Sciatica symptoms compared with the evaluation.
    pub sciatica: Option<SciaticaSymptoms>,
}

/// Home-care instructions were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeCareInstructed {
    /// When they were given.
    pub occurred_at: DateTime<Utc>,
    /// The instructions, at least one.
    pub instructions: Vec<HomeCareInstruction>,
}

/// The patient reported how well they followed the home-care instructions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeCareAdherenceReported {
    /// When it was reported.
    pub occurred_at: DateTime<Utc>,
    /// The period the report covers, days 1-90.
    pub period_days: PeriodDays,
    /// Adherence, percent 0-100.
    pub adherence_percent: AdherencePercent,
}

/// The patient was reassessed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReassessmentRecorded {
    /// When the reassessment took place.
    pub occurred_at: DateTime<Utc>,
    /// Sessions done in the episode when reassessed.
    pub after_session: u32,
    /// Back pain, NRS 0-10.
    pub pain_back: PainNrs,
    /// Leg pain, NRS 0-10.
    pub pain_leg: PainNrs,
    /// Oswestry Disability Index, 0-100 %.
    pub odi: Option<OswestryIndex>,
    /// Roland-Morris score, 0-24.
    pub rmdq: Option<RolandMorris>,
    /// What the provider recommends.
    pub recommendation: Recommendation,
    /// Notes, at most 2000 characters.
    pub notes: Option<Note>,
}

/// The plan moved to a personalised frequency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentPlanAdjusted {
    /// When the adjustment was decided.
    pub occurred_at: DateTime<Utc>,
    /// The new frequency.
    pub frequency: Frequency,
    /// Its cadence (none only for as-needed).
    pub cadence: Cadence,
    /// Why, at most 2000 characters.
    pub reason: Option<Note>,
}

/// The episode ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeDischarged {
    /// When the patient was discharged.
    pub occurred_at: DateTime<Utc>,
    /// Why.
    pub reason: DischargeReason,
    /// Notes, at most 2000 characters.
    pub notes: Option<Note>,
}

/// One corrected field of an earlier event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldCorrection {
    /// Dotted path of the field in the corrected event's payload, e.g. `pain_back` or
    /// `contraindications.pregnancy`; at most 200 characters.
    pub field: ShortText,
    /// The correct value, in the payload's JSON form.
    pub corrected_value: serde_json::Value,
}

/// An earlier event of this episode was wrong; this names it, the fields and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordCorrected {
    /// When the correction was made.
    pub occurred_at: DateTime<Utc>,
    /// The event corrected.
    pub corrected_event_id: Uuid,
    /// Its type, e.g. `SessionRecorded`.
    pub corrected_event_type: String,
    /// The corrected fields, at least one.
    pub corrections: Vec<FieldCorrection>,
    /// Why, at most 2000 characters, not blank.
    pub reason: Note,
}

/// An event of an episode stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EpisodeEvent {
    /// See [`EvaluationRecorded`].
    EvaluationRecorded(EvaluationRecorded),
    /// See [`TreatmentPlanStarted`].
    TreatmentPlanStarted(TreatmentPlanStarted),
    /// See [`SessionRecorded`].
    SessionRecorded(SessionRecorded),
    /// See [`SessionMissed`].
    SessionMissed(SessionMissed),
    /// See [`OutcomeRecorded`].
    OutcomeRecorded(OutcomeRecorded),
    /// See [`HomeCareInstructed`].
    HomeCareInstructed(HomeCareInstructed),
    /// See [`HomeCareAdherenceReported`].
    HomeCareAdherenceReported(HomeCareAdherenceReported),
    /// See [`ReassessmentRecorded`].
    ReassessmentRecorded(ReassessmentRecorded),
    /// See [`TreatmentPlanAdjusted`].
    TreatmentPlanAdjusted(TreatmentPlanAdjusted),
    /// See [`EpisodeDischarged`].
    EpisodeDischarged(EpisodeDischarged),
    /// See [`RecordCorrected`].
    RecordCorrected(RecordCorrected),
}

/// Every episode event type name, in catalogue order.
pub const EPISODE_EVENT_TYPES: [&str; 11] = [
    "EvaluationRecorded",
    "TreatmentPlanStarted",
    "SessionRecorded",
    "SessionMissed",
    "OutcomeRecorded",
    "HomeCareInstructed",
    "HomeCareAdherenceReported",
    "ReassessmentRecorded",
    "TreatmentPlanAdjusted",
    "EpisodeDischarged",
    "RecordCorrected",
];

impl EpisodeEvent {
    /// The schema version written with every episode event.
    pub const SCHEMA_VERSION: i32 = SCHEMA_VERSION;

    /// The event type name stored with the event.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::EvaluationRecorded(_) => "EvaluationRecorded",
            Self::TreatmentPlanStarted(_) => "TreatmentPlanStarted",
            Self::SessionRecorded(_) => "SessionRecorded",
            Self::SessionMissed(_) => "SessionMissed",
            Self::OutcomeRecorded(_) => "OutcomeRecorded",
            Self::HomeCareInstructed(_) => "HomeCareInstructed",
            Self::HomeCareAdherenceReported(_) => "HomeCareAdherenceReported",
            Self::ReassessmentRecorded(_) => "ReassessmentRecorded",
            Self::TreatmentPlanAdjusted(_) => "TreatmentPlanAdjusted",
            Self::EpisodeDischarged(_) => "EpisodeDischarged",
            Self::RecordCorrected(_) => "RecordCorrected",
        }
    }

    /// When the fact happened in the clinic.
    #[must_use]
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::EvaluationRecorded(e) => e.occurred_at,
            Self::TreatmentPlanStarted(e) => e.occurred_at,
            Self::SessionRecorded(e) => e.occurred_at,
            Self::SessionMissed(e) => e.occurred_at,
            Self::OutcomeRecorded(e) => e.occurred_at,
            Self::HomeCareInstructed(e) => e.occurred_at,
            Self::HomeCareAdherenceReported(e) => e.occurred_at,
            Self::ReassessmentRecorded(e) => e.occurred_at,
            Self::TreatmentPlanAdjusted(e) => e.occurred_at,
            Self::EpisodeDischarged(e) => e.occurred_at,
            Self::RecordCorrected(e) => e.occurred_at,
        }
    }

    /// The payload: the event's fields, without a type tag.
    #[must_use]
    pub fn to_payload(&self) -> serde_json::Value {
        match self {
            Self::EvaluationRecorded(e) => encode_payload(e),
            Self::TreatmentPlanStarted(e) => encode_payload(e),
            Self::SessionRecorded(e) => encode_payload(e),
            Self::SessionMissed(e) => encode_payload(e),
            Self::OutcomeRecorded(e) => encode_payload(e),
            Self::HomeCareInstructed(e) => encode_payload(e),
            Self::HomeCareAdherenceReported(e) => encode_payload(e),
            Self::ReassessmentRecorded(e) => encode_payload(e),
            Self::TreatmentPlanAdjusted(e) => encode_payload(e),
            Self::EpisodeDischarged(e) => encode_payload(e),
            Self::RecordCorrected(e) => encode_payload(e),
        }
    }

    /// The event from its stored type, schema version and payload.
    ///
    /// # Errors
    /// A [`DecodeError`] for an unknown type, an unsupported version or a payload that does
    /// not fit the type.
    pub fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        let payload = upcast(event_type, schema_version, payload)?;
        match event_type {
            "EvaluationRecorded" => {
                decode_payload(event_type, payload).map(Self::EvaluationRecorded)
            }
            "TreatmentPlanStarted" => {
                decode_payload(event_type, payload).map(Self::TreatmentPlanStarted)
            }
            "SessionRecorded" => decode_payload(event_type, payload).map(Self::SessionRecorded),
            "SessionMissed" => decode_payload(event_type, payload).map(Self::SessionMissed),
            "OutcomeRecorded" => decode_payload(event_type, payload).map(Self::OutcomeRecorded),
            "HomeCareInstructed" => {
                decode_payload(event_type, payload).map(Self::HomeCareInstructed)
            }
            "HomeCareAdherenceReported" => {
                decode_payload(event_type, payload).map(Self::HomeCareAdherenceReported)
            }
            "ReassessmentRecorded" => {
                decode_payload(event_type, payload).map(Self::ReassessmentRecorded)
            }
            "TreatmentPlanAdjusted" => {
                decode_payload(event_type, payload).map(Self::TreatmentPlanAdjusted)
            }
            "EpisodeDischarged" => decode_payload(event_type, payload).map(Self::EpisodeDischarged),
            "RecordCorrected" => decode_payload(event_type, payload).map(Self::RecordCorrected),
            other => Err(DecodeError::UnknownEventType(other.to_owned())),
        }
    }
}

/// Brings a payload written with an older schema version up to [`SCHEMA_VERSION`]. Each
/// new version adds an arm that rewrites the previous version's payload and falls through
/// to the next, so every stored version is read forever.
fn upcast(
    event_type: &str,
    schema_version: i32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    match schema_version {
        1 => Ok(payload),
        other => Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version: other,
        }),
    }
}
