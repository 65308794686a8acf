//! The spineledger event store on PostgreSQL: the only source of truth.
//!
//! Guarantees (each proven by a test in `tests/`):
//! - an append is one transaction with optimistic concurrency on the stream version;
//! - the event id is the idempotency key: a retry gets the original result, a reused id
//!   with other content is an error, also under concurrent retries;
//! - readers of the global order never skip an event (xid8 + snapshot xmin rule);
//! - events are immutable (grants and a trigger reject UPDATE, DELETE and TRUNCATE);
//! - the app role sees and writes only the clinics its transaction names (row-level
//!   security; [`ClinicScope`], [`scoped`]).

#![warn(missing_docs)]

/// The hash chain's encoding (defined in the verifier crate, which auditors run too).
pub use spineledger_verifier::chain;
mod access;
mod database;
mod error;
mod group;
mod history;
mod model;
mod planner;
mod scope;
mod store;
pub mod tls;
mod wake;

pub use access::{
    Access, AccessCursor, AccessQuery, AccessRecord, AccessSort, LoggedAccess, Reader,
    read_access_after, read_clinic_access_log,
};
pub use database::{
    ANALYST_ROLE, APP_ROLE, DEFAULT_DATABASE, PROJECTOR_ROLE, as_role, connect, describe,
    ensure_database, ensure_walled, migrate, parse_url, pool, quote_identifier, resolve,
    set_statistics_min_cell, with_dbname,
};
pub use error::StoreError;
pub use group::GroupCommit;
pub use model::{
    AppendOutcome, AppendedEvent, ClinicShard, EventMetadata, ExpectedVersion, Fingerprint,
    GlobalCursor, NewEvent, RecordedEvent, RecordedPrincipal, StreamKey,
};
pub use planner::{analyze_grown, keep_statistics};
pub use scope::{CLINIC_SETTING, ClinicScope, scoped};
pub use store::{
    EventStore, append_in, event_cursor, idle_access_horizon, idle_shard_horizon,
    last_recorded_cursor, log_head, read_all_after, read_clinic_log_upto, read_log_by_stream,
    read_streams_upto, request_keys,
};
pub use wake::ShardHint;

pub use deadpool_postgres;
pub use tokio_postgres;
