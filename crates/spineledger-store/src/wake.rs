//! The wake-up hint projectors get after appends: which shards of clinics have news.
//!
//! After a commit the store notes the last byte of each clinic id it wrote (a clinic's
//! shard is that byte modulo the shard count, in every process and in SQL:
//! `get_byte(uuid_send(clinic_id), 15) % count`). The notifier sends the bytes noted
//! since its previous NOTIFY as the payload of `NOTIFY spineledger_events`: a 256-bit
//! mask, 64 hex digits, bit `b` of byte `b / 8` (most significant bit first) set when a
//! clinic whose id ends in byte `b` appended. A projector task woken by it probes only if
//! its shard is named. A notification without a readable mask names every shard. The
//! hint is never needed for correctness: every task also polls.

use std::sync::Mutex;

use tokio::sync::Notify;
use uuid::Uuid;

/// The clinics' last bytes: a 256-bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardHint([u8; 32]);

impl ShardHint {
    /// Every byte: names every shard.
    pub const ALL: Self = Self([0xFF; 32]);

    /// Adds `clinic`'s last byte.
    pub fn insert(&mut self, clinic: Uuid) {
        let byte = clinic.as_bytes()[15];
        self.0[usize::from(byte / 8)] |= 0x80 >> (byte % 8);
    }

    /// True when no clinic is named.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The bytes named, in ascending order.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|byte| self.0[usize::from(byte / 8)] & (0x80 >> (byte % 8)) != 0)
    }

    /// The payload form: 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads a payload; `None` unless it is exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0; 32];
        for (slot, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *slot = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

/// What the appenders leave for the notifier: the clinics since the last NOTIFY, and a
/// signal that there are some.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    signal: Notify,
    pending: Mutex<ShardHint>,
}

impl Appended {
    /// Notes that `clinics` committed appends, and wakes the notifier.
    pub(crate) fn record(&self, clinics: impl IntoIterator<Item = Uuid>) {
        {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for clinic in clinics {
                pending.insert(clinic);
            }
        }
        self.signal.notify_one();
    }

    /// Waits for appends, then takes the clinics noted so far.
    pub(crate) async fn next(&self) -> ShardHint {
        self.signal.notified().await;
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_round_trips_and_names_the_last_bytes() {
        let mut hint = ShardHint::default();
        assert!(hint.is_empty());
        let clinic = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cd07);
        let other = Uuid::from_u128(0xff);
        hint.insert(clinic);
        hint.insert(other);
        assert_eq!(hint.bytes().collect::<Vec<_>>(), vec![0x07, 0xff]);
        let text = hint.to_hex();
        assert_eq!(&text[..2], "01", "byte 7 is the last bit of the first byte");
        assert_eq!(
            &text[62..],
            "01",
            "byte 255 is the last bit of the last byte"
        );
        assert_eq!(ShardHint::from_hex(&text), Some(hint));
        assert_eq!(ShardHint::from_hex("xyz"), None);
        assert_eq!(ShardHint::from_hex(&"g".repeat(64)), None);
        assert_eq!(ShardHint::from_hex(""), None);
        assert_eq!(ShardHint::ALL.bytes().count(), 256);
    }
}
