//! Each clinic's verifiable log (migration V9): the integrator that indexes records after
//! they commit, the trees and proofs over that index, and the signing of checkpoints.
//!
//! The integrator is a projector like the others (a lease per shard, a checkpoint moved by
//! compare-and-set under the lease, the never-skip read), with a second cursor for the
//! access log. A batch gives the shard's new events (in global order) and then its new
//! access-log entries (in commit order) the next leaf indexes of their clinics, in one
//! transaction with both cursors: a crash leaves every record indexed once or not yet.
//!
//! Trees are not stored. A root or a proof is computed from the clinic's leaves when asked
//! (O(leaves) per call: tens of milliseconds at 100,000 leaves), which keeps the stored
//! state to what the verifier checks and nothing that could disagree with it.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use spineledger_store::{
    ClinicScope, ClinicShard, GlobalCursor, idle_access_horizon, idle_shard_horizon,
    read_access_after, read_all_after, scoped,
};
use spineledger_verifier::bundle::LeafKind;
use spineledger_verifier::checkpoint::{Checkpoint, CheckpointSigner, VerifierKey, clinic_origin};
use spineledger_verifier::merkle::{LogTree, TreeHead};
use uuid::Uuid;

use crate::runtime::{
    BatchOutcome, IDLE_ADVANCE_MIN_GAP, Projector, Stage, locked_checkpoint, to_sql,
};
use crate::{Projection, ProjectionError};

impl Projector {
    /// One integrator batch for `shard`: index what committed since the cursors.
    pub(crate) async fn integrate(&self, shard: u8) -> Result<BatchOutcome, ProjectionError> {
        let shards = self.config.shards;
        let clinic_shard = ClinicShard::new(shard, shards)
            .ok_or(ProjectionError::UnknownShard { shard, shards })?;
        let mut client = self.pool.get().await?;
        let transaction = self.batch_transaction(&mut client).await?;
        let projection = Projection::ClinicLog;
        // The checkpoint first, then the access cursor (the order a reshard locks them in);
        // the two reads then travel together (pipelined on the connection).
        let start = locked_checkpoint(&transaction, projection, shard, shards).await?;
        let access_start = locked_access_cursor(&transaction, shard, shards).await?;
        let batch = self.config.batch_size;
        let (events, entries) = futures::try_join!(
            read_all_after(&transaction, start, batch, clinic_shard),
            read_access_after(&transaction, access_start, batch, clinic_shard),
        )?;
        // Where each cursor goes: past what was read, or, for a log with nothing of this
        // shard's, past a long stretch of other shards' records (so an idle shard does not
        // rescan it on every poll).
        // The two horizons are independent: asked together (pipelined), each only when
        // its log had nothing of this shard's.
        let (event_horizon, access_horizon) = futures::try_join!(
            async {
                match events.last() {
                    Some(_) => Ok(None),
                    None => idle_shard_horizon(&transaction, start, clinic_shard).await,
                }
            },
            async {
                match entries.last() {
                    Some(_) => Ok(None),
                    None => idle_access_horizon(&transaction, access_start, clinic_shard).await,
                }
            },
        )?;
        let end = events.last().map_or_else(
            || {
                event_horizon
                    .filter(|horizon| worth_skipping(start, *horizon))
                    .unwrap_or(start)
            },
            |last| last.cursor,
        );
        let access_end = entries.last().map_or_else(
            || {
                access_horizon
                    .filter(|horizon| worth_skipping(access_start, *horizon))
                    .unwrap_or(access_start)
            },
            |last| last.cursor,
        );
        if end == start && access_end == access_start {
            transaction.rollback().await?;
            return Ok(BatchOutcome {
                events: 0,
                cursor: start,
                lag: Duration::ZERO,
            });
        }
        self.faults.check(Stage::AfterRead)?;
        let mut leaves: Vec<(Uuid, LeafKind, i64, Vec<u8>)> =
            Vec::with_capacity(events.len() + entries.len());
        for event in &events {
            leaves.push((
                event.clinic_id,
                LeafKind::Event,
                event.cursor.position,
                event.leaf().0.to_vec(),
            ));
        }
        for logged in &entries {
            leaves.push((
                logged.entry.clinic_id,
                LeafKind::Access,
                logged.entry.position,
                logged.entry.hash().0.to_vec(),
            ));
        }
        insert_leaves(&transaction, &leaves).await?;
        self.faults.check(Stage::AfterApply)?;
        self.advance(&transaction, projection, shard, start, end)
            .await?;
        if access_end != access_start {
            transaction
                .execute(
                    "UPDATE clinic_log_access_cursors SET xid = $2, position = $3 WHERE shard = $1",
                    &[
                        &i32::from(shard),
                        &to_sql(access_end.xid),
                        &access_end.position,
                    ],
                )
                .await?;
        }
        self.faults.check(Stage::BeforeCommit)?;
        transaction.commit().await?;
        let last_recorded = events
            .last()
            .map(|event| event.recorded_at)
            .into_iter()
            .chain(entries.last().map(|logged| logged.entry.accessed_at))
            .min();
        let lag = last_recorded
            .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
            .unwrap_or_default();
        tracing::debug!(
            shard,
            events = events.len(),
            access_entries = entries.len(),
            "indexed"
        );
        self.faults.check(Stage::AfterCommit)?;
        Ok(BatchOutcome {
            events: events.len().max(entries.len()),
            cursor: end,
            lag,
        })
    }
}

/// Whether moving an idle cursor from `from` to `to` is worth a commit (see
/// `IDLE_ADVANCE_MIN_GAP`).
fn worth_skipping(from: GlobalCursor, to: GlobalCursor) -> bool {
    to.position.saturating_sub(from.position) >= IDLE_ADVANCE_MIN_GAP
}

/// Creates the access cursors of a shard layout that do not exist yet.
pub(crate) async fn ensure_access_cursors(
    client: &impl GenericClient,
    shards: u8,
) -> Result<(), ProjectionError> {
    for shard in 0..shards {
        client
            .execute(
                "INSERT INTO clinic_log_access_cursors (shard, shard_count) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&i32::from(shard), &i32::from(shards)],
            )
            .await?;
    }
    Ok(())
}

async fn locked_access_cursor(
    client: &impl GenericClient,
    shard: u8,
    shards: u8,
) -> Result<GlobalCursor, ProjectionError> {
    let row = client
        .query_opt(
            "SELECT xid, position, shard_count FROM clinic_log_access_cursors \
             WHERE shard = $1 FOR UPDATE",
            &[&i32::from(shard)],
        )
        .await?
        .ok_or(ProjectionError::LostLease)?;
    let stored: i32 = row.try_get(2)?;
    if stored != i32::from(shards) {
        return Err(ProjectionError::ShardCountMismatch {
            projection: Projection::ClinicLog.name(),
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

/// Appends `leaves` (in order) to their clinics' logs, each clinic continuing from its
/// last index, in one statement. Records indexed already are left out (after the shards
/// were laid out anew, cursors restart from the earliest of the old ones, and a clinic's
/// indexed records are a prefix of what is read again); the numbering counts only the
/// rows kept.
async fn insert_leaves(
    client: &impl GenericClient,
    leaves: &[(Uuid, LeafKind, i64, Vec<u8>)],
) -> Result<(), ProjectionError> {
    if leaves.is_empty() {
        return Ok(());
    }
    let clinics: Vec<Uuid> = leaves.iter().map(|leaf| leaf.0).collect();
    let kinds: Vec<&str> = leaves.iter().map(|leaf| leaf.1.name()).collect();
    let positions: Vec<i64> = leaves.iter().map(|leaf| leaf.2).collect();
    let hashes: Vec<&[u8]> = leaves.iter().map(|leaf| leaf.3.as_slice()).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO clinic_log (clinic_id, leaf_index, kind, position, leaf_hash) \
             SELECT r.clinic_id, \
                    coalesce((SELECT max(l.leaf_index) + 1 FROM clinic_log l \
                              WHERE l.clinic_id = r.clinic_id), 0) \
                      + row_number() OVER (PARTITION BY r.clinic_id ORDER BY r.ord) - 1, \
                    r.kind, r.position, r.hash \
             FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bytea[]) \
                  WITH ORDINALITY AS r(clinic_id, kind, position, hash, ord) \
             WHERE NOT EXISTS (SELECT 1 FROM clinic_log x WHERE x.clinic_id = r.clinic_id \
                               AND x.kind = r.kind AND x.position = r.position)",
        )
        .await?;
    client
        .execute(&statement, &[&clinics, &kinds, &positions, &hashes])
        .await?;
    Ok(())
}

/// The tree over the first `size` leaves of `clinic_id`'s log (all of them when `None`).
/// `client` must see the clinic (the projector role, or the app role in its scope).
///
/// # Errors
/// The database's, or a stored leaf that is not 32 bytes.
pub async fn load_tree(
    client: &impl GenericClient,
    clinic_id: Uuid,
    size: Option<u64>,
) -> Result<LogTree, ProjectionError> {
    let limit = size.map(|size| i64::try_from(size).unwrap_or(i64::MAX));
    let rows = client
        .query(
            "SELECT leaf_hash FROM clinic_log WHERE clinic_id = $1 \
             ORDER BY leaf_index LIMIT $2",
            &[&clinic_id, &limit],
        )
        .await?;
    let mut tree = LogTree::default();
    for row in rows {
        let hash: &[u8] = row.try_get(0)?;
        let leaf = <[u8; 32]>::try_from(hash)
            .map_err(|_| ProjectionError::CorruptRow("a leaf hash not 32 bytes long".into()))?;
        tree.push(leaf);
    }
    Ok(tree)
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it states.
    pub head: TreeHead,
    /// The signed note.
    pub note: String,
    /// When it was signed.
    pub signed_at: chrono::DateTime<chrono::Utc>,
}

/// Signs a checkpoint of `clinic_id`'s whole log as it stands, unless the latest valid
/// checkpoint already covers it; returns the latest valid checkpoint either way (`None`
/// while the log is empty). `client` must see the clinic and may insert checkpoints.
///
/// # Errors
/// The database's.
pub async fn sign_checkpoint(
    client: &impl GenericClient,
    signer: &CheckpointSigner,
    clinic_id: Uuid,
) -> Result<Option<SignedCheckpoint>, ProjectionError> {
    let latest = latest_checkpoint(client, clinic_id, signer.verifier()).await?;
    let size = log_size(client, clinic_id).await?;
    if size == 0
        || latest
            .as_ref()
            .is_some_and(|latest| latest.head.size >= size)
    {
        return Ok(latest);
    }
    let head = load_tree(client, clinic_id, Some(size)).await?.head();
    let note = signer.sign(&Checkpoint {
        origin: clinic_origin(clinic_id),
        head,
    });
    let size = i64::try_from(head.size).unwrap_or(i64::MAX);
    let inserted = client
        .query_opt(
            "INSERT INTO log_checkpoints (clinic_id, tree_size, root_hash, note) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING signed_at",
            &[&clinic_id, &size, &&head.root[..], &note],
        )
        .await?;
    tracing::debug!(tree_size = head.size, "checkpoint signed");
    match inserted {
        Some(row) => Ok(Some(SignedCheckpoint {
            head,
            note,
            signed_at: row.try_get(0)?,
        })),
        // The same note is there already (Ed25519 signs deterministically): another
        // signer got there first.
        None => latest_checkpoint(client, clinic_id, signer.verifier()).await,
    }
}

/// The largest valid checkpoint of `clinic_id` (the earliest signed among equals).
///
/// # Errors
/// The database's.
pub async fn latest_checkpoint(
    client: &impl GenericClient,
    clinic_id: Uuid,
    key: &VerifierKey,
) -> Result<Option<SignedCheckpoint>, ProjectionError> {
    checkpoint_at_most(client, clinic_id, None, key).await
}

/// The largest valid checkpoint of `clinic_id` whose size is at most `size` (any size
/// when `None`). Valid: its note is signed by `key` for the clinic's origin, and the row's
/// size and root are the note's. A row that is not (inserted by someone else, or
/// altered) is skipped: what the table says is never trusted without the signature.
///
/// # Errors
/// The database's.
pub async fn checkpoint_at_most(
    client: &impl GenericClient,
    clinic_id: Uuid,
    size: Option<u64>,
    key: &VerifierKey,
) -> Result<Option<SignedCheckpoint>, ProjectionError> {
    use futures::TryStreamExt;
    let size = size.map(|size| i64::try_from(size).unwrap_or(i64::MAX));
    // Largest first, streamed: the first row that verifies ends the read. Rows larger than
    // the log cannot be sound and are not even looked at.
    let rows = client
        .query_raw(
            "SELECT tree_size, root_hash, note, signed_at FROM log_checkpoints \
             WHERE clinic_id = $1 AND ($2::bigint IS NULL OR tree_size <= $2) \
               AND tree_size <= (SELECT coalesce(max(leaf_index) + 1, 0) FROM clinic_log \
                                 WHERE clinic_id = $1) \
             ORDER BY tree_size DESC, signed_at",
            [
                &clinic_id as &(dyn tokio_postgres::types::ToSql + Sync),
                &size,
            ],
        )
        .await?;
    futures::pin_mut!(rows);
    let origin = clinic_origin(clinic_id);
    while let Some(row) = rows.try_next().await? {
        let note: String = row.try_get(2)?;
        let Ok(checkpoint) = key.open(&note) else {
            continue;
        };
        let stored_size: i64 = row.try_get(0)?;
        let stored_root: &[u8] = row.try_get(1)?;
        if checkpoint.origin != origin
            || u64::try_from(stored_size).ok() != Some(checkpoint.head.size)
            || stored_root != checkpoint.head.root
        {
            continue;
        }
        return Ok(Some(SignedCheckpoint {
            head: checkpoint.head,
            note,
            signed_at: row.try_get(3)?,
        }));
    }
    Ok(None)
}

/// The notary: every `interval`, signs a checkpoint for each clinic whose log grew since
/// its latest one. Runs until `shutdown`, then signs once more so that a clean stop leaves
/// nothing unsigned. `pool` logs in as the projector role.
pub async fn run_notary(
    pool: Pool,
    signer: CheckpointSigner,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let stopping = tokio::select! {
            () = &mut shutdown => true,
            _ = ticker.tick() => false,
        };
        if let Err(error) = sign_grown_logs(&pool, &signer).await {
            tracing::warn!(%error, sqlstate = ?error.sqlstate(), "signing checkpoints failed");
        }
        if stopping {
            break;
        }
    }
}

/// Signs a checkpoint for every clinic whose log is larger than its latest valid
/// checkpoint.
///
/// # Errors
/// The database's.
pub async fn sign_grown_logs(
    pool: &Pool,
    signer: &CheckpointSigner,
) -> Result<(), ProjectionError> {
    let client = pool.get().await?;
    // Every clinic with a log: whether its latest checkpoint is valid and covers the log
    // is decided on signatures, never on the stored sizes alone.
    let clinics = client
        .query("SELECT DISTINCT clinic_id FROM clinic_log", &[])
        .await?;
    for row in clinics {
        let clinic_id: Uuid = row.try_get(0)?;
        sign_checkpoint(&client, signer, clinic_id).await?;
    }
    Ok(())
}

/// Runs `work` on a connection scoped to `clinic_id` (the app role's wall), in one
/// transaction.
///
/// # Errors
/// The database's, or `work`'s.
pub async fn in_clinic<T>(
    pool: &Pool,
    clinic_id: Uuid,
    work: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, ProjectionError>,
) -> Result<T, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let result = scoped(
        &transaction,
        &ClinicScope::one(clinic_id),
        work(&transaction),
    )
    .await?;
    transaction.commit().await?;
    Ok(result)
}

/// Leaves in `clinic_id`'s log.
///
/// # Errors
/// The database's.
pub async fn log_size(
    client: &impl GenericClient,
    clinic_id: Uuid,
) -> Result<u64, ProjectionError> {
    let size: i64 = client
        .query_one(
            "SELECT coalesce(max(leaf_index) + 1, 0) FROM clinic_log WHERE clinic_id = $1",
            &[&clinic_id],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(size).unwrap_or(0))
}

/// The leaf of one record in `clinic_id`'s log: its index and hash (`None` while it is
/// not indexed).
///
/// # Errors
/// The database's.
pub async fn find_leaf(
    client: &impl GenericClient,
    clinic_id: Uuid,
    kind: LeafKind,
    position: i64,
) -> Result<Option<(u64, [u8; 32])>, ProjectionError> {
    let row = client
        .query_opt(
            "SELECT leaf_index, leaf_hash FROM clinic_log \
             WHERE clinic_id = $1 AND kind = $2 AND position = $3",
            &[&clinic_id, &kind.name(), &position],
        )
        .await?;
    row.map(|row| {
        let index: i64 = row.try_get(0)?;
        let hash: &[u8] = row.try_get(1)?;
        Ok((
            u64::try_from(index).unwrap_or(0),
            hash.try_into()
                .map_err(|_| ProjectionError::CorruptRow("a leaf hash not 32 bytes long".into()))?,
        ))
    })
    .transpose()
}

/// Lays the integrator's cursors out anew for `shards` shards (what `rebuild --all` does
/// for the clinic log, which is never rebuilt: its leaves stay as they are). Every new
/// shard starts from the earliest of the old cursors; records already indexed are skipped
/// when read again, and each clinic's indexed records are a prefix of its log, so nothing
/// is indexed twice or out of order. Running integrators lose their leases and stop at
/// their next batch. Returns whether anything changed. `client` is the owner's.
///
/// # Errors
/// The database's.
pub async fn reshard(
    client: &mut deadpool_postgres::Object,
    shards: u8,
) -> Result<bool, ProjectionError> {
    let transaction = client.transaction().await?;
    // Locks in the integrators' order (checkpoint rows, then access cursors, by shard),
    // and never waits long behind a running batch.
    transaction
        .batch_execute("SET LOCAL lock_timeout = '10s'")
        .await?;
    let cursor = |row: &tokio_postgres::Row| -> Result<(i32, GlobalCursor), ProjectionError> {
        let xid: i64 = row.try_get(1)?;
        Ok((
            row.try_get(0)?,
            GlobalCursor {
                xid: u64::try_from(xid).unwrap_or(0),
                position: row.try_get(2)?,
            },
        ))
    };
    let events = transaction
        .query(
            "SELECT shard_count, xid, position FROM projection_checkpoints \
             WHERE projection = $1 ORDER BY shard FOR UPDATE",
            &[&Projection::ClinicLog.name()],
        )
        .await?
        .iter()
        .map(cursor)
        .collect::<Result<Vec<_>, _>>()?;
    let access = transaction
        .query(
            "SELECT shard_count, xid, position FROM clinic_log_access_cursors \
             ORDER BY shard FOR UPDATE",
            &[],
        )
        .await?
        .iter()
        .map(cursor)
        .collect::<Result<Vec<_>, _>>()?;
    let laid_out = |rows: &[(i32, GlobalCursor)]| {
        rows.len() == usize::from(shards)
            && rows.iter().all(|(count, _)| *count == i32::from(shards))
    };
    if (events.is_empty() && access.is_empty()) || (laid_out(&events) && laid_out(&access)) {
        transaction.rollback().await?;
        return Ok(false);
    }
    let earliest = |rows: &[(i32, GlobalCursor)]| {
        rows.iter()
            .map(|(_, cursor)| *cursor)
            .min()
            .unwrap_or(GlobalCursor::START)
    };
    let (from_events, from_access) = (earliest(&events), earliest(&access));
    transaction
        .execute(
            "DELETE FROM projection_checkpoints WHERE projection = $1",
            &[&Projection::ClinicLog.name()],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM projection_leases WHERE projection = $1",
            &[&Projection::ClinicLog.name()],
        )
        .await?;
    transaction
        .execute("DELETE FROM clinic_log_access_cursors", &[])
        .await?;
    for shard in 0..shards {
        transaction
            .execute(
                "INSERT INTO projection_checkpoints (projection, shard, shard_count, xid, position) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &Projection::ClinicLog.name(),
                    &i32::from(shard),
                    &i32::from(shards),
                    &to_sql(from_events.xid),
                    &from_events.position,
                ],
            )
            .await?;
        transaction
            .execute(
                "INSERT INTO clinic_log_access_cursors (shard, shard_count, xid, position) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &i32::from(shard),
                    &i32::from(shards),
                    &to_sql(from_access.xid),
                    &from_access.position,
                ],
            )
            .await?;
    }
    transaction.commit().await?;
    tracing::info!(shards, "clinic log cursors laid out anew");
    Ok(true)
}
