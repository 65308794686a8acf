//! The event store's guarantees, each against a real PostgreSQL database of its own.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use spineledger_store::deadpool_postgres::Pool;
use spineledger_store::{
    ClinicShard, EventMetadata, ExpectedVersion, Fingerprint, GlobalCursor, NewEvent, StoreError,
    StreamKey,
};
use spineledger_testkit::TestDatabase;
use uuid::Uuid;

fn event(event_id: Uuid, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id,
        event_type: "SessionRecorded".into(),
        schema_version: 1,
        fingerprint: Fingerprint::of(&payload).expect("fingerprint"),
        payload,
        metadata: EventMetadata {
            actor: "provider-7".into(),
            principal: Some(spineledger_store::RecordedPrincipal {
                subject: "svc-frontdesk".into(),
                issuer: "https://id.example".into(),
                role: "integration".into(),
            }),
            command_id: event_id,
            correlation_id: Some(Uuid::new_v4()),
            causation_id: None,
            client_name: Some("store-tests".into()),
            client_version: Some("1".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        },
        occurred_at: Some(chrono::Utc::now()),
    }
}

fn new_event(n: u64) -> NewEvent {
    event(Uuid::new_v4(), json!({ "n": n }))
}

fn episode(clinic: Uuid) -> StreamKey {
    StreamKey::new(clinic, format!("episode-{}", Uuid::new_v4()))
}

#[tokio::test]
async fn appended_events_read_back_in_version_order_with_metadata() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let batch = vec![new_event(1), new_event(2), new_event(3)];
    let outcome = db
        .store()
        .append(&stream, ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    assert!(!outcome.replayed);
    assert_eq!(
        outcome.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(outcome.events.windows(2).all(|w| w[0].cursor < w[1].cursor));

    let read = db.store().read_whole_stream(&stream).await.expect("read");
    assert_eq!(read.len(), 3);
    for (stored, sent) in read.iter().zip(&batch) {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.payload, sent.payload);
        assert_eq!(stored.metadata, sent.metadata);
        assert_eq!(stored.event_type, "SessionRecorded");
        assert_eq!(stored.schema_version, 1);
        assert_eq!(stored.fingerprint, sent.fingerprint);
    }
    let from_two = db.store().read_stream(&stream, 2, 10).await.expect("read");
    assert_eq!(
        from_two.iter().map(|e| e.version).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        3
    );
}

#[tokio::test]
async fn the_same_stream_id_in_two_clinics_is_two_streams() {
    let db = TestDatabase::create().await;
    let stream_id = format!("episode-{}", Uuid::new_v4());
    let first = StreamKey::new(Uuid::new_v4(), stream_id.clone());
    let second = StreamKey::new(Uuid::new_v4(), stream_id);
    for stream in [&first, &second] {
        let outcome = db
            .store()
            .append(stream, ExpectedVersion::NoStream, &[new_event(1)])
            .await
            .expect("each clinic has its own stream");
        assert_eq!(outcome.last_version(), 1);
    }
    assert_eq!(
        db.store()
            .read_whole_stream(&first)
            .await
            .expect("read")
            .len(),
        1
    );
}

#[tokio::test]
async fn conflicting_append_returns_version_conflict_with_actual_version_and_writes_nothing() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    db.store()
        .append(
            &stream,
            ExpectedVersion::NoStream,
            &[new_event(1), new_event(2)],
        )
        .await
        .expect("append");

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
    ] {
        let error = db
            .store()
            .append(&stream, expected, &[new_event(3)])
            .await
            .expect_err("stale expected version");
        assert!(
            matches!(error, StoreError::VersionConflict { actual: 2, .. }),
            "{error:?}"
        );
    }
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        2
    );
    assert_eq!(
        db.store()
            .read_whole_stream(&stream)
            .await
            .expect("read")
            .len(),
        2
    );

    db.store()
        .append(&stream, ExpectedVersion::Exact(2), &[new_event(3)])
        .await
        .expect("exact version matches");
    db.store()
        .append(&stream, ExpectedVersion::Any, &[new_event(4)])
        .await
        .expect("any version");
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        4
    );
}

#[tokio::test]
async fn retry_with_the_same_event_id_returns_the_original_result_and_writes_nothing() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let batch = vec![new_event(1), new_event(2)];
    let first = db
        .store()
        .append(&stream, ExpectedVersion::NoStream, &batch)
        .await
        .expect("append");
    db.store()
        .append(&stream, ExpectedVersion::Any, &[new_event(3)])
        .await
        .expect("append");

    // The retry's expected version is stale by now; it is still the same request.
    let retry = db
        .store()
        .append(&stream, ExpectedVersion::NoStream, &batch)
        .await
        .expect("retry");
    assert!(retry.replayed);
    assert_eq!(retry.events, first.events);
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        3
    );
}

#[tokio::test]
async fn a_reused_event_id_with_different_content_is_rejected() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let id = Uuid::new_v4();
    db.store()
        .append(
            &stream,
            ExpectedVersion::Any,
            &[event(id, json!({"peak_force_n": 400}))],
        )
        .await
        .expect("append");

    let other_content = db
        .store()
        .append(
            &stream,
            ExpectedVersion::Any,
            &[event(id, json!({"peak_force_n": 450}))],
        )
        .await
        .expect_err("different content");
    assert!(
        matches!(other_content, StoreError::IdempotencyConflict { event_id } if event_id == id)
    );

    let other_stream = db
        .store()
        .append(
            &episode(stream.clinic_id),
            ExpectedVersion::Any,
            &[event(id, json!({"peak_force_n": 400}))],
        )
        .await
        .expect_err("same id on another stream");
    assert!(matches!(
        other_stream,
        StoreError::IdempotencyConflict { .. }
    ));

    let partly_new = db
        .store()
        .append(
            &stream,
            ExpectedVersion::Any,
            &[event(id, json!({"peak_force_n": 400})), new_event(9)],
        )
        .await
        .expect_err("a batch that only partly repeats is not a retry");
    assert!(matches!(partly_new, StoreError::IdempotencyConflict { .. }));
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        1
    );
}

#[tokio::test]
async fn an_invalid_batch_is_rejected() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let empty = db.store().append(&stream, ExpectedVersion::Any, &[]).await;
    assert!(matches!(empty, Err(StoreError::InvalidBatch(_))));
    let one = new_event(1);
    let twice = db
        .store()
        .append(&stream, ExpectedVersion::Any, &[one.clone(), one])
        .await;
    assert!(matches!(twice, Err(StoreError::InvalidBatch(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_with_the_same_expected_version_exactly_one_wins() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    db.store()
        .append(&stream, ExpectedVersion::NoStream, &[new_event(0)])
        .await
        .expect("append");

    for round in 1..=5_u64 {
        let writers = 16;
        let barrier = Arc::new(tokio::sync::Barrier::new(writers));
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let store = db.store().clone();
                let stream = stream.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&stream, ExpectedVersion::Exact(round), &[new_event(round)])
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(outcome) => {
                    winners += 1;
                    assert_eq!(outcome.last_version(), round + 1);
                }
                Err(StoreError::VersionConflict { actual, .. }) => assert_eq!(actual, round + 1),
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let versions: Vec<u64> = db
        .store()
        .read_whole_stream(&stream)
        .await
        .expect("read")
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, (1..=6).collect::<Vec<_>>(), "no gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_event_store_it_once_and_all_get_the_same_result() {
    let db = TestDatabase::create().await;
    for _ in 0..5 {
        let stream = episode(Uuid::new_v4());
        let retried = new_event(42);
        let callers = 12;
        let barrier = Arc::new(tokio::sync::Barrier::new(callers));
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let store = db.store().clone();
                let stream = stream.clone();
                let retried = retried.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&stream, ExpectedVersion::Any, &[retried])
                        .await
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("task").expect("every retry succeeds"));
        }
        assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
        assert!(results.iter().all(|r| r.events == results[0].events));
        assert_eq!(
            db.store()
                .read_whole_stream(&stream)
                .await
                .expect("read")
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn update_delete_and_truncate_of_events_are_rejected() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    db.store()
        .append(&stream, ExpectedVersion::Any, &[new_event(1)])
        .await
        .expect("append");

    // The owner (here a superuser) is stopped by the trigger.
    let owner = db.owner_client().await;
    for statement in [
        "UPDATE events SET payload = '{}'::jsonb",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let error = owner.batch_execute(statement).await.expect_err(statement);
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(
            message.contains("events are immutable"),
            "{statement}: {message}"
        );
    }

    // The service's role is not even granted the privilege.
    let app = db.store().pool().get().await.expect("app connection");
    for statement in [
        "UPDATE events SET payload = '{}'::jsonb",
        "DELETE FROM events",
    ] {
        let error = app.batch_execute(statement).await.expect_err(statement);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}"
        );
    }
    assert_eq!(
        db.store()
            .read_whole_stream(&stream)
            .await
            .expect("read")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_rolled_back_append_leaves_nothing_visible() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let mut client = db.store().pool().get().await.expect("connection");
    let transaction = client.transaction().await.expect("begin");
    spineledger_store::append_in(
        &transaction,
        &stream,
        ExpectedVersion::NoStream,
        &[new_event(1)],
    )
    .await
    .expect("append in transaction");
    transaction.rollback().await.expect("rollback");

    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        0
    );
    assert!(
        db.store()
            .read_whole_stream(&stream)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(
        read_everything(db.projector_pool(), 100).await.is_empty(),
        "nothing of the rolled-back append is in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let db = TestDatabase::create_unmigrated().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let config = db.config().clone();
            tokio::spawn(async move { spineledger_store::migrate(&config).await })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run.await.expect("task").expect("migrate");
    }
    let versions = db
        .owner_client()
        .await
        .query("SELECT version FROM refinery_schema_history", &[])
        .await
        .expect("history");
    assert_eq!(
        applied,
        versions.len(),
        "each migration applied exactly once"
    );
}

/// Where autovacuum does not ANALYZE, the service does: a table that grew past the
/// threshold is analyzed (and one that did not is left alone).
#[tokio::test]
async fn grown_tables_are_analyzed() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let events: Vec<NewEvent> = (1..=200).map(new_event).collect();
    db.store()
        .append(&stream, ExpectedVersion::NoStream, &events)
        .await
        .expect("append");
    let owner = db.owner_client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The activity statistics reach the shared counters within about a second. (On a
    // server with autovacuum on, it may analyze the table first: that counts too.)
    let analyzed = loop {
        let analyzed = spineledger_store::analyze_grown(&owner)
            .await
            .expect("analyze");
        let by_autovacuum: bool = owner
            .query_one(
                "SELECT last_autoanalyze IS NOT NULL FROM pg_stat_user_tables \
                 WHERE relname = 'events'",
                &[],
            )
            .await
            .expect("stats")
            .get(0);
        if by_autovacuum || analyzed.iter().any(|table| table == "events") {
            break analyzed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events never counted as grown: {analyzed:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        !analyzed.iter().any(|table| table == "treatment_plans"),
        "{analyzed:?}"
    );
    let analyzed_at: Option<chrono::DateTime<chrono::Utc>> = owner
        .query_one(
            "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables \
             WHERE relname = 'events'",
            &[],
        )
        .await
        .expect("stats")
        .get(0);
    assert!(analyzed_at.is_some(), "events was analyzed");
}

#[tokio::test]
async fn global_reads_page_through_all_events_in_order() {
    let db = TestDatabase::create().await;
    let clinic = Uuid::new_v4();
    let mut written = Vec::new();
    for n in 0..25 {
        let event = new_event(n);
        written.push(event.event_id);
        db.store()
            .append(&episode(clinic), ExpectedVersion::Any, &[event])
            .await
            .expect("append");
    }
    let read = read_until(db.projector_pool(), 7, written.len()).await;
    assert_eq!(read.iter().map(|(_, id)| *id).collect::<Vec<_>>(), written);
}

/// The whole log in pages, read as the projector role (which sees every clinic).
async fn read_everything(pool: &Pool, page: usize) -> Vec<(GlobalCursor, Uuid)> {
    let mut cursor = GlobalCursor::START;
    let mut seen = Vec::new();
    loop {
        let client = pool.get().await.expect("connection");
        let events = spineledger_store::read_all_after(&client, cursor, page, ClinicShard::ALL)
            .await
            .expect("read all");
        let Some(last) = events.last() else {
            return seen;
        };
        cursor = last.cursor;
        seen.extend(events.iter().map(|e| (e.cursor, e.event_id)));
    }
}

/// Reads until `count` events are visible. Transactions of other tests (xids are
/// cluster-wide) may hold the snapshot xmin back for a moment; that delays, never skips.
async fn read_until(pool: &Pool, page: usize, count: usize) -> Vec<(GlobalCursor, Uuid)> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = read_everything(pool, page).await;
        if seen.len() >= count || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The ordering hazard itself: a transaction that took its positions first but commits
/// last. A reader must not move past it while it is open, and must see its events once
/// it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_does_not_pass_a_transaction_that_is_still_open() {
    let db = TestDatabase::create().await;
    let clinic = Uuid::new_v4();
    let mut slow_client = db.store().pool().get().await.expect("connection");
    let slow = slow_client.transaction().await.expect("begin");
    let slow_event = new_event(1);
    spineledger_store::append_in(
        &slow,
        &episode(clinic),
        ExpectedVersion::Any,
        std::slice::from_ref(&slow_event),
    )
    .await
    .expect("slow append");

    let fast_event = new_event(2);
    db.store()
        .append(
            &episode(clinic),
            ExpectedVersion::Any,
            std::slice::from_ref(&fast_event),
        )
        .await
        .expect("fast append");

    let seen_while_open = read_everything(db.projector_pool(), 10).await;
    assert!(
        seen_while_open
            .iter()
            .all(|(_, id)| *id != fast_event.event_id),
        "the fast event must wait for the older open transaction"
    );
    slow.commit().await.expect("commit");
    let seen = read_until(db.projector_pool(), 10, 2).await;
    let ids: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert!(ids.contains(&slow_event.event_id) && ids.contains(&fast_event.event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deciders_of_one_stream_queue_on_its_lock_and_all_land() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let deciders = 16;
    let tasks: Vec<_> = (0..deciders)
        .map(|_| {
            let store = db.store().clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                let proposed = new_event(0);
                let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
                store
                    .append_decided(&stream, ExpectedVersion::Any, &request, move |history| {
                        // The decision depends on the history: each event records how many
                        // came before it, which only a serialised decider gets right.
                        let mut event = proposed.clone();
                        event.payload = json!({ "seen": history.len() });
                        event.fingerprint = proposed.fingerprint;
                        Ok::<_, ()>(vec![event])
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("store").expect("decided");
    }
    let stored = db.store().read_whole_stream(&stream).await.expect("read");
    let seen: Vec<u64> = stored
        .iter()
        .map(|e| e.payload["seen"].as_u64().expect("seen"))
        .collect();
    assert_eq!(seen, (0..deciders).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_refused_decision_appends_nothing_and_a_retry_skips_the_decision() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let proposed = new_event(1);
    let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
    let refused = db
        .store()
        .append_decided(&stream, ExpectedVersion::Any, &request, |_| {
            Err::<Vec<NewEvent>, _>("no")
        })
        .await
        .expect("store");
    assert_eq!(refused, Err("no"));
    assert_eq!(
        db.store().stream_version(&stream).await.expect("version"),
        0
    );

    let first = db
        .store()
        .append_decided(&stream, ExpectedVersion::Any, &request, move |_| {
            Ok::<_, &str>(vec![proposed.clone()])
        })
        .await
        .expect("store")
        .expect("decided");
    let retry = db
        .store()
        .append_decided(&stream, ExpectedVersion::Any, &request, |_| {
            Err::<Vec<NewEvent>, _>("a retry must not be decided again")
        })
        .await
        .expect("store")
        .expect("the original result");
    assert!(retry.replayed);
    assert_eq!(retry.events, first.events);
}

#[tokio::test]
async fn the_app_role_cannot_choose_xid_position_or_recording_time() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    db.store()
        .append(&stream, ExpectedVersion::Any, &[new_event(1)])
        .await
        .expect("append");
    let app = db.store().pool().get().await.expect("app connection");
    for column in ["xid", "position", "recorded_at"] {
        let value = match column {
            "xid" => "'1'::xid8",
            "position" => "1",
            _ => "'2000-01-01'::timestamptz",
        };
        let statement = format!(
            "INSERT INTO events (clinic_id, stream_id, version, event_id, event_type, \
             schema_version, payload, metadata, fingerprint, {column}) \
             VALUES ('{}', '{}', 2, gen_random_uuid(), 'X', 1, '{{}}', '{{}}', \
             decode(repeat('00', 32), 'hex'), {value})",
            stream.clinic_id, stream.stream_id
        );
        let error = app.batch_execute(&statement).await.expect_err(column);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{column}"
        );
    }
}

#[tokio::test]
async fn shard_reads_partition_the_global_order_by_clinic() {
    let db = TestDatabase::create().await;
    let clinics: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    for clinic in &clinics {
        db.store()
            .append(
                &episode(*clinic),
                ExpectedVersion::Any,
                &[new_event(1), new_event(2)],
            )
            .await
            .expect("append");
    }
    let all = read_until(db.projector_pool(), 100, 24).await;
    let client = db.projector_pool().get().await.expect("connection");
    let mut union = Vec::new();
    for index in 0..3 {
        let shard = spineledger_store::ClinicShard::new(index, 3).expect("shard");
        let events = spineledger_store::read_all_after(&client, GlobalCursor::START, 100, shard)
            .await
            .expect("shard read");
        assert!(events.iter().all(|e| shard.contains(e.clinic_id)));
        union.extend(events.iter().map(|e| (e.cursor, e.event_id)));
    }
    union.sort();
    assert_eq!(union, all);
}

/// What an auditor recomputes from plain SQL: every hash from its row, every link to the
/// previous hash, the stream's head.
async fn verify_chain_with_sql(db: &TestDatabase, stream: &StreamKey) -> Vec<[u8; 32]> {
    use spineledger_store::chain::{EventHash, Hashed};
    let owner = db.owner_client().await;
    let rows = owner
        .query(
            "SELECT clinic_id, stream_id, version, event_id, event_type, schema_version, \
                    payload, metadata, occurred_at, recorded_at, prev_hash, hash \
             FROM events WHERE clinic_id = $1 AND stream_id = $2 ORDER BY version",
            &[&stream.clinic_id, &stream.stream_id],
        )
        .await
        .expect("rows");
    let mut previous = EventHash::GENESIS;
    let mut hashes = Vec::new();
    for row in &rows {
        let payload: serde_json::Value = row.get(6);
        let metadata: serde_json::Value = row.get(7);
        let stream_id: String = row.get(1);
        let event_type: String = row.get(4);
        let version: i64 = row.get(2);
        let recomputed = Hashed {
            clinic_id: row.get(0),
            stream_id: &stream_id,
            version: u64::try_from(version).expect("version"),
            event_id: row.get(3),
            event_type: &event_type,
            schema_version: row.get(5),
            payload: &payload,
            metadata: &metadata,
            occurred_at: row.get(8),
            recorded_at: row.get(9),
            previous,
        }
        .hash();
        let stored_previous: Vec<u8> = row.get(10);
        let stored: Vec<u8> = row.get(11);
        assert_eq!(
            stored_previous, previous.0,
            "version {version} names its predecessor"
        );
        assert_eq!(
            stored, recomputed.0,
            "version {version} hashes to what is stored"
        );
        previous = recomputed;
        hashes.push(recomputed.0);
    }
    let head: Vec<u8> = owner
        .query_one(
            "SELECT head_hash FROM streams WHERE clinic_id = $1 AND stream_id = $2",
            &[&stream.clinic_id, &stream.stream_id],
        )
        .await
        .expect("head")
        .get(0);
    assert_eq!(
        head, previous.0,
        "the stream's head is its last event's hash"
    );
    hashes
}

#[tokio::test]
async fn every_append_extends_the_streams_hash_chain_and_returns_the_hash() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let first = vec![new_event(1), new_event(2)];
    let appended = db
        .store()
        .append(&stream, ExpectedVersion::NoStream, &first)
        .await
        .expect("first append");
    let second = vec![event(
        Uuid::new_v4(),
        json!({"peak_force": {"value": 333.3, "unit": "newton"}, "ratio": 0.1, "notes": "é\n\"q\""}),
    )];
    let later = db
        .store()
        .append(&stream, ExpectedVersion::Exact(2), &second)
        .await
        .expect("second append");

    let hashes = verify_chain_with_sql(&db, &stream).await;
    assert_eq!(hashes.len(), 3);
    let receipts: Vec<[u8; 32]> = appended
        .events
        .iter()
        .chain(&later.events)
        .map(|event| event.hash.expect("a hash").0)
        .collect();
    assert_eq!(receipts, hashes, "the append returns the stored hashes");

    // The store's own reads carry them too, and a retry returns the same receipt.
    let read = db.store().read_whole_stream(&stream).await.expect("read");
    assert_eq!(read[0].previous_hash.map(|hash| hash.0), Some([0; 32]));
    assert_eq!(read[2].hash.map(|hash| hash.0), Some(hashes[2]));
    let retried = db
        .store()
        .append(&stream, ExpectedVersion::Exact(2), &second)
        .await
        .expect("retry");
    assert!(retried.replayed);
    assert_eq!(retried.events[0].hash.map(|hash| hash.0), Some(hashes[2]));
}

#[tokio::test]
async fn concurrent_writers_of_one_stream_keep_one_unbroken_chain() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let store = db.store().clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                for n in 0..5 {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            &[new_event(writer * 100 + n)],
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(verify_chain_with_sql(&db, &stream).await.len(), 40);
}

#[tokio::test]
async fn hashes_survive_jsonb_spelling_of_numbers_and_sub_microsecond_times() {
    let db = TestDatabase::create().await;
    let stream = episode(Uuid::new_v4());
    let mut odd = event(
        Uuid::new_v4(),
        json!({"a": -0.0, "b": 1e16, "c": 1e-7, "d": 0.1, "e": 300.0, "f": 12345678.125, "g": [0.5, -2.5]}),
    );
    // Before 2000, with nanoseconds: the driver would round toward 2000-01-01.
    odd.occurred_at =
        chrono::DateTime::from_timestamp(631_152_000, 123_456_789).map(|at| at.to_utc());
    let mut late = event(Uuid::new_v4(), json!({"n": 2}));
    late.occurred_at = chrono::DateTime::from_timestamp(1_793_000_000, 999_999_999);
    db.store()
        .append(&stream, ExpectedVersion::NoStream, &[odd, late])
        .await
        .expect("append");
    verify_chain_with_sql(&db, &stream).await;
}

mod group_commit {
    //! Group commit: concurrent decided appends share a transaction, and each keeps its
    //! own outcome.

    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use spineledger_store::{AppendOutcome, GroupCommit};

    use super::*;

    type Decided = Result<Result<AppendOutcome, &'static str>, StoreError>;
    type Pending = Pin<Box<dyn Future<Output = Decided> + Send>>;

    /// A store with one writer, so that what queues behind a batch forms the next one.
    fn one_writer(db: &TestDatabase) -> spineledger_store::EventStore {
        spineledger_store::EventStore::with_group_commit(
            db.store().pool().clone(),
            GroupCommit {
                max_batch: 64,
                writers: 1,
            },
        )
    }

    fn append(
        store: &spineledger_store::EventStore,
        stream: &StreamKey,
        expected: ExpectedVersion,
        proposed: NewEvent,
        refuse: bool,
    ) -> Pending {
        let store = store.clone();
        let stream = stream.clone();
        Box::pin(async move {
            let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
            store
                .append_decided(&stream, expected, &request, move |_| {
                    if refuse {
                        Err("refused")
                    } else {
                        Ok(vec![proposed.clone()])
                    }
                })
                .await
        })
    }

    /// A connection whose open transaction holds `stream`'s row lock until it sends
    /// COMMIT.
    async fn block_on(db: &TestDatabase, stream: &StreamKey) -> tokio_postgres::Client {
        let owner = db.owner_client().await;
        owner.batch_execute("BEGIN").await.expect("begin");
        owner
            .execute(
                "SELECT 1 FROM streams WHERE clinic_id = $1 AND stream_id = $2 FOR UPDATE",
                &[&stream.clinic_id, &stream.stream_id],
            )
            .await
            .expect("lock");
        owner
    }

    use spineledger_store::tokio_postgres;

    async fn wait_for_a_lock_wait(db: &TestDatabase) {
        let owner = db.owner_client().await;
        for _ in 0..500 {
            let waiting: i64 = owner
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .expect("activity")
                .get(0);
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the writer never waited for the held lock");
    }

    /// Polls each future once: each queues its command and then waits for its answer.
    async fn queue_all(pending: &mut [Pending]) {
        for future in pending.iter_mut() {
            assert!(
                futures::poll!(future.as_mut()).is_pending(),
                "answered before its batch could run"
            );
        }
    }

    /// The one writer of `store`, held: its batch (an append to `blocker`, a stream of
    /// its own at `clinic`) waits on a row lock another transaction holds, so whatever
    /// is queued next forms the next batch.
    struct HeldWriter {
        blocker: StreamKey,
        holder: tokio_postgres::Client,
        head: Pending,
    }

    async fn hold_the_writer(
        db: &TestDatabase,
        store: &spineledger_store::EventStore,
        clinic: Uuid,
    ) -> HeldWriter {
        let blocker = episode(clinic);
        db.store()
            .append(&blocker, ExpectedVersion::Any, &[new_event(0)])
            .await
            .expect("setup");
        let holder = block_on(db, &blocker).await;
        let mut head = vec![append(
            store,
            &blocker,
            ExpectedVersion::Any,
            new_event(1),
            false,
        )];
        queue_all(&mut head).await;
        wait_for_a_lock_wait(db).await;
        let head = head.pop().expect("head");
        HeldWriter {
            blocker,
            holder,
            head,
        }
    }

    impl HeldWriter {
        /// Lets the held batch commit; its outcome.
        async fn release(self) -> AppendOutcome {
            self.holder.batch_execute("COMMIT").await.expect("release");
            self.head.await.expect("store").expect("decided")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_batch_answers_each_command_alone_and_commits_the_rest_together() {
        let db = TestDatabase::create().await;
        let store = one_writer(&db);
        let clinic = Uuid::new_v4();
        let (conflicting, retried) = (episode(clinic), episode(clinic));
        let (first, refused, second) = (episode(clinic), episode(clinic), episode(clinic));
        db.store()
            .append(&conflicting, ExpectedVersion::Any, &[new_event(0)])
            .await
            .expect("setup");
        let original = new_event(1);
        let stored = append(
            &store,
            &retried,
            ExpectedVersion::Any,
            original.clone(),
            false,
        )
        .await
        .expect("store")
        .expect("decided");

        // The writer's batch waits on a lock held elsewhere; everything behind it queues.
        let held = hold_the_writer(&db, &store, clinic).await;
        let blocker = held.blocker.clone();
        let mut batch = vec![
            append(
                &store,
                &conflicting,
                ExpectedVersion::Exact(7),
                new_event(3),
                false,
            ),
            append(
                &store,
                &first,
                ExpectedVersion::NoStream,
                new_event(4),
                false,
            ),
            append(&store, &refused, ExpectedVersion::Any, new_event(5), true),
            append(
                &store,
                &retried,
                ExpectedVersion::Exact(0),
                original.clone(),
                false,
            ),
            append(&store, &second, ExpectedVersion::Any, new_event(6), false),
            // The same stream as `first`: it waits for the next batch and sees `first`.
            append(
                &store,
                &first,
                ExpectedVersion::Exact(1),
                new_event(7),
                false,
            ),
        ];
        queue_all(&mut batch).await;
        let blocked = held.release().await;
        let answers = futures::future::join_all(batch).await;
        let mut answers = answers.into_iter();
        match answers.next().expect("conflict") {
            Err(StoreError::VersionConflict { actual, .. }) => assert_eq!(actual, 1),
            other => panic!("expected a version conflict, got {other:?}"),
        }
        let first_outcome = answers
            .next()
            .expect("first")
            .expect("store")
            .expect("decided");
        assert_eq!(
            answers.next().expect("refused").expect("store"),
            Err("refused")
        );
        let replayed = answers
            .next()
            .expect("retry")
            .expect("store")
            .expect("decided");
        let second_outcome = answers
            .next()
            .expect("second")
            .expect("store")
            .expect("decided");
        let after = answers
            .next()
            .expect("after")
            .expect("store")
            .expect("decided");

        // A retry gets the original outcome, not a conflict with its stale version.
        assert!(replayed.replayed);
        assert_eq!(replayed.events, stored.events);
        // The neighbours committed in one transaction, in batch order.
        let (one, two) = (&first_outcome.events[0], &second_outcome.events[0]);
        assert_eq!(one.cursor.xid, two.cursor.xid, "one transaction");
        assert!(one.cursor.position < two.cursor.position, "batch order");
        assert_ne!(one.cursor.xid, blocked.events[0].cursor.xid);
        // The second command of `first` came in the next transaction, after the first.
        assert!(after.events[0].cursor > one.cursor);
        assert_eq!(after.events[0].version, 2);
        // Refused and conflicting commands wrote nothing.
        assert_eq!(store.stream_version(&refused).await.expect("version"), 0);
        assert_eq!(
            store.stream_version(&conflicting).await.expect("version"),
            1
        );
        for stream in [&blocker, &conflicting, &retried, &first, &second] {
            verify_chain_with_sql(&db, stream).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_the_database_refuses_fails_alone() {
        let db = TestDatabase::create().await;
        let store = one_writer(&db);
        let clinic = Uuid::new_v4();
        let held = hold_the_writer(&db, &store, clinic).await;
        // jsonb cannot hold U+0000: PostgreSQL fails the statement, and with it the
        // batch's transaction.
        let unstorable = event(Uuid::new_v4(), json!({ "note": "a\u{0}b" }));
        let (good, bad, also_good) = (episode(clinic), episode(clinic), episode(clinic));
        let mut batch = vec![
            append(&store, &good, ExpectedVersion::Any, new_event(2), false),
            append(&store, &bad, ExpectedVersion::Any, unstorable, false),
            append(
                &store,
                &also_good,
                ExpectedVersion::Any,
                new_event(3),
                false,
            ),
        ];
        queue_all(&mut batch).await;
        held.release().await;
        let answers = futures::future::join_all(batch).await;
        assert!(
            answers[0].as_ref().is_ok_and(Result::is_ok),
            "{:?}",
            answers[0]
        );
        assert!(
            matches!(answers[1], Err(StoreError::Database(_))),
            "{:?}",
            answers[1]
        );
        assert!(
            answers[2].as_ref().is_ok_and(Result::is_ok),
            "{:?}",
            answers[2]
        );
        assert_eq!(store.stream_version(&bad).await.expect("version"), 0);
        assert_eq!(store.stream_version(&good).await.expect("version"), 1);
        assert_eq!(store.stream_version(&also_good).await.expect("version"), 1);
        // The failed transaction ended: no pooled connection is left inside one. (The
        // batch opens and ends its transaction with a plain BEGIN and a COMMIT sent with
        // its writes, which PostgreSQL turns into a rollback after the failed insert.)
        let owner = db.owner_client().await;
        let open: i64 = owner
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        assert_eq!(open, 0, "a pooled connection was left in a transaction");
        let appended = store
            .append(&episode(clinic), ExpectedVersion::Any, &[new_event(4)])
            .await;
        assert!(appended.is_ok(), "{appended:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_decision_fails_its_command_only_and_the_writer_lives_on() {
        let db = TestDatabase::create().await;
        let store = one_writer(&db);
        let clinic = Uuid::new_v4();
        let held = hold_the_writer(&db, &store, clinic).await;
        let (before, broken, after) = (episode(clinic), episode(clinic), episode(clinic));
        let panicking: Pending = {
            let (store, broken) = (store.clone(), broken.clone());
            Box::pin(async move {
                let proposed = new_event(2);
                let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
                store
                    .append_decided(
                        &broken,
                        ExpectedVersion::Any,
                        &request,
                        move |_| -> Result<Vec<NewEvent>, &'static str> {
                            panic!("a bug in a decision")
                        },
                    )
                    .await
            })
        };
        let mut batch = vec![
            append(&store, &before, ExpectedVersion::Any, new_event(3), false),
            panicking,
            append(&store, &after, ExpectedVersion::Any, new_event(4), false),
        ];
        queue_all(&mut batch).await;
        held.release().await;
        let answers = futures::future::join_all(batch).await;
        assert!(
            answers[0].as_ref().is_ok_and(Result::is_ok),
            "{:?}",
            answers[0]
        );
        assert!(
            matches!(answers[1], Err(StoreError::Malformed(_))),
            "{:?}",
            answers[1]
        );
        assert!(
            answers[2].as_ref().is_ok_and(Result::is_ok),
            "{:?}",
            answers[2]
        );
        assert_eq!(store.stream_version(&broken).await.expect("version"), 0);
        // The one writer still takes commands.
        append(
            &store,
            &broken,
            ExpectedVersion::NoStream,
            new_event(5),
            false,
        )
        .await
        .expect("store")
        .expect("decided");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_command_is_not_overtaken_by_a_later_one_of_its_stream() {
        let db = TestDatabase::create().await;
        let store = one_writer(&db);
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        let held = hold_the_writer(&db, &store, one).await;
        // The same event id at two clinics is two events; a batch still takes one of
        // them only, and the second waits.
        let shared = new_event(2);
        let elsewhere = NewEvent {
            payload: json!({ "n": 3 }),
            ..shared.clone()
        };
        let (first_stream, second_stream) = (episode(one), episode(two));
        let mut batch = vec![
            append(&store, &first_stream, ExpectedVersion::Any, shared, false),
            append(
                &store,
                &second_stream,
                ExpectedVersion::Any,
                elsewhere,
                false,
            ),
            append(
                &store,
                &second_stream,
                ExpectedVersion::Any,
                new_event(4),
                false,
            ),
        ];
        queue_all(&mut batch).await;
        held.release().await;
        let answers: Vec<AppendOutcome> = futures::future::join_all(batch)
            .await
            .into_iter()
            .map(|answer| answer.expect("store").expect("decided"))
            .collect();
        let (deferred, later) = (&answers[1].events[0], &answers[2].events[0]);
        assert_eq!(deferred.version, 1, "the deferred command keeps its turn");
        assert_eq!(later.version, 2);
        assert!(deferred.cursor < later.cursor);
        assert_ne!(answers[0].events[0].cursor.xid, deferred.cursor.xid);
        verify_chain_with_sql(&db, &second_stream).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn under_contention_every_acknowledged_append_is_committed_once_in_order() {
        let db = TestDatabase::create().await;
        let store = db.store().clone();
        let clinics = [Uuid::new_v4(), Uuid::new_v4()];
        let streams: Vec<StreamKey> = (0..6).map(|n| episode(clinics[n % 2])).collect();
        let streams = Arc::new(streams);
        let tasks: Vec<_> = (0..32u64)
            .map(|client| {
                let (store, streams) = (store.clone(), Arc::clone(&streams));
                let reader = db.store().clone();
                tokio::spawn(async move {
                    let mut acknowledged = Vec::new();
                    for n in 0..12u64 {
                        let stream = &streams[((client + n) % 6) as usize];
                        // Expect the version just read: racing writers make some stale.
                        loop {
                            let version = reader.stream_version(stream).await.expect("version");
                            let proposed = new_event(client * 100 + n);
                            let id = proposed.event_id;
                            let answer = append(
                                &store,
                                stream,
                                ExpectedVersion::Exact(version),
                                proposed,
                                false,
                            )
                            .await;
                            match answer {
                                Ok(Ok(outcome)) => {
                                    // Acknowledged means committed: a new transaction sees it.
                                    let seen = reader
                                        .read_stream(stream, outcome.events[0].version, 1)
                                        .await
                                        .expect("read");
                                    assert_eq!(seen[0].event_id, id, "visible once answered");
                                    acknowledged.push(id);
                                    break;
                                }
                                Err(StoreError::VersionConflict { .. }) => continue,
                                other => panic!("unexpected answer {other:?}"),
                            }
                        }
                    }
                    acknowledged
                })
            })
            .collect();
        let mut acknowledged = HashSet::new();
        for task in tasks {
            for id in task.await.expect("task") {
                assert!(acknowledged.insert(id), "acknowledged twice");
            }
        }
        let mut stored = HashSet::new();
        for stream in streams.iter() {
            let events = store.read_whole_stream(stream).await.expect("read");
            let versions: Vec<u64> = events.iter().map(|event| event.version).collect();
            assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
            stored.extend(events.iter().map(|event| event.event_id));
            verify_chain_with_sql(&db, stream).await;
        }
        assert_eq!(
            stored, acknowledged,
            "exactly the acknowledged events, once each"
        );
        assert_eq!(stored.len(), 32 * 12);
    }
}

mod held_histories {
    //! Decisions from the histories the group commit holds: never on a stale history,
    //! never instead of recognising a retry, always on what a read would return.

    use std::sync::Mutex;

    use spineledger_store::{EventStore, RecordedEvent};

    use super::*;

    /// Appends `proposed` after deciding on the history, which is kept in `seen`.
    async fn decide_and_record(
        store: &EventStore,
        stream: &StreamKey,
        proposed: NewEvent,
        seen: &Arc<Mutex<Vec<RecordedEvent>>>,
    ) -> spineledger_store::AppendOutcome {
        let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
        let seen = Arc::clone(seen);
        store
            .append_decided(stream, ExpectedVersion::Any, &request, move |history| {
                *seen.lock().expect("seen") = history.to_vec();
                Ok::<_, ()>(vec![proposed.clone()])
            })
            .await
            .expect("store")
            .expect("decided")
    }

    #[tokio::test]
    async fn a_stream_another_process_wrote_to_is_read_again_before_deciding() {
        let db = TestDatabase::create().await;
        let stream = episode(Uuid::new_v4());
        let seen = Arc::new(Mutex::new(Vec::new()));
        decide_and_record(db.store(), &stream, new_event(1), &seen).await;
        decide_and_record(db.store(), &stream, new_event(2), &seen).await;
        assert_eq!(seen.lock().expect("seen").len(), 1);
        // Another process: a store of its own (its own writers and history cache).
        let other = EventStore::new(db.store().pool().clone());
        decide_and_record(&other, &stream, new_event(3), &seen).await;
        db.store()
            .append(&stream, ExpectedVersion::Any, &[new_event(4)])
            .await
            .expect("plain append");
        decide_and_record(db.store(), &stream, new_event(5), &seen).await;
        let stored = db.store().read_whole_stream(&stream).await.expect("read");
        let decided_on = seen.lock().expect("seen").clone();
        assert_eq!(
            decided_on.len(),
            4,
            "the events of the other writers are seen"
        );
        assert_eq!(decided_on, stored[..4].to_vec());
    }

    #[tokio::test]
    async fn a_held_history_is_what_a_read_returns_jsonb_spelling_included() {
        let db = TestDatabase::create().await;
        let stream = episode(Uuid::new_v4());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let odd = event(
            Uuid::new_v4(),
            json!({"z": 1, "a": 1e16, "m": 0.10, "k": [300.0, -0.0], "b": {"y": 2, "x": 1}}),
        );
        decide_and_record(db.store(), &stream, odd, &seen).await;
        decide_and_record(db.store(), &stream, new_event(2), &seen).await;
        let stored = db.store().read_whole_stream(&stream).await.expect("read");
        assert_eq!(*seen.lock().expect("seen"), stored[..1].to_vec());
    }

    #[tokio::test]
    async fn a_retry_on_a_held_history_gets_the_original_outcome_whatever_the_decision() {
        let db = TestDatabase::create().await;
        let stream = episode(Uuid::new_v4());
        let seen = Arc::new(Mutex::new(Vec::new()));
        decide_and_record(db.store(), &stream, new_event(1), &seen).await;
        let proposed = new_event(2);
        let first = decide_and_record(db.store(), &stream, proposed.clone(), &seen).await;
        let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
        // A decision that would accept it again (the insert meets the unique event id) ...
        let accepted = {
            let proposed = proposed.clone();
            db.store()
                .append_decided(&stream, ExpectedVersion::Any, &request, move |_| {
                    Ok::<_, &str>(vec![proposed.clone()])
                })
                .await
                .expect("store")
                .expect("the original outcome")
        };
        // ... one that would refuse, and one with a stale expected version.
        let refused = db
            .store()
            .append_decided(&stream, ExpectedVersion::Any, &request, |_| {
                Err::<Vec<NewEvent>, _>("refused")
            })
            .await
            .expect("store")
            .expect("the original outcome");
        let stale = {
            let proposed = proposed.clone();
            db.store()
                .append_decided(&stream, ExpectedVersion::Exact(1), &request, move |_| {
                    Ok::<_, &str>(vec![proposed.clone()])
                })
                .await
                .expect("store")
                .expect("the original outcome")
        };
        for retry in [accepted, refused, stale] {
            assert!(retry.replayed);
            assert_eq!(retry.events, first.events);
        }
        assert_eq!(
            db.store().stream_version(&stream).await.expect("version"),
            2
        );
        // And the stream goes on from its true head.
        decide_and_record(db.store(), &stream, new_event(3), &seen).await;
        assert_eq!(seen.lock().expect("seen").len(), 2);
        verify_chain_with_sql(&db, &stream).await;
    }

    /// A command that expects a new stream is decided on no history without reading the
    /// stream: on a stream that exists (one this store holds no history of) it is a
    /// conflict, its retry is still recognised, and on a new stream it commits.
    #[tokio::test]
    async fn a_command_for_a_new_stream_is_refused_or_replayed_as_after_a_read() {
        let db = TestDatabase::create().await;
        let stream = episode(Uuid::new_v4());
        let first = new_event(1);
        // The plain append: the group commit's cache holds nothing of this stream.
        db.store()
            .append(
                &stream,
                ExpectedVersion::NoStream,
                std::slice::from_ref(&first),
            )
            .await
            .expect("first");
        let decided = |proposed: NewEvent| {
            move |history: &[spineledger_store::RecordedEvent]| {
                assert!(
                    history.is_empty(),
                    "decided on a history of {}",
                    history.len()
                );
                Ok::<_, &str>(vec![proposed.clone()])
            }
        };
        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(0)] {
            let second = new_event(2);
            let request = spineledger_store::request_keys(std::slice::from_ref(&second));
            let conflict = db
                .store()
                .append_decided(&stream, expected, &request, decided(second))
                .await;
            assert!(
                matches!(conflict, Err(StoreError::VersionConflict { actual: 1, .. })),
                "{expected}: {conflict:?}"
            );
            let request = spineledger_store::request_keys(std::slice::from_ref(&first));
            let replayed = db
                .store()
                .append_decided(&stream, expected, &request, decided(first.clone()))
                .await
                .expect("store")
                .expect("decided");
            assert!(
                replayed.replayed,
                "{expected}: the retry was not recognised"
            );
            assert_eq!(replayed.events[0].version, 1);
        }
        assert_eq!(
            db.store().stream_version(&stream).await.expect("version"),
            1
        );

        let fresh = episode(Uuid::new_v4());
        let proposed = new_event(1);
        let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
        let outcome = db
            .store()
            .append_decided(
                &fresh,
                ExpectedVersion::NoStream,
                &request,
                decided(proposed),
            )
            .await
            .expect("store")
            .expect("decided");
        assert_eq!(outcome.events[0].version, 1);
        // The history that commit left in the cache is the stream as stored: the next
        // command is decided on exactly its one event.
        let stored = db.store().read_whole_stream(&fresh).await.expect("read");
        let next = new_event(2);
        let request = spineledger_store::request_keys(std::slice::from_ref(&next));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outcome = {
            let seen = Arc::clone(&seen);
            db.store()
                .append_decided(&fresh, ExpectedVersion::Any, &request, move |history| {
                    seen.lock().expect("seen").push(history.to_vec());
                    Ok::<_, &str>(vec![next.clone()])
                })
                .await
                .expect("store")
                .expect("decided")
        };
        assert_eq!(outcome.events[0].version, 2);
        assert_eq!(*seen.lock().expect("seen"), vec![stored]);
        // And on a stream whose history is held, a new-stream command is a conflict.
        let third = new_event(3);
        let request = spineledger_store::request_keys(std::slice::from_ref(&third));
        let conflict = db
            .store()
            .append_decided(&fresh, ExpectedVersion::NoStream, &request, decided(third))
            .await;
        assert!(
            matches!(conflict, Err(StoreError::VersionConflict { actual: 2, .. })),
            "{conflict:?}"
        );
        verify_chain_with_sql(&db, &fresh).await;
    }

    #[tokio::test]
    async fn a_refusal_and_a_conflict_on_a_held_history_answer_as_after_a_read() {
        let db = TestDatabase::create().await;
        let stream = episode(Uuid::new_v4());
        let seen = Arc::new(Mutex::new(Vec::new()));
        decide_and_record(db.store(), &stream, new_event(1), &seen).await;
        let proposed = new_event(2);
        let request = spineledger_store::request_keys(std::slice::from_ref(&proposed));
        let refused = db
            .store()
            .append_decided(&stream, ExpectedVersion::Any, &request, |_| {
                Err::<Vec<NewEvent>, _>("refused")
            })
            .await
            .expect("store");
        assert_eq!(refused, Err("refused"));
        let conflict = {
            let proposed = proposed.clone();
            db.store()
                .append_decided(&stream, ExpectedVersion::Exact(0), &request, move |_| {
                    Ok::<_, &str>(vec![proposed.clone()])
                })
                .await
        };
        assert!(
            matches!(conflict, Err(StoreError::VersionConflict { .. })),
            "{conflict:?}"
        );
        assert_eq!(
            db.store().stream_version(&stream).await.expect("version"),
            1
        );
    }
}
