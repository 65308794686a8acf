//! The large-clinic phases: one clinic of `--episodes` episodes (about 18 events each,
//! so 100,000 episodes are about 1.8 million events), generated fast through the event
//! store, then both read models rebuilt from position zero (events per second), then
//! outcome statistics of that clinic queried over gRPC (p50/p99).
//!
//! Generation: a template cohort of at most [`TEMPLATE_PATIENTS`] patients is simulated
//! through the API (so its events are what the domain decides, with late entries,
//! back-dated sessions and corrections), then each template episode is copied into the
//! large clinic as new episodes with `EventStore::append` (one append of a whole
//! episode, [`WRITERS`] at once): new episode and event ids (a correction names its
//! corrected event's new id) and every timestamp moved back by a whole number of weeks,
//! copy by copy, so the clinic's evaluations spread over two years of months as a real
//! clinic's would, rather than all landing in the template's few weeks.
//!
//! The rebuild is timed with the live models emptied first (and the server stopped), so
//! the swap has no live catch-up to do and the time is the rebuild's alone. The clinic
//! lives in a database of its own, so the load phases and these do not slow each other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_projections::Projection;
use spineledger_store::tokio_postgres::Config;
use spineledger_store::{
    ClinicShard, EventStore, ExpectedVersion, GlobalCursor, NewEvent, RecordedEvent, StreamKey,
};
use tonic::transport::Channel;
use uuid::Uuid;

use super::{BenchPlan, BenchReport, Phase, Server};

/// Every phase of the large clinic, on `config`'s (fresh) database.
pub(super) async fn measure(
    config: &Config,
    plan: &BenchPlan,
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    spineledger_store::migrate(config).await?;
    let mut child = Server::start(config, plan.shards, None).await?;
    let simulated = simulate_template(&child, plan.episodes).await;
    child.stop().await;
    simulated?;
    let template = episode_streams(config).await?;
    let clinic = generate(config, &template, plan.episodes, report).await?;
    rebuild(config, plan.shards, report).await?;
    // Statistics from a server without the integrator: it would be indexing the
    // generated log (appended while no server ran) into the clinic's signed log, a
    // one-off catch-up a live service never has to do.
    let mut child = Server::start(
        config,
        plan.shards,
        Some("treatment_plans,outcome_statistics"),
    )
    .await?;
    let outcome = statistics(&child, &clinic, plan.seconds, report).await;
    child.stop().await;
    outcome
}

/// Patients of the template cohort.
const TEMPLATE_PATIENTS: usize = 200;
/// Concurrent appends while generating.
const WRITERS: usize = 8;
/// Episodes appended between two ANALYZEs of the log, once it has some size.
const ANALYZE_EVERY: usize = 10_000;
/// Copies are spread over this many weeks back from the template's dates.
const SPREAD_WEEKS: usize = 104;

/// The large clinic, once generated.
struct LargeClinic {
    /// Its id.
    clinic: Uuid,
    /// Episodes generated.
    episodes: usize,
}

/// Simulates the template cohort (at most [`TEMPLATE_PATIENTS`], no more than
/// `episodes`) on `server`.
async fn simulate_template(server: &Server, episodes: usize) -> anyhow::Result<()> {
    let clinic = Uuid::new_v4();
    let cohort = crate::simulate::Cohort {
        patients_per_clinic: episodes.clamp(1, TEMPLATE_PATIENTS),
        clinics: vec![clinic],
        seed: 2026,
        start_date: chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap_or_default(),
        concurrency: 32,
    };
    let channel = Channel::from_shared(server.address.clone())?
        .connect()
        .await?;
    crate::simulate::run(channel, &server.token(&[clinic])?, &cohort).await?;
    Ok(())
}

/// The episode streams of the log, each in stream order (read as the projector role).
async fn episode_streams(config: &Config) -> anyhow::Result<Vec<Vec<RecordedEvent>>> {
    let login = spineledger_store::as_role(config, spineledger_store::PROJECTOR_ROLE);
    let pool = spineledger_store::pool(&login, 1)?;
    let client = pool.get().await?;
    let mut streams: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
    let mut cursor = GlobalCursor::START;
    loop {
        let page =
            spineledger_store::read_all_after(&client, cursor, 5000, ClinicShard::ALL).await?;
        let Some(last) = page.last().map(|event| event.cursor) else {
            break;
        };
        cursor = last;
        for event in page {
            if event.stream_id.starts_with("episode-") {
                streams
                    .entry(event.stream_id.clone())
                    .or_default()
                    .push(event);
            }
        }
    }
    drop(client);
    pool.close();
    let mut streams: Vec<Vec<RecordedEvent>> = streams.into_values().collect();
    for stream in &mut streams {
        stream.sort_by_key(|event| event.version);
    }
    streams.sort_by(|a, b| a[0].stream_id.cmp(&b[0].stream_id));
    Ok(streams)
}

/// Copies the template into a new clinic until it holds `episodes` episodes; fills the
/// generation figures of `report`.
async fn generate(
    config: &Config,
    template: &[Vec<RecordedEvent>],
    episodes: usize,
    report: &mut BenchReport,
) -> anyhow::Result<LargeClinic> {
    anyhow::ensure!(!template.is_empty(), "the template cohort has no episode");
    let clinic = Uuid::new_v4();
    let login = spineledger_store::as_role(config, spineledger_store::APP_ROLE);
    let store = EventStore::new(spineledger_store::pool(&login, WRITERS)?);
    let owner = spineledger_store::connect(config).await?;
    let started = Instant::now();
    let mut events = 0_u64;
    // ANALYZE after 200 and 2,000 episodes, then every ANALYZE_EVERY: plans fit the log
    // from early on.
    let mut ends: Vec<usize> = [200, 2_000]
        .into_iter()
        .chain((1..).map(|n| n * ANALYZE_EVERY))
        .take_while(|end| *end < episodes)
        .collect();
    ends.push(episodes);
    let mut start = 0;
    for end in ends {
        let chunk: Vec<usize> = (start..end).collect();
        start = end;
        let appended: Vec<anyhow::Result<usize>> = futures::stream::iter(chunk)
            .map(|copy| {
                let store = store.clone();
                let source = &template[copy % template.len()];
                let weeks = (copy / template.len()) % SPREAD_WEEKS;
                async move {
                    let (episode, events) = copy_episode(source, weeks);
                    let stream = StreamKey::new(clinic, format!("episode-{episode}"));
                    store
                        .append(&stream, ExpectedVersion::NoStream, &events)
                        .await
                        .context("appending a generated episode")?;
                    Ok(events.len())
                }
            })
            .buffer_unordered(WRITERS)
            .collect()
            .await;
        for count in appended {
            events += count? as u64;
        }
        // What autovacuum would do as the log grows; this machine's PostgreSQL runs
        // without it, and plans made for a near-empty log would stay in the pooled
        // connections' statement caches.
        owner.batch_execute("ANALYZE events, streams").await?;
    }
    report.generated = (episodes as u64, events, started.elapsed().as_secs_f64());
    Ok(LargeClinic { clinic, episodes })
}

/// A copy of one template episode: a new episode id, new event ids (references among
/// them rewritten), every timestamp `weeks` weeks earlier.
fn copy_episode(source: &[RecordedEvent], weeks: usize) -> (Uuid, Vec<NewEvent>) {
    let episode = Uuid::new_v4();
    let mut ids: HashMap<String, String> = source
        .iter()
        .map(|event| (event.event_id.to_string(), Uuid::new_v4().to_string()))
        .collect();
    if let Some(old) = source[0].stream_id.strip_prefix("episode-") {
        ids.insert(old.to_owned(), episode.to_string());
    }
    let shift = chrono::Duration::weeks(i64::try_from(weeks).unwrap_or(0));
    let events = source
        .iter()
        .map(|event| {
            let mut payload = event.payload.clone();
            rewrite(&mut payload, &ids, shift);
            NewEvent {
                event_id: ids
                    .get(&event.event_id.to_string())
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_else(Uuid::new_v4),
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload,
                metadata: event.metadata.clone(),
                occurred_at: event.occurred_at.map(|at| at - shift),
                fingerprint: event.fingerprint,
            }
        })
        .collect();
    (episode, events)
}

/// Rewrites ids found in `ids` and moves every RFC 3339 timestamp back by `shift`.
fn rewrite(value: &mut serde_json::Value, ids: &HashMap<String, String>, shift: chrono::Duration) {
    match value {
        serde_json::Value::String(text) => {
            if let Some(id) = ids.get(text.as_str()) {
                text.clone_from(id);
            } else if let Ok(at) = DateTime::parse_from_rfc3339(text) {
                *text = (at.with_timezone(&Utc) - shift)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                rewrite(item, ids, shift);
            }
        }
        serde_json::Value::Object(fields) => {
            for field in fields.values_mut() {
                rewrite(field, ids, shift);
            }
        }
        _ => {}
    }
}

/// Empties the live read models and their checkpoints (the server is stopped), then
/// rebuilds both together from position zero; fills `report.rebuild`.
async fn rebuild(config: &Config, shards: u8, report: &mut BenchReport) -> anyhow::Result<()> {
    let owner = spineledger_store::pool(config, 2)?;
    let client = owner.get().await?;
    let mut tables: Vec<&str> = Vec::new();
    let mut names = Vec::new();
    for projection in Projection::ALL {
        tables.extend(projection.tables());
        names.push(projection.name());
    }
    client
        .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await?;
    client
        .execute(
            "DELETE FROM projection_checkpoints WHERE projection = ANY($1)",
            &[&names],
        )
        .await?;
    drop(client);
    client_analyze(&owner).await?;
    let started = Instant::now();
    let reports = spineledger_projections::rebuild::rebuild_all(
        &owner,
        &Projection::ALL,
        shards,
        spineledger_projections::rebuild::PAGE_SIZE,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    report.rebuild = (reports.first().map_or(0, |rebuilt| rebuilt.events), seconds);
    client_analyze(&owner).await?;
    owner.close();
    Ok(())
}

/// ANALYZE of every table, as autovacuum would have done (see [`generate`]).
async fn client_analyze(owner: &spineledger_store::deadpool_postgres::Pool) -> anyhow::Result<()> {
    owner.get().await?.batch_execute("ANALYZE").await?;
    Ok(())
}

/// The statistics queries timed: (label, dimensions, window as (from, to) dates).
type Query = (
    &'static str,
    Vec<v1::StatisticsDimension>,
    Option<((i32, u32, u32), (i32, u32, u32))>,
);

/// The queries: the whole clinic by no dimension and by one (the cells of the total and
/// of one-dimension roll-ups), and the whole months of 2025. (The API refuses windows
/// that are not whole months and groupings of two dimensions besides the clinic.)
fn queries() -> Vec<Query> {
    use v1::StatisticsDimension as D;
    vec![
        ("no grouping", vec![], None),
        ("by age band", vec![D::AgeBand], None),
        ("by diagnosis", vec![D::Diagnosis], None),
        (
            "by age band, whole months of 2025",
            vec![D::AgeBand],
            Some(((2025, 1, 1), (2026, 1, 1))),
        ),
    ]
}

/// Midnight UTC of a date, as a request timestamp.
fn midnight((year, month, day): (i32, u32, u32)) -> Option<prost_types::Timestamp> {
    let at = chrono::NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(0, 0, 0)?;
    Some(prost_types::Timestamp {
        seconds: at.and_utc().timestamp(),
        nanos: 0,
    })
}

/// Times `GetOutcomeStatistics` of the large clinic, one client, `seconds` per query.
async fn statistics(
    server: &Server,
    clinic: &LargeClinic,
    seconds: u64,
    report: &mut BenchReport,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(server.address.clone())?
        .connect()
        .await?;
    let mut client =
        OutcomeStatisticsServiceClient::with_interceptor(channel, server.token(&[clinic.clinic])?);
    for (label, group_by, window) in queries() {
        let request = v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![clinic.clinic.to_string()],
            group_by: group_by.iter().map(|d| *d as i32).collect(),
            evaluated_from: window.and_then(|(from, _)| midnight(from)),
            evaluated_to: window.and_then(|(_, to)| midnight(to)),
            min_position: None,
            as_of: None,
        };
        let response = client.get_outcome_statistics(request.clone()).await?;
        let shown: i64 = response
            .into_inner()
            .groups
            .iter()
            .filter_map(|group| group.episodes)
            .sum();
        anyhow::ensure!(
            usize::try_from(shown).unwrap_or(0) <= clinic.episodes,
            "statistics show more episodes than were generated"
        );
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let mut latencies = Vec::new();
        while Instant::now() < until {
            let sent = Instant::now();
            client.get_outcome_statistics(request.clone()).await?;
            latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        }
        report.statistics.push((
            label,
            Phase::from_latencies(latencies, started.elapsed().as_secs_f64()),
        ));
    }
    Ok(())
}
