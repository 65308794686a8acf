//! Signed checkpoints: a clinic's tree head, signed with Ed25519 by a key the database
//! does not hold, in the C2SP formats that transparency-log tooling reads
//! (<https://c2sp.org/tlog-checkpoint> inside <https://c2sp.org/signed-note>).
//!
//! The checkpoint body is three lines, each ending in a newline: the origin (the log's
//! name, here `spineledger/clinic/<clinic id>`), the tree size in decimal, and the root
//! hash in standard base64. The note is the body, an empty line, and one signature line
//! per signer: an em dash, a space, the key's name, a space, and base64 of the 4-byte key
//! id followed by the 64-byte Ed25519 signature of the body. The key id is the first four
//! bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ public key); a verifier key is written
//! `<name>+<key id in hex>+<base64(0x01 ‖ public key)>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::merkle::TreeHead;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// The origin line of a clinic's log.
pub fn clinic_origin(clinic_id: Uuid) -> String {
    format!("spineledger/clinic/{clinic_id}")
}

/// Why a checkpoint or key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a checkpoint note.
    #[error("not a checkpoint: {0}")]
    Malformed(String),
    /// The key text is not a verifier key (or the name is not allowed).
    #[error("not a verifier key: {0}")]
    Key(String),
    /// No signature of the trusted key is on the note.
    #[error("the note carries no signature of key {0}")]
    NotSignedBy(String),
    /// The trusted key's signature does not verify.
    #[error("the signature of key {0} does not verify")]
    BadSignature(String),
}

/// What a checkpoint states: the log and its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Its size and root.
    pub head: TreeHead,
}

impl Checkpoint {
    /// The signed text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.head.size,
            STANDARD.encode(self.head.root)
        )
    }

    fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let malformed = |reason: &str| CheckpointError::Malformed(reason.to_owned());
        let mut lines = body.split_terminator('\n');
        let origin = lines.next().filter(|line| !line.is_empty());
        let origin = origin.ok_or_else(|| malformed("no origin line"))?;
        let size = lines.next().ok_or_else(|| malformed("no size line"))?;
        // Decimal without sign or leading zeros, as the format asks.
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(malformed("the size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| malformed("the size is too large"))?;
        let root = lines.next().ok_or_else(|| malformed("no root line"))?;
        let root = STANDARD
            .decode(root)
            .map_err(|_| malformed("the root is not base64"))?;
        let root: [u8; 32] = root
            .try_into()
            .map_err(|_| malformed("the root is not 32 bytes"))?;
        // Extension lines may follow; this log writes none and attaches no meaning to them.
        Ok(Self {
            origin: origin.to_owned(),
            head: TreeHead { size, root },
        })
    }
}

/// A public key that checkpoints are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl std::fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut typed = vec![ED25519];
        typed.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(typed)
        )
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = CheckpointError;

    /// Reads `<name>+<key id hex>+<base64(0x01 ‖ public key)>`, checking that the id is
    /// the one the name and key imply.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| CheckpointError::Key(reason.to_owned());
        // The key is base64, which may itself contain '+': split twice only.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<id>+<key>"));
        };
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519, key)) = key.split_first() else {
            return Err(bad("not an Ed25519 key"));
        };
        let key: [u8; 32] = key.try_into().map_err(|_| bad("the key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid Ed25519 key"))?;
        let parsed = Self::new(name, key)?;
        if hex::encode(parsed.id) != id.to_ascii_lowercase() {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(parsed)
    }
}

impl VerifierKey {
    /// The key named `name` (no whitespace and no `+`, as signed notes require).
    ///
    /// # Errors
    /// [`CheckpointError::Key`] for an empty name or one with such characters.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, CheckpointError> {
        if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
            return Err(CheckpointError::Key(
                "a key name must be non-empty, without spaces or '+'".into(),
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(name.as_bytes());
        hasher.update(b"\n");
        hasher.update([ED25519]);
        hasher.update(key.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let mut id = [0; 4];
        id.copy_from_slice(&digest[..4]);
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks `note` and returns the checkpoint it signs.
    ///
    /// # Errors
    /// The note is malformed, carries no signature of this key, or the signature fails.
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let malformed = |reason: &str| CheckpointError::Malformed(reason.to_owned());
        // A note kept in a file often gains a trailing blank line or a CR/LF ending on the
        // way; the signed text is unaffected by either.
        let note = note.replace("\r\n", "\n");
        let note = note.trim_end_matches(['\n', ' ']);
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or_else(|| malformed("no empty line before the signatures"))?;
        let body = format!("{body}\n");
        let checkpoint = Checkpoint::parse_body(&body)?;
        let mut found = false;
        for line in signatures.split_terminator('\n') {
            let line = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
            let (name, signature) = line
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line has no signature"))?;
            let signature = STANDARD
                .decode(signature)
                .map_err(|_| malformed("a signature is not base64"))?;
            if name != self.name || signature.len() < 4 || signature[..4] != self.id {
                // Another signer's (a witness's): not ours to judge.
                continue;
            }
            found = true;
            let signature = Signature::from_slice(&signature[4..])
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
            self.key
                .verify(body.as_bytes(), &signature)
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
        }
        if found {
            Ok(checkpoint)
        } else {
            Err(CheckpointError::NotSignedBy(self.name.clone()))
        }
    }
}

/// Signs checkpoints. Holds the private key, which lives in a file outside the database.
#[derive(Clone)]
pub struct CheckpointSigner {
    verifier: VerifierKey,
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer named `name` with `key`.
    ///
    /// # Errors
    /// The name is not allowed.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, CheckpointError> {
        Ok(Self {
            verifier: VerifierKey::new(name, key.verifying_key())?,
            key,
        })
    }

    /// The public half, to hand to auditors.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut signed = self.verifier.id.to_vec();
        signed.extend_from_slice(&signature.to_bytes());
        format!(
            "{body}\n\u{2014} {} {}\n",
            self.verifier.name,
            STANDARD.encode(signed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8, name: &str) -> CheckpointSigner {
        CheckpointSigner::new(name, SigningKey::from_bytes(&[seed; 32])).expect("signer")
    }

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: clinic_origin(Uuid::nil()),
            head: TreeHead {
                size,
                root: [0xab; 32],
            },
        }
    }

    /// Keys whose base64 holds a '+' read back too.
    #[test]
    fn every_key_text_reads_back() {
        for seed in 0..64 {
            let key = signer(seed, "spineledger").verifier().clone();
            assert_eq!(key.to_string().parse::<VerifierKey>(), Ok(key));
        }
    }

    #[test]
    fn a_signed_checkpoint_reads_back() {
        let signer = signer(7, "spineledger");
        let note = signer.sign(&checkpoint(42));
        assert!(note.starts_with(
            "spineledger/clinic/00000000-0000-0000-0000-000000000000\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} spineledger "
        ));
        let key: VerifierKey = signer.verifier().to_string().parse().expect("vkey");
        assert_eq!(key.open(&note), Ok(checkpoint(42)));
    }

    /// The key id is pinned: it is how other tools pick the signature to check.
    #[test]
    fn the_key_id_follows_signed_note() {
        let key = signer(7, "spineledger").verifier().clone();
        let mut hasher = Sha256::new();
        hasher.update(b"spineledger\n\x01");
        hasher.update(key.key.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        assert_eq!(key.id, digest[..4]);
        assert!(
            key.to_string()
                .starts_with(&format!("spineledger+{}+", hex::encode(&digest[..4])))
        );
    }

    #[test]
    fn tampered_notes_and_other_keys_are_refused() {
        let signer = signer(7, "spineledger");
        let note = signer.sign(&checkpoint(42));
        let key = signer.verifier();
        let bigger = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            key.open(&bigger),
            Err(CheckpointError::BadSignature("spineledger".into()))
        );
        let other = self::signer(8, "spineledger");
        assert!(matches!(
            other.verifier().open(&note),
            Err(CheckpointError::NotSignedBy(_))
        ));
        assert!(matches!(
            key.open("x\n1\n"),
            Err(CheckpointError::Malformed(_))
        ));
        let leading_zero = note.replacen("\n42\n", "\n042\n", 1);
        assert!(matches!(
            key.open(&leading_zero),
            Err(CheckpointError::Malformed(_))
        ));
        // A copy with a trailing blank line or Windows line ends reads the same.
        assert_eq!(key.open(&format!("{note}\n")), Ok(checkpoint(42)));
        assert_eq!(key.open(&note.replace('\n', "\r\n")), Ok(checkpoint(42)));
        // A witness's co-signature does not disturb ours.
        let witness = self::signer(9, "witness.example");
        let cosigned = format!(
            "{note}{}",
            &witness.sign(&checkpoint(42))[note.find("\n\n").map_or(0, |i| i + 2)..]
        );
        assert_eq!(key.open(&cosigned), Ok(checkpoint(42)));
        assert_eq!(witness.verifier().open(&cosigned), Ok(checkpoint(42)));
        // Keys: wrong id, bad names.
        let text = key.to_string();
        let mut parts: Vec<&str> = text.split('+').collect();
        parts[1] = "00000000";
        assert!(parts.join("+").parse::<VerifierKey>().is_err());
        assert!(VerifierKey::new("a b", key.key).is_err());
        assert!(VerifierKey::new("", key.key).is_err());
    }
}
