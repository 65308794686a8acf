//! The `analytics` schema, used as an analyst's own tool would: plain SQL, logged in as
//! `spineledger_analyst`. It shows the clinics granted to the login and the API's
//! figures for them, and refuses everything else.

use chrono::NaiveDate;
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_e2e::Harness;
use spineledger_e2e::oracle::{self, all_events};
use spineledger_tools::simulate::{self, Cohort};
use uuid::Uuid;

/// Simulates `patients` patients of a new clinic; returns the clinic and the events
/// appended.
async fn clinic_with_patients(harness: &Harness, patients: usize, seed: u64) -> (Uuid, u64) {
    let clinic = harness.clinic();
    let cohort = Cohort {
        clinics: vec![clinic],
        patients_per_clinic: patients,
        seed,
        start_date: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
        concurrency: 8,
    };
    let token = harness.bearer(spineledger_auth::Role::Integration, &cohort.clinics);
    let report = simulate::run(harness.plain_channel().await, &token, &cohort)
        .await
        .expect("simulate");
    assert_eq!(report.total_rejected(), 0, "{}", report.render());
    (clinic, report.total_accepted())
}

/// The analyst's login, allowed to log in (trust authentication here; a password
/// elsewhere) and granted `clinics`.
async fn analyst_of(
    harness: &Harness,
    clinics: &[Uuid],
) -> spineledger_store::tokio_postgres::Client {
    let db = harness.database();
    let owner = db.owner_client().await;
    owner
        // Tests in parallel may race on the cluster-wide role: once is enough.
        .batch_execute(&format!(
            "DO $$ BEGIN \
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}' \
                                AND rolcanlogin) THEN ALTER ROLE {role} LOGIN; END IF; \
             EXCEPTION WHEN internal_error THEN NULL; END $$",
            role = spineledger_store::ANALYST_ROLE
        ))
        .await
        .expect("login");
    for clinic in clinics {
        owner
            .execute(
                "INSERT INTO analyst_grants (login, clinic_id) VALUES ($1, $2)",
                &[&spineledger_store::ANALYST_ROLE, clinic],
            )
            .await
            .expect("grant");
    }
    spineledger_store::connect(&spineledger_store::as_role(
        db.config(),
        spineledger_store::ANALYST_ROLE,
    ))
    .await
    .expect("the analyst logs in")
}

/// An episode without a plan is `no_plan` both by initial sessions and by frequency
/// phase, and has no sessions, so it adds nothing to missed sessions, adverse events or
/// completed initial phases. One clinic-month, k = 8: ten episodes without a plan, three
/// planned for 4 initial sessions, twenty-seven for 6. By initial sessions, `4` is
/// withheld; were `no_plan` (the smallest other part) withheld with it, the total minus
/// `6` would give the three's session counts, so `6` goes with it instead. By frequency
/// phase nothing is small. The API and SQL agree, part by part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_plan_never_stands_in_for_a_small_plan_part() {
    use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
    let harness = Harness::start().await;
    let clinic = harness.clinic();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let day = |n: i64| {
        NaiveDate::from_ymd_opt(2026, 3, 2)
            .and_then(|date| date.and_hms_opt(9, 0, 0))
            .expect("date")
            .and_utc()
            + chrono::Duration::hours(n)
    };
    let mut appended = 0;
    for (n, sessions) in (0..40).map(|n| {
        (
            n,
            [None, Some(4), Some(6)][usize::from(n >= 10) + usize::from(n >= 13)],
        )
    }) {
        let script = spineledger_e2e::requests::EpisodeScript {
            clinic_id: clinic,
            ..spineledger_e2e::requests::EpisodeScript::new()
        };
        writes
            .register_patient(script.register_patient(day(n)))
            .await
            .expect("register");
        writes
            .record_evaluation(script.evaluation(day(n)))
            .await
            .expect("evaluation");
        appended += 2;
        if let Some(sessions) = sessions {
            let mut plan = script.plan(day(n) + chrono::Duration::minutes(30));
            plan.initial_sessions = sessions;
            writes.start_treatment_plan(plan).await.expect("plan");
            appended += 1;
        }
    }
    let db = harness.database();
    let events = all_events(db.projector_pool(), Some(appended)).await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
    let analyst = analyst_of(&harness, &[clinic]).await;
    let mut api = OutcomeStatisticsServiceClient::new(harness.channel().await);
    for (name, dimension, expected) in [
        (
            "initial_sessions",
            v1::StatisticsDimension::InitialSessions,
            vec![("no_plan".to_owned(), 10)],
        ),
        (
            "frequency_phase",
            v1::StatisticsDimension::FrequencyPhase,
            vec![("initial_only".to_owned(), 30), ("no_plan".to_owned(), 10)],
        ),
        ("none", v1::StatisticsDimension::Unspecified, vec![]),
    ] {
        let group_by = if name == "none" {
            vec![]
        } else {
            vec![dimension as i32]
        };
        let from_api: Vec<(String, i64)> = api
            .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
                clinic_ids: vec![clinic.to_string()],
                group_by,
                ..Default::default()
            })
            .await
            .expect("statistics")
            .into_inner()
            .groups
            .iter()
            .map(|group| {
                (
                    group
                        .key
                        .first()
                        .map(|key| key.value.clone())
                        .unwrap_or_default(),
                    group.episodes.expect("shown"),
                )
            })
            .collect();
        let from_sql: Vec<(String, i64)> = analyst
            .query(
                "SELECT coalesce(value, ''), episodes FROM analytics.outcome_statistics($1)",
                &[&name],
            )
            .await
            .expect("outcome_statistics")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(from_sql, from_api, "{name}");
        if name == "none" {
            assert_eq!(from_api, [(String::new(), 40)]);
        } else {
            assert_eq!(from_api, expected, "{name}");
        }
    }
    drop(analyst);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analyst_login_sees_the_released_statistics_of_its_clinics_and_nothing_else() {
    let harness = Harness::start().await;
    let (granted, first) = clinic_with_patients(&harness, 60, 71).await;
    let (other, second) = clinic_with_patients(&harness, 30, 72).await;
    let db = harness.database();
    let events = all_events(
        db.projector_pool(),
        Some(usize::try_from(first + second).expect("n")),
    )
    .await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;

    // The operator's two steps: let the role log in and grant it a clinic.
    let analyst = analyst_of(&harness, &[granted]).await;

    // Only the granted clinic, only released parts (none under k = 8 episodes).
    let rows = analyst
        .query(
            "SELECT DISTINCT clinic_id, min(episodes) OVER () \
             FROM analytics.monthly_outcomes",
            &[],
        )
        .await
        .expect("monthly outcomes");
    assert!(!rows.is_empty(), "the granted clinic has released parts");
    for row in &rows {
        assert_eq!(row.get::<_, Uuid>(0), granted);
        assert!(row.get::<_, i64>(1) >= 8);
    }
    let definitions: i64 = analyst
        .query_one("SELECT count(*) FROM analytics.definitions", &[])
        .await
        .expect("definitions")
        .get(0);
    assert!(definitions >= 10);

    // The function gives the API's figures, for no grouping and by each dimension, by
    // clinic or not, for the whole history and for whole months.
    let mut api = OutcomeStatisticsServiceClient::new(harness.channel().await);
    use v1::StatisticsDimension as D;
    let january = NaiveDate::from_ymd_opt(2026, 1, 1);
    let february = NaiveDate::from_ymd_opt(2026, 2, 1);
    let windows = [(None, None), (january, february), (february, None)];
    let dimensions = [
        ("none", None),
        ("diagnosis", Some(D::Diagnosis)),
        ("initial_sessions", Some(D::InitialSessions)),
        ("frequency_phase", Some(D::FrequencyPhase)),
        ("adherence_band", Some(D::AdherenceBand)),
        ("age_band", Some(D::AgeBand)),
    ];
    let mut compared = 0;
    for (name, dimension) in dimensions {
        for (from, to) in windows {
            let at = |month: Option<NaiveDate>| {
                month.and_then(|m| {
                    spineledger_e2e::requests::timestamp(
                        m.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
                    )
                })
            };
            let response = api
                .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
                    clinic_ids: vec![granted.to_string()],
                    group_by: dimension.iter().map(|d| *d as i32).collect(),
                    evaluated_from: at(from),
                    evaluated_to: at(to),
                    min_position: None,
                    as_of: None,
                })
                .await
                .expect("statistics")
                .into_inner();
            let from_api: Vec<_> = response
                .groups
                .iter()
                .map(|group| {
                    let statistics = group.statistics.as_ref();
                    (
                        group.key.first().map(|key| key.value.clone()),
                        group.suppressed,
                        group.episodes,
                        statistics.and_then(|s| s.baseline_nrs.map(|m| (m.n, m.mean))),
                        statistics.and_then(|s| s.odi_change_discharge.map(|m| (m.n, m.mean))),
                        statistics.and_then(|s| s.nrs_responders.map(|r| (r.count, r.denominator))),
                        statistics.map(|s| (s.drop_out, s.ongoing, s.missed_sessions)),
                    )
                })
                .collect();
            let from_sql: Vec<_> = analyst
                .query(
                    "SELECT value, suppressed, episodes, baseline_nrs_n, \
                            baseline_nrs_mean, odi_change_discharge_n, \
                            odi_change_discharge_mean, nrs_responders, nrs_assessed, \
                            drop_out, ongoing, missed_sessions \
                     FROM analytics.outcome_statistics($1, $2, $3)",
                    &[&name, &from, &to],
                )
                .await
                .expect("outcome_statistics")
                .iter()
                .map(|row| {
                    let pair = |n: usize, v: usize| {
                        row.get::<_, Option<i64>>(n)
                            .zip(row.get::<_, Option<f64>>(v))
                    };
                    let shown = row.get::<_, Option<i64>>(2).is_some();
                    (
                        row.get::<_, Option<String>>(0),
                        row.get::<_, bool>(1),
                        row.get::<_, Option<i64>>(2),
                        pair(3, 4),
                        pair(5, 6),
                        row.get::<_, Option<i64>>(7)
                            .zip(row.get::<_, Option<i64>>(8)),
                        shown.then(|| (row.get(9), row.get(10), row.get(11))),
                    )
                })
                .collect();
            assert_eq!(from_sql, from_api, "{name} from {from:?} to {to:?}");
            compared += from_api.len();
        }
    }
    assert!(compared > 20, "only {compared} groups compared");

    // Naming a clinic not granted shows nothing of it.
    let leaked: i64 = analyst
        .query_one(
            "SELECT count(*) FROM analytics.outcome_statistics('none', NULL, NULL, $1, true)",
            &[&vec![other]],
        )
        .await
        .expect("other clinic")
        .get(0);
    assert_eq!(leaked, 0);
    // No clinic named, as in the API: every clinic granted.
    let episodes = |clinics: Option<Vec<Uuid>>| {
        let analyst = &analyst;
        async move {
            analyst
                .query_one(
                    "SELECT episodes FROM analytics.outcome_statistics('none', NULL, NULL, $1)",
                    &[&clinics],
                )
                .await
                .expect("every granted clinic")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(episodes(Some(Vec::new())).await, episodes(None).await);
    // A window inside a month is refused.
    let partial = analyst
        .query(
            "SELECT * FROM analytics.outcome_statistics('none', '2026-01-15')",
            &[],
        )
        .await
        .expect_err("a partial month");
    assert_eq!(
        partial.code(),
        Some(&spineledger_store::tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE)
    );

    // Everything else is refused: events, episode rows, the cells, the release's
    // internals, the grants.
    for table in [
        "events",
        "streams",
        "outcome_episodes",
        "outcome_cells",
        "treatment_plans",
        "access_log",
        "analyst_grants",
        "spineledger_release.parts()",
    ] {
        let refused = analyst
            .query(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
            .await
            .expect_err(table);
        assert_eq!(
            refused.code(),
            Some(&spineledger_store::tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{table}: {refused}"
        );
    }
    let written = analyst
        .batch_execute("INSERT INTO analyst_grants (login, clinic_id) VALUES (session_user, gen_random_uuid())")
        .await
        .expect_err("no writes");
    assert_eq!(
        written.code(),
        Some(&spineledger_store::tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // A rebuild swaps a fresh cells table in and drops the old one: the analyst's
    // views read the new table, under the same wall.
    let before: Vec<(Option<String>, i64)> = analyst
        .query(
            "SELECT value, episodes FROM analytics.monthly_outcomes \
             ORDER BY evaluated_month, dimension, value",
            &[],
        )
        .await
        .expect("before")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let owner_pool = spineledger_store::pool(db.config(), 2).expect("owner pool");
    let report = spineledger_projections::rebuild::rebuild(
        &owner_pool,
        spineledger_projections::Projection::OutcomeStatistics,
        Harness::projector_config().shards,
        500,
    )
    .await
    .expect("rebuild");
    assert!(report.equal(), "{report:?}");
    owner_pool.close();
    let after: Vec<(Option<String>, i64)> = analyst
        .query(
            "SELECT value, episodes FROM analytics.monthly_outcomes \
             ORDER BY evaluated_month, dimension, value",
            &[],
        )
        .await
        .expect("after the rebuild")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(after, before);
    let other_rows: i64 = analyst
        .query_one(
            "SELECT count(*) FROM analytics.monthly_outcomes WHERE clinic_id <> $1",
            &[&granted],
        )
        .await
        .expect("other clinics")
        .get(0);
    assert_eq!(other_rows, 0, "the rebuilt table keeps the wall");
    drop(analyst);
    harness.stop().await;
}
