//! A rebuild's bulk phase: the read models of the whole log, built from one read of it.
//!
//! In one read-only REPEATABLE READ snapshot (which assigns no transaction id, so it holds
//! no live reader back) the head a never-skip reader reaches now is taken, and every
//! episode event up to it is streamed by clinic, stream and version
//! ([`spineledger_store::read_log_by_stream`]). Each stream's events arrive together: they
//! are decoded once, put in clinical order once (the chart), and every view of every
//! projection being rebuilt is derived from that chart. Views are written to the fresh
//! tables through a second connection in batches of [`EPISODES_PER_WRITE`] episodes (one
//! multi-row insert per table, the statement the live projector uses), and the outcome
//! cells are summed in memory and written once at the end. The live projector's path
//! (extend, or derive again from the stream) gives the same views, which the swap's
//! digest compare checks.
//!
//! Memory: one stream's events, one batch of views, and the cells (a few hundred bytes
//! each; a clinic-month has at most as many cells as episodes, times the seven kept
//! groupings).

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Pool};
use futures::TryStreamExt as _;
use spineledger_readmodels::{Cell, EpisodeOutcome, Tally, TreatmentPlanView, derive};
use spineledger_store::{GlobalCursor, RecordedEvent};
use uuid::Uuid;

use crate::models::{EpisodeRow, episode_chart};
use crate::{Projection, ProjectionError, Tables, cells};

/// Episodes whose views are written per statement.
const EPISODES_PER_WRITE: usize = 1000;

/// Builds `projections` into their fresh tables from the log up to its head; returns the
/// number of events in the log up to the head (every stream's) and the head. The views
/// are written through `writer` (a connection of the rebuild's own), the log is read
/// through a connection from `owner_pool`.
pub(crate) async fn load_snapshot(
    owner_pool: &Pool,
    writer: &mut deadpool_postgres::Object,
    projections: &[Projection],
) -> Result<(u64, GlobalCursor), ProjectionError> {
    let mut reader = owner_pool.get().await?;
    let snapshot = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(head) = spineledger_store::log_head(&snapshot).await? else {
        snapshot.commit().await?;
        return Ok((0, GlobalCursor::START));
    };
    let in_log: i64 = snapshot
        .query_one(
            "SELECT count(*) FROM events WHERE xid < pg_snapshot_xmin(pg_current_snapshot())",
            &[],
        )
        .await?
        .try_get(0)?;

    let mut load = Load::new(projections);
    {
        let events = spineledger_store::read_log_by_stream(&snapshot, "episode-").await?;
        load.add_log(events, writer).await?;
    }
    load.write(writer).await?;
    load.finish(writer).await?;
    snapshot.commit().await?;
    Ok((u64::try_from(in_log).unwrap_or(0), head))
}

impl Load {
    /// Adds every stream of `events` (ordered by stream and version), writing views
    /// through `writer` as batches fill.
    async fn add_log(
        &mut self,
        events: impl futures::Stream<Item = Result<RecordedEvent, spineledger_store::StoreError>>,
        writer: &mut deadpool_postgres::Object,
    ) -> Result<(), ProjectionError> {
        futures::pin_mut!(events);
        let mut stream: Vec<RecordedEvent> = Vec::new();
        let mut read = 0_u64;
        while let Some(event) = events.try_next().await? {
            let same = stream.last().is_some_and(|last| {
                last.clinic_id == event.clinic_id && last.stream_id == event.stream_id
            });
            if !same && !stream.is_empty() {
                self.add(&stream)?;
                stream.clear();
                if self.pending() >= EPISODES_PER_WRITE {
                    self.write(writer).await?;
                }
            }
            stream.push(event);
            read += 1;
            if read.is_multiple_of(200_000) {
                tracing::info!(events = read, "rebuilding");
            }
        }
        if !stream.is_empty() {
            self.add(&stream)?;
        }
        Ok(())
    }
}

/// The views derived so far and not yet written, and the cells summed so far.
struct Load {
    plans: Option<BTreeMap<(Uuid, Uuid), TreatmentPlanView>>,
    outcomes: Option<BTreeMap<(Uuid, Uuid), EpisodeOutcome>>,
    cells: BTreeMap<Cell, Tally>,
}

impl Load {
    fn new(projections: &[Projection]) -> Self {
        Self {
            plans: projections
                .contains(&Projection::TreatmentPlans)
                .then(BTreeMap::new),
            outcomes: projections
                .contains(&Projection::OutcomeStatistics)
                .then(BTreeMap::new),
            cells: BTreeMap::new(),
        }
    }

    /// Derives every wanted view of one episode stream's events (in version order).
    fn add(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let Some(episode_id) = first
            .stream_id
            .strip_prefix("episode-")
            .and_then(|id| id.parse::<Uuid>().ok())
        else {
            return Ok(());
        };
        let Some(chart) = episode_chart(events)? else {
            return Ok(());
        };
        let key = (first.clinic_id, episode_id);
        if let Some(plans) = &mut self.plans {
            plans.insert(key, derive(key.0, key.1, &chart));
        }
        if let Some(outcomes) = &mut self.outcomes {
            let outcome: EpisodeOutcome = derive(key.0, key.1, &chart);
            let tally = Tally::of(&outcome);
            for cell in Cell::of(&outcome) {
                self.cells.entry(cell).or_default().add(&tally);
            }
            outcomes.insert(key, outcome);
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        let plans = self.plans.as_ref().map_or(0, BTreeMap::len);
        plans.max(self.outcomes.as_ref().map_or(0, BTreeMap::len))
    }

    /// Writes the pending views, in one transaction.
    async fn write(
        &mut self,
        writer: &mut deadpool_postgres::Object,
    ) -> Result<(), ProjectionError> {
        let transaction = writer.transaction().await?;
        if let Some(plans) = &mut self.plans {
            write_views(&transaction, plans).await?;
        }
        if let Some(outcomes) = &mut self.outcomes {
            write_views(&transaction, outcomes).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// Writes the cells.
    async fn finish(&self, writer: &mut deadpool_postgres::Object) -> Result<(), ProjectionError> {
        if self.outcomes.is_some() {
            let transaction = writer.transaction().await?;
            cells::write_all(&transaction, &Tables::Rebuild.of(cells::TABLE), &self.cells).await?;
            transaction.commit().await?;
        }
        Ok(())
    }
}

/// Writes `views` into the model's fresh table and empties the map.
async fn write_views<M: EpisodeRow>(
    writer: &impl GenericClient,
    views: &mut BTreeMap<(Uuid, Uuid), M>,
) -> Result<(), ProjectionError> {
    if !views.is_empty() {
        M::write_rows(writer, &Tables::Rebuild.of(M::TABLE), views).await?;
        views.clear();
    }
    Ok(())
}
