//! A rebuild's bulk phase: the read models of the whole log, built from one read of it.
//!
//! In one read-only REPEATABLE READ snapshot (which assigns no transaction id, so it holds
//! no live reader back) the head a never-skip reader reaches now is taken, and every
//! episode event up to it is streamed by clinic, stream and version
//! ([`spineledger_store::read_log_by_stream`]). Each stream's events arrive together: they
//! are decoded once, put in clinical order once (the chart), and every view of every
//! projection being rebuilt is derived from that chart. Views are written to the fresh
//! tables through a second connection in batches of [`EPISODES_PER_WRITE`] episodes (one
//! multi-row insert per table, the statement the live projector uses) while the next
//! batch is derived, and the outcome cells are summed in memory and written once at the
//! end. The live projector's path
//! (extend, or derive again from the stream) gives the same views, which the swap's
//! digest compare checks.
//!
//! Memory: one stream's events, up to four batches of views (one being filled, two
//! queued, one being written), and the cells (a few hundred bytes each; a clinic-month
//! has at most as many cells as episodes, times the seven kept groupings).

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Pool};
use futures::TryStreamExt as _;
use spineledger_domain::EpisodeId;
use spineledger_readmodels::{Cell, EpisodeOutcome, Tally, TreatmentPlanView, derive};
use spineledger_store::{GlobalCursor, RecordedEvent};
use uuid::Uuid;

use crate::models::{EpisodeRow, episode_chart};
use crate::{Projection, ProjectionError, Tables, cells};

/// Episodes whose views are written per statement.
const EPISODES_PER_WRITE: usize = 1000;

/// Builds `projections` into their fresh tables from the log up to its head; returns the
/// number of episode events read (the read models' input; patient streams are not read)
/// and the head. The views
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
    // One statement reads the whole log: no statement timeout may cut it short.
    snapshot
        .batch_execute("SET LOCAL statement_timeout = 0")
        .await?;
    let mut load = Load::new(projections);
    let read = match read_and_load(&snapshot, &mut load, writer).await {
        Ok(read) => read,
        Err(error) => {
            // The server may still be sending the rest of the log: close the connection
            // rather than hand it back to the pool mid-stream.
            drop(snapshot);
            drop(deadpool_postgres::Object::take(reader));
            return Err(error);
        }
    };
    // The snapshot is done with: no session idles in it while the cells are written.
    snapshot.commit().await?;
    load.finish(writer).await?;
    Ok((read, head))
}

/// Reads the log through `snapshot` into `load`, writing views through `writer`.
async fn read_and_load(
    snapshot: &deadpool_postgres::Transaction<'_>,
    load: &mut Load,
    writer: &mut deadpool_postgres::Object,
) -> Result<u64, ProjectionError> {
    let events = spineledger_store::read_log_by_stream(snapshot, "episode-").await?;
    load.add_log(events, writer).await
}

impl Load {
    /// Adds every stream of `events` (ordered by stream and version) and writes the views
    /// through `writer` in batches; returns how many events it read. Reading and deriving
    /// go on while a batch is being written (at most two batches wait), so PostgreSQL's
    /// inserts and the folding overlap.
    async fn add_log(
        &mut self,
        events: impl futures::Stream<Item = Result<RecordedEvent, spineledger_store::StoreError>>,
        writer: &mut deadpool_postgres::Object,
    ) -> Result<u64, ProjectionError> {
        let (batches, mut to_write) = tokio::sync::mpsc::channel::<Batch>(2);
        let this = &mut *self;
        let produce = async move {
            futures::pin_mut!(events);
            let mut stream: Vec<RecordedEvent> = Vec::new();
            let mut read = 0_u64;
            while let Some(event) = events.try_next().await? {
                let same = stream.last().is_some_and(|last| {
                    last.clinic_id == event.clinic_id && last.stream_id == event.stream_id
                });
                if !same && !stream.is_empty() {
                    this.add(&stream)?;
                    stream.clear();
                    if this.pending() >= EPISODES_PER_WRITE {
                        send(&batches, this.take_batch()).await?;
                    }
                }
                stream.push(event);
                read += 1;
                if read.is_multiple_of(PROGRESS_STEP) {
                    rebuilt_events().add(PROGRESS_STEP, &[]);
                }
                if read.is_multiple_of(200_000) {
                    tracing::info!(events = read, "rebuilding");
                }
            }
            rebuilt_events().add(read % PROGRESS_STEP, &[]);
            if !stream.is_empty() {
                this.add(&stream)?;
            }
            send(&batches, this.take_batch()).await?;
            Ok::<u64, ProjectionError>(read)
        };
        let consume = async {
            while let Some(batch) = to_write.recv().await {
                batch.write(writer).await?;
            }
            Ok::<(), ProjectionError>(())
        };
        let (read, ()) = futures::try_join!(produce, consume)?;
        Ok(read)
    }
}

/// Events between two reports of the rebuild's progress.
const PROGRESS_STEP: u64 = 10_000;

/// Rebuild progress: `spineledger.rebuild.events`, events of the log read and folded by
/// a rebuild's bulk phase (its rate is the rebuild's speed; compare with the log's
/// size for how far it is).
fn rebuilt_events() -> &'static opentelemetry::metrics::Counter<u64> {
    static EVENTS: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    EVENTS.get_or_init(|| {
        opentelemetry::global::meter("spineledger")
            .u64_counter("spineledger.rebuild.events")
            .with_unit("{event}")
            .with_description("Events of the log read and folded by a rebuild's bulk phase")
            .build()
    })
}

/// Hands a batch to the writer.
async fn send(
    batches: &tokio::sync::mpsc::Sender<Batch>,
    batch: Batch,
) -> Result<(), ProjectionError> {
    batches
        .send(batch)
        .await
        .map_err(|_| ProjectionError::CorruptRow("the rebuild's writer stopped".into()))
}

/// Views to write together.
struct Batch {
    plans: BTreeMap<(Uuid, Uuid), TreatmentPlanView>,
    outcomes: BTreeMap<(Uuid, Uuid), EpisodeOutcome>,
}

impl Batch {
    /// Writes the views into the fresh tables, in one transaction.
    async fn write(self, writer: &mut deadpool_postgres::Object) -> Result<(), ProjectionError> {
        let transaction = writer.transaction().await?;
        write_views(&transaction, &self.plans).await?;
        write_views(&transaction, &self.outcomes).await?;
        transaction.commit().await?;
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
        // The live projector's own reading of a stream id.
        let Some(EpisodeId(episode_id)) = EpisodeId::from_stream_id(&first.stream_id) else {
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

    /// The pending views, taken out to be written.
    fn take_batch(&mut self) -> Batch {
        Batch {
            plans: self.plans.as_mut().map(std::mem::take).unwrap_or_default(),
            outcomes: self
                .outcomes
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default(),
        }
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

/// Writes `views` into the model's fresh table.
async fn write_views<M: EpisodeRow>(
    writer: &impl GenericClient,
    views: &BTreeMap<(Uuid, Uuid), M>,
) -> Result<(), ProjectionError> {
    if !views.is_empty() {
        M::write_rows(writer, &Tables::Rebuild.of(M::TABLE), views).await?;
    }
    Ok(())
}
