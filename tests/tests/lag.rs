//! The projection lag as the metrics measure it, from outside the projectors: with no
//! projector running it grows, in time, for exactly the shard that has the unapplied
//! events; once a projector has caught up it is zero.

use chrono::{Duration, Utc};
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_e2e::Harness;
use spineledger_projections::lag::{ShardLag, sample};
use spineledger_store::ClinicShard;

fn of<'a>(lags: &'a [ShardLag], projection: &str, shard: i32) -> &'a ShardLag {
    lags.iter()
        .find(|lag| lag.projection == projection && lag.shard == shard)
        .unwrap_or_else(|| panic!("no {projection} shard {shard} in {lags:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_that_does_not_run_shows_a_growing_lag() {
    // No projector yet: the events wait.
    let mut harness = Harness::start_at(Utc::now()).await;
    let db = harness.database();
    let shards = Harness::projector_config().shards;
    // The checkpoints a projector would have left before it stopped: at the beginning.
    let owner = db.owner_client().await;
    for shard in 0..i32::from(shards) {
        owner
            .execute(
                "INSERT INTO projection_checkpoints (projection, shard, shard_count) \
                 VALUES ('outcome_statistics', $1, $2)",
                &[&shard, &i32::from(shards)],
            )
            .await
            .expect("checkpoint");
    }
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let at = Utc::now() - Duration::days(1);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation");
    let shard = i32::from(ClinicShard::of(script.clinic_id, shards).index());

    let first = sample(db.projector_pool()).await.expect("sample");
    assert_eq!(of(&first, "outcome_statistics", shard).events_behind, 2);
    for other in (0..i32::from(shards)).filter(|s| *s != shard) {
        let lag = of(&first, "outcome_statistics", other);
        assert_eq!((lag.events_behind, lag.lag), (0, std::time::Duration::ZERO));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = sample(db.projector_pool()).await.expect("sample");
    let (before, after) = (
        of(&first, "outcome_statistics", shard).lag,
        of(&later, "outcome_statistics", shard).lag,
    );
    assert!(
        after >= before + std::time::Duration::from_secs(1),
        "{before:?} then {after:?}: a stuck projector's lag grows"
    );

    // A projector catches up: nothing behind.
    harness.start_projector();
    let db = harness.database();
    let events = spineledger_e2e::oracle::all_events(db.projector_pool(), Some(2)).await;
    spineledger_e2e::oracle::wait_until_projected(
        db.projector_pool(),
        &Harness::projector_config(),
        &events,
    )
    .await;
    let caught_up = sample(db.projector_pool()).await.expect("sample");
    let lag = of(&caught_up, "outcome_statistics", shard);
    assert_eq!((lag.events_behind, lag.lag), (0, std::time::Duration::ZERO));
    harness.stop().await;
}
