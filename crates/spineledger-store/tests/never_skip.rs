//! The global order never skips an event.
//!
//! Eight writers commit transactions of random size and length (some held open with a
//! sleep before commit, some rolled back) while a reader tails "all events after cursor".
//! Positions are taken at insert and become visible at commit, out of order: a reader
//! trusting the sequence alone would skip the late committers. The reader must see every
//! committed event exactly once, in one stable order, and nothing that was rolled back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use spineledger_store::deadpool_postgres::Pool;
use spineledger_store::{
    ClinicShard, EventMetadata, EventStore, ExpectedVersion, Fingerprint, GlobalCursor, NewEvent,
    RecordedEvent, StreamKey,
};
use spineledger_testkit::TestDatabase;
use uuid::Uuid;

const WRITERS: u64 = 8;
const EVENTS_PER_WRITER: usize = 12_800; // 102,400 committed events in all
const MAX_BATCH: usize = 60;

fn new_event(writer: u64, n: usize) -> NewEvent {
    let payload = json!({ "writer": writer, "n": n });
    let event_id = Uuid::new_v4();
    NewEvent {
        event_id,
        event_type: "SessionRecorded".into(),
        schema_version: 1,
        fingerprint: Fingerprint::of(&payload).expect("fingerprint"),
        payload,
        metadata: EventMetadata {
            actor: format!("writer-{writer}"),
            command_id: event_id,
            ..EventMetadata::default()
        },
        occurred_at: None,
    }
}

/// Commits about `EVENTS_PER_WRITER` events; returns the ids of what was committed.
async fn write(store: EventStore, writer: u64) -> anyhow::Result<Vec<Uuid>> {
    let mut rng = StdRng::seed_from_u64(writer);
    let clinics: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let streams: Vec<StreamKey> = (0..20)
        .map(|i| {
            StreamKey::new(
                clinics[i % clinics.len()],
                format!("episode-{}", Uuid::new_v4()),
            )
        })
        .collect();
    let mut committed = Vec::with_capacity(EVENTS_PER_WRITER);
    let mut n = 0;
    while committed.len() < EVENTS_PER_WRITER {
        let size = rng
            .random_range(1..=MAX_BATCH)
            .min(EVENTS_PER_WRITER - committed.len());
        let batch: Vec<NewEvent> = (0..size)
            .map(|_| {
                n += 1;
                new_event(writer, n)
            })
            .collect();
        let stream = &streams[rng.random_range(0..streams.len())];
        let hold = match rng.random_range(0..100) {
            0..70 => Duration::ZERO,
            70..95 => Duration::from_millis(rng.random_range(1..15)),
            _ => Duration::from_millis(rng.random_range(50..250)),
        };
        let roll_back = rng.random_range(0..100) < 5;

        let mut client = store.pool().get().await?;
        let transaction = client.transaction().await?;
        spineledger_store::append_in(&transaction, stream, ExpectedVersion::Any, &batch).await?;
        tokio::time::sleep(hold).await;
        if roll_back {
            transaction.rollback().await?;
        } else {
            transaction.commit().await?;
            committed.extend(batch.iter().map(|event| event.event_id));
        }
    }
    Ok(committed)
}

/// One page of the whole log after `cursor`, read as the projector role (every clinic).
async fn read_page(
    log: &Pool,
    cursor: GlobalCursor,
    limit: usize,
) -> anyhow::Result<Vec<RecordedEvent>> {
    let client = log.get().await?;
    Ok(spineledger_store::read_all_after(&client, cursor, limit, ClinicShard::ALL).await?)
}

/// Tails the log. Once the writers are done (`committed` holds their count), it goes on
/// until it has seen that many events — other tests' open transactions anywhere in the
/// cluster (xids are cluster-wide) may hold the snapshot xmin back for a while, which
/// delays events but never loses them — and then polls a little longer to catch any
/// extra or repeated delivery. A generous deadline turns a real loss into a failure.
async fn tail(
    log: Pool,
    committed: Arc<std::sync::atomic::AtomicUsize>,
    done: Arc<AtomicBool>,
) -> anyhow::Result<Vec<(GlobalCursor, Uuid)>> {
    let mut cursor = GlobalCursor::START;
    let mut seen = Vec::new();
    let mut deadline = None;
    let mut extra_polls = 0;
    loop {
        let page = read_page(&log, cursor, 500).await?;
        if let Some(last) = page.last() {
            anyhow::ensure!(last.cursor > cursor, "cursor went backwards");
            cursor = last.cursor;
            seen.extend(page.iter().map(|event| (event.cursor, event.event_id)));
            continue;
        }
        if done.load(Ordering::Acquire) {
            let deadline = *deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(180));
            if seen.len() >= committed.load(Ordering::Acquire) {
                extra_polls += 1;
                if extra_polls > 20 {
                    return Ok(seen);
                }
            } else if tokio::time::Instant::now() > deadline {
                return Ok(seen);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_committed_event_exactly_once_in_a_stable_order() {
    let db = TestDatabase::create().await;
    let done = Arc::new(AtomicBool::new(false));
    let committed_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = tokio::spawn(tail(
        db.projector_pool().clone(),
        committed_count.clone(),
        done.clone(),
    ));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write(db.store().clone(), writer)))
        .collect();

    let mut committed = HashSet::new();
    for writer in writers {
        committed.extend(writer.await.expect("writer task").expect("writer"));
    }
    committed_count.store(committed.len(), Ordering::Release);
    done.store(true, Ordering::Release);
    let tailed = reader.await.expect("reader task").expect("reader");

    assert!(
        committed.len() >= 100_000,
        "only {} events committed",
        committed.len()
    );
    let tailed_ids: Vec<Uuid> = tailed.iter().map(|(_, id)| *id).collect();
    let unique: HashSet<Uuid> = tailed_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        tailed_ids.len(),
        "an event was delivered twice"
    );
    assert_eq!(
        unique.len(),
        committed.len(),
        "the tailing reader missed {} committed events",
        committed.difference(&unique).count()
    );
    assert!(
        unique == committed,
        "the reader saw events that were never committed"
    );
    assert!(
        tailed.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "order is not strictly increasing"
    );

    // Reading again from scratch, in pages of another size, gives the same order.
    let mut cursor = GlobalCursor::START;
    let mut reread = Vec::with_capacity(tailed.len());
    loop {
        let page = read_page(db.projector_pool(), cursor, 7_919)
            .await
            .expect("re-read");
        let Some(last) = page.last() else { break };
        cursor = last.cursor;
        reread.extend(page.iter().map(|event| (event.cursor, event.event_id)));
    }
    assert_eq!(reread, tailed, "a second reading differs from the first");
}
