//! `spineledger verify` and `spineledger audit export`: read a clinic's whole record from
//! PostgreSQL into an audit bundle (the verifier crate's format), in one snapshot, and
//! check it with the verifier crate's audit: every chain and head, the dense index and
//! every signed checkpoint. The database check and the offline check of an exported
//! bundle are one implementation.
//!
//! It needs a login that sees every clinic (the owner, or the projector role) and changes
//! nothing. Memory holds one clinic's record at a time.

use chrono::Utc;
use spineledger_store::tokio_postgres::{Client, Row};
use spineledger_store::{ClinicShard, StoreError, read_clinic_access_log};
use spineledger_verifier::bundle::{
    Audit, BUNDLE_FORMAT, Bundle, BundledAccess, BundledEvent, Cursor, Finding, IndexedLeaf,
    Integrated, LeafKind, StreamHead,
};
use spineledger_verifier::chain::EventHash;
use spineledger_verifier::checkpoint::VerifierKey;
use spineledger_verifier::stream::StoredEvent;
use uuid::Uuid;

/// What a verification found, over every clinic checked.
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
    /// Access-log entries checked.
    pub access_entries: u64,
    /// Leaves of the clinics' logs checked.
    pub leaves: u64,
    /// Records not yet indexed by the integrator.
    pub pending: u64,
    /// Signed checkpoints that held.
    pub checkpoints: u64,
    /// Every fault: the first broken link of each damaged stream, and each fault of an
    /// index or a checkpoint.
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, audit: Audit) {
        self.clinics += 1;
        self.streams += audit.streams;
        self.events += audit.events;
        self.unhashed += audit.unhashed;
        self.access_entries += audit.access_entries;
        self.leaves += audit.leaves;
        self.pending += audit.pending;
        self.checkpoints += audit.checkpoints;
        self.findings.extend(audit.findings);
    }
}

/// Checks every clinic of the database `client` is connected to (only `clinic` when
/// given) against checkpoints signed by `key`, and, when given, the checkpoint `kept` an
/// auditor kept from earlier (only meaningful with one clinic).
///
/// # Errors
/// The database's, or a row that cannot be read at all.
pub async fn verify(
    client: &mut Client,
    clinic: Option<Uuid>,
    key: &VerifierKey,
    kept: Option<&str>,
) -> Result<Report, StoreError> {
    refuse_walled_login(client).await?;
    let transaction = snapshot(client).await?;
    let clinics: Vec<Uuid> = match clinic {
        Some(clinic) => vec![clinic],
        None => transaction
            .query(
                "SELECT clinic_id FROM streams UNION SELECT clinic_id FROM events \
                 UNION SELECT clinic_id FROM access_log UNION SELECT clinic_id FROM clinic_log \
                 UNION SELECT clinic_id FROM log_checkpoints ORDER BY 1",
                &[],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?,
    };
    let mut report = Report::default();
    for clinic_id in clinics {
        let bundle = read_bundle(&transaction, clinic_id, key).await?;
        report.add(bundle.audit(key, kept));
    }
    transaction.commit().await?;
    Ok(report)
}

/// The audit bundle of `clinic_id`, read in one snapshot.
///
/// # Errors
/// The database's, or a row that cannot be read at all.
pub async fn export(
    client: &mut Client,
    clinic_id: Uuid,
    key: &VerifierKey,
) -> Result<Bundle, StoreError> {
    refuse_walled_login(client).await?;
    let transaction = snapshot(client).await?;
    let bundle = read_bundle(&transaction, clinic_id, key).await?;
    transaction.commit().await?;
    Ok(bundle)
}

/// Row-level security would hide other clinics from the service's login and make a
/// damaged database look empty: refuse it rather than report nothing.
async fn refuse_walled_login(client: &Client) -> Result<(), StoreError> {
    let login: String = client
        .query_one("SELECT current_user::text", &[])
        .await?
        .try_get(0)?;
    if login == spineledger_store::APP_ROLE {
        return Err(StoreError::Configuration(format!(
            "verification needs a login that sees every clinic (the owner, or {}), not {login}",
            spineledger_store::PROJECTOR_ROLE
        )));
    }
    Ok(())
}

/// One read-only snapshot for the whole check, so that every table is seen at the same
/// moment (no leaf naming an event committed after the events were read).
async fn snapshot(
    client: &mut Client,
) -> Result<spineledger_store::tokio_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(spineledger_store::tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

async fn read_bundle(
    client: &spineledger_store::tokio_postgres::Transaction<'_>,
    clinic_id: Uuid,
    key: &VerifierKey,
) -> Result<Bundle, StoreError> {
    let unhashed_until: i64 = client
        .query_one("SELECT unhashed_until FROM hash_chain_start", &[])
        .await?
        .try_get(0)?;
    let streams = client
        .query(
            "SELECT stream_id, version, head_hash FROM streams WHERE clinic_id = $1 \
             ORDER BY stream_id",
            &[&clinic_id],
        )
        .await?
        .iter()
        .map(|row| {
            Ok(StreamHead {
                stream_id: row.try_get(0)?,
                version: version(row.try_get(1)?)?,
                head_hash: hash(row.try_get(2)?)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let events = client
        .query(
            "SELECT xid::text::bigint, stream_id, version, position, event_id, event_type, \
                    schema_version, payload, metadata, occurred_at, recorded_at, prev_hash, hash \
             FROM events WHERE clinic_id = $1 ORDER BY stream_id, version",
            &[&clinic_id],
        )
        .await?
        .iter()
        .map(|row| bundled_event(row, clinic_id))
        .collect::<Result<_, _>>()?;
    let access_log = read_clinic_access_log(client, clinic_id)
        .await?
        .into_iter()
        .map(|logged| BundledAccess {
            xid: logged.cursor.xid,
            entry: logged.entry,
        })
        .collect();
    let leaves = client
        .query(
            "SELECT leaf_index, kind, position, leaf_hash FROM clinic_log WHERE clinic_id = $1 \
             ORDER BY leaf_index",
            &[&clinic_id],
        )
        .await?
        .iter()
        .map(|row| {
            let kind: String = row.try_get(1)?;
            Ok(IndexedLeaf {
                index: version(row.try_get(0)?)?,
                kind: LeafKind::from_name(&kind)
                    .ok_or_else(|| StoreError::Malformed(format!("leaf kind {kind}")))?,
                position: row.try_get(2)?,
                hash: EventHash::from_slice(row.try_get(3)?)
                    .map_err(|error| StoreError::Malformed(error.to_string()))?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let checkpoints = client
        .query(
            "SELECT note FROM log_checkpoints WHERE clinic_id = $1 ORDER BY tree_size, signed_at",
            &[&clinic_id],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        clinic_id,
        exported_at: Utc::now(),
        verifier_key: key.to_string(),
        unhashed_until,
        streams,
        events,
        access_log,
        leaves,
        integrated: integrated(client, clinic_id).await?,
        checkpoints,
    })
}

/// The integrator's cursors for the shard `clinic_id` belongs to (the start of the logs
/// when it has never run).
async fn integrated(
    client: &spineledger_store::tokio_postgres::Transaction<'_>,
    clinic_id: Uuid,
) -> Result<Integrated, StoreError> {
    let count: Option<i32> = client
        .query_one(
            "SELECT max(shard_count) FROM projection_checkpoints WHERE projection = 'clinic_log'",
            &[],
        )
        .await?
        .try_get(0)?;
    let Some(shards) = count.and_then(|count| u8::try_from(count).ok()) else {
        return Ok(Integrated::default());
    };
    let shard = i32::from(ClinicShard::of(clinic_id, shards).index());
    let cursor = |row: Option<Row>| -> Result<Cursor, StoreError> {
        Ok(match row {
            Some(row) => Cursor {
                xid: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                position: row.try_get(1)?,
            },
            None => Cursor::default(),
        })
    };
    let events = client
        .query_opt(
            "SELECT xid, position FROM projection_checkpoints \
             WHERE projection = 'clinic_log' AND shard = $1",
            &[&shard],
        )
        .await?;
    let access = client
        .query_opt(
            "SELECT xid, position FROM clinic_log_access_cursors WHERE shard = $1",
            &[&shard],
        )
        .await?;
    Ok(Integrated {
        events: cursor(events)?,
        access: cursor(access)?,
    })
}

fn bundled_event(row: &Row, clinic_id: Uuid) -> Result<BundledEvent, StoreError> {
    let xid: i64 = row.try_get(0)?;
    Ok(BundledEvent {
        xid: u64::try_from(xid).unwrap_or(0),
        event: StoredEvent {
            clinic_id,
            stream_id: row.try_get(1)?,
            version: version(row.try_get(2)?)?,
            position: row.try_get(3)?,
            event_id: row.try_get(4)?,
            event_type: row.try_get(5)?,
            schema_version: row.try_get(6)?,
            payload: row.try_get(7)?,
            metadata: row.try_get(8)?,
            occurred_at: row.try_get(9)?,
            recorded_at: row.try_get(10)?,
            previous_hash: hash(row.try_get(11)?)?,
            hash: hash(row.try_get(12)?)?,
        },
    })
}

fn version(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Malformed(format!("a negative count {value}")))
}

fn hash(bytes: Option<&[u8]>) -> Result<Option<EventHash>, StoreError> {
    EventHash::from_optional(bytes).map_err(|error| StoreError::Malformed(error.to_string()))
}
