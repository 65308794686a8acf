//! The projector runtime.
//!
//! Work is split into leases, one per (projection, shard of clinics). A worker process
//! (inside `serve`, or `spineledger projector`) heartbeats, takes its fair share of the
//! free or expired leases, renews them, and runs one task per lease. A task applies a
//! batch of events to its read model and advances its checkpoint in one transaction; the
//! checkpoint update is a compare-and-set on the old checkpoint and requires the lease to
//! be held still, so a worker that lost its lease (paused, partitioned) cannot commit, and
//! a crash at any point leaves model and checkpoint consistent: nothing missed, nothing
//! applied twice. The worker's read-model tasks take their events from one shared read
//! of the log ([`crate::tail`]), which wakes on LISTEN/NOTIFY (a hint, coalesced) and
//! polls as a fallback; the integrator's tasks probe and read for themselves, woken the
//! same way.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use futures::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use spineledger_store::{
    ClinicShard, EventStore, GlobalCursor, RecordedEvent, ShardHint, idle_shard_horizon,
    read_all_after,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::tail::{self, Reading, Slice, Tail};
use crate::{Projection, ProjectionError, Tables};

/// Where a batch can be made to fail in tests (fault injection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The batch's events were read.
    AfterRead,
    /// They were applied to the read model, uncommitted.
    AfterApply,
    /// The checkpoint moved, uncommitted.
    BeforeCommit,
    /// The batch committed.
    AfterCommit,
}

/// Decides whether a batch fails at a stage. Production uses [`NoFaults`].
pub trait FaultInjector: Send + Sync + Debug {
    /// An error to fail the batch with at `stage`, or Ok to go on.
    ///
    /// # Errors
    /// The injected fault.
    fn check(&self, stage: Stage) -> Result<(), ProjectionError>;
}

/// Never fails a batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFaults;

impl FaultInjector for NoFaults {
    fn check(&self, _stage: Stage) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// How the projector runs.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Shards of clinics per projection (1-255). Changing it needs a rebuild.
    pub shards: u8,
    /// Events per batch (one transaction).
    pub batch_size: usize,
    /// Poll for new events this often when no notification arrives.
    pub poll_interval: Duration,
    /// A lease not renewed for this long may be taken by another worker.
    pub lease_ttl: Duration,
    /// After a wake-up, wait this long so that a burst of appends becomes one batch.
    pub coalesce: Duration,
    /// The projections this process runs.
    pub projections: Vec<Projection>,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(5),
            // 50 ms, not 10: at one client it halved the projectors' CPU per append while
            // projection lag stayed far under its target (BENCHMARKS.md, group commit).
            coalesce: Duration::from_millis(50),
            projections: Projection::RUNNING.to_vec(),
        }
    }
}

/// An idle shard moves its checkpoint past other shards' events once they span this many
/// positions; until then a restart (or, for the integrator, a poll and its `has_work`
/// probe) rescans at most this stretch.
/// 100, not more: with every projection probing every idle shard after each append, a
/// longer stretch cost more in rescans than the extra checkpoint commits it saved
/// (BENCHMARKS.md, 2026-11-28, the signed log).
pub(crate) const IDLE_ADVANCE_MIN_GAP: i64 = 100;

/// Whether the integrator has work on a shard (see [`Projector::has_work`]): an event or
/// an access-log entry of the shard after its cursors, or `$4` records of either log of
/// any shard.
///
/// Every scan compares the cursor against scalar subqueries (parameters to the planner,
/// so the comparison is an index condition) and is ordered by the log's index: the
/// stretch after a caught-up checkpoint is short, but the planner cannot know it, and
/// without the order it took a sequential scan of the whole log for cheap (10 ms a probe
/// on 8,000 events; most of a core for idle shards on a large log). No `EXISTS`: the
/// planner drops an `EXISTS` subquery's order and limit, and scanned again.
const HAS_WORK: &str = "\
    WITH c AS (SELECT xid::text::xid8 AS xid, position FROM projection_checkpoints \
               WHERE projection = $1 AND shard = $2), \
         a AS (SELECT xid::text::xid8 AS xid, position FROM clinic_log_access_cursors \
               WHERE shard = $2) \
    SELECT (SELECT count(*) FROM (SELECT 1 FROM events e \
                   WHERE (e.xid, e.position) > ((SELECT xid FROM c), (SELECT position FROM c)) \
                     AND e.xid < pg_snapshot_xmin(pg_current_snapshot()) \
                     AND get_byte(uuid_send(e.clinic_id), 15) % $3 = $2 \
                   ORDER BY e.xid, e.position LIMIT 1) t) > 0 \
        OR (SELECT count(*) FROM (SELECT 1 FROM access_log l \
                   WHERE (l.xid, l.position) > ((SELECT xid FROM a), (SELECT position FROM a)) \
                     AND l.xid < pg_snapshot_xmin(pg_current_snapshot()) \
                     AND get_byte(uuid_send(l.clinic_id), 15) % $3 = $2 \
                   ORDER BY l.xid, l.position LIMIT 1) t) > 0 \
        OR (SELECT count(*) FROM (SELECT 1 FROM events e \
                                  WHERE (e.xid, e.position) > ((SELECT xid FROM c), (SELECT position FROM c)) \
                                    AND e.xid < pg_snapshot_xmin(pg_current_snapshot()) \
                                  ORDER BY e.xid, e.position LIMIT $4) t) >= $4 \
        OR (SELECT count(*) FROM (SELECT 1 FROM access_log l \
                                  WHERE (l.xid, l.position) > ((SELECT xid FROM a), (SELECT position FROM a)) \
                                    AND l.xid < pg_snapshot_xmin(pg_current_snapshot()) \
                                  ORDER BY l.xid, l.position LIMIT $4) t) >= $4 \
    FROM c, a";

/// Batches whose lag reaches this are logged at info level (others at debug).
const LAG_WORTH_LOGGING: Duration = Duration::from_secs(1);

/// The shard count of a default installation.
pub const DEFAULT_SHARDS: u8 = 4;

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchOutcome {
    /// Events read (and applied).
    pub events: usize,
    /// The checkpoint after the batch.
    pub cursor: GlobalCursor,
    /// Commit time of the batch minus recording time of its last event.
    pub lag: Duration,
}

/// One worker: a process-unique owner id and the means to run leases.
#[derive(Debug, Clone)]
pub struct Projector {
    pub(crate) pool: Pool,
    listen_config: tokio_postgres::Config,
    pub(crate) config: ProjectorConfig,
    owner: Uuid,
    pub(crate) faults: Arc<dyn FaultInjector>,
}

impl Projector {
    /// `pool` and `listen_config` log in as the projector role
    /// (`spineledger_store::PROJECTOR_ROLE`), which sees every clinic's events and writes
    /// the read models; `listen_config` opens the worker's own connections (LISTEN, and
    /// lease renewal).
    pub fn new(pool: Pool, listen_config: tokio_postgres::Config, config: ProjectorConfig) -> Self {
        Self {
            pool,
            listen_config,
            config,
            owner: Uuid::new_v4(),
            faults: Arc::new(NoFaults),
        }
    }

    /// Injects faults (tests).
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn FaultInjector>) -> Self {
        self.faults = faults;
        self
    }

    /// This worker's id in leases.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// Runs until `shutdown` completes, then stops its tasks and releases its leases.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ProjectionError> {
        ensure_checkpoints(&self.pool, &self.config).await?;
        let (wake, woken) = watch::channel(Wakes::default());
        // Dropping `run` (an aborted worker) must stop every task it started.
        let mut tasks = AbortOnDrop(HashMap::new());
        // The listener and the worker's one read of the log (for the read models; the
        // integrator also reads the access log, and reads for itself).
        let tail = Arc::new(Tail::default());
        let mut background = vec![tokio::spawn(listen(self.listen_config.clone(), wake))];
        if self
            .config
            .projections
            .iter()
            .any(|projection| projection.follows_tail())
        {
            background.push(tokio::spawn(tail::follow(
                Arc::clone(&tail),
                self.pool.clone(),
                woken.clone(),
                self.config.poll_interval,
                self.config.coalesce,
            )));
        }
        let _background = AbortOnDrop(background.into_iter().enumerate().collect());
        let mut ticker = tokio::time::interval(self.config.lease_ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed_at = tokio::time::Instant::now();
        let mut lease_connection: Option<tokio_postgres::Client> = None;
        tokio::pin!(shutdown);
        tracing::info!(owner = %self.owner, "projector started");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            // Leases are renewed on a connection of their own: busy batches holding the
            // pool must not starve the renewal and let leases expire.
            if lease_connection
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                lease_connection = self.lease_connection().await.ok();
            }
            let renewal = match &lease_connection {
                Some(client) => self.balance_leases_on(client).await,
                None => self.balance_leases().await,
            };
            let held = match renewal {
                Ok(held) => {
                    renewed_at = tokio::time::Instant::now();
                    held
                }
                Err(error) => {
                    tracing::warn!(%error, sqlstate = ?error.sqlstate(), "lease renewal failed");
                    if renewed_at.elapsed() >= self.config.lease_ttl {
                        // Our leases have expired by now: stop working on them. (Their
                        // commits would fail anyway; this stops the useless reads.)
                        tasks.abort_all();
                    }
                    continue;
                }
            };
            tasks.0.retain(|key, task| {
                let keep = held.contains(key) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            for key in held {
                tasks.0.entry(key).or_insert_with(|| {
                    tracing::info!(projection = key.0.name(), shard = key.1, "lease taken");
                    if key.0.follows_tail() {
                        tokio::spawn(self.clone().follow_tail(key.0, key.1, Arc::clone(&tail)))
                    } else {
                        tokio::spawn(self.clone().project(key.0, key.1, woken.clone()))
                    }
                });
            }
        }
        tasks.abort_all();
        self.release_all().await?;
        tracing::info!(owner = %self.owner, "projector stopped");
        Ok(())
    }

    /// The task of one lease of a read model: takes its shard's events from the worker's
    /// read of the log ([`Tail`]), reading the log itself only while it stands before the
    /// window. It opens a transaction only to apply events, or to move its checkpoint past
    /// a long stretch of other shards' events. Errors are logged and retried after a
    /// pause, from the checkpoint as stored; an event is never skipped.
    async fn follow_tail(self, projection: Projection, shard: u8, tail: Arc<Tail>) {
        let reading = Reading::new(Arc::clone(&tail), (projection, shard));
        let mut progress = tail.subscribe();
        let mut position: Option<TaskPosition> = None;
        loop {
            // Marked seen before looking: a read that lands meanwhile wakes the wait below.
            progress.borrow_and_update();
            match self
                .step(projection, shard, &tail, &reading, &mut position)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        changed = progress.changed() => if changed.is_err() {
                            return;
                        },
                        () = tokio::time::sleep(self.config.poll_interval) => {}
                    }
                }
                Err(error) => {
                    position = None;
                    reading.forget();
                    if error.is_transient() {
                        tracing::debug!(projection = projection.name(), shard, %error, sqlstate = ?error.sqlstate(), "batch retried");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } else {
                        tracing::error!(projection = projection.name(), shard, %error, sqlstate = ?error.sqlstate(), "projection batch failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// One step of [`Projector::follow_tail`]: `true` when more may be waiting.
    async fn step(
        &self,
        projection: Projection,
        shard: u8,
        tail: &Tail,
        reading: &Reading,
        position: &mut Option<TaskPosition>,
    ) -> Result<bool, ProjectionError> {
        let here = match *position {
            Some(here) => here,
            None => {
                let client = self.pool.get().await?;
                let stored = checkpoint(&client, projection, shard).await?;
                TaskPosition {
                    checkpoint: stored,
                    read: stored,
                }
            }
        };
        let batch_size = self.config.batch_size;
        match tail.slice(here.read, shard, self.config.shards, batch_size) {
            Slice::Behind { from } => {
                // Pinned at the window's start while it reads the log itself, so the window
                // waits for it there (up to its cap) instead of running ahead.
                match from {
                    Some(from) => reading.report(from),
                    None => reading.forget(),
                }
                *position = None;
                let outcome = self.run_batch(projection, shard).await?;
                let full = outcome.events >= batch_size;
                // A read of the log that was not full took every event of the shard its
                // snapshot saw, and that snapshot is younger than the window's start.
                let read = match from {
                    Some(from) if !full => outcome.cursor.max(from),
                    _ => outcome.cursor,
                };
                *position = Some(TaskPosition {
                    checkpoint: outcome.cursor,
                    read,
                });
                Ok(full || from.is_some())
            }
            Slice::Ready { events, end } => {
                let mut here = here;
                if events.is_empty() {
                    here.read = here.read.max(end);
                    // Only worth a commit once the stretch is long (see IDLE_ADVANCE_MIN_GAP).
                    if end > here.checkpoint
                        && end.position.saturating_sub(here.checkpoint.position)
                            >= IDLE_ADVANCE_MIN_GAP
                    {
                        self.commit_from_window(projection, shard, here.checkpoint, &[], end)
                            .await?;
                        here.checkpoint = end;
                    }
                    *position = Some(here);
                    reading.report(here.read);
                    return Ok(false);
                }
                let full = events.len() >= batch_size;
                self.commit_from_window(projection, shard, here.checkpoint, &events, end)
                    .await?;
                *position = Some(TaskPosition {
                    checkpoint: end,
                    read: end,
                });
                reading.report(end);
                Ok(full)
            }
        }
    }

    /// Applies `events`, the shard's from the window, and moves the checkpoint from `start`
    /// to `end`, in one transaction. The stored checkpoint must still be `start`: if
    /// something else moved it (a rebuild's swap), nothing is applied
    /// ([`ProjectionError::LostLease`]) and the task starts again from what is stored.
    async fn commit_from_window(
        &self,
        projection: Projection,
        shard: u8,
        start: GlobalCursor,
        events: &[RecordedEvent],
        end: GlobalCursor,
    ) -> Result<BatchOutcome, ProjectionError> {
        let mut client = self.pool.get().await?;
        let transaction = self.batch_transaction(&mut client).await?;
        let locked = locked_checkpoint(&transaction, projection, shard, self.config.shards).await?;
        if locked != start {
            return Err(ProjectionError::LostLease);
        }
        self.finish_batch(transaction, projection, shard, start, events, end)
            .await
    }

    /// A batch's transaction: a stuck lock must not outlive the lease it was taken under.
    pub(crate) async fn batch_transaction<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
    ) -> Result<deadpool_postgres::Transaction<'a>, ProjectionError> {
        let transaction = client.transaction().await?;
        let ttl_ms = self.config.lease_ttl.as_millis();
        transaction
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{ttl_ms}ms'; \
                 SET LOCAL idle_in_transaction_session_timeout = '{ttl_ms}ms'"
            ))
            .await?;
        Ok(transaction)
    }

    /// The task of one lease of the integrator: batches until caught up, then waits for a
    /// wake-up or the poll interval. Errors are logged and retried after a pause; an event
    /// is never skipped.
    async fn project(self, projection: Projection, shard: u8, mut woken: watch::Receiver<Wakes>) {
        let mut seen = woken
            .borrow_and_update()
            .of_shard(shard, self.config.shards);
        // Until then any notification wakes this task, not only one naming its shard. A
        // hint names the shards whose appends committed, but a reader sees them only
        // once every older transaction has ended: after its shard was named, the task
        // also takes the next notifications (which may announce the end of that older
        // transaction), for one poll interval.
        let mut any_wake_until: Option<tokio::time::Instant> = None;
        loop {
            // Most wake-ups concern other shards: one statement tells, without a
            // transaction, whether this one has anything to do.
            let batch = match self.has_work(shard).await {
                Ok(false) => Ok(BatchOutcome {
                    events: 0,
                    cursor: GlobalCursor::START,
                    lag: Duration::ZERO,
                }),
                Ok(true) => self.run_batch(projection, shard).await,
                Err(error) => {
                    tracing::debug!(projection = projection.name(), shard, %error, "work probe failed");
                    self.run_batch(projection, shard).await
                }
            };
            match batch {
                // A full batch: more is waiting.
                Ok(outcome) if outcome.events >= self.config.batch_size => continue,
                Ok(_) => {
                    // Until a notification names this shard, or the poll is due.
                    let poll = tokio::time::Instant::now() + self.config.poll_interval;
                    loop {
                        tokio::select! {
                            changed = woken.changed() => {
                                if changed.is_err() {
                                    // No listener any more: poll.
                                    tokio::time::sleep_until(poll).await;
                                    break;
                                }
                                let now = woken.borrow_and_update().of_shard(shard, self.config.shards);
                                let at = tokio::time::Instant::now();
                                if now != seen {
                                    seen = now;
                                    any_wake_until = Some(at + self.config.poll_interval);
                                    break;
                                }
                                if any_wake_until.is_some_and(|until| at < until) {
                                    break;
                                }
                            }
                            () = tokio::time::sleep_until(poll) => break,
                        }
                    }
                    // Let a burst of appends land before reading: one batch instead of
                    // one per append (a few milliseconds of lag for far less work).
                    tokio::time::sleep(self.config.coalesce).await;
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(projection = projection.name(), shard, %error, sqlstate = ?error.sqlstate(), "batch retried");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    tracing::error!(projection = projection.name(), shard, %error, sqlstate = ?error.sqlstate(), "projection batch failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One batch: lock and read the checkpoint, read after it, apply, compare-and-set the
    /// checkpoint, commit. The checkpoint row is locked first, before any read-model row,
    /// the same order a rebuild's swap takes, so the two queue instead of deadlocking.
    pub async fn run_batch(
        &self,
        projection: Projection,
        shard: u8,
    ) -> Result<BatchOutcome, ProjectionError> {
        if projection == Projection::ClinicLog {
            return self.integrate(shard).await;
        }
        let clinic_shard =
            ClinicShard::new(shard, self.config.shards).ok_or(ProjectionError::UnknownShard {
                shard,
                shards: self.config.shards,
            })?;
        let mut client = self.pool.get().await?;
        let transaction = self.batch_transaction(&mut client).await?;
        let start = locked_checkpoint(&transaction, projection, shard, self.config.shards).await?;
        let events =
            read_all_after(&transaction, start, self.config.batch_size, clinic_shard).await?;
        let Some(last) = events.last() else {
            // Nothing for this shard: move past the stretch of other shards' events so the
            // next poll does not scan it again.
            // Only worth a commit once the stretch is long: short rescans cost less than
            // moving the checkpoint after every other shard's append.
            let horizon = idle_shard_horizon(&transaction, start, clinic_shard).await?;
            let Some(horizon) = horizon.filter(|horizon| {
                horizon.position.saturating_sub(start.position) >= IDLE_ADVANCE_MIN_GAP
            }) else {
                transaction.rollback().await?;
                return Ok(BatchOutcome {
                    events: 0,
                    cursor: start,
                    lag: Duration::ZERO,
                });
            };
            self.advance(&transaction, projection, shard, start, horizon)
                .await?;
            transaction.commit().await?;
            return Ok(BatchOutcome {
                events: 0,
                cursor: horizon,
                lag: Duration::ZERO,
            });
        };
        let end = last.cursor;
        self.finish_batch(transaction, projection, shard, start, &events, end)
            .await
    }

    /// The common end of a batch: apply `events`, move the checkpoint from `start` to
    /// `end` (compare-and-set, under the lease), commit, report the lag.
    #[tracing::instrument(
        name = "projector.batch",
        skip_all,
        fields(projection = projection.name(), shard, events = events.len())
    )]
    async fn finish_batch(
        &self,
        transaction: deadpool_postgres::Transaction<'_>,
        projection: Projection,
        shard: u8,
        start: GlobalCursor,
        events: &[RecordedEvent],
        end: GlobalCursor,
    ) -> Result<BatchOutcome, ProjectionError> {
        let started = std::time::Instant::now();
        self.faults.check(Stage::AfterRead)?;
        if !events.is_empty() {
            projection.apply(&transaction, Tables::Live, events).await?;
        }
        self.faults.check(Stage::AfterApply)?;
        self.advance(&transaction, projection, shard, start, end)
            .await?;
        self.faults.check(Stage::BeforeCommit)?;
        transaction.commit().await?;
        let Some(last) = events.last() else {
            self.faults.check(Stage::AfterCommit)?;
            return Ok(BatchOutcome {
                events: 0,
                cursor: end,
                lag: Duration::ZERO,
            });
        };
        let lag = (chrono::Utc::now() - last.recorded_at)
            .to_std()
            .unwrap_or_default();
        record_batch(projection, shard, events.len(), started.elapsed(), lag);
        let lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        if lag >= LAG_WORTH_LOGGING {
            tracing::info!(
                projection = projection.name(),
                shard,
                events = events.len(),
                lag_ms,
                "projected, lagging"
            );
        } else {
            tracing::debug!(
                projection = projection.name(),
                shard,
                events = events.len(),
                lag_ms,
                "projected"
            );
        }
        self.faults.check(Stage::AfterCommit)?;
        Ok(BatchOutcome {
            events: events.len(),
            cursor: end,
            lag,
        })
    }

    /// Whether an integrator batch on `shard` would do anything: records of the shard
    /// after its cursors that the never-skip rule lets it read, or a stretch of other
    /// shards' records long enough to move past. (The read-model tasks need no probe:
    /// they see their shard's events in the worker's shared read.) One autocommit
    /// statement, no locks; a `false` may be stale by the time it arrives, which costs
    /// only the wait until the next wake-up or poll (never a skipped event: the batch
    /// itself decides what to read).
    async fn has_work(&self, shard: u8) -> Result<bool, ProjectionError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(HAS_WORK).await?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &Projection::ClinicLog.name(),
                    &i32::from(shard),
                    &i32::from(self.config.shards),
                    &IDLE_ADVANCE_MIN_GAP,
                ],
            )
            .await?;
        // No checkpoint row (the shards were laid out anew under this worker): let the
        // batch run and report it, rather than idle silently.
        match row {
            Some(row) => Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(true)),
            None => Ok(true),
        }
    }

    /// Compare-and-set of the checkpoint from `start` to `end`, only while this worker's
    /// lease is unexpired and the shard count is the one the checkpoint was made under.
    pub(crate) async fn advance(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        projection: Projection,
        shard: u8,
        start: GlobalCursor,
        end: GlobalCursor,
    ) -> Result<(), ProjectionError> {
        let advanced = transaction
            .execute(
                "UPDATE projection_checkpoints SET xid = $3, position = $4, updated_at = now() \
                 WHERE projection = $1 AND shard = $2 AND xid = $5 AND position = $6 \
                   AND shard_count = $8 \
                   AND EXISTS (SELECT 1 FROM projection_leases l \
                               WHERE l.projection = $1 AND l.shard = $2 AND l.owner = $7 \
                                 AND l.expires_at > clock_timestamp())",
                &[
                    &projection.name(),
                    &i32::from(shard),
                    &to_sql(end.xid),
                    &end.position,
                    &to_sql(start.xid),
                    &start.position,
                    &self.owner,
                    &i32::from(self.config.shards),
                ],
            )
            .await?;
        if advanced == 1 {
            Ok(())
        } else {
            Err(ProjectionError::LostLease)
        }
    }

    /// Heartbeats, renews held leases, releases surplus ones and takes free ones up to a
    /// fair share (all leases / live workers, rounded up). Returns the leases held.
    pub async fn balance_leases(&self) -> Result<BTreeSet<(Projection, u8)>, ProjectionError> {
        let client = self.pool.get().await?;
        self.balance_leases_on(&client).await
    }

    /// [`Projector::balance_leases`] on a given connection.
    async fn balance_leases_on(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<BTreeSet<(Projection, u8)>, ProjectionError> {
        let ttl = self.config.lease_ttl.as_secs_f64();
        client
            .execute(
                "INSERT INTO projector_workers (owner, heartbeat_at) VALUES ($1, now()) \
                 ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
                &[&self.owner],
            )
            .await?;
        client
            .execute(
                "DELETE FROM projector_workers \
                 WHERE heartbeat_at < now() - make_interval(secs => $1::float8 * 10)",
                &[&ttl],
            )
            .await?;
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM projector_workers \
                 WHERE heartbeat_at > now() - make_interval(secs => $1::float8)",
                &[&ttl],
            )
            .await?
            .try_get(0)?;
        let all = self.all_leases();
        let live = usize::try_from(live.max(1)).unwrap_or(1);
        let fair_share = all.len().div_ceil(live);

        let mut held: BTreeSet<(Projection, u8)> = BTreeSet::new();
        for row in client
            .query(
                "UPDATE projection_leases SET expires_at = now() + make_interval(secs => $2::float8) \
                 WHERE owner = $1 AND expires_at > now() RETURNING projection, shard",
                &[&self.owner, &ttl],
            )
            .await?
        {
            if let Some(key) = lease_key(row.try_get(0)?, row.try_get(1)?) {
                held.insert(key);
            }
        }
        while held.len() > fair_share {
            let Some(surplus) = held.pop_last() else {
                break;
            };
            client
                .execute(
                    "DELETE FROM projection_leases WHERE projection = $1 AND shard = $2 AND owner = $3",
                    &[&surplus.0.name(), &i32::from(surplus.1), &self.owner],
                )
                .await?;
            tracing::info!(
                projection = surplus.0.name(),
                shard = surplus.1,
                "lease released to share work"
            );
        }
        for key in all {
            if held.len() >= fair_share {
                break;
            }
            if held.contains(&key) {
                continue;
            }
            let taken = client
                .query_opt(
                    "INSERT INTO projection_leases (projection, shard, owner, expires_at) \
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8)) \
                     ON CONFLICT (projection, shard) DO UPDATE \
                         SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                         WHERE projection_leases.expires_at <= now() \
                            OR projection_leases.owner = EXCLUDED.owner \
                     RETURNING 1",
                    &[&key.0.name(), &i32::from(key.1), &self.owner, &ttl],
                )
                .await?;
            if taken.is_some() {
                held.insert(key);
            }
        }
        Ok(held)
    }

    /// A connection of its own for lease renewal (as the projector role).
    async fn lease_connection(&self) -> Result<tokio_postgres::Client, ProjectionError> {
        Ok(spineledger_store::connect(&self.listen_config).await?)
    }

    /// Gives every lease back (graceful shutdown), so others take over at once.
    pub async fn release_all(&self) -> Result<(), ProjectionError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM projection_leases WHERE owner = $1",
                &[&self.owner],
            )
            .await?;
        client
            .execute(
                "DELETE FROM projector_workers WHERE owner = $1",
                &[&self.owner],
            )
            .await?;
        Ok(())
    }

    fn all_leases(&self) -> Vec<(Projection, u8)> {
        self.config
            .projections
            .iter()
            .flat_map(|projection| (0..self.config.shards).map(move |shard| (*projection, shard)))
            .collect()
    }
}

/// Where a read-model task stands: its stored checkpoint, and how far it has read. Every
/// event of its shard up to `read` has been applied and committed; between `checkpoint`
/// and `read` lie only other shards' events (the checkpoint moves past them lazily).
#[derive(Debug, Clone, Copy)]
struct TaskPosition {
    checkpoint: GlobalCursor,
    read: GlobalCursor,
}

/// Tasks that are aborted when this value is dropped (or on request).
struct AbortOnDrop<K>(HashMap<K, JoinHandle<()>>);

impl<K> AbortOnDrop<K> {
    fn abort_all(&mut self) {
        for (_, task) in self.0.drain() {
            task.abort();
        }
    }
}

impl<K> Drop for AbortOnDrop<K> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

fn lease_key(projection: &str, shard: i32) -> Option<(Projection, u8)> {
    Some((
        Projection::from_name(projection).ok()?,
        u8::try_from(shard).ok()?,
    ))
}

pub(crate) fn to_sql(xid: u64) -> i64 {
    i64::try_from(xid).unwrap_or(i64::MAX)
}

/// Creates the checkpoint rows (at the start of the log) that do not exist yet. Refuses
/// to start when the projection's checkpoints were made under another shard count: every
/// process must partition the same way (a change needs `spineledger rebuild`).
pub async fn ensure_checkpoints(
    pool: &Pool,
    config: &ProjectorConfig,
) -> Result<(), ProjectionError> {
    let client = pool.get().await?;
    for projection in &config.projections {
        if let Some(stored) = stored_shard_count(&client, *projection).await?
            && stored != config.shards
        {
            return Err(ProjectionError::ShardCountMismatch {
                projection: projection.name(),
                stored,
                configured: config.shards,
            });
        }
        for shard in 0..config.shards {
            client
                .execute(
                    "INSERT INTO projection_checkpoints (projection, shard, shard_count) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[
                        &projection.name(),
                        &i32::from(shard),
                        &i32::from(config.shards),
                    ],
                )
                .await?;
        }
        if *projection == Projection::ClinicLog {
            crate::clinic_log::ensure_access_cursors(&client, config.shards).await?;
        }
    }
    Ok(())
}

/// The shard count a projection's checkpoints were made under, if it has any.
pub async fn stored_shard_count(
    client: &impl GenericClient,
    projection: Projection,
) -> Result<Option<u8>, ProjectionError> {
    let row = client
        .query_opt(
            "SELECT max(shard_count) FROM projection_checkpoints WHERE projection = $1 \
             HAVING count(*) > 0",
            &[&projection.name()],
        )
        .await?;
    let count: Option<i32> = match row {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Ok(count.and_then(|n| u8::try_from(n).ok()))
}

/// Locks and reads the checkpoint of one (projection, shard), checking the shard count.
pub(crate) async fn locked_checkpoint(
    client: &impl GenericClient,
    projection: Projection,
    shard: u8,
    shards: u8,
) -> Result<GlobalCursor, ProjectionError> {
    let row = client
        .query_opt(
            "SELECT xid, position, shard_count FROM projection_checkpoints \
             WHERE projection = $1 AND shard = $2 FOR UPDATE",
            &[&projection.name(), &i32::from(shard)],
        )
        .await?;
    let Some(row) = row else {
        return Err(ProjectionError::LostLease);
    };
    let stored: i32 = row.try_get(2)?;
    if stored != i32::from(shards) {
        return Err(ProjectionError::ShardCountMismatch {
            projection: projection.name(),
            stored: u8::try_from(stored).unwrap_or(0),
            configured: shards,
        });
    }
    let xid: i64 = row.try_get(0)?;
    Ok(GlobalCursor {
        xid: u64::try_from(xid).unwrap_or(0),
        position: row.try_get(1)?,
    })
}

/// The checkpoint of one (projection, shard); the start of the log if none.
pub async fn checkpoint(
    client: &impl GenericClient,
    projection: Projection,
    shard: u8,
) -> Result<GlobalCursor, ProjectionError> {
    let row = client
        .query_opt(
            "SELECT xid, position FROM projection_checkpoints WHERE projection = $1 AND shard = $2",
            &[&projection.name(), &i32::from(shard)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(GlobalCursor::START);
    };
    let xid: i64 = row.try_get(0)?;
    Ok(GlobalCursor {
        xid: u64::try_from(xid).unwrap_or(0),
        position: row.try_get(1)?,
    })
}

/// Read-your-writes: waits (bounded) until `projection` has applied the event at
/// `position`, which must belong to one of `clinics`. `Ok(false)` when no such event
/// exists: another clinic's events are not waited for (nor revealed), and with no clinic
/// there is nothing to wait for. The event is looked up in the clinics' context; the
/// checkpoints it then polls hold no clinical data and need none.
pub async fn wait_for_position(
    store: &EventStore,
    projection: Projection,
    clinics: &[Uuid],
    position: i64,
    timeout: Duration,
) -> Result<bool, ProjectionError> {
    let Some((clinic_id, target)) = store.event_at_position(clinics, position).await? else {
        return Ok(false);
    };
    if !clinics.contains(&clinic_id) {
        return Ok(false);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let shards = {
        let client = store.pool().get().await?;
        stored_shard_count(&client, projection).await?
    };
    let Some(shards) = shards else {
        return Err(ProjectionError::NotCaughtUp { position });
    };
    let shard = ClinicShard::of(clinic_id, shards).index();
    let mut pause = Duration::from_millis(5);
    loop {
        let reached = {
            let client = store.pool().get().await?;
            checkpoint(&client, projection, shard).await? >= target
        };
        if reached {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProjectionError::NotCaughtUp { position });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// How many notifications named each last byte of a clinic id (a count per byte, so that
/// receivers, which see only the latest value, still tell whether their shard was named
/// since they last looked).
#[derive(Debug, Clone)]
struct Wakes([u64; 256]);

impl Default for Wakes {
    fn default() -> Self {
        Self([0; 256])
    }
}

impl Wakes {
    /// Counts one notification naming `hint`'s bytes.
    fn add(&mut self, hint: &ShardHint) {
        for byte in hint.bytes() {
            let count = &mut self.0[usize::from(byte)];
            *count = count.wrapping_add(1);
        }
    }

    /// A number that changes whenever a notification names `shard` of `shards`.
    fn of_shard(&self, shard: u8, shards: u8) -> u64 {
        (0..=u8::MAX)
            .filter(|byte| byte % shards.max(1) == shard)
            .fold(0_u64, |sum, byte| {
                sum.wrapping_add(self.0[usize::from(byte)])
            })
    }
}

/// Keeps a LISTEN connection open and counts in `wake` the shards each notification names
/// ([`ShardHint`]; one without a readable hint names them all). Reconnects after errors;
/// polling covers the gaps.
async fn listen(config: tokio_postgres::Config, wake: watch::Sender<Wakes>) {
    loop {
        let connected = match spineledger_store::tls::connector() {
            Ok(tls) => spineledger_store::tls::effective(&config)
                .connect(tls)
                .await
                .map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute("LISTEN spineledger_events").await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                // The LISTEN is answered through the connection, so drive both.
                let mut listening = std::pin::pin!(listening);
                let mut subscribed = false;
                loop {
                    tokio::select! {
                        result = &mut listening, if !subscribed => {
                            if let Err(error) = result {
                                tracing::warn!(%error, "LISTEN failed");
                                break;
                            }
                            subscribed = true;
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(notification))) => {
                                let hint = ShardHint::from_hex(notification.payload())
                                    .unwrap_or(ShardHint::ALL);
                                wake.send_modify(|wakes| wakes.add(&hint));
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                tracing::warn!(%error, "notification connection failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot open the notification connection"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A committed batch: its size, how long applying and committing it took, and the
/// time from its last event's recording to the commit.
fn record_batch(projection: Projection, shard: u8, events: usize, took: Duration, lag: Duration) {
    struct Instruments {
        events: Histogram<u64>,
        duration: Histogram<f64>,
        lag: Histogram<f64>,
    }
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    let instruments = INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("spineledger");
        let seconds = vec![
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Instruments {
            events: meter
                .u64_histogram("spineledger.projector.batch.events")
                .with_unit("{event}")
                .with_description("Events in a projector batch")
                .with_boundaries(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                ])
                .build(),
            duration: meter
                .f64_histogram("spineledger.projector.batch.duration")
                .with_unit("s")
                .with_description("Time to apply a projector batch and commit it")
                .with_boundaries(seconds.clone())
                .build(),
            lag: meter
                .f64_histogram("spineledger.projector.commit_lag")
                .with_unit("s")
                .with_description(
                    "Commit time of a projector batch minus recording time of its last event",
                )
                .with_boundaries(seconds)
                .build(),
        }
    });
    let attributes = [
        KeyValue::new("projection", projection.name()),
        KeyValue::new("shard", i64::from(shard)),
    ];
    instruments
        .events
        .record(u64::try_from(events).unwrap_or(u64::MAX), &attributes);
    instruments.duration.record(took.as_secs_f64(), &attributes);
    instruments.lag.record(lag.as_secs_f64(), &attributes);
}

#[cfg(test)]
mod wake_tests {
    use super::*;

    #[test]
    fn a_notification_wakes_only_the_shards_it_names() {
        let clinic = Uuid::from_u128(0x0a); // last byte 10: shard 2 of 4, shard 0 of 1
        let mut hint = ShardHint::default();
        hint.insert(clinic);
        let mut wakes = Wakes::default();
        let before: Vec<u64> = (0..4).map(|shard| wakes.of_shard(shard, 4)).collect();
        wakes.add(&hint);
        let after: Vec<u64> = (0..4).map(|shard| wakes.of_shard(shard, 4)).collect();
        let woken: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b != a).collect();
        assert_eq!(woken, vec![false, false, true, false]);
        assert_ne!(wakes.of_shard(0, 1), 0, "one shard holds every clinic");
        // A notification without a readable hint wakes every shard.
        let before: Vec<u64> = (0..4).map(|shard| wakes.of_shard(shard, 4)).collect();
        wakes.add(&ShardHint::ALL);
        assert!((0..4).all(|shard| wakes.of_shard(shard, 4) != before[usize::from(shard)]));
    }
}
