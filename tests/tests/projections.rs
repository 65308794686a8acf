//! Projectors and the query API: the read models equal an independent oracle, survive
//! crashes, never miss or double-apply an event under concurrent writers, rebuild to the
//! same digest, share work by lease, and hide small groups.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Duration as Days, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_e2e::Harness;
use spineledger_e2e::oracle::{self, all_events};
use spineledger_e2e::requests::EpisodeScript;
use spineledger_projections::{FaultInjector, Projection, ProjectionError, Projector, Stage};
use spineledger_store::{ExpectedVersion, NewEvent, RecordedEvent, StreamKey};
use spineledger_testkit::TestDatabase;
use spineledger_tools::simulate::{self, Cohort};
use tonic::Code;

/// `clinics` clinics whose ids derive from the seed (the same seed, the same clinics).
fn cohort(clinics: usize, patients_per_clinic: usize, seed: u64) -> Cohort {
    Cohort {
        clinics: (0..clinics)
            .map(|index| {
                uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    format!("clinic-{seed}-{index}").as_bytes(),
                )
            })
            .collect(),
        patients_per_clinic,
        seed,
        start_date: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
        concurrency: 8,
    }
}

/// An integration token for the cohort's clinics, which the harness's own token grants
/// from now on too.
fn cohort_token(harness: &Harness, cohort: &Cohort) -> spineledger_api::client::BearerToken {
    for clinic in &cohort.clinics {
        harness.grant(*clinic);
    }
    harness.bearer(spineledger_auth::Role::Integration, &cohort.clinics)
}

async fn simulate_into(harness: &Harness, cohort: &Cohort) -> u64 {
    let token = cohort_token(harness, cohort);
    let report = simulate::run(harness.plain_channel().await, &token, cohort)
        .await
        .expect("simulate");
    assert_eq!(report.total_rejected(), 0, "{}", report.render());
    report.total_accepted()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_of_a_simulated_cohort_equal_the_oracle() {
    let harness = Harness::start().await;
    let mut appended = simulate_into(&harness, &cohort(5, 120, 11)).await;
    assert!(appended >= 10_000, "only {appended} events");
    // A later cohort, so that the cohort spans several months: statistics windows then
    // have whole months between partial ones.
    let later = Cohort {
        start_date: NaiveDate::from_ymd_opt(2026, 4, 20).expect("date"),
        ..cohort(2, 20, 12)
    };
    appended += simulate_into(&harness, &later).await;
    let db = harness.database();
    let events = all_events(
        db.projector_pool(),
        Some(usize::try_from(appended).expect("count")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
    oracle::assert_models_match_oracle(db.projector_pool(), &events).await;

    // The statistics API agrees with the oracle on the cohort's shape, over the episodes
    // of the clinic-months large enough to be released.
    let released = oracle::released_episodes(&events);
    let mut expected = oracle::expected_episodes(&events);
    let every = expected.len();
    expected.retain(|key, _| released.contains(key));
    assert!(
        expected.len() < every,
        "the cohort has a small clinic-month"
    );
    let mut stats = OutcomeStatisticsServiceClient::new(harness.channel().await);
    let response = stats
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest::default())
        .await
        .expect("statistics")
        .into_inner();
    let all = response
        .groups
        .first()
        .and_then(|g| g.statistics.clone())
        .expect("one group");
    assert_eq!(usize::try_from(all.episodes).expect("n"), expected.len());
    let goals_met = expected
        .values()
        .filter(|e| e.discharge_reason.as_deref() == Some("GoalsMet"))
        .count();
    let reported = all
        .discharges_by_reason
        .iter()
        .find(|c| c.value == "goals_met")
        .map(|c| c.count);
    assert_eq!(reported, Some(i64::try_from(goals_met).expect("n")));
    let ongoing = expected
        .values()
        .filter(|e| e.discharge_reason.is_none())
        .count();
    assert_eq!(all.ongoing, i64::try_from(ongoing).expect("n"));

    statistics_from_cells_equal_those_aggregated_from_episodes(&harness).await;
    harness.stop().await;
}

/// For every grouping (each subset of the dimensions) and windows of whole months,
/// bounded and open-ended, the statistics the query API computes from the pre-aggregated
/// cells equal those aggregated at query time from the episode rows of the same cohort,
/// released by the same rules (with the smallest minimum cell, so that every rule is at
/// work).
async fn statistics_from_cells_equal_those_aggregated_from_episodes(harness: &Harness) {
    use spineledger_projections::queries;
    use spineledger_readmodels::release::Months;
    use spineledger_readmodels::statistics::{Dimension, MinCell, aggregate, groups};

    let db = harness.database();
    let client = db.projector_pool().get().await.expect("connection");
    let episodes: Vec<spineledger_readmodels::EpisodeOutcome> = client
        .query("SELECT facts FROM outcome_episodes", &[])
        .await
        .expect("outcomes")
        .into_iter()
        .map(|row| serde_json::from_value(row.try_get(0).expect("column")).expect("facts"))
        .collect();
    let pool = db.store().pool();
    let clinics = queries::known_clinics(pool).await.expect("clinics");
    // Windows around the cohort's own months: bounded, open-ended and one month.
    let mut months: Vec<NaiveDate> = episodes
        .iter()
        .filter_map(spineledger_readmodels::EpisodeOutcome::evaluated_month)
        .collect();
    months.sort_unstable();
    months.dedup();
    assert!(months.len() >= 3, "the cohort spans months: {months:?}");
    let (first, middle, last) = (
        months[0],
        months[months.len() / 2],
        months[months.len() - 1],
    );
    let next = |month: NaiveDate| month.checked_add_months(chrono::Months::new(1));
    let windows = [
        Months::default(),
        Months {
            from: Some(first),
            to: next(middle),
        },
        Months {
            from: Some(middle),
            to: None,
        },
        Months {
            from: None,
            to: Some(middle),
        },
        Months {
            from: Some(middle),
            to: next(middle),
        },
        Months {
            from: next(first),
            to: Some(last),
        },
    ];
    let mut partial_groups = 0;
    for window in windows {
        let cohort: Vec<_> = episodes
            .iter()
            .filter(|e| window.contains(e.evaluated_month()))
            .cloned()
            .collect();
        assert!(!cohort.is_empty(), "the window {window:?} holds episodes");
        for mask in 0..(1_u32 << Dimension::ALL.len()) {
            let group_by: Vec<Dimension> = Dimension::ALL
                .into_iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, dimension)| dimension)
                .collect();
            let parts = queries::outcome_parts(pool, &clinics, window, &group_by)
                .await
                .expect("parts");
            let from_cells = groups(
                parts.parts.release(MinCell::SMALLEST),
                &group_by,
                MinCell::SMALLEST,
            );
            partial_groups += from_cells.iter().filter(|group| group.partial).count();
            assert_eq!(
                from_cells,
                aggregate(&cohort, &group_by, MinCell::SMALLEST),
                "grouped by {group_by:?} in {window:?}"
            );
        }
    }
    assert!(
        partial_groups > 0,
        "no part was withheld: the rules were not exercised"
    );
}

/// Registers a patient and records an evaluation (a new episode); returns the episode's
/// script and the global position of the evaluation.
async fn evaluated_episode(harness: &Harness) -> (EpisodeScript, i64) {
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    writes
        .register_patient(script.register_patient(Utc::now() - Days::days(2)))
        .await
        .expect("register");
    let written = writes
        .record_evaluation(script.evaluation(Utc::now() - Days::days(1)))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result");
    (script, written.global_position)
}

fn plan_request(script: &EpisodeScript, min_position: Option<i64>) -> v1::GetTreatmentPlanRequest {
    v1::GetTreatmentPlanRequest {
        clinic_id: script.clinic_id.to_string(),
        episode_id: script.episode_id.to_string(),
        min_position,
    }
}

/// Fails batches at random stages (a crash between apply and commit, after commit, …).
#[derive(Debug)]
struct RandomFaults(Mutex<StdRng>);

impl FaultInjector for RandomFaults {
    fn check(&self, stage: Stage) -> Result<(), ProjectionError> {
        let mut rng = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if rng.random_bool(0.3) {
            Err(ProjectionError::Injected(stage))
        } else {
            Ok(())
        }
    }
}

fn to_new_event(stored: &RecordedEvent) -> NewEvent {
    NewEvent {
        event_id: stored.event_id,
        event_type: stored.event_type.clone(),
        schema_version: stored.schema_version,
        payload: stored.payload.clone(),
        metadata: stored.metadata.clone(),
        occurred_at: stored.occurred_at,
        fingerprint: stored.fingerprint,
    }
}

/// Simulates a cohort on a throw-away server and returns its log, to be replayed.
async fn simulated_log(clinics: usize, patients: usize, seed: u64) -> Vec<RecordedEvent> {
    let source = Harness::start_at(Utc::now()).await;
    let appended = simulate_into(&source, &cohort(clinics, patients, seed)).await;
    let events = all_events(
        source.database().projector_pool(),
        Some(usize::try_from(appended).expect("n")),
    )
    .await;
    source.stop().await;
    events
}

/// Replays `events` into `db` with `writers` concurrent writers, each owning whole
/// streams (so per-stream order holds), in transactions of random size that are
/// sometimes held open before commit.
async fn replay_concurrently(
    db: &TestDatabase,
    events: &[RecordedEvent],
    writers: usize,
    seed: u64,
) {
    let mut by_writer: Vec<Vec<RecordedEvent>> = vec![Vec::new(); writers];
    for event in events {
        let owner = usize::from(event.stream_id.as_bytes().last().copied().unwrap_or(0)) % writers;
        by_writer[owner].push(event.clone());
    }
    let tasks: Vec<_> = by_writer
        .into_iter()
        .enumerate()
        .map(|(writer, mine)| {
            let store = db.store().clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed + writer as u64);
                let mut index = 0;
                while index < mine.len() {
                    let mut client = store.pool().get().await.expect("connection");
                    let transaction = client.transaction().await.expect("begin");
                    let size = rng.random_range(1..=8);
                    for stored in mine.iter().skip(index).take(size) {
                        let stream = StreamKey::new(stored.clinic_id, stored.stream_id.clone());
                        spineledger_store::append_in(
                            &transaction,
                            &stream,
                            ExpectedVersion::Any,
                            &[to_new_event(stored)],
                        )
                        .await
                        .expect("replay append");
                    }
                    index += size;
                    let hold = match rng.random_range(0..100) {
                        0..80 => 0,
                        80..97 => rng.random_range(1..20),
                        _ => rng.random_range(100..400),
                    };
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    transaction.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_long_and_short_writers_while_projecting_miss_nothing_and_apply_nothing_twice() {
    let log = simulated_log(3, 60, 21).await;
    let db = TestDatabase::create().await;
    let projector = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        Harness::projector_config(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run(async {
        let _ = stopped.await;
    }));
    replay_concurrently(&db, &log, 8, 5).await;
    let events = all_events(db.projector_pool(), Some(log.len())).await;
    assert_eq!(events.len(), log.len());
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
    oracle::assert_models_match_oracle(db.projector_pool(), &events).await;
    let _ = stop.send(());
    running.await.expect("task").expect("projector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_and_failing_at_random_points_still_equals_the_oracle() {
    let log = simulated_log(2, 60, 31).await;
    let db = TestDatabase::create().await;
    let (first, rest) = log.split_at(log.len() / 2);
    replay_concurrently(&db, first, 4, 7).await;

    let mut config = Harness::projector_config();
    config.lease_ttl = Duration::from_secs(1);
    config.batch_size = 37;
    let mut rng = StdRng::seed_from_u64(99);
    let writer = {
        let db_store = db.store().clone();
        let rest = rest.to_vec();
        tokio::spawn(async move {
            for stored in rest {
                let stream = StreamKey::new(stored.clinic_id, stored.stream_id.clone());
                db_store
                    .append(&stream, ExpectedVersion::Any, &[to_new_event(&stored)])
                    .await
                    .expect("append");
            }
        })
    };
    // Kill -9 style: abort the worker at a random moment (no lease release, transactions
    // cut wherever they are), with batches also failing at random stages meanwhile.
    for round in 0..8_u64 {
        let faults = Arc::new(RandomFaults(Mutex::new(StdRng::seed_from_u64(round))));
        let projector = Projector::new(
            db.projector_pool().clone(),
            db.projector_config(),
            config.clone(),
        )
        .with_faults(faults);
        let task = tokio::spawn(projector.run(std::future::pending()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        task.abort();
        let _ = task.await;
    }
    writer.await.expect("writer");

    let events = all_events(db.projector_pool(), Some(log.len())).await;
    let survivor = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        config.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(survivor.run(async {
        let _ = stopped.await;
    }));
    oracle::wait_until_projected(db.projector_pool(), &config, &events).await;
    oracle::assert_models_match_oracle(db.projector_pool(), &events).await;
    let _ = stop.send(());
    running.await.expect("task").expect("projector");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuilt_model_equals_the_incrementally_built_one() {
    let harness = Harness::start().await;
    let appended = simulate_into(&harness, &cohort(3, 40, 41)).await;
    let db = harness.database();
    let events = all_events(
        db.projector_pool(),
        Some(usize::try_from(appended).expect("n")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;

    // Rebuild while clinics keep writing and the live projector keeps projecting.
    let late = cohort(2, 20, 42);
    let token = cohort_token(&harness, &late);
    let channel = harness.plain_channel().await;
    let writing = tokio::spawn(async move { simulate::run(channel, &token, &late).await });
    // Both read models from one read of the log (as `rebuild --all` does).
    let owner = spineledger_store::pool(harness.database().config(), 2).expect("owner pool");
    let reports = spineledger_projections::rebuild::rebuild_all(
        &owner,
        &Projection::ALL,
        Harness::projector_config().shards,
        500,
    )
    .await
    .expect("rebuild");
    assert_eq!(reports.len(), Projection::ALL.len());
    // The bulk phase reads episode streams only (patients' streams feed no read model),
    // so it covers at least the episode events appended before it; the catch-up counts
    // whatever the late writers added meanwhile.
    let episode_events = events
        .iter()
        .filter(|event| event.stream_id.starts_with("episode-"))
        .count();
    let episode_events = u64::try_from(episode_events).expect("n");
    for report in reports {
        assert!(report.equal(), "{report:?}");
        assert!(report.events >= episode_events, "{report:?}");
    }
    owner.close();
    let more = writing.await.expect("writer").expect("simulate");
    assert_eq!(more.total_rejected(), 0);
    let events = all_events(
        db.projector_pool(),
        Some(events.len() + usize::try_from(more.total_accepted()).expect("n")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
    // The swapped-in tables keep serving and keep being projected into.
    oracle::assert_models_match_oracle(db.projector_pool(), &events).await;
    let (script, position) = evaluated_episode(&harness).await;
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let plan = plans
        .get_treatment_plan(plan_request(&script, Some(position)))
        .await
        .expect("plan after rebuild")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(plan.phase(), v1::PlanPhase::AwaitingPlan);
    harness.stop().await;
}

#[tokio::test]
async fn a_rebuild_that_fails_early_releases_its_lock() {
    let db = TestDatabase::create().await;
    let owner = spineledger_store::pool(db.config(), 2).expect("owner pool");
    // A view where the rebuild's fresh table goes makes its first step fail.
    owner
        .get()
        .await
        .expect("connection")
        .batch_execute("CREATE VIEW treatment_plans_rebuild AS SELECT 1 AS one")
        .await
        .expect("view");
    let failed = spineledger_projections::rebuild::rebuild(
        &owner,
        Projection::TreatmentPlans,
        Harness::projector_config().shards,
        500,
    )
    .await
    .expect_err("the view is in the way");
    assert!(
        !matches!(failed, ProjectionError::RebuildInProgress(_)),
        "{failed:?}"
    );
    let client = owner.get().await.expect("connection");
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("locks")
        .try_get(0)
        .expect("count");
    assert_eq!(held, 0, "no session still holds the rebuild lock");
    client
        .batch_execute("DROP VIEW treatment_plans_rebuild")
        .await
        .expect("drop the view");
    drop(client);
    let report = spineledger_projections::rebuild::rebuild(
        &owner,
        Projection::TreatmentPlans,
        Harness::projector_config().shards,
        500,
    )
    .await
    .expect("the lock was released: a second rebuild runs");
    assert!(report.equal(), "{report:?}");
    owner.close();
}

async fn leases_by_owner(db: &TestDatabase) -> Vec<(uuid::Uuid, i64)> {
    let client = db.owner_client().await;
    client
        .query(
            "SELECT owner, count(*) FROM projection_leases GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .expect("leases")
        .into_iter()
        .map(|row| {
            (
                row.try_get(0).expect("column"),
                row.try_get(1).expect("column"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_leases_and_a_dead_workers_leases_are_taken_over() {
    let db = TestDatabase::create().await;
    let mut config = Harness::projector_config();
    config.lease_ttl = Duration::from_secs(3);
    let total = i64::from(config.shards) * i64::try_from(config.projections.len()).expect("n");
    let first = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        config.clone(),
    );
    let second = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        config.clone(),
    );
    let (first_owner, second_owner) = (first.owner(), second.owner());
    let first_task = tokio::spawn(first.run(std::future::pending()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second_task = tokio::spawn(second.run(async {
        let _ = stopped.await;
    }));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leases = leases_by_owner(&db).await;
        let shared = leases.len() == 2 && leases.iter().all(|(_, n)| *n == total / 2);
        if shared {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work not shared: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    first_task.abort(); // dies without releasing anything
    let died = tokio::time::Instant::now();
    loop {
        let leases = leases_by_owner(&db).await;
        if leases == [(second_owner, total)] {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(30),
            "not taken over: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "leases of the dead worker {first_owner} taken over in {:?}",
        died.elapsed()
    );

    // The survivor projects what is written now.
    let stream = StreamKey::new(
        uuid::Uuid::new_v4(),
        format!("episode-{}", uuid::Uuid::new_v4()),
    );
    let log = simulated_log(1, 1, 51).await;
    let first_episode: Vec<&RecordedEvent> = log
        .iter()
        .filter(|e| e.stream_id.starts_with("episode-"))
        .collect();
    for stored in &first_episode {
        let mut event = to_new_event(stored);
        event.event_id = uuid::Uuid::new_v4();
        db.store()
            .append(&stream, ExpectedVersion::Any, &[event])
            .await
            .expect("append");
    }
    let events = all_events(db.projector_pool(), Some(first_episode.len())).await;
    oracle::wait_until_projected(db.projector_pool(), &config, &events).await;
    let _ = stop.send(());
    second_task.await.expect("task").expect("projector");
}

/// Evaluates a new patient of `clinic` at `at` with back pain `pain_back`.
async fn evaluate_at(
    writes: &mut ClinicalRecordsServiceClient<spineledger_e2e::AuthChannel>,
    clinic: uuid::Uuid,
    at: chrono::DateTime<Utc>,
    pain_back: i32,
) {
    let script = EpisodeScript {
        clinic_id: clinic,
        ..EpisodeScript::new()
    };
    writes
        .register_patient(script.register_patient(at - Days::days(1)))
        .await
        .expect("register");
    let mut evaluation = script.evaluation(at);
    evaluation.pain_back = pain_back;
    writes
        .record_evaluation(evaluation)
        .await
        .expect("evaluation");
}

/// The differencing the release rules stop, tried through the API on evaluations placed
/// by hand (k = 8): clinic A has nine episodes evaluated in March 2026 (back pain 7) and
/// one in April (back pain 1); clinic B three in March (back pain 1). Whatever windows,
/// clinic sets and groupings are asked for, the April patient's and clinic B's baseline
/// pain never show, nor a group's size below 8, nor the key of a group with nothing
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statistics_cannot_be_differenced_by_window_clinic_set_or_grouping() {
    let harness = Harness::start().await;
    let (a, b) = (harness.clinic(), harness.clinic());
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let day = |month, day| {
        NaiveDate::from_ymd_opt(2026, month, day)
            .and_then(|date| date.and_hms_opt(9, 30, 0))
            .expect("date")
            .and_utc()
    };
    for n in 0..9 {
        evaluate_at(&mut writes, a, day(3, 2 + n), 7).await;
    }
    evaluate_at(&mut writes, a, day(4, 14), 1).await;
    for n in 0..3 {
        evaluate_at(&mut writes, b, day(3, 20 + n), 1).await;
    }
    let db = harness.database();
    let events = all_events(db.projector_pool(), Some(26)).await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;

    let mut stats = OutcomeStatisticsServiceClient::new(harness.channel().await);
    let month = |month| Some(day(month, 1) - Days::minutes(9 * 60 + 30));
    let ask = |clinics: &[uuid::Uuid],
               group_by: &[v1::StatisticsDimension],
               from: Option<chrono::DateTime<Utc>>,
               to: Option<chrono::DateTime<Utc>>| {
        v1::GetOutcomeStatisticsRequest {
            clinic_ids: clinics.iter().map(ToString::to_string).collect(),
            group_by: group_by.iter().map(|d| *d as i32).collect(),
            evaluated_from: from.and_then(spineledger_e2e::requests::timestamp),
            evaluated_to: to.and_then(spineledger_e2e::requests::timestamp),
            min_position: None,
            as_of: None,
        }
    };
    // (episodes, mean baseline NRS) of each group, by its key's values.
    let mut figures = async |request| {
        let response = stats
            .get_outcome_statistics(request)
            .await
            .expect("statistics")
            .into_inner();
        assert_eq!(response.min_cell_size, 8);
        response
            .groups
            .into_iter()
            .map(|group| {
                let key: Vec<String> = group.key.iter().map(|k| k.value.clone()).collect();
                let figures = group.statistics.map(|s| {
                    let baseline = s.baseline_nrs.expect("nine baselines").mean;
                    (s.episodes, baseline)
                });
                assert_eq!(group.suppressed, figures.is_none());
                assert_eq!(group.episodes, figures.map(|(n, _)| n));
                (key, figures)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let none: Vec<String> = Vec::new();
    let nine = Some((9, 7.0));
    use v1::StatisticsDimension as D;

    // Windows: March alone, March and April, April alone, and no window at all.
    let march = figures(ask(&[a], &[], month(3), month(4))).await;
    assert_eq!(march[&none], nine);
    let spring = figures(ask(&[a], &[], month(3), month(5))).await;
    assert_eq!(spring[&none], nine, "April's one episode is withheld");
    let april = figures(ask(&[a], &[], month(4), month(5))).await;
    assert!(
        april.is_empty(),
        "April alone is not listed at all: {april:?}"
    );
    let ever = figures(ask(&[a], &[], None, None)).await;
    assert_eq!(ever[&none], nine);

    // Clinic sets: B's three never add to A's nine, together or grouped by clinic.
    let both = figures(ask(&[a, b], &[], month(3), month(4))).await;
    assert_eq!(both[&none], nine);
    let by_clinic = figures(ask(&[a, b], &[D::Clinic], None, None)).await;
    assert_eq!(by_clinic[&vec![a.to_string()]], nine);
    assert_eq!(by_clinic.len(), 1, "B is not even listed: {by_clinic:?}");
    let every_granted = figures(ask(&[], &[], None, None)).await;
    assert_eq!(every_granted[&none], nine);

    // Groupings: every dimension alone and with the clinic shows the same nine.
    for dimension in [
        D::Diagnosis,
        D::InitialSessions,
        D::FrequencyPhase,
        D::AdherenceBand,
        D::AgeBand,
    ] {
        let grouped = figures(ask(&[a, b], &[D::Clinic, dimension], None, None)).await;
        let shown: Vec<_> = grouped.values().filter_map(|figures| *figures).collect();
        assert_eq!(
            shown,
            [(9, 7.0)],
            "grouped by clinic and {dimension:?}: {grouped:?}"
        );
    }

    // A window that does not start on a month boundary is refused, field named.
    let refused = stats
        .get_outcome_statistics(ask(&[a], &[], month(3), Some(day(4, 1))))
        .await
        .expect_err("a bound inside a month");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let violations = &details
        .bad_request()
        .expect("field violations")
        .field_violations;
    assert_eq!(violations[0].field, "evaluated_to");

    let bad = stats
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            group_by: vec![v1::StatisticsDimension::Unspecified as i32],
            clinic_ids: vec!["not-a-uuid".into()],
            ..Default::default()
        })
        .await
        .expect_err("invalid request");
    assert_eq!(bad.code(), Code::InvalidArgument);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_read_with_min_position_shows_the_write_just_made() {
    let harness = Harness::start().await;
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let start = Utc::now() - Days::days(20);
    writes
        .register_patient(script.register_patient(start))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(start))
        .await
        .expect("evaluation");
    writes
        .start_treatment_plan(script.plan(start + Days::days(1)))
        .await
        .expect("plan");
    for (day, tolerance) in [(2, v1::Tolerance::Good), (6, v1::Tolerance::Discomfort)] {
        let written = writes
            .record_session(script.session(start + Days::days(day), 200.0, tolerance))
            .await
            .expect("session")
            .into_inner()
            .result
            .expect("result");
        let plan = plans
            .get_treatment_plan(plan_request(&script, Some(written.global_position)))
            .await
            .expect("plan")
            .into_inner()
            .plan
            .expect("plan");
        assert_eq!(
            plan.recent_tolerances.last().copied(),
            Some(tolerance as i32)
        );
    }
    let plan = plans
        .get_treatment_plan(plan_request(&script, None))
        .await
        .expect("plan")
        .into_inner()
        .plan
        .expect("plan");
    assert_eq!(plan.phase(), v1::PlanPhase::Initial);
    assert_eq!(plan.sessions_total, 2);
    assert_eq!(plan.sessions_planned_in_phase, Some(5));
    // 5 sessions over 3 weeks: one every 4.2 days; 20 days after the start, all 5 were due.
    assert_eq!(plan.expected_sessions_by_today, Some(5));
    assert_eq!(plan.pacing, Some(-3));
    let flags = plan.flags.expect("flags");
    assert!(flags.overdue && flags.under_scheduled, "{flags:?}");

    // Another clinic's position is not waited for, nor is its plan visible.
    let other = plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: harness.clinic().to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: None,
        })
        .await
        .expect_err("other clinic");
    assert_eq!(other.code(), Code::NotFound);
    harness.stop().await;
}

#[tokio::test]
async fn a_read_waiting_for_a_position_the_projection_never_reaches_is_unavailable() {
    // Checkpoints exist but no projector runs: the wait times out.
    let harness = Harness::start_with(Utc::now(), Duration::from_millis(500)).await;
    spineledger_projections::ensure_checkpoints(
        harness.database().projector_pool(),
        &Harness::projector_config(),
    )
    .await
    .expect("checkpoints");
    let (script, position) = evaluated_episode(&harness).await;
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let status = plans
        .get_treatment_plan(plan_request(&script, Some(position)))
        .await
        .expect_err("not projected");
    assert_eq!(status.code(), Code::Unavailable);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_listed_per_clinic_with_filters_and_pages() {
    let harness = Harness::start().await;
    let appended = simulate_into(&harness, &cohort(2, 30, 71)).await;
    let db = harness.database();
    let events = all_events(
        db.projector_pool(),
        Some(usize::try_from(appended).expect("n")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
    let expected = oracle::expected_episodes(&events);
    let clinic = expected.keys().next().expect("an episode").0;
    let in_clinic: Vec<_> = expected.iter().filter(|((c, _), _)| *c == clinic).collect();

    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = plans
            .list_treatment_plans(v1::ListTreatmentPlansRequest {
                clinic_id: clinic.to_string(),
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.plans.len() <= 7);
        assert!(page.plans.iter().all(|p| p.clinic_id == clinic.to_string()));
        listed.extend(page.plans.into_iter().map(|p| p.episode_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed.len(), in_clinic.len());

    let discharged = plans
        .list_treatment_plans(v1::ListTreatmentPlansRequest {
            clinic_id: clinic.to_string(),
            phase: v1::PlanPhase::Discharged as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    let want = in_clinic
        .iter()
        .filter(|(_, e)| e.phase == "discharged")
        .count();
    assert_eq!(discharged.plans.len(), want);
    assert!(
        discharged
            .plans
            .iter()
            .all(|p| p.phase() == v1::PlanPhase::Discharged)
    );

    // Every simulated fact lies months back: every open plan with a cadence is overdue.
    let overdue = plans
        .list_treatment_plans(v1::ListTreatmentPlansRequest {
            clinic_id: clinic.to_string(),
            overdue: Some(true),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("overdue")
        .into_inner();
    assert!(
        overdue
            .plans
            .iter()
            .all(|p| p.flags.is_some_and(|f| f.overdue))
    );
    let bad = plans
        .list_treatment_plans(v1::ListTreatmentPlansRequest {
            clinic_id: clinic.to_string(),
            page_size: 501,
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    harness.stop().await;
}

#[tokio::test]
async fn a_worker_configured_with_another_shard_count_refuses_to_start() {
    let db = TestDatabase::create().await;
    spineledger_projections::ensure_checkpoints(db.projector_pool(), &Harness::projector_config())
        .await
        .expect("checkpoints");
    let mut config = Harness::projector_config();
    config.shards = 2;
    let projector = Projector::new(db.projector_pool().clone(), db.projector_config(), config);
    let refused = projector.run(std::future::pending()).await;
    assert!(
        matches!(
            refused,
            Err(ProjectionError::ShardCountMismatch {
                stored: 4,
                configured: 2,
                ..
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_idle_shard_moves_its_checkpoint_past_other_shards_events() {
    let db = TestDatabase::create().await;
    // The leases are a precondition here, not what is tested, and nothing renews them
    // between the hand-run batches below: a TTL no stall of a loaded machine reaches.
    // (Expiry and takeover are tested by `two_workers_share_the_leases_...`.)
    let config = spineledger_projections::ProjectorConfig {
        lease_ttl: Duration::from_secs(300),
        ..Harness::projector_config()
    };
    let projector = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        config.clone(),
    );
    spineledger_projections::ensure_checkpoints(db.projector_pool(), &config)
        .await
        .expect("checkpoints");
    // Patient streams of clinics that all fall in shard 0, spanning more positions than an
    // idle shard tolerates rescanning.
    let mut last = None;
    let count = 1001_usize;
    for n in 0..count {
        let mut bytes = *uuid::Uuid::new_v4().as_bytes();
        bytes[15] = u8::try_from(n % 64).expect("small") * 4;
        let clinic = uuid::Uuid::from_bytes(bytes);
        let stream = StreamKey::new(clinic, format!("patient-{}", uuid::Uuid::new_v4()));
        let payload = serde_json::json!({ "n": n });
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: "PatientRegistered".into(),
            schema_version: 1,
            fingerprint: spineledger_store::Fingerprint::of(&payload).expect("fingerprint"),
            payload,
            metadata: spineledger_store::EventMetadata::default(),
            occurred_at: None,
        };
        last = Some(
            db.store()
                .append(&stream, ExpectedVersion::Any, &[event])
                .await
                .expect("append"),
        );
    }
    let last = last.expect("appended").events[0].cursor;
    let events = all_events(db.projector_pool(), Some(count)).await;
    assert_eq!(events.last().map(|e| e.cursor), Some(last));
    // Taken after the appends, however long they took, and just before the batches.
    projector.balance_leases().await.expect("leases");
    let idle = projector
        .run_batch(Projection::TreatmentPlans, 1)
        .await
        .expect("batch");
    assert_eq!(
        (idle.events, idle.cursor),
        (0, last),
        "the idle shard skips ahead"
    );
    let again = projector
        .run_batch(Projection::TreatmentPlans, 1)
        .await
        .expect("batch");
    assert_eq!((again.events, again.cursor), (0, last));
    let busy = projector
        .run_batch(Projection::TreatmentPlans, 0)
        .await
        .expect("batch");
    assert_eq!(
        busy.events,
        config.batch_size.min(count),
        "shard 0 reads its own events"
    );
}

/// A patient-stream event of `clinic` (the read models pass over patient streams).
fn patient_event(n: usize) -> NewEvent {
    let payload = serde_json::json!({ "n": n });
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "PatientRegistered".into(),
        schema_version: 1,
        fingerprint: spineledger_store::Fingerprint::of(&payload).expect("fingerprint"),
        payload,
        metadata: spineledger_store::EventMetadata::default(),
        occurred_at: None,
    }
}

/// A clinic id whose last byte puts it in `shard` of the default layout.
fn clinic_in_shard(shard: u8) -> uuid::Uuid {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[15] = shard;
    uuid::Uuid::from_bytes(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_does_not_decode_stops_only_its_own_shard() {
    let db = TestDatabase::create().await;
    let config = Harness::projector_config();
    let projector = Projector::new(
        db.projector_pool().clone(),
        db.projector_config(),
        config.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run(async {
        let _ = stopped.await;
    }));
    let (bad_clinic, good_clinic) = (clinic_in_shard(0), clinic_in_shard(1));
    let first = db
        .store()
        .append(
            &StreamKey::new(good_clinic, format!("patient-{}", uuid::Uuid::new_v4())),
            ExpectedVersion::Any,
            &[patient_event(0)],
        )
        .await
        .expect("append");
    let settled = all_events(db.projector_pool(), Some(1)).await;
    oracle::wait_until_projected(db.projector_pool(), &config, &settled).await;
    assert!(!first.events.is_empty());

    // A row no reader can decode (its metadata's actor is not text), written past the
    // service by the tables' owner, in shard 0.
    let owner = db.owner_client().await;
    let stream = format!("patient-{}", uuid::Uuid::new_v4());
    owner
        .batch_execute(&format!(
            "INSERT INTO streams (clinic_id, stream_id, version) VALUES ('{bad_clinic}', '{stream}', 1); \
             INSERT INTO events (clinic_id, stream_id, version, event_id, event_type, \
                 schema_version, payload, metadata, fingerprint) \
             VALUES ('{bad_clinic}', '{stream}', 1, gen_random_uuid(), 'PatientRegistered', 1, \
                 '{{}}', '{{\"actor\": 5}}', decode(repeat('00', 32), 'hex'))"
        ))
        .await
        .expect("the owner writes an undecodable event");

    // Shard 1 goes on: its later events are projected though the log holds the bad one.
    let mut later = Vec::new();
    for n in 1..=5 {
        let stream = StreamKey::new(good_clinic, format!("patient-{}", uuid::Uuid::new_v4()));
        later.push(
            db.store()
                .append(&stream, ExpectedVersion::Any, &[patient_event(n)])
                .await
                .expect("append")
                .events[0]
                .cursor,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = db.projector_pool().get().await.expect("connection");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let last = *later.last().expect("appended");
    for projection in [Projection::TreatmentPlans, Projection::OutcomeStatistics] {
        loop {
            let reached = spineledger_projections::checkpoint(&client, projection, 1)
                .await
                .expect("checkpoint");
            if reached >= last {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} shard 1 stopped at {reached:?}, short of {last:?}",
                projection.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Shard 0 stops before the bad event: it is never skipped.
    let stuck = spineledger_projections::checkpoint(&client, Projection::TreatmentPlans, 0)
        .await
        .expect("checkpoint");
    let bad: (i64, i64) = {
        let row = owner
            .query_one(
                "SELECT xid::text::bigint, position FROM events WHERE clinic_id = $1",
                &[&bad_clinic],
            )
            .await
            .expect("bad event");
        (row.get(0), row.get(1))
    };
    let bad = spineledger_store::GlobalCursor {
        xid: u64::try_from(bad.0).expect("xid"),
        position: bad.1,
    };
    assert!(
        stuck < bad,
        "shard 0 must not pass the event it cannot read"
    );
    let _ = stop.send(());
    running.await.expect("task").expect("projector");
}
