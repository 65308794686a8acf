//! The pre-aggregated outcome statistics (`outcome_cells`): one exact tally per cell
//! ([`spineledger_readmodels::Cell`]), kept by the outcome projector in the same
//! transaction as the episode facts it sums, and read by statistics queries instead of
//! the episodes.
//!
//! A batch loads the cells its episodes leave or join, adds the changes in memory
//! ([`Tally`] arithmetic, integers only), writes back the cells that still count an
//! episode and deletes those that no longer do. A cell belongs to one clinic, so to one
//! shard, so to one projector at a time; a stale lease holder's transaction fails its
//! checkpoint compare-and-set and rolls its cell writes back with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, OnceLock};

use deadpool_postgres::GenericClient;
use spineledger_readmodels::{COUNTS, Cell, Count, Grouping, Tally};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::ProjectionError;

/// The table.
pub const TABLE: &str = "outcome_cells";

/// A cell's key columns, in the order [`CellRows`] writes them.
const KEY_COLUMNS: [&str; 9] = [
    "clinic_id",
    "cell",
    "evaluated_month",
    "grouping",
    "diagnosis",
    "initial_sessions",
    "frequency_phase",
    "adherence_band",
    "age_band",
];

/// The tally's array columns, after its counts.
const ARRAY_COLUMNS: [&str; 3] = [
    "sessions_to_first_nrs_response",
    "pain_before_n",
    "pain_before_sum",
];

/// The tally's columns: every count, then the arrays.
fn tally_column_names() -> impl Iterator<Item = &'static str> {
    Count::ALL
        .iter()
        .map(|count| count.column())
        .chain(ARRAY_COLUMNS)
}

/// The tally's columns, in the order [`tally_of`] reads them from `offset` on.
pub(crate) fn tally_columns() -> &'static str {
    static COLUMNS: LazyLock<String> =
        LazyLock::new(|| tally_column_names().collect::<Vec<_>>().join(", "));
    &COLUMNS
}

/// The tally in `row`'s columns from `offset` on (as [`tally_columns`] lists them).
pub(crate) fn tally_of(row: &Row, offset: usize) -> Result<Tally, ProjectionError> {
    let mut counts = [0_i64; COUNTS];
    for (index, count) in counts.iter_mut().enumerate() {
        *count = row.try_get(offset + index)?;
    }
    let histogram: Vec<i64> = row.try_get(offset + COUNTS)?;
    let pain_n: Vec<i64> = row.try_get(offset + COUNTS + 1)?;
    let pain_sum: Vec<i64> = row.try_get(offset + COUNTS + 2)?;
    Tally::from_parts(&counts, histogram, &pain_n, &pain_sum).ok_or_else(|| {
        ProjectionError::CorruptRow("an outcome cell's trajectory is not 12 sessions long".into())
    })
}

/// Every cell in `table`, for tests and audits that compare the cells with the episodes
/// they sum (the caller's role and clinic context decide which rows it sees).
pub async fn stored(
    client: &impl GenericClient,
    table: &str,
) -> Result<BTreeMap<Cell, Tally>, ProjectionError> {
    let sql = format!(
        "SELECT clinic_id, evaluated_month, grouping, diagnosis, initial_sessions, \
                frequency_phase, adherence_band, age_band, {columns} FROM {table}",
        columns = tally_columns()
    );
    let mut cells = BTreeMap::new();
    for row in client.query(&sql, &[]).await? {
        let grouping = Grouping::from_bits(row.try_get(2)?).ok_or_else(|| {
            ProjectionError::CorruptRow("an outcome cell of an unknown grouping".into())
        })?;
        let cell = Cell {
            clinic_id: row.try_get(0)?,
            month: row.try_get(1)?,
            grouping,
            values: [
                row.try_get(3)?,
                row.try_get(4)?,
                row.try_get(5)?,
                row.try_get(6)?,
                row.try_get(7)?,
            ],
        };
        cells.insert(cell, tally_of(&row, 8)?);
    }
    Ok(cells)
}

/// Applies `changes` (each cell's change, from [`spineledger_readmodels::cell_changes`])
/// to the cells in `table`.
pub(crate) async fn apply_changes(
    client: &impl GenericClient,
    table: &str,
    changes: BTreeMap<Cell, Tally>,
) -> Result<(), ProjectionError> {
    if changes.is_empty() {
        return Ok(());
    }
    let clinics: Vec<Uuid> = changes.keys().map(|cell| cell.clinic_id).collect();
    let keys: Vec<String> = changes.keys().map(Cell::key).collect();
    let load = client
        .prepare_cached(&format!(
            "SELECT c.* FROM unnest($1::uuid[], $2::text[]) AS k(clinic_id, cell) \
             CROSS JOIN LATERAL (SELECT t.clinic_id, t.cell, {columns} FROM {table} t \
                                 WHERE t.clinic_id = k.clinic_id AND t.cell = k.cell \
                                 OFFSET 0) c",
            columns = tally_columns()
        ))
        .await?;
    let mut stored: BTreeMap<(Uuid, String), Tally> = BTreeMap::new();
    for row in client.query(&load, &[&clinics, &keys]).await? {
        stored.insert((row.try_get(0)?, row.try_get(1)?), tally_of(&row, 2)?);
    }

    let mut gone = (Vec::new(), Vec::new());
    let mut kept = CellRows::default();
    for ((cell, change), key) in changes.into_iter().zip(keys) {
        let mut tally = stored
            .remove(&(cell.clinic_id, key.clone()))
            .unwrap_or_default();
        tally.add(&change);
        if tally.count(Count::Episodes) <= 0 {
            if !tally.is_empty() {
                // The clinic only: a cell's values could single out a patient.
                return Err(ProjectionError::CorruptRow(format!(
                    "an outcome cell of clinic {} counts no episode but is not empty: the \
                     cells have drifted from the episodes; rebuild outcome_statistics",
                    cell.clinic_id
                )));
            }
            gone.0.push(cell.clinic_id);
            gone.1.push(key);
        } else {
            kept.push(&cell, key, &tally);
        }
    }
    if !gone.0.is_empty() {
        let delete = client
            .prepare_cached(&format!(
                "DELETE FROM {table} c USING unnest($1::uuid[], $2::text[]) AS k(clinic_id, cell) \
                 WHERE c.clinic_id = k.clinic_id AND c.cell = k.cell"
            ))
            .await?;
        client.execute(&delete, &[&gone.0, &gone.1]).await?;
    }
    if !kept.clinics.is_empty() {
        kept.upsert(client, table).await?;
    }
    Ok(())
}

/// Writes `cells` (whole tallies, none empty) into `table`, a fresh one being filled by a
/// rebuild, a few thousand per statement.
pub(crate) async fn write_all(
    client: &impl GenericClient,
    table: &str,
    cells: &BTreeMap<Cell, Tally>,
) -> Result<(), ProjectionError> {
    let mut rows = CellRows::default();
    for (cell, tally) in cells {
        rows.push(cell, cell.key(), tally);
        if rows.clinics.len() == WRITE_CHUNK {
            rows.upsert(client, table).await?;
            rows = CellRows::default();
        }
    }
    if !rows.clinics.is_empty() {
        rows.upsert(client, table).await?;
    }
    Ok(())
}

/// Cells per statement of [`write_all`].
const WRITE_CHUNK: usize = 5000;

/// Cells to write, column by column (each column one array parameter of an `unnest`).
#[derive(Default)]
struct CellRows {
    clinics: Vec<Uuid>,
    keys: Vec<String>,
    months: Vec<Option<chrono::NaiveDate>>,
    groupings: Vec<i16>,
    values: [Vec<Option<String>>; 5],
    counts: Vec<Vec<i64>>,
    /// Array literals (`{1,2}`): an `unnest` flattens arrays of arrays, so each row's
    /// array travels as text and is cast back per row.
    arrays: [Vec<String>; 3],
}

impl CellRows {
    fn push(&mut self, cell: &Cell, key: String, tally: &Tally) {
        self.clinics.push(cell.clinic_id);
        self.keys.push(key);
        self.months.push(cell.month);
        self.groupings.push(cell.grouping.bits());
        for (column, value) in self.values.iter_mut().zip(&cell.values) {
            column.push(value.clone());
        }
        if self.counts.is_empty() {
            self.counts = vec![Vec::new(); COUNTS];
        }
        for (column, value) in self.counts.iter_mut().zip(tally.counts()) {
            column.push(*value);
        }
        let [histogram, pain_n, pain_sum] = &mut self.arrays;
        histogram.push(array_literal(tally.sessions_to_first_nrs_response()));
        pain_n.push(array_literal(tally.pain_before_n()));
        pain_sum.push(array_literal(tally.pain_before_sum()));
    }

    async fn upsert(
        &self,
        client: &impl GenericClient,
        table: &str,
    ) -> Result<(), ProjectionError> {
        // In KEY_COLUMNS order, then the counts, then the arrays (as upsert_from_unnest).
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&self.clinics, &self.keys, &self.months, &self.groupings];
        for column in &self.values {
            params.push(column);
        }
        for column in &self.counts {
            params.push(column);
        }
        for column in &self.arrays {
            params.push(column);
        }
        let sql = format!("INSERT INTO {table} {}", upsert_from_unnest());
        let statement = client.prepare_cached(&sql).await?;
        client.execute(&statement, &params).await?;
        Ok(())
    }
}

/// The upsert of [`CellRows`] after `INSERT INTO <table>`: the columns, their values
/// from an `unnest` of one array parameter per column, and the update of every non-key
/// column on conflict. Built once.
fn upsert_from_unnest() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let columns: Vec<&str> = KEY_COLUMNS
            .into_iter()
            .chain(tally_column_names())
            .collect();
        // The parameters' types: the key columns' (the dimension values are text), the
        // counts', and text for the arrays, which travel as literals.
        let casts = ["uuid[]", "text[]", "date[]", "smallint[]"]
            .into_iter()
            .chain(std::iter::repeat_n("text[]", 5))
            .chain(std::iter::repeat_n("bigint[]", COUNTS))
            .chain(std::iter::repeat_n("text[]", ARRAY_COLUMNS.len()));
        let unnest = casts
            .enumerate()
            .map(|(index, cast)| format!("${}::{cast}", index + 1))
            .collect::<Vec<_>>()
            .join(", ");
        // The arrays travel as text literals (see `CellRows::arrays`).
        let select = columns
            .iter()
            .map(|column| {
                if ARRAY_COLUMNS.contains(column) {
                    format!("{column}::bigint[]")
                } else {
                    (*column).to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let updates = columns
            .iter()
            .skip(2)
            .map(|column| format!("{column} = EXCLUDED.{column}"))
            .collect::<Vec<_>>()
            .join(", ");
        let columns = columns.join(", ");
        format!(
            "({columns}) SELECT {select} FROM unnest({unnest}) AS k({columns}) \
             ON CONFLICT (clinic_id, cell) DO UPDATE SET {updates}"
        )
    })
}

/// `values` as a PostgreSQL array literal.
fn array_literal(values: &[i64]) -> String {
    let mut text = String::from("{");
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        let _ = write!(text, "{value}");
    }
    text.push('}');
    text
}
