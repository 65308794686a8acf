//! Rebuild projections from position zero into fresh tables while the live ones keep
//! serving, then swap them atomically.
//!
//! The bulk phase ([`crate::bulk`]) reads the log once, stream by stream, up to the head
//! a never-skip reader reaches, and derives every view of every projection rebuilt from
//! each episode's chart. Then, per projection, the fresh tables are caught up page by
//! page in short transactions, and the swap transaction locks the projection's
//! checkpoints (live batches cannot commit meanwhile), brings the fresh tables to the
//! head of the log, brings the live tables' shards to the same head, compares digests of
//! the two, renames the fresh tables into place and sets every shard's checkpoint to the
//! head. A rebuilt model built from the
//! same events must equal the incrementally built one; the report says whether it does.
//! The rebuilt model serves either way: it is the log's truth.

use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Pool};
use spineledger_store::{ClinicShard, GlobalCursor, read_all_after};

use crate::runtime::stored_shard_count;
use crate::{Projection, ProjectionError, Tables, bulk, checkpoint};

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The projection rebuilt.
    pub projection: Projection,
    /// Events applied: the episode events of the bulk phase (patient streams are not
    /// read), then every event after its head (all streams) in the catch-up.
    pub events: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Digest of the incrementally built model at the head, before the swap.
    pub live_digest: String,
    /// Digest of the rebuilt model at the same head.
    pub rebuilt_digest: String,
}

impl RebuildReport {
    /// Whether the rebuilt model equals the incrementally built one.
    pub fn equal(&self) -> bool {
        self.live_digest == self.rebuilt_digest
    }
}

const SWAP_ATTEMPTS: usize = 5;

/// Plans made for each execution in the catch-up and the swap: the fresh tables were
/// filled moments ago and have no statistics yet, and a cached generic plan made
/// without them (a scan of the whole table per page) would stay on the connection.
const FRESH_PLANS: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

/// Events per catch-up transaction.
pub const PAGE_SIZE: usize = 5000;

/// Rebuilds `projection`; see [`rebuild_all`].
pub async fn rebuild(
    owner_pool: &Pool,
    projection: Projection,
    shards: u8,
    page: usize,
) -> Result<RebuildReport, ProjectionError> {
    let mut reports = rebuild_all(owner_pool, &[projection], shards, page).await?;
    reports
        .pop()
        .ok_or(ProjectionError::NotAReadModel(projection.name()))
}

/// Rebuilds `projections` together: one read of the log, each event decoded once and
/// folded into every view of every projection, the fresh tables filled with multi-row
/// inserts (`bulk::load_snapshot`); then each projection is caught up to the log's head
/// (page by page, then the last stretch inside the swap), compared with its live model
/// and swapped in, one atomic swap each. `owner_pool` connects as the
/// tables' owner (it creates, renames and drops tables) and needs two connections;
/// `shards` is the shard count the new checkpoints are made under (the live model is
/// caught up under the count stored with its checkpoints); `page` is the catch-up's
/// page size.
pub async fn rebuild_all(
    owner_pool: &Pool,
    projections: &[Projection],
    shards: u8,
    page: usize,
) -> Result<Vec<RebuildReport>, ProjectionError> {
    if let Some(projection) = projections.iter().find(|p| **p == Projection::ClinicLog) {
        return Err(ProjectionError::NotAReadModel(projection.name()));
    }
    let mut projections = projections.to_vec();
    projections.sort_unstable();
    projections.dedup();
    let projections = projections.as_slice();
    // One rebuild of a projection at a time: a second one would drop the first's tables.
    let mut lock = RebuildLock::acquire(owner_pool, projections).await?;
    let result = rebuild_locked(owner_pool, &mut lock, projections, shards, page).await;
    lock.release().await;
    result
}

/// The advisory lock that lets one rebuild of a projection run at a time. It is a session
/// lock on a connection of its own, released on every path: by [`RebuildLock::release`],
/// or, if the rebuild ends any other way (an error, a panic, a dropped future), by closing
/// that connection instead of returning it to the pool with the lock still held.
struct RebuildLock {
    client: Option<deadpool_postgres::Object>,
    projections: Vec<Projection>,
}

const LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('spineledger.rebuild'), hashtext($1))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtext('spineledger.rebuild'), hashtext($1))";

impl RebuildLock {
    /// Locks every one of `projections`, or none (another rebuild holds one of them).
    async fn acquire(
        owner_pool: &Pool,
        projections: &[Projection],
    ) -> Result<Self, ProjectionError> {
        let mut lock = Self {
            client: Some(owner_pool.get().await?),
            projections: Vec::new(),
        };
        for projection in projections {
            let Some(client) = lock.client.as_ref() else {
                break;
            };
            let locked: bool = client
                .query_one(LOCK, &[&projection.name()])
                .await?
                .try_get(0)?;
            if !locked {
                lock.release().await;
                return Err(ProjectionError::RebuildInProgress(projection.name()));
            }
            lock.projections.push(*projection);
        }
        Ok(lock)
    }

    /// The lock's connection, which the bulk load also writes through.
    fn client(&mut self) -> Result<&mut deadpool_postgres::Object, ProjectionError> {
        self.client
            .as_mut()
            .ok_or_else(|| ProjectionError::CorruptRow("the rebuild lock was released".into()))
    }

    /// Unlocks and returns the connection to the pool; if unlocking fails, the connection
    /// is closed, which unlocks too.
    /// The connection stays in the guard until the unlock has succeeded, so a future
    /// dropped while unlocking still closes it (in `Drop`).
    async fn release(mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        for projection in &self.projections {
            if let Err(error) = client.execute(UNLOCK, &[&projection.name()]).await {
                tracing::warn!(%error, "rebuild lock not released; closing its connection");
                return;
            }
        }
        // Unlocked: the connection may go back to the pool.
        drop(self.client.take());
    }
}

impl Drop for RebuildLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Never back into the pool holding the lock: closing the session releases it.
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

async fn rebuild_locked(
    owner_pool: &Pool,
    lock: &mut RebuildLock,
    projections: &[Projection],
    shards: u8,
    page: usize,
) -> Result<Vec<RebuildReport>, ProjectionError> {
    let started = Instant::now();
    let writer = lock.client()?;
    // LIKE copies columns, defaults, constraints and indexes, but not row-level security,
    // its policies or the grants: the migrations' own function adds them, so the tables
    // that are swapped in are walled exactly like those they replace.
    for table in projections
        .iter()
        .flat_map(|projection| projection.tables())
    {
        let shadow = Tables::Rebuild.of(table);
        writer
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {shadow}; \
                 CREATE TABLE {shadow} (LIKE {table} INCLUDING ALL); \
                 SELECT spineledger_protect_read_model('{shadow}'::regclass);"
            ))
            .await?;
    }

    // Bulk phase: the live tables keep serving and being updated meanwhile.
    let (events, head) = bulk::load_snapshot(owner_pool, writer, projections).await?;
    let loaded = started.elapsed();

    let mut reports: Vec<RebuildReport> = Vec::with_capacity(projections.len());
    for projection in projections {
        let swapping = Instant::now();
        let result = catch_up_and_swap(owner_pool, *projection, shards, page, head).await;
        let (caught_up, live_digest, rebuilt_digest) = match result {
            Ok(swapped) => swapped,
            Err(error) => {
                // Say what was already swapped in: those models serve now.
                for report in &reports {
                    tracing::warn!(
                        projection = report.projection.name(),
                        equal = report.equal(),
                        "rebuilt and swapped in before a later projection's rebuild failed"
                    );
                }
                return Err(error);
            }
        };
        reports.push(RebuildReport {
            projection: *projection,
            events: events + caught_up,
            elapsed: loaded + swapping.elapsed(),
            live_digest,
            rebuilt_digest,
        });
    }
    Ok(reports)
}

/// Brings `projection`'s fresh tables from the bulk phase's `head` towards the log's
/// head page by page, in short transactions while the live model keeps serving, then
/// swaps: the locked swap only has the last stretch left to apply. Returns (events
/// applied after `head`, live digest, rebuilt digest).
async fn catch_up_and_swap(
    owner_pool: &Pool,
    projection: Projection,
    shards: u8,
    page: usize,
    head: GlobalCursor,
) -> Result<(u64, String, String), ProjectionError> {
    let mut cursor = head;
    let mut caught_up = 0_u64;
    loop {
        let mut client = owner_pool.get().await?;
        let transaction = client.transaction().await?;
        transaction.batch_execute(FRESH_PLANS).await?;
        let (read, last) = apply_page(
            &transaction,
            projection,
            Tables::Rebuild,
            cursor,
            page,
            ClinicShard::ALL,
            None,
        )
        .await?;
        transaction.commit().await?;
        caught_up += read as u64;
        cursor = last;
        if read < page {
            break;
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match swap(owner_pool, projection, shards, page, cursor).await {
            Ok((last_stretch, live_digest, rebuilt_digest)) => {
                break Ok((caught_up + last_stretch, live_digest, rebuilt_digest));
            }
            Err(error) if error.is_transient() && attempt < SWAP_ATTEMPTS => {
                tracing::warn!(%error, attempt, "swap contended; retrying");
            }
            Err(error) => break Err(error),
        }
    }
}

/// The atomic catch-up, compare and swap. Returns (events applied to the rebuilt model in
/// this step, live digest, rebuilt digest).
async fn swap(
    owner_pool: &Pool,
    projection: Projection,
    shards: u8,
    page: usize,
    mut cursor: GlobalCursor,
) -> Result<(u64, String, String), ProjectionError> {
    let mut client = owner_pool.get().await?;
    let transaction = client.transaction().await?;
    // Checkpoints first, as every batch does: live batches of this projection queue
    // behind the swap instead of deadlocking with it.
    transaction
        .batch_execute(&format!("SET LOCAL lock_timeout = '30s'; {FRESH_PLANS}"))
        .await?;
    transaction
        .execute(
            "SELECT 1 FROM projection_checkpoints WHERE projection = $1 ORDER BY shard FOR UPDATE",
            &[&projection.name()],
        )
        .await?;
    let mut caught_up = 0_u64;
    loop {
        let (read, last) = apply_page(
            &transaction,
            projection,
            Tables::Rebuild,
            cursor,
            page,
            ClinicShard::ALL,
            None,
        )
        .await?;
        caught_up += read as u64;
        cursor = last;
        if read < page {
            break;
        }
    }
    let head = cursor;
    // Bring the live model to the same head, shard by shard, as it was partitioned.
    if let Some(live_shards) = stored_shard_count(&transaction, projection).await? {
        for index in 0..live_shards {
            let shard =
                ClinicShard::new(index, live_shards).ok_or(ProjectionError::UnknownShard {
                    shard: index,
                    shards: live_shards,
                })?;
            let mut live = checkpoint(&transaction, projection, index).await?;
            while live < head {
                let (read, last) = apply_page(
                    &transaction,
                    projection,
                    Tables::Live,
                    live,
                    page,
                    shard,
                    Some(head),
                )
                .await?;
                live = last;
                if read == 0 {
                    break;
                }
            }
        }
    }
    let live_digest = projection.digest(&transaction, Tables::Live).await?;
    let rebuilt_digest = projection.digest(&transaction, Tables::Rebuild).await?;
    for table in projection.tables() {
        let shadow = Tables::Rebuild.of(table);
        let live_indexes = index_definitions(&transaction, table).await?;
        transaction
            .batch_execute(&format!(
                "ALTER TABLE {table} RENAME TO {table}_retired; \
                 ALTER TABLE {shadow} RENAME TO {table}; \
                 DROP TABLE {table}_retired;"
            ))
            .await?;
        // Give the new table's indexes the names the old ones had, so later migrations
        // that name them keep working.
        for (name, definition) in index_definitions(&transaction, table).await? {
            if let Some((old_name, _)) = live_indexes.iter().find(|(_, old)| *old == definition)
                && *old_name != name
            {
                transaction
                    .batch_execute(&format!("ALTER INDEX {name} RENAME TO {old_name}"))
                    .await?;
            }
        }
    }
    transaction
        .execute(
            "DELETE FROM projection_checkpoints WHERE projection = $1",
            &[&projection.name()],
        )
        .await?;
    let head_xid = i64::try_from(head.xid).unwrap_or(i64::MAX);
    for shard in 0..shards {
        transaction
            .execute(
                "INSERT INTO projection_checkpoints (projection, shard, shard_count, xid, position) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&projection.name(), &i32::from(shard), &i32::from(shards), &head_xid, &head.position],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok((caught_up, live_digest, rebuilt_digest))
}

/// The indexes of `table` as (name, definition with the index and table names taken out).
async fn index_definitions(
    client: &impl GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, ProjectionError> {
    let rows = client
        .query(
            "SELECT i.relname, \
                    regexp_replace(pg_get_indexdef(i.oid), '^.* USING ', '') \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             WHERE x.indrelid = $1::text::regclass ORDER BY i.relname",
            &[&table],
        )
        .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Reads one page after `cursor` (only up to `until`, when given) and applies it to
/// the `tables` copy of the model. Returns how many events were read and the cursor after them.
async fn apply_page(
    client: &impl GenericClient,
    projection: Projection,
    tables: Tables,
    cursor: GlobalCursor,
    page: usize,
    shard: ClinicShard,
    until: Option<GlobalCursor>,
) -> Result<(usize, GlobalCursor), ProjectionError> {
    let mut events = read_all_after(client, cursor, page, shard).await?;
    if let Some(until) = until {
        events.retain(|event| event.cursor <= until);
    }
    let Some(last) = events.last().map(|event| event.cursor) else {
        return Ok((0, cursor));
    };
    projection.apply(client, tables, &events).await?;
    Ok((events.len(), last))
}
