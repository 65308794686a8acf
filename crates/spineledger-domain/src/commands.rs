//! Commands ask to record a fact; [`decide`] checks the episode's rules against the current
//! state and answers with exactly one event or a [`Rejection`]. Fields the domain decides
//! (session numbers, "after session") are not in the commands. The caller assigns the
//! event id (the command id) and appends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::episode::Episode;
use crate::events::{
    EpisodeDischarged, EpisodeEvent, EvaluationRecorded, FieldCorrection,
    HomeCareAdherenceReported, HomeCareInstructed, OutcomeRecorded, ReassessmentRecorded,
    RecordCorrected, SessionMissed, SessionRecorded, TreatmentPlanAdjusted, TreatmentPlanStarted,
};
use crate::ids::{EpisodeId, PatientId};
use crate::measures::{
    AdherencePercent, AdverseEvent, AgeYears, BodyWeightKg, Cadence, ContraindicationScreening,
    Cycles, Diagnosis, DischargeReason, DurationMinutes, Force, Frequency, HoldSeconds,
    HomeCareInstruction, InitialSpanWeeks, LumbarFlexionCm, MissedReason, Note, OswestryIndex,
    OverallHealth, PainNrs, PeriodDays, Pgic, Recommendation, RelaxSeconds, RolandMorris,
    SciaticaSymptoms, SessionMode, ShortText, SleepQuality, SpinalLevel, StraightLegRaise,
    Tolerance, TractionAngleDegrees,
};
use crate::policy::Policy;
use crate::rejection::Rejection;

/// The usual span of an initial phase, in sessions; outside it a justification is needed.
pub const USUAL_INITIAL_SESSIONS: std::ops::RangeInclusive<u8> = 4..=6;

/// Record an evaluation; the first one starts the episode. Fields as in
/// [`EvaluationRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordEvaluation {
    pub occurred_at: DateTime<Utc>,
    pub episode_id: EpisodeId,
    pub patient_id: PatientId,
    pub provider_id: ShortText,
    pub age_years: AgeYears,
    pub pain_back: PainNrs,
    pub pain_leg: PainNrs,
    pub odi: OswestryIndex,
    pub rmdq: Option<RolandMorris>,
    pub straight_leg_raise: Vec<StraightLegRaise>,
    pub lumbar_flexion_cm: Option<LumbarFlexionCm>,
    pub sleep_quality: Option<SleepQuality>,
    pub posture_notes: Option<Note>,
    pub overall_health: Option<OverallHealth>,
    pub body_weight_kg: Option<BodyWeightKg>,
    pub diagnoses: Vec<Diagnosis>,
    pub contraindications: ContraindicationScreening,
}

/// Start a treatment plan. Fields as in [`TreatmentPlanStarted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct StartTreatmentPlan {
    pub occurred_at: DateTime<Utc>,
    pub initial_sessions: u8,
    pub initial_span_weeks: InitialSpanWeeks,
    pub target_levels: Vec<SpinalLevel>,
    pub starting_force: Force,
    pub goals: Vec<ShortText>,
    pub justification: Option<Note>,
}

/// Record a session; the domain numbers it. Fields as in [`SessionRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordSession {
    pub occurred_at: DateTime<Utc>,
    pub mode: SessionMode,
    pub peak_force: Force,
    pub rest_force: Force,
    pub hold_seconds: HoldSeconds,
    pub relax_seconds: RelaxSeconds,
    pub cycles: Cycles,
    pub duration_minutes: DurationMinutes,
    pub angle_degrees: TractionAngleDegrees,
    pub levels: Vec<SpinalLevel>,
    pub pain_before: PainNrs,
    pub pain_after: PainNrs,
    pub tolerance: Tolerance,
    pub adverse_event: Option<AdverseEvent>,
    pub provider_id: ShortText,
}

/// Record a missed session. Fields as in [`SessionMissed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordMissedSession {
    pub occurred_at: DateTime<Utc>,
    pub reason: MissedReason,
}

/// Record outcome measures. Fields as in [`OutcomeRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordOutcome {
    pub occurred_at: DateTime<Utc>,
    pub pain_back: PainNrs,
    pub pain_leg: PainNrs,
    pub odi: Option<OswestryIndex>,
    pub rmdq: Option<RolandMorris>,
    pub straight_leg_raise: Vec<StraightLegRaise>,
    pub lumbar_flexion_cm: Option<LumbarFlexionCm>,
    pub sleep_quality: Option<SleepQuality>,
    pub pgic: Option<Pgic>,
    pub sciatica: Option<SciaticaSymptoms>,
}

/// Give home-care instructions. Fields as in [`HomeCareInstructed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct GiveHomeCareInstructions {
    pub occurred_at: DateTime<Utc>,
    pub instructions: Vec<HomeCareInstruction>,
}

/// Report home-care adherence. Fields as in [`HomeCareAdherenceReported`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ReportHomeCareAdherence {
    pub occurred_at: DateTime<Utc>,
    pub period_days: PeriodDays,
    pub adherence_percent: AdherencePercent,
}

/// Record a reassessment. Fields as in [`ReassessmentRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordReassessment {
    pub occurred_at: DateTime<Utc>,
    pub pain_back: PainNrs,
    pub pain_leg: PainNrs,
    pub odi: Option<OswestryIndex>,
    pub rmdq: Option<RolandMorris>,
    pub recommendation: Recommendation,
    pub notes: Option<Note>,
}

/// Move the plan to a personalised frequency. Fields as in [`TreatmentPlanAdjusted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AdjustTreatmentPlan {
    pub occurred_at: DateTime<Utc>,
    pub frequency: Frequency,
    pub cadence: Cadence,
    pub reason: Option<Note>,
}

/// Discharge the episode. Fields as in [`EpisodeDischarged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DischargeEpisode {
    pub occurred_at: DateTime<Utc>,
    pub reason: DischargeReason,
    pub notes: Option<Note>,
}

/// Correct an earlier event; the domain looks up its type. Fields as in
/// [`RecordCorrected`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RecordCorrection {
    pub occurred_at: DateTime<Utc>,
    pub corrected_event_id: Uuid,
    pub corrections: Vec<FieldCorrection>,
    pub reason: Note,
}

/// A command on an episode stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum EpisodeCommand {
    /// See [`RecordEvaluation`].
    RecordEvaluation(RecordEvaluation),
    /// See [`StartTreatmentPlan`].
    StartTreatmentPlan(StartTreatmentPlan),
    /// See [`RecordSession`].
    RecordSession(RecordSession),
    /// See [`RecordMissedSession`].
    RecordMissedSession(RecordMissedSession),
    /// See [`RecordOutcome`].
    RecordOutcome(RecordOutcome),
    /// See [`GiveHomeCareInstructions`].
    GiveHomeCareInstructions(GiveHomeCareInstructions),
    /// See [`ReportHomeCareAdherence`].
    ReportHomeCareAdherence(ReportHomeCareAdherence),
    /// See [`RecordReassessment`].
    RecordReassessment(RecordReassessment),
    /// See [`AdjustTreatmentPlan`].
    AdjustTreatmentPlan(AdjustTreatmentPlan),
    /// See [`DischargeEpisode`].
    DischargeEpisode(DischargeEpisode),
    /// See [`RecordCorrection`].
    RecordCorrection(RecordCorrection),
}

impl EpisodeCommand {
    /// The command's name, e.g. `RecordSession` (for tracing).
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::RecordEvaluation(_) => "RecordEvaluation",
            Self::StartTreatmentPlan(_) => "StartTreatmentPlan",
            Self::RecordSession(_) => "RecordSession",
            Self::RecordMissedSession(_) => "RecordMissedSession",
            Self::RecordOutcome(_) => "RecordOutcome",
            Self::GiveHomeCareInstructions(_) => "GiveHomeCareInstructions",
            Self::ReportHomeCareAdherence(_) => "ReportHomeCareAdherence",
            Self::RecordReassessment(_) => "RecordReassessment",
            Self::AdjustTreatmentPlan(_) => "AdjustTreatmentPlan",
            Self::DischargeEpisode(_) => "DischargeEpisode",
            Self::RecordCorrection(_) => "RecordCorrection",
        }
    }

    /// Invariants the field types cannot express. The edge checks them too, with field
    /// paths; this keeps the domain sound for any caller.
    fn check_shape(&self) -> Result<(), Rejection> {
        let problem = match self {
            Self::RecordEvaluation(c) if c.diagnoses.is_empty() => {
                Some("an evaluation needs at least one diagnosis")
            }
            Self::StartTreatmentPlan(c) if c.initial_sessions == 0 => {
                Some("the initial phase needs at least one session")
            }
            Self::StartTreatmentPlan(c) if c.target_levels.is_empty() => {
                Some("a plan needs at least one target level")
            }
            Self::StartTreatmentPlan(c) if c.goals.iter().any(ShortText::is_blank) => {
                Some("plan goals may not be blank")
            }
            Self::RecordSession(c) if c.rest_force.newtons() > c.peak_force.newtons() => {
                Some("rest force may not exceed peak force")
            }
            Self::RecordSession(c) if c.levels.is_empty() => {
                Some("a session needs at least one treated level")
            }
            Self::GiveHomeCareInstructions(c) if c.instructions.is_empty() => {
                Some("home care needs at least one instruction")
            }
            Self::AdjustTreatmentPlan(c) if !c.cadence.fits(c.frequency) => {
                Some("as-needed has no cadence; every other frequency needs one")
            }
            Self::RecordCorrection(c) if c.corrections.is_empty() => {
                Some("a correction needs at least one corrected field")
            }
            Self::RecordCorrection(c) if c.corrections.iter().any(|f| f.field.is_blank()) => {
                Some("a corrected field needs a path")
            }
            Self::RecordCorrection(c) if c.reason.is_blank() => Some("a correction needs a reason"),
            _ => None,
        };
        match problem {
            Some(problem) => Err(Rejection::InvalidCommand { problem }),
            None => Ok(()),
        }
    }
}

/// Decides a command against the episode's state: exactly one event, or the rule it breaks.
///
/// # Errors
/// The [`Rejection`] naming the first rule the command breaks.
pub fn decide(
    state: &Episode,
    command: &EpisodeCommand,
    policy: &Policy,
) -> Result<EpisodeEvent, Rejection> {
    command.check_shape()?;
    if !state.started && !matches!(command, EpisodeCommand::RecordEvaluation(_)) {
        return Err(Rejection::EpisodeNotStarted);
    }
    if state.discharged && !matches!(command, EpisodeCommand::RecordCorrection(_)) {
        return Err(Rejection::EpisodeDischarged);
    }
    match command {
        EpisodeCommand::RecordEvaluation(c) => record_evaluation(state, c),
        EpisodeCommand::StartTreatmentPlan(c) => start_plan(state, c, policy),
        EpisodeCommand::RecordSession(c) => record_session(state, c, policy),
        EpisodeCommand::RecordMissedSession(c) => {
            require_active_plan(state)?;
            Ok(EpisodeEvent::SessionMissed(SessionMissed {
                occurred_at: c.occurred_at,
                reason: c.reason,
                sessions_done_at_miss: state.sessions_done,
            }))
        }
        EpisodeCommand::RecordOutcome(c) => Ok(EpisodeEvent::OutcomeRecorded(OutcomeRecorded {
            occurred_at: c.occurred_at,
            after_session: state.sessions_done,
            pain_back: c.pain_back,
            pain_leg: c.pain_leg,
            odi: c.odi.clone(),
            rmdq: c.rmdq,
            straight_leg_raise: c.straight_leg_raise.clone(),
            lumbar_flexion_cm: c.lumbar_flexion_cm,
            sleep_quality: c.sleep_quality,
            pgic: c.pgic,
            sciatica: c.sciatica,
        })),
        EpisodeCommand::GiveHomeCareInstructions(c) => {
            Ok(EpisodeEvent::HomeCareInstructed(HomeCareInstructed {
                occurred_at: c.occurred_at,
                instructions: c.instructions.clone(),
            }))
        }
        EpisodeCommand::ReportHomeCareAdherence(c) => {
            if !state.home_care_instructed {
                return Err(Rejection::HomeCareNotInstructed);
            }
            Ok(EpisodeEvent::HomeCareAdherenceReported(
                HomeCareAdherenceReported {
                    occurred_at: c.occurred_at,
                    period_days: c.period_days,
                    adherence_percent: c.adherence_percent,
                },
            ))
        }
        EpisodeCommand::RecordReassessment(c) => {
            require_active_plan(state)?;
            Ok(EpisodeEvent::ReassessmentRecorded(ReassessmentRecorded {
                occurred_at: c.occurred_at,
                after_session: state.sessions_done,
                pain_back: c.pain_back,
                pain_leg: c.pain_leg,
                odi: c.odi.clone(),
                rmdq: c.rmdq,
                recommendation: c.recommendation,
                notes: c.notes.clone(),
            }))
        }
        EpisodeCommand::AdjustTreatmentPlan(c) => adjust_plan(state, c),
        EpisodeCommand::DischargeEpisode(c) => {
            Ok(EpisodeEvent::EpisodeDischarged(EpisodeDischarged {
                occurred_at: c.occurred_at,
                reason: c.reason,
                notes: c.notes.clone(),
            }))
        }
        EpisodeCommand::RecordCorrection(c) => record_correction(state, c),
    }
}

fn record_evaluation(state: &Episode, c: &RecordEvaluation) -> Result<EpisodeEvent, Rejection> {
    if let Some(patient_id) = state.patient_id
        && patient_id != c.patient_id
    {
        return Err(Rejection::PatientMismatch);
    }
    Ok(EpisodeEvent::EvaluationRecorded(EvaluationRecorded {
        occurred_at: c.occurred_at,
        episode_id: c.episode_id,
        patient_id: c.patient_id,
        provider_id: c.provider_id.clone(),
        age_years: c.age_years,
        pain_back: c.pain_back,
        pain_leg: c.pain_leg,
        odi: c.odi.clone(),
        rmdq: c.rmdq,
        straight_leg_raise: c.straight_leg_raise.clone(),
        lumbar_flexion_cm: c.lumbar_flexion_cm,
        sleep_quality: c.sleep_quality,
        posture_notes: c.posture_notes.clone(),
        overall_health: c.overall_health,
        body_weight_kg: c.body_weight_kg,
        diagnoses: c.diagnoses.clone(),
        contraindications: c.contraindications.clone(),
    }))
}

fn start_plan(
    state: &Episode,
    c: &StartTreatmentPlan,
    policy: &Policy,
) -> Result<EpisodeEvent, Rejection> {
    if state.latest_evaluation.is_none() {
        return Err(Rejection::EvaluationRequired);
    }
    if state.plan_active() {
        return Err(Rejection::PlanAlreadyActive);
    }
    require_no_absolute_contraindication(state)?;
    let justified = c.justification.as_ref().is_some_and(|j| !j.is_blank());
    if !USUAL_INITIAL_SESSIONS.contains(&c.initial_sessions) && !justified {
        return Err(Rejection::InitialPhaseOutOfRangeWithoutJustification {
            initial_sessions: c.initial_sessions,
        });
    }
    require_within_ceiling(state, c.starting_force, policy)?;
    Ok(EpisodeEvent::TreatmentPlanStarted(TreatmentPlanStarted {
        occurred_at: c.occurred_at,
        initial_sessions: c.initial_sessions,
        initial_span_weeks: c.initial_span_weeks,
        target_levels: c.target_levels.clone(),
        starting_force: c.starting_force,
        goals: c.goals.clone(),
        justification: c.justification.clone(),
    }))
}

fn record_session(
    state: &Episode,
    c: &RecordSession,
    policy: &Policy,
) -> Result<EpisodeEvent, Rejection> {
    require_active_plan(state)?;
    // A contraindication found at a re-evaluation during the plan stops treatment too.
    require_no_absolute_contraindication(state)?;
    require_within_ceiling(state, c.peak_force, policy)?;
    if let Some((previous_peak, tolerance)) = state.last_session_settings()
        && tolerance.is_poor()
        && c.peak_force.newtons() > previous_peak.newtons()
    {
        return Err(Rejection::ForceIncreaseAfterPoorTolerance {
            previous_peak_newtons: previous_peak.newtons(),
            requested_newtons: c.peak_force.newtons(),
        });
    }
    Ok(EpisodeEvent::SessionRecorded(SessionRecorded {
        occurred_at: c.occurred_at,
        session_number: state.sessions_done.saturating_add(1),
        phase_session_number: state.phase_sessions_done.saturating_add(1),
        mode: c.mode,
        peak_force: c.peak_force,
        rest_force: c.rest_force,
        hold_seconds: c.hold_seconds,
        relax_seconds: c.relax_seconds,
        cycles: c.cycles,
        duration_minutes: c.duration_minutes,
        angle_degrees: c.angle_degrees,
        levels: c.levels.clone(),
        pain_before: c.pain_before,
        pain_after: c.pain_after,
        tolerance: c.tolerance,
        adverse_event: c.adverse_event.clone(),
        provider_id: c.provider_id.clone(),
    }))
}

fn adjust_plan(state: &Episode, c: &AdjustTreatmentPlan) -> Result<EpisodeEvent, Rejection> {
    let plan = require_active_plan(state)?;
    if !plan.initial_phase_complete() {
        return Err(Rejection::InitialPhaseIncomplete {
            sessions_done: plan.initial_sessions_done,
            initial_sessions: plan.initial_sessions,
        });
    }
    if !state.reassessed_since_last_decision {
        return Err(Rejection::ReassessmentRequired);
    }
    Ok(EpisodeEvent::TreatmentPlanAdjusted(TreatmentPlanAdjusted {
        occurred_at: c.occurred_at,
        frequency: c.frequency,
        cadence: c.cadence,
        reason: c.reason.clone(),
    }))
}

fn record_correction(state: &Episode, c: &RecordCorrection) -> Result<EpisodeEvent, Rejection> {
    let Some(corrected_type) = state.events.get(&c.corrected_event_id) else {
        return Err(Rejection::CorrectedEventNotFound {
            event_id: c.corrected_event_id,
        });
    };
    if *corrected_type == "RecordCorrected" {
        return Err(Rejection::CorrectionOfCorrectionNotAllowed);
    }
    Ok(EpisodeEvent::RecordCorrected(RecordCorrected {
        occurred_at: c.occurred_at,
        corrected_event_id: c.corrected_event_id,
        corrected_event_type: (*corrected_type).to_owned(),
        corrections: c.corrections.clone(),
        reason: c.reason.clone(),
    }))
}

fn require_active_plan(state: &Episode) -> Result<crate::episode::Plan, Rejection> {
    match state.plan {
        Some(plan) if state.plan_active() => Ok(plan),
        _ => Err(Rejection::PlanNotActive),
    }
}

fn require_no_absolute_contraindication(state: &Episode) -> Result<(), Rejection> {
    let present = state.absolute_contraindications_present();
    if present.is_empty() {
        Ok(())
    } else {
        Err(Rejection::ContraindicationPresent {
            contraindications: present,
        })
    }
}

fn require_within_ceiling(state: &Episode, force: Force, policy: &Policy) -> Result<(), Rejection> {
    let ceiling = policy.force_ceiling_newtons(state.body_weight());
    if force.newtons() > ceiling {
        return Err(Rejection::ForceAboveCeiling {
            requested_newtons: force.newtons(),
            ceiling_newtons: ceiling,
        });
    }
    Ok(())
}
