//! The read-model tables and how a batch of events lands in them. The folding itself is
//! pure (`spineledger-readmodels`); this module loads the affected rows, folds the batch
//! in, and writes them back — all inside the projector's transaction.
//!
//! A view is a function of its episode's chart (clinical order, corrections applied). In
//! the common case the batch's event simply extends the stored view; a late entry, a
//! correction, or a stream's events met out of version order make the view be derived
//! again from the episode's events up to the end of the batch — exactly the events the
//! projector has consumed of that stream, by the never-skip read rule.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::GenericClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spineledger_domain::{Chart, EpisodeEvent, EpisodeId};
use spineledger_readmodels::{
    EpisodeOutcome, EpisodeView, TreatmentPlanView, cell_changes, derive, extend,
};
use spineledger_store::{GlobalCursor, RecordedEvent, StreamKey, read_streams_upto};
use uuid::Uuid;

use crate::{ProjectionError, cells};

/// The projections this service maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// The current treatment plan of each episode (`treatment_plans`).
    TreatmentPlans,
    /// Per-episode outcome facts that statistics aggregate (`outcome_episodes`).
    OutcomeStatistics,
    /// Each clinic's verifiable log (`clinic_log`): not a read model but an append-only
    /// index, kept by the integrator ([`crate::clinic_log`]). It is never rebuilt.
    ClinicLog,
}

impl Projection {
    /// Every read model (what `rebuild --all` rebuilds).
    pub const ALL: [Self; 2] = [Self::TreatmentPlans, Self::OutcomeStatistics];

    /// Everything the projector runs: the read models and the integrator.
    pub const RUNNING: [Self; 3] = [
        Self::TreatmentPlans,
        Self::OutcomeStatistics,
        Self::ClinicLog,
    ];

    /// Whether its tasks take their events from the worker's one read of the log. The
    /// integrator does not: it also reads the access log, in step with the events.
    pub(crate) fn follows_tail(self) -> bool {
        self != Self::ClinicLog
    }

    /// The projection's name (in checkpoints, leases and the `rebuild` command).
    pub fn name(self) -> &'static str {
        match self {
            Self::TreatmentPlans => "treatment_plans",
            Self::OutcomeStatistics => "outcome_statistics",
            Self::ClinicLog => "clinic_log",
        }
    }

    /// The projection named `name`.
    ///
    /// # Errors
    /// [`ProjectionError::UnknownProjection`] for any other name.
    pub fn from_name(name: &str) -> Result<Self, ProjectionError> {
        Self::RUNNING
            .into_iter()
            .find(|projection| projection.name() == name)
            .ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    /// The tables holding the read model: the primary one first (a rebuild writes each
    /// as `<table>_rebuild`, then swaps them all).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Self::TreatmentPlans => &["treatment_plans"],
            Self::OutcomeStatistics => &["outcome_episodes", "outcome_cells"],
            Self::ClinicLog => &["clinic_log"],
        }
    }

    /// Applies `events` (in global order) to the model's `tables`.
    pub async fn apply(
        self,
        client: &impl GenericClient,
        tables: Tables,
        events: &[RecordedEvent],
    ) -> Result<usize, ProjectionError> {
        let episode_events = decode_episode_events(events)?;
        let Some(upto) = events.last().map(|event| event.cursor) else {
            return Ok(0);
        };
        if episode_events.is_empty() {
            return Ok(0);
        }
        match self {
            Self::TreatmentPlans => {
                fold_rows::<TreatmentPlanView>(client, tables, &episode_events, upto).await
            }
            Self::OutcomeStatistics => {
                fold_rows::<EpisodeOutcome>(client, tables, &episode_events, upto).await
            }
            Self::ClinicLog => Err(ProjectionError::NotAReadModel(self.name())),
        }
    }

    /// A SHA-256 digest of the model's rows (their text form) in key order, table by
    /// table: equal digests, equal models. Rows are streamed and hashed one by one, so
    /// a table's size is not limited by any single value's size.
    pub async fn digest(
        self,
        client: &impl GenericClient,
        tables: Tables,
    ) -> Result<String, ProjectionError> {
        use futures::TryStreamExt;
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for table in self.tables() {
            let key = if *table == "outcome_cells" {
                "t.clinic_id, t.cell"
            } else {
                "t.clinic_id, t.episode_id"
            };
            hasher.update(table.as_bytes());
            hasher.update(b"\n");
            let sql = format!("SELECT t::text FROM {} t ORDER BY {key}", tables.of(table));
            let rows = client.query_raw(&sql, std::iter::empty::<i32>()).await?;
            futures::pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                let text: &str = row.try_get(0)?;
                hasher.update(text.as_bytes());
                hasher.update(b"\n");
            }
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect())
    }
}

/// Which copy of a projection's tables a batch writes: the live ones, or a rebuild's
/// fresh ones (`<table>_rebuild`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// The tables queries read.
    Live,
    /// The fresh tables a rebuild fills before it swaps them in.
    Rebuild,
}

impl Tables {
    /// The name of `table` in this copy.
    pub fn of(self, table: &str) -> String {
        match self {
            Self::Live => table.to_owned(),
            Self::Rebuild => format!("{table}_rebuild"),
        }
    }
}

/// An episode event with where it belongs.
pub(crate) struct EpisodeFact {
    clinic_id: Uuid,
    episode_id: Uuid,
    event_id: Uuid,
    version: u64,
    event: EpisodeEvent,
}

/// Decodes the events of episode streams; other streams (patients) are not part of these
/// models. An undecodable event stops the projector: skipping it would be silent loss.
pub(crate) fn decode_episode_events(
    events: &[RecordedEvent],
) -> Result<Vec<EpisodeFact>, ProjectionError> {
    let mut facts = Vec::with_capacity(events.len());
    for stored in events {
        let Some(EpisodeId(episode_id)) = EpisodeId::from_stream_id(&stored.stream_id) else {
            continue;
        };
        let event = EpisodeEvent::from_payload(
            &stored.event_type,
            stored.schema_version,
            stored.payload.clone(),
        )
        .map_err(|error| ProjectionError::Undecodable {
            event_id: stored.event_id,
            event_type: stored.event_type.clone(),
            reason: error.to_string(),
        })?;
        facts.push(EpisodeFact {
            clinic_id: stored.clinic_id,
            episode_id,
            event_id: stored.event_id,
            version: stored.version,
            event,
        });
    }
    Ok(facts)
}

/// An episode's treatment plan folded from `events` (one episode stream's stored events,
/// in version order, however many of them: all, or those up to a moment), with the
/// projector's own fold: what the read model said, or would have said, after them.
/// `None` when they hold no episode fact.
///
/// # Errors
/// An event that does not decode.
pub fn treatment_plan_of(
    clinic_id: Uuid,
    episode_id: Uuid,
    events: &[RecordedEvent],
) -> Result<Option<TreatmentPlanView>, ProjectionError> {
    Ok(episode_chart(events)?.map(|chart| derive(clinic_id, episode_id, &chart)))
}

/// The chart of one episode stream's events (in version order); `None` when they hold no
/// episode fact.
pub(crate) fn episode_chart(events: &[RecordedEvent]) -> Result<Option<Chart>, ProjectionError> {
    let facts = decode_episode_events(events)?;
    if facts.is_empty() {
        return Ok(None);
    }
    Ok(Some(Chart::new(
        facts
            .into_iter()
            .map(|fact| (fact.event_id, fact.version, fact.event)),
    )))
}

/// The charts of `episodes` from their events up to `upto` in the global order.
async fn read_charts(
    client: &impl GenericClient,
    episodes: &BTreeSet<(Uuid, Uuid)>,
    upto: GlobalCursor,
) -> Result<BTreeMap<(Uuid, Uuid), Chart>, ProjectionError> {
    let streams: Vec<StreamKey> = episodes
        .iter()
        .map(|(clinic, episode)| StreamKey::new(*clinic, EpisodeId(*episode).stream_id()))
        .collect();
    let stored = read_streams_upto(client, &streams, upto).await?;
    let mut by_episode: BTreeMap<(Uuid, Uuid), Vec<EpisodeFact>> = BTreeMap::new();
    for fact in decode_episode_events(&stored)? {
        by_episode
            .entry((fact.clinic_id, fact.episode_id))
            .or_default()
            .push(fact);
    }
    Ok(by_episode
        .into_iter()
        .map(|(key, facts)| {
            let chart = Chart::new(
                facts
                    .into_iter()
                    .map(|fact| (fact.event_id, fact.version, fact.event)),
            );
            (key, chart)
        })
        .collect())
}

/// A per-episode read model stored as one JSONB row.
pub(crate) trait EpisodeRow:
    EpisodeView + Serialize + DeserializeOwned + Send + Sync
{
    /// The table holding the model.
    const TABLE: &'static str;
    /// The JSONB column holding the model.
    const COLUMN: &'static str;
    /// Whether [`EpisodeRow::upsert`] needs the rows as they were before the batch.
    const NEEDS_BEFORE: bool = false;
    /// Writes rows into `table` (inserted, or replacing the stored ones), sorted by key
    /// so concurrent writers lock in one order.
    async fn write_rows(
        client: &impl GenericClient,
        table: &str,
        rows: &BTreeMap<(Uuid, Uuid), Self>,
    ) -> Result<(), ProjectionError>;
    /// Writes a batch's rows and whatever depends on them; `before` holds the stored
    /// rows of the same episodes as they were loaded (empty unless
    /// [`EpisodeRow::NEEDS_BEFORE`]).
    async fn upsert(
        client: &impl GenericClient,
        tables: Tables,
        before: &BTreeMap<(Uuid, Uuid), Self>,
        rows: &BTreeMap<(Uuid, Uuid), Self>,
    ) -> Result<(), ProjectionError> {
        let _ = before;
        Self::write_rows(client, &tables.of(Self::TABLE), rows).await
    }
}

async fn fold_rows<M: EpisodeRow + Clone>(
    client: &impl GenericClient,
    tables: Tables,
    facts: &[EpisodeFact],
    upto: GlobalCursor,
) -> Result<usize, ProjectionError> {
    let table = tables.of(M::TABLE);
    let mut keys: Vec<(Uuid, Uuid)> = facts.iter().map(|f| (f.clinic_id, f.episode_id)).collect();
    keys.sort_unstable();
    keys.dedup();
    let clinics: Vec<Uuid> = keys.iter().map(|(clinic, _)| *clinic).collect();
    let episodes: Vec<Uuid> = keys.iter().map(|(_, episode)| *episode).collect();
    let sql = format!(
        "SELECT m.* FROM unnest($1::uuid[], $2::uuid[]) AS k(clinic_id, episode_id) \
         CROSS JOIN LATERAL (SELECT t.clinic_id, t.episode_id, t.{column} FROM {table} t \
                             WHERE t.clinic_id = k.clinic_id AND t.episode_id = k.episode_id \
                             OFFSET 0) m",
        column = M::COLUMN
    );
    let statement = client.prepare_cached(&sql).await?;
    let mut rows: BTreeMap<(Uuid, Uuid), M> = BTreeMap::new();
    for row in client.query(&statement, &[&clinics, &episodes]).await? {
        let value: serde_json::Value = row.try_get(2)?;
        let model =
            serde_json::from_value(value).map_err(|error| ProjectionError::corrupt_row(&error))?;
        rows.insert((row.try_get(0)?, row.try_get(1)?), model);
    }
    let before = if M::NEEDS_BEFORE {
        rows.clone()
    } else {
        BTreeMap::new()
    };
    let mut rederive = BTreeSet::new();
    for fact in facts {
        let key = (fact.clinic_id, fact.episode_id);
        if rederive.contains(&key) {
            continue;
        }
        let view = rows
            .entry(key)
            .or_insert_with(|| M::empty(fact.clinic_id, fact.episode_id));
        if !extend(view, fact.event_id, fact.version, &fact.event) {
            rederive.insert(key);
        }
    }
    if !rederive.is_empty() {
        for (key, chart) in read_charts(client, &rederive, upto).await? {
            rows.insert(key, derive(key.0, key.1, &chart));
        }
    }
    M::upsert(client, tables, &before, &rows).await?;
    Ok(facts.len())
}

fn to_json<M: Serialize>(model: &M) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(model).map_err(|error| ProjectionError::corrupt_row(&error))
}

impl EpisodeRow for TreatmentPlanView {
    const TABLE: &'static str = "treatment_plans";
    const COLUMN: &'static str = "view";

    async fn write_rows(
        client: &impl GenericClient,
        table: &str,
        rows: &BTreeMap<(Uuid, Uuid), Self>,
    ) -> Result<(), ProjectionError> {
        let mut clinics = Vec::with_capacity(rows.len());
        let mut episodes = Vec::with_capacity(rows.len());
        let mut phases = Vec::with_capacity(rows.len());
        let mut due = Vec::with_capacity(rows.len());
        let mut reassessment = Vec::with_capacity(rows.len());
        let mut views = Vec::with_capacity(rows.len());
        let mut patients = Vec::with_capacity(rows.len());
        for ((clinic, episode), view) in rows {
            clinics.push(*clinic);
            episodes.push(*episode);
            phases.push(view.phase.as_str());
            due.push(view.next_session_due());
            reassessment.push(view.reassessment_due());
            views.push(to_json(view)?);
            patients.push(view.patient_id);
        }
        let sql = format!(
            "INSERT INTO {table} (clinic_id, episode_id, phase, next_session_due, \
                 reassessment_due, view, patient_id) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], \
                 $5::bool[], $6::jsonb[], $7::uuid[]) \
             ON CONFLICT (clinic_id, episode_id) DO UPDATE SET \
                 phase = EXCLUDED.phase, next_session_due = EXCLUDED.next_session_due, \
                 reassessment_due = EXCLUDED.reassessment_due, view = EXCLUDED.view, \
                 patient_id = EXCLUDED.patient_id"
        );
        let statement = client.prepare_cached(&sql).await?;
        client
            .execute(
                &statement,
                &[
                    &clinics,
                    &episodes,
                    &phases,
                    &due,
                    &reassessment,
                    &views,
                    &patients,
                ],
            )
            .await?;
        Ok(())
    }
}

/// The outcome facts, and the cells of the statistics they are counted in: each
/// episode's old contribution leaves its cells and its new one joins them.
impl EpisodeRow for EpisodeOutcome {
    const TABLE: &'static str = "outcome_episodes";
    const COLUMN: &'static str = "facts";
    const NEEDS_BEFORE: bool = true;

    async fn write_rows(
        client: &impl GenericClient,
        table: &str,
        rows: &BTreeMap<(Uuid, Uuid), Self>,
    ) -> Result<(), ProjectionError> {
        let mut clinics = Vec::with_capacity(rows.len());
        let mut episodes = Vec::with_capacity(rows.len());
        let mut evaluated = Vec::with_capacity(rows.len());
        let mut facts = Vec::with_capacity(rows.len());
        for ((clinic, episode), outcome) in rows {
            clinics.push(*clinic);
            episodes.push(*episode);
            evaluated.push(outcome.evaluated_at);
            facts.push(to_json(outcome)?);
        }
        let sql = format!(
            "INSERT INTO {table} (clinic_id, episode_id, evaluated_at, facts) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::jsonb[]) \
             ON CONFLICT (clinic_id, episode_id) DO UPDATE SET \
                 evaluated_at = EXCLUDED.evaluated_at, facts = EXCLUDED.facts"
        );
        let statement = client.prepare_cached(&sql).await?;
        client
            .execute(&statement, &[&clinics, &episodes, &evaluated, &facts])
            .await?;
        Ok(())
    }

    async fn upsert(
        client: &impl GenericClient,
        tables: Tables,
        before: &BTreeMap<(Uuid, Uuid), Self>,
        rows: &BTreeMap<(Uuid, Uuid), Self>,
    ) -> Result<(), ProjectionError> {
        Self::write_rows(client, &tables.of(Self::TABLE), rows).await?;
        let changes = cell_changes(
            rows.iter()
                .filter(|(key, after)| before.get(*key) != Some(*after))
                .map(|(key, after)| (before.get(key), after)),
        );
        cells::apply_changes(client, &tables.of(cells::TABLE), changes).await
    }
}
