//! Each clinic's signed log: the integrator indexes every event and access-log entry once,
//! checkpoints are signed, inclusion and consistency proofs verify with the verifier crate
//! alone; and the tampering a hash chain cannot show (a rewritten stream, a cut tail, a
//! rollback, a fork, an edited access entry) is found by `verify` and by the offline audit
//! of an exported bundle.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use spineledger::verify::{Report, export, verify};
use spineledger_api::v1;
use spineledger_e2e::Harness;
use spineledger_e2e::tampering::{stream_of, superuser};
use spineledger_projections::clinic_log::{latest_checkpoint, sign_grown_logs};
use spineledger_projections::{Projection, Projector, ProjectorConfig};
use spineledger_store::{Access, Reader, StreamKey};
use spineledger_testkit::TestDatabase;
use spineledger_verifier::bundle::FindingKind;
use spineledger_verifier::chain::EventHash;
use spineledger_verifier::checkpoint::{CheckpointSigner, VerifierKey};
use spineledger_verifier::merkle::{TreeHead, verify_consistency, verify_inclusion};
use spineledger_verifier::stream::StoredEvent;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

fn signer() -> CheckpointSigner {
    CheckpointSigner::new(
        "signed-log-test",
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
    )
    .expect("signer")
}

fn key() -> VerifierKey {
    signer().verifier().clone()
}

/// Runs the integrator over every shard until nothing is left to index.
async fn integrate(database: &TestDatabase) {
    integrate_in(database, Harness::projector_config().shards).await;
}

async fn integrate_in(database: &TestDatabase, shards: u8) {
    let config = ProjectorConfig {
        projections: vec![Projection::ClinicLog],
        shards,
        ..Harness::projector_config()
    };
    spineledger_projections::ensure_checkpoints(database.projector_pool(), &config)
        .await
        .expect("checkpoints");
    let projector = Projector::new(
        database.projector_pool().clone(),
        database.projector_config(),
        config.clone(),
    );
    projector.balance_leases().await.expect("leases");
    settle(database).await;
    for shard in 0..config.shards {
        while projector
            .run_batch(Projection::ClinicLog, shard)
            .await
            .expect("integrate")
            .events
            > 0
        {}
    }
    projector.release_all().await.expect("release");
}

/// Waits until every transaction that had started when it was called has ended, so that
/// a reader sees every record committed before the call. Transaction ids are
/// cluster-wide: a transaction still running in another test's database (they run in
/// parallel) keeps this database's newest records unreadable (the never-skip rule), and
/// a drain that stopped at the first empty batch would then miss them.
async fn settle(database: &TestDatabase) {
    let owner = database.owner_client().await;
    let horizon: i64 = owner
        .query_one(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await
        .expect("xmax")
        .get(0);
    for _ in 0..6000 {
        let oldest: i64 = owner
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                &[],
            )
            .await
            .expect("xmin")
            .get(0);
        if oldest >= horizon {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("a transaction older than the test's records stayed open for a minute");
}

async fn sign(database: &TestDatabase) {
    sign_grown_logs(database.projector_pool(), &signer())
        .await
        .expect("sign");
}

async fn read_access(database: &TestDatabase, clinic: Uuid, reads: usize) {
    let reader = Reader {
        subject: "auditor-1".into(),
        issuer: "https://id.example".into(),
        role: "auditor".into(),
        actor: None,
        purpose: Some("HOPERAT".into()),
        break_glass: false,
    };
    for _ in 0..reads {
        database
            .store()
            .record_access(
                &reader,
                &[Access {
                    clinic_id: clinic,
                    rpc: "ListStreamEvents".into(),
                    patient_id: None,
                    episode_id: Some(Uuid::new_v4()),
                    shown_position: Some(1),
                    outcome: "OK".into(),
                }],
            )
            .await
            .expect("access");
    }
}

async fn verified(database: &TestDatabase, clinic: Option<Uuid>, kept: Option<&str>) -> Report {
    verify(&mut database.owner_client().await, clinic, &key(), kept)
        .await
        .expect("verify")
}

fn kinds(report: &Report, clinic: Uuid) -> Vec<FindingKind> {
    report
        .findings
        .iter()
        .filter(|finding| finding.clinic_id == clinic)
        .map(|finding| finding.kind)
        .collect()
}

#[tokio::test]
async fn every_record_is_indexed_once_and_the_audit_of_a_sound_log_passes() {
    let database = TestDatabase::create().await;
    let clinics: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for clinic in &clinics {
        for _ in 0..3 {
            stream_of(&database, *clinic, "log", 4).await;
        }
        read_access(&database, *clinic, 5).await;
    }
    integrate(&database).await;
    // Running it again indexes nothing twice.
    integrate(&database).await;
    sign(&database).await;
    let report = verified(&database, None, None).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        (
            report.clinics,
            report.events,
            report.access_entries,
            report.leaves
        ),
        (3, 36, 15, 51)
    );
    assert_eq!((report.pending, report.checkpoints), (0, 3));

    // Records after the checkpoint: indexed, not yet signed, still sound; signing again
    // adds a checkpoint that extends the first.
    stream_of(&database, clinics[0], "log", 2).await;
    let pending = verified(&database, Some(clinics[0]), None).await;
    assert_eq!(pending.pending, 2, "not yet indexed");
    assert!(pending.findings.is_empty(), "{:?}", pending.findings);
    let first = latest_checkpoint(
        &database.projector_pool().get().await.expect("client"),
        clinics[0],
        &key(),
    )
    .await
    .expect("checkpoint")
    .expect("signed");
    integrate(&database).await;
    sign(&database).await;
    let bundle = export(&mut database.owner_client().await, clinics[0], &key())
        .await
        .expect("export");
    let audit = bundle.audit(&key(), Some(&first.note));
    assert!(audit.is_sound(), "{:?}", audit.findings);
    assert_eq!(audit.latest.map(|head| head.size), Some(19));
    assert_eq!(audit.checkpoints, 2);
    // The bundle survives its JSON form byte for byte in meaning.
    let text = serde_json::to_string(&bundle).expect("json");
    let again: spineledger_verifier::bundle::Bundle = serde_json::from_str(&text).expect("read");
    assert!(again.audit(&key(), Some(&first.note)).is_sound());
    // Another key's checkpoints are not trusted.
    let stranger =
        CheckpointSigner::new("stranger", ed25519_dalek::SigningKey::from_bytes(&[1; 32]))
            .expect("signer");
    let untrusted = bundle.audit(stranger.verifier(), None);
    assert!(
        untrusted
            .findings
            .iter()
            .all(|finding| finding.kind == FindingKind::CheckpointSignature),
        "{:?}",
        untrusted.findings
    );
    assert_eq!(untrusted.findings.len(), 2);

    // A checkpoint row nobody signed (written past the service, here with a size no log
    // has) is never trusted: signing goes on from the valid ones, and verify names it.
    database
        .owner_client()
        .await
        .execute(
            "INSERT INTO log_checkpoints (clinic_id, tree_size, root_hash, note) \
             VALUES ($1, 9000000000000000000, $2, 'junk')",
            &[&clinics[1], &&[0_u8; 32][..]],
        )
        .await
        .expect("a junk checkpoint");
    stream_of(&database, clinics[1], "log", 1).await;
    integrate(&database).await;
    // And one with exactly the size and root the next checkpoint will have, under a note
    // nobody signed: it must not keep the signed note out.
    let next = spineledger_projections::clinic_log::load_tree(
        &database.projector_pool().get().await.expect("client"),
        clinics[1],
        None,
    )
    .await
    .expect("tree")
    .head();
    database
        .owner_client()
        .await
        .execute(
            "INSERT INTO log_checkpoints (clinic_id, tree_size, root_hash, note) \
             VALUES ($1, $2, $3, 'not signed')",
            &[
                &clinics[1],
                &i64::try_from(next.size).expect("size"),
                &&next.root[..],
            ],
        )
        .await
        .expect("a junk checkpoint of the right size and root");
    sign(&database).await;
    let latest = latest_checkpoint(
        &database.projector_pool().get().await.expect("client"),
        clinics[1],
        &key(),
    )
    .await
    .expect("read")
    .expect("signed");
    assert_eq!(latest.head.size, 18, "signed past the junk row");
    let report = verified(&database, Some(clinics[1]), None).await;
    assert_eq!(
        kinds(&report, clinics[1]),
        [
            FindingKind::CheckpointSignature,
            FindingKind::CheckpointSignature
        ]
    );
}

#[tokio::test]
async fn a_new_shard_layout_indexes_nothing_twice_and_nothing_out_of_order() {
    let database = TestDatabase::create().await;
    let clinics: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    for clinic in &clinics {
        stream_of(&database, *clinic, "log", 3).await;
        read_access(&database, *clinic, 1).await;
    }
    integrate_in(&database, 4).await;
    // Half the shards get further than the others before the layout changes.
    for clinic in &clinics {
        stream_of(&database, *clinic, "log", 2).await;
        read_access(&database, *clinic, 1).await;
    }
    let config = ProjectorConfig {
        projections: vec![Projection::ClinicLog],
        shards: 4,
        ..Harness::projector_config()
    };
    let projector = Projector::new(
        database.projector_pool().clone(),
        database.projector_config(),
        config,
    );
    projector.balance_leases().await.expect("leases");
    for shard in [0, 1] {
        projector
            .run_batch(Projection::ClinicLog, shard)
            .await
            .expect("integrate");
    }
    projector.release_all().await.expect("release");
    let owner = spineledger_store::pool(database.config(), 1).expect("owner pool");
    let mut client = owner.get().await.expect("owner");
    assert!(
        spineledger_projections::clinic_log::reshard(&mut client, 2)
            .await
            .expect("reshard")
    );
    assert!(
        !spineledger_projections::clinic_log::reshard(&mut client, 2)
            .await
            .expect("again"),
        "a second run changes nothing"
    );
    integrate_in(&database, 2).await;
    sign(&database).await;
    let report = verified(&database, None, None).await;
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!((report.leaves, report.pending), (6 * 7, 0));
}

/// Rewrites version `version` of `stream` and every hash after it, the head, and the
/// leaves, as a careful forger with full access would: every chain and index check holds.
async fn rewrite(
    owner: &spineledger_store::tokio_postgres::Client,
    stream: &StreamKey,
    version: i64,
) {
    let rows = owner
        .query(
            "SELECT version, position, event_id, event_type, schema_version, payload, metadata, \
                    occurred_at, recorded_at FROM events \
             WHERE clinic_id = $1 AND stream_id = $2 ORDER BY version",
            &[&stream.clinic_id, &stream.stream_id],
        )
        .await
        .expect("read");
    let mut previous = EventHash::GENESIS;
    for row in rows {
        let at: i64 = row.get(0);
        let mut payload: serde_json::Value = row.get(5);
        if at == version {
            payload["note"] = json!("rewritten");
        }
        let event = StoredEvent {
            clinic_id: stream.clinic_id,
            stream_id: stream.stream_id.clone(),
            version: u64::try_from(at).expect("version"),
            position: row.get(1),
            event_id: row.get(2),
            event_type: row.get(3),
            schema_version: row.get(4),
            payload: payload.clone(),
            metadata: row.get(6),
            occurred_at: row.get(7),
            recorded_at: row.get(8),
            previous_hash: None,
            hash: None,
        };
        let hash = event.recomputed(previous);
        owner
            .execute(
                "UPDATE events SET payload = $3, prev_hash = $4, hash = $5 \
                 WHERE clinic_id = $1 AND position = $2",
                &[
                    &stream.clinic_id,
                    &event.position,
                    &payload,
                    &&previous.0[..],
                    &&hash.0[..],
                ],
            )
            .await
            .expect("rewrite the event");
        owner
            .execute(
                "UPDATE clinic_log SET leaf_hash = $3 \
                 WHERE clinic_id = $1 AND kind = 'event' AND position = $2",
                &[&stream.clinic_id, &event.position, &&hash.0[..]],
            )
            .await
            .expect("rewrite the leaf");
        previous = hash;
    }
    owner
        .execute(
            "UPDATE streams SET head_hash = $3 WHERE clinic_id = $1 AND stream_id = $2",
            &[&stream.clinic_id, &stream.stream_id, &&previous.0[..]],
        )
        .await
        .expect("rewrite the head");
}

#[tokio::test]
async fn tampering_the_chain_cannot_show_is_found_by_the_signed_log() {
    let database = TestDatabase::create().await;
    let names = [
        "intact",
        "rewritten",
        "tail",
        "rollback",
        "fork",
        "access",
        "gap",
    ];
    let clinics: BTreeMap<&str, Uuid> = names.iter().map(|name| (*name, Uuid::new_v4())).collect();
    let mut streams = BTreeMap::new();
    for (name, clinic) in &clinics {
        streams.insert(*name, stream_of(&database, *clinic, "log", 4).await);
        stream_of(&database, *clinic, "log", 3).await;
        read_access(&database, *clinic, 2).await;
    }
    integrate(&database).await;
    sign(&database).await;
    let sound = verified(&database, None, None).await;
    assert!(sound.findings.is_empty(), "{:?}", sound.findings);
    // The auditor keeps the rollback clinic's checkpoint (9 leaves), then it grows.
    let kept = latest_checkpoint(
        &database.projector_pool().get().await.expect("client"),
        clinics["rollback"],
        &key(),
    )
    .await
    .expect("read")
    .expect("signed");
    assert_eq!(kept.head.size, 9);
    stream_of(&database, clinics["rollback"], "log", 1).await;
    integrate(&database).await;

    let owner = superuser(&database).await;
    // A whole stream rewritten with recomputed hashes, head and leaves.
    rewrite(&owner, &streams["rewritten"], 2).await;
    // The tail cut: the last event deleted and the head moved back to version 3.
    let tail = &streams["tail"];
    owner
        .batch_execute(&format!(
            "DELETE FROM events WHERE clinic_id = '{c}' AND stream_id = '{s}' AND version = 4; \
             UPDATE streams SET version = 3, \
                 head_hash = (SELECT hash FROM events WHERE clinic_id = '{c}' \
                              AND stream_id = '{s}' AND version = 3) \
             WHERE clinic_id = '{c}' AND stream_id = '{s}'",
            c = tail.clinic_id,
            s = tail.stream_id
        ))
        .await
        .expect("cut the tail");
    // A rollback to before the kept checkpoint: the last two records gone with their
    // leaves, and every checkpoint that covered them.
    let rollback = clinics["rollback"];
    owner
        .batch_execute(&format!(
            "DELETE FROM events WHERE position IN (SELECT position FROM clinic_log \
                 WHERE clinic_id = '{rollback}' AND kind = 'event' AND leaf_index >= 8); \
             DELETE FROM access_log WHERE clinic_id = '{rollback}' AND position IN ( \
                 SELECT position FROM clinic_log WHERE clinic_id = '{rollback}' \
                 AND kind = 'access' AND leaf_index >= 8); \
             DELETE FROM clinic_log WHERE clinic_id = '{rollback}' AND leaf_index >= 8; \
             DELETE FROM streams s WHERE clinic_id = '{rollback}' AND NOT EXISTS ( \
                 SELECT 1 FROM events e WHERE e.clinic_id = s.clinic_id \
                 AND e.stream_id = s.stream_id); \
             DELETE FROM log_checkpoints WHERE clinic_id = '{rollback}'"
        ))
        .await
        .expect("roll back");
    // A second checkpoint of the fork clinic's size with another root, properly signed
    // (as a stolen key, or a second history shown to someone else, would give).
    let fork = clinics["fork"];
    let forged_root = [0x5a; 32];
    let note = signer().sign(&spineledger_verifier::checkpoint::Checkpoint {
        origin: spineledger_verifier::checkpoint::clinic_origin(fork),
        head: TreeHead {
            size: 9,
            root: forged_root,
        },
    });
    owner
        .execute(
            "INSERT INTO log_checkpoints (clinic_id, tree_size, root_hash, note) VALUES ($1, 9, $2, $3)",
            &[&fork, &&forged_root[..], &note],
        )
        .await
        .expect("forge a checkpoint");
    // An access entry edited after it was logged.
    let access = clinics["access"];
    owner
        .execute(
            "UPDATE access_log SET principal_subject = 'someone-else' WHERE clinic_id = $1 \
             AND position = (SELECT min(position) FROM access_log WHERE clinic_id = $1)",
            &[&access],
        )
        .await
        .expect("edit an access entry");
    // A leaf removed from the middle of the index.
    let gap = clinics["gap"];
    owner
        .execute(
            "DELETE FROM clinic_log WHERE clinic_id = $1 AND leaf_index = 3",
            &[&gap],
        )
        .await
        .expect("remove a leaf");

    let report = verified(&database, None, None).await;
    assert!(
        kinds(&report, clinics["intact"]).is_empty(),
        "{:?}",
        report.findings
    );
    assert_eq!(
        kinds(&report, clinics["rewritten"]),
        [FindingKind::CheckpointRoot],
        "{:?}",
        report.findings
    );
    let rewritten = report
        .findings
        .iter()
        .find(|finding| finding.clinic_id == clinics["rewritten"])
        .expect("found");
    assert_eq!(
        rewritten.leaf,
        Some(9),
        "the checkpoint that no longer holds"
    );
    assert_ne!(rewritten.expected, rewritten.found);
    // The cut tail: its leaf names an event that is gone, at its exact position.
    let cut = report
        .findings
        .iter()
        .find(|finding| finding.clinic_id == tail.clinic_id)
        .expect("found");
    assert_eq!(cut.kind, FindingKind::LeafOrphan, "{:?}", report.findings);
    assert_eq!(kinds(&report, tail.clinic_id).len(), 1);
    // The rollback removed its own evidence: only the kept checkpoint shows it.
    assert!(kinds(&report, rollback).is_empty(), "{:?}", report.findings);
    let with_kept = verified(&database, Some(rollback), Some(&kept.note)).await;
    assert_eq!(kinds(&with_kept, rollback), [FindingKind::Rollback]);
    assert!(
        kinds(&report, fork).contains(&FindingKind::Fork),
        "{:?}",
        report.findings
    );
    let edited = report
        .findings
        .iter()
        .filter(|finding| finding.clinic_id == access)
        .collect::<Vec<_>>();
    assert_eq!(edited.len(), 1, "{edited:?}");
    assert_eq!(edited[0].kind, FindingKind::LeafMismatch);
    let gap_kinds = kinds(&report, gap);
    assert!(gap_kinds.contains(&FindingKind::IndexGap), "{gap_kinds:?}");
    assert!(gap_kinds.contains(&FindingKind::Unindexed), "{gap_kinds:?}");
    assert!(
        gap_kinds.contains(&FindingKind::CheckpointBeyondLog),
        "{gap_kinds:?}"
    );
    assert_eq!(
        gap_kinds
            .iter()
            .filter(|kind| **kind == FindingKind::IndexGap)
            .count(),
        1,
        "one gap, reported once: {gap_kinds:?}"
    );

    // The offline audit of an exported bundle finds the same.
    let bundle = export(
        &mut database.owner_client().await,
        clinics["rewritten"],
        &key(),
    )
    .await
    .expect("export");
    let audit = bundle.audit(&key(), None);
    assert_eq!(
        audit
            .findings
            .iter()
            .map(|finding| finding.kind)
            .collect::<Vec<_>>(),
        [FindingKind::CheckpointRoot]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proofs_from_the_api_verify_with_the_verifier_alone() {
    let mut harness = Harness::start_at(Utc::now()).await;
    harness.start_projector();
    let script = harness.script();
    let clinic = script.clinic_id;
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    let at = Utc::now() - chrono::Duration::days(3);
    let receipt = |result: Option<v1::WriteResult>| {
        let result = result.expect("result");
        (result.global_position, result.event_hash)
    };
    let receipts = vec![
        receipt(
            writes
                .register_patient(script.register_patient(at))
                .await
                .expect("register")
                .into_inner()
                .result,
        ),
        receipt(
            writes
                .record_evaluation(script.evaluation(at))
                .await
                .expect("evaluation")
                .into_inner()
                .result,
        ),
        receipt(
            writes
                .start_treatment_plan(script.plan(at))
                .await
                .expect("plan")
                .into_inner()
                .result,
        ),
    ];
    let auditor = harness.bearer(spineledger_auth::Role::Auditor, &[clinic]);
    let mut audit = v1::audit_service_client::AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        auditor,
    );
    // Wait for the integrator, then sign on demand.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let checkpoint = loop {
        let signed = audit
            .sign_checkpoint(v1::SignCheckpointRequest {
                clinic_id: clinic.to_string(),
            })
            .await;
        if let Ok(response) = signed {
            let response = response.into_inner();
            if response.log_size >= 3 {
                break response;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the integrator never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let key: VerifierKey = checkpoint.verifier_key.parse().expect("a verifier key");
    assert_eq!(&key, harness.checkpoint_signer().verifier());
    let note = checkpoint.checkpoint.expect("a checkpoint").note;
    let first = key.open(&note).expect("signed by the server's key").head;
    assert_eq!(first.size, 3);
    for (position, receipt) in &receipts {
        let proof = audit
            .get_inclusion_proof(v1::GetInclusionProofRequest {
                clinic_id: clinic.to_string(),
                record: Some(v1::get_inclusion_proof_request::Record::GlobalPosition(
                    *position,
                )),
                tree_size: 0,
            })
            .await
            .expect("proof")
            .into_inner();
        // The leaf is the hash the write returned as its receipt.
        assert_eq!(hex_of(&proof.leaf_hash), *receipt);
        let leaf: [u8; 32] = proof.leaf_hash.as_slice().try_into().expect("32 bytes");
        verify_inclusion(
            &first,
            &leaf,
            u64::try_from(proof.leaf_index).expect("index"),
            &proof.audit_path,
        )
        .expect("included in the signed tree");
    }
    // A read appends to the access log, which the log covers too; the log grows, and the
    // new checkpoint extends the old one.
    let mut plans =
        v1::treatment_plan_service_client::TreatmentPlanServiceClient::new(harness.channel().await);
    plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: clinic.to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: Some(receipts[2].0),
        })
        .await
        .expect("a read");
    writes
        .record_session(script.session(at, 300.0, v1::Tolerance::Good))
        .await
        .expect("a session");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        let response = audit
            .sign_checkpoint(v1::SignCheckpointRequest {
                clinic_id: clinic.to_string(),
            })
            .await
            .expect("sign")
            .into_inner();
        if response.log_size >= 5 {
            break key
                .open(&response.checkpoint.expect("checkpoint").note)
                .expect("signed")
                .head;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the integrator never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let consistency = audit
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            clinic_id: clinic.to_string(),
            first_size: 3,
            second_size: 0,
        })
        .await
        .expect("proof")
        .into_inner();
    assert_eq!(
        u64::try_from(consistency.second_size).expect("size"),
        second.size
    );
    verify_consistency(&first, &second, &consistency.proof).expect("the log only grew");
    // The access entry of the read is in the log too.
    let entries = audit
        .list_access_log(v1::ListAccessLogRequest {
            clinic_id: clinic.to_string(),
            ..Default::default()
        })
        .await
        .expect("access log")
        .into_inner()
        .entries;
    let read = entries.first().expect("the read was logged");
    let proof = audit
        .get_inclusion_proof(v1::GetInclusionProofRequest {
            clinic_id: clinic.to_string(),
            record: Some(v1::get_inclusion_proof_request::Record::AccessPosition(
                read.position,
            )),
            tree_size: 0,
        })
        .await
        .expect("an access entry's proof")
        .into_inner();
    let leaf: [u8; 32] = proof.leaf_hash.as_slice().try_into().expect("32 bytes");
    verify_inclusion(
        &second,
        &leaf,
        u64::try_from(proof.leaf_index).expect("index"),
        &proof.audit_path,
    )
    .expect("the access entry is in the signed tree");

    // What cannot be answered is said clearly.
    let status = audit
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            clinic_id: clinic.to_string(),
            first_size: 0,
            second_size: 0,
        })
        .await
        .expect_err("no empty tree");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = audit
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            clinic_id: clinic.to_string(),
            first_size: 1,
            second_size: 1_000,
        })
        .await
        .expect_err("beyond the log");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.get_details_error_info().expect("reason").reason,
        "LOG_TOO_SMALL"
    );
    let status = audit
        .get_inclusion_proof(v1::GetInclusionProofRequest {
            clinic_id: clinic.to_string(),
            record: Some(v1::get_inclusion_proof_request::Record::GlobalPosition(
                i64::MAX,
            )),
            tree_size: 0,
        })
        .await
        .expect_err("no such event");
    assert_eq!(
        status.get_details_error_info().expect("reason").reason,
        "NOT_YET_INDEXED"
    );
    let status = audit
        .get_checkpoint(v1::GetCheckpointRequest {
            clinic_id: Uuid::new_v4().to_string(),
            tree_size: 0,
        })
        .await
        .expect_err("another clinic");
    assert_eq!(status.code(), Code::PermissionDenied);
    harness.stop().await;
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
