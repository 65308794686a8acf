//! What the query API reads from the read models. Every query is scoped to clinics the
//! caller names; nothing here crosses a clinic boundary on its own.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use spineledger_readmodels::plan::OVERDUE_GRACE;
use spineledger_readmodels::{EpisodeOutcome, TreatmentPlanView};
use uuid::Uuid;

use crate::ProjectionError;

/// One episode's treatment plan, if the projection has seen the episode.
pub async fn treatment_plan(
    client: &impl GenericClient,
    clinic_id: Uuid,
    episode_id: Uuid,
) -> Result<Option<TreatmentPlanView>, ProjectionError> {
    let statement = client
        .prepare_cached("SELECT view FROM treatment_plans WHERE clinic_id = $1 AND episode_id = $2")
        .await?;
    let row = client
        .query_opt(&statement, &[&clinic_id, &episode_id])
        .await?;
    row.map(|row| decode(row.try_get(0)?)).transpose()
}

/// Filters of a treatment plan list.
#[derive(Debug, Clone, Default)]
pub struct PlanFilter {
    /// Only this phase (`PlanPhase::as_str`).
    pub phase: Option<String>,
    /// Only plans overdue as of this time.
    pub overdue_at: Option<DateTime<Utc>>,
    /// Only plans whose reassessment is (or is not) due.
    pub reassessment_due: Option<bool>,
}

/// A page of one clinic's plans in episode id order, after `after` (keyset pagination:
/// stable under concurrent inserts).
pub async fn list_treatment_plans(
    client: &impl GenericClient,
    clinic_id: Uuid,
    filter: &PlanFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TreatmentPlanView>, ProjectionError> {
    let due_before = filter.overdue_at.map(|today| today - OVERDUE_GRACE);
    let statement = client
        .prepare_cached(
            "SELECT view FROM treatment_plans \
             WHERE clinic_id = $1 \
               AND ($2::text IS NULL OR phase = $2) \
               AND ($3::timestamptz IS NULL OR next_session_due < $3) \
               AND ($4::bool IS NULL OR reassessment_due = $4) \
               AND ($5::uuid IS NULL OR episode_id > $5) \
             ORDER BY episode_id LIMIT $6",
        )
        .await?;
    let rows = client
        .query(
            &statement,
            &[
                &clinic_id,
                &filter.phase,
                &due_before,
                &filter.reassessment_due,
                &after,
                &limit,
            ],
        )
        .await?;
    rows.into_iter()
        .map(|row| decode(row.try_get(0)?))
        .collect()
}

/// The default of how many episodes one statistics query may aggregate (about 2 KB of
/// facts each): statistics are computed at query time, and a broader query must be
/// narrowed (clinics, dates) rather than exhaust the server's memory.
pub const MAX_EPISODES_PER_QUERY: usize = 100_000;

/// The outcome facts of the episodes of `clinics` (every clinic when empty) first
/// evaluated in `[from, to)`; [`ProjectionError::QueryTooBroad`] beyond `max_episodes`.
/// Rows are streamed and decoded one by one.
pub async fn outcome_episodes(
    client: &impl GenericClient,
    clinics: &[Uuid],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    max_episodes: usize,
) -> Result<Vec<EpisodeOutcome>, ProjectionError> {
    use futures::TryStreamExt;
    let statement = client
        .prepare_cached(
            "SELECT facts FROM outcome_episodes \
             WHERE (cardinality($1::uuid[]) = 0 OR clinic_id = ANY($1)) \
               AND ($2::timestamptz IS NULL OR evaluated_at >= $2) \
               AND ($3::timestamptz IS NULL OR evaluated_at < $3) \
             ORDER BY clinic_id, episode_id LIMIT $4",
        )
        .await?;
    let limit = i64::try_from(max_episodes.saturating_add(1)).unwrap_or(i64::MAX);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&clinics, &from, &to, &limit];
    let rows = client.query_raw(&statement, params).await?;
    futures::pin_mut!(rows);
    let mut episodes = Vec::new();
    while let Some(row) = rows.try_next().await? {
        if episodes.len() == max_episodes {
            return Err(ProjectionError::QueryTooBroad {
                limit: max_episodes,
            });
        }
        episodes.push(decode(row.try_get(0)?)?);
    }
    Ok(episodes)
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ProjectionError> {
    serde_json::from_value(value).map_err(|error| ProjectionError::corrupt_row(&error))
}
