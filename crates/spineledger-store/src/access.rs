//! The access log: one row per episode a read showed, appended in the clinic's context
//! (see migration V7). Rows are never changed; auditors list them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use spineledger_verifier::access::AccessEntry;

use crate::scope::{ClinicScope, scoped};
use crate::{ClinicShard, EventStore, GlobalCursor, StoreError};

/// Who read, as the access log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The token's subject.
    pub subject: String,
    /// The token's issuer.
    pub issuer: String,
    /// The token's role.
    pub role: String,
    /// The user an integration says it reads for (`x-actor`), if any.
    pub actor: Option<String>,
    /// The declared purpose of use (an HL7 PurposeOfUse code), if any.
    pub purpose: Option<String>,
    /// Whether emergency access was invoked.
    pub break_glass: bool,
}

/// One access: what was shown (or asked for) by one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The clinic whose record was read.
    pub clinic_id: Uuid,
    /// The RPC (its method name).
    pub rpc: String,
    /// The patient shown, when known.
    pub patient_id: Option<Uuid>,
    /// The episode shown, when there was one.
    pub episode_id: Option<Uuid>,
    /// The log position the answer reflects, when known.
    pub shown_position: Option<i64>,
    /// `OK`, or the status code of a read that showed nothing.
    pub outcome: String,
}

/// A row of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Its place in the clinic's access log (rises with time).
    pub position: i64,
    /// When.
    pub accessed_at: DateTime<Utc>,
    /// Who.
    pub reader: Reader,
    /// What.
    pub access: Access,
}

/// What the access log is listed by (then by position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AccessSort {
    /// The order entries were logged.
    #[default]
    Position,
    /// Time of access.
    AccessedAt,
    /// Patient id.
    Patient,
    /// Episode id.
    Episode,
    /// The principal's subject.
    Principal,
    /// The principal's role.
    Role,
    /// The asserted actor.
    Actor,
    /// The RPC.
    Rpc,
    /// The purpose of use.
    Purpose,
    /// Emergency access.
    BreakGlass,
    /// The outcome.
    Outcome,
}

impl AccessSort {
    /// The sort key as text whose byte order (`COLLATE "C"`) is the field's order:
    /// numbers zero-padded, times in fixed-width UTC, absent values empty (first).
    fn key(self) -> &'static str {
        match self {
            Self::Position => "lpad(position::text, 20, '0')",
            Self::AccessedAt => {
                "to_char(accessed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            }
            Self::Patient => "coalesce(patient_id::text, '')",
            Self::Episode => "coalesce(episode_id::text, '')",
            Self::Principal => "principal_subject",
            Self::Role => "principal_role",
            Self::Actor => "coalesce(actor, '')",
            Self::Rpc => "rpc",
            Self::Purpose => "coalesce(purpose, '')",
            Self::BreakGlass => "break_glass::text",
            Self::Outcome => "outcome",
        }
    }
}

/// Where a page of the access log starts: after the entry with this sort key and
/// position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessCursor {
    /// The sort key of the last entry shown (as [`AccessSort`] writes it).
    pub key: String,
    /// Its position.
    pub position: i64,
}

/// Which rows of a clinic's access log to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// Only this patient's.
    pub patient_id: Option<Uuid>,
    /// Only this principal subject's or asserted actor's.
    pub who: Option<String>,
    /// Accessed at or after.
    pub from: Option<DateTime<Utc>>,
    /// Accessed before.
    pub to: Option<DateTime<Utc>>,
    /// By what.
    pub sort: AccessSort,
    /// Largest first.
    pub descending: bool,
    /// The page starts after this entry (in the chosen order); `None`: at the start.
    pub after: Option<AccessCursor>,
    /// At most this many rows.
    pub limit: usize,
}

impl EventStore {
    /// Appends `accesses` (all of one clinic) for `reader`, in one statement, in the
    /// clinic's context.
    ///
    /// # Errors
    /// The database's; an empty list or several clinics is a caller's bug.
    pub async fn record_access(
        &self,
        reader: &Reader,
        accesses: &[Access],
    ) -> Result<(), StoreError> {
        let Some(first) = accesses.first() else {
            return Ok(());
        };
        let clinic_id = first.clinic_id;
        if accesses.iter().any(|access| access.clinic_id != clinic_id) {
            return Err(StoreError::InvalidBatch("an access batch spans clinics"));
        }
        let rpcs: Vec<&str> = accesses.iter().map(|access| access.rpc.as_str()).collect();
        let patients: Vec<Option<Uuid>> = accesses.iter().map(|access| access.patient_id).collect();
        let episodes: Vec<Option<Uuid>> = accesses.iter().map(|access| access.episode_id).collect();
        let positions: Vec<Option<i64>> = accesses
            .iter()
            .map(|access| access.shown_position)
            .collect();
        let outcomes: Vec<&str> = accesses
            .iter()
            .map(|access| access.outcome.as_str())
            .collect();
        let mut client = self.pool().get().await?;
        let transaction = client.transaction().await?;
        let insert = transaction
            .prepare_cached(
                "INSERT INTO access_log (clinic_id, principal_subject, principal_issuer, \
                     principal_role, actor, purpose, break_glass, rpc, patient_id, episode_id, \
                     shown_position, outcome) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, a.rpc, a.patient_id, a.episode_id, \
                     a.shown_position, a.outcome \
                 FROM UNNEST($8::text[], $9::uuid[], $10::uuid[], $11::bigint[], $12::text[]) \
                     WITH ORDINALITY AS a(rpc, patient_id, episode_id, shown_position, outcome, n) \
                 ORDER BY a.n",
            )
            .await?;
        scoped(
            &transaction,
            &ClinicScope::one(clinic_id),
            transaction.execute(
                &insert,
                &[
                    &clinic_id,
                    &reader.subject,
                    &reader.issuer,
                    &reader.role,
                    &reader.actor,
                    &reader.purpose,
                    &reader.break_glass,
                    &rpcs,
                    &patients,
                    &episodes,
                    &positions,
                    &outcomes,
                ],
            ),
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// A page of a clinic's access log.
    ///
    /// # Errors
    /// The database's, or a row that does not decode.
    pub async fn list_access(
        &self,
        query: &AccessQuery,
    ) -> Result<Vec<(AccessRecord, AccessCursor)>, StoreError> {
        let (order, after) = if query.descending {
            ("DESC", "<")
        } else {
            ("ASC", ">")
        };
        let key = query.sort.key();
        // The log's own order reads its index (clinic_id, position); the others sort the
        // clinic's entries by their text key.
        let (order_by, after_entry) = if query.sort == AccessSort::Position {
            (
                format!("position {order}"),
                format!("position {after} $8::bigint"),
            )
        } else {
            (
                format!("{key} COLLATE \"C\" {order}, position {order}"),
                format!(
                    "({key} COLLATE \"C\", position) {after} ($6::text COLLATE \"C\", $8::bigint)"
                ),
            )
        };
        let sql = format!(
            "SELECT position, accessed_at, principal_subject, principal_issuer, principal_role, \
                    actor, purpose, break_glass, rpc, patient_id, episode_id, shown_position, \
                    outcome, {key} \
             FROM access_log \
             WHERE clinic_id = $1 \
               AND ($2::uuid IS NULL OR patient_id = $2) \
               AND ($3::text IS NULL OR principal_subject = $3 OR actor = $3) \
               AND ($4::timestamptz IS NULL OR accessed_at >= $4) \
               AND ($5::timestamptz IS NULL OR accessed_at < $5) \
               AND ($6::text IS NULL OR {after_entry}) \
             ORDER BY {order_by} LIMIT $7"
        );
        let (after_key, after_position) = match &query.after {
            Some(cursor) => (Some(cursor.key.as_str()), cursor.position),
            None => (None, 0),
        };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let mut client = self.pool().get().await?;
        let transaction = client.transaction().await?;
        let statement = transaction.prepare_cached(&sql).await?;
        let rows = scoped(
            &transaction,
            &ClinicScope::one(query.clinic_id),
            transaction.query(
                &statement,
                &[
                    &query.clinic_id,
                    &query.patient_id,
                    &query.who,
                    &query.from,
                    &query.to,
                    &after_key,
                    &limit,
                    &after_position,
                ],
            ),
        )
        .await?;
        transaction.commit().await?;
        rows.iter()
            .map(|row| {
                let record = AccessRecord {
                    position: row.try_get(0)?,
                    accessed_at: row.try_get(1)?,
                    reader: Reader {
                        subject: row.try_get(2)?,
                        issuer: row.try_get(3)?,
                        role: row.try_get(4)?,
                        actor: row.try_get(5)?,
                        purpose: row.try_get(6)?,
                        break_glass: row.try_get(7)?,
                    },
                    access: Access {
                        clinic_id: query.clinic_id,
                        rpc: row.try_get(8)?,
                        patient_id: row.try_get(9)?,
                        episode_id: row.try_get(10)?,
                        shown_position: row.try_get(11)?,
                        outcome: row.try_get(12)?,
                    },
                };
                let cursor = AccessCursor {
                    key: row.try_get(13)?,
                    position: record.position,
                };
                Ok((record, cursor))
            })
            .collect()
    }
}

/// The access-log columns that [`decode_entry`] reads, in its order.
const ENTRY_COLUMNS: &str = "xid::text::bigint, clinic_id, position, accessed_at, \
    principal_subject, principal_issuer, principal_role, actor, rpc, patient_id, episode_id, \
    shown_position, purpose, break_glass, outcome";

/// An access-log entry with its place in the access log's commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedAccess {
    /// (xid, position) of the entry.
    pub cursor: GlobalCursor,
    /// The entry, as its hash covers it.
    pub entry: AccessEntry,
}

fn decode_entry(row: &tokio_postgres::Row) -> Result<LoggedAccess, StoreError> {
    let xid: i64 = row.try_get(0)?;
    let position: i64 = row.try_get(2)?;
    Ok(LoggedAccess {
        cursor: GlobalCursor {
            xid: u64::try_from(xid).unwrap_or(0),
            position,
        },
        entry: AccessEntry {
            clinic_id: row.try_get(1)?,
            position,
            accessed_at: row.try_get(3)?,
            principal_subject: row.try_get(4)?,
            principal_issuer: row.try_get(5)?,
            principal_role: row.try_get(6)?,
            actor: row.try_get(7)?,
            rpc: row.try_get(8)?,
            patient_id: row.try_get(9)?,
            episode_id: row.try_get(10)?,
            shown_position: row.try_get(11)?,
            purpose: row.try_get(12)?,
            break_glass: row.try_get(13)?,
            outcome: row.try_get(14)?,
        },
    })
}

/// Up to `limit` access-log entries of one shard's clinics strictly after `cursor` in
/// commit order, never skipping one (the rule of [`crate::read_all_after`]). The
/// integrator's read; it needs a login that sees every clinic.
///
/// # Errors
/// The database's, or a row that does not decode.
pub async fn read_access_after(
    client: &impl deadpool_postgres::GenericClient,
    cursor: GlobalCursor,
    limit: usize,
    shard: ClinicShard,
) -> Result<Vec<LoggedAccess>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM access_log \
             WHERE (xid, position) > ($1::text::xid8, $2) \
               AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
               AND get_byte(uuid_send(clinic_id), 15) % $4 = $5 \
             ORDER BY xid, position LIMIT $3"
        ))
        .await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &statement,
            &[
                &cursor.xid.to_string(),
                &cursor.position,
                &limit,
                &i32::from(shard.count()),
                &i32::from(shard.index()),
            ],
        )
        .await?;
    rows.iter().map(decode_entry).collect()
}

/// Every access-log entry of `clinic_id`, by position (an audit export).
///
/// # Errors
/// The database's, or a row that does not decode.
pub async fn read_clinic_access_log(
    client: &impl tokio_postgres::GenericClient,
    clinic_id: Uuid,
) -> Result<Vec<LoggedAccess>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM access_log WHERE clinic_id = $1 ORDER BY position"
            ),
            &[&clinic_id],
        )
        .await?;
    rows.iter().map(decode_entry).collect()
}
