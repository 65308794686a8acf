//! Read models as pure folds over episode events (design brief section 5). No I/O, no
//! clock, no database: the projector decodes each stored event and calls `apply(event_id,
//! &event)` on the views of its episode in log order, then stores the views as JSONB.
//!
//! Two invariants every view keeps, because the projector relies on them:
//!
//! - **Total.** `apply` never panics, whatever the order or content of the events (a
//!   session before any plan, a correction of an event never seen). The log is the truth
//!   and the fold must read whatever it holds.
//! - **Deterministic.** The same events give the same value and the same JSON, so a rebuild
//!   from position zero equals the incrementally built model exactly. Views hold only
//!   ordered collections (`Vec`, `BTreeMap`), and nothing inside `apply` reads the wall
//!   clock; time-dependent answers ([`TreatmentPlanView::status_at`]) take "today" as an
//!   argument.
//!
//! The modules:
//! - [`plan`]: [`TreatmentPlanView`], the current plan of one episode for clinicians.
//! - [`outcomes`]: [`EpisodeOutcome`], the de-identified facts of one episode for statistics.
//! - [`statistics`]: [`aggregate`], outcome statistics grouped by dimensions, with
//!   small-cell suppression.
//! - [`responder`]: the Ostelo 2008 thresholds of clinically meaningful change both views use.

mod correction;
pub mod outcomes;
pub mod plan;
pub mod responder;
pub mod statistics;

pub use outcomes::{AdherenceBand, AgeBand, EpisodeOutcome, FollowUpScores, FrequencyPhase};
pub use plan::{
    NrsReading, OdiReading, PhaseCadence, PlanFlags, PlanPhase, PlanStatus, ScoreReading,
    SessionSettings, ToleranceTrend, TreatmentPlanView,
};
pub use responder::ResponderStatus;
pub use statistics::{
    AdherenceBandCounts, DEFAULT_MIN_CELL, Dimension, DischargeCounts, Group, GroupStatistics,
    Mean, Median, Proportion, TRAJECTORY_SESSIONS, TrajectoryPoint, UnknownDimension, aggregate,
};

#[cfg(test)]
mod tests;
