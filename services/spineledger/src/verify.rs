//! `spineledger verify`: reads every stream and its events from PostgreSQL, one stream at
//! a time, and checks each chain with the verifier crate (versions contiguous, every hash
//! recomputed from its fields, every link, every head). It needs a login that sees every
//! clinic (the owner, or the projector role) and changes nothing.

use futures::TryStreamExt;
use spineledger_store::StoreError;
use spineledger_store::tokio_postgres::{Client, Row};
use spineledger_verifier::chain::EventHash;
use spineledger_verifier::stream::{self, Break, Head, StoredEvent};
use uuid::Uuid;

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Clinics seen.
    pub clinics: u64,
    /// Streams checked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// Events recorded before the chain existed (no hashes to check).
    pub unhashed: u64,
    /// The first broken link of each damaged stream.
    pub breaks: Vec<Break>,
}

/// Every stream (or only `clinic`'s) with its events, in clinic, stream, version order.
/// A full join: a stream row without events comes as one row of event nulls, events
/// without a stream row (deleted by someone past the foreign key) with head nulls.
const STREAMS_AND_EVENTS: &str = "\
    SELECT coalesce(s.clinic_id, e.clinic_id), coalesce(s.stream_id, e.stream_id), \
           s.version, s.head_hash, \
           e.version, e.position, e.event_id, e.event_type, e.schema_version, e.payload, \
           e.metadata, e.occurred_at, e.recorded_at, e.prev_hash, e.hash \
    FROM streams s \
    FULL JOIN events e ON e.clinic_id = s.clinic_id AND e.stream_id = s.stream_id \
    WHERE $1::uuid IS NULL OR coalesce(s.clinic_id, e.clinic_id) = $1 \
    ORDER BY 1, 2, e.version";

/// Checks every stream of the database `client` is connected to (only `clinic`'s when
/// given), streaming the rows so that memory holds one stream at a time.
///
/// # Errors
/// The database's, or a row that cannot be read at all.
pub async fn verify(client: &Client, clinic: Option<Uuid>) -> Result<Report, StoreError> {
    // Row-level security would hide other clinics from the service's login and make a
    // damaged database look empty: refuse it rather than report nothing.
    let login: String = client
        .query_one("SELECT current_user::text", &[])
        .await?
        .try_get(0)?;
    if login == spineledger_store::APP_ROLE {
        return Err(StoreError::Configuration(format!(
            "verify needs a login that sees every clinic (the owner, or {}), not {login}",
            spineledger_store::PROJECTOR_ROLE
        )));
    }
    let unhashed_until: i64 = client
        .query_one("SELECT unhashed_until FROM hash_chain_start", &[])
        .await?
        .try_get(0)?;
    let rows = client
        .query_raw(
            STREAMS_AND_EVENTS,
            [&clinic as &(dyn spineledger_store::tokio_postgres::types::ToSql + Sync)],
        )
        .await?;
    futures::pin_mut!(rows);
    let mut report = Report::default();
    let mut current: Option<(Uuid, String, Option<Head>)> = None;
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut last_clinic = None;
    while let Some(row) = rows.try_next().await? {
        let clinic_id: Uuid = row.try_get(0)?;
        let stream_id: String = row.try_get(1)?;
        let same = current
            .as_ref()
            .is_some_and(|(clinic, stream, _)| *clinic == clinic_id && *stream == stream_id);
        if !same {
            if let Some((clinic, stream, head)) = current.take() {
                finish(&mut report, clinic, &stream, head, unhashed_until, &events);
            }
            events.clear();
            if last_clinic != Some(clinic_id) {
                report.clinics += 1;
                last_clinic = Some(clinic_id);
            }
            let head = match row.try_get::<_, Option<i64>>(2)? {
                Some(head_version) => Some(Head {
                    version: version(head_version)?,
                    hash: hash(row.try_get(3)?)?,
                }),
                None => None,
            };
            current = Some((clinic_id, stream_id.clone(), head));
        }
        if let Some(event) = stored_event(&row, clinic_id, stream_id)? {
            events.push(event);
        }
    }
    if let Some((clinic, stream, head)) = current.take() {
        finish(&mut report, clinic, &stream, head, unhashed_until, &events);
    }
    Ok(report)
}

fn finish(
    report: &mut Report,
    clinic: Uuid,
    stream_id: &str,
    head: Option<Head>,
    unhashed_until: i64,
    events: &[StoredEvent],
) {
    report.streams += 1;
    report.events += events.len() as u64;
    match stream::check(clinic, stream_id, head, unhashed_until, events) {
        Ok(sound) => report.unhashed += sound.unhashed,
        Err(broken) => report.breaks.push(broken),
    }
}

fn stored_event(
    row: &Row,
    clinic_id: Uuid,
    stream_id: String,
) -> Result<Option<StoredEvent>, StoreError> {
    let Some(event_version) = row.try_get::<_, Option<i64>>(4)? else {
        return Ok(None);
    };
    Ok(Some(StoredEvent {
        clinic_id,
        stream_id,
        version: version(event_version)?,
        position: row.try_get(5)?,
        event_id: row.try_get(6)?,
        event_type: row.try_get(7)?,
        schema_version: row.try_get(8)?,
        payload: row.try_get(9)?,
        metadata: row.try_get(10)?,
        occurred_at: row.try_get(11)?,
        recorded_at: row.try_get(12)?,
        previous_hash: hash(row.try_get(13)?)?,
        hash: hash(row.try_get(14)?)?,
    }))
}

fn version(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Malformed(format!("version {value}")))
}

fn hash(bytes: Option<&[u8]>) -> Result<Option<EventHash>, StoreError> {
    EventHash::from_optional(bytes).map_err(|error| StoreError::Malformed(error.to_string()))
}
