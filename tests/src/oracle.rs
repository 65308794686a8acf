//! An independent oracle for the read models: a plain fold over the full event list,
//! written without the read-model crate and without the domain's chart, that the projected
//! tables must agree with.
//!
//! It follows the product's definitions in its own code: each episode's facts are read in
//! clinical order (`occurred_at`, ties by stream version), whenever they were entered;
//! every `RecordCorrected` is applied, in log order, to the raw JSON payload of the event
//! it names (its stored payload paths and values) before that event is decoded; session
//! numbers and "after session" counts are positions in the clinical order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use spineledger_domain::EpisodeEvent;
use spineledger_domain::measures::{CodeSystem, Frequency};
use spineledger_projections::{Projection, ProjectorConfig};
use spineledger_store::deadpool_postgres::Pool;
use spineledger_store::{ClinicShard, GlobalCursor, RecordedEvent};
use uuid::Uuid;

/// The settings of the clinically last session.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSettings {
    pub session_number: u32,
    pub mode: String,
    pub peak_newtons: f64,
    pub rest_newtons: f64,
    pub hold_seconds: u16,
    pub relax_seconds: u16,
    pub cycles: u16,
    pub duration_minutes: u8,
    pub angle_degrees: u8,
    pub levels: Vec<String>,
}

/// What the oracle expects of one episode's treatment plan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectedEpisode {
    pub phase: String,
    pub sessions_total: u32,
    pub sessions_in_phase: u32,
    pub missed_sessions: u32,
    pub adverse_events: u32,
    pub last_settings: Option<ExpectedSettings>,
    /// The last five, oldest first.
    pub recent_tolerances: Vec<String>,
    pub baseline_pain_back: Option<u8>,
    /// Back and leg pain of the clinically latest evaluation, outcome or reassessment.
    pub latest_pain: Option<(u8, u8)>,
    pub last_adherence_percent: Option<u8>,
    pub last_recommendation: Option<String>,
    pub discharge_reason: Option<String>,
    pub corrections: u32,
}

/// What the oracle expects of one episode's outcome facts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpectedOutcome {
    pub sessions_completed: u32,
    pub initial_phase_sessions: u32,
    pub initial_sessions: Option<u8>,
    pub age_band: Option<String>,
    pub primary_diagnosis: Option<String>,
    pub frequency_phase: String,
    pub baseline_pain_back: Option<u8>,
    /// Back pain of the last follow-up taken after exactly four sessions.
    pub at_session_4_pain_back: Option<u8>,
    pub latest_follow_up_pain_back: Option<u8>,
    /// `pain_before` by session number.
    pub pain_before_by_session: BTreeMap<u32, u8>,
    pub adherence_reports: u32,
    pub adherence_percent_sum: u32,
    pub missed_sessions: u32,
    pub adverse_events: u32,
    pub discharge_reason: Option<String>,
    pub corrections: u32,
}

/// Every event of the log, in global order (waiting out other tests' open transactions
/// until `expected` events are visible, if given), read through `pool`, which must see
/// every clinic (the projector role's, as in `TestDatabase::projector_pool`).
pub async fn all_events(pool: &Pool, expected: Option<usize>) -> Vec<RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut cursor = GlobalCursor::START;
        let mut events = Vec::new();
        loop {
            let client = pool.get().await.expect("connection");
            let page = spineledger_store::read_all_after(&client, cursor, 2000, ClinicShard::ALL)
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

fn age_band(age: u8) -> &'static str {
    match age {
        0..=17 => "<18",
        18..=29 => "18-29",
        30..=44 => "30-44",
        45..=59 => "45-59",
        60..=74 => "60-74",
        _ => "75+",
    }
}

/// Sets the value at a stored payload path (`a`, `a.b`, `a[1].b`) of existing objects and
/// arrays; false when the path leads nowhere.
fn set_path(root: &mut Json, path: &str, value: Json) -> bool {
    let segments: Vec<String> = path
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .map(str::to_owned)
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = root;
    for segment in parents {
        let next = match node {
            Json::Object(map) => map.get_mut(segment),
            Json::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match node {
        Json::Object(map) => {
            map.insert(last.clone(), value);
            true
        }
        Json::Array(items) => match last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// One stored fact of an episode: its raw payload, corrected as the log goes.
struct StoredFact {
    version: u64,
    event_type: String,
    schema_version: i32,
    payload: Json,
}

/// An episode's facts (not corrections) in clinical order, every correction applied to the
/// raw payload of the event it names, in log order; and how many corrections it has. A
/// correction whose result does not decode changes nothing.
fn chart_of(events: &[&RecordedEvent]) -> (Vec<EpisodeEvent>, u32) {
    let mut facts: BTreeMap<Uuid, StoredFact> = BTreeMap::new();
    let mut corrections = 0;
    let mut log: Vec<&RecordedEvent> = events.to_vec();
    log.sort_by_key(|e| e.version);
    for stored in log {
        if stored.event_type != "RecordCorrected" {
            facts.insert(
                stored.event_id,
                StoredFact {
                    version: stored.version,
                    event_type: stored.event_type.clone(),
                    schema_version: stored.schema_version,
                    payload: stored.payload.clone(),
                },
            );
            continue;
        }
        corrections += 1;
        let target = stored.payload["corrected_event_id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok());
        let Some(fact) = target.and_then(|id| facts.get_mut(&id)) else {
            continue;
        };
        let mut payload = fact.payload.clone();
        let mut fits = true;
        for correction in stored.payload["corrections"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let path = correction["field"].as_str().unwrap_or_default();
            let top = path.split(['.', '[']).next().unwrap_or_default();
            fits &= payload.get(top).is_some()
                && set_path(&mut payload, path, correction["corrected_value"].clone());
        }
        if fits
            && EpisodeEvent::from_payload(&fact.event_type, fact.schema_version, payload.clone())
                .is_ok()
        {
            fact.payload = payload;
        }
    }
    let mut chart: Vec<(DateTime<Utc>, u64, EpisodeEvent)> = facts
        .into_values()
        .map(|fact| {
            let event =
                EpisodeEvent::from_payload(&fact.event_type, fact.schema_version, fact.payload)
                    .expect("every stored episode event decodes");
            (event.occurred_at(), fact.version, event)
        })
        .collect();
    chart.sort_by_key(|(at, version, _)| (*at, *version));
    (
        chart.into_iter().map(|(_, _, event)| event).collect(),
        corrections,
    )
}

/// The episodes an ungrouped statistic counts (k = 8), worked out from the events alone:
/// those whose clinic evaluated at least 8 episodes for the first time in the same UTC
/// month (the first evaluation in log order); a smaller clinic-month is withheld. Episodes
/// with no evaluation form one part per clinic.
pub fn released_episodes(events: &[RecordedEvent]) -> BTreeSet<(Uuid, Uuid)> {
    use chrono::Datelike;
    // Episodes by (clinic, (year, month) of the first evaluation).
    type ClinicMonth = (Uuid, Option<(i32, u32)>);
    let mut parts: BTreeMap<ClinicMonth, Vec<(Uuid, Uuid)>> = BTreeMap::new();
    for (key, stream) in episodes_of(events) {
        let month = stream
            .iter()
            .find(|event| event.event_type == "EvaluationRecorded")
            .and_then(|event| event.occurred_at)
            .map(|at| (at.year(), at.month()));
        parts.entry((key.0, month)).or_default().push(key);
    }
    parts
        .into_values()
        .filter(|episodes| episodes.len() >= 8)
        .flatten()
        .collect()
}

/// The events of each episode stream, by (clinic, episode).
fn episodes_of(events: &[RecordedEvent]) -> BTreeMap<(Uuid, Uuid), Vec<&RecordedEvent>> {
    let mut episodes: BTreeMap<(Uuid, Uuid), Vec<&RecordedEvent>> = BTreeMap::new();
    for stored in events {
        if let Some(spineledger_domain::EpisodeId(episode_id)) =
            spineledger_domain::EpisodeId::from_stream_id(&stored.stream_id)
        {
            episodes
                .entry((stored.clinic_id, episode_id))
                .or_default()
                .push(stored);
        }
    }
    episodes
}

/// The plain fold: episode key (clinic, episode) -> what the treatment plans must say.
pub fn expected_episodes(events: &[RecordedEvent]) -> BTreeMap<(Uuid, Uuid), ExpectedEpisode> {
    episodes_of(events)
        .into_iter()
        .map(|(key, stream)| {
            let (chart, corrections) = chart_of(&stream);
            (key, plan_of(&chart, corrections))
        })
        .collect()
}

/// The plain fold: episode key (clinic, episode) -> what the outcome facts must say.
pub fn expected_outcomes(events: &[RecordedEvent]) -> BTreeMap<(Uuid, Uuid), ExpectedOutcome> {
    episodes_of(events)
        .into_iter()
        .map(|(key, stream)| {
            let (chart, corrections) = chart_of(&stream);
            (key, outcome_of(&chart, corrections))
        })
        .collect()
}

fn plan_of(chart: &[EpisodeEvent], corrections: u32) -> ExpectedEpisode {
    let mut episode = ExpectedEpisode {
        phase: "awaiting_plan".into(),
        corrections,
        ..ExpectedEpisode::default()
    };
    for event in chart {
        let discharged = episode.phase == "discharged";
        match event {
            EpisodeEvent::EvaluationRecorded(e) => {
                let pain = (e.pain_back.value(), e.pain_leg.value());
                episode.baseline_pain_back.get_or_insert(pain.0);
                episode.latest_pain = Some(pain);
            }
            EpisodeEvent::TreatmentPlanStarted(_) if !discharged => {
                episode.phase = "initial".into();
                episode.sessions_in_phase = 0;
            }
            EpisodeEvent::SessionRecorded(s) => {
                episode.sessions_total += 1;
                episode.sessions_in_phase += 1;
                episode.last_settings = Some(ExpectedSettings {
                    session_number: episode.sessions_total,
                    mode: format!("{:?}", s.mode),
                    peak_newtons: s.peak_force.newtons(),
                    rest_newtons: s.rest_force.newtons(),
                    hold_seconds: s.hold_seconds.value(),
                    relax_seconds: s.relax_seconds.value(),
                    cycles: s.cycles.value(),
                    duration_minutes: s.duration_minutes.value(),
                    angle_degrees: s.angle_degrees.value(),
                    levels: s.levels.iter().map(|l| format!("{l:?}")).collect(),
                });
                episode.recent_tolerances.push(format!("{:?}", s.tolerance));
                if episode.recent_tolerances.len() > 5 {
                    episode.recent_tolerances.remove(0);
                }
                if s.adverse_event.is_some() {
                    episode.adverse_events += 1;
                }
            }
            EpisodeEvent::SessionMissed(_) => episode.missed_sessions += 1,
            EpisodeEvent::OutcomeRecorded(o) => {
                episode.latest_pain = Some((o.pain_back.value(), o.pain_leg.value()));
            }
            EpisodeEvent::ReassessmentRecorded(r) => {
                episode.latest_pain = Some((r.pain_back.value(), r.pain_leg.value()));
                episode.last_recommendation = Some(format!("{:?}", r.recommendation));
            }
            EpisodeEvent::HomeCareAdherenceReported(a) => {
                episode.last_adherence_percent = Some(a.adherence_percent.value());
            }
            EpisodeEvent::TreatmentPlanAdjusted(a) if !discharged => {
                episode.phase = frequency_name(a.frequency).into();
                episode.sessions_in_phase = 0;
            }
            EpisodeEvent::EpisodeDischarged(d) => {
                episode.phase = "discharged".into();
                episode.discharge_reason = Some(format!("{:?}", d.reason));
            }
            _ => {}
        }
    }
    episode
}

fn outcome_of(chart: &[EpisodeEvent], corrections: u32) -> ExpectedOutcome {
    let mut outcome = ExpectedOutcome {
        corrections,
        ..ExpectedOutcome::default()
    };
    let (mut plan_started, mut in_initial, mut frequency) = (false, false, None);
    for event in chart {
        let discharged = outcome.discharge_reason.is_some();
        match event {
            EpisodeEvent::EvaluationRecorded(e) if outcome.baseline_pain_back.is_none() => {
                outcome.baseline_pain_back = Some(e.pain_back.value());
                outcome.age_band = Some(age_band(e.age_years.value()).to_owned());
                outcome.primary_diagnosis = e.diagnoses.first().map(|d| {
                    let system = match d.system() {
                        CodeSystem::Icd10 => "ICD10",
                        CodeSystem::SnomedCt => "SNOMED",
                    };
                    format!("{system}:{}", d.code())
                });
            }
            EpisodeEvent::TreatmentPlanStarted(p) => {
                plan_started = true;
                outcome.initial_sessions = Some(p.initial_sessions);
                if !discharged {
                    in_initial = true;
                    outcome.initial_phase_sessions = 0;
                }
            }
            EpisodeEvent::SessionRecorded(s) => {
                outcome.sessions_completed += 1;
                if in_initial {
                    outcome.initial_phase_sessions += 1;
                }
                if s.adverse_event.is_some() {
                    outcome.adverse_events += 1;
                }
                outcome
                    .pain_before_by_session
                    .insert(outcome.sessions_completed, s.pain_before.value());
            }
            EpisodeEvent::SessionMissed(_) => outcome.missed_sessions += 1,
            EpisodeEvent::OutcomeRecorded(o) => outcome.follow_up(o.pain_back.value()),
            EpisodeEvent::ReassessmentRecorded(r) => outcome.follow_up(r.pain_back.value()),
            EpisodeEvent::HomeCareAdherenceReported(a) => {
                outcome.adherence_reports += 1;
                outcome.adherence_percent_sum += u32::from(a.adherence_percent.value());
            }
            EpisodeEvent::TreatmentPlanAdjusted(a) if !discharged => {
                frequency = Some(a.frequency);
                in_initial = false;
            }
            EpisodeEvent::EpisodeDischarged(d) => {
                outcome.discharge_reason = Some(format!("{:?}", d.reason));
                in_initial = false;
            }
            _ => {}
        }
    }
    outcome.frequency_phase = match (frequency, plan_started) {
        (Some(frequency), _) => frequency_name(frequency),
        (None, true) => "initial_only",
        (None, false) => "no_plan",
    }
    .to_owned();
    outcome
}

impl ExpectedOutcome {
    fn follow_up(&mut self, pain_back: u8) {
        self.latest_follow_up_pain_back = Some(pain_back);
        if self.sessions_completed == 4 {
            self.at_session_4_pain_back = Some(pain_back);
        }
    }
}

/// Waits until every (projection, shard) checkpoint has reached the last event of its
/// shard in `events`.
pub async fn wait_until_projected(pool: &Pool, config: &ProjectorConfig, events: &[RecordedEvent]) {
    let mut targets: BTreeMap<u8, GlobalCursor> = BTreeMap::new();
    for event in events {
        let shard = ClinicShard::of(event.clinic_id, config.shards).index();
        let target = targets.entry(shard).or_insert(GlobalCursor::START);
        *target = (*target).max(event.cursor);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let client = pool.get().await.expect("connection");
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

/// What the projected tables say, in the oracle's terms, read through `pool` (one that
/// sees every clinic).
pub async fn projected_episodes(pool: &Pool) -> BTreeMap<(Uuid, Uuid), ExpectedEpisode> {
    let client = pool.get().await.expect("connection");
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
            serde_json::from_value(row.try_get(2).expect("column")).expect("view decodes");
        projected.insert(
            (
                row.try_get(0).expect("column"),
                row.try_get(1).expect("column"),
            ),
            ExpectedEpisode {
                phase: view.phase.as_str().to_owned(),
                sessions_total: view.sessions_total,
                sessions_in_phase: view.sessions_in_phase,
                missed_sessions: view.missed_sessions,
                adverse_events: view.adverse_events,
                last_settings: view.last_settings.map(|s| ExpectedSettings {
                    session_number: s.session_number,
                    mode: format!("{:?}", s.mode),
                    peak_newtons: s.peak_force_newtons,
                    rest_newtons: s.rest_force_newtons,
                    hold_seconds: s.hold_seconds,
                    relax_seconds: s.relax_seconds,
                    cycles: s.cycles,
                    duration_minutes: s.duration_minutes,
                    angle_degrees: s.angle_degrees,
                    levels: s.levels.iter().map(|l| format!("{l:?}")).collect(),
                }),
                recent_tolerances: view
                    .recent_tolerances
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect(),
                baseline_pain_back: view.baseline.map(|b| b.pain_back),
                latest_pain: view.latest_nrs.map(|l| (l.pain_back, l.pain_leg)),
                last_adherence_percent: view.adherence_last_percent,
                last_recommendation: view.last_recommendation.map(|r| format!("{r:?}")),
                discharge_reason: view.discharge_reason.map(|r| format!("{r:?}")),
                corrections: view.corrections,
            },
        );
    }
    projected
}

/// The outcome facts' view of the same things (they must agree with the oracle too).
pub async fn projected_outcomes(pool: &Pool) -> BTreeMap<(Uuid, Uuid), ExpectedOutcome> {
    let client = pool.get().await.expect("connection");
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
                serde_json::from_value(row.try_get(2).expect("column")).expect("facts decode");
            let outcome = ExpectedOutcome {
                sessions_completed: facts.sessions_completed,
                initial_phase_sessions: facts.initial_phase_sessions,
                initial_sessions: facts.initial_sessions,
                age_band: facts.age_band.map(|band| band.as_str().to_owned()),
                primary_diagnosis: facts.primary_diagnosis,
                frequency_phase: facts.frequency_phase.as_str().to_owned(),
                baseline_pain_back: facts.baseline_pain_back,
                at_session_4_pain_back: facts.at_session_4.map(|f| f.pain_back),
                latest_follow_up_pain_back: facts.latest_follow_up.map(|f| f.pain_back),
                pain_before_by_session: facts.pain_before_by_session,
                adherence_reports: facts.adherence_reports,
                adherence_percent_sum: facts.adherence_percent_sum,
                missed_sessions: facts.missed_sessions,
                adverse_events: facts.adverse_events,
                discharge_reason: facts.discharge_reason.map(|r| format!("{r:?}")),
                corrections: facts.corrections,
            };
            (
                (
                    row.try_get(0).expect("column"),
                    row.try_get(1).expect("column"),
                ),
                outcome,
            )
        })
        .collect()
}

/// Asserts both read models agree with the oracle over `events`.
pub async fn assert_models_match_oracle(pool: &Pool, events: &[RecordedEvent]) {
    let expected = expected_episodes(events);
    let projected = projected_episodes(pool).await;
    assert_eq!(projected.len(), expected.len(), "episode count differs");
    for (key, want) in &expected {
        assert_eq!(projected.get(key), Some(want), "treatment plan of {key:?}");
    }
    let expected = expected_outcomes(events);
    let outcomes = projected_outcomes(pool).await;
    assert_eq!(outcomes.len(), expected.len());
    for (key, want) in &expected {
        assert_eq!(outcomes.get(key), Some(want), "outcome facts of {key:?}");
    }
    assert_cells_sum_the_episodes(pool).await;
    let _ = Projection::ALL;
}

/// Asserts the outcome cells hold exactly the tallies of the stored episode facts: each
/// cell the sum of its episodes' contributions, no cell missing, none left over (a cell
/// whose episodes all moved out is gone).
pub async fn assert_cells_sum_the_episodes(pool: &Pool) {
    let client = pool.get().await.expect("connection");
    let rows = client
        .query("SELECT facts FROM outcome_episodes", &[])
        .await
        .expect("outcomes");
    let episodes: Vec<spineledger_readmodels::EpisodeOutcome> = rows
        .into_iter()
        .map(|row| serde_json::from_value(row.try_get(0).expect("column")).expect("facts"))
        .collect();
    let expected = spineledger_readmodels::cell_changes(episodes.iter().map(|e| (None, e)));
    let stored = spineledger_projections::cells::stored(&client, "outcome_cells")
        .await
        .expect("cells");
    assert_eq!(stored.len(), expected.len(), "cell count differs");
    for (cell, tally) in &expected {
        assert_eq!(stored.get(cell), Some(tally), "cell {cell:?}");
    }
}
