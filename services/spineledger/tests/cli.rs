//! The binary's behaviour an operator sees first.

use std::process::Command;

/// The binary, with its development and checkpoint keys in a throw-away place (never the
/// home directory).
fn spineledger() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spineledger"));
    let scratch = std::env::temp_dir().join(format!("spineledger-cli-test-{}", std::process::id()));
    command
        .env(
            "SPINELEDGER_DEV_KEY_FILE",
            scratch.join("dev-signing-key.pem"),
        )
        // The default place of the checkpoint key, as a fresh machine has it.
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        .env_remove("SPINELEDGER_CHECKPOINT_KEY_FILE");
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

/// A CA and a certificate for `localhost` it signed, written as PEM files in `directory`:
/// (CA, certificate, key).
fn localhost_certificate(
    directory: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let certificate = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    std::fs::create_dir_all(directory).expect("directory");
    let paths = (
        directory.join("ca.pem"),
        directory.join("server.pem"),
        directory.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, certificate.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// Kills the child when dropped (a failed assertion must not leave a server running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_with_a_certificate_speaks_tls_and_accepts_an_issued_token() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(spineledger_testkit::TestDatabase::create());
    let directory =
        std::env::temp_dir().join(format!("spineledger-cli-tls-{}", std::process::id()));
    let (ca, certificate, key) = localhost_certificate(&directory);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .expect("a free port")
        .port();
    let _server = Running(
        spineledger()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--database-url",
                &spineledger_store::describe(database.config()),
            ])
            .arg("--tls-cert")
            .arg(&certificate)
            .arg("--tls-key")
            .arg(&key)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    let clinic = uuid::Uuid::new_v4();
    let issued = spineledger()
        .args([
            "token",
            "issue",
            "--role",
            "integration",
            "--clinic",
            &clinic.to_string(),
        ])
        .output()
        .expect("token issue");
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token = String::from_utf8_lossy(&issued.stdout)
        .lines()
        .last()
        .expect("the token on the last line")
        .to_owned();

    runtime.block_on(async {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(&ca).expect("CA"),
            ))
            .domain_name("localhost");
        let endpoint = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("TLS");
        let mut channel = None;
        for _ in 0..150 {
            if let Ok(connected) = endpoint.connect().await {
                channel = Some(connected);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let channel = channel.expect("serve answers over TLS");
        let mut plans = spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient::with_interceptor(
            channel,
            spineledger_api::client::BearerToken::new(&token).expect("header"),
        );
        let status = plans
            .get_treatment_plan(spineledger_api::v1::GetTreatmentPlanRequest {
                clinic_id: clinic.to_string(),
                episode_id: uuid::Uuid::new_v4().to_string(),
                min_position: None,
            })
            .await
            .expect_err("no such plan");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    });
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn verify_exits_non_zero_naming_the_first_broken_link() {
    use spineledger_store::{EventMetadata, ExpectedVersion, Fingerprint, NewEvent, StreamKey};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let database = runtime.block_on(spineledger_testkit::TestDatabase::create());
    let stream = StreamKey::new(uuid::Uuid::new_v4(), "episode-verify".to_owned());
    runtime.block_on(async {
        for n in 1..=3 {
            let payload = serde_json::json!({ "n": n });
            let event_id = uuid::Uuid::new_v4();
            let event = NewEvent {
                event_id,
                event_type: "SessionRecorded".into(),
                schema_version: 1,
                fingerprint: Fingerprint::of(&payload).expect("fingerprint"),
                payload,
                metadata: EventMetadata {
                    actor: "provider-7".into(),
                    command_id: event_id,
                    ..EventMetadata::default()
                },
                occurred_at: None,
            };
            database
                .store()
                .append(&stream, ExpectedVersion::Any, &[event])
                .await
                .expect("append");
        }
    });
    let url = spineledger_store::describe(database.config());
    // The checkpoint key (created on first use) and its verifier key, as an operator gives
    // it to an auditor.
    let key = spineledger()
        .args(["audit", "key", "--create"])
        .output()
        .expect("audit key");
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let vkey = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    assert!(vkey.starts_with("spineledger+"), "{vkey}");
    let sound = spineledger()
        .args(["verify", "--database-url", &url, "--verifier-key", &vkey])
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&sound.stdout);
    assert!(sound.status.success(), "{stdout}");
    assert!(
        stdout.contains("checked 3 events in 1 streams and 0 access-log entries of 1 clinics"),
        "{stdout}"
    );
    assert!(stdout.contains(": 0 findings"), "{stdout}");
    // The bundle of the clinic, for an offline check.
    let bundle_path = std::env::temp_dir().join(format!("bundle-{}.json", stream.clinic_id));
    let exported = spineledger()
        .args(["audit", "export", "--database-url", &url, "--clinic"])
        .arg(stream.clinic_id.to_string())
        .arg("--out")
        .arg(&bundle_path)
        .output()
        .expect("export");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let bundle: spineledger_verifier::bundle::Bundle =
        serde_json::from_slice(&std::fs::read(&bundle_path).expect("read")).expect("a bundle");
    let _ = std::fs::remove_file(&bundle_path);
    assert_eq!(bundle.events.len(), 3);
    assert_eq!(bundle.verifier_key, vkey);
    let audit = bundle.audit(&vkey.parse().expect("vkey"), None);
    assert!(audit.is_sound(), "{:?}", audit.findings);

    runtime.block_on(async {
        let owner = database.owner_client().await;
        owner
            .batch_execute("SET session_replication_role = replica")
            .await
            .expect("bypass");
        owner
            .execute(
                "UPDATE events SET payload = '{\"n\": 20}' WHERE stream_id = $1 AND version = 2",
                &[&stream.stream_id],
            )
            .await
            .expect("tamper");
    });
    // Without --verifier-key: the public half of the local checkpoint key.
    let damaged = spineledger()
        .args(["verify", "--database-url", &url])
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&damaged.stdout);
    assert!(!damaged.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "BROKEN hash mismatch: clinic {} stream episode-verify version 2 position",
            stream.clinic_id
        )),
        "{stdout}"
    );
}

/// `bench --quick`, the smoke run CI makes: every phase runs end to end against the local
/// server and the report names each (it says nothing about speed), and the benchmark's
/// databases are gone afterwards.
#[test]
fn bench_quick_runs_every_phase_and_drops_its_databases() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Only for the server's address: the bench creates databases of its own there.
    let database = runtime.block_on(spineledger_testkit::TestDatabase::create_unmigrated());
    let benchmark_databases = || {
        runtime.block_on(async {
            let owner = database.owner_client().await;
            owner
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname LIKE 'spineledger\\_bench\\_%'",
                    &[],
                )
                .await
                .expect("databases")
                .get::<_, i64>(0)
        })
    };
    let before = benchmark_databases();
    let output = spineledger()
        .args(["bench", "--quick", "--clients", "4", "--database-url"])
        .arg(database.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run spineledger bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for phase in [
        "raw pgbench insert, 1 client",
        "raw pgbench insert, 4 clients",
        "gRPC health check, 1 client",
        "gRPC health check, 4 clients",
        "gRPC append, 1 client",
        "gRPC append, 4 clients",
        "gRPC RecordSession, 1 client",
        "gRPC RecordSession, 4 clients",
        "CPU per transaction, append, 4 clients",
        "projection lag under the concurrent load",
        "server resident memory",
        "generate 2000 episodes through the store",
        "statistics, no grouping",
        "rebuild both read models",
        "the transport alone (health checks)",
    ] {
        assert!(stdout.contains(phase), "no {phase:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("NaN"),
        "a phase measured nothing:\n{stdout}"
    );
    assert_eq!(
        benchmark_databases(),
        before,
        "a benchmark database was left behind"
    );
}
