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
    SymptomWeeks, Tolerance, TractionAngleDegrees,
};
use crate::policy::Policy;
use crate::rejection::Rejection;

/// The usual span of an initial phase, in sessions; outside it a justification is needed.
pub const USUAL_INITIAL_SESSIONS: std::ops::RangeInclusive<u8> = 4..=6;

const NO_DIAGNOSIS: &str = "an evaluation needs at least one diagnosis";
const NO_INITIAL_SESSIONS: &str = "the initial phase needs at least one session";
const NO_TARGET_LEVEL: &str = "a plan needs at least one target level";
const BLANK_GOAL: &str = "plan goals may not be blank";
const REST_ABOVE_PEAK: &str = "rest force may not exceed peak force";
const NO_TREATED_LEVEL: &str = "a session needs at least one treated level";
const NO_INSTRUCTION: &str = "home care needs at least one instruction";
const CADENCE_MISFIT: &str = "as-needed has no cadence; every other frequency needs one";

/// Record an evaluation; the first one starts the episode. Fields as in
/// [`EvaluationRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
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
    // Left out when absent, so that a command without them serialises (and
    // fingerprints, for idempotency) exactly as before they existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sciatica: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_duration_weeks: Option<SymptomWeeks>,
}

/// Start a treatment plan. Fields as in [`TreatmentPlanStarted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
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
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
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
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct RecordMissedSession {
    pub occurred_at: DateTime<Utc>,
    pub reason: MissedReason,
}

/// Record outcome measures. Fields as in [`OutcomeRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
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
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct GiveHomeCareInstructions {
    pub occurred_at: DateTime<Utc>,
    pub instructions: Vec<HomeCareInstruction>,
}

/// Report home-care adherence. Fields as in [`HomeCareAdherenceReported`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct ReportHomeCareAdherence {
    pub occurred_at: DateTime<Utc>,
    pub period_days: PeriodDays,
    pub adherence_percent: AdherencePercent,
}

/// Record a reassessment. Fields as in [`ReassessmentRecorded`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
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
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct AdjustTreatmentPlan {
    pub occurred_at: DateTime<Utc>,
    pub frequency: Frequency,
    pub cadence: Cadence,
    pub reason: Option<Note>,
}

/// Discharge the episode. Fields as in [`EpisodeDischarged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct DischargeEpisode {
    pub occurred_at: DateTime<Utc>,
    pub reason: DischargeReason,
    pub notes: Option<Note>,
}

/// Correct an earlier event; the domain looks up its type. Fields as in
/// [`RecordCorrected`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the fields are those of the event the command records, documented there"
)]
pub struct RecordCorrection {
    pub occurred_at: DateTime<Utc>,
    pub corrected_event_id: Uuid,
    pub corrections: Vec<FieldCorrection>,
    pub reason: Note,
}

/// A command on an episode stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
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

    /// Invariants the field types cannot express, checked before any rule of the episode
    /// (the edge checks them too, with field paths); the same invariants are checked on
    /// every decided or corrected event by [`EpisodeEvent::shape_problem`].
    fn check_shape(&self) -> Result<(), Rejection> {
        let problem = match self {
            Self::RecordEvaluation(c) if c.diagnoses.is_empty() => Some(NO_DIAGNOSIS),
            Self::StartTreatmentPlan(c) if c.initial_sessions == 0 => Some(NO_INITIAL_SESSIONS),
            Self::StartTreatmentPlan(c) if c.target_levels.is_empty() => Some(NO_TARGET_LEVEL),
            Self::StartTreatmentPlan(c) if c.goals.iter().any(ShortText::is_blank) => {
                Some(BLANK_GOAL)
            }
            Self::RecordSession(c) if c.rest_force.newtons() > c.peak_force.newtons() => {
                Some(REST_ABOVE_PEAK)
            }
            Self::RecordSession(c) if c.levels.is_empty() => Some(NO_TREATED_LEVEL),
            Self::GiveHomeCareInstructions(c) if c.instructions.is_empty() => Some(NO_INSTRUCTION),
            Self::AdjustTreatmentPlan(c) if !c.cadence.fits(c.frequency) => Some(CADENCE_MISFIT),
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

    /// When the fact happened.
    #[must_use]
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::RecordEvaluation(c) => c.occurred_at,
            Self::StartTreatmentPlan(c) => c.occurred_at,
            Self::RecordSession(c) => c.occurred_at,
            Self::RecordMissedSession(c) => c.occurred_at,
            Self::RecordOutcome(c) => c.occurred_at,
            Self::GiveHomeCareInstructions(c) => c.occurred_at,
            Self::ReportHomeCareAdherence(c) => c.occurred_at,
            Self::RecordReassessment(c) => c.occurred_at,
            Self::AdjustTreatmentPlan(c) => c.occurred_at,
            Self::DischargeEpisode(c) => c.occurred_at,
            Self::RecordCorrection(c) => c.occurred_at,
        }
    }
}

impl EpisodeEvent {
    /// The first invariant between the event's fields that it breaks, if any: what the
    /// field types alone cannot express. Checked on every decided event and on every
    /// corrected one, so a correction is held to the same rules as the original.
    #[must_use]
    pub fn shape_problem(&self) -> Option<&'static str> {
        match self {
            Self::EvaluationRecorded(e) if e.diagnoses.is_empty() => Some(NO_DIAGNOSIS),
            Self::TreatmentPlanStarted(e) if e.initial_sessions == 0 => Some(NO_INITIAL_SESSIONS),
            Self::TreatmentPlanStarted(e) if e.target_levels.is_empty() => Some(NO_TARGET_LEVEL),
            Self::TreatmentPlanStarted(e) if e.goals.iter().any(ShortText::is_blank) => {
                Some(BLANK_GOAL)
            }
            Self::TreatmentPlanStarted(e)
                if !USUAL_INITIAL_SESSIONS.contains(&e.initial_sessions)
                    && e.justification.as_ref().is_none_or(Note::is_blank) =>
            {
                Some("an initial phase outside 4-6 sessions needs a written justification")
            }
            Self::SessionRecorded(e) if e.rest_force.newtons() > e.peak_force.newtons() => {
                Some(REST_ABOVE_PEAK)
            }
            Self::SessionRecorded(e) if e.levels.is_empty() => Some(NO_TREATED_LEVEL),
            Self::HomeCareInstructed(e) if e.instructions.is_empty() => Some(NO_INSTRUCTION),
            Self::TreatmentPlanAdjusted(e) if !e.cadence.fits(e.frequency) => Some(CADENCE_MISFIT),
            _ => None,
        }
    }
}

/// What the domain knows about the patient of an episode from the patient's own stream,
/// for rules that compare the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatientFacts {
    /// The year of birth given at registration, if any.
    pub birth_year: Option<i32>,
}

/// Decides a command against the episode's state: exactly one event, or the rule it breaks.
/// Same as [`decide_for_patient`] without facts about the patient.
///
/// # Errors
/// The [`Rejection`] naming the first rule the command breaks.
pub fn decide(
    state: &Episode,
    command: &EpisodeCommand,
    policy: &Policy,
) -> Result<EpisodeEvent, Rejection> {
    decide_for_patient(state, command, policy, PatientFacts::default())
}

/// Decides a command against the episode's state and what is known of its patient:
/// exactly one event, or the rule it breaks.
///
/// # Errors
/// The [`Rejection`] naming the first rule the command breaks.
pub fn decide_for_patient(
    state: &Episode,
    command: &EpisodeCommand,
    policy: &Policy,
    patient: PatientFacts,
) -> Result<EpisodeEvent, Rejection> {
    command.check_shape()?;
    if !state.started && !matches!(command, EpisodeCommand::RecordEvaluation(_)) {
        return Err(Rejection::EpisodeNotStarted);
    }
    check_time_order(state, command)?;
    // A fact is judged against the episode as it stood when it happened, so a late entry
    // meets the rules it would have met on time (a session entered after a discharge but
    // dated before it is accepted; one dated after it is not). A correction is judged
    // against the whole episode.
    let as_of;
    let state = if matches!(command, EpisodeCommand::RecordCorrection(_)) {
        state
    } else {
        as_of = state.as_of(command.occurred_at());
        &*as_of
    };
    if state.discharged && !matches!(command, EpisodeCommand::RecordCorrection(_)) {
        return Err(Rejection::EpisodeDischarged);
    }
    let event = match command {
        EpisodeCommand::RecordEvaluation(c) => record_evaluation(state, c, patient)?,
        EpisodeCommand::StartTreatmentPlan(c) => start_plan(state, c, policy)?,
        EpisodeCommand::RecordSession(c) => record_session(state, c, policy)?,
        EpisodeCommand::RecordMissedSession(c) => {
            require_active_plan(state)?;
            EpisodeEvent::SessionMissed(SessionMissed {
                occurred_at: c.occurred_at,
                reason: c.reason,
                sessions_done_at_miss: state.sessions_by(c.occurred_at),
            })
        }
        EpisodeCommand::RecordOutcome(c) => EpisodeEvent::OutcomeRecorded(OutcomeRecorded {
            occurred_at: c.occurred_at,
            after_session: state.sessions_by(c.occurred_at),
            pain_back: c.pain_back,
            pain_leg: c.pain_leg,
            odi: c.odi.clone(),
            rmdq: c.rmdq,
            straight_leg_raise: c.straight_leg_raise.clone(),
            lumbar_flexion_cm: c.lumbar_flexion_cm,
            sleep_quality: c.sleep_quality,
            pgic: c.pgic,
            sciatica: c.sciatica,
        }),
        EpisodeCommand::GiveHomeCareInstructions(c) => {
            EpisodeEvent::HomeCareInstructed(HomeCareInstructed {
                occurred_at: c.occurred_at,
                instructions: c.instructions.clone(),
            })
        }
        EpisodeCommand::ReportHomeCareAdherence(c) => {
            if state.home_care_instructed_at.is_none() {
                return Err(Rejection::HomeCareNotInstructed);
            }
            EpisodeEvent::HomeCareAdherenceReported(HomeCareAdherenceReported {
                occurred_at: c.occurred_at,
                period_days: c.period_days,
                adherence_percent: c.adherence_percent,
            })
        }
        EpisodeCommand::RecordReassessment(c) => {
            require_active_plan(state)?;
            EpisodeEvent::ReassessmentRecorded(ReassessmentRecorded {
                occurred_at: c.occurred_at,
                after_session: state.sessions_by(c.occurred_at),
                pain_back: c.pain_back,
                pain_leg: c.pain_leg,
                odi: c.odi.clone(),
                rmdq: c.rmdq,
                recommendation: c.recommendation,
                notes: c.notes.clone(),
            })
        }
        EpisodeCommand::AdjustTreatmentPlan(c) => adjust_plan(state, c)?,
        EpisodeCommand::DischargeEpisode(c) => EpisodeEvent::EpisodeDischarged(EpisodeDischarged {
            occurred_at: c.occurred_at,
            reason: c.reason,
            notes: c.notes.clone(),
        }),
        EpisodeCommand::RecordCorrection(c) => record_correction(state, c, policy, patient)?,
    };
    match event.shape_problem() {
        Some(problem) => Err(Rejection::InvalidCommand { problem }),
        None => Ok(event),
    }
}

/// The orders of care that cannot have happened. A fact entered late is accepted wherever
/// it fits (and then judged by the rules as the episode stood at its date); these are
/// refused:
///
/// - a re-evaluation, an outcome or home-care instructions dated before the episode's
///   first evaluation;
/// - a plan dated before the first evaluation or before the plan already recorded;
/// - a session, a missed session, a reassessment or a plan adjustment dated before the
///   plan started;
/// - an adherence report dated before home care was first instructed;
/// - a discharge dated before any fact already recorded (care cannot follow discharge);
/// - a correction dated before the event it corrects.
fn check_time_order(state: &Episode, command: &EpisodeCommand) -> Result<(), Rejection> {
    let at = command.occurred_at();
    let plan_start = state.plan.map(|plan| plan.started_at);
    let bound = match command {
        EpisodeCommand::RecordEvaluation(_)
        | EpisodeCommand::RecordOutcome(_)
        | EpisodeCommand::GiveHomeCareInstructions(_) => {
            state.first_evaluation_at.map(|t| ("first evaluation", t))
        }
        EpisodeCommand::StartTreatmentPlan(_) => match plan_start {
            Some(t) => Some(("treatment plan start", t)),
            None => state.first_evaluation_at.map(|t| ("first evaluation", t)),
        },
        EpisodeCommand::RecordSession(_)
        | EpisodeCommand::RecordMissedSession(_)
        | EpisodeCommand::RecordReassessment(_)
        | EpisodeCommand::AdjustTreatmentPlan(_) => plan_start.map(|t| ("treatment plan start", t)),
        EpisodeCommand::ReportHomeCareAdherence(_) => state
            .home_care_instructed_at
            .map(|t| ("first home-care instructions", t)),
        EpisodeCommand::DischargeEpisode(_) => {
            state.latest_fact_at.map(|t| ("latest recorded care", t))
        }
        EpisodeCommand::RecordCorrection(c) => state
            .events
            .get(&c.corrected_event_id)
            .and_then(Option::as_ref)
            .map(|event| ("corrected event", event.occurred_at())),
    };
    match bound {
        Some((must_not_precede, earliest)) if at < earliest => Err(Rejection::OccurredOutOfOrder {
            must_not_precede,
            earliest,
        }),
        _ => Ok(()),
    }
}

fn record_evaluation(
    state: &Episode,
    c: &RecordEvaluation,
    patient: PatientFacts,
) -> Result<EpisodeEvent, Rejection> {
    if let Some(patient_id) = state.patient_id
        && patient_id != c.patient_id
    {
        return Err(Rejection::PatientMismatch);
    }
    let evaluation = EvaluationRecorded {
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
        sciatica: c.sciatica,
        symptom_duration_weeks: c.symptom_duration_weeks,
    };
    require_age_fits_birth_year(&evaluation, patient)?;
    Ok(EpisodeEvent::EvaluationRecorded(evaluation))
}

/// The age at evaluation is the statistics' source (it survives erasure of the birth
/// year); the registered year of birth, when given, must agree with it: on the evaluation
/// date the patient is `year - birth_year` or, before the birthday, one less.
fn require_age_fits_birth_year(
    evaluation: &EvaluationRecorded,
    patient: PatientFacts,
) -> Result<(), Rejection> {
    use chrono::Datelike;
    let Some(birth_year) = patient.birth_year else {
        return Ok(());
    };
    let oldest = i64::from(evaluation.occurred_at.year()) - i64::from(birth_year);
    let age = i64::from(evaluation.age_years.value());
    if age == oldest || age == oldest - 1 {
        Ok(())
    } else {
        Err(Rejection::AgeInconsistentWithBirthYear)
    }
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

/// A session entered late is numbered where it took place; the poor-tolerance rule
/// compares it with the session that clinically preceded it. (Sessions recorded after it
/// are facts already; the rule guides the next setting, it cannot undo one.)
fn record_session(
    state: &Episode,
    c: &RecordSession,
    policy: &Policy,
) -> Result<EpisodeEvent, Rejection> {
    require_active_plan(state)?;
    // A contraindication found at a re-evaluation during the plan stops treatment too.
    require_no_absolute_contraindication(state)?;
    require_within_ceiling(state, c.peak_force, policy)?;
    if let Some(previous) = state.session_before(c.occurred_at)
        && previous.tolerance.is_poor()
        && c.peak_force.newtons() > previous.peak_force.newtons()
    {
        return Err(Rejection::ForceIncreaseAfterPoorTolerance {
            previous_peak_newtons: previous.peak_force.newtons(),
            requested_newtons: c.peak_force.newtons(),
        });
    }
    let phase_sessions_before = state.phase_started_at.map_or(0, |started| {
        state
            .sessions
            .iter()
            .filter(|s| s.occurred_at >= started && s.occurred_at <= c.occurred_at)
            .count()
    });
    Ok(EpisodeEvent::SessionRecorded(SessionRecorded {
        occurred_at: c.occurred_at,
        session_number: state.sessions_by(c.occurred_at).saturating_add(1),
        phase_session_number: u32::try_from(phase_sessions_before)
            .unwrap_or(u32::MAX)
            .saturating_add(1),
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

/// A correction is held to the rules of the event it corrects: the corrected event must be
/// a valid event (every value on its scale, the invariants between fields), a corrected
/// force stays under the ceiling, and a corrected age fits the registered birth year.
fn record_correction(
    state: &Episode,
    c: &RecordCorrection,
    policy: &Policy,
    patient: PatientFacts,
) -> Result<EpisodeEvent, Rejection> {
    let Some(target) = state.events.get(&c.corrected_event_id) else {
        return Err(Rejection::CorrectedEventNotFound {
            event_id: c.corrected_event_id,
        });
    };
    let Some(original) = target else {
        return Err(Rejection::CorrectionOfCorrectionNotAllowed);
    };
    let corrected =
        original
            .corrected(&c.corrections)
            .map_err(|misfit| Rejection::CorrectionInvalid {
                problem: misfit.to_string(),
            })?;
    // The rules of the original, where the correction touches what they judge; the
    // body weight is the one in force when the corrected fact took place.
    let then = || state.as_of(original.occurred_at());
    match (original, &corrected) {
        (EpisodeEvent::SessionRecorded(before), EpisodeEvent::SessionRecorded(after)) => {
            if after.peak_force != before.peak_force {
                require_within_ceiling(&then(), after.peak_force, policy)?;
            }
            if after.peak_force != before.peak_force || after.tolerance != before.tolerance {
                require_tolerated_neighbours(state, c.corrected_event_id, after)?;
            }
        }
        (EpisodeEvent::TreatmentPlanStarted(before), EpisodeEvent::TreatmentPlanStarted(after))
            if after.starting_force != before.starting_force =>
        {
            require_within_ceiling(&then(), after.starting_force, policy)?;
        }
        (_, EpisodeEvent::EvaluationRecorded(evaluation)) => {
            require_age_fits_birth_year(evaluation, patient)?;
        }
        _ => {}
    }
    Ok(EpisodeEvent::RecordCorrected(RecordCorrected {
        occurred_at: c.occurred_at,
        corrected_event_id: c.corrected_event_id,
        corrected_event_type: original.event_type().to_owned(),
        corrections: c.corrections.clone(),
        reason: c.reason.clone(),
    }))
}

/// A corrected session must keep the poor-tolerance rule with the sessions next to it in
/// the chart: not above a poorly tolerated session before it, and, if itself poorly
/// tolerated, not below the session after it.
fn require_tolerated_neighbours(
    state: &Episode,
    event_id: Uuid,
    corrected: &SessionRecorded,
) -> Result<(), Rejection> {
    let Some(index) = state.sessions.iter().position(|s| s.event_id == event_id) else {
        return Ok(());
    };
    let peak = corrected.peak_force.newtons();
    if let Some(previous) = index.checked_sub(1).and_then(|i| state.sessions.get(i))
        && previous.tolerance.is_poor()
        && peak > previous.peak_force.newtons()
    {
        return Err(Rejection::ForceIncreaseAfterPoorTolerance {
            previous_peak_newtons: previous.peak_force.newtons(),
            requested_newtons: peak,
        });
    }
    if let Some(next) = state.sessions.get(index + 1)
        && corrected.tolerance.is_poor()
        && next.peak_force.newtons() > peak
    {
        return Err(Rejection::ForceIncreaseAfterPoorTolerance {
            previous_peak_newtons: peak,
            requested_newtons: next.peak_force.newtons(),
        });
    }
    Ok(())
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
