//! Read models as pure folds over an episode's chart: its facts
//! in the order they happened, corrections applied ([`spineledger_domain::chart`]). No
//! I/O, no clock, no database: the projector decodes the stored events, derives or extends
//! each affected episode's views ([`fold`]) and stores them as JSONB.
//!
//! Invariants every view keeps, because the projector relies on them:
//!
//! - **Total.** Folding never panics, whatever the order or content of the events (a
//!   session before any plan, a correction of an event never seen). The log is the truth
//!   and the fold must read whatever it holds.
//! - **A function of the set of events.** A view depends only on which events the episode
//!   has, not on the order they were appended or read, so a rebuild from position zero
//!   equals the incrementally built model exactly. Views hold only ordered collections
//!   (`Vec`, `BTreeMap`), and nothing inside the fold reads the wall clock; time-dependent answers ([`TreatmentPlanView::status_at`]) take "today" as an
//!   argument.
//!
//! The modules:
//! - [`fold`]: how a per-episode view is derived from the episode's chart (clinical order,
//!   corrections applied) and extended in the common case.
//! - [`plan`]: [`TreatmentPlanView`], the current plan of one episode for clinicians.
//! - [`outcomes`]: [`EpisodeOutcome`], the de-identified facts of one episode for statistics.
//! - [`statistics`]: [`aggregate`], outcome statistics grouped by dimensions, with
//!   small-cell suppression.
//! - [`tally`]: [`Tally`], the exact additive sums every statistic is computed from, and
//!   the [`Cell`]s the projector keeps them in.
//! - [`responder`]: the Ostelo 2008 thresholds of clinically meaningful change both views use.
//! - [`casemix`]: case-mix adjusted comparison of clinics (models fitted over every
//!   clinic, observed against expected), with [`funnel`], the funnel-plot limits.

#![warn(missing_docs)]

pub mod casemix;
pub mod fold;
pub mod funnel;
pub mod outcomes;
pub mod plan;
pub mod release;
pub mod responder;
pub mod statistics;
pub mod tally;

pub use fold::{EpisodeView, FoldMark, derive, derive_from_log, extend};
pub use outcomes::{
    AdherenceBand, AgeBand, Chronicity, EpisodeOutcome, FollowUpScores, FrequencyPhase,
};
pub use plan::{
    NrsReading, OdiReading, PhaseCadence, PlanFlags, PlanPhase, PlanStatus, ScoreReading,
    SessionSettings, ToleranceTrend, TreatmentPlanView,
};
pub use responder::ResponderStatus;
pub use statistics::{
    AdherenceBandCounts, Dimension, DischargeCounts, Group, GroupStatistics, Mean, Median, MinCell,
    MinCellTooSmall, Proportion, TRAJECTORY_SESSIONS, TrajectoryPoint, UnknownDimension, aggregate,
    groups,
};
pub use tally::{COUNTS, Cell, Count, Grouping, ODI_UNITS_PER_POINT, Tally, cell_changes};

#[cfg(test)]
mod tests;
