/// Why a projector batch, a query or a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] spineledger_store::StoreError),
    /// PostgreSQL refused or failed a statement.
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("connection pool error")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A stored event cannot be decoded: the projector stops rather than skip it.
    #[error("event {event_id} ({event_type}) cannot be decoded: {reason}")]
    Undecodable {
        /// The event.
        event_id: uuid::Uuid,
        /// Its stored type.
        event_type: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A read-model row cannot be decoded (written by another version?).
    #[error("read model row cannot be decoded: {0}")]
    CorruptRow(String),
    /// The checkpoint moved or the lease was lost between read and commit: another worker
    /// owns this shard now. Nothing was committed.
    #[error("lost the lease or the checkpoint moved; batch rolled back")]
    LostLease,
    /// A fault injected by a test.
    #[error("injected fault at {0:?}")]
    Injected(crate::runtime::Stage),
    /// An as-of position that no event has.
    #[error("no event has global position {position}")]
    UnknownPosition {
        /// The position asked for.
        position: i64,
    },
    /// An as-of position before which a running transaction could still add events.
    #[error("the log up to position {position} is not final yet")]
    PositionNotFinal {
        /// The position asked for.
        position: i64,
    },
    /// Waiting for the projection to reach a position took too long.
    #[error("the projection has not reached position {position} yet")]
    NotCaughtUp {
        /// The position waited for.
        position: i64,
    },
    /// The projection's checkpoints were made under another shard count than configured.
    #[error(
        "{projection} was projected with {stored} shards but this process is configured for \
         {configured}: use the same --shards everywhere, or rebuild with the new count"
    )]
    ShardCountMismatch {
        /// The projection.
        projection: &'static str,
        /// The shard count its checkpoints were made under.
        stored: u8,
        /// The shard count this process is configured for.
        configured: u8,
    },
    /// Another rebuild of this projection holds the rebuild lock.
    #[error("a rebuild of {0} is already running")]
    RebuildInProgress(&'static str),
    /// A shard index outside the configured shard count.
    #[error("shard {shard} does not exist among {shards} shards")]
    UnknownShard {
        /// The shard asked for.
        shard: u8,
        /// The configured shard count.
        shards: u8,
    },
    /// The clinic log is an append-only index, not a read model: it is neither folded nor
    /// rebuilt.
    #[error("{0} is not a read model and cannot be rebuilt")]
    NotAReadModel(&'static str),
    /// A projection name that is not one of [`crate::Projection::RUNNING`].
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
}

impl ProjectionError {
    /// A read-model row that does not decode; serde's message may quote the row's
    /// (clinical) values, so only its category and place are kept.
    pub fn corrupt_row(error: &serde_json::Error) -> Self {
        Self::CorruptRow(format!(
            "{:?} error at line {} column {}",
            error.classify(),
            error.line(),
            error.column()
        ))
    }

    /// The SQLSTATE of a database error: what logs may say about it (a database error's
    /// detail can quote row contents).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Database(error) | Self::Store(spineledger_store::StoreError::Database(error)) => {
                error.code().map(tokio_postgres::error::SqlState::code)
            }
            Self::Pool(deadpool_postgres::PoolError::Backend(error)) => {
                error.code().map(tokio_postgres::error::SqlState::code)
            }
            _ => None,
        }
    }

    /// A deadlock or serialisation failure: the batch is simply retried.
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let code = match self {
            Self::Database(error) => error.code(),
            Self::Store(spineledger_store::StoreError::Database(error)) => error.code(),
            Self::LostLease | Self::Injected(_) => return true,
            _ => None,
        };
        matches!(
            code,
            Some(
                &SqlState::T_R_DEADLOCK_DETECTED
                    | &SqlState::T_R_SERIALIZATION_FAILURE
                    | &SqlState::LOCK_NOT_AVAILABLE
            )
        )
    }
}
