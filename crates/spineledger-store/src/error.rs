use uuid::Uuid;

use crate::ExpectedVersion;

/// Everything the event store can fail with. Variants are what a caller acts on: a
/// conflict is retried or reported as ABORTED, a reused command id as ALREADY_EXISTS, the
/// rest are infrastructure failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached; `url` never contains a password.
    #[error("cannot connect to PostgreSQL at {url}")]
    Unreachable {
        /// Where it was looked for, without credentials.
        url: String,
        /// Why the connection failed.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The stream is not at the version the writer expected; nothing was written.
    #[error("version conflict: expected {expected}, stream is at version {actual}")]
    VersionConflict {
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version (0: no stream).
        actual: u64,
    },
    /// An event id (command id) was reused for different content or another stream.
    #[error("event id {event_id} was already used for a different event")]
    IdempotencyConflict {
        /// The reused id.
        event_id: Uuid,
    },
    /// The batch itself is unusable (empty, duplicate ids); nothing was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(&'static str),
    /// The store was configured in a way that cannot work (e.g. a bad pool setting).
    #[error("invalid configuration: {0}")]
    Configuration(String),
    /// A stored row could not be decoded (a bug or a foreign writer).
    #[error("stored event is malformed: {0}")]
    Malformed(String),
    /// PostgreSQL refused or failed a statement.
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("connection pool error")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// An embedded migration failed.
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
}

impl StoreError {
    /// True for a unique violation (SQLSTATE 23505): a concurrent writer took the same
    /// event id or stream version first; the whole append is retried and then sees it.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(error)
            if error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }

    /// True when a transaction failed only because a concurrent one got in its way: a
    /// unique violation, a deadlock (40P01) or a serialization failure (40001). Running
    /// it again sees the other transaction's outcome.
    pub(crate) fn is_lost_race(&self) -> bool {
        use tokio_postgres::error::SqlState;
        self.is_unique_violation()
            || matches!(self, Self::Database(error)
                if error.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    || error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
    }
}
