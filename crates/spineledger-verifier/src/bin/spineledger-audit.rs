//! `spineledger-audit`: checks an audit bundle offline (`spineledger audit export` writes
//! one), with no database and no network. Exit status 0: sound; 1: findings (listed);
//! 2: the bundle or a key could not be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spineledger_verifier::bundle::Bundle;
use spineledger_verifier::checkpoint::VerifierKey;

#[derive(Debug, Parser)]
#[command(
    name = "spineledger-audit",
    version,
    about = "Check a spineledger audit bundle offline: hash chains, the log's index, signed \
             checkpoints, and a checkpoint you kept from earlier (rollback, fork)"
)]
struct Cli {
    /// The bundle (JSON), as `spineledger audit export` writes it.
    bundle: PathBuf,
    /// The verifier key you trust (<name>+<id>+<key>). Without it, the key the bundle
    /// carries is used, which proves only that the bundle is consistent with itself.
    #[arg(long)]
    key: Option<String>,
    /// A checkpoint note you kept from earlier (a file): the bundle's log must contain the
    /// tree it states.
    #[arg(long)]
    kept: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<bool, String> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
    };
    let bundle: Bundle = serde_json::from_str(&read(&cli.bundle)?)
        .map_err(|error| format!("{}: not an audit bundle: {error}", cli.bundle.display()))?;
    let key: VerifierKey = match &cli.key {
        Some(key) => key.parse().map_err(|error| format!("--key: {error}"))?,
        None => {
            eprintln!(
                "warning: trusting the bundle's own key {}; pass --key with one you obtained \
                 independently",
                bundle.verifier_key
            );
            bundle
                .verifier_key
                .parse()
                .map_err(|error| format!("the bundle's key: {error}"))?
        }
    };
    let kept = cli.kept.as_ref().map(read).transpose()?;
    let audit = bundle.audit(&key, kept.as_deref());
    for finding in &audit.findings {
        println!("BROKEN {finding}");
    }
    let latest = audit.latest.map_or_else(
        || "none".to_owned(),
        |head| format!("{} leaves, root {}", head.size, hex::encode(head.root)),
    );
    println!(
        "clinic {}: {} events in {} streams, {} access-log entries, {} leaves ({} records not \
         yet indexed), {} checkpoints held, latest {latest}{}: {} findings",
        bundle.clinic_id,
        audit.events,
        audit.streams,
        audit.access_entries,
        audit.leaves,
        audit.pending,
        audit.checkpoints,
        if kept.is_some() {
            ", kept checkpoint checked"
        } else {
            ""
        },
        audit.findings.len()
    );
    Ok(audit.is_sound())
}
