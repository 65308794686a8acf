//! A fresh, migrated PostgreSQL database per test, dropped when the test ends, so tests
//! run in parallel and twice in a row. There is no silent skip: when PostgreSQL is not
//! reachable the test fails with the URL it tried (set `SPINELEDGER_TEST_DATABASE_URL` to
//! point elsewhere; by default the local server as for `spineledger serve`).
//!
//! Like the service, a test database has three logins: the owner (the configured login
//! user: migrations, rebuilds, checks of what the database itself allows), the app role
//! (the [`TestDatabase::store`]) and the projector role ([`TestDatabase::projector_pool`]).

#![warn(missing_docs)]

use spineledger_store::deadpool_postgres::Pool;
use spineledger_store::{EventStore, tokio_postgres};
use tokio_postgres::Config;

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    config: Config,
    store: EventStore,
    projector_pool: Pool,
}

impl TestDatabase {
    /// Creates and migrates a database with a unique name. Panics (loudly, naming the
    /// server) when PostgreSQL is unreachable: a test that needs it must never pass
    /// without it.
    pub async fn create() -> Self {
        let database = Self::create_unmigrated().await;
        spineledger_store::migrate(&database.config)
            .await
            .unwrap_or_else(|error| panic!("cannot migrate test database: {error:?}"));
        database
    }

    /// Creates an empty database (no migrations applied), for tests of migration itself.
    pub async fn create_unmigrated() -> Self {
        let url = std::env::var("SPINELEDGER_TEST_DATABASE_URL").ok();
        let server = match spineledger_store::resolve(url.as_deref()).await {
            Ok(config) => config,
            Err(error) => panic!(
                "tests need a running PostgreSQL (set SPINELEDGER_TEST_DATABASE_URL, or run \
                 one at 127.0.0.1:5432): {error}"
            ),
        };
        let name = format!("spineledger_test_{}", uuid::Uuid::new_v4().simple());
        let admin =
            spineledger_store::connect(&spineledger_store::with_dbname(&server, "postgres"))
                .await
                .unwrap_or_else(|error| panic!("cannot reach PostgreSQL for tests: {error}"));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                spineledger_store::quote_identifier(&name)
            ))
            .await
            .unwrap_or_else(|error| panic!("cannot create test database {name}: {error}"));
        let config = spineledger_store::with_dbname(&server, &name);
        let pool = |role: &str| {
            spineledger_store::pool(&spineledger_store::as_role(&config, role), 8)
                .unwrap_or_else(|error| panic!("cannot build a pool: {error}"))
        };
        // Pools connect on first use: after the migrations have made the roles LOGIN.
        let store = EventStore::new(pool(spineledger_store::APP_ROLE));
        let projector_pool = pool(spineledger_store::PROJECTOR_ROLE);
        Self {
            name,
            config,
            store,
            projector_pool,
        }
    }

    /// The connection settings of this database as the login user (the owner).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection settings of this database as the app role.
    pub fn app_config(&self) -> Config {
        spineledger_store::as_role(&self.config, spineledger_store::APP_ROLE)
    }

    /// The connection settings of this database as the projector role.
    pub fn projector_config(&self) -> Config {
        spineledger_store::as_role(&self.config, spineledger_store::PROJECTOR_ROLE)
    }

    /// A pool logging in as the projector role (every clinic's events, the read models).
    pub fn projector_pool(&self) -> &Pool {
        &self.projector_pool
    }

    /// A `postgres://` URL for this database (no password: tests use trust auth or
    /// `PGPASSWORD`).
    pub fn url(&self) -> String {
        spineledger_store::describe(&self.config)
    }

    /// The event store on this database, its connections logging in as the app role.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// A direct connection as the login user (owner), for tests that check what the
    /// database itself allows.
    pub async fn owner_client(&self) -> tokio_postgres::Client {
        spineledger_store::connect(&self.config)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.store.pool().close();
        self.projector_pool.close();
        let admin = spineledger_store::with_dbname(&self.config, "postgres");
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a fresh thread with its own runtime can
        // block on the DROP without stalling it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = spineledger_store::connect(&admin).await?;
                client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        spineledger_store::quote_identifier(&name)
                    ))
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
