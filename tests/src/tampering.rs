//! What the tampering tests share: streams of plain session events appended as the service
//! appends them, and the superuser's way around the immutability triggers.

use serde_json::json;
use spineledger_store::{EventMetadata, ExpectedVersion, Fingerprint, NewEvent, StreamKey};
use spineledger_testkit::TestDatabase;
use uuid::Uuid;

/// The `n`th event of a test stream.
pub fn event(n: u64) -> NewEvent {
    let payload = json!({ "n": n, "note": "as written" });
    let event_id = Uuid::new_v4();
    NewEvent {
        event_id,
        event_type: "SessionRecorded".into(),
        schema_version: 1,
        fingerprint: Fingerprint::of(&payload).expect("fingerprint"),
        payload,
        metadata: EventMetadata {
            actor: "provider-7".into(),
            command_id: event_id,
            ..EventMetadata::default()
        },
        occurred_at: Some(chrono::Utc::now()),
    }
}

/// A new stream of `events` events at `clinic` (its id starts with `episode-{name}-`),
/// appended one at a time.
pub async fn stream_of(
    database: &TestDatabase,
    clinic: Uuid,
    name: &str,
    events: u64,
) -> StreamKey {
    let stream = StreamKey::new(clinic, format!("episode-{name}-{}", Uuid::new_v4()));
    for n in 1..=events {
        database
            .store()
            .append(&stream, ExpectedVersion::Any, &[event(n)])
            .await
            .expect("append");
    }
    stream
}

/// The owner's connection with the immutability triggers bypassed, as a superuser could.
pub async fn superuser(database: &TestDatabase) -> spineledger_store::tokio_postgres::Client {
    let owner = database.owner_client().await;
    owner
        .batch_execute("SET session_replication_role = replica")
        .await
        .expect("bypass triggers");
    owner
}
