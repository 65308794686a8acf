//! Fresh planner statistics where autovacuum does not keep them.
//!
//! The service prepares its statements once per pooled connection, and PostgreSQL keeps a
//! prepared statement's generic plan until the statistics of a table it reads change.
//! Autovacuum's ANALYZE is what changes them as the log grows. On a server running with
//! `autovacuum = off` nothing does, and plans made while the log was small stay: the
//! group commit's history read and retry lookup then walk a clinic's whole index (58 and
//! 120 ms at 200,000 events of one clinic, measured with psql; 0.3 ms after ANALYZE).
//! [`keep_statistics`] does autovacuum's ANALYZE for the service's tables on such a
//! server, as their owner; with autovacuum on it does nothing.

use std::time::Duration;

use tokio_postgres::Config;

use crate::StoreError;

/// The tables whose statistics the service's plans depend on.
const TABLES: [&str; 7] = [
    "events",
    "streams",
    "treatment_plans",
    "outcome_episodes",
    "outcome_cells",
    "clinic_log",
    "access_log",
];

/// ANALYZEs each of the service's tables that changed by more than autovacuum's default
/// threshold (50 rows plus 10 % of its rows) since its last ANALYZE; returns their names.
/// Needs the tables' owner.
///
/// # Errors
/// A statement that fails.
pub async fn analyze_grown(client: &tokio_postgres::Client) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT relname::text FROM pg_stat_user_tables \
             WHERE schemaname = 'public' AND relname = ANY($1) \
               AND n_mod_since_analyze > 50 + 0.1 * greatest(n_live_tup, 0) \
             ORDER BY relname",
            &[&TABLES.as_slice()],
        )
        .await?;
    let mut analyzed = Vec::with_capacity(rows.len());
    for row in rows {
        let table: String = row.try_get(0)?;
        // A name from the fixed list above, so it is safe to splice.
        if TABLES.contains(&table.as_str()) {
            client.batch_execute(&format!("ANALYZE {table}")).await?;
            analyzed.push(table);
        }
    }
    Ok(analyzed)
}

/// On a server with `autovacuum = off`, [`analyze_grown`] every `interval` as the owner
/// `owner` until `stop` completes; with autovacuum on, returns at once. Failures are
/// logged and retried at the next interval: stale statistics slow the service, they do
/// not make it wrong.
pub async fn keep_statistics(
    owner: Config,
    interval: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let keep = async {
        let mut client = None;
        loop {
            if client.is_none() {
                client = crate::connect(&owner).await.ok();
            }
            if let Some(connected) = &client {
                match autovacuum_is_on(connected).await {
                    Ok(true) => return,
                    Ok(false) => match analyze_grown(connected).await {
                        Ok(analyzed) if !analyzed.is_empty() => {
                            tracing::info!(?analyzed, "autovacuum is off: analyzed grown tables");
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, "analyzing grown tables failed");
                            client = None;
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "reading the autovacuum setting failed");
                        client = None;
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = keep => {}
        () = stop => {}
    }
}

async fn autovacuum_is_on(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT current_setting('autovacuum')::bool", &[])
        .await?;
    Ok(row.try_get(0)?)
}
