//! How far each projection and shard is behind the log, measured from outside the
//! projector, so that a stuck or dead projector shows a growing value rather than the
//! last one it reported:
//!
//! - `spineledger.projector.lag` (seconds): the age of the oldest committed event of the
//!   shard the projection has not applied; 0 when it has applied all of them;
//! - `spineledger.projector.events_behind` (events): how many such events there are
//!   (counted up to [`COUNT_CAP`], so a long outage costs a bounded read).
//!
//! Every committed event counts, also those a projector may not read yet because an
//! older transaction is still open (its read rule waits for the oldest open xid): a
//! long-running writer that holds every projector back shows as lag too.
//!
//! Both carry `projection` and `shard`. They are sampled from the checkpoints and the
//! log every few seconds by [`spawn`] and reported at each metrics collection. Events
//! are the log's; the clinic log also indexes access-log entries, which are not counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;

use crate::ProjectionError;

/// The most events counted behind one shard: a long outage costs a bounded read.
pub const COUNT_CAP: i64 = 10_000;

/// One projection shard's distance from the log's head.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardLag {
    /// The projection's name.
    pub projection: String,
    /// The shard.
    pub shard: i32,
    /// Committed events of the shard after its checkpoint (up to [`COUNT_CAP`]).
    pub events_behind: i64,
    /// Age of the oldest of them; zero when there are none.
    pub lag: Duration,
}

/// Reads every checkpoint's distance from the log's head, with a login that sees every
/// clinic (the projector's).
///
/// # Errors
/// The database's.
pub async fn sample(pool: &Pool) -> Result<Vec<ShardLag>, ProjectionError> {
    let mut client = pool.get().await?;
    let transaction = client.build_transaction().read_only(true).start().await?;
    // A sample must not pile up on a slow server.
    transaction
        .batch_execute("SET LOCAL statement_timeout = '2s'")
        .await?;
    let statement = transaction
        .prepare_cached(&format!(
            "SELECT c.projection, c.shard, b.behind, \
                    COALESCE(EXTRACT(EPOCH FROM (now() - b.oldest))::float8, 0) \
             FROM projection_checkpoints c \
             CROSS JOIN LATERAL ( \
                 SELECT count(*) AS behind, min(t.recorded_at) AS oldest FROM ( \
                     SELECT e.recorded_at FROM events e \
                     WHERE (e.xid, e.position) > (c.xid::text::xid8, c.position) \
                       AND get_byte(uuid_send(e.clinic_id), 15) % c.shard_count = c.shard \
                     ORDER BY e.xid, e.position LIMIT {COUNT_CAP}) t \
             ) b \
             ORDER BY c.projection, c.shard"
        ))
        .await?;
    let rows = transaction.query(&statement, &[]).await?;
    transaction.commit().await?;
    rows.iter()
        .map(|row| {
            let seconds: f64 = row.try_get(3)?;
            Ok(ShardLag {
                projection: row.try_get(0)?,
                shard: row.try_get(1)?,
                events_behind: row.try_get(2)?,
                lag: Duration::from_secs_f64(seconds.max(0.0)),
            })
        })
        .collect()
}

/// The lag gauges and their sampling task, which stops when this is dropped (the
/// gauges then report nothing more: their callbacks stay registered, with no samples).
#[derive(Debug)]
pub struct LagGauges {
    _gauges: Vec<ObservableGauge<f64>>,
    sampler: tokio::task::JoinHandle<()>,
    latest: Arc<Mutex<Vec<ShardLag>>>,
}

impl Drop for LagGauges {
    fn drop(&mut self) {
        self.sampler.abort();
        if let Ok(mut latest) = self.latest.lock() {
            latest.clear();
        }
    }
}

/// Samples the lag every `interval` on `pool` and registers the gauges that report it.
#[must_use]
pub fn spawn(pool: Pool, interval: Duration) -> LagGauges {
    let latest: Arc<Mutex<Vec<ShardLag>>> = Arc::default();
    let sampled = Arc::clone(&latest);
    let sampler = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match sample(&pool).await {
                Ok(lags) => {
                    if let Ok(mut latest) = sampled.lock() {
                        *latest = lags;
                    }
                }
                Err(error) => {
                    // No value rather than the last one: a stale lag would hide a stall.
                    if let Ok(mut latest) = sampled.lock() {
                        latest.clear();
                    }
                    tracing::warn!(%error, "cannot sample the projection lag");
                }
            }
        }
    });
    let meter = opentelemetry::global::meter("spineledger");
    let attributes = |lag: &ShardLag| {
        [
            KeyValue::new("projection", lag.projection.clone()),
            KeyValue::new("shard", i64::from(lag.shard)),
        ]
    };
    let for_time = Arc::clone(&latest);
    let time = meter
        .f64_observable_gauge("spineledger.projector.lag")
        .with_unit("s")
        .with_description(
            "Age of the oldest committed event the projection shard has not applied (0: caught up)",
        )
        .with_callback(move |observer| {
            if let Ok(lags) = for_time.lock() {
                for lag in lags.iter() {
                    observer.observe(lag.lag.as_secs_f64(), &attributes(lag));
                }
            }
        })
        .build();
    let for_events = Arc::clone(&latest);
    let events = meter
        .f64_observable_gauge("spineledger.projector.events_behind")
        .with_unit("{event}")
        .with_description("Committed events the projection shard has not applied")
        .with_callback(move |observer| {
            if let Ok(lags) = for_events.lock() {
                for lag in lags.iter() {
                    observer.observe(lag.events_behind as f64, &attributes(lag));
                }
            }
        })
        .build();
    LagGauges {
        _gauges: vec![time, events],
        sampler,
        latest,
    }
}
