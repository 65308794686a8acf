//! Finding, creating and migrating the database, and the connection pool.
//!
//! With no configuration the service uses the local PostgreSQL at 127.0.0.1:5432 as the
//! current OS user (falling back to `postgres`), database `spineledger`, created if
//! missing. Migrations are embedded in the binary and serialised across processes by an
//! advisory lock, so two processes starting at once migrate exactly once.
//!
//! Three logins, three jobs: the owner (the configured or default login user) creates the
//! database, migrates and rebuilds; the service logs in as [`APP_ROLE`] and projector
//! workers as [`PROJECTOR_ROLE`], roles the migrations create that own nothing and see
//! clinical rows only as row-level security allows (see `migrations/V4__clinic_walls.sql`).

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use crate::StoreError;

/// The database a default installation uses.
pub const DEFAULT_DATABASE: &str = "spineledger";
/// The role the service logs in as: it may append and read events of the clinics a
/// transaction names, never change them, and only read the read models (see the
/// migrations for its grants and policies).
pub const APP_ROLE: &str = "spineledger_app";
/// The role projector workers log in as: it reads every clinic's events and writes the
/// read models and the projector bookkeeping.
pub const PROJECTOR_ROLE: &str = "spineledger_projector";
/// The role analysts' own tools log in as (NOLOGIN until an operator gives it a
/// password): it sees only the `analytics` schema, over the clinics granted to it in
/// `analyst_grants` (see `migrations/V12__analytics.sql`).
pub const ANALYST_ROLE: &str = "spineledger_analyst";
/// Advisory lock key that serialises migrations across processes.
const MIGRATION_LOCK_KEY: i64 = 0x5350_494e_454c_4544; // "SPINELED"

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Parses a `postgres://` URL or a key=value connection string.
pub fn parse_url(url: &str) -> Result<Config, StoreError> {
    Config::from_str(&crate::tls::libpq_url(url)?).map_err(|source| StoreError::Unreachable {
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
                .connect_timeout(Duration::from_secs(5))
                // The local default is loopback: nothing to encrypt against.
                .ssl_mode(SslMode::Disable);
            config
        })
        .collect()
}

/// The same server, database and connection options, logging in as `role` without a
/// password: how the service reaches [`APP_ROLE`] and [`PROJECTOR_ROLE`] when no URL of
/// their own is configured (trust, peer or certificate authentication; an operator who
/// gives the roles passwords configures their URLs instead).
pub fn as_role(config: &Config, role: &str) -> Config {
    let mut derived = Config::new();
    derived.user(role);
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => derived.host(name),
            #[cfg(unix)]
            Host::Unix(path) => derived.host_path(path),
        };
    }
    for address in config.get_hostaddrs() {
        derived.hostaddr(*address);
    }
    for port in config.get_ports() {
        derived.port(*port);
    }
    if let Some(dbname) = config.get_dbname() {
        derived.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        derived.options(options);
    }
    if let Some(name) = config.get_application_name() {
        derived.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        derived.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        derived.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        derived.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        derived.keepalives_retries(retries);
    }
    derived
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    derived
}

/// The same server and credentials, another database.
pub fn with_dbname(config: &Config, dbname: &str) -> Config {
    let mut other = config.clone();
    other.dbname(dbname);
    other
}

/// One plain connection (its driver task runs in the background).
pub async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = crate::tls::effective(config)
        .connect(crate::tls::connector()?)
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

/// Stores `min_cell` as the k of the analysts' SQL (`statistics_settings`, V12), so that
/// the views release what the API releases. As the owner; `serve` does it after
/// migrating.
pub async fn set_statistics_min_cell(config: &Config, min_cell: usize) -> Result<(), StoreError> {
    let min_cell = i32::try_from(min_cell)
        .map_err(|_| StoreError::Configuration(format!("min cell {min_cell} is too large")))?;
    connect(config)
        .await?
        .execute("UPDATE statistics_settings SET min_cell = $1", &[&min_cell])
        .await?;
    Ok(())
}

/// Refuses a service login that row-level security would not hold: a superuser, a role
/// with BYPASSRLS, or one that owns (or inherits the owner of) a clinical table. Those
/// see every clinic whatever the transaction's context says, so the service must not
/// run as them (it would still work, with one wall less). Also proves the pool answers.
pub async fn ensure_walled(pool: &Pool) -> Result<(), StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            // MEMBER, not USAGE: a membership without inherit still lets a login SET ROLE.
            "SELECT current_user::text, \
                 r.rolsuper OR r.rolbypassrls \
                 OR EXISTS (SELECT 1 FROM pg_roles p \
                            WHERE (p.rolsuper OR p.rolbypassrls) \
                              AND pg_has_role(r.oid, p.oid, 'MEMBER')) \
                 OR EXISTS (SELECT 1 FROM pg_class c WHERE c.oid IN ( \
                                to_regclass('events'), to_regclass('streams'), \
                                to_regclass('treatment_plans'), to_regclass('outcome_episodes'), \
                                to_regclass('outcome_cells')) \
                            AND (pg_has_role(r.oid, c.relowner, 'MEMBER') \
                                 OR NOT c.relrowsecurity)) \
                 OR has_schema_privilege(r.oid, 'public', 'CREATE') \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let (user, unwalled): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
    if unwalled {
        return Err(StoreError::Configuration(format!(
            "the service's login {user} can get past row-level security (it is, or can become, \
             a superuser, a BYPASSRLS role or the clinical tables' owner; a clinical table \
             has row-level security off; or it may create objects in schema public): log in \
             as {APP_ROLE} (--app-database-url) on a database migrated by spineledger"
        )));
    }
    Ok(())
}

/// A pool of connections logging in as `config` says: the owner for maintenance
/// (rebuilds), [`APP_ROLE`] for the service, [`PROJECTOR_ROLE`] for projectors. Nothing
/// is switched after connecting: a connection is exactly as privileged as its login.
pub fn pool(config: &Config, max_size: usize) -> Result<Pool, StoreError> {
    pool_builder(config, max_size)?
        .build()
        .map_err(|error| StoreError::Configuration(format!("cannot build the pool: {error}")))
}

fn pool_builder(
    config: &Config,
    max_size: usize,
) -> Result<deadpool_postgres::PoolBuilder, StoreError> {
    let manager = Manager::from_config(
        crate::tls::effective(config).into_owned(),
        crate::tls::connector()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_login_keeps_the_server_and_database_and_drops_the_password() {
        let owner = parse_url(
            "postgres://owner:s3cret@db.example:6543/records?sslmode=require&application_name=x&connect_timeout=7",
        )
        .expect("url");
        let app = as_role(&owner, APP_ROLE);
        assert_eq!(app.get_user(), Some(APP_ROLE));
        assert_eq!(app.get_password(), None);
        assert_eq!(app.get_hosts(), owner.get_hosts());
        assert_eq!(app.get_ports(), [6543]);
        assert_eq!(app.get_dbname(), Some("records"));
        assert_eq!(app.get_ssl_mode(), owner.get_ssl_mode());
        assert_eq!(app.get_application_name(), Some("x"));
        assert_eq!(app.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(
            describe(&as_role(&owner, PROJECTOR_ROLE)),
            "postgres://spineledger_projector@db.example:6543/records"
        );
    }
}
