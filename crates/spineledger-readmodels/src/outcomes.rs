//! The de-identified facts of one episode that outcome statistics are computed from
//!. No patient id, name or birth date: an age band, the primary
//! diagnosis, the plan, scores and counts. Statistics group and aggregate these rows
//! ([`crate::statistics`]).
//!
//! The facts are folded from the episode's chart ([`crate::fold`]): in the order care
//! happened, whenever it was entered, with corrections already applied to the facts they
//! name, so every derived fact uses the corrected values. Session numbers and "after
//! session" counts are the chart's: sessions that took place before. Definitions:
//!
//! - **Baseline**: back pain NRS and ODI of the first evaluation.
//! - **Follow-up**: an `OutcomeRecorded` or `ReassessmentRecorded`. The follow-up "at
//!   session 4" (or 6) is the last one in clinical order taken after exactly 4 (or 6)
//!   sessions; the ODI is taken from the last such follow-up that recorded one. "At
//!   discharge" is the latest follow-up, once the episode is discharged. "Latest" is the
//!   latest follow-up in clinical order, discharged or not.
//! - **Responder status**: latest follow-up against baseline ([`crate::responder`]).
//! - **Pain trajectory**: `pain_before` of each session by its number in clinical order.
//! - **Sessions to first NRS response**: the smallest number of completed sessions `k >= 1`
//!   at which a back-pain reading met the responder threshold against the baseline. A
//!   follow-up with `after_session = k` is a reading after `k` sessions; the `pain_before`
//!   of session `n` is a reading after `n - 1` sessions (so session 1's pre-session pain,
//!   taken before any treatment, never counts). None when no reading met the threshold.
//! - **Initial phase completed**: the sessions recorded while the plan was in its initial
//!   phase are at least the planned initial sessions.
//! - **Frequency phase**: the latest personalised frequency; `initial_only` with a plan and
//!   no adjustment; `no_plan` without a plan.
//! - **Adherence band**: the mean of all adherence reports: `none_reported` without a
//!   report, `low` below 50 %, `moderate` 50-79 %, `high` 80 % and above.
//! - **Adverse events**: sessions that recorded an adverse event.
//!
//! `scores_corrected` is set when a correction changed a value these facts use: pain and
//! ODI scores, pre-session pain, age, diagnoses, sciatica, symptom duration, the initial session count, a frequency,
//! adherence, an adverse event or a discharge reason. Every correction is counted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spineledger_domain::events::{EvaluationRecorded, TreatmentPlanStarted};
use spineledger_domain::measures::{
    CodeSystem, Diagnosis, DischargeReason, Frequency, OswestryIndex,
};
use spineledger_domain::{ChartCorrection, ChartEntry, EpisodeEvent};
use uuid::Uuid;

use crate::fold::{EpisodeView, FoldMark};
use crate::responder::{ResponderStatus, nrs_improved, nrs_status, odi_status};

/// Age bands for statistics, from the age at the first evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AgeBand {
    /// Under 18.
    #[serde(rename = "<18")]
    Under18,
    /// 18 to 29.
    #[serde(rename = "18-29")]
    From18To29,
    /// 30 to 44.
    #[serde(rename = "30-44")]
    From30To44,
    /// 45 to 59.
    #[serde(rename = "45-59")]
    From45To59,
    /// 60 to 74.
    #[serde(rename = "60-74")]
    From60To74,
    /// 75 and over.
    #[serde(rename = "75+")]
    From75,
}

impl AgeBand {
    /// The band of an age in whole years.
    #[must_use]
    pub const fn of_age(years: u8) -> Self {
        match years {
            0..=17 => Self::Under18,
            18..=29 => Self::From18To29,
            30..=44 => Self::From30To44,
            45..=59 => Self::From45To59,
            60..=74 => Self::From60To74,
            _ => Self::From75,
        }
    }

    /// The band's label, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Under18 => "<18",
            Self::From18To29 => "18-29",
            Self::From30To44 => "30-44",
            Self::From45To59 => "45-59",
            Self::From60To74 => "60-74",
            Self::From75 => "75+",
        }
    }
}

/// How long the symptoms had lasted at the first evaluation, in the bands low back pain
/// guidelines use (for example NICE NG59 and the Cochrane Back Review Group): acute under
/// 6 weeks, subacute 6 to 12 weeks, chronic more than 12 weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chronicity {
    /// Under 6 weeks.
    Acute,
    /// 6 to 12 weeks.
    Subacute,
    /// More than 12 weeks.
    Chronic,
}

impl Chronicity {
    /// The band of a duration in whole weeks.
    #[must_use]
    pub const fn of_weeks(weeks: u16) -> Self {
        match weeks {
            0..=5 => Self::Acute,
            6..=12 => Self::Subacute,
            _ => Self::Chronic,
        }
    }

    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Acute => "acute",
            Self::Subacute => "subacute",
            Self::Chronic => "chronic",
        }
    }
}

/// How far the plan got: the latest personalised frequency, or no further than the
/// initial phase, or no plan at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrequencyPhase {
    /// No plan was started.
    NoPlan,
    /// A plan started and was never adjusted.
    InitialOnly,
    /// Latest frequency: intensive.
    Intensive,
    /// Latest frequency: tapering.
    Tapering,
    /// Latest frequency: maintenance.
    Maintenance,
    /// Latest frequency: as needed.
    AsNeeded,
}

impl FrequencyPhase {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoPlan => "no_plan",
            Self::InitialOnly => "initial_only",
            Self::Intensive => "intensive",
            Self::Tapering => "tapering",
            Self::Maintenance => "maintenance",
            Self::AsNeeded => "as_needed",
        }
    }

    const fn of_frequency(frequency: Frequency) -> Self {
        match frequency {
            Frequency::Intensive => Self::Intensive,
            Frequency::Tapering => Self::Tapering,
            Frequency::Maintenance => Self::Maintenance,
            Frequency::AsNeeded => Self::AsNeeded,
        }
    }
}

/// Home-care adherence, from the mean of all reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdherenceBand {
    /// No report.
    NoneReported,
    /// Mean below 50 %.
    Low,
    /// Mean 50 % to below 80 %.
    Moderate,
    /// Mean 80 % and above.
    High,
}

impl AdherenceBand {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoneReported => "none_reported",
            Self::Low => "low",
            Self::Moderate => "moderate",
            Self::High => "high",
        }
    }

    /// The band of `reports` reports summing to `sum` percent (exact, no rounding).
    #[must_use]
    pub const fn of_reports(reports: u32, sum: u32) -> Self {
        let reports = reports as u64;
        let sum = sum as u64;
        if reports == 0 {
            Self::NoneReported
        } else if sum < 50 * reports {
            Self::Low
        } else if sum < 80 * reports {
            Self::Moderate
        } else {
            Self::High
        }
    }
}

/// Back pain and ODI of a follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FollowUpScores {
    /// Back pain, NRS 0-10.
    pub pain_back: u8,
    /// ODI, 0-100, when a follow-up at that point recorded one.
    pub odi: Option<f64>,
}

/// The kind of a scored measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MeasurementKind {
    Evaluation,
    Outcome,
    Reassessment,
}

/// The raw scores of one evaluation, outcome or reassessment, corrections applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Measurement {
    event_id: Uuid,
    kind: MeasurementKind,
    after_session: Option<u32>,
    pain_back: u8,
    pain_leg: u8,
    odi: Option<f64>,
}

/// The raw pre-session pain of one session, corrections applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SessionPain {
    event_id: Uuid,
    session_number: u32,
    pain_before: u8,
}

/// The facts of one episode for outcome statistics, derived from its chart
/// ([`crate::fold`]); group and aggregate with [`crate::statistics::aggregate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeOutcome {
    /// The clinic (tenant).
    pub clinic_id: Uuid,
    /// The episode (a pseudonymous key, never shown in statistics).
    pub episode_id: Uuid,
    /// When the first evaluation took place, to the whole microsecond (rounded down), as
    /// PostgreSQL keeps it: the month of a statistics cell and a date-range filter on
    /// the stored column then see the same instant.
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Age band at the first evaluation.
    pub age_band: Option<AgeBand>,
    /// First diagnosis of the first evaluation, as `ICD10:M51.2` or `SNOMED:23056005`.
    pub primary_diagnosis: Option<String>,
    /// Sciatica at the first evaluation, when recorded.
    #[serde(default)]
    pub sciatica: Option<bool>,
    /// Weeks the symptoms had lasted at the first evaluation, when recorded.
    #[serde(default)]
    pub symptom_duration_weeks: Option<u16>,
    /// Sessions planned for the initial phase; None without a plan.
    pub initial_sessions: Option<u8>,
    /// Sessions recorded in the episode.
    pub sessions_completed: u32,
    /// Sessions recorded while the plan was in its initial phase.
    pub initial_phase_sessions: u32,
    /// Whether the initial phase's planned sessions were all done.
    pub initial_phase_completed: bool,
    /// The latest personalised frequency, `initial_only` or `no_plan`.
    pub frequency_phase: FrequencyPhase,
    /// Back pain NRS at the first evaluation.
    pub baseline_pain_back: Option<u8>,
    /// ODI at the first evaluation.
    pub baseline_odi: Option<f64>,
    /// The follow-up after session 4.
    pub at_session_4: Option<FollowUpScores>,
    /// The follow-up after session 6.
    pub at_session_6: Option<FollowUpScores>,
    /// The latest follow-up, once discharged.
    pub at_discharge: Option<FollowUpScores>,
    /// The latest follow-up.
    pub latest_follow_up: Option<FollowUpScores>,
    /// Back pain NRS response at the latest follow-up.
    pub nrs_response: ResponderStatus,
    /// ODI response at the latest follow-up.
    pub odi_response: ResponderStatus,
    /// Pre-session pain by session number (the pain trajectory).
    pub pain_before_by_session: BTreeMap<u32, u8>,
    /// Completed sessions when back pain first met the responder threshold.
    pub sessions_to_first_nrs_response: Option<u32>,
    /// Adherence reports received.
    pub adherence_reports: u32,
    /// Sum of the reported adherence percentages.
    pub adherence_percent_sum: u32,
    /// The adherence band of the mean report.
    pub adherence_band: AdherenceBand,
    /// Sessions missed.
    pub missed_sessions: u32,
    /// Sessions with an adverse event.
    pub adverse_events: u32,
    /// Why the episode ended; None while ongoing.
    pub discharge_reason: Option<DischargeReason>,
    /// Corrections recorded in the episode.
    pub corrections: u32,
    /// Whether a correction changed a value these facts are computed from.
    pub scores_corrected: bool,
    /// How far the fold has got (absent in views stored by older versions).
    #[serde(default = "FoldMark::unknown")]
    pub folded: FoldMark,
    /// Whether a plan was started.
    plan_started: bool,
    /// Whether the plan is in its initial phase (sessions count towards it).
    in_initial_phase: bool,
    /// The latest frequency chosen.
    latest_frequency: Option<Frequency>,
    /// Raw scores of every evaluation, outcome and reassessment, in log order.
    measurements: Vec<Measurement>,
    /// Raw pre-session pain of every session, in log order.
    sessions: Vec<SessionPain>,
}

impl EpisodeOutcome {
    /// The facts of an episode before any event.
    #[must_use]
    pub const fn new(clinic_id: Uuid, episode_id: Uuid) -> Self {
        Self {
            clinic_id,
            episode_id,
            evaluated_at: None,
            age_band: None,
            primary_diagnosis: None,
            sciatica: None,
            symptom_duration_weeks: None,
            initial_sessions: None,
            sessions_completed: 0,
            initial_phase_sessions: 0,
            initial_phase_completed: false,
            frequency_phase: FrequencyPhase::NoPlan,
            baseline_pain_back: None,
            baseline_odi: None,
            at_session_4: None,
            at_session_6: None,
            at_discharge: None,
            latest_follow_up: None,
            nrs_response: ResponderStatus::NotAssessed,
            odi_response: ResponderStatus::NotAssessed,
            pain_before_by_session: BTreeMap::new(),
            sessions_to_first_nrs_response: None,
            adherence_reports: 0,
            adherence_percent_sum: 0,
            adherence_band: AdherenceBand::NoneReported,
            missed_sessions: 0,
            adverse_events: 0,
            discharge_reason: None,
            corrections: 0,
            scores_corrected: false,
            folded: FoldMark {
                horizon: None,
                unapplied: 0,
            },
            plan_started: false,
            in_initial_phase: false,
            latest_frequency: None,
            measurements: Vec::new(),
            sessions: Vec::new(),
        }
    }

    /// Folds one fact of the chart, in clinical order. Total: never panics.
    fn fold(&mut self, entry: &ChartEntry) {
        let used: &[&str] = match &entry.event {
            EpisodeEvent::EvaluationRecorded(_) => &[
                "pain_back",
                "odi",
                "age_years",
                "diagnoses",
                "sciatica",
                "symptom_duration_weeks",
            ],
            EpisodeEvent::OutcomeRecorded(_) | EpisodeEvent::ReassessmentRecorded(_) => {
                &["pain_back", "odi"]
            }
            EpisodeEvent::SessionRecorded(_) => &["pain_before", "adverse_event"],
            EpisodeEvent::TreatmentPlanStarted(_) => &["initial_sessions"],
            EpisodeEvent::TreatmentPlanAdjusted(_) => &["frequency"],
            EpisodeEvent::HomeCareAdherenceReported(_) => &["adherence_percent"],
            EpisodeEvent::EpisodeDischarged(_) => &["reason"],
            _ => &[],
        };
        if used.iter().any(|field| entry.is_corrected(field)) {
            self.scores_corrected = true;
        }
        let event_id = entry.event_id;
        match &entry.event {
            EpisodeEvent::EvaluationRecorded(evaluation) => {
                self.apply_evaluation(event_id, evaluation);
            }
            EpisodeEvent::TreatmentPlanStarted(plan) => self.apply_plan_started(plan),
            EpisodeEvent::SessionRecorded(session) => {
                self.sessions_completed = self.sessions_completed.saturating_add(1);
                if self.in_initial_phase {
                    self.initial_phase_sessions = self.initial_phase_sessions.saturating_add(1);
                }
                if session.adverse_event.is_some() {
                    self.adverse_events = self.adverse_events.saturating_add(1);
                }
                self.sessions.push(SessionPain {
                    event_id,
                    session_number: self.sessions_completed,
                    pain_before: session.pain_before.value(),
                });
            }
            EpisodeEvent::SessionMissed(_) => {
                self.missed_sessions = self.missed_sessions.saturating_add(1);
            }
            EpisodeEvent::OutcomeRecorded(outcome) => self.measurements.push(Measurement {
                event_id,
                kind: MeasurementKind::Outcome,
                after_session: Some(self.sessions_completed),
                pain_back: outcome.pain_back.value(),
                pain_leg: outcome.pain_leg.value(),
                odi: outcome.odi.as_ref().map(OswestryIndex::score),
            }),
            EpisodeEvent::ReassessmentRecorded(reassessment) => {
                self.measurements.push(Measurement {
                    event_id,
                    kind: MeasurementKind::Reassessment,
                    after_session: Some(self.sessions_completed),
                    pain_back: reassessment.pain_back.value(),
                    pain_leg: reassessment.pain_leg.value(),
                    odi: reassessment.odi.as_ref().map(OswestryIndex::score),
                });
            }
            EpisodeEvent::HomeCareAdherenceReported(report) => {
                self.adherence_reports = self.adherence_reports.saturating_add(1);
                self.adherence_percent_sum = self
                    .adherence_percent_sum
                    .saturating_add(u32::from(report.adherence_percent.value()));
            }
            EpisodeEvent::TreatmentPlanAdjusted(adjusted) => {
                // Once discharged the frequency the episode reached is final.
                if self.discharge_reason.is_none() {
                    self.latest_frequency = Some(adjusted.frequency);
                    self.in_initial_phase = false;
                }
            }
            EpisodeEvent::EpisodeDischarged(discharged) => {
                self.discharge_reason = Some(discharged.reason);
                self.in_initial_phase = false;
            }
            // Corrections are applied to the facts they name before the fold.
            EpisodeEvent::RecordCorrected(_) | EpisodeEvent::HomeCareInstructed(_) => {}
        }
    }

    fn apply_evaluation(&mut self, event_id: Uuid, evaluation: &EvaluationRecorded) {
        if self.evaluated_at.is_none() {
            self.evaluated_at = Some(whole_microseconds(evaluation.occurred_at));
            self.age_band = Some(AgeBand::of_age(evaluation.age_years.value()));
            self.primary_diagnosis = evaluation.diagnoses.first().map(diagnosis_key);
            self.sciatica = evaluation.sciatica;
            self.symptom_duration_weeks = evaluation
                .symptom_duration_weeks
                .map(spineledger_domain::measures::SymptomWeeks::value);
        }
        self.measurements.push(Measurement {
            event_id,
            kind: MeasurementKind::Evaluation,
            after_session: None,
            pain_back: evaluation.pain_back.value(),
            pain_leg: evaluation.pain_leg.value(),
            odi: Some(evaluation.odi.score()),
        });
    }

    /// A new plan (also a restart) begins a new initial phase; after discharge it is only
    /// recorded.
    fn apply_plan_started(&mut self, plan: &TreatmentPlanStarted) {
        self.plan_started = true;
        self.initial_sessions = Some(plan.initial_sessions);
        if self.discharge_reason.is_none() {
            self.in_initial_phase = true;
            self.initial_phase_sessions = 0;
        }
    }

    /// Recomputes every derived fact from the raw values and counters.
    fn recompute(&mut self) {
        self.initial_phase_completed = self
            .initial_sessions
            .is_some_and(|planned| self.initial_phase_sessions >= u32::from(planned));
        self.frequency_phase = match (self.latest_frequency, self.plan_started) {
            (Some(frequency), _) => FrequencyPhase::of_frequency(frequency),
            (None, true) => FrequencyPhase::InitialOnly,
            (None, false) => FrequencyPhase::NoPlan,
        };
        self.adherence_band =
            AdherenceBand::of_reports(self.adherence_reports, self.adherence_percent_sum);

        let baseline = self
            .measurements
            .iter()
            .find(|m| m.kind == MeasurementKind::Evaluation);
        self.baseline_pain_back = baseline.map(|m| m.pain_back);
        self.baseline_odi = baseline.and_then(|m| m.odi);

        self.at_session_4 = self.follow_up(|m| m.after_session == Some(4));
        self.at_session_6 = self.follow_up(|m| m.after_session == Some(6));
        self.latest_follow_up = self.follow_up(|_| true);
        self.at_discharge = self.discharge_reason.and(self.latest_follow_up);
        self.nrs_response = nrs_status(
            self.baseline_pain_back,
            self.latest_follow_up.map(|f| f.pain_back),
        );
        self.odi_response =
            odi_status(self.baseline_odi, self.latest_follow_up.and_then(|f| f.odi));

        self.pain_before_by_session = self
            .sessions
            .iter()
            .map(|s| (s.session_number, s.pain_before))
            .collect();
        self.sessions_to_first_nrs_response = self.first_nrs_response();
    }

    /// The last follow-up (outcome or reassessment) matching `selects`, with the ODI of the
    /// last matching follow-up that recorded one.
    fn follow_up(&self, selects: impl Fn(&Measurement) -> bool) -> Option<FollowUpScores> {
        let matching: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.kind != MeasurementKind::Evaluation && selects(m))
            .collect();
        let last = matching.last()?;
        Some(FollowUpScores {
            pain_back: last.pain_back,
            odi: matching.iter().rev().find_map(|m| m.odi),
        })
    }

    /// See the module docs: the smallest `k >= 1` completed sessions with a back-pain
    /// reading that meets the threshold against the baseline.
    fn first_nrs_response(&self) -> Option<u32> {
        let baseline = self.baseline_pain_back?;
        let follow_ups = self
            .measurements
            .iter()
            .filter(|m| m.kind != MeasurementKind::Evaluation)
            .filter_map(|m| m.after_session.map(|after| (after, m.pain_back)));
        let pre_session = self
            .sessions
            .iter()
            .map(|s| (s.session_number.saturating_sub(1), s.pain_before));
        follow_ups
            .chain(pre_session)
            .filter(|(completed, pain)| *completed >= 1 && nrs_improved(baseline, *pain))
            .map(|(completed, _)| completed)
            .min()
    }

    /// The first day of the UTC month of the first evaluation: the month statistics
    /// count the episode in. None without an evaluation.
    #[must_use]
    pub fn evaluated_month(&self) -> Option<chrono::NaiveDate> {
        use chrono::Datelike as _;
        self.evaluated_at.and_then(|at| at.date_naive().with_day(1))
    }

    /// The diagnosis key: the primary diagnosis, or `unknown`.
    #[must_use]
    pub fn diagnosis_key(&self) -> &str {
        self.primary_diagnosis.as_deref().unwrap_or("unknown")
    }

    /// The initial sessions key: the planned count, or `no_plan`.
    #[must_use]
    pub fn initial_sessions_key(&self) -> String {
        self.initial_sessions
            .map_or_else(|| "no_plan".to_owned(), |n| n.to_string())
    }

    /// The age band key: the band's label, or `unknown`.
    #[must_use]
    pub const fn age_band_key(&self) -> &'static str {
        match self.age_band {
            Some(band) => band.as_str(),
            None => "unknown",
        }
    }

    /// The chronicity band at the first evaluation, when the duration was recorded.
    #[must_use]
    pub fn chronicity(&self) -> Option<Chronicity> {
        self.symptom_duration_weeks.map(Chronicity::of_weeks)
    }

    /// Mean adherence of all reports, percent; None without a report.
    #[must_use]
    pub fn adherence_mean(&self) -> Option<f64> {
        (self.adherence_reports > 0)
            .then(|| f64::from(self.adherence_percent_sum) / f64::from(self.adherence_reports))
    }
}

/// A diagnosis as a grouping key: `ICD10:<code>` or `SNOMED:<id>`.
#[must_use]
pub fn diagnosis_key(diagnosis: &Diagnosis) -> String {
    let system = match diagnosis.system() {
        CodeSystem::Icd10 => "ICD10",
        CodeSystem::SnomedCt => "SNOMED",
    };
    format!("{system}:{}", diagnosis.code())
}

impl EpisodeView for EpisodeOutcome {
    fn empty(clinic_id: Uuid, episode_id: Uuid) -> Self {
        Self::new(clinic_id, episode_id)
    }

    fn fold_fact(&mut self, entry: &ChartEntry) {
        self.fold(entry);
    }

    /// Counts the corrections; those applied have already changed the facts folded.
    fn note_corrections(&mut self, corrections: &[ChartCorrection]) {
        self.corrections = u32::try_from(corrections.len()).unwrap_or(u32::MAX);
    }

    fn settle(&mut self) {
        self.recompute();
    }

    fn mark(&self) -> FoldMark {
        self.folded
    }

    fn set_mark(&mut self, mark: FoldMark) {
        self.folded = mark;
    }
}

/// `at` rounded down to a whole microsecond.
fn whole_microseconds(at: DateTime<Utc>) -> DateTime<Utc> {
    let sub_micro = i64::from(at.timestamp_subsec_nanos() % 1_000);
    at - chrono::Duration::nanoseconds(sub_micro)
}
