//! Appending to and reading from the event log.
//!
//! An append is one transaction: lock the stream row, recognise a retry by its event ids,
//! check the expected version, insert the events, bump the stream version. A unique
//! violation means a concurrent writer got there first (same event id, or same version);
//! the whole transaction is then retried and the second attempt sees the winner's rows,
//! so a concurrent retry of one command gets the original result, never a duplicate.

use crate::chain::{EventHash, Hashed};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::group::{Command, Committer, GroupCommit, Refusal};
use crate::scope::{ClinicScope, scoped};
use crate::wake::Appended;
use crate::{
    AppendOutcome, AppendedEvent, ClinicShard, EventMetadata, ExpectedVersion, Fingerprint,
    GlobalCursor, NewEvent, RecordedEvent, StoreError, StreamKey,
};

/// How often an append is retried after losing a race on a unique key. One retry is
/// enough to see the winner's committed rows; a few more cover pathological interleaving.
pub(crate) const UNIQUE_VIOLATION_RETRIES: usize = 5;

/// Locks the stream row, creating it at version 0 if new; returns the version.
const LOCK_STREAM: &str = "INSERT INTO streams (clinic_id, stream_id, version) VALUES ($1, $2, 0) \
     ON CONFLICT (clinic_id, stream_id) DO UPDATE SET version = streams.version \
     RETURNING version, head_hash, transaction_timestamp()";

/// The stored events under a request's event ids (to recognise a retry).
const FIND_RETRY: &str = "SELECT event_id, stream_id, version, xid::text::bigint, position, \
     fingerprint, hash FROM events WHERE clinic_id = $1 AND event_id = ANY($2)";

/// [`FIND_RETRY`] for a batch of clinics: the same columns, then the clinic.
pub(crate) const FIND_RETRY_IN_CLINICS: &str = "SELECT r.* \
     FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::uuid[])) AS k(clinic_id, event_id) \
     CROSS JOIN LATERAL (SELECT event_id, stream_id, version, xid::text::bigint, position, \
                                fingerprint, hash, clinic_id FROM events e \
                         WHERE e.clinic_id = k.clinic_id AND e.event_id = k.event_id \
                         OFFSET 0) r";

pub(crate) const EVENT_COLUMNS: &str = "clinic_id, stream_id, version, event_id, event_type, \
     schema_version, payload, metadata, occurred_at, recorded_at, xid::text::bigint, \
     position, fingerprint, prev_hash, hash";

/// The event store over a PostgreSQL connection pool whose connections log in as the app
/// role. Every method runs in a transaction whose clinic context (row-level security) is
/// the clinic it is about: the stream's, or the clinics a caller names.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: Pool,
    /// The clinics that committed appends since the last NOTIFY; see
    /// [`EventStore::spawn_notifier`].
    appended: Arc<Appended>,
    /// How decided appends are grouped into transactions.
    group: GroupCommit,
    /// The group commit's queue, its writers started on first use (on the runtime that
    /// uses the store).
    committer: Arc<OnceLock<Committer>>,
}

impl EventStore {
    /// The store over `pool` (connections that log in as the app role), with the default
    /// group commit.
    pub fn new(pool: Pool) -> Self {
        Self::with_group_commit(pool, GroupCommit::default())
    }

    /// The store over `pool`, grouping decided appends as `group` says.
    pub fn with_group_commit(pool: Pool, group: GroupCommit) -> Self {
        Self {
            pool,
            appended: Arc::new(Appended::default()),
            group,
            committer: Arc::new(OnceLock::new()),
        }
    }

    /// Sends `NOTIFY spineledger_events` after appends, coalesced: at most one per
    /// `interval`, from outside the appending transactions (a NOTIFY inside them would
    /// serialise their commits on PostgreSQL's notification lock). Its payload names the
    /// shards with news ([`ShardHint`]). Projectors in any process LISTEN for it as a
    /// wake-up hint; they poll as well.
    pub fn spawn_notifier(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                let hint = store.appended.next().await;
                if hint.is_empty() {
                    // A spare wake-up: what it announced went out with the last NOTIFY.
                    continue;
                }
                let hint = hint.to_hex();
                match store.pool.get().await {
                    Ok(client) => {
                        let notify = client
                            .execute("SELECT pg_notify('spineledger_events', $1)", &[&hint])
                            .await;
                        if let Err(error) = notify {
                            tracing::debug!(%error, "NOTIFY failed; projectors will poll");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "NOTIFY skipped; projectors will poll"),
                }
                tokio::time::sleep(interval).await;
            }
        })
    }

    /// The connection pool, for callers that work inside their own transactions (which
    /// must set their clinic context first: [`crate::scoped`]).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Appends `events` to the stream in one transaction (see the module docs).
    pub async fn append(
        &self,
        stream: &StreamKey,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            let mut client = self.pool.get().await?;
            let transaction = client.transaction().await?;
            let result = append_in(&transaction, stream, expected, events).await;
            let result = match result {
                Ok(outcome) => transaction
                    .commit()
                    .await
                    .map(|()| outcome)
                    .map_err(Into::into),
                Err(error) => Err(error),
            };
            match result {
                Err(error) if error.is_unique_violation() && attempt < UNIQUE_VIOLATION_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "append lost a race on a unique key; retrying");
                }
                other => {
                    if other.as_ref().is_ok_and(|outcome| !outcome.replayed) {
                        self.appended.record([stream.clinic_id]);
                    }
                    return other;
                }
            }
        }
    }

    /// The current version of a stream; 0 if it does not exist.
    pub async fn stream_version(&self, stream: &StreamKey) -> Result<u64, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction
            .prepare_cached("SELECT version FROM streams WHERE clinic_id = $1 AND stream_id = $2")
            .await?;
        let row = scoped(
            &transaction,
            &ClinicScope::one(stream.clinic_id),
            transaction.query_opt(&statement, &[&stream.clinic_id, &stream.stream_id]),
        )
        .await?;
        transaction.commit().await?;
        row.map_or(Ok(0), |row| to_version(row.try_get(0)?))
    }

    /// Events of one stream with version >= `from_version`, in version order, at most
    /// `limit` of them.
    #[tracing::instrument(
        name = "store.read_stream",
        skip_all,
        fields(clinic = %stream.clinic_id, from_version)
    )]
    pub async fn read_stream(
        &self,
        stream: &StreamKey,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                 WHERE clinic_id = $1 AND stream_id = $2 AND version >= $3 \
                 ORDER BY version LIMIT $4"
            ))
            .await?;
        let (from_version, limit) = (to_sql_count(from_version)?, to_sql_count(limit as u64)?);
        let rows = scoped(
            &transaction,
            &ClinicScope::one(stream.clinic_id),
            transaction.query(
                &statement,
                &[&stream.clinic_id, &stream.stream_id, &from_version, &limit],
            ),
        )
        .await?;
        transaction.commit().await?;
        rows.iter().map(decode_event).collect()
    }

    /// A clinic's events recorded in `[from, to)`, across its streams, in position order,
    /// after position `after`, at most `limit` of them: what changed at the clinic in a
    /// period.
    pub async fn read_clinic_changes(
        &self,
        clinic_id: uuid::Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                 WHERE clinic_id = $1 AND recorded_at >= $2 AND recorded_at < $3 \
                   AND position > $4 \
                 ORDER BY position LIMIT $5"
            ))
            .await?;
        let limit = to_sql_count(limit as u64)?;
        let rows = scoped(
            &transaction,
            &ClinicScope::one(clinic_id),
            transaction.query(&statement, &[&clinic_id, &from, &to, &after, &limit]),
        )
        .await?;
        transaction.commit().await?;
        rows.iter().map(decode_event).collect()
    }

    /// The whole stream, in version order.
    pub async fn read_whole_stream(
        &self,
        stream: &StreamKey,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        const PAGE: usize = 1000;
        let mut events = Vec::new();
        loop {
            let next = events.len() as u64 + 1;
            let page = self.read_stream(stream, next, PAGE).await?;
            let done = page.len() < PAGE;
            events.extend(page);
            if done {
                return Ok(events);
            }
        }
    }

    /// The clinic and global cursor of the event at `position`, if it exists and belongs
    /// to one of `clinics` (another clinic's event is not revealed: `None`).
    pub async fn event_at_position(
        &self,
        clinics: &[Uuid],
        position: i64,
    ) -> Result<Option<(Uuid, GlobalCursor)>, StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction
            .prepare_cached(
                "SELECT clinic_id, xid::text::bigint, position FROM events WHERE position = $1",
            )
            .await?;
        let row = scoped(
            &transaction,
            &ClinicScope::of(clinics),
            transaction.query_opt(&statement, &[&position]),
        )
        .await?;
        transaction.commit().await?;
        row.map(|row| {
            Ok((
                row.try_get(0)?,
                decode_cursor(row.try_get(1)?, row.try_get(2)?)?,
            ))
        })
        .transpose()
    }
}

/// Up to `limit` events strictly after `cursor` in global order, restricted to the clinics
/// of one shard (the global order restricted to a subset stays gap-free), never skipping
/// one: only events of transactions older than every transaction still running are
/// returned, so nothing can later commit before the returned ones.
///
/// A projector's read: through the app role it sees only the clinics of the current
/// transaction's context; the projector role sees every clinic.
pub async fn read_all_after(
    client: &impl deadpool_postgres::GenericClient,
    cursor: GlobalCursor,
    limit: usize,
    shard: ClinicShard,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (xid, position) > ($1::text::xid8, $2) \
               AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
               AND get_byte(uuid_send(clinic_id), 15) % $4 = $5 \
             ORDER BY xid, position LIMIT $3"
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &cursor.xid.to_string(),
                &cursor.position,
                &to_sql_count(limit as u64)?,
                &i32::from(shard.count()),
                &i32::from(shard.index()),
            ],
        )
        .await?;
    rows.iter().map(decode_event).collect()
}

/// Every event of the given streams at or before `upto` in the global order, by stream and
/// version. A reader that has consumed the log up to `upto` (with the never-skip rule of
/// [`read_all_after`]) has seen exactly these events of those streams: what a projector
/// needs to derive a stream's model again from scratch.
pub async fn read_streams_upto(
    client: &impl deadpool_postgres::GenericClient,
    streams: &[StreamKey],
    upto: GlobalCursor,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let clinics: Vec<uuid::Uuid> = streams.iter().map(|s| s.clinic_id).collect();
    let ids: Vec<&str> = streams.iter().map(|s| s.stream_id.as_str()).collect();
    let statement = client
        .prepare_cached(&format!(
            "SELECT h.* FROM unnest($1::uuid[], $2::text[]) AS k(clinic_id, stream_id) \
             CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events e \
                                 WHERE e.clinic_id = k.clinic_id AND e.stream_id = k.stream_id \
                                   AND (e.xid, e.position) <= ($3::text::xid8, $4) \
                                 OFFSET 0) h \
             ORDER BY h.clinic_id, h.stream_id, h.version"
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[&clinics, &ids, &upto.xid.to_string(), &upto.position],
        )
        .await?;
    rows.iter().map(decode_event).collect()
}

/// The head of the log a never-skip reader reaches in this transaction's snapshot: the
/// last event, in global order, of the transactions older than every one still running
/// ([`read_all_after`]'s rule). `None` for an empty log. Run in a REPEATABLE READ
/// transaction with [`read_log_by_stream`], so both see the same log.
pub async fn log_head(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Option<GlobalCursor>, StoreError> {
    let row = client
        .query_opt(
            "SELECT xid::text::bigint, position FROM events \
             WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid DESC, position DESC LIMIT 1",
            &[],
        )
        .await?;
    row.map(|row| {
        Ok(GlobalCursor {
            xid: xid_at(&row, 0)?,
            position: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Every event up to [`log_head`] of the streams whose id starts with `prefix`, ordered by
/// clinic, stream and version, streamed as PostgreSQL sends them: a stream's events arrive
/// together, so a reader can fold one stream at a time without holding the log. Run in
/// the same REPEATABLE READ transaction as [`log_head`] (a read-only one assigns no
/// transaction id, so it holds no other reader back).
pub async fn read_log_by_stream(
    client: &impl deadpool_postgres::GenericClient,
    prefix: &str,
) -> Result<impl futures::Stream<Item = Result<RecordedEvent, StoreError>>, StoreError> {
    use futures::StreamExt as _;
    // In key order from the primary key: sorting the whole log would spill to disk.
    client.batch_execute("SET LOCAL enable_sort = off").await?;
    let rows = client
        .query_raw(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events \
                 WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) AND starts_with(stream_id, $1) \
                 ORDER BY clinic_id, stream_id, version"
            ),
            [prefix],
        )
        .await?;
    Ok(rows.map(|row| decode_event(&row?)))
}

/// The cursor of the event at global `position`, if there is one, and whether it is
/// final: every transaction up to its own has ended, so the log up to it can no longer
/// change. Only the cursor is learnt (through the owner's `spineledger_event_cursor`),
/// not the event, so any clinic's position can be resolved.
pub async fn event_cursor(
    client: &impl deadpool_postgres::GenericClient,
    position: i64,
) -> Result<Option<(GlobalCursor, bool)>, StoreError> {
    let statement = client
        .prepare_cached("SELECT xid, final FROM spineledger_event_cursor($1)")
        .await?;
    let row = client.query_opt(&statement, &[&position]).await?;
    row.map(|row| {
        Ok((
            GlobalCursor {
                xid: xid_at(&row, 0)?,
                position,
            },
            row.try_get(1)?,
        ))
    })
    .transpose()
}

/// A transaction id read as `xid::text::bigint` in column `index`.
fn xid_at(row: &Row, index: usize) -> Result<u64, StoreError> {
    let xid: i64 = row.try_get(index)?;
    u64::try_from(xid).map_err(|_| StoreError::Malformed("negative xid".into()))
}

/// The cursor of `clinic`'s last final event, in the global order, among those recorded
/// at or before `at`: where a replay "as of a time" stops. `None` when there is none.
pub async fn last_recorded_cursor(
    client: &impl deadpool_postgres::GenericClient,
    clinic: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Option<GlobalCursor>, StoreError> {
    let statement = client
        .prepare_cached(
            "SELECT xid::text::bigint, position FROM events \
             WHERE clinic_id = $1 AND recorded_at <= $2 \
               AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY xid DESC, position DESC LIMIT 1",
        )
        .await?;
    let row = client.query_opt(&statement, &[&clinic, &at]).await?;
    row.map(|row| {
        Ok(GlobalCursor {
            xid: xid_at(&row, 0)?,
            position: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Every final event of `clinic`'s streams whose id starts with `prefix`, up to `upto`
/// in the global order (inclusive),
/// ordered by stream and version and streamed as PostgreSQL sends them (a stream's events
/// arrive together). Run in a REPEATABLE READ transaction whose clinic context admits
/// the clinic.
pub async fn read_clinic_log_upto(
    client: &impl deadpool_postgres::GenericClient,
    clinic: uuid::Uuid,
    prefix: &str,
    upto: GlobalCursor,
) -> Result<impl futures::Stream<Item = Result<RecordedEvent, StoreError>>, StoreError> {
    use futures::StreamExt as _;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE clinic_id = $1 AND starts_with(stream_id, $2) \
               AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
               AND (xid, position) <= ($3::text::xid8, $4) \
             ORDER BY stream_id, version"
        ))
        .await?;
    let xid = upto.xid.to_string();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&clinic, &prefix, &xid, &upto.position];
    let rows = client.query_raw(&statement, params).await?;
    Ok(rows.map(|row| decode_event(&row?)))
}

/// For a shard with nothing to read after `cursor`: the last final event of the whole log
/// (any shard), provided no event of this shard lies between `cursor` and it. A reader of
/// the shard may move its cursor there without missing anything, so an idle shard does
/// not rescan the same stretch of the log on every poll. One statement, one snapshot.
pub async fn idle_shard_horizon(
    client: &impl deadpool_postgres::GenericClient,
    cursor: GlobalCursor,
    shard: ClinicShard,
) -> Result<Option<GlobalCursor>, StoreError> {
    idle_horizon(client, "events", cursor, shard).await
}

/// [`idle_shard_horizon`] of the access log (read in commit order by the integrator).
pub async fn idle_access_horizon(
    client: &impl deadpool_postgres::GenericClient,
    cursor: GlobalCursor,
    shard: ClinicShard,
) -> Result<Option<GlobalCursor>, StoreError> {
    idle_horizon(client, "access_log", cursor, shard).await
}

/// The horizon of `table`, a log with `xid`, `position` and `clinic_id` columns. The check
/// for the shard's records is an ordered, limited scan rather than `NOT EXISTS`: the
/// planner may answer an anti-join with a scan of the whole log.
async fn idle_horizon(
    client: &impl deadpool_postgres::GenericClient,
    table: &'static str,
    cursor: GlobalCursor,
    shard: ClinicShard,
) -> Result<Option<GlobalCursor>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT h.xid::text::bigint, h.position FROM ( \
                 SELECT xid, position FROM {table} \
                 WHERE (xid, position) > ($1::text::xid8, $2) \
                   AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY xid DESC, position DESC LIMIT 1 \
             ) h \
             WHERE (SELECT count(*) FROM ( \
                 SELECT 1 FROM {table} e \
                 WHERE (e.xid, e.position) > ($1::text::xid8, $2) \
                   AND (e.xid, e.position) <= (h.xid, h.position) \
                   AND get_byte(uuid_send(e.clinic_id), 15) % $3 = $4 \
                 ORDER BY e.xid, e.position LIMIT 1) t) = 0"
        ))
        .await?;
    let row = client
        .query_opt(
            &statement,
            &[
                &cursor.xid.to_string(),
                &cursor.position,
                &i32::from(shard.count()),
                &i32::from(shard.index()),
            ],
        )
        .await?;
    row.map(|row| decode_cursor(row.try_get(0)?, row.try_get(1)?))
        .transpose()
}

/// Appends inside a transaction the caller owns and commits, setting the transaction's
/// clinic context to the stream's clinic first. This is the building block
/// of [`EventStore::append`] and of callers that must do more in the same transaction
/// (group commit, tests that hold a transaction open).
///
/// A unique violation ([`StoreError::is_unique_violation`]) leaves the transaction
/// aborted; the caller rolls back and retries.
pub async fn append_in(
    transaction: &Transaction<'_>,
    stream: &StreamKey,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendOutcome, StoreError> {
    validate_batch(events)?;
    // The clinic context rides with the lock: no extra round trip.
    let head = scoped(
        transaction,
        &ClinicScope::one(stream.clinic_id),
        lock_stream(transaction, stream),
    )
    .await?;
    // A retry is recognised before the version check: the original append moved the
    // version on, and the retry must still get the original result.
    if let Some(replayed) = find_retry(transaction, stream, &request_keys(events)).await? {
        return Ok(replayed);
    }
    expected.check(head.version)?;
    insert_events(transaction, stream, &head, events).await
}

/// The ids and fingerprints that identify a request, for recognising its retries.
pub fn request_keys(events: &[NewEvent]) -> Vec<(Uuid, Fingerprint)> {
    events
        .iter()
        .map(|event| (event.event_id, event.fingerprint))
        .collect()
}

impl EventStore {
    /// Decides and appends under the stream's lock: lock the stream, recognise a retry of
    /// `request` (returning the original outcome without calling `decide`), check
    /// `expected`, read the stream, let `decide` turn its history into events (or refuse
    /// with `E`), insert them. Concurrent deciders of one stream queue on the lock
    /// instead of racing, so none of them loses a version race.
    ///
    /// Concurrent calls share transactions (group commit, [`crate::GroupCommit`]); each
    /// gets its own outcome, and an `Ok` outcome has committed. `decide` runs on one of
    /// the store's writer tasks, hence `Send + 'static`.
    ///
    /// The outer error is the store's; the inner one is `decide`'s refusal (nothing is
    /// written then).
    ///
    /// Its span, `store.append`, is the request's part of the append: queueing for, and
    /// waiting out, the group commit that carries it (the commit itself is the writer's
    /// `store.group_commit`, which may carry other requests' commands too).
    #[tracing::instrument(name = "store.append", skip_all, fields(stream_clinic = %stream.clinic_id))]
    pub async fn append_decided<E: Send + 'static>(
        &self,
        stream: &StreamKey,
        expected: ExpectedVersion,
        request: &[(Uuid, Fingerprint)],
        mut decide: impl FnMut(&[RecordedEvent]) -> Result<Vec<NewEvent>, E> + Send + 'static,
    ) -> Result<Result<AppendOutcome, E>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let committer = self.committer.get_or_init(|| {
            Committer::start(self.pool.clone(), self.group, Arc::clone(&self.appended))
        });
        committer
            .submit(Command {
                stream: stream.clone(),
                expected,
                request: request.to_vec(),
                decide: std::sync::Mutex::new(Box::new(move |history| {
                    decide(history).map_err(|refusal| Box::new(refusal) as Refusal)
                })),
                panicked: false,
                reply,
            })
            .await?;
        let answer = answer.await.map_err(|_| {
            StoreError::Configuration("a group commit writer stopped before answering".into())
        })?;
        Ok(match answer? {
            Ok(outcome) => Ok(outcome),
            Err(refusal) => Err(*refusal.downcast::<E>().map_err(|_| {
                StoreError::Malformed("a refusal of another type than its decision's".into())
            })?),
        })
    }
}

/// A locked stream as the appending transaction found it.
#[derive(Clone, Copy)]
pub(crate) struct StreamHead {
    /// Its version (0: new).
    pub(crate) version: u64,
    /// The hash of its last event ([`EventHash::GENESIS`] for a new stream, or one whose
    /// events predate the chain).
    pub(crate) hash: EventHash,
    /// The transaction's start: every event it inserts is recorded at this time.
    pub(crate) recorded_at: DateTime<Utc>,
}

impl StreamHead {
    /// A row of the group commit's lock: clinic, stream, version, head hash.
    pub(crate) fn of_locked(row: &Row, recorded_at: DateTime<Utc>) -> Result<Self, StoreError> {
        Ok(Self {
            version: to_version(row.try_get(2)?)?,
            hash: decode_hash(row.try_get(3)?)?.unwrap_or(EventHash::GENESIS),
            recorded_at,
        })
    }

    fn of(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            version: to_version(row.try_get(0)?)?,
            hash: decode_hash(row.try_get(1)?)?.unwrap_or(EventHash::GENESIS),
            recorded_at: row.try_get(2)?,
        })
    }
}

/// Locks the stream row (creating it at version 0 if new): appends to one stream are
/// serialised from here to commit, and the version read is the latest committed one.
async fn lock_stream(
    transaction: &Transaction<'_>,
    stream: &StreamKey,
) -> Result<StreamHead, StoreError> {
    let lock = transaction.prepare_cached(LOCK_STREAM).await?;
    let row = transaction
        .query_one(&lock, &[&stream.clinic_id, &stream.stream_id])
        .await?;
    StreamHead::of(&row)
}

/// Inserts `events` after the stream's head, each hashed onto the one before it, and
/// moves the stream's version and head hash on.
async fn insert_events(
    transaction: &Transaction<'_>,
    stream: &StreamKey,
    head: &StreamHead,
    events: &[NewEvent],
) -> Result<AppendOutcome, StoreError> {
    let mut rows = EventRows::default();
    let (version, hash) = rows.push(stream, head, events)?;
    let insert = EventRows::prepare(transaction).await?;
    let bump = transaction
        .prepare_cached(
            "UPDATE streams SET version = $3, head_hash = $4 \
             WHERE clinic_id = $1 AND stream_id = $2",
        )
        .await?;
    let new_version = to_sql_count(version)?;
    let head_hash = hash.0.as_slice();
    let bump_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
        &stream.clinic_id,
        &stream.stream_id,
        &new_version,
        &head_hash,
    ];
    // Pipelined, in order: if the insert fails (a unique violation the caller retries),
    // its error is the one reported — it arrives before the bump's "transaction aborted".
    let (appended, _bumped) = futures::try_join!(rows.insert(transaction, &insert), async {
        Ok(transaction.execute(&bump, &bump_params).await?)
    },)?;
    tracing::debug!(events = appended.len(), version, "appended");
    Ok(AppendOutcome {
        events: appended.iter().map(AppendedEvent::from).collect(),
        replayed: false,
    })
}

/// The rows of one multi-row insert into `events`, column by column, possibly of several
/// streams (group commit): each stream's events hashed onto its head in turn.
#[derive(Default)]
pub(crate) struct EventRows {
    clinic_ids: Vec<Uuid>,
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    event_ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    fingerprints: Vec<Vec<u8>>,
    occurred: Vec<Option<DateTime<Utc>>>,
    previous_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl EventRows {
    /// True when no event has been pushed.
    pub(crate) fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }

    /// Adds `events` after `head` of `stream`; returns the stream's new version and head
    /// hash. `events` must have passed [`validate_batch`].
    pub(crate) fn push(
        &mut self,
        stream: &StreamKey,
        head: &StreamHead,
        events: &[NewEvent],
    ) -> Result<(u64, EventHash), StoreError> {
        // Everything that can fail is checked before the first row is pushed: a refused
        // batch leaves the rows as they were.
        to_sql_count(head.version + events.len() as u64)?;
        // The metadata as it will be stored: the hash covers exactly this value.
        let metadata = events
            .iter()
            .map(|event| serde_json::to_value(&event.metadata))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                StoreError::InvalidBatch(if error.is_data() {
                    "metadata that is not JSON"
                } else {
                    "metadata that cannot be serialised"
                })
            })?;
        let mut previous = head.hash;
        let mut version = head.version;
        for (event, metadata) in events.iter().zip(metadata) {
            version += 1;
            // Stored with microsecond precision, and hashed as stored: floored here once,
            // so the driver never rounds what the hash covers.
            let occurred_at = event.occurred_at.map(whole_microseconds);
            let hash = Hashed {
                clinic_id: stream.clinic_id,
                stream_id: &stream.stream_id,
                version,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: &metadata,
                occurred_at,
                recorded_at: head.recorded_at,
                previous,
            }
            .hash();
            self.clinic_ids.push(stream.clinic_id);
            self.stream_ids.push(stream.stream_id.clone());
            self.versions.push(to_sql_count(version)?);
            self.event_ids.push(event.event_id);
            self.types.push(event.event_type.clone());
            self.schema_versions.push(event.schema_version);
            self.payloads.push(event.payload.clone());
            self.metadata.push(metadata);
            self.fingerprints
                .push(event.fingerprint.as_bytes().to_vec());
            self.occurred.push(occurred_at);
            self.previous_hashes.push(previous.0.to_vec());
            self.hashes.push(hash.0.to_vec());
            previous = hash;
        }
        Ok((version, previous))
    }

    /// The statement of [`EventRows::insert`], prepared (once per connection) ahead of a
    /// pipeline, so that the insert goes out in the order it is polled.
    pub(crate) async fn prepare(
        client: &impl deadpool_postgres::GenericClient,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        Ok(client
            .prepare_cached(&format!(
                "INSERT INTO events (clinic_id, stream_id, version, event_id, event_type, \
                     schema_version, payload, metadata, fingerprint, occurred_at, prev_hash, \
                     hash) \
                 SELECT e.clinic_id, e.stream_id, e.version, e.event_id, e.event_type, \
                     e.schema_version, e.payload, e.metadata, e.fingerprint, e.occurred_at, \
                     e.prev_hash, e.hash \
                 FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
                     $6::int[], $7::jsonb[], $8::jsonb[], $9::bytea[], $10::timestamptz[], \
                     $11::bytea[], $12::bytea[]) \
                     WITH ORDINALITY \
                     AS e(clinic_id, stream_id, version, event_id, event_type, \
                          schema_version, payload, metadata, fingerprint, occurred_at, \
                          prev_hash, hash, ordinal) \
                 ORDER BY e.ordinal \
                 RETURNING {EVENT_COLUMNS}"
            ))
            .await?)
    }

    /// One `INSERT … SELECT FROM UNNEST` of every pushed row (`insert` from
    /// [`EventRows::prepare`]), positions taken in push order; the events as stored (as a
    /// read would return them), in position order.
    pub(crate) async fn insert(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        insert: &tokio_postgres::Statement,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &self.clinic_ids,
            &self.stream_ids,
            &self.versions,
            &self.event_ids,
            &self.types,
            &self.schema_versions,
            &self.payloads,
            &self.metadata,
            &self.fingerprints,
            &self.occurred,
            &self.previous_hashes,
            &self.hashes,
        ];
        let rows = client.query(insert, &params).await?;
        let mut stored = rows
            .iter()
            .map(decode_event)
            .collect::<Result<Vec<_>, StoreError>>()?;
        stored.sort_by_key(|event| event.cursor.position);
        Ok(stored)
    }
}

pub(crate) fn validate_batch(events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidBatch(
            "an append needs at least one event",
        ));
    }
    let mut seen = HashSet::with_capacity(events.len());
    if !events.iter().all(|event| seen.insert(event.event_id)) {
        return Err(StoreError::InvalidBatch(
            "event ids repeat within the batch",
        ));
    }
    if events.iter().any(|event| event.event_type.is_empty()) {
        return Err(StoreError::InvalidBatch("an event needs a type"));
    }
    Ok(())
}

/// If any event id of the batch is already stored: the original outcome when the batch
/// is an exact retry (every id stored, same stream, same fingerprints), otherwise an
/// idempotency conflict naming the first id that does not match.
async fn find_retry(
    transaction: &Transaction<'_>,
    stream: &StreamKey,
    request: &[(Uuid, Fingerprint)],
) -> Result<Option<AppendOutcome>, StoreError> {
    let statement = transaction.prepare_cached(FIND_RETRY).await?;
    let ids: Vec<Uuid> = request.iter().map(|(event_id, _)| *event_id).collect();
    let rows = transaction
        .query(&statement, &[&stream.clinic_id, &ids])
        .await?;
    classify_retry(stream, request, &rows.iter().collect::<Vec<_>>())
}

/// What stored rows under a request's event ids mean: nothing (a new request), the
/// original outcome (an exact retry), or a conflict (an id reused for something else).
pub(crate) fn classify_retry(
    stream: &StreamKey,
    request: &[(Uuid, Fingerprint)],
    rows: &[&Row],
) -> Result<Option<AppendOutcome>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        let event_id: Uuid = row.try_get(0)?;
        let stream_id: String = row.try_get(1)?;
        let fingerprint = Fingerprint::from_slice(row.try_get(5)?)?;
        let requested = request.iter().find(|(id, _)| *id == event_id);
        let matches = requested.is_some_and(|(_, requested)| *requested == fingerprint)
            && stream_id == stream.stream_id;
        if !matches {
            return Err(StoreError::IdempotencyConflict { event_id });
        }
        stored.push(AppendedEvent {
            event_id,
            version: to_version(row.try_get(2)?)?,
            cursor: decode_cursor(row.try_get(3)?, row.try_get(4)?)?,
            hash: decode_hash(row.try_get(6)?)?,
        });
    }
    if stored.len() != request.len() {
        // Part of the batch was appended before under these ids: not the same request.
        let missing = request
            .iter()
            .find(|(id, _)| stored.iter().all(|done| done.event_id != *id))
            .map_or(Uuid::nil(), |(id, _)| *id);
        return Err(StoreError::IdempotencyConflict { event_id: missing });
    }
    stored.sort_by_key(|event| event.version);
    Ok(Some(AppendOutcome {
        events: stored,
        replayed: true,
    }))
}

pub(crate) fn decode_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    let stored_metadata: serde_json::Value = row.try_get(7)?;
    let metadata: EventMetadata = serde_json::from_value(stored_metadata.clone())
        // Not serde's message: it quotes the offending value, and errors reach the logs.
        .map_err(|error| {
            StoreError::Malformed(format!(
                "event metadata: {:?} error at line {} column {}",
                error.classify(),
                error.line(),
                error.column()
            ))
        })?;
    Ok(RecordedEvent {
        clinic_id: row.try_get(0)?,
        stream_id: row.try_get(1)?,
        version: to_version(row.try_get(2)?)?,
        event_id: row.try_get(3)?,
        event_type: row.try_get(4)?,
        schema_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata,
        stored_metadata,
        occurred_at: row.try_get(8)?,
        recorded_at: row.try_get(9)?,
        cursor: decode_cursor(row.try_get(10)?, row.try_get(11)?)?,
        fingerprint: Fingerprint::from_slice(row.try_get(12)?)?,
        previous_hash: decode_hash(row.try_get(13)?)?,
        hash: decode_hash(row.try_get(14)?)?,
    })
}

/// `at` without its sub-microsecond part (PostgreSQL keeps microseconds).
fn whole_microseconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

fn decode_hash(bytes: Option<&[u8]>) -> Result<Option<EventHash>, StoreError> {
    EventHash::from_optional(bytes).map_err(|error| StoreError::Malformed(error.to_string()))
}

fn decode_cursor(xid: i64, position: i64) -> Result<GlobalCursor, StoreError> {
    let xid = u64::try_from(xid).map_err(|_| StoreError::Malformed(format!("xid {xid}")))?;
    Ok(GlobalCursor { xid, position })
}

fn to_version(version: i64) -> Result<u64, StoreError> {
    u64::try_from(version).map_err(|_| StoreError::Malformed(format!("version {version}")))
}

pub(crate) fn to_sql_count(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidBatch("number out of range"))
}
