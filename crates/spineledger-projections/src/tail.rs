//! One read of the log for every projection and shard a worker runs.
//!
//! Before, every lease task probed and read the log for itself on every wake-up and
//! poll: with three projections and four shards, twelve readers of the same new events,
//! most of them finding nothing of their shard. Now one task per worker process, the
//! tail, reads the whole log (every clinic) after the point it reached, with the
//! never-skip rule of [`spineledger_store::read_all_after`], and keeps what it read in a
//! window in memory: every event in `(from, to]`. A lease task takes its shard's events
//! from the window and opens a transaction only when it has something to apply (or a
//! long stretch of other shards' events to move its checkpoint past).
//!
//! The window is complete: the tail reads strictly after `to`, in global order, and a
//! never-skip read returns every event after its cursor whose transaction ended before
//! the oldest running one, so no event can later appear inside `(from, to]`. A task that
//! stands before `from` (it just started, took over a lease, or fell behind while the
//! window moved on) reads the log itself, the way every task used to, until it reaches
//! the window.
//!
//! The window is bounded: events every task in it has read are dropped, and past
//! [`WINDOW_CAP`] events the oldest are dropped anyway (a task left behind reads the log
//! itself). A task's checkpoint still moves only in its own transaction, as a
//! compare-and-set under its lease: the window decides what is read, never what is
//! committed.
//!
//! When the tail cannot read (the database is away, or an event does not decode), the
//! window is closed: every task reads the log itself, as before the tail existed, so a
//! bad event stops only its own shard, until the tail reads again from the head.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use spineledger_store::{ClinicShard, GlobalCursor, RecordedEvent, log_head, read_all_after};
use tokio::sync::watch;

use crate::{Projection, ProjectionError};

/// The most events the window holds. An event measured about 5 KB in memory, so some
/// 20 MB, beside the group commit's history cache inside the memory target (200 MB
/// resident); at the measured append rates (under 3,000 events/s) it holds more than a
/// second of the busiest load, where a healthy task lags by about 100 ms.
pub(crate) const WINDOW_CAP: usize = 4_000;

/// Events per read of the log.
const PAGE: usize = 1_000;

/// What a lease task is told about its shard. (No `Debug`, here and below: these hold
/// clinical payloads, which must not reach a log by accident.)
pub(crate) enum Slice {
    /// The window does not reach back to the task's position (or the tail has not read
    /// the log's head yet): the task reads the log itself. `from` is the window's start
    /// when asked, if it had one: a read of the log that finds nothing more of the shard
    /// has also passed it.
    Behind { from: Option<GlobalCursor> },
    /// The shard's events after the task's position (at most the batch size), and how far
    /// a batch of them may move the checkpoint: past the last one taken when the batch
    /// is full, else to the window's end.
    Ready {
        events: Vec<RecordedEvent>,
        end: GlobalCursor,
    },
}

/// The window and the positions of the tasks reading it.
#[derive(Default)]
struct Window {
    /// `None` until the tail first found the log's head, and while it cannot read.
    from: Option<GlobalCursor>,
    to: GlobalCursor,
    events: VecDeque<Arc<RecordedEvent>>,
    /// Where each task in the window has read to (a task before it has no entry).
    readers: HashMap<(Projection, u8), GlobalCursor>,
}

impl Window {
    /// Drops what every reader in the window has read, then the oldest events past the
    /// cap.
    fn trim(&mut self) {
        let Some(from) = self.from else {
            return;
        };
        let read_by_all = self
            .readers
            .values()
            .filter(|position| **position >= from)
            .min()
            .copied()
            .unwrap_or(self.to)
            .min(self.to);
        let mut start = from.max(read_by_all);
        while self
            .events
            .front()
            .is_some_and(|event| event.cursor <= start)
        {
            self.events.pop_front();
        }
        while self.events.len() > WINDOW_CAP {
            if let Some(event) = self.events.pop_front() {
                start = event.cursor;
            }
        }
        self.from = Some(start);
    }
}

/// The worker's shared read of the log.
pub(crate) struct Tail {
    window: Mutex<Window>,
    /// Counts the tail's reads that found something.
    progress: watch::Sender<u64>,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window::default()),
            progress: watch::Sender::new(0),
        }
    }
}

impl Tail {
    /// Tells of every read that adds to the window.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads one page of the log after the window's end (the head first, if the window
    /// has none yet). `true` when the page was full: more is waiting.
    pub(crate) async fn read_more(&self, pool: &Pool) -> Result<bool, ProjectionError> {
        let client = pool.get().await?;
        let to = {
            let window = self.window();
            window.from.map(|_| window.to)
        };
        let Some(to) = to else {
            // The first read starts at the head: tasks catch up on older events by reading
            // the log themselves, once, rather than through a window that would have to
            // hold the whole backlog.
            let head = log_head(&client).await?.unwrap_or(GlobalCursor::START);
            self.start_at(head);
            return Ok(true);
        };
        let events = read_all_after(&client, to, PAGE, ClinicShard::ALL).await?;
        drop(client);
        let full = events.len() >= PAGE;
        self.extend(events);
        Ok(full)
    }

    /// Opens the window at `head`: empty, every later event still to be read.
    fn start_at(&self, head: GlobalCursor) {
        {
            let mut window = self.window();
            window.from = Some(head);
            window.to = head;
            window.events.clear();
        }
        self.progress
            .send_modify(|reads| *reads = reads.wrapping_add(1));
    }

    /// Adds what a read after the window's end returned (in global order).
    fn extend(&self, events: Vec<RecordedEvent>) {
        let Some(last) = events.last().map(|event| event.cursor) else {
            return;
        };
        {
            let mut window = self.window();
            window.events.extend(events.into_iter().map(Arc::new));
            window.to = last;
            window.trim();
        }
        self.progress
            .send_modify(|reads| *reads = reads.wrapping_add(1));
    }

    /// Closes the window (the tail cannot read): every task reads the log itself until the
    /// tail reads again, from the head.
    fn close(&self) {
        let mut window = self.window();
        window.from = None;
        window.events.clear();
    }

    /// The events of `shard` (of `shards`) after `position`, at most `limit`.
    pub(crate) fn slice(
        &self,
        position: GlobalCursor,
        shard: u8,
        shards: u8,
        limit: usize,
    ) -> Slice {
        let (events, end) = match self.shared_slice(position, shard, shards, limit) {
            Ok(found) => found,
            Err(behind) => return behind,
        };
        // Copied outside the lock: the tail and the other tasks need it meanwhile.
        Slice::Ready {
            events: events
                .iter()
                .map(|event| RecordedEvent::clone(event))
                .collect(),
            end,
        }
    }

    /// [`Tail::slice`] under the lock, sharing the events.
    fn shared_slice(
        &self,
        position: GlobalCursor,
        shard: u8,
        shards: u8,
        limit: usize,
    ) -> Result<(Vec<Arc<RecordedEvent>>, GlobalCursor), Slice> {
        let window = self.window();
        let Some(from) = window.from else {
            return Err(Slice::Behind { from: None });
        };
        if position < from {
            return Err(Slice::Behind { from: Some(from) });
        }
        if position >= window.to {
            // At or past the end (a task's own read of the log may run ahead of the tail).
            return Ok((Vec::new(), position));
        }
        let first = window
            .events
            .partition_point(|event| event.cursor <= position);
        let mut events = Vec::new();
        let mut end = window.to;
        for event in window.events.range(first..) {
            if ClinicShard::of(event.clinic_id, shards).index() != shard {
                continue;
            }
            if events.len() >= limit.max(1) {
                // Full: the checkpoint moves past the last event taken, not the window's end.
                end = events
                    .last()
                    .map_or(position, |last: &Arc<RecordedEvent>| last.cursor);
                break;
            }
            events.push(Arc::clone(event));
        }
        Ok((events, end))
    }

    /// Records how far a task has read (it is in the window), and drops what every
    /// reader has read.
    pub(crate) fn report(&self, task: (Projection, u8), position: GlobalCursor) {
        let mut window = self.window();
        window.readers.insert(task, position);
        window.trim();
    }

    /// Forgets a task (it stopped, or it is reading the log itself again).
    pub(crate) fn forget(&self, task: (Projection, u8)) {
        let mut window = self.window();
        window.readers.remove(&task);
        window.trim();
    }
}

/// Keeps the window current: reads on every wake-up and poll, after a pause that lets a
/// burst of appends land (one read instead of one per append), and at once while pages
/// come back full.
pub(crate) async fn follow<T>(
    tail: Arc<Tail>,
    pool: Pool,
    mut woken: watch::Receiver<T>,
    poll_interval: Duration,
    coalesce: Duration,
) {
    // Should this task end (a panic), the window closes and the tasks read for themselves.
    let _closing = CloseOnDrop(Arc::clone(&tail));
    let mut failures: u32 = 0;
    loop {
        match tail.read_more(&pool).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => failures = 0,
            Err(error) => {
                // The tasks read the log themselves meanwhile; the tail starts again from
                // the head. Logged without the error's text, which may quote an event.
                tail.close();
                if failures == 0 {
                    tracing::warn!(
                        sqlstate = ?error.sqlstate(),
                        "the shared read of the log failed; tasks read for themselves"
                    );
                }
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(200).saturating_mul(failures.min(25));
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        let poll = tokio::time::Instant::now() + poll_interval;
        tokio::select! {
            changed = woken.changed() => {
                if changed.is_err() {
                    // No listener any more: poll.
                    tokio::time::sleep_until(poll).await;
                }
            }
            () = tokio::time::sleep_until(poll) => {}
        }
        tokio::time::sleep(coalesce).await;
    }
}

/// Closes the window when the tail's task ends.
struct CloseOnDrop(Arc<Tail>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Removes a task from the window's readers when it ends (its lease lost, the worker
/// stopping), so that it does not hold the window back.
pub(crate) struct Reading {
    tail: Arc<Tail>,
    task: (Projection, u8),
}

impl Reading {
    pub(crate) fn new(tail: Arc<Tail>, task: (Projection, u8)) -> Self {
        Self { tail, task }
    }

    pub(crate) fn report(&self, position: GlobalCursor) {
        self.tail.report(self.task, position);
    }

    pub(crate) fn forget(&self) {
        self.tail.forget(self.task);
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.tail.forget(self.task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// An event of the clinic whose id ends in `clinic_byte`, at `position` (xid 1).
    fn event(clinic_byte: u8, position: i64) -> RecordedEvent {
        let payload = serde_json::json!({ "n": position });
        RecordedEvent {
            clinic_id: Uuid::from_u128(u128::from(clinic_byte)),
            stream_id: format!("episode-{position}"),
            version: 1,
            event_id: Uuid::new_v4(),
            event_type: "Test".into(),
            schema_version: 1,
            fingerprint: spineledger_store::Fingerprint::of(&payload).expect("fingerprint"),
            payload,
            metadata: spineledger_store::EventMetadata::default(),
            stored_metadata: serde_json::Value::Null,
            occurred_at: None,
            recorded_at: chrono::Utc::now(),
            cursor: at(position),
            previous_hash: None,
            hash: None,
        }
    }

    fn at(position: i64) -> GlobalCursor {
        GlobalCursor { xid: 1, position }
    }

    fn positions(slice: &Slice) -> (Vec<i64>, GlobalCursor) {
        match slice {
            Slice::Ready { events, end } => (
                events.iter().map(|event| event.cursor.position).collect(),
                *end,
            ),
            Slice::Behind { from } => panic!("expected events, got behind {from:?}"),
        }
    }

    #[test]
    fn a_task_gets_only_its_shards_events_and_a_full_batch_stops_at_its_last() {
        let tail = Tail::default();
        assert!(matches!(
            tail.slice(at(0), 0, 2, 10),
            Slice::Behind { from: None }
        ));
        tail.start_at(at(10));
        // A reader in the window keeps its events there (with none, nothing is kept).
        tail.report((Projection::TreatmentPlans, 0), at(10));
        // Clinic bytes 0 and 2 are shard 0 of 2; 1 and 3 shard 1.
        tail.extend(
            (11..=20)
                .map(|position| event((position % 4) as u8, position))
                .collect(),
        );
        let (events, end) = positions(&tail.slice(at(10), 0, 2, 10));
        assert_eq!((events, end), (vec![12, 14, 16, 18, 20], at(20)));
        let (events, end) = positions(&tail.slice(at(10), 1, 2, 2));
        assert_eq!(
            (events, end),
            (vec![11, 13], at(13)),
            "full: stops at its last event"
        );
        let (events, end) = positions(&tail.slice(at(13), 1, 2, 2));
        assert_eq!((events, end), (vec![15, 17], at(17)));
        let (events, end) = positions(&tail.slice(at(17), 1, 2, 2));
        assert_eq!(
            (events, end),
            (vec![19], at(20)),
            "the last one: on to the window's end"
        );
        let (events, end) = positions(&tail.slice(at(20), 1, 2, 2));
        assert_eq!((events, end), (vec![], at(20)));
        assert!(
            matches!(tail.slice(at(9), 0, 2, 10), Slice::Behind { from: Some(from) } if from == at(10)),
            "before the window: read the log"
        );
    }

    #[test]
    fn the_window_keeps_what_a_reader_in_it_still_needs_and_no_more() {
        let tail = Tail::default();
        tail.start_at(at(0));
        tail.report((Projection::TreatmentPlans, 0), at(0));
        tail.report((Projection::OutcomeStatistics, 0), at(0));
        tail.extend((1..=10).map(|position| event(0, position)).collect());
        tail.report((Projection::TreatmentPlans, 0), at(10));
        // The slower reader still needs everything after 0.
        let (events, _) = positions(&tail.slice(at(0), 0, 1, 100));
        assert_eq!(events.len(), 10);
        tail.report((Projection::OutcomeStatistics, 0), at(6));
        let (events, _) = positions(&tail.slice(at(6), 0, 1, 100));
        assert_eq!(events, vec![7, 8, 9, 10]);
        assert!(matches!(tail.slice(at(5), 0, 1, 100), Slice::Behind { .. }));
        // A reader gone (its lease lost) holds nothing back.
        tail.forget((Projection::OutcomeStatistics, 0));
        assert!(matches!(tail.slice(at(6), 0, 1, 100), Slice::Behind { .. }));
        let (events, end) = positions(&tail.slice(at(10), 0, 1, 100));
        assert_eq!((events, end), (vec![], at(10)));
    }

    #[test]
    fn a_closed_window_sends_every_task_to_the_log_until_it_opens_again_at_the_head() {
        let tail = Tail::default();
        tail.start_at(at(0));
        tail.report((Projection::TreatmentPlans, 0), at(0));
        tail.extend((1..=3).map(|position| event(0, position)).collect());
        tail.close();
        assert!(matches!(
            tail.slice(at(0), 0, 1, 10),
            Slice::Behind { from: None }
        ));
        assert!(matches!(
            tail.slice(at(3), 0, 1, 10),
            Slice::Behind { from: None }
        ));
        tail.start_at(at(7));
        assert!(
            matches!(tail.slice(at(3), 0, 1, 10), Slice::Behind { from: Some(from) } if from == at(7))
        );
        let (events, end) = positions(&tail.slice(at(7), 0, 1, 10));
        assert_eq!((events, end), (vec![], at(7)));
    }

    #[test]
    fn past_its_cap_the_window_drops_its_oldest_events_even_if_a_reader_lags() {
        let tail = Tail::default();
        tail.start_at(at(0));
        tail.report((Projection::TreatmentPlans, 0), at(0));
        let over = i64::try_from(WINDOW_CAP).expect("small") + 5;
        tail.extend((1..=over).map(|position| event(0, position)).collect());
        assert!(
            matches!(tail.slice(at(0), 0, 1, 10), Slice::Behind { from: Some(from) } if from == at(5))
        );
        let (events, _) = positions(&tail.slice(at(5), 0, 1, 1));
        assert_eq!(events, vec![6]);
    }
}
