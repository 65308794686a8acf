//! `spineledger`: one binary, one subcommand per job. With no subcommand it serves.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use spineledger::{App, database, server, telemetry};

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
    /// Serve the gRPC API (the default).
    Serve(ServeArgs),
    /// Create the database if missing and apply the embedded migrations, then exit.
    Migrate(DatabaseArgs),
    /// Drive the API with a realistic synthetic cohort (demo, test data, load).
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    #[arg(long, default_value_t = 3)]
    clinics: usize,
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

#[derive(Debug, Args)]
struct DatabaseArgs {
    /// PostgreSQL URL. Default: the local server at 127.0.0.1:5432 as the current OS user
    /// (or postgres), database `spineledger`, created if missing.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SPINELEDGER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Maximum PostgreSQL connections in the pool.
    #[arg(long, env = "SPINELEDGER_POOL_SIZE", default_value_t = 32)]
    pool_size: usize,
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
            // One line, the whole cause chain, no backtrace: an operator's error.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _telemetry = telemetry::init()?;
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Migrate(args)) => {
            let (applied, config) = database::migrate(args.database_url.as_deref()).await?;
            tracing::info!(applied, database = %spineledger_store::describe(&config), "migrations up to date");
            Ok(())
        }
        Some(Command::Simulate(args)) => {
            let cohort = spineledger::simulate::Cohort {
                clinics: args.clinics,
                patients_per_clinic: args.patients_per_clinic,
                seed: args.seed,
                start_date: args.start_date,
                concurrency: args.concurrency,
            };
            let started = std::time::Instant::now();
            let report = spineledger::simulate::run(&args.target, &cohort).await?;
            print!("{}", report.render());
            println!(
                "{} clinics x {} patients, seed {}, in {:.1} s",
                args.clinics,
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
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (store, config) =
        database::open(args.database.database_url.as_deref(), args.pool_size).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %spineledger_store::describe(&config),
        "spineledger serving"
    );
    server::run(listener, App::new(store), server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
