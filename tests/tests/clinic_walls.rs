//! The second wall, in plain SQL: what the service's login role (`spineledger_app`) can
//! see and change in PostgreSQL itself, whatever the service's code does. Each clinical
//! table holds rows of two clinics, A and B, written through the real service; a raw
//! connection as the app role then shows that only the clinics its transaction names are
//! there, that the role can reach no more than that (no other role, no ownership, no
//! bypass), that the projector role sees every clinic, and that a rebuilt read model
//! keeps the wall.

use chrono::{Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_e2e::Harness;
use spineledger_e2e::requests::EpisodeScript;
use spineledger_projections::Projection;
use spineledger_store::tokio_postgres::error::SqlState;
use spineledger_store::tokio_postgres::{Client, Error};
use uuid::Uuid;

const CLINICAL_TABLES: [&str; 5] = [
    "events",
    "streams",
    "treatment_plans",
    "outcome_episodes",
    "outcome_cells",
];
/// Every table the app role reaches through the wall: the clinical tables and the access
/// log (which the projector role has no business with).
const WALLED_TABLES: [&str; 6] = [
    "events",
    "streams",
    "treatment_plans",
    "outcome_episodes",
    "outcome_cells",
    "access_log",
];

/// The read models' tables (a rebuild swaps each for a fresh one).
const READ_MODEL_TABLES: [&str; 3] = ["treatment_plans", "outcome_episodes", "outcome_cells"];

/// A server whose database holds an evaluated episode of clinic A and one of clinic B,
/// projected into both read models.
async fn two_clinics() -> (Harness, EpisodeScript, EpisodeScript) {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let mut scripts = Vec::new();
    for _ in 0..2 {
        let script = harness.script();
        writes
            .register_patient(script.register_patient(Utc::now() - Duration::days(2)))
            .await
            .expect("register");
        let position = writes
            .record_evaluation(script.evaluation(Utc::now() - Duration::days(1)))
            .await
            .expect("evaluation")
            .into_inner()
            .result
            .expect("result")
            .global_position;
        // Read-your-writes: projected once this answers.
        plans
            .get_treatment_plan(v1::GetTreatmentPlanRequest {
                clinic_id: script.clinic_id.to_string(),
                episode_id: script.episode_id.to_string(),
                min_position: Some(position),
            })
            .await
            .expect("plan projected");
        scripts.push(script);
    }
    let b = scripts.pop().expect("B");
    let a = scripts.pop().expect("A");
    wait_for_outcomes(&harness, 2).await;
    (harness, a, b)
}

/// Waits until the outcome projection holds `count` episodes (the owner sees them all).
async fn wait_for_outcomes(harness: &Harness, count: i64) {
    let owner = harness.database().owner_client().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let projected: i64 = owner
            .query_one("SELECT count(*) FROM outcome_episodes", &[])
            .await
            .expect("count")
            .try_get(0)
            .expect("column");
        if projected >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outcomes not projected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A raw connection as the app role, the way the service logs in.
async fn app_connection(harness: &Harness) -> Client {
    let client = spineledger_store::connect(&harness.database().app_config())
        .await
        .expect("log in as spineledger_app");
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("whoami")
        .try_get(0)
        .expect("column");
    assert_eq!(user, spineledger_store::APP_ROLE);
    client
}

/// Rows of `table` per clinic (A's, B's, all) as `client` sees them right now.
async fn visible(client: &Client, table: &str, a: Uuid, b: Uuid) -> (i64, i64, i64) {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE clinic_id = $1), \
                        count(*) FILTER (WHERE clinic_id = $2), count(*) FROM {table}"
            ),
            &[&a, &b],
        )
        .await
        .unwrap_or_else(|error| panic!("count {table}: {error}"));
    (
        row.try_get(0).expect("column"),
        row.try_get(1).expect("column"),
        row.try_get(2).expect("column"),
    )
}

async fn set_clinics(client: &Client, clinics: &[Uuid]) {
    let setting = spineledger_store::ClinicScope::of(clinics);
    client
        .execute(
            "SELECT set_config('spineledger.clinic_ids', $1, true)",
            &[&setting.setting()],
        )
        .await
        .expect("set the clinic context");
}

fn refused(result: Result<u64, Error>, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(
        error.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{what}: {error:?}"
    );
}

/// A new stream of `clinic`, as an INSERT the app role would send.
async fn insert_stream(client: &Client, clinic: Uuid) -> Result<u64, Error> {
    client
        .execute(
            "INSERT INTO streams (clinic_id, stream_id, version) VALUES ($1, $2, 0)",
            &[&clinic, &format!("episode-{}", Uuid::new_v4())],
        )
        .await
}

/// A new event of `clinic` in a stream that does not exist (the wall refuses it before
/// the foreign key would).
async fn insert_event(client: &Client, clinic: Uuid) -> Result<u64, Error> {
    client
        .execute(
            "INSERT INTO events (clinic_id, stream_id, version, event_id, event_type, \
                 schema_version, payload, metadata, fingerprint) \
             VALUES ($1, 'episode-x', 1, gen_random_uuid(), 'PatientRegistered', 1, '{}', \
                 '{}', decode(repeat('00', 32), 'hex'))",
            &[&clinic],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_app_role_sees_and_changes_only_the_clinics_its_transaction_names() {
    let (harness, a_script, b_script) = two_clinics().await;
    let (a, b) = (a_script.clinic_id, b_script.clinic_id);
    let owner = harness.database().owner_client().await;
    for table in WALLED_TABLES {
        let (of_a, of_b, _) = visible(&owner, table, a, b).await;
        assert!(of_a > 0 && of_b > 0, "{table} holds rows of both clinics");
    }
    let app = app_connection(&harness).await;

    // No context: nothing, outside a transaction and inside one.
    for table in WALLED_TABLES {
        assert_eq!(visible(&app, table, a, b).await, (0, 0, 0), "{table}");
    }
    app.batch_execute("BEGIN").await.expect("begin");
    for table in WALLED_TABLES {
        assert_eq!(visible(&app, table, a, b).await, (0, 0, 0), "{table}");
    }
    app.batch_execute("ROLLBACK").await.expect("rollback");
    refused(insert_stream(&app, a).await, "a stream without context");
    refused(insert_event(&app, a).await, "an event without context");

    // Clinic B's context: B's rows only; A's cannot be read, inserted or updated.
    app.batch_execute("BEGIN").await.expect("begin");
    set_clinics(&app, &[b]).await;
    for table in WALLED_TABLES {
        let (of_a, of_b, all) = visible(&app, table, a, b).await;
        assert!(
            of_a == 0 && of_b > 0 && all == of_b,
            "{table}: {of_a} {of_b} {all}"
        );
    }
    let updated_of_a = app
        .execute(
            "UPDATE streams SET version = version WHERE clinic_id = $1",
            &[&a],
        )
        .await
        .expect("an update that finds nothing");
    assert_eq!(updated_of_a, 0, "A's stream is out of reach");
    let updated_of_b = app
        .execute(
            "UPDATE streams SET version = version WHERE clinic_id = $1",
            &[&b],
        )
        .await
        .expect("update B's streams");
    assert!(updated_of_b > 0, "B's own streams are writable");
    app.batch_execute("SAVEPOINT before")
        .await
        .expect("savepoint");
    refused(insert_stream(&app, a).await, "a stream of A in B's context");
    app.batch_execute("ROLLBACK TO SAVEPOINT before")
        .await
        .expect("rollback to savepoint");
    refused(insert_event(&app, a).await, "an event of A in B's context");
    app.batch_execute("ROLLBACK").await.expect("rollback");
    app.batch_execute("BEGIN").await.expect("begin");
    set_clinics(&app, &[b]).await;
    refused(
        app.execute(
            "INSERT INTO access_log (clinic_id, principal_subject, principal_issuer, \
                 principal_role, rpc, outcome) \
             VALUES ($1, 'svc', 'urn:test', 'integration', 'GetTreatmentPlan', 'OK')",
            &[&a],
        )
        .await,
        "an access of A in B's context",
    );
    app.batch_execute("ROLLBACK").await.expect("rollback");

    // The context ended with its transaction (SET LOCAL): nothing again.
    for table in WALLED_TABLES {
        assert_eq!(visible(&app, table, a, b).await, (0, 0, 0), "{table} after");
    }

    // Clinic A's context: A's rows; both clinics (statistics): both.
    app.batch_execute("BEGIN").await.expect("begin");
    set_clinics(&app, &[a]).await;
    for table in WALLED_TABLES {
        let (of_a, of_b, all) = visible(&app, table, a, b).await;
        assert!(
            of_a > 0 && of_b == 0 && all == of_a,
            "{table}: {of_a} {of_b} {all}"
        );
    }
    app.batch_execute("COMMIT").await.expect("commit");
    app.batch_execute("BEGIN").await.expect("begin");
    set_clinics(&app, &[a, b]).await;
    for table in WALLED_TABLES {
        let (of_a, of_b, all) = visible(&app, table, a, b).await;
        assert!(of_a > 0 && of_b > 0 && all == of_a + of_b, "{table}");
    }
    // Events stay immutable for the app role, inside its own clinics too.
    for statement in ["UPDATE events SET payload = '{}'", "DELETE FROM events"] {
        app.batch_execute("SAVEPOINT before")
            .await
            .expect("savepoint");
        refused(app.execute(statement, &[]).await, statement);
        app.batch_execute("ROLLBACK TO SAVEPOINT before")
            .await
            .expect("rollback to savepoint");
    }
    // The access log: appended in the context's clinics only, never changed.
    let log_for = |clinic: Uuid| {
        let app = &app;
        async move {
            app.execute(
                "INSERT INTO access_log (clinic_id, principal_subject, principal_issuer, \
                     principal_role, rpc, outcome) \
                 VALUES ($1, 'svc', 'urn:test', 'integration', 'GetTreatmentPlan', 'OK')",
                &[&clinic],
            )
            .await
        }
    };
    app.batch_execute("SAVEPOINT before")
        .await
        .expect("savepoint");
    log_for(a)
        .await
        .expect("an access of A, in A's and B's context");
    for statement in [
        "UPDATE access_log SET outcome = 'NOT_FOUND'",
        "DELETE FROM access_log",
    ] {
        app.batch_execute("SAVEPOINT nested")
            .await
            .expect("savepoint");
        refused(app.execute(statement, &[]).await, statement);
        app.batch_execute("ROLLBACK TO SAVEPOINT nested")
            .await
            .expect("rollback to savepoint");
    }
    app.batch_execute("ROLLBACK TO SAVEPOINT before")
        .await
        .expect("rollback to savepoint");
    // Read models are the projector's to write.
    refused(
        app.execute("DELETE FROM treatment_plans", &[]).await,
        "delete plans",
    );
    app.batch_execute("ROLLBACK").await.expect("rollback");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_login_roles_own_nothing_bypass_nothing_and_cannot_become_anyone_else() {
    let (harness, a_script, b_script) = two_clinics().await;
    let (a, b) = (a_script.clinic_id, b_script.clinic_id);
    let database = harness.database();
    let owner_name = database
        .config()
        .get_user()
        .expect("the owner's user")
        .to_owned();
    let app = app_connection(&harness).await;
    let projector = spineledger_store::connect(&database.projector_config())
        .await
        .expect("log in as spineledger_projector");

    for (client, role) in [
        (&app, spineledger_store::APP_ROLE),
        (&projector, spineledger_store::PROJECTOR_ROLE),
    ] {
        for target in [owner_name.as_str(), "postgres"] {
            let error = client
                .batch_execute(&format!(
                    "SET ROLE {}",
                    spineledger_store::quote_identifier(target)
                ))
                .await
                .expect_err("SET ROLE to a privileged role");
            assert_eq!(
                error.code(),
                Some(&SqlState::INSUFFICIENT_PRIVILEGE),
                "{role} -> {target}: {error:?}"
            );
        }
        let row = client
            .query_one(
                "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, \
                        (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid), \
                        (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) \
                 FROM pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .expect("the role's attributes");
        let attributes: (bool, bool, bool, bool, i64, i64) = (
            row.try_get(0).expect("column"),
            row.try_get(1).expect("column"),
            row.try_get(2).expect("column"),
            row.try_get(3).expect("column"),
            row.try_get(4).expect("column"),
            row.try_get(5).expect("column"),
        );
        assert_eq!(
            attributes,
            (false, false, false, false, 0, 0),
            "{role}: superuser, bypassrls, createrole, createdb, relations owned, memberships"
        );
    }

    // Neither login may create objects in the schema (which could shadow what the owner
    // calls), and the app role may change a stream's version only, never its clinic.
    for (client, role) in [
        (&app, spineledger_store::APP_ROLE),
        (&projector, spineledger_store::PROJECTOR_ROLE),
    ] {
        let error = client
            .batch_execute("CREATE TABLE public.planted (id int)")
            .await
            .expect_err("CREATE in public");
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{role}: {error:?}"
        );
    }
    app.batch_execute("BEGIN").await.expect("begin");
    set_clinics(&app, &[a, b]).await;
    let moved = app
        .execute(
            "UPDATE streams SET clinic_id = $2 WHERE clinic_id = $1",
            &[&a, &b],
        )
        .await;
    refused(moved, "the app role moves a stream to another clinic");
    app.batch_execute("ROLLBACK").await.expect("rollback");

    // The projector role folds every clinic: it sees both without any context.
    for table in CLINICAL_TABLES {
        let (of_a, of_b, _) = visible(&projector, table, a, b).await;
        assert!(
            of_a > 0 && of_b > 0,
            "the projector sees both clinics in {table}"
        );
    }
    // But it does not write the log.
    refused(
        insert_stream(&projector, a).await,
        "the projector adds a stream",
    );

    // The service refuses to run as a login the wall does not hold.
    spineledger_store::ensure_walled(database.store().pool())
        .await
        .expect("the app role is walled");
    let owner_pool = spineledger_store::pool(database.config(), 1).expect("owner pool");
    let unwalled = spineledger_store::ensure_walled(&owner_pool).await;
    assert!(
        matches!(
            unwalled,
            Err(spineledger_store::StoreError::Configuration(_))
        ),
        "{unwalled:?}"
    );
    owner_pool.close();
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuilt_read_model_keeps_its_wall() {
    let (harness, a_script, b_script) = two_clinics().await;
    let (a, b) = (a_script.clinic_id, b_script.clinic_id);
    let database = harness.database();
    let owner_pool = spineledger_store::pool(database.config(), 2).expect("owner pool");
    let live_oids = table_oids(&database.owner_client().await).await;
    for projection in Projection::ALL {
        let report = spineledger_projections::rebuild::rebuild(
            &owner_pool,
            projection,
            Harness::projector_config().shards,
            500,
        )
        .await
        .expect("rebuild");
        assert!(report.equal(), "{report:?}");
    }
    owner_pool.close();
    let owner = database.owner_client().await;
    let rebuilt_oids = table_oids(&owner).await;
    for (live, rebuilt) in live_oids.iter().zip(&rebuilt_oids) {
        assert_ne!(live, rebuilt, "the table was swapped for a new one");
    }

    let app = app_connection(&harness).await;
    for table in READ_MODEL_TABLES {
        let (of_a, of_b, _) = visible(&owner, table, a, b).await;
        assert!(
            of_a > 0 && of_b > 0,
            "the rebuilt {table} holds both clinics"
        );
        assert_eq!(
            visible(&app, table, a, b).await,
            (0, 0, 0),
            "the app role without context sees nothing of the rebuilt {table}"
        );
        app.batch_execute("BEGIN").await.expect("begin");
        set_clinics(&app, &[a]).await;
        let (of_a, of_b, all) = visible(&app, table, a, b).await;
        assert!(
            of_a > 0 && of_b == 0 && all == of_a,
            "{table} in A's context"
        );
        app.batch_execute("SAVEPOINT before")
            .await
            .expect("savepoint");
        refused(
            app.execute(&format!("DELETE FROM {table}"), &[]).await,
            "the app role writes a rebuilt read model",
        );
        app.batch_execute("ROLLBACK").await.expect("rollback");
    }

    // The projector goes on writing the swapped-in tables: a new episode is projected.
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let script = EpisodeScript {
        clinic_id: a,
        ..EpisodeScript::new()
    };
    writes
        .register_patient(script.register_patient(Utc::now() - Duration::days(2)))
        .await
        .expect("register");
    let position = writes
        .record_evaluation(script.evaluation(Utc::now() - Duration::days(1)))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result")
        .global_position;
    TreatmentPlanServiceClient::new(harness.channel().await)
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: a.to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: Some(position),
        })
        .await
        .expect("projected into the rebuilt table");
    harness.stop().await;
}

/// The oids of the read-model tables (a rebuild swaps in new ones).
async fn table_oids(owner: &Client) -> Vec<u32> {
    let mut oids = Vec::new();
    for table in READ_MODEL_TABLES {
        let oid: u32 = owner
            .query_one("SELECT $1::text::regclass::oid", &[&table])
            .await
            .expect("oid")
            .try_get(0)
            .expect("column");
        oids.push(oid);
    }
    oids
}
