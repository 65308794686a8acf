//! The offline verifier as an auditor runs it: a bundle file, a trusted key, a checkpoint
//! kept from earlier, and the exit status and report it gives.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::DateTime;
use ed25519_dalek::SigningKey;
use serde_json::json;
use spineledger_verifier::bundle::{
    BUNDLE_FORMAT, Bundle, BundledEvent, Cursor, IndexedLeaf, Integrated, LeafKind, StreamHead,
};
use spineledger_verifier::chain::EventHash;
use spineledger_verifier::checkpoint::{Checkpoint, CheckpointSigner, clinic_origin};
use spineledger_verifier::merkle::LogTree;
use spineledger_verifier::stream::StoredEvent;
use uuid::Uuid;

const CLINIC: Uuid = Uuid::from_u128(0x7d8e_4a52_3b1f_4c7a_9a43_1f2d_5c6b_7e80);

fn signer() -> CheckpointSigner {
    CheckpointSigner::new("offline-test", SigningKey::from_bytes(&[5; 32])).expect("signer")
}

/// A sound bundle of one stream of `n` events, all indexed, with a checkpoint of them all.
fn bundle(n: u64) -> Bundle {
    let mut previous = EventHash::GENESIS;
    let mut events = Vec::new();
    let mut leaves = Vec::new();
    for version in 1..=n {
        let mut event = StoredEvent {
            clinic_id: CLINIC,
            stream_id: "episode-1".into(),
            version,
            position: i64::try_from(version).expect("small"),
            event_id: Uuid::from_u128(u128::from(version)),
            event_type: "SessionRecorded".into(),
            schema_version: 1,
            payload: json!({ "n": version, "peak_force_newtons": 310.5 }),
            metadata: json!({ "actor": "provider-7" }),
            occurred_at: None,
            recorded_at: DateTime::from_timestamp(1_793_000_000, 0).expect("time"),
            previous_hash: Some(previous),
            hash: None,
        };
        let hash = event.recomputed(previous);
        event.hash = Some(hash);
        previous = hash;
        leaves.push(IndexedLeaf {
            index: version - 1,
            kind: LeafKind::Event,
            position: event.position,
            hash,
        });
        events.push(BundledEvent {
            xid: 1000 + version,
            event,
        });
    }
    let tree = LogTree::from_leaves(leaves.iter().map(|leaf| leaf.hash.0));
    let note = signer().sign(&Checkpoint {
        origin: clinic_origin(CLINIC),
        head: tree.head(),
    });
    Bundle {
        format: BUNDLE_FORMAT.into(),
        clinic_id: CLINIC,
        exported_at: DateTime::from_timestamp(1_793_000_100, 0).expect("time"),
        verifier_key: signer().verifier().to_string(),
        unhashed_until: 0,
        streams: vec![StreamHead {
            stream_id: "episode-1".into(),
            version: n,
            head_hash: Some(previous),
        }],
        events,
        access_log: Vec::new(),
        leaves,
        integrated: Integrated {
            events: Cursor {
                xid: 1000 + n,
                position: i64::try_from(n).expect("small"),
            },
            access: Cursor::default(),
        },
        checkpoints: vec![note],
    }
}

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("spineledger-offline-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("scratch");
    directory.join(name)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

fn audit(bundle: &Path, kept: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spineledger-audit"));
    command
        .arg(bundle)
        .args(["--key", &signer().verifier().to_string()]);
    if let Some(kept) = kept {
        command.arg("--kept").arg(kept);
    }
    command.output().expect("run spineledger-audit")
}

#[test]
fn a_sound_bundle_passes_and_a_kept_checkpoint_exposes_rollback_and_fork() {
    let path = scratch("sound.json");
    write(&path, &serde_json::to_string(&bundle(4)).expect("json"));
    let sound = audit(&path, None);
    let stdout = String::from_utf8_lossy(&sound.stdout);
    assert_eq!(sound.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("4 events in 1 streams"), "{stdout}");
    assert!(stdout.contains(": 0 findings"), "{stdout}");

    // The auditor kept the checkpoint of 4; the bundle now holds only 3 (a restore from an
    // older backup, its own checkpoints re-signed to match).
    let kept = scratch("kept-4.txt");
    write(&kept, &bundle(4).checkpoints[0]);
    let older = scratch("older.json");
    write(&older, &serde_json::to_string(&bundle(3)).expect("json"));
    let rolled_back = audit(&older, Some(&kept));
    let stdout = String::from_utf8_lossy(&rolled_back.stdout);
    assert_eq!(rolled_back.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("BROKEN rollback: clinic {CLINIC} tree size 4")),
        "{stdout}"
    );
    // Kept earlier at 3; the log at 3 is another (a fork shown to this auditor).
    let forked = {
        let mut other = bundle(3);
        other.events[2].event.payload["n"] = json!(30);
        let mut previous = other.events[1].event.hash.expect("hash");
        let hash = other.events[2].event.recomputed(previous);
        other.events[2].event.hash = Some(hash);
        previous = hash;
        other.streams[0].head_hash = Some(previous);
        other.leaves[2].hash = hash;
        let tree = LogTree::from_leaves(other.leaves.iter().map(|leaf| leaf.hash.0));
        other.checkpoints = vec![signer().sign(&Checkpoint {
            origin: clinic_origin(CLINIC),
            head: tree.head(),
        })];
        other
    };
    let kept_three = scratch("kept-3.txt");
    write(&kept_three, &bundle(3).checkpoints[0]);
    let fork_path = scratch("fork.json");
    write(&fork_path, &serde_json::to_string(&forked).expect("json"));
    let fork = audit(&fork_path, Some(&kept_three));
    let stdout = String::from_utf8_lossy(&fork.stdout);
    assert_eq!(fork.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("BROKEN fork from the kept checkpoint"),
        "{stdout}"
    );
    // The same bundle is sound on its own: only the kept checkpoint shows the fork.
    assert_eq!(audit(&fork_path, None).status.code(), Some(0));

    // An event of another clinic slipped into the bundle is named as such, and its hash,
    // judged as this clinic's, fails.
    let mut mixed = bundle(3);
    mixed.events[1].event.clinic_id = Uuid::from_u128(7);
    let mixed_path = scratch("mixed.json");
    write(&mixed_path, &serde_json::to_string(&mixed).expect("json"));
    let output = audit(&mixed_path, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("BROKEN record of another clinic"),
        "{stdout}"
    );

    // Not a bundle: exit 2, and no findings claimed.
    let junk = scratch("junk.json");
    write(&junk, "{\"format\": 1}");
    let unread = audit(&junk, None);
    assert_eq!(unread.status.code(), Some(2));
    assert!(unread.stdout.is_empty());
    let _ = std::fs::remove_dir_all(path.parent().expect("scratch"));
}
