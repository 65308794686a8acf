use proptest::prelude::*;
use uuid::Uuid;

use super::fixtures::*;
use super::payloads::one_of_each;
use crate::commands::{EpisodeCommand, decide};
use crate::episode::Episode;
use crate::events::EpisodeEvent;
use crate::measures::*;
use crate::policy::Policy;

/// Event ids come from a small pool so corrections in generated logs hit real events.
fn event_id() -> impl Strategy<Value = Uuid> {
    (1u128..24).prop_map(Uuid::from_u128)
}

fn tolerance() -> impl Strategy<Value = Tolerance> {
    prop_oneof![
        Just(Tolerance::Good),
        Just(Tolerance::Fair),
        Just(Tolerance::Discomfort),
        Just(Tolerance::StoppedEarly),
    ]
}

fn screening() -> impl Strategy<Value = ContraindicationScreening> {
    proptest::collection::vec(
        prop_oneof![
            Just(Finding::Present),
            Just(Finding::Absent),
            Just(Finding::Unknown)
        ],
        9,
    )
    .prop_map(|findings| {
        ContraindicationScreening::new(Contraindication::ALL.into_iter().zip(findings)).unwrap()
    })
}

/// Commands of every kind, varying what the rules look at.
fn command() -> impl Strategy<Value = EpisodeCommand> {
    let weight = proptest::option::of(20.0f64..=350.0);
    prop_oneof![
        (screening(), weight).prop_map(|(s, w)| evaluation_with(s, w)),
        (0u8..=12, any::<bool>(), 1.0f64..2000.0).prop_map(|(n, justified, force)| {
            let mut command = plan(n, justified.then_some("clinical reasons"));
            if let EpisodeCommand::StartTreatmentPlan(c) = &mut command {
                c.starting_force = newtons(force);
            }
            command
        }),
        (1.0f64..2000.0, tolerance()).prop_map(|(force, t)| session(2, force, t)),
        Just(missed(3)),
        Just(outcome(3)),
        Just(home_care(3)),
        Just(adherence(3)),
        Just(reassessment(3)),
        prop_oneof![
            Just(Frequency::Intensive),
            Just(Frequency::Tapering),
            Just(Frequency::Maintenance),
            Just(Frequency::AsNeeded)
        ]
        .prop_map(|frequency| {
            let mut command = adjust_to_maintenance(3);
            if let EpisodeCommand::AdjustTreatmentPlan(c) = &mut command {
                c.frequency = frequency;
                c.cadence = if frequency == Frequency::AsNeeded {
                    Cadence::None
                } else {
                    Cadence::SessionsPerWeek(SessionsPerWeek::new(2.0).unwrap())
                };
            }
            command
        }),
        Just(discharge(3)),
        event_id().prop_map(|id| correction(3, id)),
    ]
}

/// Events of every kind: templates from a real episode with rule-relevant fields varied.
fn event() -> impl Strategy<Value = EpisodeEvent> {
    let templates = one_of_each();
    (
        0..templates.len(),
        1.0f64..2000.0,
        tolerance(),
        0u8..=12,
        event_id(),
        screening(),
    )
        .prop_map(
            move |(index, force, tolerance, sessions, target, screening)| {
                let mut event = templates[index].clone();
                match &mut event {
                    EpisodeEvent::SessionRecorded(s) => {
                        s.peak_force = newtons(force);
                        s.tolerance = tolerance;
                    }
                    EpisodeEvent::TreatmentPlanStarted(p) => p.initial_sessions = sessions,
                    EpisodeEvent::RecordCorrected(c) => c.corrected_event_id = target,
                    EpisodeEvent::EvaluationRecorded(e) => e.contraindications = screening,
                    _ => {}
                }
                event
            },
        )
}

fn log() -> impl Strategy<Value = Vec<(Uuid, EpisodeEvent)>> {
    proptest::collection::vec((event_id(), event()), 0..40)
}

proptest! {
    #[test]
    fn folding_any_sequence_of_events_never_panics(events in log()) {
        let state = Episode::fold(events.iter().map(|(id, event)| (*id, event)));
        prop_assert_eq!(state.started, !events.is_empty());
        prop_assert!(state.phase_sessions_done <= state.sessions_done);
    }

    #[test]
    fn decide_returns_one_event_or_a_rejection_and_rejection_changes_nothing(
        events in log(),
        command in command(),
    ) {
        let state = Episode::fold(events.iter().map(|(id, event)| (*id, event)));
        let before = state.clone();
        match decide(&state, &command, &Policy::default()) {
            Ok(event) => {
                let mut after = state.clone();
                after.apply(Uuid::from_u128(1000), &event);
                prop_assert!(after.started);
                prop_assert!(after.events.contains_key(&Uuid::from_u128(1000)));
            }
            Err(rejection) => {
                prop_assert!(!rejection.reason().is_empty());
                prop_assert!(!rejection.to_string().is_empty());
            }
        }
        prop_assert_eq!(state, before);
    }

    #[test]
    fn odi_from_sections_is_within_0_to_100(
        sections in proptest::array::uniform10(proptest::option::of(0u8..=5)),
    ) {
        if let Ok(index) = OswestryIndex::from_sections(sections) {
            prop_assert!((0.0..=100.0).contains(&index.score()));
            let answered = sections.iter().flatten().count();
            prop_assert!(answered >= ODI_MIN_ANSWERED);
        } else {
            prop_assert!(sections.iter().flatten().count() < ODI_MIN_ANSWERED);
        }
    }

    #[test]
    fn force_in_any_unit_round_trips(value in 0.1f64..200.0) {
        for unit in [ForceUnit::Newtons, ForceUnit::KilogramForce, ForceUnit::PoundForce] {
            let force = Force::from_value(value, unit).unwrap();
            prop_assert!((force.in_unit(unit) - value).abs() < 1e-9);
        }
    }
}
