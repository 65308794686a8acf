//! Checking one stream's chain: versions contiguous from 1, each event's stored hash equal
//! to the one recomputed from its fields, each naming its predecessor's hash, and the
//! stream's head (version and hash) equal to its last event's.
//!
//! What a chain alone cannot show: a stream rewritten whole with recomputed hashes and
//! head, or its last events removed with the head moved back. Those need the clinic's
//! signed log (its Merkle tree and checkpoints), which is checked separately.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::chain::{EventHash, Hashed};

/// One stored event, as the check needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub version: u64,
    /// Its place in the global log.
    pub position: i64,
    /// The event id.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: i32,
    /// The payload as stored.
    pub payload: Value,
    /// The metadata as stored.
    pub metadata: Value,
    /// When it happened, if known.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The predecessor's hash it names (`None` before the chain existed).
    pub previous_hash: Option<EventHash>,
    /// Its stored hash (`None` before the chain existed).
    pub hash: Option<EventHash>,
}

impl StoredEvent {
    /// The hash recomputed from the fields, onto `previous`.
    pub fn recomputed(&self, previous: EventHash) -> EventHash {
        Hashed {
            clinic_id: self.clinic_id,
            stream_id: &self.stream_id,
            version: self.version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: &self.payload,
            metadata: &self.metadata,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            previous,
        }
        .hash()
    }
}

/// A stream's head as its row records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The stream's version (its last event's).
    pub version: u64,
    /// Its last event's hash (`None` while the stream has no hashed event).
    pub hash: Option<EventHash>,
}

/// What is wrong at the first broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A version is missing (an event deleted, or moved elsewhere).
    MissingVersion,
    /// An event's stored hash is not the hash of its fields (it was edited, moved from
    /// another stream or clinic, or forged).
    HashMismatch,
    /// An event does not name its predecessor's hash (an event before it was replaced,
    /// removed or reordered).
    PreviousMismatch,
    /// An event without a hash after hashed ones (inserted by hand).
    Unhashed,
    /// The stream's recorded version is not its last event's.
    HeadVersion,
    /// The stream's recorded head hash is not its last event's.
    HeadHash,
    /// Events without a stream row (the row was deleted).
    MissingHead,
}

impl Fault {
    /// A name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::MissingVersion => "missing version",
            Self::HashMismatch => "hash mismatch",
            Self::PreviousMismatch => "previous-hash mismatch",
            Self::Unhashed => "unhashed event in a chain",
            Self::HeadVersion => "head version mismatch",
            Self::HeadHash => "head hash mismatch",
            Self::MissingHead => "stream row missing",
        }
    }
}

/// The first broken link of a damaged stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream.
    pub stream_id: String,
    /// The version where the chain breaks.
    pub version: u64,
    /// The global position of the event found there, if any.
    pub position: Option<i64>,
    /// What is wrong.
    pub fault: Fault,
    /// What the chain says should be there.
    pub expected: String,
    /// What is there.
    pub found: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: clinic {} stream {} version {} position {}: expected {}, found {}",
            self.fault.name(),
            self.clinic_id,
            self.stream_id,
            self.version,
            self.position
                .map_or_else(|| "none".to_owned(), |position| position.to_string()),
            self.expected,
            self.found
        )
    }
}

/// A hash for a report, or "none".
fn show(hash: Option<EventHash>) -> String {
    hash.map_or_else(|| "none".to_owned(), |hash| hash.to_hex())
}

/// What a sound stream holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sound {
    /// Its events.
    pub events: u64,
    /// Of which recorded before the chain existed (a prefix without hashes).
    pub unhashed: u64,
}

/// Checks one stream: `events` are all of its stored events in version order, `head` its
/// row (`None`: there is none), `unhashed_until` the last global position recorded
/// before the chain existed (an event without hashes after it is a fault). The first
/// broken link, if any.
///
/// # Errors
/// The [`Break`] at the first link that does not hold.
pub fn check(
    clinic_id: Uuid,
    stream_id: &str,
    head: Option<Head>,
    unhashed_until: i64,
    events: &[StoredEvent],
) -> Result<Sound, Break> {
    let broken =
        |version: u64, position: Option<i64>, fault, expected: String, found: String| Break {
            clinic_id,
            stream_id: stream_id.to_owned(),
            version,
            position,
            fault,
            expected,
            found,
        };
    let mut previous = EventHash::GENESIS;
    let mut chained = false;
    let mut sound = Sound::default();
    for (expected_version, event) in (1_u64..).zip(events) {
        let position = Some(event.position);
        if event.version != expected_version {
            return Err(broken(
                expected_version,
                position,
                Fault::MissingVersion,
                format!("version {expected_version}"),
                format!("version {}", event.version),
            ));
        }
        match (event.previous_hash, event.hash) {
            (None, None) if !chained && event.position <= unhashed_until => sound.unhashed += 1,
            (Some(named), Some(stored)) => {
                if named != previous {
                    return Err(broken(
                        event.version,
                        position,
                        Fault::PreviousMismatch,
                        previous.to_hex(),
                        named.to_hex(),
                    ));
                }
                let recomputed = event.recomputed(previous);
                if recomputed != stored {
                    return Err(broken(
                        event.version,
                        position,
                        Fault::HashMismatch,
                        recomputed.to_hex(),
                        stored.to_hex(),
                    ));
                }
                chained = true;
                previous = stored;
            }
            (named, stored) => {
                return Err(broken(
                    event.version,
                    position,
                    Fault::Unhashed,
                    format!("previous {} and a hash", previous.to_hex()),
                    format!("previous {} and hash {}", show(named), show(stored)),
                ));
            }
        }
        sound.events += 1;
    }
    let last = events.last();
    let last_version = last.map_or(0, |event| event.version);
    let Some(head) = head else {
        return Err(broken(
            last_version,
            last.map(|event| event.position),
            Fault::MissingHead,
            format!("a stream row at version {last_version}"),
            "none".to_owned(),
        ));
    };
    if head.version != last_version {
        return Err(broken(
            head.version.max(last_version),
            last.map(|event| event.position),
            Fault::HeadVersion,
            format!("head at version {last_version}"),
            format!("head at version {}", head.version),
        ));
    }
    let expected_head = chained.then_some(previous);
    if head.hash != expected_head {
        return Err(broken(
            last_version,
            last.map(|event| event.position),
            Fault::HeadHash,
            show(expected_head),
            show(head.hash),
        ));
    }
    Ok(sound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CLINIC: Uuid = Uuid::from_u128(0x7d8e_4a52_3b1f_4c7a_9a43_1f2d_5c6b_7e80);

    /// A sound stream of `n` events, and its head.
    fn stream(n: u64) -> (Vec<StoredEvent>, Head) {
        let mut previous = EventHash::GENESIS;
        let mut events = Vec::new();
        for version in 1..=n {
            let mut event = StoredEvent {
                clinic_id: CLINIC,
                stream_id: "episode-1".into(),
                version,
                position: i64::try_from(version * 10).expect("small"),
                event_id: Uuid::from_u128(u128::from(version)),
                event_type: "SessionRecorded".into(),
                schema_version: 1,
                payload: json!({"n": version}),
                metadata: json!({"actor": "provider-7"}),
                occurred_at: None,
                recorded_at: DateTime::from_timestamp(1_793_000_000, 0).expect("time"),
                previous_hash: Some(previous),
                hash: None,
            };
            let hash = event.recomputed(previous);
            event.hash = Some(hash);
            previous = hash;
            events.push(event);
        }
        (
            events,
            Head {
                version: n,
                hash: (n > 0).then_some(previous),
            },
        )
    }

    fn fault(events: &[StoredEvent], head: Head) -> Option<(Fault, u64)> {
        check(CLINIC, "episode-1", Some(head), 0, events)
            .err()
            .map(|broken| (broken.fault, broken.version))
    }

    #[test]
    fn a_sound_stream_passes() {
        let (events, head) = stream(5);
        assert_eq!(
            check(CLINIC, "episode-1", Some(head), 0, &events),
            Ok(Sound {
                events: 5,
                unhashed: 0
            })
        );
        let (none, head) = stream(0);
        assert!(check(CLINIC, "episode-1", Some(head), 0, &none).is_ok());
        assert_eq!(
            check(CLINIC, "episode-1", None, 0, &events).map_err(|broken| broken.fault),
            Err(Fault::MissingHead)
        );
    }

    #[test]
    fn every_kind_of_damage_is_found_at_its_version() {
        let (events, head) = stream(5);

        let mut edited = events.clone();
        edited[2].payload = json!({"n": 99});
        assert_eq!(fault(&edited, head), Some((Fault::HashMismatch, 3)));

        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(fault(&deleted, head), Some((Fault::MissingVersion, 2)));

        let mut truncated = events.clone();
        truncated.pop();
        assert_eq!(fault(&truncated, head), Some((Fault::HeadVersion, 5)));
        // The tail removed and the head moved back: invisible to the chain alone.
        let (_, shorter_head) = stream(4);
        assert_eq!(fault(&truncated, shorter_head), None);

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        (swapped[1].version, swapped[2].version) = (2, 3);
        assert_eq!(fault(&swapped, head), Some((Fault::PreviousMismatch, 2)));

        let mut forged = events.clone();
        forged[3].event_type = "DischargeRecorded".into();
        assert_eq!(fault(&forged, head), Some((Fault::HashMismatch, 4)));

        let mut moved = events.clone();
        moved[4].stream_id = "episode-2".into();
        assert_eq!(fault(&moved, head), Some((Fault::HashMismatch, 5)));

        let mut unhashed = events.clone();
        unhashed[3].hash = None;
        unhashed[3].previous_hash = None;
        assert_eq!(fault(&unhashed, head), Some((Fault::Unhashed, 4)));

        let wrong_head = Head {
            hash: Some(EventHash([9; 32])),
            ..head
        };
        assert_eq!(fault(&events, wrong_head), Some((Fault::HeadHash, 5)));
    }

    #[test]
    fn a_prefix_recorded_before_the_chain_is_counted_not_failed() {
        let (mut events, _) = stream(2);
        for event in &mut events {
            event.previous_hash = None;
            event.hash = None;
        }
        // A hashed event after the prefix chains from zeros.
        let mut next = events[1].clone();
        next.version = 3;
        next.previous_hash = Some(EventHash::GENESIS);
        next.hash = Some(next.recomputed(EventHash::GENESIS));
        let head = Head {
            version: 3,
            hash: next.hash,
        };
        events.push(next);
        // Recorded before the chain (positions 10 and 20): counted, not failed.
        assert_eq!(
            check(CLINIC, "episode-1", Some(head), 20, &events),
            Ok(Sound {
                events: 3,
                unhashed: 2
            })
        );
        // Recorded after it: the hashes were stripped.
        assert_eq!(
            check(CLINIC, "episode-1", Some(head), 10, &events).map_err(|broken| broken.fault),
            Err(Fault::Unhashed)
        );
    }
}
