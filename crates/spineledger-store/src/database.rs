//! Finding, creating and migrating the database, and the connection pool.
//!
//! With no configuration the service uses the local PostgreSQL at 127.0.0.1:5432 as the
//! current OS user (falling back to `postgres`), database `spineledger`, created if
//! missing. Migrations are embedded in the binary and serialised across processes by an
//! advisory lock, so two processes starting at once migrate exactly once.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::StoreError;

/// The database a default installation uses.
pub const DEFAULT_DATABASE: &str = "spineledger";
/// The role every pooled connection switches to after migration: it may insert and read
/// events but never change them (see the migrations for its grants).
pub const APP_ROLE: &str = "spineledger_app";
/// Advisory lock key that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x5350_494e_454c_4544; // "SPINELED"

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Parses a `postgres://` URL or a key=value connection string.
pub fn parse_url(url: &str) -> Result<Config, StoreError> {
    Config::from_str(url).map_err(|source| StoreError::Unreachable {
        url: "<unparseable DATABASE_URL>".into(),
        source,
    })
}

/// `postgres://user@host:port/dbname` for logs and errors: never the password.
pub fn describe(config: &Config) -> String {
    let host = config.get_hosts().first().map_or_else(
        || "localhost".to_owned(),
        |host| match host {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        },
    );
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let dbname = config.get_dbname().unwrap_or("");
    format!("postgres://{user}@{host}:{port}/{dbname}")
}

/// The configuration to use: the given URL, or the first local candidate PostgreSQL
/// accepts (current OS user, then `postgres`).
pub async fn resolve(url: Option<&str>) -> Result<Config, StoreError> {
    if let Some(url) = url {
        return parse_url(url);
    }
    let mut last_error = None;
    for config in local_candidates() {
        match connect(&with_dbname(&config, "postgres")).await {
            Ok(_client) => return Ok(config),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or(StoreError::Configuration(
        "no local PostgreSQL candidate".into(),
    )))
}

fn local_candidates() -> Vec<Config> {
    let mut users: Vec<String> = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .filter(|user| !user.is_empty())
        .collect();
    users.push("postgres".into());
    users.dedup();
    users
        .into_iter()
        .map(|user| {
            let mut config = Config::new();
            config
                .host("127.0.0.1")
                .port(5432)
                .user(&user)
                .dbname(DEFAULT_DATABASE)
                .application_name("spineledger")
                .connect_timeout(Duration::from_secs(5));
            config
        })
        .collect()
}

/// The same server and credentials, another database.
pub fn with_dbname(config: &Config, dbname: &str) -> Config {
    let mut other = config.clone();
    other.dbname(dbname);
    other
}

/// One plain connection (its driver task runs in the background).
pub async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: describe(config),
                source,
            })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}

/// Creates the configured database if it does not exist yet. Tolerates a concurrent
/// creator (another process starting at the same moment).
pub async fn ensure_database(config: &Config) -> Result<(), StoreError> {
    let Some(dbname) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    match connect(config).await {
        Ok(_client) => return Ok(()),
        Err(StoreError::Unreachable { source, .. })
            if source.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(error) => return Err(error),
    }
    let admin = connect(&with_dbname(config, "postgres")).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let create = format!("CREATE DATABASE {}", quote_identifier(&dbname));
    match admin.batch_execute(&create).await {
        Ok(()) => {
            tracing::info!(database = %dbname, "created database");
            Ok(())
        }
        Err(error)
            if matches!(
                error.code(),
                Some(&SqlState::DUPLICATE_DATABASE | &SqlState::UNIQUE_VIOLATION)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}

/// Quotes an SQL identifier (doubling embedded quotes).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies the embedded migrations, holding an advisory lock so that concurrent starters
/// wait for each other instead of racing. Returns the number of migrations applied.
pub async fn migrate(config: &Config) -> Result<usize, StoreError> {
    let mut client = connect(config).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let outcome = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = outcome?;
    let applied = report.applied_migrations().len();
    if applied > 0 {
        tracing::info!(applied, "database migrated");
    }
    Ok(applied)
}

/// A pool whose connections run as [`APP_ROLE`]: the least privilege the service needs.
pub fn pool(config: &Config, max_size: usize) -> Result<Pool, StoreError> {
    pool_builder(config, max_size)
        .post_create(Hook::async_fn(|client, _metrics| {
            Box::pin(async move {
                client
                    .batch_execute(&format!("SET ROLE {}", quote_identifier(APP_ROLE)))
                    .await
                    .map_err(|error| {
                        HookError::message(format!("cannot SET ROLE {APP_ROLE}: {error}"))
                    })
            })
        }))
        .build()
        .map_err(|error| StoreError::Configuration(format!("cannot build the pool: {error}")))
}

/// A pool of connections as the login user (the schema owner), for maintenance that
/// creates, renames or drops tables (projection rebuilds). Never used to serve requests.
pub fn owner_pool(config: &Config, max_size: usize) -> Result<Pool, StoreError> {
    pool_builder(config, max_size)
        .build()
        .map_err(|error| StoreError::Configuration(format!("cannot build the pool: {error}")))
}

fn pool_builder(config: &Config, max_size: usize) -> deadpool_postgres::PoolBuilder {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
}
