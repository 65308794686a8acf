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

/// The outcome facts of the episodes of `clinics` (every clinic when empty) first
/// evaluated in `[from, to)`.
pub async fn outcome_episodes(
    client: &impl GenericClient,
    clinics: &[Uuid],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<EpisodeOutcome>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT facts FROM outcome_episodes \
             WHERE (cardinality($1::uuid[]) = 0 OR clinic_id = ANY($1)) \
               AND ($2::timestamptz IS NULL OR evaluated_at >= $2) \
               AND ($3::timestamptz IS NULL OR evaluated_at < $3) \
             ORDER BY clinic_id, episode_id",
        )
        .await?;
    let rows = client.query(&statement, &[&clinics, &from, &to]).await?;
    rows.into_iter()
        .map(|row| decode(row.try_get(0)?))
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ProjectionError> {
    serde_json::from_value(value).map_err(|error| ProjectionError::corrupt_row(&error))
}
