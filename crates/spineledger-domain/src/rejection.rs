//! Why the domain refused a command. Each rule of the episode is its own
//! variant with a stable UPPER_SNAKE reason for `google.rpc.ErrorInfo`. Messages describe
//! the rule, never the patient: they may end up in logs.

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::measures::Contraindication;

/// A command the domain refuses in the episode's current state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Only an evaluation may start an episode.
    #[error("the episode has not started: record an evaluation first")]
    EpisodeNotStarted,
    /// A later evaluation names a different patient than the episode's.
    #[error("the evaluation names a different patient than the episode's")]
    PatientMismatch,
    /// Nothing but corrections may be recorded after discharge.
    #[error("the episode is discharged: only corrections may be recorded")]
    EpisodeDischarged,
    /// The episode has no evaluation to base a plan on.
    #[error("a treatment plan needs an evaluation first")]
    EvaluationRequired,
    /// The latest evaluation has an absolute contraindication marked present.
    #[error(
        "an absolute contraindication is marked present in the latest evaluation; a new evaluation must clear it first"
    )]
    ContraindicationPresent {
        /// The absolute contraindications marked present.
        contraindications: Vec<Contraindication>,
    },
    /// The initial phase is outside 4-6 sessions and no justification was written.
    #[error(
        "an initial phase of {initial_sessions} sessions is outside 4-6 and needs a written justification"
    )]
    InitialPhaseOutOfRangeWithoutJustification {
        /// The requested number of initial sessions.
        initial_sessions: u8,
    },
    /// A plan is already active.
    #[error("a treatment plan is already active")]
    PlanAlreadyActive,
    /// No plan is active.
    #[error("no treatment plan is active: start one first")]
    PlanNotActive,
    /// The previous session was poorly tolerated and this one raises the peak force.
    #[error(
        "the previous session was poorly tolerated: peak force {requested_newtons:.1} N may not exceed its {previous_peak_newtons:.1} N"
    )]
    ForceIncreaseAfterPoorTolerance {
        /// The previous session's peak force, newtons.
        previous_peak_newtons: f64,
        /// The requested peak force, newtons.
        requested_newtons: f64,
    },
    /// The force is above the configured ceiling.
    #[error("force {requested_newtons:.1} N is above the ceiling of {ceiling_newtons:.1} N")]
    ForceAboveCeiling {
        /// The requested force, newtons.
        requested_newtons: f64,
        /// The ceiling, newtons.
        ceiling_newtons: f64,
    },
    /// The initial phase is not complete yet.
    #[error("the initial phase is incomplete: {sessions_done} of {initial_sessions} sessions done")]
    InitialPhaseIncomplete {
        /// Sessions done in the initial phase.
        sessions_done: u32,
        /// Sessions planned for the initial phase.
        initial_sessions: u8,
    },
    /// A frequency change needs a reassessment since the initial phase or last adjustment.
    #[error(
        "a reassessment is required after the initial phase or the last adjustment before changing frequency"
    )]
    ReassessmentRequired,
    /// Adherence was reported before any home-care instructions.
    #[error("no home-care instructions have been given")]
    HomeCareNotInstructed,
    /// The correction names an event that is not in this episode.
    #[error("the corrected event {event_id} is not in this episode")]
    CorrectedEventNotFound {
        /// The id named by the correction.
        event_id: Uuid,
    },
    /// The fact is dated before something it cannot precede (a session before its plan,
    /// a discharge before care already recorded). Later entries of earlier facts are
    /// accepted; only impossible orders are refused.
    #[error("occurred_at is before the {must_not_precede} it cannot precede")]
    OccurredOutOfOrder {
        /// What the fact cannot precede, e.g. `evaluation`, `treatment plan`.
        must_not_precede: &'static str,
        /// The earliest time the fact may be dated.
        earliest: DateTime<Utc>,
    },
    /// The age at evaluation does not fit the year of birth given at registration.
    #[error(
        "age_years does not match the year of birth registered for the patient (age on the evaluation date, give or take the birthday)"
    )]
    AgeInconsistentWithBirthYear,
    /// The corrected event would break an invariant between its fields (e.g. a corrected
    /// peak force below the rest force).
    #[error("the corrected event would not be valid: {problem}")]
    CorrectionInvalid {
        /// What is wrong, without values.
        problem: String,
    },
    /// A correction may not correct another correction: correct the original event.
    #[error("a correction may not correct another correction; correct the original event")]
    CorrectionOfCorrectionNotAllowed,
    /// The patient stream already holds a registration.
    #[error("the patient is already registered")]
    PatientAlreadyRegistered,
    /// The command breaks an invariant its types cannot express (e.g. an empty diagnosis
    /// list). The edge validation should have caught it: this is a client or caller bug.
    #[error("invalid command: {problem}")]
    InvalidCommand {
        /// What is wrong.
        problem: &'static str,
    },
}

impl Rejection {
    /// The machine-readable reason, UPPER_SNAKE, for `google.rpc.ErrorInfo.reason`.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::EpisodeNotStarted => "EPISODE_NOT_STARTED",
            Self::PatientMismatch => "PATIENT_MISMATCH",
            Self::EpisodeDischarged => "EPISODE_DISCHARGED",
            Self::EvaluationRequired => "EVALUATION_REQUIRED",
            Self::ContraindicationPresent { .. } => "CONTRAINDICATION_PRESENT",
            Self::InitialPhaseOutOfRangeWithoutJustification { .. } => {
                "INITIAL_PHASE_OUT_OF_RANGE_WITHOUT_JUSTIFICATION"
            }
            Self::PlanAlreadyActive => "PLAN_ALREADY_ACTIVE",
            Self::PlanNotActive => "PLAN_NOT_ACTIVE",
            Self::ForceIncreaseAfterPoorTolerance { .. } => "FORCE_INCREASE_AFTER_POOR_TOLERANCE",
            Self::ForceAboveCeiling { .. } => "FORCE_ABOVE_CEILING",
            Self::InitialPhaseIncomplete { .. } => "INITIAL_PHASE_INCOMPLETE",
            Self::ReassessmentRequired => "REASSESSMENT_REQUIRED",
            Self::HomeCareNotInstructed => "HOME_CARE_NOT_INSTRUCTED",
            Self::CorrectedEventNotFound { .. } => "CORRECTED_EVENT_NOT_FOUND",
            Self::CorrectionOfCorrectionNotAllowed => "CORRECTION_OF_CORRECTION_NOT_ALLOWED",
            Self::OccurredOutOfOrder { .. } => "OCCURRED_OUT_OF_ORDER",
            Self::AgeInconsistentWithBirthYear => "AGE_INCONSISTENT_WITH_BIRTH_YEAR",
            Self::CorrectionInvalid { .. } => "CORRECTION_INVALID",
            Self::PatientAlreadyRegistered => "PATIENT_ALREADY_REGISTERED",
            Self::InvalidCommand { .. } => "INVALID_COMMAND",
        }
    }

    /// Whether the rejection is about the command's shape (map to INVALID_ARGUMENT) rather
    /// than the episode's state (FAILED_PRECONDITION).
    #[must_use]
    pub const fn is_invalid_command(&self) -> bool {
        matches!(
            self,
            Self::InvalidCommand { .. } | Self::CorrectionInvalid { .. }
        )
    }

    /// Key/value details for `google.rpc.ErrorInfo.metadata`. No personal data.
    #[must_use]
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::ContraindicationPresent { contraindications } => vec![(
                "contraindications",
                contraindications
                    .iter()
                    .map(|item| item.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            )],
            Self::InitialPhaseOutOfRangeWithoutJustification { initial_sessions } => {
                vec![("initial_sessions", initial_sessions.to_string())]
            }
            Self::ForceIncreaseAfterPoorTolerance {
                previous_peak_newtons,
                requested_newtons,
            } => vec![
                (
                    "previous_peak_newtons",
                    format!("{previous_peak_newtons:.1}"),
                ),
                ("requested_newtons", format!("{requested_newtons:.1}")),
            ],
            Self::ForceAboveCeiling {
                requested_newtons,
                ceiling_newtons,
            } => vec![
                ("requested_newtons", format!("{requested_newtons:.1}")),
                ("ceiling_newtons", format!("{ceiling_newtons:.1}")),
            ],
            Self::InitialPhaseIncomplete {
                sessions_done,
                initial_sessions,
            } => vec![
                ("sessions_done", sessions_done.to_string()),
                ("initial_sessions", initial_sessions.to_string()),
            ],
            Self::CorrectedEventNotFound { event_id } => {
                vec![("corrected_event_id", event_id.to_string())]
            }
            Self::InvalidCommand { problem } => vec![("problem", (*problem).to_owned())],
            Self::CorrectionInvalid { problem } => vec![("problem", problem.clone())],
            Self::OccurredOutOfOrder {
                must_not_precede,
                earliest,
            } => vec![
                ("must_not_precede", (*must_not_precede).to_owned()),
                (
                    "earliest",
                    earliest.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ),
            ],
            Self::EpisodeNotStarted
            | Self::PatientMismatch
            | Self::EpisodeDischarged
            | Self::EvaluationRequired
            | Self::PlanAlreadyActive
            | Self::PlanNotActive
            | Self::ReassessmentRequired
            | Self::HomeCareNotInstructed
            | Self::CorrectionOfCorrectionNotAllowed
            | Self::AgeInconsistentWithBirthYear
            | Self::PatientAlreadyRegistered => Vec::new(),
        }
    }
}
