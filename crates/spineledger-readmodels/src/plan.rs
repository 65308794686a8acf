//! The treatment plan of one episode as it stands, for clinicians:
//! phase, sessions, cadence and the "should be here" marker, last settings, tolerance,
//! adherence, baseline against latest scores, responder status and flags.
//!
//! The view stores facts folded from events; everything that depends on "today" is a pure
//! function of the view and a date passed in ([`TreatmentPlanView::status_at`]), so the
//! stored JSON never goes stale and a rebuild always equals the live view.
//!
//! Definitions (each is also documented where it is computed):
//! - **Cadence.** Initial phase: the planned sessions spread evenly over the span, so the
//!   interval is `span_weeks x 7 days / initial_sessions`. Personalised phase: the cadence
//!   of the latest `TreatmentPlanAdjusted` (`7 days / sessions per week`, or the interval in
//!   days). As needed, awaiting a plan, or discharged: no cadence.
//! - **Next session due.** The last session (or the plan start, when none) plus the
//!   interval of the current cadence.
//! - **Expected sessions by today** ("should be here"). Initial phase:
//!   `min(planned, floor(days since plan start / interval) + 1)`: one session is expected
//!   on the day the plan starts. Personalised phase with a cadence:
//!   `floor(days since phase start / interval)`. Otherwise none.
//! - **Pacing.** Sessions attended in the phase minus the sessions expected; negative is
//!   behind.
//! - **Reassessment due.** In the initial phase once its planned sessions are done and no
//!   reassessment followed; in a personalised phase after 6 or more sessions since the last
//!   reassessment.
//! - **Responder status.** Back pain NRS and ODI of the latest measurement against the first
//!   evaluation, by the thresholds in [`crate::responder`].
//!
//! The view is folded from the episode's chart ([`crate::fold`]): facts in the order they
//! happened, whenever they were entered, with every correction applied to the fact it
//! names. Session numbers are the order in which sessions took place. Every value shown
//! that comes from a corrected field is named in `corrected_fields` (by its name in the
//! `TreatmentPlan` message), so a clinician can see which numbers were corrected.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use spineledger_domain::events::{
    EvaluationRecorded, ReassessmentRecorded, SessionRecorded, TreatmentPlanAdjusted,
    TreatmentPlanStarted,
};
use spineledger_domain::measures::{
    Cadence, DischargeReason, Frequency, OswestryIndex, PainNrs, Recommendation, SessionMode,
    SpinalLevel, Tolerance,
};
use spineledger_domain::{ChartCorrection, ChartEntry, EpisodeEvent};
use uuid::Uuid;

use crate::fold::{EpisodeView, FoldMark};
use crate::responder::{ResponderStatus, nrs_status, odi_status};

/// How many recent session tolerances the view keeps.
pub const RECENT_TOLERANCES: usize = 5;
/// How many recent adherence reports the adherence mean covers.
pub const RECENT_ADHERENCE_REPORTS: usize = 3;
/// Sessions in a personalised phase after which a reassessment is due again.
pub const SESSIONS_BETWEEN_REASSESSMENTS: u32 = 6;
/// Grace after the next due date before a plan counts as overdue.
pub const OVERDUE_GRACE: TimeDelta = TimeDelta::days(1);
/// Pacing at or below which a plan counts as under-scheduled.
pub const UNDER_SCHEDULED_PACING: i64 = -2;

const SECONDS_PER_DAY: i64 = 86_400;
const SECONDS_PER_WEEK: f64 = 604_800.0;

/// The phase of a treatment plan, as clinicians see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanPhase {
    /// Evaluated (or not even that), no plan started yet.
    AwaitingPlan,
    /// The initial phase (typically 4-6 sessions over a few weeks).
    Initial,
    /// Personalised: frequent visits over a short period.
    Intensive,
    /// Personalised: visits spaced out progressively.
    Tapering,
    /// Personalised: occasional visits.
    Maintenance,
    /// Personalised: visits only when needed.
    AsNeeded,
    /// The episode is discharged.
    Discharged,
}

impl PlanPhase {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingPlan => "awaiting_plan",
            Self::Initial => "initial",
            Self::Intensive => "intensive",
            Self::Tapering => "tapering",
            Self::Maintenance => "maintenance",
            Self::AsNeeded => "as_needed",
            Self::Discharged => "discharged",
        }
    }

    /// The personalised phase of a frequency.
    #[must_use]
    pub const fn from_frequency(frequency: Frequency) -> Self {
        match frequency {
            Frequency::Intensive => Self::Intensive,
            Frequency::Tapering => Self::Tapering,
            Frequency::Maintenance => Self::Maintenance,
            Frequency::AsNeeded => Self::AsNeeded,
        }
    }

    /// Whether this is a personalised frequency chosen after the initial phase.
    #[must_use]
    pub const fn is_personalised(self) -> bool {
        matches!(
            self,
            Self::Intensive | Self::Tapering | Self::Maintenance | Self::AsNeeded
        )
    }
}

/// How often sessions are meant to happen in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PhaseCadence {
    /// The initial phase: `sessions` spread evenly over `span_days`.
    Spread {
        /// Sessions planned.
        sessions: u8,
        /// Days they are spread over (`span_weeks x 7`).
        span_days: u32,
    },
    /// A personalised frequency given as sessions per week.
    SessionsPerWeek {
        /// Sessions per week, more than 0 and at most 7.
        sessions_per_week: f64,
    },
    /// A personalised frequency given as days between sessions.
    IntervalDays {
        /// Days between sessions.
        days: u16,
    },
}

impl PhaseCadence {
    /// The time between two sessions, to the second: `span_days / sessions`,
    /// `7 days / sessions_per_week`, or `days`. None when the cadence has no positive
    /// interval (zero planned sessions).
    #[must_use]
    pub fn interval(self) -> Option<TimeDelta> {
        let seconds = match self {
            Self::Spread {
                sessions,
                span_days,
            } => {
                if sessions == 0 {
                    return None;
                }
                i64::from(span_days) * SECONDS_PER_DAY / i64::from(sessions)
            }
            Self::SessionsPerWeek { sessions_per_week } => {
                if !sessions_per_week.is_finite() || sessions_per_week <= 0.0 {
                    return None;
                }
                // Saturating cast: the quotient is finite and positive here.
                (SECONDS_PER_WEEK / sessions_per_week).round() as i64
            }
            Self::IntervalDays { days } => i64::from(days) * SECONDS_PER_DAY,
        };
        if seconds <= 0 {
            return None;
        }
        TimeDelta::try_seconds(seconds)
    }

    fn from_plan_cadence(cadence: Cadence) -> Option<Self> {
        match cadence {
            Cadence::SessionsPerWeek(per_week) => Some(Self::SessionsPerWeek {
                sessions_per_week: per_week.value(),
            }),
            Cadence::IntervalDays(days) => Some(Self::IntervalDays { days: days.value() }),
            Cadence::None => None,
        }
    }
}

/// The decompression settings of the last session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    /// The session's number within the episode.
    pub session_number: u32,
    /// How traction was delivered.
    pub mode: SessionMode,
    /// Peak force, newtons.
    pub peak_force_newtons: f64,
    /// Rest force, newtons.
    pub rest_force_newtons: f64,
    /// Hold time, seconds.
    pub hold_seconds: u16,
    /// Relax time, seconds.
    pub relax_seconds: u16,
    /// Hold/relax cycles.
    pub cycles: u16,
    /// Duration, minutes.
    pub duration_minutes: u8,
    /// Traction angle, degrees.
    pub angle_degrees: u8,
    /// Spinal levels treated.
    pub levels: Vec<SpinalLevel>,
}

impl SessionSettings {
    fn of(session: &SessionRecorded, session_number: u32) -> Self {
        Self {
            session_number,
            mode: session.mode,
            peak_force_newtons: session.peak_force.newtons(),
            rest_force_newtons: session.rest_force.newtons(),
            hold_seconds: session.hold_seconds.value(),
            relax_seconds: session.relax_seconds.value(),
            cycles: session.cycles.value(),
            duration_minutes: session.duration_minutes.value(),
            angle_degrees: session.angle_degrees.value(),
            levels: session.levels.clone(),
        }
    }
}

/// Back pain, leg pain and ODI of one measurement (the baseline evaluation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReading {
    /// The event that recorded it (corrections name it).
    pub event_id: Uuid,
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
    /// Back pain, NRS 0-10.
    pub pain_back: u8,
    /// Leg pain, NRS 0-10.
    pub pain_leg: u8,
    /// ODI, 0-100.
    pub odi: Option<f64>,
}

/// The latest pain scores, from the latest evaluation, outcome or reassessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NrsReading {
    /// The event that recorded it.
    pub event_id: Uuid,
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
    /// Back pain, NRS 0-10.
    pub pain_back: u8,
    /// Leg pain, NRS 0-10.
    pub pain_leg: u8,
}

/// The latest ODI, from the latest evaluation, outcome or reassessment that recorded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OdiReading {
    /// The event that recorded it.
    pub event_id: Uuid,
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
    /// ODI, 0-100.
    pub odi: f64,
}

/// Which way session tolerance is heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToleranceTrend {
    /// Recent sessions are tolerated better than the earlier ones.
    Improving,
    /// No meaningful change.
    Stable,
    /// Recent sessions are tolerated worse than the earlier ones.
    Worsening,
    /// Fewer than two sessions to compare.
    Unknown,
}

impl ToleranceTrend {
    /// The snake_case name, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Improving => "improving",
            Self::Stable => "stable",
            Self::Worsening => "worsening",
            Self::Unknown => "unknown",
        }
    }
}

/// The flags clinic software shows beside a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanFlags {
    /// Today is more than one day (the grace) past the next session due.
    pub overdue: bool,
    /// Pacing is 2 or more sessions behind what the cadence expects by today.
    pub under_scheduled: bool,
    /// A reassessment is due ([`TreatmentPlanView::reassessment_due`]).
    pub reassessment_due: bool,
    /// Any adverse event has been recorded in the episode.
    pub adverse_event: bool,
    /// Any session has been missed in the episode.
    pub missed_sessions: bool,
}

/// The plan as seen on a given day: the "should be here" marker and the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    /// The day the status is computed for.
    pub today: DateTime<Utc>,
    /// The plan phase.
    pub phase: PlanPhase,
    /// When the next session is due ([`TreatmentPlanView::next_session_due`]).
    pub next_session_due: Option<DateTime<Utc>>,
    /// Sessions the cadence expects in the phase by today; None without a cadence.
    pub expected_sessions_by_today: Option<u32>,
    /// Sessions attended in the current phase.
    pub attended: u32,
    /// Attended minus expected (negative = behind); None without a cadence.
    pub pacing: Option<i64>,
    /// The flags.
    pub flags: PlanFlags,
}

/// The current treatment plan of one episode, derived from its chart ([`crate::fold`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentPlanView {
    /// The clinic (tenant).
    pub clinic_id: Uuid,
    /// The episode.
    pub episode_id: Uuid,
    /// The patient, from the first evaluation.
    pub patient_id: Option<Uuid>,
    /// The plan phase.
    pub phase: PlanPhase,
    /// When the (latest) plan started.
    pub plan_started_at: Option<DateTime<Utc>>,
    /// Sessions planned for the initial phase.
    pub initial_sessions: Option<u8>,
    /// Weeks the initial phase is spread over.
    pub initial_span_weeks: Option<u8>,
    /// The spinal levels the plan targets.
    pub target_levels: Vec<SpinalLevel>,
    /// The starting force of the plan, newtons.
    pub starting_force_newtons: Option<f64>,
    /// Sessions done in the episode.
    pub sessions_total: u32,
    /// Sessions done in the current phase (discharge keeps the last phase's count).
    pub sessions_in_phase: u32,
    /// When the current treatment phase started (plan start or adjustment).
    pub phase_started_at: Option<DateTime<Utc>>,
    /// The cadence of the current phase; None awaiting a plan, as needed, or discharged.
    pub cadence: Option<PhaseCadence>,
    /// When the last session took place.
    pub last_session_at: Option<DateTime<Utc>>,
    /// The settings of the last session.
    pub last_settings: Option<SessionSettings>,
    /// Tolerances of the last five sessions, oldest first.
    pub recent_tolerances: Vec<Tolerance>,
    /// When home-care instructions were last given.
    pub home_care_instructed_at: Option<DateTime<Utc>>,
    /// The last reported home-care adherence, percent.
    pub adherence_last_percent: Option<u8>,
    /// The last three adherence reports, percent, oldest first.
    pub adherence_recent_percents: Vec<u8>,
    /// The mean of the last three adherence reports, percent.
    pub adherence_mean_recent: Option<f64>,
    /// Scores of the first evaluation.
    pub baseline: Option<ScoreReading>,
    /// The latest back and leg pain (evaluation, outcome or reassessment, in clinical order).
    pub latest_nrs: Option<NrsReading>,
    /// The latest ODI (evaluation, outcome or reassessment that recorded one).
    pub latest_odi: Option<OdiReading>,
    /// Back pain NRS response: latest against baseline; not assessed without a follow-up.
    pub nrs_response: ResponderStatus,
    /// ODI response: latest against baseline; not assessed without a follow-up.
    pub odi_response: ResponderStatus,
    /// Sessions missed in the episode.
    pub missed_sessions: u32,
    /// When the last missed session was due.
    pub last_missed_at: Option<DateTime<Utc>>,
    /// Sessions with an adverse event.
    pub adverse_events: u32,
    /// When the last adverse event happened.
    pub last_adverse_event_at: Option<DateTime<Utc>>,
    /// When the last reassessment took place.
    pub last_reassessment_at: Option<DateTime<Utc>>,
    /// Sessions done in the episode at the last reassessment (as the reassessment says).
    pub sessions_at_last_reassessment: Option<u32>,
    /// What the last reassessment recommended.
    pub last_recommendation: Option<Recommendation>,
    /// Sessions done since the last reassessment (or since the start, without one).
    pub sessions_since_reassessment: u32,
    /// `sessions_in_phase` when the last reassessment in the current phase took place.
    pub phase_sessions_at_reassessment: Option<u32>,
    /// Why the episode was discharged.
    pub discharge_reason: Option<DischargeReason>,
    /// When it was discharged.
    pub discharged_at: Option<DateTime<Utc>>,
    /// Corrections recorded in the episode.
    pub corrections: u32,
    /// Whether any applied correction changed a measurement (evaluation, outcome,
    /// reassessment or session).
    pub measurement_corrected: bool,
    /// For each of `recent_tolerances`, whether a correction changed it.
    #[serde(default)]
    pub recent_tolerances_corrected: Vec<bool>,
    /// The `TreatmentPlan` fields whose shown value comes from a corrected field.
    #[serde(default)]
    pub corrected_fields: BTreeSet<String>,
    /// How far the fold has got (absent in views stored by older versions).
    #[serde(default = "FoldMark::unknown")]
    pub folded: FoldMark,
}

impl TreatmentPlanView {
    /// The view of an episode before any event.
    #[must_use]
    pub const fn new(clinic_id: Uuid, episode_id: Uuid) -> Self {
        Self {
            clinic_id,
            episode_id,
            patient_id: None,
            phase: PlanPhase::AwaitingPlan,
            plan_started_at: None,
            initial_sessions: None,
            initial_span_weeks: None,
            target_levels: Vec::new(),
            starting_force_newtons: None,
            sessions_total: 0,
            sessions_in_phase: 0,
            phase_started_at: None,
            cadence: None,
            last_session_at: None,
            last_settings: None,
            recent_tolerances: Vec::new(),
            home_care_instructed_at: None,
            adherence_last_percent: None,
            adherence_recent_percents: Vec::new(),
            adherence_mean_recent: None,
            baseline: None,
            latest_nrs: None,
            latest_odi: None,
            nrs_response: ResponderStatus::NotAssessed,
            odi_response: ResponderStatus::NotAssessed,
            missed_sessions: 0,
            last_missed_at: None,
            adverse_events: 0,
            last_adverse_event_at: None,
            last_reassessment_at: None,
            sessions_at_last_reassessment: None,
            last_recommendation: None,
            sessions_since_reassessment: 0,
            phase_sessions_at_reassessment: None,
            discharge_reason: None,
            discharged_at: None,
            corrections: 0,
            measurement_corrected: false,
            recent_tolerances_corrected: Vec::new(),
            corrected_fields: BTreeSet::new(),
            folded: FoldMark {
                horizon: None,
                unapplied: 0,
            },
        }
    }

    /// Folds one fact of the chart, in clinical order. Total: never panics.
    fn fold(&mut self, entry: &ChartEntry) {
        if matches!(
            entry.event,
            EpisodeEvent::EvaluationRecorded(_)
                | EpisodeEvent::OutcomeRecorded(_)
                | EpisodeEvent::ReassessmentRecorded(_)
                | EpisodeEvent::SessionRecorded(_)
        ) && !entry.corrected_fields.is_empty()
        {
            self.measurement_corrected = true;
        }
        match &entry.event {
            EpisodeEvent::EvaluationRecorded(evaluation) => {
                self.apply_evaluation(entry, evaluation);
            }
            EpisodeEvent::TreatmentPlanStarted(plan) => self.apply_plan_started(entry, plan),
            EpisodeEvent::SessionRecorded(session) => self.apply_session(entry, session),
            EpisodeEvent::SessionMissed(missed) => {
                self.missed_sessions = self.missed_sessions.saturating_add(1);
                self.last_missed_at = Some(missed.occurred_at);
            }
            EpisodeEvent::OutcomeRecorded(outcome) => self.record_scores(
                entry,
                outcome.pain_back,
                outcome.pain_leg,
                outcome.odi.as_ref(),
            ),
            EpisodeEvent::HomeCareInstructed(instructed) => {
                self.home_care_instructed_at = Some(instructed.occurred_at);
            }
            EpisodeEvent::HomeCareAdherenceReported(report) => {
                self.record_adherence(report.adherence_percent.value());
                self.mark_corrected(
                    "last_adherence_percent",
                    entry.is_corrected("adherence_percent"),
                );
            }
            EpisodeEvent::ReassessmentRecorded(reassessment) => {
                self.apply_reassessment(entry, reassessment);
            }
            EpisodeEvent::TreatmentPlanAdjusted(adjusted) => {
                self.apply_adjustment(adjusted);
                self.mark_corrected(
                    "phase",
                    entry.is_corrected("frequency") || entry.is_corrected("cadence"),
                );
            }
            EpisodeEvent::EpisodeDischarged(discharged) => {
                self.phase = PlanPhase::Discharged;
                self.cadence = None;
                self.discharge_reason = Some(discharged.reason);
                self.discharged_at = Some(discharged.occurred_at);
                self.mark_corrected("discharge_reason", entry.is_corrected("reason"));
            }
            // Corrections are applied to the facts they name before the fold.
            EpisodeEvent::RecordCorrected(_) => {}
        }
        self.refresh_responder_status();
    }

    /// Names `field` in `corrected_fields` when its shown value came from a corrected
    /// field, and removes it when a later, uncorrected fact replaced the value.
    fn mark_corrected(&mut self, field: &str, corrected: bool) {
        if corrected {
            self.corrected_fields.insert(field.to_owned());
        } else {
            self.corrected_fields.remove(field);
        }
    }

    fn apply_evaluation(&mut self, entry: &ChartEntry, evaluation: &EvaluationRecorded) {
        self.patient_id
            .get_or_insert(evaluation.patient_id.as_uuid());
        if self.baseline.is_none() {
            self.baseline = Some(ScoreReading {
                event_id: entry.event_id,
                measured_at: evaluation.occurred_at,
                pain_back: evaluation.pain_back.value(),
                pain_leg: evaluation.pain_leg.value(),
                odi: Some(evaluation.odi.score()),
            });
            self.mark_corrected("baseline_pain_back", entry.is_corrected("pain_back"));
            self.mark_corrected("baseline_pain_leg", entry.is_corrected("pain_leg"));
            self.mark_corrected("baseline_odi", entry.is_corrected("odi"));
        }
        self.record_scores(
            entry,
            evaluation.pain_back,
            evaluation.pain_leg,
            Some(&evaluation.odi),
        );
    }

    /// A plan started after discharge is recorded but does not reopen the episode.
    fn apply_plan_started(&mut self, entry: &ChartEntry, plan: &TreatmentPlanStarted) {
        self.mark_corrected(
            "sessions_planned_in_phase",
            entry.is_corrected("initial_sessions"),
        );

        self.plan_started_at = Some(plan.occurred_at);
        self.initial_sessions = Some(plan.initial_sessions);
        self.initial_span_weeks = Some(plan.initial_span_weeks.value());
        self.target_levels.clone_from(&plan.target_levels);
        self.starting_force_newtons = Some(plan.starting_force.newtons());
        if self.phase == PlanPhase::Discharged {
            return;
        }
        self.phase = PlanPhase::Initial;
        self.enter_phase(plan.occurred_at);
        self.cadence = Some(PhaseCadence::Spread {
            sessions: plan.initial_sessions,
            span_days: u32::from(plan.initial_span_weeks.value()) * 7,
        });
    }

    /// An adjustment after discharge is ignored; an adjustment before any plan still moves
    /// the view to the frequency it names (the log is the truth).
    fn apply_adjustment(&mut self, adjusted: &TreatmentPlanAdjusted) {
        if self.phase == PlanPhase::Discharged {
            return;
        }
        self.phase = PlanPhase::from_frequency(adjusted.frequency);
        self.enter_phase(adjusted.occurred_at);
        self.cadence = match adjusted.frequency {
            Frequency::AsNeeded => None,
            _ => PhaseCadence::from_plan_cadence(adjusted.cadence),
        };
    }

    fn enter_phase(&mut self, started_at: DateTime<Utc>) {
        self.phase_started_at = Some(started_at);
        self.sessions_in_phase = 0;
        self.phase_sessions_at_reassessment = None;
    }

    fn apply_session(&mut self, entry: &ChartEntry, session: &SessionRecorded) {
        self.sessions_total = self.sessions_total.saturating_add(1);
        self.sessions_in_phase = self.sessions_in_phase.saturating_add(1);
        self.sessions_since_reassessment = self.sessions_since_reassessment.saturating_add(1);
        self.last_session_at = Some(session.occurred_at);
        self.last_settings = Some(SessionSettings::of(session, self.sessions_total));
        let settings_corrected = SessionRecorded::SETTINGS
            .iter()
            .any(|field| entry.is_corrected(field));
        self.mark_corrected("last_settings", settings_corrected);
        self.recent_tolerances_corrected
            .push(entry.is_corrected("tolerance"));
        if self.recent_tolerances_corrected.len() > RECENT_TOLERANCES {
            let excess = self.recent_tolerances_corrected.len() - RECENT_TOLERANCES;
            self.recent_tolerances_corrected.drain(..excess);
        }
        let tolerance_corrected = self.recent_tolerances_corrected.contains(&true);
        self.mark_corrected("recent_tolerances", tolerance_corrected);
        // The count covers every session: once a corrected one is in it, it stays.
        if entry.is_corrected("adverse_event") {
            self.mark_corrected("adverse_events", true);
        }
        self.recent_tolerances.push(session.tolerance);
        if self.recent_tolerances.len() > RECENT_TOLERANCES {
            let excess = self.recent_tolerances.len() - RECENT_TOLERANCES;
            self.recent_tolerances.drain(..excess);
        }
        if session.adverse_event.is_some() {
            self.adverse_events = self.adverse_events.saturating_add(1);
            self.last_adverse_event_at = Some(session.occurred_at);
        }
    }

    fn apply_reassessment(&mut self, entry: &ChartEntry, reassessment: &ReassessmentRecorded) {
        self.last_reassessment_at = Some(reassessment.occurred_at);
        // Sessions that took place before it: the chart's order, not the stored count.
        self.sessions_at_last_reassessment = Some(self.sessions_total);
        self.last_recommendation = Some(reassessment.recommendation);
        self.sessions_since_reassessment = 0;
        self.phase_sessions_at_reassessment = Some(self.sessions_in_phase);
        self.record_scores(
            entry,
            reassessment.pain_back,
            reassessment.pain_leg,
            reassessment.odi.as_ref(),
        );
    }

    fn record_scores(
        &mut self,
        entry: &ChartEntry,
        pain_back: PainNrs,
        pain_leg: PainNrs,
        odi: Option<&OswestryIndex>,
    ) {
        let (event_id, measured_at) = (entry.event_id, entry.occurred_at());
        self.mark_corrected("latest_pain_back", entry.is_corrected("pain_back"));
        self.mark_corrected("latest_pain_leg", entry.is_corrected("pain_leg"));
        if odi.is_some() {
            self.mark_corrected("latest_odi", entry.is_corrected("odi"));
        }
        self.latest_nrs = Some(NrsReading {
            event_id,
            measured_at,
            pain_back: pain_back.value(),
            pain_leg: pain_leg.value(),
        });
        if let Some(odi) = odi {
            self.latest_odi = Some(OdiReading {
                event_id,
                measured_at,
                odi: odi.score(),
            });
        }
    }

    fn record_adherence(&mut self, percent: u8) {
        self.adherence_last_percent = Some(percent);
        self.adherence_recent_percents.push(percent);
        if self.adherence_recent_percents.len() > RECENT_ADHERENCE_REPORTS {
            let excess = self.adherence_recent_percents.len() - RECENT_ADHERENCE_REPORTS;
            self.adherence_recent_percents.drain(..excess);
        }
        let sum: u32 = self
            .adherence_recent_percents
            .iter()
            .map(|p| u32::from(*p))
            .sum();
        let count = self.adherence_recent_percents.len() as f64;
        self.adherence_mean_recent = Some(f64::from(sum) / count);
    }

    /// Responder status compares the latest reading with the baseline; while the latest
    /// reading is the baseline evaluation itself there is no follow-up to assess.
    fn refresh_responder_status(&mut self) {
        let Some(baseline) = self.baseline.as_ref() else {
            self.nrs_response = ResponderStatus::NotAssessed;
            self.odi_response = ResponderStatus::NotAssessed;
            return;
        };
        let follow_up_nrs = self
            .latest_nrs
            .as_ref()
            .filter(|latest| latest.event_id != baseline.event_id)
            .map(|latest| latest.pain_back);
        let follow_up_odi = self
            .latest_odi
            .as_ref()
            .filter(|latest| latest.event_id != baseline.event_id)
            .map(|latest| latest.odi);
        self.nrs_response = nrs_status(Some(baseline.pain_back), follow_up_nrs);
        self.odi_response = odi_status(baseline.odi, follow_up_odi);
    }

    /// Whether a plan is being followed with a schedule: started, not as needed, not
    /// discharged.
    fn has_schedule(&self) -> bool {
        matches!(
            self.phase,
            PlanPhase::Initial
                | PlanPhase::Intensive
                | PlanPhase::Tapering
                | PlanPhase::Maintenance
        )
    }

    /// The trend of the recent tolerances (at most the last five sessions). Each tolerance
    /// has a discomfort score: good 0, fair 1, discomfort 2, stopped early 3. With fewer than
    /// two sessions the trend is unknown. With two, the newer session's score is compared
    /// with the older one's; with three to five, the mean score of the newest two with the
    /// mean score of the older ones in the window. At least half a point lower is improving,
    /// at least half a point higher is worsening, anything in between is stable.
    #[must_use]
    pub fn tolerance_trend(&self) -> ToleranceTrend {
        let scores: Vec<u32> = self
            .recent_tolerances
            .iter()
            .map(|tolerance| match tolerance {
                Tolerance::Good => 0,
                Tolerance::Fair => 1,
                Tolerance::Discomfort => 2,
                Tolerance::StoppedEarly => 3,
            })
            .collect();
        if scores.len() < 2 {
            return ToleranceTrend::Unknown;
        }
        let newest_count = if scores.len() == 2 { 1 } else { 2 };
        let (older, newest) = scores.split_at(scores.len() - newest_count);
        let mean = |window: &[u32]| f64::from(window.iter().sum::<u32>()) / window.len() as f64;
        let (older_mean, newest_mean) = (mean(older), mean(newest));
        let change = newest_mean - older_mean;
        if change <= -0.5 {
            ToleranceTrend::Improving
        } else if change >= 0.5 {
            ToleranceTrend::Worsening
        } else {
            ToleranceTrend::Stable
        }
    }

    /// When the next session is due: the last session (or the plan start, when none) plus
    /// the interval of the current phase's cadence. None while awaiting a plan, as needed,
    /// or discharged, and when the phase has no cadence.
    #[must_use]
    pub fn next_session_due(&self) -> Option<DateTime<Utc>> {
        if !self.has_schedule() {
            return None;
        }
        let interval = self.cadence?.interval()?;
        let from = self.last_session_at.or(self.plan_started_at)?;
        from.checked_add_signed(interval)
    }

    /// Whether a reassessment is due. In the initial phase: its planned sessions are done
    /// (`sessions_in_phase >= initial_sessions`) and no reassessment has been recorded since
    /// it completed. In a personalised phase (intensive, tapering, maintenance, as needed):
    /// six or more sessions since the last reassessment. Never while awaiting a plan or
    /// discharged.
    #[must_use]
    pub fn reassessment_due(&self) -> bool {
        match self.phase {
            PlanPhase::Initial => {
                let planned = u32::from(self.initial_sessions.unwrap_or(0));
                let complete = self.sessions_in_phase >= planned;
                let reassessed_after_completion = self
                    .phase_sessions_at_reassessment
                    .is_some_and(|at| at >= planned);
                complete && !reassessed_after_completion
            }
            phase if phase.is_personalised() => {
                self.sessions_since_reassessment >= SESSIONS_BETWEEN_REASSESSMENTS
            }
            _ => false,
        }
    }

    /// Sessions the cadence expects in the current phase by `today` (the "should be here"
    /// marker). Initial phase: `min(planned, floor(time since plan start / interval) + 1)`,
    /// so one session is expected on the day the plan starts; before the plan start none.
    /// Personalised phase with a cadence: `floor(time since phase start / interval)`.
    /// None while awaiting a plan, as needed, discharged, or without a cadence.
    #[must_use]
    pub fn expected_sessions_by(&self, today: DateTime<Utc>) -> Option<u32> {
        if !self.has_schedule() {
            return None;
        }
        let interval = self.cadence?.interval()?.num_seconds();
        if interval <= 0 {
            return None;
        }
        match self.phase {
            PlanPhase::Initial => {
                let started = self.plan_started_at?;
                let planned = u32::from(self.initial_sessions.unwrap_or(0));
                let elapsed = today.signed_duration_since(started).num_seconds();
                if elapsed < 0 {
                    return Some(0);
                }
                let intervals = u32::try_from(elapsed / interval).unwrap_or(u32::MAX);
                Some(planned.min(intervals.saturating_add(1)))
            }
            _ => {
                let started = self.phase_started_at?;
                let elapsed = today.signed_duration_since(started).num_seconds();
                if elapsed < 0 {
                    return Some(0);
                }
                Some(u32::try_from(elapsed / interval).unwrap_or(u32::MAX))
            }
        }
    }

    /// The plan as seen on `today`: next session due, expected sessions, attended sessions
    /// in the phase, pacing (attended minus expected; negative = behind) and the flags:
    /// overdue (today is more than one day past the next session due), under-scheduled
    /// (pacing of -2 or worse), reassessment due, any adverse event, any missed session.
    #[must_use]
    pub fn status_at(&self, today: DateTime<Utc>) -> PlanStatus {
        let next_session_due = self.next_session_due();
        let expected = self.expected_sessions_by(today);
        let attended = self.sessions_in_phase;
        let pacing = expected.map(|expected| i64::from(attended) - i64::from(expected));
        let overdue = next_session_due
            .and_then(|due| due.checked_add_signed(OVERDUE_GRACE))
            .is_some_and(|limit| today > limit);
        PlanStatus {
            today,
            phase: self.phase,
            next_session_due,
            expected_sessions_by_today: expected,
            attended,
            pacing,
            flags: PlanFlags {
                overdue,
                under_scheduled: pacing.is_some_and(|pacing| pacing <= UNDER_SCHEDULED_PACING),
                reassessment_due: self.reassessment_due(),
                adverse_event: self.adverse_events > 0,
                missed_sessions: self.missed_sessions > 0,
            },
        }
    }
}

impl EpisodeView for TreatmentPlanView {
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

    fn mark(&self) -> FoldMark {
        self.folded
    }

    fn set_mark(&mut self, mark: FoldMark) {
        self.folded = mark;
    }
}
