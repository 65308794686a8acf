//! An access-log entry's hash: what puts a read of a patient's records into the clinic's
//! signed log beside the events, so that an entry removed or edited after it was logged
//! shows like an altered event does.
//!
//! # The encoding, version 1
//!
//! SHA-256 over, in this order (integers big-endian; `text` = a u32 byte length and the
//! UTF-8 bytes; an optional value = one byte 0 when absent, else 1 and the value):
//!
//! 1. the tag `spineledger/access-hash/v1` and one zero byte;
//! 2. the clinic id, 16 bytes; the entry's position, i64; the time of access in
//!    microseconds since the Unix epoch, i64;
//! 3. the principal's subject, issuer and role, `text` each; the asserted actor,
//!    optional `text`;
//! 4. the RPC, `text`; the patient id and the episode id, optional 16 bytes each; the
//!    log position shown, optional i64;
//! 5. the purpose of use, optional `text`; break-glass, one byte 0 or 1; the outcome,
//!    `text`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::chain::{EventHash, text};

/// The tag that starts encoding version 1.
pub const ACCESS_ENCODING_V1: &[u8] = b"spineledger/access-hash/v1\0";

/// One access-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// The clinic whose records were read.
    pub clinic_id: Uuid,
    /// Its place in the access log.
    pub position: i64,
    /// When.
    pub accessed_at: DateTime<Utc>,
    /// The authenticated principal.
    pub principal_subject: String,
    /// Its token's issuer.
    pub principal_issuer: String,
    /// Its role.
    pub principal_role: String,
    /// The user an integration said it acted for.
    pub actor: Option<String>,
    /// The RPC.
    pub rpc: String,
    /// The patient shown.
    pub patient_id: Option<Uuid>,
    /// The episode shown.
    pub episode_id: Option<Uuid>,
    /// The log position the answer reflected.
    pub shown_position: Option<i64>,
    /// The declared purpose of use.
    pub purpose: Option<String>,
    /// Emergency access.
    pub break_glass: bool,
    /// OK, or the status of a read that showed nothing.
    pub outcome: String,
}

impl AccessEntry {
    /// The bytes the hash is taken over (encoding version 1).
    pub fn encoding(&self) -> Vec<u8> {
        fn optional(out: &mut Vec<u8>, value: Option<&[u8]>, framed: bool) {
            match value {
                None => out.push(0),
                Some(bytes) => {
                    out.push(1);
                    if framed {
                        text(out, bytes);
                    } else {
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(ACCESS_ENCODING_V1);
        out.extend_from_slice(self.clinic_id.as_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.accessed_at.timestamp_micros().to_be_bytes());
        text(&mut out, self.principal_subject.as_bytes());
        text(&mut out, self.principal_issuer.as_bytes());
        text(&mut out, self.principal_role.as_bytes());
        optional(&mut out, self.actor.as_deref().map(str::as_bytes), true);
        text(&mut out, self.rpc.as_bytes());
        optional(
            &mut out,
            self.patient_id.as_ref().map(|id| &id.as_bytes()[..]),
            false,
        );
        optional(
            &mut out,
            self.episode_id.as_ref().map(|id| &id.as_bytes()[..]),
            false,
        );
        let shown = self.shown_position.map(i64::to_be_bytes);
        optional(&mut out, shown.as_ref().map(|bytes| &bytes[..]), false);
        optional(&mut out, self.purpose.as_deref().map(str::as_bytes), true);
        out.push(u8::from(self.break_glass));
        text(&mut out, self.outcome.as_bytes());
        out
    }

    /// The entry's hash: its leaf in the clinic's log.
    pub fn hash(&self) -> EventHash {
        EventHash(Sha256::digest(self.encoding()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AccessEntry {
        AccessEntry {
            clinic_id: Uuid::from_u128(0x7d8e_4a52_3b1f_4c7a_9a43_1f2d_5c6b_7e80),
            position: 17,
            accessed_at: DateTime::from_timestamp(1_793_000_000, 123_456_000).expect("time"),
            principal_subject: "dr-ines".into(),
            principal_issuer: "https://id.example".into(),
            principal_role: "clinician".into(),
            actor: None,
            rpc: "GetTreatmentPlan".into(),
            patient_id: Some(Uuid::from_u128(1)),
            episode_id: Some(Uuid::from_u128(2)),
            shown_position: Some(99),
            purpose: Some("TREAT".into()),
            break_glass: false,
            outcome: "OK".into(),
        }
    }

    /// Pinned: a change to the encoding must come with a new tag, never silently. The
    /// value was computed independently from the documented encoding (Python's hashlib).
    #[test]
    fn the_encoding_is_pinned() {
        assert_eq!(
            entry().hash().to_hex(),
            "c0125708698a3ad71fe32b2c68db2b91fd7a2846b5f780b0b0ff84d64628ddb2"
        );
    }

    #[test]
    fn every_field_counts() {
        let base = entry().hash();
        let changes: [fn(&mut AccessEntry); 10] = [
            |e| e.position += 1,
            |e| e.principal_subject.push('x'),
            |e| e.actor = Some(String::new()),
            |e| e.patient_id = None,
            |e| e.episode_id = e.patient_id,
            |e| e.shown_position = None,
            |e| e.purpose = None,
            |e| e.break_glass = true,
            |e| e.outcome = "NOT_FOUND".into(),
            |e| e.accessed_at += chrono::Duration::microseconds(1),
        ];
        for change in changes {
            let mut changed = entry();
            change(&mut changed);
            assert_ne!(changed.hash(), base, "{changed:?}");
        }
    }
}
