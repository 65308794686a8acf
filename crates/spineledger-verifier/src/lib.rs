//! The verifier: what an auditor runs to check that the record was not altered. It holds
//! the definition of an event's hash ([`chain`]) and the checks of a stream's chain
//! ([`stream`]), and needs no database and no async runtime: the service's `verify`
//! command feeds it rows from PostgreSQL, and it can as well be fed a record exported
//! elsewhere.

#![warn(missing_docs)]

pub mod access;
pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod merkle;
pub mod stream;

/// What the verifier can fail with before it gets to judge anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A stored hash is not 32 bytes long.
    #[error("an event hash of {0} bytes (32 expected)")]
    HashLength(usize),
}
