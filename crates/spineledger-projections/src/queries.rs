//! What the query API reads from the read models. Every query is scoped to clinics the
//! caller names; nothing here crosses a clinic boundary on its own. Each runs in a
//! transaction of its own on the app role's pool whose clinic context (row-level
//! security) is those clinics, set with its first statement (`spineledger_store::scoped`):
//! a query's `WHERE clinic_id` and the database's wall say the same thing.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Pool};
use spineledger_readmodels::casemix::Subject;
use spineledger_readmodels::plan::OVERDUE_GRACE;
use spineledger_readmodels::release::{Months, Parts};
use spineledger_readmodels::{
    Cell, Dimension, EpisodeOutcome, Grouping, MinCell, TreatmentPlanView,
};
use spineledger_store::{ClinicScope, scoped};
use uuid::Uuid;

use crate::{Projection, ProjectionError, cells};

/// One episode's treatment plan, if the projection has seen the episode.
pub async fn treatment_plan(
    pool: &Pool,
    clinic_id: Uuid,
    episode_id: Uuid,
) -> Result<Option<TreatmentPlanView>, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare_cached("SELECT view FROM treatment_plans WHERE clinic_id = $1 AND episode_id = $2")
        .await?;
    let row = scoped(
        &transaction,
        &ClinicScope::one(clinic_id),
        transaction.query_opt(&statement, &[&clinic_id, &episode_id]),
    )
    .await?;
    transaction.commit().await?;
    row.map(|row| decode(row.try_get(0)?)).transpose()
}

/// Filters of a treatment plan list; `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct PlanFilter {
    /// Only this phase (`PlanPhase::as_str`).
    pub phase: Option<String>,
    /// Only plans that are (or are not) overdue.
    pub overdue: Option<OverdueFilter>,
    /// Only plans whose reassessment is (or is not) due.
    pub reassessment_due: Option<bool>,
    /// Only this patient's plans.
    pub patient_id: Option<Uuid>,
}

/// Only plans that are (`overdue`) or are not (`!overdue`) overdue as of `today`: more
/// than [`OVERDUE_GRACE`] past their next session due, as
/// [`TreatmentPlanView::status_at`] flags them. A plan without a due date is never overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverdueFilter {
    /// True: only overdue plans; false: only plans that are not.
    pub overdue: bool,
    /// The day it is judged on.
    pub today: DateTime<Utc>,
}

/// A plan's place in list order: next session due (earliest first; none last), then
/// episode id. A page starts after the cursor of the previous page's last plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCursor {
    /// As stored (microseconds), so the next page starts exactly after this plan.
    pub next_session_due: Option<DateTime<Utc>>,
    /// The episode, breaking ties.
    pub episode_id: Uuid,
}

/// A listed plan and its place in list order.
#[derive(Debug, Clone)]
pub struct ListedPlan {
    /// Where it sits in list order.
    pub cursor: PlanCursor,
    /// The plan.
    pub view: TreatmentPlanView,
}

/// A page of at most `limit` of one clinic's plans after `after` (keyset pagination:
/// stable under concurrent inserts), in list order: next session due first (the soonest,
/// i.e. the most overdue, first), plans without a due date (awaiting plan, as needed,
/// discharged) after them, ties by episode id.
///
/// The plans with a due date and those without are read by two statements, each an
/// index range scan in list order (`treatment_plans_due`, or the phase or patient index
/// when filtered by those): the second only when the first does not fill the page.
pub async fn list_treatment_plans(
    pool: &Pool,
    clinic_id: Uuid,
    filter: &PlanFilter,
    after: Option<PlanCursor>,
    limit: i64,
) -> Result<Vec<ListedPlan>, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let plans = scoped(
        &transaction,
        &ClinicScope::one(clinic_id),
        list_in(&transaction, clinic_id, filter, after, limit),
    )
    .await?;
    transaction.commit().await?;
    Ok(plans)
}

/// [`list_treatment_plans`] inside a transaction whose context is set.
async fn list_in(
    client: &impl GenericClient,
    clinic_id: Uuid,
    filter: &PlanFilter,
    after: Option<PlanCursor>,
    limit: i64,
) -> Result<Vec<ListedPlan>, ProjectionError> {
    let mut plans = Vec::new();
    let after_undated = after.filter(|cursor| cursor.next_session_due.is_none());
    if after_undated.is_none() {
        let after_dated = after.and_then(|c| c.next_session_due.map(|due| (due, c.episode_id)));
        plans = plans_page(
            client,
            clinic_id,
            filter,
            Section::Dated(after_dated),
            limit,
        )
        .await?;
    }
    let remaining = limit - i64::try_from(plans.len()).unwrap_or(i64::MAX);
    // An overdue plan has a due date by definition.
    let only_overdue = filter.overdue.is_some_and(|overdue| overdue.overdue);
    if remaining > 0 && !only_overdue {
        let after_episode = after_undated.map(|cursor| cursor.episode_id);
        let undated = Section::Undated(after_episode);
        plans.extend(plans_page(client, clinic_id, filter, undated, remaining).await?);
    }
    Ok(plans)
}

/// The part of the list order one statement reads.
enum Section {
    /// Plans with a due date, after this (due, episode id), in (due, episode id) order.
    Dated(Option<(DateTime<Utc>, Uuid)>),
    /// Plans without a due date, after this episode id, in episode id order.
    Undated(Option<Uuid>),
}

/// One section of a plan list. The statement names only the filters given (a handful of
/// statements, each prepared once per connection), so each gets the plan of its own.
async fn plans_page(
    client: &impl GenericClient,
    clinic_id: Uuid,
    filter: &PlanFilter,
    section: Section,
    limit: i64,
) -> Result<Vec<ListedPlan>, ProjectionError> {
    use tokio_postgres::types::ToSql;
    let overdue_before = filter
        .overdue
        .map(|overdue| (overdue.overdue, overdue.today - OVERDUE_GRACE));
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&clinic_id];
    let mut conditions = vec!["clinic_id = $1".to_owned()];
    if let Some(phase) = &filter.phase {
        conditions.push(format!("phase = {}", param(&mut params, phase)));
    }
    if let Some(patient) = &filter.patient_id {
        conditions.push(format!("patient_id = {}", param(&mut params, patient)));
    }
    if let Some(due) = &filter.reassessment_due {
        conditions.push(format!("reassessment_due = {}", param(&mut params, due)));
    }
    // Overdue: more than the grace past the due date (`status_at`: `today > due + grace`);
    // a plan without a due date is never overdue.
    match &overdue_before {
        Some((true, before)) => {
            conditions.push(format!("next_session_due < {}", param(&mut params, before)));
        }
        Some((false, before)) => conditions.push(format!(
            "(next_session_due IS NULL OR next_session_due >= {})",
            param(&mut params, before)
        )),
        None => {}
    }
    let order = match &section {
        Section::Dated(after) => {
            conditions.push("next_session_due IS NOT NULL".to_owned());
            if let Some((due, episode)) = after {
                let due = param(&mut params, due);
                let episode = param(&mut params, episode);
                conditions.push(format!(
                    "(next_session_due, episode_id) > ({due}, {episode})"
                ));
            }
            "next_session_due, episode_id"
        }
        Section::Undated(after) => {
            conditions.push("next_session_due IS NULL".to_owned());
            if let Some(episode) = after {
                conditions.push(format!("episode_id > {}", param(&mut params, episode)));
            }
            "episode_id"
        }
    };
    let limit_param = param(&mut params, &limit);
    let sql = format!(
        "SELECT next_session_due, episode_id, view FROM treatment_plans \
         WHERE {} ORDER BY {order} LIMIT {limit_param}",
        conditions.join(" AND ")
    );
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &params).await?;
    rows.into_iter()
        .map(|row| {
            Ok(ListedPlan {
                cursor: PlanCursor {
                    next_session_due: row.try_get(0)?,
                    episode_id: row.try_get(1)?,
                },
                view: decode(row.try_get(2)?)?,
            })
        })
        .collect()
}

/// A statistics answer before release: its parts, and the global position each clinic's
/// figures reflect.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The parts.
    pub parts: Parts,
    /// By clinic: the figures hold exactly the clinic's events up to this position, in
    /// the global order (0: none). Given back as `as_of` positions, they give the same
    /// figures again ([`crate::as_of`]).
    pub reflects: BTreeMap<Uuid, i64>,
}

/// The parts of the statistics of the episodes of `clinics` (none when empty: see
/// [`known_clinics`] for every clinic) first evaluated in the whole months of `window`,
/// grouped by `group_by`: one tally per clinic, month and group key, for
/// [`spineledger_readmodels::release`] to release.
///
/// They are read from the pre-aggregated cells of the smallest kept grouping that holds
/// `group_by`, in one read-only transaction, so they see one state of the model.
pub async fn outcome_parts(
    pool: &Pool,
    clinics: &[Uuid],
    window: Months,
    group_by: &[Dimension],
) -> Result<Answer, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // Before the snapshot is taken (by the first query): wait out a rebuild's swap of the
    // cells table, so that the cells and the checkpoints read below are of one state.
    transaction
        .batch_execute("LOCK TABLE outcome_cells IN ACCESS SHARE MODE")
        .await?;
    let parts = scoped(
        &transaction,
        &ClinicScope::of(clinics),
        parts_in(&transaction, clinics, window, group_by),
    )
    .await?;
    let reflects = outcome_positions(&transaction, clinics).await?;
    transaction.commit().await?;
    Ok(Answer { parts, reflects })
}

/// How far the outcome projection had read for each of `clinics`' shards (0 where it
/// has not started), in the transaction's snapshot: one read of the checkpoints.
async fn outcome_positions(
    client: &impl GenericClient,
    clinics: &[Uuid],
) -> Result<BTreeMap<Uuid, i64>, ProjectionError> {
    let statement = client
        .prepare_cached(
            "SELECT shard, shard_count, position FROM projection_checkpoints \
             WHERE projection = $1",
        )
        .await?;
    let mut shards: u8 = 1;
    let mut positions: BTreeMap<u8, i64> = BTreeMap::new();
    for row in client
        .query(&statement, &[&Projection::OutcomeStatistics.name()])
        .await?
    {
        let shard: i32 = row.try_get(0)?;
        let count: i32 = row.try_get(1)?;
        shards = u8::try_from(count).unwrap_or(shards);
        positions.insert(u8::try_from(shard).unwrap_or(u8::MAX), row.try_get(2)?);
    }
    Ok(clinics
        .iter()
        .map(|clinic| {
            let shard = spineledger_store::ClinicShard::of(*clinic, shards).index();
            (*clinic, positions.get(&shard).copied().unwrap_or(0))
        })
        .collect())
}

/// The episodes a case-mix comparison is fitted over, and the positions they reflect.
#[derive(Debug, Clone)]
pub struct Cohort {
    /// One subject per evaluated episode of a released clinic-month.
    pub subjects: Vec<Subject>,
    /// For each clinic reported on: the outcome projection's position (as in
    /// [`Answer::reflects`]).
    pub reflects: BTreeMap<Uuid, i64>,
}

/// The subjects of every episode of `clinics` first evaluated in the months of
/// `window`, from the clinic-months that hold at least `min_cell` episodes (a smaller
/// clinic-month is withheld from every figure, as in the statistics, so it takes no part
/// in the model either), read in one snapshot with the positions of `reported`.
pub async fn cohort(
    pool: &Pool,
    clinics: &[Uuid],
    reported: &[Uuid],
    window: Months,
    min_cell: MinCell,
) -> Result<Cohort, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    // As for the statistics: a rebuild's swap must not fall between rows and checkpoints.
    transaction
        .batch_execute("LOCK TABLE outcome_episodes IN ACCESS SHARE MODE")
        .await?;
    let from = window.from.map(month_start);
    let to = window.to.map(month_start);
    let statement = transaction
        .prepare_cached(
            "SELECT facts FROM outcome_episodes \
             WHERE clinic_id = ANY($1) AND evaluated_at IS NOT NULL \
               AND ($2::timestamptz IS NULL OR evaluated_at >= $2) \
               AND ($3::timestamptz IS NULL OR evaluated_at < $3)",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&clinics, &from, &to];
    let read = async {
        let rows = transaction.query_raw(&statement, params).await?;
        futures::pin_mut!(rows);
        let mut by_part: BTreeMap<(Uuid, Option<NaiveDate>), Vec<Option<Subject>>> =
            BTreeMap::new();
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
            let outcome: EpisodeOutcome = decode(row.try_get(0)?)?;
            by_part
                .entry((outcome.clinic_id, outcome.evaluated_month()))
                .or_default()
                .push(Subject::of(&outcome));
        }
        Ok::<_, ProjectionError>(by_part)
    };
    let by_part = scoped(&transaction, &ClinicScope::of(clinics), read).await?;
    let reflects = outcome_positions(&transaction, reported).await?;
    transaction.commit().await?;
    let subjects = by_part
        .into_values()
        .filter(|episodes| episodes.len() >= min_cell.get())
        .flatten()
        .flatten()
        .collect();
    Ok(Cohort { subjects, reflects })
}

/// 00:00 UTC on `month`.
fn month_start(month: NaiveDate) -> DateTime<Utc> {
    month.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The cells of clinics `$1`, grouping `$2` and the months `[$3, $4)` (unbounded where
/// NULL; cells of episodes never evaluated only when both are).
const CELLS_OF_WINDOW: &str = "clinic_id = ANY($1) AND grouping = $2 \
     AND ($3::date IS NULL OR evaluated_month >= $3) \
     AND ($4::date IS NULL OR evaluated_month < $4)";

/// [`outcome_parts`] inside a transaction whose context is set.
async fn parts_in(
    client: &impl GenericClient,
    clinics: &[Uuid],
    window: Months,
    group_by: &[Dimension],
) -> Result<Parts, ProjectionError> {
    let grouping = Grouping::serving(group_by);
    let statement = client
        .prepare_cached(&format!(
            "SELECT clinic_id, evaluated_month, diagnosis, initial_sessions, \
                    frequency_phase, adherence_band, age_band, {columns} \
             FROM outcome_cells WHERE {CELLS_OF_WINDOW}",
            columns = cells::tally_columns()
        ))
        .await?;
    let bits = grouping.bits();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&clinics, &bits, &window.from, &window.to];
    let rows = client.query_raw(&statement, params).await?;
    futures::pin_mut!(rows);
    let mut parts = Parts::new(group_by);
    while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
        let cell = Cell {
            clinic_id: row.try_get(0)?,
            month: row.try_get(1)?,
            grouping,
            values: [
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
                row.try_get(6)?,
            ],
        };
        let key = cell.group_key(group_by).ok_or_else(|| {
            ProjectionError::CorruptRow("an outcome cell lacks a dimension it keeps".into())
        })?;
        parts.add(cell.clinic_id, cell.month, key, &cells::tally_of(&row, 7)?);
    }
    if let Some((_, other)) = parts.sibling_dimension() {
        // The other plan dimension's part sizes, for the joint release of `no_plan`.
        let grouping = Grouping::serving(&[other]);
        let column = other.as_str();
        let statement = client
            .prepare_cached(&format!(
                "SELECT clinic_id, evaluated_month, {column}, episodes FROM outcome_cells \
                 WHERE {CELLS_OF_WINDOW}"
            ))
            .await?;
        let bits = grouping.bits();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&clinics, &bits, &window.from, &window.to];
        let rows = client.query_raw(&statement, params).await?;
        futures::pin_mut!(rows);
        while let Some(row) = futures::TryStreamExt::try_next(&mut rows).await? {
            let value: Option<String> = row.try_get(2)?;
            let episodes: i64 = row.try_get(3)?;
            parts.add_sibling(
                row.try_get(0)?,
                row.try_get(1)?,
                value.ok_or_else(|| {
                    ProjectionError::CorruptRow("an outcome cell lacks a dimension it keeps".into())
                })?,
                u64::try_from(episodes).unwrap_or(0),
            );
        }
    }
    Ok(parts)
}

/// Every clinic with events, for statistics over every clinic when a request names
/// none. Only the ids: the one thing the app role may learn without a clinic context
/// (through the owner's function `spineledger_known_clinics()`); a caller whose clinics
/// come from its credentials should name those instead.
pub async fn known_clinics(pool: &Pool) -> Result<Vec<Uuid>, ProjectionError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT clinic_id FROM spineledger_known_clinics() AS c(clinic_id)")
        .await?;
    client
        .query(&statement, &[])
        .await?
        .iter()
        .map(|row| Ok(row.try_get(0)?))
        .collect()
}

/// Adds a statement parameter; returns its placeholder (`$n`).
fn param<'a>(
    params: &mut Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)>,
    value: &'a (dyn tokio_postgres::types::ToSql + Sync),
) -> String {
    params.push(value);
    format!("${}", params.len())
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ProjectionError> {
    serde_json::from_value(value).map_err(|error| ProjectionError::corrupt_row(&error))
}
