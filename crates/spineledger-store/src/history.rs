//! The group commit's cache of stream histories.
//!
//! Deciding a command needs its stream's whole history. Events never change once
//! committed, so a history read once stays a true prefix of the stream forever: the
//! cache keeps, per stream, its events from version 1 up to the last one this process
//! saw committed. A batch then reads only the events after the cached ones (usually
//! none), under the stream's lock, and checks that cached and read events together run
//! from version 1 to the locked version without a gap. When they do not (an entry evicted
//! midway, a database restored from a backup), the stream is read whole again: a stale
//! entry costs a read, never a wrong decision. Entries are replaced only after COMMIT.
//!
//! Bounded by the number of events held; the streams first cached are evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::{RecordedEvent, StreamKey};

/// How many events the cache holds at most (about 1-2 kB each as decoded JSON).
pub(crate) const CAPACITY: usize = 20_000;

/// A stream's events from version 1, in version order.
pub(crate) type History = Arc<Vec<RecordedEvent>>;

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<StreamKey, History>,
    /// Streams in the order they were first cached (the eviction order).
    order: VecDeque<StreamKey>,
    events: usize,
}

/// Histories shared by the writers of one store.
#[derive(Debug)]
pub(crate) struct HistoryCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl HistoryCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached history of `stream`, if any.
    pub(crate) fn get(&self, stream: &StreamKey) -> Option<History> {
        self.inner().streams.get(stream).cloned()
    }

    /// Caches `history` (events from version 1, contiguous) as `stream`'s, evicting the
    /// streams cached first while the cache holds too many events.
    pub(crate) fn put(&self, stream: &StreamKey, history: History) {
        let mut inner = self.inner();
        let added = history.len();
        match inner.streams.insert(stream.clone(), history) {
            Some(previous) => inner.events = inner.events - previous.len() + added,
            None => {
                inner.order.push_back(stream.clone());
                inner.events += added;
            }
        }
        while inner.events > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.streams.remove(&oldest) {
                inner.events -= evicted.len();
            }
        }
    }

    /// Drops `stream`'s entry.
    pub(crate) fn forget(&self, stream: &StreamKey) {
        let mut inner = self.inner();
        if let Some(evicted) = inner.streams.remove(stream) {
            inner.events -= evicted.len();
            inner.order.retain(|cached| cached != stream);
        }
    }
}

/// True when `events` are versions 1..=`version` in order.
pub(crate) fn is_whole(events: &[RecordedEvent], version: u64) -> bool {
    events.len() as u64 == version
        && events
            .iter()
            .zip(1_u64..)
            .all(|(event, expected)| event.version == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventMetadata, Fingerprint, GlobalCursor};

    fn event(version: u64) -> RecordedEvent {
        RecordedEvent {
            clinic_id: uuid::Uuid::nil(),
            stream_id: "s".into(),
            version,
            event_id: uuid::Uuid::from_u128(u128::from(version)),
            event_type: "X".into(),
            schema_version: 1,
            payload: serde_json::Value::Null,
            metadata: EventMetadata {
                actor: "a".into(),
                principal: None,
                command_id: uuid::Uuid::nil(),
                correlation_id: None,
                causation_id: None,
                client_name: None,
                client_version: None,
                trace_id: None,
            },
            stored_metadata: serde_json::Value::Null,
            occurred_at: None,
            recorded_at: chrono::DateTime::UNIX_EPOCH,
            cursor: GlobalCursor::default(),
            fingerprint: Fingerprint::of(&version).expect("fingerprint"),
            previous_hash: None,
            hash: None,
        }
    }

    fn history(versions: std::ops::RangeInclusive<u64>) -> History {
        Arc::new(versions.map(event).collect())
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_evicts_the_oldest_first() {
        let cache = HistoryCache::new(5);
        let stream = |n: u8| StreamKey::new(uuid::Uuid::nil(), format!("s{n}"));
        cache.put(&stream(1), history(1..=2));
        cache.put(&stream(2), history(1..=2));
        // Replacing an entry counts only its new length.
        cache.put(&stream(1), history(1..=3));
        assert_eq!(cache.inner().events, 5);
        assert!(cache.get(&stream(1)).is_some() && cache.get(&stream(2)).is_some());
        // One more event: the stream cached first goes.
        cache.put(&stream(3), history(1..=1));
        assert!(cache.get(&stream(1)).is_none());
        assert_eq!(cache.get(&stream(2)).map(|h| h.len()), Some(2));
        assert_eq!(cache.inner().events, 3);
        cache.forget(&stream(2));
        assert!(cache.get(&stream(2)).is_none());
        assert_eq!(cache.inner().events, 1);
        assert_eq!(cache.inner().order.len(), 1);
    }

    #[test]
    fn a_history_is_whole_only_from_version_one_to_the_locked_version() {
        assert!(is_whole(&history(1..=3), 3));
        assert!(is_whole(&[], 0));
        assert!(!is_whole(&history(1..=3), 4), "the stream moved on");
        assert!(
            !is_whole(&history(1..=3), 2),
            "the stream is shorter than the cache"
        );
        assert!(!is_whole(&history(2..=4), 3), "a gap at the start");
    }
}
