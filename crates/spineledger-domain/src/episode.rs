//! The state of an episode of care, folded from its events in clinical order (see
//! [`crate::chart`]): the rules judge a command against the episode as the chart reads it,
//! corrections applied and late entries in their place. Folding is total: events in any
//! order, even orders `decide` would never produce, leave a well-defined state and never
//! panic, because the log is the truth and the fold must read whatever it holds.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::chart::Chart;
use crate::events::{EpisodeEvent, EvaluationRecorded, SessionRecorded};
use crate::ids::{EpisodeId, PatientId};
use crate::measures::{BodyWeightKg, Contraindication, Force, Frequency, Tolerance};

/// The phase of a treatment plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPhase {
    /// The initial phase (typically 4-6 sessions).
    Initial,
    /// A personalised frequency chosen after reassessment.
    Personalised(Frequency),
    /// The episode is discharged.
    Discharged,
}

/// The treatment plan as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sessions planned for the initial phase.
    pub initial_sessions: u8,
    /// Sessions done while in the initial phase.
    pub initial_sessions_done: u32,
    /// The current phase.
    pub phase: PlanPhase,
    /// When the (latest) plan started.
    pub started_at: DateTime<Utc>,
}

impl Plan {
    /// Whether the initial phase's planned sessions are all done.
    #[must_use]
    pub fn initial_phase_complete(&self) -> bool {
        self.initial_sessions_done >= u32::from(self.initial_sessions)
    }
}

/// A session as the rules need it: which, when, how hard, how well tolerated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionMark {
    /// The session's event id.
    pub event_id: Uuid,
    /// When it took place.
    pub occurred_at: DateTime<Utc>,
    /// Its peak force.
    pub peak_force: Force,
    /// How it was tolerated.
    pub tolerance: Tolerance,
}

/// The state of one episode stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Episode {
    /// Whether any event has been recorded (an evaluation starts an episode).
    pub started: bool,
    /// The episode, from its first evaluation.
    pub episode_id: Option<EpisodeId>,
    /// The patient, from the first evaluation.
    pub patient_id: Option<PatientId>,
    /// When the first evaluation (in clinical order) took place.
    pub first_evaluation_at: Option<DateTime<Utc>>,
    /// The latest evaluation with its event id, corrections applied.
    pub latest_evaluation: Option<(Uuid, EvaluationRecorded)>,
    /// The plan, once started.
    pub plan: Option<Plan>,
    /// Sessions done in the episode.
    pub sessions_done: u32,
    /// Sessions done in the current phase.
    pub phase_sessions_done: u32,
    /// When the current phase started (plan start or the latest adjustment).
    pub phase_started_at: Option<DateTime<Utc>>,
    /// Every session in clinical order, corrections applied.
    pub sessions: Vec<SessionMark>,
    /// The clinically last session with its event id, corrections applied.
    pub last_session: Option<(Uuid, SessionRecorded)>,
    /// When home-care instructions were first given.
    pub home_care_instructed_at: Option<DateTime<Utc>>,
    /// Whether a reassessment was recorded since the initial phase completed or since the
    /// last adjustment, whichever is later.
    pub reassessed_since_last_decision: bool,
    /// When the latest reassessment took place.
    pub last_reassessment_at: Option<DateTime<Utc>>,
    /// Whether the episode is discharged.
    pub discharged: bool,
    /// The latest time any recorded fact (not a correction) took place.
    pub latest_fact_at: Option<DateTime<Utc>>,
    /// Every fact, by id, as corrected (corrections look events up here); corrections
    /// themselves are listed by id with `None`.
    pub events: BTreeMap<Uuid, Option<EpisodeEvent>>,
    /// The events in log order, as given (the chart is rebuilt from them).
    log: Vec<(Uuid, EpisodeEvent)>,
}

impl Episode {
    /// The state after `events` (id and event), in stream order.
    pub fn fold<'a>(events: impl IntoIterator<Item = (Uuid, &'a EpisodeEvent)>) -> Self {
        let mut episode = Self {
            log: events
                .into_iter()
                .map(|(id, event)| (id, event.clone()))
                .collect(),
            ..Self::default()
        };
        episode.refresh();
        episode
    }

    /// Appends one event (the next in the stream) and folds it in. Total: never panics,
    /// whatever the order. Each call folds the whole episode again: for building a state
    /// step by step in tests; fold a stream with [`Episode::fold`].
    pub fn apply(&mut self, event_id: Uuid, event: &EpisodeEvent) {
        self.log.push((event_id, event.clone()));
        self.refresh();
    }

    /// The episode as it stood at `at`: the facts that took place by then (whenever they
    /// were entered), with every correction. Rules judge a fact entered late against
    /// this, not against what happened after it. Nothing took place after `at` in the
    /// common case (a fact entered on time), and then it is this state itself, not a
    /// second fold.
    #[must_use]
    pub fn as_of(&self, at: DateTime<Utc>) -> Cow<'_, Self> {
        if self.latest_fact_at.is_none_or(|latest| latest <= at) {
            return Cow::Borrowed(self);
        }
        Cow::Owned(Self::fold(
            self.log
                .iter()
                .filter(|(_, event)| {
                    matches!(event, EpisodeEvent::RecordCorrected(_)) || event.occurred_at() <= at
                })
                .map(|(id, event)| (*id, event)),
        ))
    }

    /// Whether a plan is active: started and not discharged.
    #[must_use]
    pub const fn plan_active(&self) -> bool {
        self.plan.is_some() && !self.discharged
    }

    /// The body weight from the latest evaluation, if it recorded one.
    #[must_use]
    pub fn body_weight(&self) -> Option<BodyWeightKg> {
        self.latest_evaluation
            .as_ref()
            .and_then(|(_, evaluation)| evaluation.body_weight_kg)
    }

    /// The absolute contraindications marked present in the latest evaluation.
    #[must_use]
    pub fn absolute_contraindications_present(&self) -> Vec<Contraindication> {
        self.latest_evaluation
            .as_ref()
            .map(|(_, evaluation)| evaluation.contraindications.absolute_present().collect())
            .unwrap_or_default()
    }

    /// The last session's peak force and tolerance.
    #[must_use]
    pub fn last_session_settings(&self) -> Option<(Force, Tolerance)> {
        self.last_session
            .as_ref()
            .map(|(_, session)| (session.peak_force, session.tolerance))
    }

    /// The session that clinically precedes a session at `at` (the latest one at or
    /// before it): the one whose tolerance governs the force of a session at `at`.
    #[must_use]
    pub fn session_before(&self, at: DateTime<Utc>) -> Option<&SessionMark> {
        self.sessions.iter().rev().find(|s| s.occurred_at <= at)
    }

    /// Sessions that took place at or before `at`.
    #[must_use]
    pub fn sessions_by(&self, at: DateTime<Utc>) -> u32 {
        let count = self.sessions.iter().filter(|s| s.occurred_at <= at).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Rebuilds the derived state from the log through the chart.
    fn refresh(&mut self) {
        let log = std::mem::take(&mut self.log);
        let chart = Chart::new(
            log.iter()
                .enumerate()
                .map(|(index, (id, event))| (*id, index as u64 + 1, event.clone())),
        );
        *self = Self {
            log,
            ..Self::default()
        };
        self.started = !self.log.is_empty();
        for correction in chart.corrections() {
            self.events.insert(correction.event_id, None);
        }
        for entry in chart.entries() {
            self.events
                .insert(entry.event_id, Some(entry.event.clone()));
            self.fold_fact(entry.event_id, &entry.event);
        }
    }

    fn fold_fact(&mut self, event_id: Uuid, event: &EpisodeEvent) {
        let at = event.occurred_at();
        self.latest_fact_at = Some(self.latest_fact_at.map_or(at, |latest| latest.max(at)));
        match event {
            EpisodeEvent::EvaluationRecorded(evaluation) => {
                self.episode_id.get_or_insert(evaluation.episode_id);
                self.patient_id.get_or_insert(evaluation.patient_id);
                self.first_evaluation_at.get_or_insert(at);
                self.latest_evaluation = Some((event_id, evaluation.clone()));
            }
            EpisodeEvent::TreatmentPlanStarted(plan) => {
                self.plan = Some(Plan {
                    initial_sessions: plan.initial_sessions,
                    initial_sessions_done: 0,
                    phase: if self.discharged {
                        PlanPhase::Discharged
                    } else {
                        PlanPhase::Initial
                    },
                    started_at: at,
                });
                self.phase_sessions_done = 0;
                self.phase_started_at = Some(at);
                self.reassessed_since_last_decision = false;
            }
            EpisodeEvent::SessionRecorded(session) => {
                self.sessions_done = self.sessions_done.saturating_add(1);
                self.phase_sessions_done = self.phase_sessions_done.saturating_add(1);
                if let Some(plan) = self.plan.as_mut()
                    && plan.phase == PlanPhase::Initial
                {
                    plan.initial_sessions_done = plan.initial_sessions_done.saturating_add(1);
                    if plan.initial_sessions_done == u32::from(plan.initial_sessions) {
                        // The initial phase just completed: the reassessment that a
                        // frequency change needs must come after this point.
                        self.reassessed_since_last_decision = false;
                    }
                }
                self.sessions.push(SessionMark {
                    event_id,
                    occurred_at: at,
                    peak_force: session.peak_force,
                    tolerance: session.tolerance,
                });
                self.last_session = Some((event_id, session.clone()));
            }
            EpisodeEvent::HomeCareInstructed(_) => {
                self.home_care_instructed_at.get_or_insert(at);
            }
            EpisodeEvent::ReassessmentRecorded(_) => {
                self.last_reassessment_at = Some(at);
                if self.plan.is_some_and(|plan| plan.initial_phase_complete()) {
                    self.reassessed_since_last_decision = true;
                }
            }
            EpisodeEvent::TreatmentPlanAdjusted(adjusted) => {
                if let Some(plan) = self.plan.as_mut()
                    && plan.phase != PlanPhase::Discharged
                {
                    plan.phase = PlanPhase::Personalised(adjusted.frequency);
                }
                self.phase_sessions_done = 0;
                self.phase_started_at = Some(at);
                self.reassessed_since_last_decision = false;
            }
            EpisodeEvent::EpisodeDischarged(_) => {
                self.discharged = true;
                if let Some(plan) = self.plan.as_mut() {
                    plan.phase = PlanPhase::Discharged;
                }
            }
            EpisodeEvent::SessionMissed(_)
            | EpisodeEvent::OutcomeRecorded(_)
            | EpisodeEvent::HomeCareAdherenceReported(_)
            | EpisodeEvent::RecordCorrected(_) => {}
        }
    }
}
