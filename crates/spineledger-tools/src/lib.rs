//! The client tools behind `spineledger simulate`, `stats` and `bench`. They drive a
//! running server through its public gRPC API (and `bench` PostgreSQL directly, for the
//! raw figure), so nothing here is linked into the server library: the random cohorts,
//! the child processes and the report formatting stay out of the service.

#![warn(missing_docs)]

pub mod access_log;
pub mod bench;
pub mod cli;
pub mod replay;
pub mod report;
pub mod simulate;
pub mod stats;
