//! Start-up of the store: find PostgreSQL, create the database if missing, migrate, pool.

use spineledger_store::{EventStore, tokio_postgres::Config};

/// Resolves, creates and migrates the database; returns the store and its settings.
pub async fn open(
    database_url: Option<&str>,
    pool_size: usize,
) -> anyhow::Result<(EventStore, Config)> {
    let config = spineledger_store::resolve(database_url).await?;
    spineledger_store::ensure_database(&config).await?;
    spineledger_store::migrate(&config).await?;
    let pool = spineledger_store::pool(&config, pool_size)?;
    Ok((EventStore::new(pool), config))
}

/// Creates (if missing) and migrates the database only.
pub async fn migrate(database_url: Option<&str>) -> anyhow::Result<(usize, Config)> {
    let config = spineledger_store::resolve(database_url).await?;
    spineledger_store::ensure_database(&config).await?;
    let applied = spineledger_store::migrate(&config).await?;
    Ok((applied, config))
}
