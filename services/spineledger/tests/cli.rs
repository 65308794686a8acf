//! The binary's behaviour an operator sees first.

use std::process::Command;

/// The binary, with its development key in a throw-away place (never the home directory).
fn spineledger() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spineledger"));
    command.env(
        "SPINELEDGER_DEV_KEY_FILE",
        std::env::temp_dir()
            .join(format!("spineledger-cli-test-{}", std::process::id()))
            .join("dev-signing-key.pem"),
    );
    command
}

#[test]
fn serve_with_unreachable_postgres_fails_with_one_line_naming_the_url_without_password() {
    let output = spineledger()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            "postgres://clinic:s3cret-pw@127.0.0.1:1/records",
        )
        .env("RUST_LOG", "off")
        .output()
        .expect("run spineledger");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].starts_with(
            "error: cannot connect to PostgreSQL at postgres://clinic@127.0.0.1:1/records"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password leaked: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn migrate_subcommand_applies_migrations_to_a_fresh_database_twice_in_a_row() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(spineledger_testkit::TestDatabase::create_unmigrated());
    for _ in 0..2 {
        let status = spineledger()
            .args(["migrate", "--database-url", &database.url()])
            .env("RUST_LOG", "off")
            .status()
            .expect("run spineledger migrate");
        assert!(status.success());
    }
    let tables = runtime.block_on(async {
        database
            .owner_client()
            .await
            .query_one("SELECT count(*) FROM refinery_schema_history", &[])
            .await
            .expect("history")
            .try_get::<_, i64>(0)
            .expect("count")
    });
    assert!(tables >= 1);
    runtime.block_on(async move { drop(database) });
}

#[test]
fn serve_refuses_plaintext_on_an_address_other_machines_can_reach() {
    let output = spineledger()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("DATABASE_URL", "postgres://clinic@127.0.0.1:1/records")
        .env("RUST_LOG", "off")
        .env_remove("SPINELEDGER_INSECURE_PLAINTEXT")
        .output()
        .expect("run spineledger");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to serve plaintext gRPC on 0.0.0.0:0"),
        "{stderr}"
    );
    // Told explicitly, it goes on (and here fails at the unreachable database instead).
    let output = spineledger()
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure-plaintext"])
        .args(["--trust-dev-key", "true"])
        .env("DATABASE_URL", "postgres://clinic@127.0.0.1:1/records")
        .env("RUST_LOG", "off")
        .output()
        .expect("run spineledger");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
}

#[test]
fn serve_given_only_the_app_url_does_not_create_the_database_it_names() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // A throw-away database, only to learn the test server's address and to ask it
    // afterwards whether the absent database was created.
    let database = runtime.block_on(spineledger_testkit::TestDatabase::create_unmigrated());
    let absent = format!("spineledger_absent_{}", std::process::id());
    let app_url = spineledger_store::describe(&spineledger_store::as_role(
        &spineledger_store::with_dbname(database.config(), &absent),
        spineledger_store::APP_ROLE,
    ));
    let output = spineledger()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app-database-url",
            &app_url,
        ])
        .env_remove("DATABASE_URL")
        .env_remove("SPINELEDGER_PROJECTOR_DATABASE_URL")
        .env("RUST_LOG", "off")
        .output()
        .expect("run spineledger");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&absent), "{stderr}");
    let created = runtime.block_on(async {
        database
            .owner_client()
            .await
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&absent])
            .await
            .expect("pg_database")
            .is_some()
    });
    assert!(
        !created,
        "serve created a database it was not given the owner of"
    );
    runtime.block_on(async move { drop(database) });
}
