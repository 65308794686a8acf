//! The hash chain of a stream: every event stores the hash of the event before it in its
//! stream and its own, so an edit, a deletion, an insertion or a reordering anywhere in a
//! stream breaks every hash after it.
//!
//! # The encoding, version 1
//!
//! An event's hash is SHA-256 over these bytes, in this order (integers big-endian,
//! `text` = a u32 byte length followed by the UTF-8 bytes):
//!
//! 1. the tag `spineledger/event-hash/v1` followed by one zero byte;
//! 2. the clinic id, 16 bytes;
//! 3. the stream id, `text`;
//! 4. the version in the stream, u64;
//! 5. the event id, 16 bytes;
//! 6. the event type, `text`;
//! 7. the schema version, i32;
//! 8. the payload as canonical JSON, `text`;
//! 9. the metadata as canonical JSON, `text`;
//! 10. the occurred-at time: one byte 0 when there is none, else 1 and the microseconds
//!     since the Unix epoch, i64;
//! 11. the recorded-at time, microseconds since the Unix epoch, i64;
//! 12. the previous event's hash, 32 bytes (32 zero bytes before a stream's first event).
//!
//! Canonical JSON: no whitespace; object members sorted by the UTF-8 bytes of their keys;
//! strings escaped as `serde_json` escapes them (`"`, `\`, and control characters; the
//! rest as UTF-8). Numbers by value, not by spelling, because PostgreSQL's `jsonb` keeps
//! numbers as `numeric` and gives them back spelled its own way (`300.0` may come back as
//! `300.0`, `1e16` as `10000000000000000`, `-0.0` as `0.0`): a number with no fractional
//! part whose magnitude is below 2^63 is written as a plain decimal integer (`300`, `0`,
//! `-7`, `10000000000000000`); any other number as the shortest decimal that reads back
//! to the same IEEE-754 double, in the form the `ryu` algorithm gives (`0.1`,
//! `0.30000000000000004`, `1e-7`), which is what `serde_json` prints. So the stored row
//! reads back into the same encoding, and anyone holding the rows can recompute every
//! hash.
//!
//! A change of anything above is a new version with a new tag; a test pins known hashes
//! so that the encoding can never drift silently.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The tag that starts encoding version 1.
pub const ENCODING_V1: &[u8] = b"spineledger/event-hash/v1\0";

/// A SHA-256 event hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// What a stream's first event names as its predecessor.
    pub const GENESIS: Self = Self([0; 32]);

    /// The hash in lowercase hex, as receipts show it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A nullable hash column read back from storage.
    ///
    /// # Errors
    /// The bytes are not 32 long.
    pub fn from_optional(bytes: Option<&[u8]>) -> Result<Option<Self>, crate::VerifyError> {
        bytes.map(Self::from_slice).transpose()
    }

    /// A hash read back from storage.
    ///
    /// # Errors
    /// The bytes are not 32 long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, crate::VerifyError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| crate::VerifyError::HashLength(bytes.len()))
    }
}

/// Hashes travel as lowercase hex (in bundles and reports).
impl serde::Serialize for EventHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for EventHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = hex::decode(text.as_ref()).map_err(serde::de::Error::custom)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Debug for EventHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventHash({})", self.to_hex())
    }
}

/// Everything an event's hash covers.
#[derive(Debug, Clone, Copy)]
pub struct Hashed<'a> {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream.
    pub stream_id: &'a str,
    /// The version in the stream.
    pub version: u64,
    /// The event id.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: &'a str,
    /// The payload's schema version.
    pub schema_version: i32,
    /// The payload as stored.
    pub payload: &'a Value,
    /// The metadata as stored.
    pub metadata: &'a Value,
    /// When it happened, if known.
    pub occurred_at: Option<DateTime<Utc>>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The hash of the stream's previous event ([`EventHash::GENESIS`] for the first).
    pub previous: EventHash,
}

impl Hashed<'_> {
    /// The bytes the hash is taken over (encoding version 1).
    pub fn encoding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(ENCODING_V1);
        out.extend_from_slice(self.clinic_id.as_bytes());
        text(&mut out, self.stream_id.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(self.event_id.as_bytes());
        text(&mut out, self.event_type.as_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        let mut json = Vec::new();
        canonical_json(self.payload, &mut json);
        text(&mut out, &json);
        json.clear();
        canonical_json(self.metadata, &mut json);
        text(&mut out, &json);
        match self.occurred_at {
            None => out.push(0),
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&at.timestamp_micros().to_be_bytes());
            }
        }
        out.extend_from_slice(&self.recorded_at.timestamp_micros().to_be_bytes());
        out.extend_from_slice(&self.previous.0);
        out
    }

    /// The event's hash.
    pub fn hash(&self) -> EventHash {
        EventHash(Sha256::digest(self.encoding()).into())
    }
}

pub(crate) fn text(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths beyond u32 cannot occur (a request is at most a few MiB); saturate rather
    // than wrap so that such a value could never collide with a shorter one silently.
    let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// `value` as canonical JSON (see the module documentation), appended to `out`.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => canonical_number(number, out),
        Value::String(string) => string_literal(string, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            // Sorted here, whatever order the map keeps (serde_json's `preserve_order`
            // feature, if any crate turns it on, keeps insertion order).
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (index, (key, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                string_literal(key, out);
                out.push(b':');
                canonical_json(member, out);
            }
            out.push(b'}');
        }
    }
}

/// A number by its value (see the module documentation).
fn canonical_number(number: &serde_json::Number, out: &mut Vec<u8>) {
    /// 2^63: integral doubles below it in magnitude are written as integers.
    const INTEGRAL_LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if number.is_i64() || number.is_u64() {
        out.extend_from_slice(number.to_string().as_bytes());
        return;
    }
    match number.as_f64() {
        Some(value) if value.fract() == 0.0 && value.abs() < INTEGRAL_LIMIT => {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "integral and below 2^63 in magnitude: exact"
            )]
            let integer = value as i64;
            out.extend_from_slice(integer.to_string().as_bytes());
        }
        _ => out.extend_from_slice(number.to_string().as_bytes()),
    }
}

fn string_literal(string: &str, out: &mut Vec<u8>) {
    // serde_json's own escaping; writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, string);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example(previous: EventHash) -> (Value, Value, DateTime<Utc>, DateTime<Utc>, EventHash) {
        let payload = json!({
            "patient_id": "3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41",
            "peak_force": {"value": 300.0, "unit": "newton"},
            "pain": [6, 4],
            "notes": "caf\u{e9} \"quoted\"\n",
            "ratio": 0.30000000000000004,
        });
        let metadata =
            json!({"actor": "provider-7", "command_id": "0b6f1c9e-2d4a-4f8b-9c3e-5a7d1e2f3b4c"});
        let occurred = DateTime::from_timestamp_micros(1_793_000_000_123_456).expect("time");
        let recorded = DateTime::from_timestamp_micros(1_793_000_100_654_321).expect("time");
        (payload, metadata, occurred, recorded, previous)
    }

    fn hashed<'a>(
        payload: &'a Value,
        metadata: &'a Value,
        occurred: DateTime<Utc>,
        recorded: DateTime<Utc>,
        previous: EventHash,
    ) -> Hashed<'a> {
        Hashed {
            clinic_id: Uuid::from_u128(0x7d8e_4a52_3b1f_4c7a_9a43_1f2d_5c6b_7e80),
            stream_id: "episode-5f0c8a8e-1b2d-4c3e-9f4a-6b7c8d9e0f1a",
            version: 3,
            event_id: Uuid::from_u128(0x0b6f_1c9e_2d4a_4f8b_9c3e_5a7d_1e2f_3b4c),
            event_type: "SessionRecorded",
            schema_version: 1,
            payload,
            metadata,
            occurred_at: Some(occurred),
            recorded_at: recorded,
            previous,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let (payload, ..) = example(EventHash::GENESIS);
        let mut out = Vec::new();
        canonical_json(&payload, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"notes":"café \"quoted\"\n","pain":[6,4],"patient_id":"3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41","peak_force":{"unit":"newton","value":300},"ratio":0.30000000000000004}"#
        );
        // The stored jsonb reads back as text PostgreSQL formats its own way; parsed, it
        // encodes the same.
        let from_jsonb: Value = serde_json::from_str(
            r#"{"pain": [6, 4], "ratio": 0.30000000000000004, "notes": "café \"quoted\"\n", "peak_force": {"unit": "newton", "value": 300.0}, "patient_id": "3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41"}"#,
        )
        .expect("json");
        let mut again = Vec::new();
        canonical_json(&from_jsonb, &mut again);
        let mut first = Vec::new();
        canonical_json(&payload, &mut first);
        assert_eq!(again, first);
    }

    #[test]
    fn numbers_encode_by_value_as_jsonb_gives_them_back() {
        let encoded = |text: &str| {
            let value: Value = serde_json::from_str(text).expect("json");
            let mut out = Vec::new();
            canonical_json(&value, &mut out);
            String::from_utf8(out).expect("utf-8")
        };
        // What is written, and what PostgreSQL's jsonb gives back for it.
        for (written, stored) in [
            ("-0.0", "0.0"),
            ("300.0", "300.0"),
            ("300", "300"),
            ("1e16", "10000000000000000"),
            ("1e-7", "0.0000001"),
            ("0.1", "0.1"),
            ("12345678.125", "12345678.125"),
            ("-2.5", "-2.5"),
        ] {
            assert_eq!(encoded(written), encoded(stored), "{written} / {stored}");
        }
        assert_eq!(
            encoded("[-0.0,300.0,1e16,0.5]"),
            "[0,300,10000000000000000,0.5]"
        );
    }

    /// The pinned hashes: if this fails, the encoding changed. Never update the constants;
    /// add a new encoding version instead.
    #[test]
    fn known_events_hash_to_pinned_values() {
        let (payload, metadata, occurred, recorded, _) = example(EventHash::GENESIS);
        let first = hashed(&payload, &metadata, occurred, recorded, EventHash::GENESIS);
        assert_eq!(first.hash().to_hex(), PINNED_FIRST);
        let second = hashed(&payload, &metadata, occurred, recorded, first.hash());
        assert_eq!(second.hash().to_hex(), PINNED_SECOND);
        let without_occurred = Hashed {
            occurred_at: None,
            ..first
        };
        assert_eq!(without_occurred.hash().to_hex(), PINNED_WITHOUT_OCCURRED);
    }

    /// The documented layout, assembled by hand: the code and the documentation agree.
    #[test]
    fn the_encoding_is_the_documented_layout() {
        let (payload, metadata, occurred, recorded, _) = example(EventHash::GENESIS);
        let event = hashed(&payload, &metadata, occurred, recorded, EventHash([7; 32]));
        let mut expected = b"spineledger/event-hash/v1\0".to_vec();
        expected.extend_from_slice(&event.clinic_id.into_bytes());
        expected.extend_from_slice(&(event.stream_id.len() as u32).to_be_bytes());
        expected.extend_from_slice(event.stream_id.as_bytes());
        expected.extend_from_slice(&3_u64.to_be_bytes());
        expected.extend_from_slice(&event.event_id.into_bytes());
        expected.extend_from_slice(&15_u32.to_be_bytes());
        expected.extend_from_slice(b"SessionRecorded");
        expected.extend_from_slice(&1_i32.to_be_bytes());
        for json in [&payload, &metadata] {
            let mut canonical = Vec::new();
            canonical_json(json, &mut canonical);
            expected.extend_from_slice(&(canonical.len() as u32).to_be_bytes());
            expected.extend_from_slice(&canonical);
        }
        expected.push(1);
        expected.extend_from_slice(&1_793_000_000_123_456_i64.to_be_bytes());
        expected.extend_from_slice(&1_793_000_100_654_321_i64.to_be_bytes());
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(event.encoding(), expected);
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let (payload, metadata, occurred, recorded, _) = example(EventHash::GENESIS);
        let base = hashed(&payload, &metadata, occurred, recorded, EventHash::GENESIS);
        let other_payload = json!({"pain": [6, 5]});
        let other_metadata = json!({"actor": "provider-8"});
        let variants = [
            Hashed {
                clinic_id: Uuid::nil(),
                ..base
            },
            Hashed {
                stream_id: "episode-x",
                ..base
            },
            Hashed { version: 4, ..base },
            Hashed {
                event_id: Uuid::nil(),
                ..base
            },
            Hashed {
                event_type: "SessionMissed",
                ..base
            },
            Hashed {
                schema_version: 2,
                ..base
            },
            Hashed {
                payload: &other_payload,
                ..base
            },
            Hashed {
                metadata: &other_metadata,
                ..base
            },
            Hashed {
                occurred_at: None,
                ..base
            },
            Hashed {
                recorded_at: occurred,
                ..base
            },
            Hashed {
                previous: EventHash([1; 32]),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.hash(), base.hash(), "{variant:?}");
        }
    }

    // Computed from the documented layout by a separate implementation (Python's hashlib
    // and json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False), integral
    // floats written as integers), not by this code: the pins hold the documentation and
    // the code to each other. (They changed once, before any release, when numbers
    // became encoded by value so that jsonb's spelling cannot break a hash.)
    const PINNED_FIRST: &str = "ad61144e137ed66d9c7e034116b694d24bcfe22792618feb16d10c6046f0aa02";
    const PINNED_SECOND: &str = "aa8a8e475c934ca29cc049cf201fb857fd5fb9e4d6b8e0c6b9330b098133dd05";
    const PINNED_WITHOUT_OCCURRED: &str =
        "42858a893b812b488fd1e55a1e1bafcfc777fa0a5e9ae1a8caf6d7b4dd3877c6";
}
