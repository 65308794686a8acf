//! `spineledger bench`: the product's performance targets, measured in one run
//! beside the raw PostgreSQL figure on the same machine, so ratios hold on a noisy one.
//!
//! Method:
//! 1. A fresh database `spineledger_bench_<time>` is created and migrated; it is dropped
//!    at the end unless `--keep`.
//! 2. **Raw**: `pgbench` inserts the same event row as an append (same table shape and
//!    indexes, `bench_raw_events`, no foreign key or trigger), one per transaction, with 1
//!    and with `--clients` clients for `--seconds` each; per-transaction logs give p50/p99.
//! 3. **Service**: the real binary is started as a child (`serve`, projectors in-process)
//!    on that database. First the transport's floor: gRPC health checks (no token, no
//!    database) from 1 and from `--clients` clients. Then one-event `RegisterPatient`
//!    appends over gRPC from 1 and from `--clients` concurrent clients for `--seconds`
//!    each; latency is request to response. Every client has its own HTTP/2 connection.
//!    During the concurrent phase a monitor samples projection lag: the time from an
//!    acknowledged append until the projector's checkpoint has passed it.
//!    The child's resident memory (VmHWM, VmRSS) is read from /proc after the load.
//! 4. **A large clinic** (in a database of its own, after the load phases): a clinic of
//!    `--episodes` episodes generated through the event store, both projections rebuilt
//!    from position zero (events per second each), and its outcome statistics queried
//!    over gRPC (p50/p99 per query); see [`cohort`].
//!
//! fsync and synchronous_commit stay as the server has them (on by default): durability
//! is never traded for speed, and no append is acknowledged before it committed.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_auth::{DevKey, Role, TokenRequest};
use spineledger_projections::Projection;
use spineledger_store::tokio_postgres::Config;
use spineledger_store::{EventStore, describe};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use uuid::Uuid;

mod cohort;
mod sessions;

/// About how many sessions one episode of the session phase receives (a course of care
/// is 4-6 initial sessions and then a personalised frequency: a few dozen at most).
const SESSIONS_PER_EPISODE: f64 = 20.0;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Seconds each load phase runs.
    pub seconds: u64,
    /// Concurrent clients of the concurrent phases.
    pub clients: usize,
    /// Episodes of the large clinic (generated through the store, rebuilt, queried); 0
    /// skips those phases.
    pub episodes: usize,
    /// Keep the benchmark database afterwards.
    pub keep: bool,
    /// Shards per projection of the benchmarked server and the rebuilds.
    pub shards: u8,
}

/// Latencies of one phase, and what they add up to.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Transactions (or samples) measured.
    pub transactions: usize,
    /// How long the phase ran.
    pub seconds: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// PostgreSQL's CPU time (every backend and the postmaster's reaped children) per
    /// transaction, milliseconds; `None` where not measured.
    pub postgres_cpu_ms: Option<f64>,
    /// The service process's CPU time per transaction, milliseconds (appends only).
    pub service_cpu_ms: Option<f64>,
}

impl Phase {
    fn from_latencies(mut latencies_us: Vec<f64>, seconds: f64) -> Self {
        latencies_us.sort_by(f64::total_cmp);
        Self {
            transactions: latencies_us.len(),
            seconds,
            p50_ms: percentile(&latencies_us, 0.50) / 1000.0,
            p99_ms: percentile(&latencies_us, 0.99) / 1000.0,
            ..Self::default()
        }
    }

    /// Records the CPU time spent between two samples, per transaction.
    fn with_cpu(mut self, before: CpuSample, after: CpuSample) -> Self {
        let per = |spent: f64| spent / (self.transactions.max(1) as f64);
        self.postgres_cpu_ms = Some(per(after.postgres_ms - before.postgres_ms));
        if let (Some(before), Some(after)) = (before.service_ms, after.service_ms) {
            self.service_cpu_ms = Some(per(after - before));
        }
        self
    }

    /// Throughput.
    pub fn per_second(&self) -> f64 {
        self.transactions as f64 / self.seconds.max(1e-9)
    }
}

/// CPU time consumed so far, from /proc, milliseconds (user + system).
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    /// Every PostgreSQL process of the machine, with the postmaster's reaped children
    /// (backends that exited during the phase).
    postgres_ms: f64,
    /// The service child, when there is one.
    service_ms: Option<f64>,
}

/// The kernel reports CPU time in ticks of USER_HZ, which is 100 on Linux.
const MS_PER_TICK: f64 = 10.0;

impl CpuSample {
    fn now(service: Option<u32>) -> Self {
        let mut postgres_ms = 0.0;
        for pid in postgres_pids() {
            let Some(stat) = stat_fields(&pid) else {
                continue;
            };
            let tick = |index: usize| stat.get(index).and_then(|v| v.parse::<f64>().ok());
            postgres_ms += (tick(11).unwrap_or(0.0) + tick(12).unwrap_or(0.0)) * MS_PER_TICK;
            // The postmaster (its parent is not postgres) also carries its reaped children.
            let parent = stat.get(1).map(String::as_str).unwrap_or_default();
            if command_name(parent).as_deref() != Some("postgres") {
                postgres_ms += (tick(13).unwrap_or(0.0) + tick(14).unwrap_or(0.0)) * MS_PER_TICK;
            }
        }
        let service_ms = service.and_then(|pid| {
            let stat = stat_fields(&pid.to_string())?;
            let tick = |index: usize| stat.get(index).and_then(|v| v.parse::<f64>().ok());
            Some((tick(11)? + tick(12)?) * MS_PER_TICK)
        });
        Self {
            postgres_ms,
            service_ms,
        }
    }
}

/// The pids of the machine's PostgreSQL processes.
fn postgres_pids() -> std::collections::HashSet<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| command_name(pid).as_deref() == Some("postgres"))
        .collect()
}

/// The pids of PostgreSQL backends connected to `database`: a backend's process title,
/// its command line, is `postgres: [<cluster>:] <user> <database> <client> <state>`.
fn backends_of(database: &str) -> Vec<String> {
    postgres_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| {
                String::from_utf8_lossy(&line)
                    .split(|c: char| c.is_whitespace() || c == '\0')
                    .any(|word| word == database)
            })
        })
        .collect()
}

fn command_name(pid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_owned())
}

/// The fields of /proc/<pid>/stat after the command name (the first is the state, the
/// second the parent pid, the twelfth utime, then stime, cutime, cstime).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// pgbench inserts, one client.
    pub raw_single: Phase,
    /// pgbench inserts, the concurrent clients.
    pub raw_concurrent: Phase,
    /// gRPC health checks, one client: the transport's floor.
    pub floor_single: Phase,
    /// gRPC health checks, the concurrent clients.
    pub floor_concurrent: Phase,
    /// gRPC appends, one client.
    pub service_single: Phase,
    /// gRPC appends, the concurrent clients.
    pub service_concurrent: Phase,
    /// `RecordSession` on existing episodes, one client.
    pub sessions_single: Phase,
    /// `RecordSession` on existing episodes, the concurrent clients.
    pub sessions_concurrent: Phase,
    /// Projection lag samples under the concurrent load.
    pub lag: Phase,
    /// The server's peak resident memory, MB.
    pub rss_peak_mb: f64,
    /// The server's resident memory after the load, MB.
    pub rss_mb: f64,
    /// The large clinic generated through the store: episodes, events, seconds.
    pub generated: (u64, u64, f64),
    /// Both read models rebuilt together: events in the log and seconds.
    pub rebuild: (u64, f64),
    /// Outcome statistics of the large clinic, per query.
    pub statistics: Vec<(&'static str, Phase)>,
    /// The concurrent clients.
    pub clients: usize,
}

impl BenchReport {
    /// The report as the table BENCHMARKS.md records.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let row = |out: &mut String, name: &str, phase: &Phase| {
            let _ = writeln!(
                out,
                "{name:<44} {:>9.0} /s  p50 {:>7.2} ms  p99 {:>7.2} ms  (n={})",
                phase.per_second(),
                phase.p50_ms,
                phase.p99_ms,
                phase.transactions
            );
        };
        let cpu = |out: &mut String, name: &str, phase: &Phase| {
            if let Some(postgres) = phase.postgres_cpu_ms {
                let service = phase.service_cpu_ms.unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "{:<44} {:>6.3} ms  (PostgreSQL {postgres:.3} ms, service {service:.3} ms)",
                    format!("  CPU per transaction, {name}"),
                    postgres + service
                );
            }
        };
        row(&mut out, "raw pgbench insert, 1 client", &self.raw_single);
        row(
            &mut out,
            &format!("raw pgbench insert, {} clients", self.clients),
            &self.raw_concurrent,
        );
        row(&mut out, "gRPC health check, 1 client", &self.floor_single);
        row(
            &mut out,
            &format!("gRPC health check, {} clients", self.clients),
            &self.floor_concurrent,
        );
        row(&mut out, "gRPC append, 1 client", &self.service_single);
        row(
            &mut out,
            &format!("gRPC append, {} clients", self.clients),
            &self.service_concurrent,
        );
        row(
            &mut out,
            "gRPC RecordSession, 1 client",
            &self.sessions_single,
        );
        row(
            &mut out,
            &format!("gRPC RecordSession, {} clients", self.clients),
            &self.sessions_concurrent,
        );
        cpu(&mut out, "raw, 1 client", &self.raw_single);
        cpu(
            &mut out,
            &format!("raw, {} clients", self.clients),
            &self.raw_concurrent,
        );
        cpu(&mut out, "health check, 1 client", &self.floor_single);
        cpu(
            &mut out,
            &format!("health check, {} clients", self.clients),
            &self.floor_concurrent,
        );
        cpu(&mut out, "append, 1 client", &self.service_single);
        cpu(
            &mut out,
            &format!("append, {} clients", self.clients),
            &self.service_concurrent,
        );
        cpu(&mut out, "session, 1 client", &self.sessions_single);
        cpu(
            &mut out,
            &format!("session, {} clients", self.clients),
            &self.sessions_concurrent,
        );
        let _ = writeln!(
            out,
            "{:<44} p50 {:>7.2} ms  p99 {:>7.2} ms  (n={})",
            "projection lag under the concurrent load",
            self.lag.p50_ms,
            self.lag.p99_ms,
            self.lag.transactions
        );
        let _ = writeln!(
            out,
            "{:<44} peak {:.0} MB, after load {:.0} MB",
            "server resident memory", self.rss_peak_mb, self.rss_mb
        );
        let (episodes, events, seconds) = self.generated;
        if episodes > 0 {
            let _ = writeln!(
                out,
                "{:<44} {:>9.0} events/s ({events} events in {seconds:.2} s)",
                format!("generate {episodes} episodes through the store"),
                events as f64 / seconds.max(1e-9)
            );
        }
        for (label, phase) in &self.statistics {
            row(&mut out, &format!("statistics, {label}"), phase);
        }
        let (events, seconds) = self.rebuild;
        if events > 0 {
            let _ = writeln!(
                out,
                "{:<44} {:>9.0} events/s ({events} events in {seconds:.2} s)",
                "rebuild both read models",
                events as f64 / seconds.max(1e-9)
            );
        }
        let _ = writeln!(out, "\nratios against raw PostgreSQL measured in this run:");
        let _ = writeln!(
            out,
            "  throughput at {} clients: {:.2}x raw (target >= 2x)",
            self.clients,
            self.service_concurrent.per_second() / self.raw_concurrent.per_second()
        );
        let _ = writeln!(
            out,
            "  p50 latency at 1 client:  {:.2}x raw (target <= 1.3x)",
            self.service_single.p50_ms / self.raw_single.p50_ms
        );
        let _ = writeln!(
            out,
            "  sessions at {} clients:   {:.2}x raw throughput, p99 {:.1} ms (target >= 2x, <= 25 ms)",
            self.clients,
            self.sessions_concurrent.per_second() / self.raw_concurrent.per_second(),
            self.sessions_concurrent.p99_ms
        );
        let _ = writeln!(
            out,
            "  sessions at 1 client:     {:.2}x raw p50 (target <= 1.3x)",
            self.sessions_single.p50_ms / self.raw_single.p50_ms
        );
        let _ = writeln!(
            out,
            "  the transport alone (health checks): {:.2}x raw throughput at {} clients, {:.2}x raw p50 at 1 client",
            self.floor_concurrent.per_second() / self.raw_concurrent.per_second(),
            self.clients,
            self.floor_single.p50_ms / self.raw_single.p50_ms
        );
        out
    }
}

/// Runs every phase against a fresh database on `server`.
///
/// # Errors
/// Any phase that cannot run (no pgbench, no server, a failed append).
pub async fn run(server: &Config, plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    let name = format!(
        "spineledger_bench_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    // The large clinic gets a database of its own: its log would otherwise slow the load
    // phases (the integrator indexing it, reads over a bigger log), and theirs its rebuild.
    let clinic_name = format!("{name}_clinic");
    let admin =
        spineledger_store::connect(&spineledger_store::with_dbname(server, "postgres")).await?;
    let drop_all = |created: Vec<String>| {
        let admin = &admin;
        async move {
            for database in created {
                let dropped = admin
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        spineledger_store::quote_identifier(&database)
                    ))
                    .await;
                if let Err(error) = dropped {
                    eprintln!("could not drop the benchmark database {database}: {error}");
                }
            }
        }
    };
    let mut created = Vec::new();
    for database in [&name, &clinic_name] {
        let create = admin
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                spineledger_store::quote_identifier(database)
            ))
            .await;
        if let Err(error) = create {
            drop_all(created).await;
            return Err(error.into());
        }
        created.push(database.clone());
    }
    let config = spineledger_store::with_dbname(server, &name);
    let clinic_config = spineledger_store::with_dbname(server, &clinic_name);
    let mut report = BenchReport {
        clients: plan.clients,
        ..BenchReport::default()
    };
    let mut result = measure(&config, plan, &mut report).await;
    if result.is_ok() && plan.episodes > 0 {
        result = cohort::measure(&clinic_config, plan, &mut report).await;
    }
    if !plan.keep {
        drop_all(created).await;
    }
    result.map(|()| report)
}

async fn measure(
    config: &Config,
    plan: &BenchPlan,
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    spineledger_store::migrate(config).await?;
    let owner = spineledger_store::connect(config).await?;
    owner
        .batch_execute(
            "CREATE TABLE bench_raw_events (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)",
        )
        .await?;
    let logs = std::env::temp_dir().join(format!("spineledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    report.raw_single = pgbench(config, &logs, 1, plan.seconds).await?;
    report.raw_concurrent = pgbench(config, &logs, plan.clients, plan.seconds).await?;
    let _ = std::fs::remove_dir_all(&logs);

    let mut child = Server::start(config, plan.shards, None).await?;
    let outcome = drive(&child, config, plan, report).await;
    child.stop().await;
    outcome
}

/// Runs pgbench with a one-insert transaction; returns its per-transaction latencies.
async fn pgbench(
    config: &Config,
    logs: &Path,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let script = logs.join("append.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_raw_events (clinic_id, stream_id, version, event_id, event_type, \
         schema_version, payload, metadata, fingerprint, occurred_at) VALUES (gen_random_uuid(), \
         'patient-' || gen_random_uuid(), 1, gen_random_uuid(), 'PatientRegistered', 1, \
         '{\"sex\": \"female\", \"birth_year\": 1971, \"patient_id\": \"3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41\", \"occurred_at\": \"2026-11-02T09:00:00Z\"}'::jsonb, \
         '{\"actor\": \"bench\", \"command_id\": \"0b6f1c9e-2d4a-4f8b-9c3e-5a7d1e2f3b4c\"}'::jsonb, \
         decode(repeat('00', 32), 'hex'), now());\n",
    )?;
    let prefix = logs.join(format!("raw{clients}"));
    let mut command = tokio::process::Command::new("pgbench");
    command
        .arg("-n")
        .args(["-f", &script.display().to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.clamp(1, 2).to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-l")
        .args(["--log-prefix", &prefix.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir(logs);
    libpq_settings(&mut command, config);
    let before = CpuSample::now(None);
    let output = command
        .output()
        .await
        .context("cannot run pgbench (install the PostgreSQL client tools)")?;
    // pgbench's backends exit after it does, and their CPU time reaches the postmaster's
    // reaped-children total only once it has waited for them: sampling at once would
    // miss a whole backend's time (a one-client phase once measured 0.004 ms an insert).
    // Nothing else connects to the benchmark's database during this phase.
    let database = config.get_dbname().unwrap_or_default();
    let exiting = Instant::now() + Duration::from_secs(10);
    while !backends_of(database).is_empty() {
        if Instant::now() >= exiting {
            eprintln!(
                "warning: pgbench's backends had not exited after 10 s; the raw phase's CPU \
                 time may be undercounted"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = CpuSample::now(None);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(logs)? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("raw{clients}.")));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            // client_id transaction_no time_us script_no epoch epoch_us
            if let Some(latency) = line
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<f64>().ok())
            {
                latencies.push(latency);
            }
        }
        std::fs::remove_file(&path)?;
    }
    Ok(Phase::from_latencies(latencies, seconds as f64).with_cpu(before, after))
}

fn libpq_settings(command: &mut tokio::process::Command, config: &Config) {
    use spineledger_store::tokio_postgres::config::Host;
    if let Some(Host::Tcp(host)) = config.get_hosts().first() {
        command.env("PGHOST", host);
    }
    if let Some(port) = config.get_ports().first() {
        command.env("PGPORT", port.to_string());
    }
    if let Some(user) = config.get_user() {
        command.env("PGUSER", user);
    }
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
    }
    if let Some(dbname) = config.get_dbname() {
        command.env("PGDATABASE", dbname);
    }
    // The raw baseline and the service connect alike: both with TLS or both without.
    command.env("PGSSLMODE", ssl_mode(config));
    if let Some(ca) = spineledger_store::tls::server_ca_path() {
        command.env("PGSSLROOTCERT", ca);
    }
}

/// The connection's sslmode in libpq's words: verify-full whenever a CA is configured
/// (as the service then connects).
fn ssl_mode(config: &Config) -> &'static str {
    use spineledger_store::tokio_postgres::config::SslMode;
    match config.get_ssl_mode() {
        SslMode::Disable => "disable",
        _ if spineledger_store::tls::server_ca_configured() => "verify-full",
        SslMode::Require => "require",
        _ => "prefer",
    }
}

/// The service as a child process on a free port.
struct Server {
    child: tokio::process::Child,
    address: String,
    /// The development key the child trusts, in a file of the bench's own (removed on
    /// drop): the bench signs its clients' tokens with it.
    key: DevKey,
    _key_dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts `serve` on `config`'s database; `projections` limits the projections it
    /// runs (all by default).
    async fn start(config: &Config, shards: u8, projections: Option<&str>) -> anyhow::Result<Self> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let address = format!("127.0.0.1:{port}");
        let url = with_password(config);
        let key_dir =
            TempDir(std::env::temp_dir().join(format!("spineledger-bench-key-{}", Uuid::new_v4())));
        let key_file = key_dir.0.join("dev-signing-key.pem");
        let (key, _) = DevKey::load_or_create(&key_file)?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", &address, "--database-url", &url])
            .args(["--trust-dev-key", "true", "--dev-key-file"])
            .arg(&key_file)
            .args(["--shards", &shards.to_string()])
            .args(
                projections
                    .map(|names| vec!["--projections", names])
                    .unwrap_or_default(),
            )
            .args(
                spineledger_store::tls::server_ca_path()
                    .map(|ca| vec![std::ffi::OsString::from("--database-ca"), ca.into()])
                    .unwrap_or_default(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let server = Self {
            child,
            address: format!("http://{address}"),
            key,
            _key_dir: key_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = Channel::from_shared(server.address.clone())?
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let serving = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().status == 1);
                if serving {
                    return Ok(server);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the benchmarked server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One HTTP/2 connection per client: each bench client is one clinic's software, as
    /// each pgbench client is one PostgreSQL connection.
    async fn connections(&self, clients: usize) -> anyhow::Result<Vec<Channel>> {
        let mut channels = Vec::with_capacity(clients);
        for _ in 0..clients {
            channels.push(
                Channel::from_shared(self.address.clone())?
                    .connect()
                    .await?,
            );
        }
        Ok(channels)
    }

    /// An integration token for `clinics`, as clinic software would hold.
    fn token(&self, clinics: &[Uuid]) -> anyhow::Result<BearerToken> {
        let token = self.key.issue(&TokenRequest::for_clinics(
            Role::Integration,
            clinics,
            "bench",
            Duration::from_secs(24 * 3600),
        ))?;
        BearerToken::new(&token).map_err(|_| anyhow::anyhow!("a signed token is a valid header"))
    }

    fn resident_mb(&self) -> (f64, f64) {
        let Some(pid) = self.child.id() else {
            return (0.0, 0.0);
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM for a graceful stop; kill if it does not go.
            let _ = tokio::process::Command::new("kill")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A URL for the child, with the password if there is one (never printed) and the same
/// sslmode.
fn with_password(config: &Config) -> String {
    let described = format!("{}?sslmode={}", describe(config), ssl_mode(config));
    match config.get_password() {
        Some(password) => described.replacen(
            "@",
            &format!(":{}@", url_escape(&String::from_utf8_lossy(password))),
            1,
        ),
        None => described,
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A command header of the bench's actor at `clinic`, with a fresh command id.
fn header(clinic: Uuid) -> Option<v1::CommandHeader> {
    Some(v1::CommandHeader {
        clinic_id: clinic.to_string(),
        command_id: Uuid::new_v4().to_string(),
        expected_version: None,
        correlation_id: String::new(),
        causation_id: String::new(),
        actor: "bench".into(),
    })
}

/// A moment `hours` back, so that every fact sent lies in the past (and a set-up's facts
/// in clinical order).
fn hours_ago(hours: i64) -> Option<prost_types::Timestamp> {
    Some(spineledger_api::views::timestamp(
        chrono::Utc::now() - chrono::TimeDelta::hours(hours),
    ))
}

fn register(clinic: Uuid) -> v1::RegisterPatientRequest {
    v1::RegisterPatientRequest {
        header: header(clinic),
        occurred_at: hours_ago(1),
        patient_id: Uuid::new_v4().to_string(),
        birth_year: Some(1971),
        sex: v1::Sex::Female as i32,
    }
}

/// A load phase's end: every client's latencies (the first failure fails the phase, named
/// by `what`), and the CPU spent since `before`.
async fn phase_of(
    server: &Server,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<f64>, tonic::Status>>>,
    what: &str,
    before: CpuSample,
    started: Instant,
) -> anyhow::Result<Phase> {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await?
                .map_err(|status| anyhow::anyhow!("{what} failed: {status}"))?,
        );
    }
    let after = CpuSample::now(server.child.id());
    Ok(Phase::from_latencies(latencies, started.elapsed().as_secs_f64()).with_cpu(before, after))
}

/// The latest acknowledged append: (position, clinic, when acknowledged).
type LastAck = Arc<Mutex<Option<(i64, Uuid, Instant)>>>;

/// The transport's floor: gRPC health checks (HTTP/2, tonic, no authentication, no
/// database) from `clients` clients on connections of their own. No append can answer
/// faster, or more of them a second, than this.
async fn health_checks(server: &Server, clients: usize, seconds: u64) -> anyhow::Result<Phase> {
    let channels = server.connections(clients).await?;
    let before = CpuSample::now(server.child.id());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|channel| {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let sent = Instant::now();
                    health
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    phase_of(server, tasks, "a health check", before, started).await
}

async fn appends(
    server: &Server,
    clients: usize,
    seconds: u64,
    last_ack: Option<LastAck>,
) -> anyhow::Result<Phase> {
    let channels = server.connections(clients).await?;
    let before = CpuSample::now(server.child.id());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|channel| {
            let clinic = Uuid::new_v4();
            let mut client =
                ClinicalRecordsServiceClient::with_interceptor(channel, server.token(&[clinic])?);
            let last_ack = last_ack.clone();
            Ok(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let sent = Instant::now();
                    let response = client.register_patient(register(clinic)).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                    if let (Some(last), Some(result)) = (&last_ack, response.into_inner().result) {
                        *last.lock().await = Some((result.global_position, clinic, Instant::now()));
                    }
                }
                Ok::<_, tonic::Status>(latencies)
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    phase_of(server, tasks, "an append", before, started).await
}

async fn drive(
    server: &Server,
    config: &Config,
    plan: &BenchPlan,
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    report.floor_single = health_checks(server, 1, plan.seconds).await?;
    report.floor_concurrent = health_checks(server, plan.clients, plan.seconds).await?;
    report.service_single = appends(server, 1, plan.seconds, None).await?;
    // Enough episodes that each gets about a course's worth of sessions, judged by the
    // one-client append rate just measured.
    let episodes = |clients: usize, rate: f64| {
        let per_client = rate / clients.max(1) as f64 * plan.seconds as f64;
        (per_client / SESSIONS_PER_EPISODE).ceil().max(1.0) as usize
    };
    report.sessions_single = sessions::record_sessions(
        server,
        1,
        episodes(1, report.service_single.per_second()),
        plan.seconds,
    )
    .await?;

    let app_login = spineledger_store::as_role(config, spineledger_store::APP_ROLE);
    let store = EventStore::new(spineledger_store::pool(&app_login, 4)?);
    let last_ack: LastAck = Arc::new(Mutex::new(None));
    let loading = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (store, last_ack, loading) = (store.clone(), last_ack.clone(), loading.clone());
        tokio::spawn(async move {
            let mut lags = Vec::new();
            while loading.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some((position, clinic, acknowledged)) = *last_ack.lock().await else {
                    continue;
                };
                let caught_up = spineledger_projections::wait_for_position(
                    &store,
                    Projection::TreatmentPlans,
                    &[clinic],
                    position,
                    Duration::from_secs(30),
                )
                .await;
                if matches!(caught_up, Ok(true)) {
                    lags.push(acknowledged.elapsed().as_secs_f64() * 1e6);
                }
            }
            lags
        })
    };
    report.service_concurrent = appends(server, plan.clients, plan.seconds, Some(last_ack)).await?;
    loading.store(false, Ordering::Release);
    let lags = monitor.await?;
    report.lag = Phase::from_latencies(lags, plan.seconds as f64);
    report.sessions_concurrent = sessions::record_sessions(
        server,
        plan.clients,
        episodes(plan.clients, report.service_concurrent.per_second()),
        plan.seconds,
    )
    .await?;
    (report.rss_peak_mb, report.rss_mb) = server.resident_mb();

    Ok(())
}
