//! The clinical domain of spinal decompression care: identifiers, validated measures,
//! events, the episode state folded from them, and the rules that decide whether a command
//! may become an event. Pure: no I/O, no runtime, no database, no gRPC.
//!
//! The flow is `decide(&state, &command, &policy) -> event`, then the caller appends the
//! event and `state.apply(event_id, &event)` folds it in.

#![warn(missing_docs)]

pub mod chart;
pub mod commands;
pub mod episode;
pub mod events;
pub mod ids;
pub mod measures;
pub mod patient;
pub mod policy;
pub mod rejection;

pub use chart::{Chart, ChartCorrection, ChartEntry, CorrectionMisfit};
pub use commands::{
    AdjustTreatmentPlan, DischargeEpisode, EpisodeCommand, GiveHomeCareInstructions, PatientFacts,
    RecordCorrection, RecordEvaluation, RecordMissedSession, RecordOutcome, RecordReassessment,
    RecordSession, ReportHomeCareAdherence, StartTreatmentPlan, decide, decide_for_patient,
};
pub use episode::{Episode, Plan, PlanPhase};
pub use events::{DecodeError, EpisodeEvent, SCHEMA_VERSION};
pub use ids::{ClinicId, EpisodeId, PatientId};
pub use patient::{
    PatientEvent, PatientRegistered, PatientState, RegisterPatient, Sex, decide_patient,
};
pub use policy::Policy;
pub use rejection::Rejection;

/// Re-exported so callers (the API edge) build correction values with the same JSON type
/// the events carry, without depending on `serde_json` themselves.
pub use serde_json;

#[cfg(test)]
mod tests;
