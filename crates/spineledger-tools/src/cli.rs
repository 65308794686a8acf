//! The command line of the tools: the `simulate`, `stats` and `bench` subcommands of the
//! `spineledger` binary, defined here so the binary only flattens them into its own.

use clap::{Args, Subcommand, ValueEnum};

use std::path::PathBuf;

use spineledger_api::client::BearerToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::stats::{Format, StatsQuery};

/// The tool subcommands.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Drive the API with a realistic synthetic cohort (demo, test data, load).
    Simulate(SimulateArgs),
    /// Print outcome statistics through the gRPC API.
    Stats(StatsArgs),
    /// Write an HTML report of the outcome statistics and the case-mix comparison of
    /// clinics, with charts, as one self-contained file (analyst token).
    Report(ReportArgs),
    /// Print an episode's history and its treatment plan as it stood (auditor token).
    Replay(ReplayArgs),
    /// Write a clinic's access log as FHIR R4 AuditEvent resources, one per line (NDJSON),
    /// to standard output (auditor token).
    AccessLog(AccessLogArgs),
    /// Measure appends, projection lag, memory and rebuild against raw PostgreSQL
    /// (pgbench) in one run, on a fresh database (see BENCHMARKS.md).
    Bench(BenchArgs),
}

impl Tool {
    /// Runs the tool, printing its report.
    ///
    /// # Errors
    /// The tool's failure; for `simulate`, any rejected command too.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Simulate(args) => simulate(args).await,
            Self::Bench(args) => {
                if let Some(ca) = &args.database_ca {
                    spineledger_store::tls::trust_server_ca(ca)?;
                }
                let server = spineledger_store::resolve(args.database_url.as_deref()).await?;
                let plan = crate::bench::BenchPlan {
                    seconds: if args.quick { 2 } else { args.seconds },
                    clients: args.clients.max(1),
                    episodes: if args.quick { 2000 } else { args.episodes },
                    keep: args.keep,
                    shards: args.shards,
                };
                let report = crate::bench::run(&server, &plan).await?;
                print!("{}", report.render());
                Ok(())
            }
            Self::AccessLog(args) => {
                let token = args.server.bearer()?;
                let channel = args.server.channel().await?;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let written =
                    crate::access_log::export(channel, &token, args.clinic, &mut out).await?;
                std::io::Write::flush(&mut out)?;
                eprintln!("{written} AuditEvent resources written");
                Ok(())
            }
            Self::Replay(args) => {
                let token = args.server.bearer()?;
                let clinic = match args.clinic {
                    Some(clinic) => clinic,
                    None => {
                        match spineledger_auth::principal::claimed_clinics(&args.server.token.0)
                            .as_deref()
                        {
                            Some([only]) => *only,
                            _ => anyhow::bail!(
                                "name the episode's clinic with --clinic (the token does not grant \
                             exactly one)"
                            ),
                        }
                    }
                };
                let as_of = match (args.as_of, args.at_position) {
                    (Some(at), _) => Some(crate::replay::Moment::RecordedAt(at)),
                    (None, Some(position)) => Some(crate::replay::Moment::Position(position)),
                    (None, None) => None,
                };
                let query = crate::replay::ReplayQuery {
                    clinic,
                    episode: args.episode,
                    as_of,
                };
                let channel = args.server.channel().await?;
                print!(
                    "{}",
                    crate::replay::fetch_and_render(channel, &token, &query).await?
                );
                Ok(())
            }
            Self::Report(args) => {
                let query = crate::report::ReportQuery {
                    clinics: args.clinics,
                    from_month: args.from_month,
                    to_month: args.to_month,
                };
                let token = args.server.bearer()?;
                let channel = args.server.channel().await?;
                let data = crate::report::fetch(channel, &token, &query).await?;
                let html = crate::report::render(&data, &query, chrono::Utc::now())?;
                std::fs::write(&args.out, html).map_err(|error| {
                    anyhow::anyhow!("cannot write {}: {error}", args.out.display())
                })?;
                eprintln!("report written to {}", args.out.display());
                Ok(())
            }
            Self::Stats(args) => {
                let query = StatsQuery {
                    clinics: args.clinics,
                    group_by: args.group_by,
                    from_month: args.from_month,
                    to_month: args.to_month,
                    as_of_position: args.as_of_position,
                    as_of_clinic_positions: args.as_of_clinic_positions,
                    as_of: args.as_of,
                };
                let format = match args.format {
                    FormatArg::Table => Format::Table,
                    FormatArg::Csv => Format::Csv,
                    FormatArg::Json => Format::Json,
                };
                let token = args.server.bearer()?;
                let channel = args.server.channel().await?;
                print!(
                    "{}",
                    crate::stats::fetch_and_render(channel, &token, &query, format).await?
                );
                Ok(())
            }
        }
    }
}

/// The arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The PostgreSQL server to measure on: a fresh database `spineledger_bench_<time>` is
    /// created there (and dropped afterwards). Default: the local server.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// PostgreSQL's CA (PEM), as for `serve`: the service and pgbench then both verify.
    #[arg(long, env = "PGSSLROOTCERT")]
    database_ca: Option<PathBuf>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients of the concurrent phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Episodes of the large clinic generated through the event store (about 18 events
    /// each), then rebuilt and queried for statistics; 0 skips those phases.
    #[arg(long, default_value_t = 100_000)]
    episodes: usize,
    /// Keep the benchmark database instead of dropping it.
    #[arg(long)]
    keep: bool,
    /// A smoke run of every phase in well under two minutes (2 s phases, a clinic of
    /// 2,000 episodes), for CI: it shows that each phase runs, not how fast.
    #[arg(long, conflicts_with_all = ["seconds", "episodes"])]
    quick: bool,
    /// Shards per projection of the benchmarked server and the rebuilds.
    #[arg(long, default_value_t = spineledger_projections::DEFAULT_SHARDS, value_parser = clap::value_parser!(u8).range(1..))]
    shards: u8,
}

/// The arguments of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The server and an integration token (`spineledger token issue --role integration
    /// --clinic …`): the cohort is simulated at every clinic the token grants.
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long, default_value_t = 20)]
    patients_per_clinic: usize,
    /// Everything (ids, values, dates) derives from the seed: the same seed twice appends
    /// nothing new.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First day of the simulated window; every fact lies within 200 days after it, which
    /// must be in the past.
    #[arg(long, default_value = "2026-01-05")]
    start_date: chrono::NaiveDate,
    /// Patients driven concurrently.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// The arguments of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The server and an analyst token (`spineledger token issue --role analyst --clinic
    /// …`), or a clinician's or integration's for its own clinics.
    #[command(flatten)]
    server: ServerArgs,
    /// Only these clinics (repeatable); default: every clinic the token grants.
    #[arg(long = "clinic")]
    clinics: Vec<uuid::Uuid>,
    /// Group by these dimensions (repeatable): clinic, diagnosis, initial_sessions,
    /// frequency_phase, adherence_band, age_band.
    #[arg(long = "group-by")]
    group_by: Vec<spineledger_readmodels::statistics::Dimension>,
    /// Episodes first evaluated from this month on (the first of a month, 2026-01-01).
    #[arg(long = "from-month")]
    from_month: Option<chrono::NaiveDate>,
    /// ... and before this month (the first of a month).
    #[arg(long = "to-month")]
    to_month: Option<chrono::NaiveDate>,
    /// The statistics as they stood at this global position (a replay of the log).
    #[arg(long = "as-of-position", conflicts_with_all = ["as_of", "as_of_clinic_positions"])]
    as_of_position: Option<i64>,
    /// Each clinic as it stood at its own position, CLINIC=POSITION (repeatable): the
    /// "reflects" an earlier answer printed, to have it again.
    #[arg(
        long = "as-of-clinic-position",
        value_parser = parse_clinic_position,
        conflicts_with = "as_of"
    )]
    as_of_clinic_positions: Vec<(uuid::Uuid, i64)>,
    /// The statistics of the events recorded at or before this time (RFC 3339).
    #[arg(long = "as-of")]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    format: FormatArg,
}

/// The arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The server and an analyst token (`spineledger token issue --role analyst --clinic
    /// …`).
    #[command(flatten)]
    server: ServerArgs,
    /// Only these clinics (repeatable); default: every clinic the token grants.
    #[arg(long = "clinic")]
    clinics: Vec<uuid::Uuid>,
    /// Episodes first evaluated from this month on (the first of a month, 2026-01-01).
    #[arg(long = "from-month")]
    from_month: Option<chrono::NaiveDate>,
    /// ... and before this month (the first of a month).
    #[arg(long = "to-month")]
    to_month: Option<chrono::NaiveDate>,
    /// The HTML file to write.
    #[arg(long)]
    out: PathBuf,
}

/// `CLINIC=POSITION`, as `stats` prints what its figures reflect.
fn parse_clinic_position(text: &str) -> Result<(uuid::Uuid, i64), String> {
    let (clinic, position) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not CLINIC=POSITION"))?;
    let clinic = clinic
        .trim()
        .parse()
        .map_err(|_| format!("{clinic:?} is not a clinic id"))?;
    let position = position
        .trim()
        .parse()
        .map_err(|_| format!("{position:?} is not a global position"))?;
    Ok((clinic, position))
}

/// The arguments of `access-log`.
#[derive(Debug, Args)]
pub struct AccessLogArgs {
    /// The server and an auditor token for the clinic.
    #[command(flatten)]
    server: ServerArgs,
    /// The clinic.
    #[arg(long)]
    clinic: uuid::Uuid,
}

/// The arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The server and an auditor token (`spineledger token issue --role auditor --clinic …`).
    #[command(flatten)]
    server: ServerArgs,
    /// The episode's clinic (default: the token's, when it grants exactly one).
    #[arg(long)]
    clinic: Option<uuid::Uuid>,
    /// The episode.
    #[arg(long)]
    episode: uuid::Uuid,
    /// Show the record as it stood at this time (RFC 3339, e.g. 2026-11-02T09:00:00Z).
    #[arg(long)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Or as it stood at this global position.
    #[arg(long, conflicts_with = "as_of")]
    at_position: Option<i64>,
}

/// How `stats` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Aligned columns for a terminal.
    Table,
    /// Comma-separated values for a spreadsheet.
    Csv,
    /// JSON for a program.
    Json,
}

/// A bearer token as given; its `Debug` does not show it (a token is a credential).
#[derive(Clone)]
pub struct Token(String);

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Ok(Self(token.to_owned()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The server a tool talks to, and how.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server: http://host:port, or https://host:port for TLS.
    #[arg(
        long,
        env = "SPINELEDGER_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    target: String,
    /// The bearer token (better: set SPINELEDGER_TOKEN, which `ps` and shell history do
    /// not show).
    #[arg(long = "token", env = "SPINELEDGER_TOKEN", hide_env_values = true)]
    token: Token,
    /// The CA certificate (PEM) that signed the server's TLS certificate.
    #[arg(long, env = "SPINELEDGER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM), for a server that requires mutual TLS.
    #[arg(long, env = "SPINELEDGER_TLS_CLIENT_CERT", requires = "tls_client_key")]
    tls_client_cert: Option<PathBuf>,
    /// The private key of --tls-client-cert (PEM).
    #[arg(long, env = "SPINELEDGER_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
}

impl ServerArgs {
    fn bearer(&self) -> anyhow::Result<BearerToken> {
        BearerToken::new(&self.token.0).map_err(|_| {
            anyhow::anyhow!("the token is not a JWT (it has characters a header cannot carry)")
        })
    }

    /// A channel to the target, over TLS for an https:// target.
    async fn channel(&self) -> anyhow::Result<Channel> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", path.display()))
        };
        let mut endpoint = Channel::from_shared(self.target.clone())
            .map_err(|error| anyhow::anyhow!("--target {}: {error}", self.target))?;
        if self.target.starts_with("https://") {
            // The given CA, else the public web PKI's roots (Mozilla's list).
            let mut tls = match &self.tls_ca {
                Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
                None => ClientTlsConfig::new().with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint.tls_config(tls)?;
        } else {
            anyhow::ensure!(
                self.tls_ca.is_none() && self.tls_client_cert.is_none(),
                "TLS options were given for a plaintext target {}: use https://",
                self.target
            );
        }
        endpoint
            .connect()
            .await
            .map_err(|error| anyhow::anyhow!("cannot connect to {}: {error}", self.target))
    }
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let clinics = spineledger_auth::principal::claimed_clinics(&args.server.token.0)
        .filter(|clinics| !clinics.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the token names no clinics to simulate: issue one with \
                 `spineledger token issue --role integration --clinic <uuid> …`"
            )
        })?;
    let token = args.server.bearer()?;
    let channel = args.server.channel().await?;
    let cohort = crate::simulate::Cohort {
        clinics: clinics.clone(),
        patients_per_clinic: args.patients_per_clinic,
        seed: args.seed,
        start_date: args.start_date,
        concurrency: args.concurrency,
    };
    let started = std::time::Instant::now();
    let report = crate::simulate::run(channel, &token, &cohort).await?;
    print!("{}", report.render());
    println!(
        "{} clinics x {} patients, seed {}, in {:.1} s",
        clinics.len(),
        args.patients_per_clinic,
        args.seed,
        started.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        report.total_rejected() == 0,
        "{} commands were rejected",
        report.total_rejected()
    );
    Ok(())
}
