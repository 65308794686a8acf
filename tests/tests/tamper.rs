//! Tampering as a superuser would, with the immutability trigger bypassed: every kind of
//! edit the hash chain can show is found by `verify` at its exact stream and version,
//! and an untouched stream passes.

use std::collections::BTreeMap;

use spineledger::verify::{Report, verify};
use spineledger_e2e::tampering::{stream_of, superuser};
use spineledger_testkit::TestDatabase;
use spineledger_verifier::bundle::FindingKind;
use spineledger_verifier::checkpoint::{CheckpointSigner, VerifierKey};
use spineledger_verifier::stream::Fault;
use uuid::Uuid;

/// A key no checkpoint here is signed with: these streams were never integrated, so only
/// the chains are judged.
fn key() -> VerifierKey {
    CheckpointSigner::new(
        "tamper-test",
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
    )
    .expect("signer")
    .verifier()
    .clone()
}

async fn verified(database: &TestDatabase, clinic: Option<Uuid>) -> Report {
    verify(&mut database.owner_client().await, clinic, &key(), None)
        .await
        .expect("verify")
}

#[tokio::test]
async fn every_edit_the_chain_can_show_is_found_at_its_stream_and_version() {
    let database = TestDatabase::create().await;
    let clinic = Uuid::new_v4();
    let other_clinic = Uuid::new_v4();
    let mut streams = BTreeMap::new();
    for name in [
        "intact", "payload", "metadata", "type", "occurred", "middle", "last", "swap", "forged",
        "from", "into", "moved", "stripped", "headless",
    ] {
        streams.insert(name, stream_of(&database, clinic, name, 4).await);
    }
    let untouched = verified(&database, None).await;
    assert!(untouched.findings.is_empty(), "{:?}", untouched.findings);
    assert_eq!((untouched.streams, untouched.events), (14, 56));

    let owner = superuser(&database).await;
    let at = |name: &str| {
        let stream = &streams[name];
        (stream.clinic_id, stream.stream_id.clone())
    };
    let tamper = |sql: &'static str, name: &'static str| {
        let (clinic, stream) = at(name);
        let owner = &owner;
        async move {
            owner
                .execute(sql, &[&clinic, &stream])
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
        }
    };
    tamper(
        "UPDATE events SET payload = jsonb_set(payload, '{note}', '\"changed\"') \
         WHERE clinic_id = $1 AND stream_id = $2 AND version = 2",
        "payload",
    )
    .await;
    tamper(
        "UPDATE events SET metadata = jsonb_set(metadata, '{actor}', '\"someone-else\"') \
         WHERE clinic_id = $1 AND stream_id = $2 AND version = 3",
        "metadata",
    )
    .await;
    tamper(
        "UPDATE events SET event_type = 'DischargeRecorded' \
         WHERE clinic_id = $1 AND stream_id = $2 AND version = 1",
        "type",
    )
    .await;
    tamper(
        "UPDATE events SET occurred_at = occurred_at - interval '1 day' \
         WHERE clinic_id = $1 AND stream_id = $2 AND version = 4",
        "occurred",
    )
    .await;
    tamper(
        "DELETE FROM events WHERE clinic_id = $1 AND stream_id = $2 AND version = 2",
        "middle",
    )
    .await;
    tamper(
        "DELETE FROM events WHERE clinic_id = $1 AND stream_id = $2 AND version = 4",
        "last",
    )
    .await;
    for sql in [
        "UPDATE events SET version = 1000 WHERE clinic_id = $1 AND stream_id = $2 AND version = 2",
        "UPDATE events SET version = 2 WHERE clinic_id = $1 AND stream_id = $2 AND version = 3",
        "UPDATE events SET version = 3 WHERE clinic_id = $1 AND stream_id = $2 AND version = 1000",
    ] {
        tamper(sql, "swap").await;
    }
    // A forged fifth event that copies the fourth's hashes; the head is left alone.
    tamper(
        "INSERT INTO events (clinic_id, stream_id, version, event_id, event_type, \
             schema_version, payload, metadata, fingerprint, occurred_at, prev_hash, hash) \
         SELECT clinic_id, stream_id, 5, gen_random_uuid(), event_type, schema_version, \
             payload, metadata, fingerprint, occurred_at, prev_hash, hash \
         FROM events WHERE clinic_id = $1 AND stream_id = $2 AND version = 4",
        "forged",
    )
    .await;
    // Every hash of a stream stripped, as if it predated the chain.
    for sql in [
        "UPDATE events SET hash = NULL, prev_hash = NULL WHERE clinic_id = $1 AND stream_id = $2",
        "UPDATE streams SET head_hash = NULL WHERE clinic_id = $1 AND stream_id = $2",
    ] {
        tamper(sql, "stripped").await;
    }
    // The stream row deleted, its events left.
    tamper(
        "DELETE FROM streams WHERE clinic_id = $1 AND stream_id = $2",
        "headless",
    )
    .await;
    // Version 3 of `from` becomes version 5 of `into`, head and all.
    let (_, into) = at("into");
    let (_, from) = at("from");
    owner
        .execute(
            "UPDATE events SET stream_id = $3, version = 5 \
             WHERE clinic_id = $1 AND stream_id = $2 AND version = 3",
            &[&clinic, &from, &into],
        )
        .await
        .expect("move to another stream");
    owner
        .execute(
            "UPDATE streams SET version = 5 WHERE clinic_id = $1 AND stream_id = $2",
            &[&clinic, &into],
        )
        .await
        .expect("move the head");
    // Version 2 of `moved` goes to another clinic, into a stream of the same name there.
    let (_, moved) = at("moved");
    owner
        .execute(
            "INSERT INTO streams (clinic_id, stream_id, version) VALUES ($1, $2, 1)",
            &[&other_clinic, &moved],
        )
        .await
        .expect("a stream at the other clinic");
    owner
        .execute(
            "UPDATE events SET clinic_id = $3, version = 1 \
             WHERE clinic_id = $1 AND stream_id = $2 AND version = 2",
            &[&clinic, &moved, &other_clinic],
        )
        .await
        .expect("move to another clinic");

    let report = verified(&database, None).await;
    let found: BTreeMap<(Uuid, String), (Fault, u64)> = report
        .findings
        .iter()
        .filter_map(|finding| match finding.kind {
            FindingKind::Chain(fault) => Some((
                (finding.clinic_id, finding.stream_id.clone()?),
                (fault, finding.version?),
            )),
            _ => None,
        })
        .collect();
    let expect = |name: &str, fault: Fault, version: u64| {
        assert_eq!(
            found.get(&at(name)),
            Some(&(fault, version)),
            "{name}: {found:?}"
        );
    };
    expect("payload", Fault::HashMismatch, 2);
    expect("metadata", Fault::HashMismatch, 3);
    expect("type", Fault::HashMismatch, 1);
    expect("occurred", Fault::HashMismatch, 4);
    expect("middle", Fault::MissingVersion, 2);
    expect("last", Fault::HeadVersion, 4);
    expect("swap", Fault::PreviousMismatch, 2);
    expect("forged", Fault::PreviousMismatch, 5);
    expect("from", Fault::MissingVersion, 3);
    expect("into", Fault::PreviousMismatch, 5);
    expect("moved", Fault::MissingVersion, 2);
    assert_eq!(
        found.get(&(other_clinic, moved.clone())),
        Some(&(Fault::PreviousMismatch, 1)),
        "the moved event at the other clinic: {found:?}"
    );
    expect("stripped", Fault::Unhashed, 1);
    expect("headless", Fault::MissingHead, 4);
    assert!(!found.contains_key(&at("intact")), "{found:?}");
    assert_eq!(report.findings.len(), 14, "{:?}", report.findings);
    // Each finding names where it is and what was expected and found.
    let payload = report
        .findings
        .iter()
        .find(|finding| {
            Some((
                finding.clinic_id,
                finding.stream_id.clone().unwrap_or_default(),
            )) == Some(at("payload"))
        })
        .expect("the payload edit");
    assert!(payload.position.is_some() && payload.expected != payload.found);

    // Only one clinic: the other's damage is not reported.
    let one = verified(&database, Some(other_clinic)).await;
    assert_eq!(one.findings.len(), 1);
    assert_eq!(one.clinics, 1);
}
