//! `spineledger`: one binary, one subcommand per job. With no subcommand it serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use spineledger::{App, ReadSettings, database, server, telemetry};
use spineledger_auth::{DevKey, Role, TokenRequest, TrustedIssuer, Verifier, dev};
use spineledger_projections::{Projection, Projector, ProjectorConfig};
use spineledger_readmodels::MinCell;
use spineledger_verifier::checkpoint::{CheckpointSigner, VerifierKey};

#[derive(Debug, Parser)]
#[command(
    name = "spineledger",
    version,
    about = "Event-sourced clinical records for spinal decompression care"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API and run the projectors (the default).
    Serve(Box<ServeArgs>),
    /// Create the database if missing and apply the embedded migrations, then exit.
    Migrate(DatabaseArgs),
    /// Run projector workers only (scale-out: any number of them share the work).
    Projector(ProjectorArgs),
    /// Rebuild read models from position zero into fresh tables, compare, swap.
    Rebuild(RebuildArgs),
    /// Check every clinic's record: each stream's hash chain (versions, hashes, links,
    /// heads), the dense index of the clinic's log, and the Merkle roots against the signed
    /// checkpoints. Names the first broken link of each damaged stream and every fault of
    /// an index or checkpoint; exits non-zero if any.
    Verify(VerifyArgs),
    /// The clinics' signed logs: the checkpoint key, audit bundles.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Development tokens signed with the local development key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The client tools: simulate, stats, bench.
    #[cfg(feature = "tools")]
    #[command(flatten)]
    Tool(spineledger_tools::cli::Tool),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only this clinic's record.
    #[arg(long)]
    clinic: Option<uuid::Uuid>,
    #[command(flatten)]
    key: VerifierKeyArgs,
    /// A checkpoint note kept from earlier (a file): the log must still contain it. Needs
    /// --clinic.
    #[arg(long, requires = "clinic")]
    kept_checkpoint: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the verifier key of the checkpoint signing key: what auditors check
    /// checkpoints with. Give it to them through a channel of your own.
    Key(AuditKeyArgs),
    /// Write one clinic's self-contained audit bundle (events, stream heads, access log,
    /// the log's index, signed checkpoints and the verifier key) as JSON, for
    /// `spineledger-audit` to check offline.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct AuditKeyArgs {
    #[command(flatten)]
    checkpoint_key: CheckpointKeyArgs,
    /// Create the key if there is none (otherwise a missing key is an error: a new key
    /// made by mistake would not verify anything signed so far).
    #[arg(long)]
    create: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// The clinic.
    #[arg(long)]
    clinic: uuid::Uuid,
    /// Where to write the bundle ("-": standard output).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    #[command(flatten)]
    key: VerifierKeyArgs,
}

#[derive(Debug, Clone, Args)]
struct CheckpointKeyArgs {
    /// The Ed25519 key (PKCS#8 PEM, mode 0600) that signs the clinics' checkpoints; keep
    /// it off the database server, and give every signing process the same file. Given
    /// explicitly, it must exist. Default:
    /// $XDG_CONFIG_HOME/spineledger/checkpoint-signing-key.pem (else ~/.config/spineledger/…),
    /// created on first use only by a `serve` on a loopback listener (development).
    #[arg(long, env = "SPINELEDGER_CHECKPOINT_KEY_FILE")]
    checkpoint_key_file: Option<PathBuf>,
    /// The key's name in signed notes (no spaces or '+').
    #[arg(
        long,
        env = "SPINELEDGER_CHECKPOINT_KEY_NAME",
        default_value = "spineledger"
    )]
    checkpoint_key_name: String,
}

impl CheckpointKeyArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        self.checkpoint_key_file
            .clone()
            .or_else(|| dev::config_path(CHECKPOINT_KEY_FILE))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no place for the checkpoint key: set HOME, XDG_CONFIG_HOME or --checkpoint-key-file"
                )
            })
    }

    /// The signer of the key file, created first if `create` and there is none.
    fn signer(&self, create: bool) -> anyhow::Result<CheckpointSigner> {
        let path = self.path()?;
        let key = if create {
            let (key, created) = dev::load_or_create_key_file(&path)?;
            if created {
                tracing::info!(path = %path.display(), "created the checkpoint signing key");
            }
            key
        } else {
            dev::load_key_file(&path).map_err(|error| {
                anyhow::anyhow!("cannot use the checkpoint key {}: {error}", path.display())
            })?
        };
        Ok(CheckpointSigner::new(&self.checkpoint_key_name, key)?)
    }

    /// The signer a service process runs with. A key file named explicitly must exist.
    /// The default file is used when it exists, and created only when `develop` (a
    /// loopback `serve`); otherwise the process runs without a key: no checkpoints are
    /// signed here (another process's notary may sign) and `SignCheckpoint` answers
    /// NO_CHECKPOINT_KEY. Several processes must never each invent a key of their own.
    fn service_signer(&self, develop: bool) -> anyhow::Result<Option<CheckpointSigner>> {
        if self.checkpoint_key_file.is_some() {
            return self.signer(false).map(Some);
        }
        let Ok(path) = self.path() else {
            tracing::warn!("no checkpoint key (no HOME): this process signs no checkpoints");
            return Ok(None);
        };
        if path.exists() {
            return self.signer(false).map(Some);
        }
        if develop {
            // A fresh machine must still start: a key that cannot be created (a read-only
            // home) means no signing here, not no service.
            return Ok(self
                .signer(true)
                .inspect_err(|error| {
                    tracing::warn!(%error, "no checkpoint key: this process signs no checkpoints");
                })
                .ok());
        }
        tracing::warn!(
            path = %path.display(),
            "no checkpoint key: this process signs no checkpoints (give --checkpoint-key-file)"
        );
        Ok(None)
    }
}

/// The checkpoint key's file name in the configuration directory.
const CHECKPOINT_KEY_FILE: &str = "checkpoint-signing-key.pem";

#[derive(Debug, Args)]
struct VerifierKeyArgs {
    /// The verifier key checkpoints must be signed with (<name>+<id>+<key>, as
    /// `spineledger audit key` prints it). Default: the public half of the local checkpoint
    /// key file, when there is one.
    #[arg(long, env = "SPINELEDGER_VERIFIER_KEY")]
    verifier_key: Option<String>,
    #[command(flatten)]
    checkpoint_key: CheckpointKeyArgs,
}

impl VerifierKeyArgs {
    fn key(&self) -> anyhow::Result<VerifierKey> {
        if let Some(text) = &self.verifier_key {
            return Ok(text.parse()?);
        }
        let path = self.checkpoint_key.path()?;
        let key = dev::load_key_file(&path).map_err(|error| {
            anyhow::anyhow!(
                "no verifier key: pass --verifier-key (cannot use {}: {error})",
                path.display()
            )
        })?;
        Ok(VerifierKey::new(
            &self.checkpoint_key.checkpoint_key_name,
            key.verifying_key(),
        )?)
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Sign a token with the local development key (created if missing) and print it on
    /// the last line of standard output. Only a server that trusts the development key
    /// accepts it (by default, one listening on loopback).
    Issue(TokenIssueArgs),
}

#[derive(Debug, Args)]
struct TokenIssueArgs {
    /// The role: clinician, integration, analyst, auditor or admin.
    #[arg(long, value_parser = |name: &str| name.parse::<Role>())]
    role: Role,
    /// A clinic the token grants (repeatable).
    #[arg(long = "clinic", required_unless_present = "all_clinics")]
    clinics: Vec<uuid::Uuid>,
    /// Grant every clinic (analyst and auditor tokens only).
    #[arg(long, conflicts_with = "clinics")]
    all_clinics: bool,
    /// The subject (who the token is for). Default: dev-<role>.
    #[arg(long)]
    subject: Option<String>,
    /// How long the token is valid, e.g. 30m, 8h, 7d (at most 30 days).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// The audience the token names; the server's --jwt-audience must match.
    #[arg(long, env = "SPINELEDGER_JWT_AUDIENCE", default_value = dev::DEFAULT_AUDIENCE)]
    audience: String,
    #[command(flatten)]
    dev_key: DevKeyArgs,
}

#[derive(Debug, Args)]
struct DevKeyArgs {
    /// The development signing key (Ed25519, PKCS#8 PEM), created on first use. Default:
    /// $XDG_CONFIG_HOME/spineledger/dev-signing-key.pem (else ~/.config/spineledger/…).
    #[arg(long, env = "SPINELEDGER_DEV_KEY_FILE")]
    dev_key_file: Option<PathBuf>,
}

impl DevKeyArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        self.dev_key_file
            .clone()
            .or_else(dev::default_path)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no place for the development key: set HOME, XDG_CONFIG_HOME or --dev-key-file"
                )
            })
    }
}

/// Whether `serve` accepts tokens signed with the development key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TrustDevKey {
    /// Only when listening on a loopback address with no --jwks-file (the default).
    Auto,
    /// Always (never on a server other machines can reach unless you mean it).
    True,
    /// Never.
    False,
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM).
    #[arg(long, env = "SPINELEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SPINELEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (PEM): mutual TLS, for integrations
    /// that want the connection itself authenticated too (tokens are still required).
    #[arg(long, env = "SPINELEDGER_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The server's TLS configuration, if a certificate is given.
    fn config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))
        };
        // A handshake that has not finished in 10 s is dropped: handshakes are not
        // requests, so the in-flight limit does not bound them.
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(cert)?, read(key)?))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(config))
    }
}

#[derive(Debug, Args)]
struct AuthArgs {
    /// Your identity provider's signing keys as a JWKS file (what it publishes at its
    /// jwks_uri); re-read when it changes, so keys rotate by replacing the file.
    #[arg(long, env = "SPINELEDGER_JWKS_FILE", requires = "jwt_issuer")]
    jwks_file: Option<PathBuf>,
    /// The issuer (`iss`) of the tokens the JWKS file's keys sign.
    #[arg(long, env = "SPINELEDGER_JWT_ISSUER", requires = "jwks_file")]
    jwt_issuer: Option<String>,
    /// The audience (`aud`) every token must name.
    #[arg(long, env = "SPINELEDGER_JWT_AUDIENCE", default_value = dev::DEFAULT_AUDIENCE)]
    jwt_audience: String,
    /// Accept tokens signed with the local development key (`spineledger token issue`).
    #[arg(long, env = "SPINELEDGER_TRUST_DEV_KEY", value_enum, default_value_t = TrustDevKey::Auto)]
    trust_dev_key: TrustDevKey,
    #[command(flatten)]
    dev_key: DevKeyArgs,
}

impl AuthArgs {
    /// The verifier `serve` uses for a listener on `listen`.
    fn verifier(&self, listen: SocketAddr) -> anyhow::Result<Verifier> {
        let mut verifier = Verifier::new(self.jwt_audience.clone());
        if let (Some(path), Some(issuer)) = (&self.jwks_file, &self.jwt_issuer) {
            verifier = verifier.trust(TrustedIssuer::jwks_file(issuer.clone(), path)?)?;
            tracing::info!(issuer = %issuer, jwks = %path.display(), "trusting the identity provider");
        }
        let trust_dev_key = match self.trust_dev_key {
            // A server given its identity provider's keys is a real deployment, even
            // behind a local proxy: development tokens only when asked for.
            TrustDevKey::Auto => listen.ip().is_loopback() && self.jwks_file.is_none(),
            TrustDevKey::True => true,
            TrustDevKey::False => false,
        };
        if trust_dev_key {
            let path = self.dev_key.path()?;
            let (key, created) = DevKey::load_or_create(&path)?;
            if created {
                tracing::info!(path = %path.display(), "created the development signing key");
            }
            verifier = verifier.trust(key.trusted_issuer()?)?;
            tracing::info!(
                issuer = dev::DEV_ISSUER,
                "trusting development tokens (spineledger token issue)"
            );
        }
        anyhow::ensure!(
            verifier.issuers().next().is_some(),
            "no token issuer is trusted, so every call would be refused: give --jwks-file and \
             --jwt-issuer, or --trust-dev-key=true for development tokens"
        );
        Ok(verifier)
    }
}

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// PostgreSQL URL of the owner (creates the database, migrates, rebuilds). Default:
    /// the local server at 127.0.0.1:5432 as the current OS user (or postgres), database
    /// `spineledger`, created if missing.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The CA (PEM) that issued PostgreSQL's certificate. With it, every connection that
    /// is not sslmode=disable requires TLS and verifies the certificate and the host name
    /// (libpq's verify-full); without it, prefer/require encrypt without verifying, as
    /// libpq does.
    #[arg(long, env = "PGSSLROOTCERT")]
    database_ca: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The owner URL, once the PostgreSQL CA (if any) is in force.
    fn owner_url(&self) -> anyhow::Result<Option<&str>> {
        if let Some(ca) = &self.database_ca {
            spineledger_store::tls::trust_server_ca(ca)?;
        }
        Ok(self.database_url.as_deref())
    }
}

#[derive(Debug, Args)]
struct LoginArgs {
    #[command(flatten)]
    owner: DatabaseArgs,
    /// PostgreSQL URL the service logs in with (role spineledger_app). Default: the owner
    /// URL with user spineledger_app and no password. Given without an owner URL, the
    /// database is neither created nor migrated.
    #[arg(long, env = "SPINELEDGER_APP_DATABASE_URL")]
    app_database_url: Option<String>,
    /// PostgreSQL URL projector workers log in with (role spineledger_projector).
    /// Default: the owner URL (else the app URL) with user spineledger_projector and no
    /// password.
    #[arg(long, env = "SPINELEDGER_PROJECTOR_DATABASE_URL")]
    projector_database_url: Option<String>,
}

impl LoginArgs {
    fn urls(&self) -> anyhow::Result<database::DatabaseUrls> {
        Ok(database::DatabaseUrls {
            owner: self.owner.owner_url()?.map(str::to_owned),
            app: self.app_database_url.clone(),
            projector: self.projector_database_url.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SPINELEDGER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Serve plaintext gRPC on an address other machines can reach. Without it, serve
    /// refuses to listen anywhere but loopback without TLS: patient records must not cross
    /// a network unencrypted by accident.
    #[arg(long, env = "SPINELEDGER_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    database: LoginArgs,
    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, env = "SPINELEDGER_POOL_SIZE", default_value_t = 32)]
    pool_size: usize,
    /// Do not run projectors in this process (run `spineledger projector` workers).
    #[arg(long, env = "SPINELEDGER_NO_PROJECTOR")]
    no_projector: bool,
    /// Outcome statistics groups (and means) built on fewer values are suppressed (at
    /// least 3: smaller cells would disclose individuals).
    #[arg(long, env = "SPINELEDGER_MIN_CELL", default_value_t = MinCell::DEFAULT)]
    min_cell: MinCell,
    /// How long a read-your-writes query waits for the projection, in milliseconds.
    #[arg(long, env = "SPINELEDGER_CATCH_UP_TIMEOUT_MS", default_value_t = 5000)]
    catch_up_timeout_ms: u64,
    /// The largest request accepted, in bytes (larger: OUT_OF_RANGE).
    #[arg(long, env = "SPINELEDGER_MAX_MESSAGE_BYTES", default_value_t = server::DEFAULT_MAX_MESSAGE_BYTES, value_parser = clap::value_parser!(usize))]
    max_message_bytes: usize,
    /// The most requests served at once (more: RESOURCE_EXHAUSTED at once).
    #[arg(long, env = "SPINELEDGER_MAX_IN_FLIGHT", default_value_t = server::DEFAULT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(usize))]
    max_in_flight: usize,
    #[command(flatten)]
    projector: ProjectorSettings,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    checkpoints: CheckpointKeyArgs,
    /// Without a signing key: the verifier key (<name>+<id>+<key>) of the notary that signs
    /// elsewhere, so that this server still answers GetCheckpoint and proofs.
    #[arg(long, env = "SPINELEDGER_VERIFIER_KEY")]
    verifier_key: Option<String>,
}

#[derive(Debug, Args)]
struct ProjectorSettings {
    /// Shards of clinics per projection; every process must use the same number, and
    /// changing it needs `spineledger rebuild --all`.
    #[arg(long, env = "SPINELEDGER_SHARDS", default_value_t = spineledger_projections::DEFAULT_SHARDS, value_parser = clap::value_parser!(u8).range(1..))]
    shards: u8,
    /// A projector lease not renewed for this many seconds is taken over by another worker.
    #[arg(long, env = "SPINELEDGER_LEASE_TTL_SECONDS", default_value_t = 5)]
    lease_ttl_seconds: u64,
    /// How often the notary signs a checkpoint of each clinic's log that grew, e.g. 60s,
    /// 5m. Records after the last checkpoint are only as safe as the database until the
    /// next one: this bounds what a truncation could remove unseen.
    #[arg(long, env = "SPINELEDGER_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// The projections this process runs (comma-separated: treatment_plans,
    /// outcome_statistics, clinic_log). Default: all. Every projection must run somewhere;
    /// a dedicated worker can take one off the service's cores.
    #[arg(long, env = "SPINELEDGER_PROJECTIONS", value_delimiter = ',', value_parser = |name: &str| Projection::from_name(name))]
    projections: Vec<Projection>,
    /// After a wake-up, how long a projector waits for more appends before reading: one
    /// batch for a burst instead of one per append. Adds up to this much projection lag;
    /// saves projector work per append at low load (BENCHMARKS.md).
    #[arg(long, env = "SPINELEDGER_PROJECTOR_COALESCE", default_value = "50ms", value_parser = humantime::parse_duration)]
    projector_coalesce: Duration,
}

impl ProjectorSettings {
    fn config(&self) -> ProjectorConfig {
        let defaults = ProjectorConfig::default();
        ProjectorConfig {
            shards: self.shards,
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds.max(1)),
            coalesce: self.projector_coalesce,
            projections: if self.projections.is_empty() {
                defaults.projections.clone()
            } else {
                self.projections.clone()
            },
            ..defaults
        }
    }
}

#[derive(Debug, Args)]
struct ProjectorArgs {
    #[command(flatten)]
    database: LoginArgs,
    #[arg(long, env = "SPINELEDGER_POOL_SIZE", default_value_t = 8)]
    pool_size: usize,
    #[command(flatten)]
    projector: ProjectorSettings,
    #[command(flatten)]
    checkpoints: CheckpointKeyArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["all", "projection"]))]
struct RebuildArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Rebuild every projection.
    #[arg(long)]
    all: bool,
    /// The projection to rebuild: treatment_plans or outcome_statistics (clinic_log: only
    /// lay its cursors out for --shards; its leaves are never rebuilt).
    projection: Option<String>,
    /// Shard count of the new checkpoints (every projector must then run with it).
    #[arg(long, env = "SPINELEDGER_SHARDS", default_value_t = spineledger_projections::DEFAULT_SHARDS, value_parser = clap::value_parser!(u8).range(1..))]
    shards: u8,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", operator_message(&error));
            ExitCode::FAILURE
        }
    }
}

/// One line, the whole cause chain, no backtrace: an operator's error. A PostgreSQL error
/// contributes its severity, message and SQLSTATE only — its DETAIL can quote row
/// contents (clinical data).
fn operator_message(error: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in error.chain() {
        let part = match cause.downcast_ref::<spineledger_store::tokio_postgres::error::DbError>() {
            Some(db) => format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
            None => cause.to_string(),
        };
        // A DbError's own Display is skipped above; its wrapper says "db error".
        if !parts
            .last()
            .is_some_and(|last: &String| last.contains(&part))
        {
            parts.push(part.replace('\n', " "));
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _telemetry = telemetry::init()?;
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Migrate(args)) => {
            let (applied, config) = database::migrate(args.owner_url()?).await?;
            tracing::info!(applied, database = %spineledger_store::describe(&config), "migrations up to date");
            Ok(())
        }
        Some(Command::Projector(args)) => projector(args).await,
        Some(Command::Rebuild(args)) => rebuild(args).await,
        Some(Command::Verify(args)) => verify(&args).await,
        Some(Command::Audit {
            command: AuditCommand::Key(args),
        }) => {
            println!("{}", args.checkpoint_key.signer(args.create)?.verifier());
            Ok(())
        }
        Some(Command::Audit {
            command: AuditCommand::Export(args),
        }) => export(&args).await,
        Some(Command::Token {
            command: TokenCommand::Issue(args),
        }) => issue_token(&args),
        #[cfg(feature = "tools")]
        Some(Command::Tool(tool)) => tool.run().await,
    }
}

/// A shutdown signal many tasks can wait for.
fn shutdown_channel() -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        server::shutdown_signal().await;
        let _ = stop.send(true);
    });
    stopped
}

async fn stopped(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tls = args.tls.config()?;
    anyhow::ensure!(
        args.listen.ip().is_loopback() || tls.is_some() || args.insecure_plaintext,
        "refusing to serve plaintext gRPC on {}, which other machines can reach: give \
         --tls-cert and --tls-key, listen on loopback, or pass --insecure-plaintext \
         (SPINELEDGER_INSECURE_PLAINTEXT=true) to accept unencrypted patient records on the \
         network",
        args.listen
    );
    let verifier = args.auth.verifier(args.listen)?;
    let logins = args.database.urls()?.prepare().await?;
    if let Some(owner) = &logins.owner {
        // The analysts' SQL releases with the same k as the API.
        spineledger_store::set_statistics_min_cell(owner, args.min_cell.get()).await?;
    }
    let store = logins.store(args.pool_size)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %spineledger_store::describe(&logins.app),
        migrated = logins.owner.is_some(),
        projector = !args.no_projector,
        "spineledger serving"
    );
    let signer = args
        .checkpoints
        .service_signer(args.listen.ip().is_loopback())?;
    if let Some(signer) = &signer {
        tracing::info!(verifier_key = %signer.verifier(), "checkpoints signed with");
    }
    let mut app = App::new(store);
    app.checkpoint_verifier = match (&signer, &args.verifier_key) {
        (Some(signer), _) => Some(signer.verifier().clone()),
        (None, Some(text)) => Some(text.parse::<VerifierKey>()?),
        (None, None) => None,
    };
    app.checkpoints = signer.map(Arc::new);
    app.reads = ReadSettings {
        min_cell: args.min_cell,
        catch_up_timeout: Duration::from_millis(args.catch_up_timeout_ms),
    };
    let settings = server::ServeSettings {
        projector: (!args.no_projector).then(|| args.projector.config()),
        checkpoint_interval: args.projector.checkpoint_interval,
        max_message_bytes: args.max_message_bytes,
        max_in_flight: args.max_in_flight,
        verifier: Arc::new(verifier),
        tls,
        ..server::ServeSettings::default()
    };
    // Where autovacuum is off, ANALYZE the grown tables ourselves (as their owner, when
    // the service has the owner's login): plans made for a small log would otherwise
    // stay in every pooled connection (spineledger_store::keep_statistics).
    let keeper = logins.owner.clone().map(|owner| {
        tokio::spawn(spineledger_store::keep_statistics(
            owner,
            STATISTICS_INTERVAL,
            std::future::pending(),
        ))
    });
    let served = server::serve(
        listener,
        app,
        &logins.projector,
        settings,
        stopped(shutdown_channel()),
    )
    .await;
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// How often `serve` looks for grown tables to ANALYZE where autovacuum is off.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(10);

/// Verifies and prints a line per finding and a summary; an error when anything was
/// found (so the exit status says so).
async fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let key = args.key.key()?;
    let kept = match &args.kept_checkpoint {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
            anyhow::anyhow!(
                "cannot read the kept checkpoint {}: {error}",
                path.display()
            )
        })?),
        None => None,
    };
    let config = spineledger_store::resolve(args.database.owner_url()?).await?;
    let mut client = spineledger_store::connect(&config).await?;
    let report =
        spineledger::verify::verify(&mut client, args.clinic, &key, kept.as_deref()).await?;
    if let Some(clinic) = args.clinic {
        anyhow::ensure!(
            report.streams > 0 || report.leaves > 0,
            "clinic {clinic} has no records in this database (is it the right clinic id?)"
        );
    }
    for finding in &report.findings {
        println!("BROKEN {finding}");
    }
    println!(
        "checked {} events in {} streams and {} access-log entries of {} clinics; {} leaves, \
         {} signed checkpoints held ({} records not yet indexed): {} findings{}",
        report.events,
        report.streams,
        report.access_entries,
        report.clinics,
        report.leaves,
        report.checkpoints,
        report.pending,
        report.findings.len(),
        if report.unhashed > 0 {
            format!(
                "; {} events were recorded before the hash chain and have no hashes",
                report.unhashed
            )
        } else {
            String::new()
        }
    );
    anyhow::ensure!(
        report.findings.is_empty(),
        "{} findings (listed above)",
        report.findings.len()
    );
    Ok(())
}

/// Writes one clinic's audit bundle.
async fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let key = args.key.key()?;
    let config = spineledger_store::resolve(args.database.owner_url()?).await?;
    let mut client = spineledger_store::connect(&config).await?;
    let bundle = spineledger::verify::export(&mut client, args.clinic, &key).await?;
    let json = serde_json::to_vec(&bundle)?;
    if args.out.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&json)?;
    } else {
        std::fs::write(&args.out, &json)
            .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", args.out.display()))?;
        eprintln!(
            "wrote {} events, {} access-log entries, {} leaves and {} checkpoints of clinic {} to {}",
            bundle.events.len(),
            bundle.access_log.len(),
            bundle.leaves.len(),
            bundle.checkpoints.len(),
            args.clinic,
            args.out.display()
        );
    }
    Ok(())
}

/// The longest a development token may live.
const MAX_DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn issue_token(args: &TokenIssueArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.ttl.is_zero() && args.ttl <= MAX_DEV_TOKEN_TTL,
        "--ttl must be more than 0 and at most 30 days"
    );
    let path = args.dev_key.path()?;
    let (key, created) = DevKey::load_or_create(&path)?;
    if created {
        eprintln!("created the development signing key at {}", path.display());
    }
    let request = TokenRequest {
        role: args.role,
        clinics: args.clinics.clone(),
        every_clinic: args.all_clinics,
        subject: args
            .subject
            .clone()
            .unwrap_or_else(|| format!("dev-{}", args.role)),
        ttl: args.ttl,
        audience: args.audience.clone(),
    };
    let token = key.issue(&request)?;
    // Check the claims the way the server will, so a token it would refuse (e.g. an
    // every-clinic grant for a clinician) is refused here, with the reason.
    let verifier = Verifier::new(args.audience.clone()).trust(key.trusted_issuer()?)?;
    verifier.verify(&token)?;
    eprintln!(
        "{} token for {}, valid {}, issuer {}",
        args.role,
        request.subject,
        humantime::format_duration(args.ttl),
        dev::DEV_ISSUER
    );
    println!("{token}");
    Ok(())
}

async fn projector(args: ProjectorArgs) -> anyhow::Result<()> {
    let logins = args.database.urls()?.prepare().await?;
    let notary_pool = logins.projector_pool(2)?;
    let _lag_gauges = if telemetry::metrics_exported() {
        Some(spineledger_projections::lag::spawn(
            logins.projector_pool(1)?,
            Duration::from_secs(5),
        ))
    } else {
        None
    };
    let projector_pool = logins.projector_pool(args.pool_size)?;
    let _pool_gauges =
        spineledger::pool_metrics::observe(vec![("projector", projector_pool.clone())]);
    let projector = Projector::new(projector_pool, logins.projector, args.projector.config());
    let notary = args.checkpoints.service_signer(false)?.map(|signer| {
        tokio::spawn(spineledger_projections::clinic_log::run_notary(
            notary_pool,
            signer,
            args.projector.checkpoint_interval,
            stopped(shutdown_channel()),
        ))
    });
    tracing::info!(owner = %projector.owner(), "projector worker starting");
    projector.run(stopped(shutdown_channel())).await?;
    if let Some(notary) = notary {
        notary.await?;
    }
    Ok(())
}

async fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let (_applied, config) = database::migrate(args.database.owner_url()?).await?;
    // As the owner: a rebuild creates, renames and drops tables.
    let owner = spineledger_store::pool(&config, 2)?;
    let projections = match (&args.projection, args.all) {
        (_, true) => Projection::RUNNING.to_vec(),
        (Some(name), false) => vec![Projection::from_name(name)?],
        (None, false) => anyhow::bail!("name a projection or pass --all"),
    };
    // The read models together (one read of the log), then the clinic log's cursors.
    let models: Vec<Projection> = projections
        .iter()
        .copied()
        .filter(|projection| *projection != Projection::ClinicLog)
        .collect();
    if !models.is_empty() {
        let reports = spineledger_projections::rebuild::rebuild_all(
            &owner,
            &models,
            args.shards,
            spineledger_projections::rebuild::PAGE_SIZE,
        )
        .await?;
        for report in reports {
            let seconds = report.elapsed.as_secs_f64();
            println!(
                "{}: {} events in {:.2} s ({:.0} events/s); live digest {}, rebuilt digest {}: {}",
                report.projection.name(),
                report.events,
                seconds,
                report.events as f64 / seconds.max(1e-9),
                report.live_digest,
                report.rebuilt_digest,
                if report.equal() {
                    "equal"
                } else {
                    "DIFFERENT — the rebuilt model now serves"
                }
            );
        }
    }
    if projections.contains(&Projection::ClinicLog) {
        // Never rebuilt (its leaves are the signed record): only its cursors are laid out
        // for the shard count.
        let changed =
            spineledger_projections::clinic_log::reshard(&mut owner.get().await?, args.shards)
                .await?;
        println!(
            "clinic_log: {}",
            if changed {
                format!(
                    "cursors laid out for {} shards (leaves untouched)",
                    args.shards
                )
            } else {
                "nothing to do (leaves are never rebuilt)".to_owned()
            }
        );
    }
    Ok(())
}
