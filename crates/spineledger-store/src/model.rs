//! The vocabulary of the event store: what a writer hands in and what a reader gets back.

use crate::chain::EventHash;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::StoreError;

/// A stream is keyed by clinic and stream id: the same stream id in two clinics is two
/// streams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The clinic (tenant) the stream belongs to.
    pub clinic_id: Uuid,
    /// The stream within the clinic, e.g. `episode-{uuid}`.
    pub stream_id: String,
}

impl StreamKey {
    /// The stream `stream_id` of `clinic_id`.
    pub fn new(clinic_id: Uuid, stream_id: impl Into<String>) -> Self {
        Self {
            clinic_id,
            stream_id: stream_id.into(),
        }
    }
}

/// Optimistic concurrency: what the writer believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (0 is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether only a stream that does not exist yet (version 0) is admitted.
    pub(crate) fn requires_new_stream(self) -> bool {
        matches!(self, Self::NoStream | Self::Exact(0))
    }

    fn admits(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(expected) => actual == expected,
        }
    }

    pub(crate) fn check(self, actual: u64) -> Result<(), StoreError> {
        if self.admits(actual) {
            Ok(())
        } else {
            Err(StoreError::VersionConflict {
                expected: self,
                actual,
            })
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// SHA-256 of what the writer asked for. Two appends with the same event id are the same
/// request exactly when their fingerprints are equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprints a serialisable request. `serde_json` writes struct fields in
    /// declaration order and maps as sorted `BTreeMap`s, so equal values hash equally.
    pub fn of<T: Serialize + ?Sized>(request: &T) -> Result<Self, StoreError> {
        let bytes = serde_json::to_vec(request)
            .map_err(|error| StoreError::Malformed(format!("unserialisable request: {error}")))?;
        Ok(Self(Sha256::digest(&bytes).into()))
    }

    /// The SHA-256 digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, StoreError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| StoreError::Malformed("fingerprint is not 32 bytes".into()))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

/// Who recorded an event, on whose behalf and through what: identifiers of staff and
/// software (a subject may be a staff member's login), never a patient's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventMetadata {
    /// The user the client says recorded the fact (a provider or user id of the clinic's
    /// software): asserted by the client, and for a clinician token its own subject.
    pub actor: String,
    /// The authenticated caller that wrote the event, from its verified token: who wrote
    /// what cannot be forged by a client. Absent only on events recorded before the
    /// service authenticated its callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<RecordedPrincipal>,
    /// The command id; equal to the event id for single-event commands.
    pub command_id: Uuid,
    /// The conversation the command belongs to, when the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message that caused the command, when the client gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The client software's name (`x-client-name` or `user-agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The client software's version (`x-client-version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// W3C trace id of the request that recorded it, for following a write in traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The authenticated caller of a write, as its verified token named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPrincipal {
    /// The token's subject (`sub`): a service account or a user.
    pub subject: String,
    /// The token's issuer (`iss`): the identity provider that vouched for the subject.
    pub issuer: String,
    /// The token's role.
    pub role: String,
}

/// An event to append. The event id is the command's idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event id: the command id, the idempotency key.
    pub event_id: Uuid,
    /// The event type name.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: i32,
    /// The event's fields.
    pub payload: serde_json::Value,
    /// Who records it and how.
    pub metadata: EventMetadata,
    /// When the fact happened in the clinic (distinct from when it was recorded).
    pub occurred_at: Option<DateTime<Utc>>,
    /// The fingerprint of the request, compared on a retry.
    pub fingerprint: Fingerprint,
}

/// A place in the global order: the writing transaction (xid8), then the position taken
/// from a sequence at insert. Readers resume strictly after a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GlobalCursor {
    /// The writing transaction (`pg_current_xact_id()`).
    pub xid: u64,
    /// The position taken from the global sequence at insert.
    pub position: i64,
}

impl GlobalCursor {
    /// Before the first event.
    pub const START: Self = Self {
        xid: 0,
        position: 0,
    };
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream within the clinic.
    pub stream_id: String,
    /// The event's version in its stream, from 1.
    pub version: u64,
    /// The event id (the command id that wrote it).
    pub event_id: Uuid,
    /// The event type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: i32,
    /// The event's fields.
    pub payload: serde_json::Value,
    /// Who recorded it, how and on whose behalf.
    pub metadata: EventMetadata,
    /// The metadata exactly as stored (what the hash covers, unknown keys included).
    pub stored_metadata: serde_json::Value,
    /// When the fact happened in the clinic, if the writer said.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When the store committed it.
    pub recorded_at: DateTime<Utc>,
    /// Its place in the global order.
    pub cursor: GlobalCursor,
    /// The fingerprint of the request that wrote it (for idempotency).
    pub fingerprint: Fingerprint,
    /// The hash of the stream's previous event, as this one names it; `None` only for
    /// events recorded before the chain existed.
    pub previous_hash: Option<EventHash>,
    /// This event's hash (see [`crate::chain`]); `None` only before the chain existed.
    pub hash: Option<EventHash>,
}

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEvent {
    /// The event id.
    pub event_id: Uuid,
    /// Its version in the stream.
    pub version: u64,
    /// Its place in the global order.
    pub cursor: GlobalCursor,
    /// Its hash: the receipt a client keeps. `None` only for an event recorded before
    /// the chain existed (a retry of one).
    pub hash: Option<EventHash>,
}

impl From<&RecordedEvent> for AppendedEvent {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            event_id: event.event_id,
            version: event.version,
            cursor: event.cursor,
            hash: event.hash,
        }
    }
}

/// The result of an append. A retry of an earlier append gets the original result with
/// `replayed` set, and nothing new is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where each event of the append landed, in order.
    pub events: Vec<AppendedEvent>,
    /// Whether this was a retry answered from the first append.
    pub replayed: bool,
}

impl AppendOutcome {
    /// The stream version after the last event of this append.
    pub fn last_version(&self) -> u64 {
        self.events.last().map_or(0, |event| event.version)
    }
}

/// A slice of the clinics: those whose id's last byte modulo `count` is `index`. Projector
/// work is split by shard, so all of a clinic's events go to one worker, in order. The
/// same rule is written in SQL (`get_byte(uuid_send(clinic_id), 15) % count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClinicShard {
    index: u8,
    count: u8,
}

impl ClinicShard {
    /// Every clinic.
    pub const ALL: Self = Self { index: 0, count: 1 };

    /// Shard `index` of `count`; `None` unless `index < count`.
    pub fn new(index: u8, count: u8) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// The shard of `clinic_id` among `count` shards (`count` of 0 is taken as 1).
    pub fn of(clinic_id: Uuid, count: u8) -> Self {
        let count = count.max(1);
        Self {
            index: clinic_id.as_bytes()[15] % count,
            count,
        }
    }

    /// Which shard this is, from 0.
    pub fn index(self) -> u8 {
        self.index
    }

    /// How many shards the clinics are split into.
    pub fn count(self) -> u8 {
        self.count
    }

    /// Whether `clinic_id` belongs to this shard.
    pub fn contains(self, clinic_id: Uuid) -> bool {
        Self::of(clinic_id, self.count) == self
    }
}

impl RecordedEvent {
    /// The event as the verifier checks it (the metadata exactly as stored).
    pub fn to_stored(&self) -> spineledger_verifier::stream::StoredEvent {
        spineledger_verifier::stream::StoredEvent {
            clinic_id: self.clinic_id,
            stream_id: self.stream_id.clone(),
            version: self.version,
            position: self.cursor.position,
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
            metadata: self.stored_metadata.clone(),
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            previous_hash: self.previous_hash,
            hash: self.hash,
        }
    }

    /// The event's leaf in its clinic's log
    /// ([`spineledger_verifier::bundle::event_leaf`]).
    pub fn leaf(&self) -> EventHash {
        match self.hash {
            Some(hash) => hash,
            None => spineledger_verifier::bundle::event_leaf(&self.to_stored()),
        }
    }
}
