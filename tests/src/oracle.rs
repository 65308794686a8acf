//! An independent oracle for the read models: a plain fold over the full event list,
//! written without the read-model crate, that the projected tables must agree with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use spineledger_domain::EpisodeEvent;
use spineledger_domain::measures::Frequency;
use spineledger_projections::{Projection, ProjectorConfig};
use spineledger_store::{ClinicShard, EventStore, GlobalCursor, RecordedEvent};
use uuid::Uuid;

/// What the oracle expects of one episode, in both read models.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectedEpisode {
    pub phase: String,
    pub sessions_total: u32,
    pub sessions_in_phase: u32,
    pub missed_sessions: u32,
    pub adverse_events: u32,
    pub last_peak_newtons: Option<f64>,
    pub baseline_pain_back: Option<u8>,
    pub latest_pain_back: Option<u8>,
    pub discharge_reason: Option<String>,
}

/// Every event of the log, in global order (waiting out other tests' open transactions
/// until `expected` events are visible, if given).
pub async fn all_events(store: &EventStore, expected: Option<usize>) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut cursor = GlobalCursor::START;
        let mut events = Vec::new();
        loop {
            let page = store
                .read_all_after(cursor, 2000)
                .await
                .expect("read the log");
            let Some(last) = page.last() else { break };
            cursor = last.cursor;
            events.extend(page);
        }
        if expected.is_none_or(|n| events.len() >= n) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected:?} events became visible",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn frequency_name(frequency: Frequency) -> &'static str {
    match frequency {
        Frequency::Intensive => "intensive",
        Frequency::Tapering => "tapering",
        Frequency::Maintenance => "maintenance",
        Frequency::AsNeeded => "as_needed",
    }
}

/// The plain fold: episode key (clinic, episode) -> what the models must say.
pub fn expected_episodes(events: &[RecordedEvent]) -> BTreeMap<(Uuid, Uuid), ExpectedEpisode> {
    let mut episodes: BTreeMap<(Uuid, Uuid), ExpectedEpisode> = BTreeMap::new();
    for stored in events {
        let Some(spineledger_domain::EpisodeId(episode_id)) =
            spineledger_domain::EpisodeId::from_stream_id(&stored.stream_id)
        else {
            continue;
        };
        let event = EpisodeEvent::from_payload(
            &stored.event_type,
            stored.schema_version,
            stored.payload.clone(),
        )
        .expect("every stored episode event decodes");
        let episode = episodes
            .entry((stored.clinic_id, episode_id))
            .or_insert_with(|| ExpectedEpisode {
                phase: "awaiting_plan".into(),
                ..ExpectedEpisode::default()
            });
        match &event {
            EpisodeEvent::EvaluationRecorded(e) => {
                let pain = e.pain_back.value();
                episode.baseline_pain_back.get_or_insert(pain);
                episode.latest_pain_back = Some(pain);
            }
            EpisodeEvent::TreatmentPlanStarted(_) => {
                episode.phase = "initial".into();
                episode.sessions_in_phase = 0;
            }
            EpisodeEvent::SessionRecorded(s) => {
                episode.sessions_total += 1;
                episode.sessions_in_phase += 1;
                episode.last_peak_newtons = Some(s.peak_force.newtons());
                if s.adverse_event.is_some() {
                    episode.adverse_events += 1;
                }
            }
            EpisodeEvent::SessionMissed(_) => episode.missed_sessions += 1,
            EpisodeEvent::OutcomeRecorded(o) => {
                episode.latest_pain_back = Some(o.pain_back.value())
            }
            EpisodeEvent::ReassessmentRecorded(r) => {
                episode.latest_pain_back = Some(r.pain_back.value())
            }
            EpisodeEvent::TreatmentPlanAdjusted(a) => {
                episode.phase = frequency_name(a.frequency).into();
                episode.sessions_in_phase = 0;
            }
            EpisodeEvent::EpisodeDischarged(d) => {
                episode.phase = "discharged".into();
                episode.discharge_reason = Some(format!("{:?}", d.reason));
            }
            EpisodeEvent::HomeCareInstructed(_)
            | EpisodeEvent::HomeCareAdherenceReported(_)
            | EpisodeEvent::RecordCorrected(_) => {}
        }
    }
    episodes
}

/// Waits until every (projection, shard) checkpoint has reached the last event of its
/// shard in `events`.
pub async fn wait_until_projected(
    store: &EventStore,
    config: &ProjectorConfig,
    events: &[RecordedEvent],
) {
    let mut targets: BTreeMap<u8, GlobalCursor> = BTreeMap::new();
    for event in events {
        let shard = ClinicShard::of(event.clinic_id, config.shards).index();
        let target = targets.entry(shard).or_insert(GlobalCursor::START);
        *target = (*target).max(event.cursor);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let client = store.pool().get().await.expect("connection");
        let mut behind = BTreeSet::new();
        for projection in &config.projections {
            for (shard, target) in &targets {
                let reached = spineledger_projections::checkpoint(&client, *projection, *shard)
                    .await
                    .expect("checkpoint");
                if reached < *target {
                    behind.insert((projection.name(), *shard));
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projections still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the projected tables say, in the oracle's terms.
pub async fn projected_episodes(store: &EventStore) -> BTreeMap<(Uuid, Uuid), ExpectedEpisode> {
    let client = store.pool().get().await.expect("connection");
    let plans = client
        .query(
            "SELECT clinic_id, episode_id, view FROM treatment_plans",
            &[],
        )
        .await
        .expect("plans");
    let mut projected = BTreeMap::new();
    for row in plans {
        let view: spineledger_readmodels::TreatmentPlanView =
            serde_json::from_value(row.get(2)).expect("view decodes");
        projected.insert(
            (row.get(0), row.get(1)),
            ExpectedEpisode {
                phase: view.phase.as_str().to_owned(),
                sessions_total: view.sessions_total,
                sessions_in_phase: view.sessions_in_phase,
                missed_sessions: view.missed_sessions,
                adverse_events: view.adverse_events,
                last_peak_newtons: view.last_settings.map(|s| s.peak_force_newtons),
                baseline_pain_back: view.baseline.map(|b| b.pain_back),
                latest_pain_back: view.latest_nrs.map(|l| l.pain_back),
                discharge_reason: view.discharge_reason.map(|r| format!("{r:?}")),
            },
        );
    }
    projected
}

/// The outcome facts' view of the same things (they must agree with the oracle too).
pub async fn projected_outcomes(
    store: &EventStore,
) -> BTreeMap<(Uuid, Uuid), (u32, Option<u8>, Option<String>)> {
    let client = store.pool().get().await.expect("connection");
    let rows = client
        .query(
            "SELECT clinic_id, episode_id, facts FROM outcome_episodes",
            &[],
        )
        .await
        .expect("outcomes");
    rows.into_iter()
        .map(|row| {
            let facts: spineledger_readmodels::EpisodeOutcome =
                serde_json::from_value(row.get(2)).expect("facts decode");
            (
                (row.get(0), row.get(1)),
                (
                    facts.sessions_completed,
                    facts.baseline_pain_back,
                    facts.discharge_reason.map(|r| format!("{r:?}")),
                ),
            )
        })
        .collect()
}

/// Asserts both read models agree with the oracle over `events`.
pub async fn assert_models_match_oracle(store: &EventStore, events: &[RecordedEvent]) {
    let expected = expected_episodes(events);
    let projected = projected_episodes(store).await;
    assert_eq!(projected.len(), expected.len(), "episode count differs");
    for (key, want) in &expected {
        assert_eq!(projected.get(key), Some(want), "treatment plan of {key:?}");
    }
    let outcomes = projected_outcomes(store).await;
    assert_eq!(outcomes.len(), expected.len());
    for (key, want) in &expected {
        let got = outcomes.get(key).expect("outcome row");
        assert_eq!(
            got,
            &(
                want.sessions_total,
                want.baseline_pain_back,
                want.discharge_reason.clone()
            ),
            "outcome facts of {key:?}"
        );
    }
    let _ = Projection::ALL;
}
