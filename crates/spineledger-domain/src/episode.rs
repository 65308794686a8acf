//! The state of an episode of care, folded from its events. `apply` is total: events in any
//! order, even orders `decide` would never produce, leave a well-defined state and never
//! panic, because the log is the truth and the fold must read whatever it holds.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::events::{EpisodeEvent, EvaluationRecorded, RecordCorrected, SessionRecorded};
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
}

impl Plan {
    /// Whether the initial phase's planned sessions are all done.
    #[must_use]
    pub fn initial_phase_complete(&self) -> bool {
        self.initial_sessions_done >= u32::from(self.initial_sessions)
    }
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
    /// The latest evaluation with its event id, corrections applied.
    pub latest_evaluation: Option<(Uuid, EvaluationRecorded)>,
    /// The plan, once started.
    pub plan: Option<Plan>,
    /// Sessions done in the episode.
    pub sessions_done: u32,
    /// Sessions done in the current phase.
    pub phase_sessions_done: u32,
    /// The last session with its event id, corrections applied.
    pub last_session: Option<(Uuid, SessionRecorded)>,
    /// Whether home-care instructions have been given.
    pub home_care_instructed: bool,
    /// Whether a reassessment was recorded since the initial phase completed or since the
    /// last adjustment, whichever is later.
    pub reassessed_since_last_decision: bool,
    /// Whether the episode is discharged.
    pub discharged: bool,
    /// Every event seen, by id, with its type name (corrections look events up here).
    pub events: BTreeMap<Uuid, &'static str>,
}

impl Episode {
    /// The state after `events` (id and event), in stream order.
    pub fn fold<'a>(events: impl IntoIterator<Item = (Uuid, &'a EpisodeEvent)>) -> Self {
        let mut episode = Self::default();
        for (event_id, event) in events {
            episode.apply(event_id, event);
        }
        episode
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

    /// Applies one event with its id. Total: never panics, whatever the order.
    pub fn apply(&mut self, event_id: Uuid, event: &EpisodeEvent) {
        self.started = true;
        self.events.insert(event_id, event.event_type());
        match event {
            EpisodeEvent::EvaluationRecorded(evaluation) => {
                self.episode_id.get_or_insert(evaluation.episode_id);
                self.patient_id.get_or_insert(evaluation.patient_id);
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
                });
                self.phase_sessions_done = 0;
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
                self.last_session = Some((event_id, session.clone()));
            }
            EpisodeEvent::HomeCareInstructed(_) => self.home_care_instructed = true,
            EpisodeEvent::ReassessmentRecorded(_) => {
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
                self.reassessed_since_last_decision = false;
            }
            EpisodeEvent::EpisodeDischarged(_) => {
                self.discharged = true;
                if let Some(plan) = self.plan.as_mut() {
                    plan.phase = PlanPhase::Discharged;
                }
            }
            EpisodeEvent::RecordCorrected(correction) => self.apply_correction(correction),
            EpisodeEvent::SessionMissed(_)
            | EpisodeEvent::OutcomeRecorded(_)
            | EpisodeEvent::HomeCareAdherenceReported(_) => {}
        }
    }

    /// Corrections of the latest evaluation or the last session change what the rules see
    /// (a mistaken "pregnancy: present" no longer blocks a plan; a corrected peak force is
    /// the one the next session is compared with). A correction that does not fit the
    /// corrected event's schema changes nothing.
    fn apply_correction(&mut self, correction: &RecordCorrected) {
        if let Some((event_id, evaluation)) = self.latest_evaluation.as_mut()
            && *event_id == correction.corrected_event_id
            && let Some(corrected) = corrected_copy(evaluation, correction)
        {
            *evaluation = corrected;
        }
        if let Some((event_id, session)) = self.last_session.as_mut()
            && *event_id == correction.corrected_event_id
            && let Some(corrected) = corrected_copy(session, correction)
        {
            *session = corrected;
        }
    }
}

fn corrected_copy<T>(original: &T, correction: &RecordCorrected) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut payload = serde_json::to_value(original).ok()?;
    for field in &correction.corrections {
        if !set_path(
            &mut payload,
            field.field.as_str(),
            field.corrected_value.clone(),
        ) {
            return None;
        }
    }
    serde_json::from_value(payload).ok()
}

/// Sets the value at a dotted path (`a.b`, `a.2.c` or `a[2].c`) of existing objects and
/// arrays; the last segment may name a new key of an object. False when the path does not
/// lead anywhere.
pub(crate) fn set_path(root: &mut serde_json::Value, path: &str, value: serde_json::Value) -> bool {
    let normalised = path.replace('[', ".").replace(']', "");
    let segments: Vec<&str> = normalised.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = root;
    for segment in parents {
        let next = match current {
            serde_json::Value::Object(map) => map.get_mut(*segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            }
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        current = next;
    }
    match current {
        serde_json::Value::Object(map) if !last.is_empty() => {
            map.insert((*last).to_owned(), value);
            true
        }
        serde_json::Value::Array(items) => {
            match last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(slot) => {
                    *slot = value;
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}
