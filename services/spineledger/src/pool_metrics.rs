//! Connection pool gauges after the OpenTelemetry database-client conventions:
//! `db.client.connection.count` by `db.client.connection.state` (`used`, `idle`) and
//! `db.client.connection.pool.name` (`app`, `projector`), and
//! `db.client.connection.pending_requests` (callers waiting for a connection) and
//! `db.client.connection.max`. They are read from the pools whenever metrics are
//! collected, so a pool that is exhausted shows at once.

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;
use spineledger_store::deadpool_postgres::Pool;

/// The gauges of some pools; they are observed as long as this is kept.
#[derive(Debug)]
pub struct PoolGauges {
    _gauges: Vec<ObservableGauge<i64>>,
}

/// Registers the gauges of `pools`, each with its name.
#[must_use]
pub fn observe(pools: Vec<(&'static str, Pool)>) -> PoolGauges {
    let meter = opentelemetry::global::meter("spineledger");
    let counted = pools.clone();
    let count = meter
        .i64_observable_gauge("db.client.connection.count")
        .with_unit("{connection}")
        .with_description("Connections of the pool, by state")
        .with_callback(move |observer| {
            for (name, pool) in &counted {
                let status = pool.status();
                let used = status.size.saturating_sub(status.available);
                for (state, value) in [("used", used), ("idle", status.available)] {
                    observer.observe(
                        i64::try_from(value).unwrap_or(i64::MAX),
                        &[
                            KeyValue::new("db.client.connection.pool.name", *name),
                            KeyValue::new("db.client.connection.state", state),
                        ],
                    );
                }
            }
        })
        .build();
    let waiting = pools.clone();
    let pending = meter
        .i64_observable_gauge("db.client.connection.pending_requests")
        .with_unit("{request}")
        .with_description("Callers waiting for a connection of the pool")
        .with_callback(move |observer| {
            for (name, pool) in &waiting {
                observer.observe(
                    i64::try_from(pool.status().waiting).unwrap_or(i64::MAX),
                    &[KeyValue::new("db.client.connection.pool.name", *name)],
                );
            }
        })
        .build();
    let max = meter
        .i64_observable_gauge("db.client.connection.max")
        .with_unit("{connection}")
        .with_description("The most connections the pool opens")
        .with_callback(move |observer| {
            for (name, pool) in &pools {
                observer.observe(
                    i64::try_from(pool.status().max_size).unwrap_or(i64::MAX),
                    &[KeyValue::new("db.client.connection.pool.name", *name)],
                );
            }
        })
        .build();
    PoolGauges {
        _gauges: vec![count, pending, max],
    }
}
