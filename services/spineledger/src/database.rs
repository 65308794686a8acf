//! Start-up of the store: which logins to use, creating the database if missing,
//! migrating, pooling.
//!
//! Three logins: the owner (`--database-url`, or the local server as the OS user) creates
//! and migrates the database and rebuilds read models; the service logs in as the app
//! role and projector workers as the projector role, each by its own URL or, by default,
//! the owner's with the user replaced by the role and no password. An operator who does
//! not hand the owner's credentials to the service gives only the app URL (and perhaps
//! the projector's): the service then neither creates nor migrates, it connects with what
//! it was given.

use spineledger_store::deadpool_postgres::Pool;
use spineledger_store::{APP_ROLE, EventStore, PROJECTOR_ROLE, tokio_postgres::Config};

/// The connection URLs as configured (flags or environment); `None` is "not given".
#[derive(Debug, Clone, Default)]
pub struct DatabaseUrls {
    /// The owner's URL (`--database-url`, `DATABASE_URL`).
    pub owner: Option<String>,
    /// The app role's URL (`--app-database-url`, `SPINELEDGER_APP_DATABASE_URL`).
    pub app: Option<String>,
    /// The projector role's URL (`--projector-database-url`,
    /// `SPINELEDGER_PROJECTOR_DATABASE_URL`).
    pub projector: Option<String>,
}

/// Where each login goes, resolved.
#[derive(Debug, Clone)]
pub struct Logins {
    /// The owner, when the service was given (or defaulted to) one; `None` when only the
    /// roles' URLs were configured.
    pub owner: Option<Config>,
    /// The app role.
    pub app: Config,
    /// The projector role.
    pub projector: Config,
}

impl DatabaseUrls {
    /// Resolves the logins. With an owner URL, or with no URL at all (the local
    /// default), it also creates the database if missing and migrates it. Given only a
    /// role's URL, it connects with what it was given: the other role's login is that URL
    /// with the user replaced.
    ///
    /// # Errors
    /// An unparseable URL, an unreachable server, a failed migration.
    pub async fn prepare(&self) -> anyhow::Result<Logins> {
        let only_roles = self.owner.is_none() && (self.app.is_some() || self.projector.is_some());
        let owner = if only_roles {
            None
        } else {
            let owner = spineledger_store::resolve(self.owner.as_deref()).await?;
            spineledger_store::ensure_database(&owner).await?;
            spineledger_store::migrate(&owner).await?;
            Some(owner)
        };
        let app = self
            .app
            .as_deref()
            .map(spineledger_store::parse_url)
            .transpose()?;
        let projector = self
            .projector
            .as_deref()
            .map(spineledger_store::parse_url)
            .transpose()?;
        // Derive a missing role's login from the owner, else from the other role.
        let base = owner
            .clone()
            .or_else(|| app.clone())
            .or_else(|| projector.clone())
            .ok_or_else(|| anyhow::anyhow!("no database login configured"))?;
        Ok(Logins {
            app: app.unwrap_or_else(|| spineledger_store::as_role(&base, APP_ROLE)),
            projector: projector
                .unwrap_or_else(|| spineledger_store::as_role(&base, PROJECTOR_ROLE)),
            owner,
        })
    }
}

impl Logins {
    /// The event store on a pool of `size` app-role connections.
    ///
    /// # Errors
    /// A pool that cannot be built.
    pub fn store(&self, size: usize) -> anyhow::Result<EventStore> {
        Ok(EventStore::new(spineledger_store::pool(&self.app, size)?))
    }

    /// A pool of `size` projector-role connections.
    ///
    /// # Errors
    /// A pool that cannot be built.
    pub fn projector_pool(&self, size: usize) -> anyhow::Result<Pool> {
        Ok(spineledger_store::pool(&self.projector, size)?)
    }
}

/// Creates (if missing) and migrates the database only, as the owner.
///
/// # Errors
/// An unparseable URL, an unreachable server, a failed migration.
pub async fn migrate(database_url: Option<&str>) -> anyhow::Result<(usize, Config)> {
    let config = spineledger_store::resolve(database_url).await?;
    spineledger_store::ensure_database(&config).await?;
    let applied = spineledger_store::migrate(&config).await?;
    Ok((applied, config))
}
