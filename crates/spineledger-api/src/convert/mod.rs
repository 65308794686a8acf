//! Edge validation: every `spineledger.v1` request becomes a valid domain command (writes)
//! or a valid query (reads) here, or is refused with every problem it has (never only the
//! first), each named by its field path. Nothing here panics on any input: no unchecked
//! indexing, no unwrap, no wrapping `as` casts. The domain then only ever sees valid
//! values.
//!
//! - `check`: the violation accumulator [`Check`] and its field rules (UUIDs, timestamps,
//!   texts, enums, lists, measures), shared by every request;
//! - `patient`, `episode`: the write requests; `correction`: a correction request and its
//!   resolution against the corrected event's type; `reads`: the read requests;
//! - [`enums`]: every enum in both directions.

use chrono::{DateTime, TimeDelta, Utc};
use spineledger_domain::commands::EpisodeCommand;
use spineledger_domain::ids::{ClinicId, EpisodeId};
use uuid::Uuid;

pub mod audit;
mod check;
pub mod correction;
pub mod enums;
mod episode;
#[cfg(test)]
mod hostile;
mod patient;
mod reads;
#[cfg(test)]
mod test_support;

pub use audit::{
    AccessLogQuery, AsOf, CheckpointQuery, ClinicChangesQuery, ConsistencyQuery, InclusionQuery,
    LogRecord, PlanAsOfQuery, StreamEventsQuery, access_page_token,
};
pub(crate) use check::Check;
pub use check::unstorable_text;
pub use correction::record_correction;
pub use episode::{
    adjust_treatment_plan, discharge_episode, give_home_care_instructions, record_evaluation,
    record_missed_session, record_outcome, record_reassessment, record_session,
    report_home_care_adherence, start_treatment_plan,
};
pub use patient::register_patient;
pub use reads::{
    ComparisonQuery, DEFAULT_PAGE_SIZE, MAX_CLINICS_PER_QUERY, MAX_PAGE_SIZE, PlanListQuery,
    PlanQuery, StatisticsQuery, page_token,
};

/// How far in the future `occurred_at` may lie, for clocks that disagree.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// The earliest year any timestamp of a request (or a birth year) may name.
pub const EARLIEST_YEAR: i32 = 1900;
/// The latest year any timestamp of a request may name.
pub const LATEST_YEAR: i32 = 9999;
/// The most items any repeated field may hold.
pub const MAX_LIST_ITEMS: usize = 50;
/// The most goals a plan may name.
pub const MAX_GOALS: usize = 20;
/// The largest initial phase, in sessions.
pub const MAX_INITIAL_SESSIONS: i32 = 30;
/// The deepest nesting of a corrected JSON value.
pub const MAX_CORRECTION_VALUE_DEPTH: usize = 16;

/// The validated command header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidHeader {
    /// The clinic the command is for.
    pub clinic_id: ClinicId,
    /// The idempotency key; becomes the event id.
    pub command_id: Uuid,
    /// The stream version expected before the append; `None`: any.
    pub expected_version: Option<u64>,
    /// The correlation id, when given.
    pub correlation_id: Option<Uuid>,
    /// The causation id, when given.
    pub causation_id: Option<Uuid>,
    /// Who records it (provider or user id), at most 200 characters.
    pub actor: String,
}

/// A request that passed edge validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCommand<T> {
    /// The header.
    pub header: ValidHeader,
    /// When the fact happened in the clinic.
    pub occurred_at: DateTime<Utc>,
    /// The domain command.
    pub command: T,
}

/// An episode command with the episode (stream) it is for.
pub type EpisodeRequest = (EpisodeId, ValidCommand<EpisodeCommand>);
