//! Projectors: read the event log in global order and keep the read models current.
//!
//! - [`models`]: the read-model tables and how a batch of events lands in them;
//! - [`cells`]: the pre-aggregated outcome statistics the outcome projector keeps;
//! - [`runtime`]: checkpoints, leases, wake-ups, read-your-writes;
//! - `tail`: the one read of the log that feeds every read-model task of a worker;
//! - [`queries`]: what the query API reads;
//! - [`rebuild`]: rebuild from position zero into fresh tables, compare, swap;
//! - [`clinic_log`]: each clinic's verifiable log (index, trees, signed checkpoints).

#![warn(missing_docs)]

pub mod as_of;
mod bulk;
pub mod cells;
pub mod clinic_log;
mod error;
pub mod lag;
pub mod models;
pub mod queries;
pub mod rebuild;
pub mod runtime;
mod tail;

pub use error::ProjectionError;
pub use models::{Projection, Tables, treatment_plan_of};
pub use runtime::{
    BatchOutcome, DEFAULT_SHARDS, FaultInjector, NoFaults, Projector, ProjectorConfig, Stage,
    checkpoint, ensure_checkpoints, wait_for_position,
};
