//! Stream histories the group commit has seen, so that a command on a stream this process
//! wrote or read recently is decided without reading the stream again.
//!
//! An entry is a stream's events exactly as stored: read back from PostgreSQL, or
//! returned by the insert that stored them (jsonb's form of the payload, never the
//! request's). A batch takes its streams' entries out of the cache; they come back after
//! its commit with what it appended, or are dropped when its transaction fails. The batch
//! still locks every stream, and uses an entry only when the locked version and head hash
//! are those of the entry's last event: a stream that anyone else wrote to (another
//! process, another writer of this one) costs a read, never a decision on a stale
//! history. Versions only grow and the head hash chains every event, so an equal head
//! means an equal history.

use std::sync::{Mutex, PoisonError};

use lru::LruCache;

use crate::chain::EventHash;
use crate::{RecordedEvent, StreamKey};

/// The most events the cache holds, over all its streams (histories taken out by batches
/// in flight are not counted: at most a few writers' batches). An event measured about
/// 5 KB in memory (payload, metadata and the metadata's stored JSON; the bench's resident
/// memory rose by 105 MB with 20,000 held), so this is some 50 MB, inside the service's
/// memory target of 200 MB: some 500 episodes of 20 events, the ones being worked on.
pub(crate) const MAX_EVENTS: usize = 10_000;

/// The cache: least recently used streams leave first once [`MAX_EVENTS`] is passed.
/// No `Debug`: it holds clinical payloads, which must not reach a log by accident.
pub(crate) struct Histories {
    inner: Mutex<Inner>,
    max_events: usize,
}

struct Inner {
    streams: LruCache<StreamKey, Vec<RecordedEvent>>,
    events: usize,
}

impl Default for Histories {
    fn default() -> Self {
        Self::with_capacity(MAX_EVENTS)
    }
}

impl Histories {
    /// A cache of at most `max_events` events.
    pub(crate) fn with_capacity(max_events: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                streams: LruCache::unbounded(),
                events: 0,
            }),
            max_events,
        }
    }

    /// Takes `stream`'s history out of the cache, if it is there.
    pub(crate) fn take(&self, stream: &StreamKey) -> Option<Vec<RecordedEvent>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let history = inner.streams.pop(stream)?;
        inner.events -= history.len();
        Some(history)
    }

    /// Keeps `history` as `stream`'s, unless the cache already holds a longer one (a
    /// later writer's, put back first).
    pub(crate) fn put(&self, stream: StreamKey, history: Vec<RecordedEvent>) {
        if history.is_empty() || history.len() > self.max_events {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = inner.streams.peek(&stream)
            && held.len() >= history.len()
        {
            return;
        }
        let added = history.len();
        if let Some(replaced) = inner.streams.put(stream, history) {
            inner.events -= replaced.len();
        }
        inner.events += added;
        while inner.events > self.max_events {
            match inner.streams.pop_lru() {
                Some((_, evicted)) => inner.events -= evicted.len(),
                None => break,
            }
        }
    }

    /// How many events the cache holds (tests).
    #[cfg(test)]
    pub(crate) fn events(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .events
    }
}

/// Whether `history` ends at the locked head (`version`, `hash`): then it is the stream's
/// whole history as committed.
pub(crate) fn ends_at(history: &[RecordedEvent], version: u64, hash: EventHash) -> bool {
    history.last().is_some_and(|last| {
        last.version == version
            && usize::try_from(version).is_ok_and(|count| count == history.len())
            && last.hash.unwrap_or(EventHash::GENESIS) == hash
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventMetadata, Fingerprint, GlobalCursor};
    use uuid::Uuid;

    fn history(stream: &StreamKey, events: u64) -> Vec<RecordedEvent> {
        (1..=events)
            .map(|version| {
                let payload = serde_json::json!({ "v": version });
                RecordedEvent {
                    clinic_id: stream.clinic_id,
                    stream_id: stream.stream_id.clone(),
                    version,
                    event_id: Uuid::new_v4(),
                    event_type: "Test".into(),
                    schema_version: 1,
                    fingerprint: Fingerprint::of(&payload).expect("fingerprint"),
                    payload,
                    metadata: EventMetadata::default(),
                    stored_metadata: serde_json::Value::Null,
                    occurred_at: None,
                    recorded_at: chrono::Utc::now(),
                    cursor: GlobalCursor::START,
                    previous_hash: None,
                    hash: Some(EventHash([u8::try_from(version).unwrap_or(0); 32])),
                }
            })
            .collect()
    }

    fn stream(n: u128) -> StreamKey {
        StreamKey::new(Uuid::from_u128(1), format!("episode-{n}"))
    }

    #[test]
    fn a_taken_history_is_gone_until_put_back_and_a_shorter_one_never_replaces_a_longer() {
        let cache = Histories::with_capacity(100);
        let a = stream(1);
        cache.put(a.clone(), history(&a, 3));
        assert_eq!(cache.take(&a).map(|h| h.len()), Some(3));
        assert!(
            cache.take(&a).is_none(),
            "one batch at a time holds a stream's history"
        );
        cache.put(a.clone(), history(&a, 5));
        cache.put(a.clone(), history(&a, 4));
        assert_eq!(cache.take(&a).map(|h| h.len()), Some(5));
        assert_eq!(cache.events(), 0);
    }

    #[test]
    fn past_its_capacity_the_least_recently_used_streams_leave() {
        let cache = Histories::with_capacity(10);
        for n in 0..4 {
            cache.put(stream(n), history(&stream(n), 3));
        }
        assert!(cache.events() <= 10);
        assert!(cache.take(&stream(0)).is_none(), "the oldest left");
        assert!(cache.take(&stream(3)).is_some());
        cache.put(stream(9), history(&stream(9), 11));
        assert!(
            cache.take(&stream(9)).is_none(),
            "longer than the whole cache: not kept"
        );
    }

    #[test]
    fn a_history_is_current_only_when_it_ends_at_the_locked_head() {
        let a = stream(1);
        let events = history(&a, 3);
        let head = events[2].hash.expect("hash");
        assert!(ends_at(&events, 3, head));
        assert!(!ends_at(&events, 4, head), "someone appended");
        assert!(!ends_at(&events, 3, EventHash([9; 32])), "another chain");
        assert!(!ends_at(&events[..2], 3, head));
        assert!(!ends_at(&[], 0, EventHash::GENESIS));
    }
}
