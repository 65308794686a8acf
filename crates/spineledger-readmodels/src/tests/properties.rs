//! Properties the projector relies on: folds are total, views survive JSON unchanged, and
//! folding the same events again gives the same JSON.

use proptest::prelude::*;
use serde_json::json;
use spineledger_domain::EpisodeEvent;
use spineledger_domain::events::{FieldCorrection, RecordCorrected, TreatmentPlanAdjusted};
use spineledger_domain::measures::{
    Cadence, DischargeReason, Frequency, IntervalDays, Note, SessionsPerWeek, ShortText, Tolerance,
};
use uuid::Uuid;

use super::fixtures::*;
use crate::{Dimension, EpisodeOutcome, TreatmentPlanView, aggregate};

const TOLERANCES: [Tolerance; 4] = [
    Tolerance::Good,
    Tolerance::Fair,
    Tolerance::Discomfort,
    Tolerance::StoppedEarly,
];
const FREQUENCIES: [Frequency; 4] = [
    Frequency::Intensive,
    Frequency::Tapering,
    Frequency::Maintenance,
    Frequency::AsNeeded,
];
const REASONS: [DischargeReason; 6] = [
    DischargeReason::GoalsMet,
    DischargeReason::Plateau,
    DischargeReason::SelfDischarge,
    DischargeReason::Referred,
    DischargeReason::AdverseEvent,
    DischargeReason::LostToFollowUp,
];
const FIELDS: [&str; 8] = [
    "pain_back",
    "pain_leg",
    "pain_before",
    "odi",
    "odi.score",
    "pain_after",
    "age_years",
    "diagnoses.0.code",
];

fn corrected_value(pick: u8) -> serde_json::Value {
    match pick % 8 {
        0 => json!(3),
        1 => json!(11),
        2 => json!(-1),
        3 => json!(null),
        4 => json!(27.5),
        5 => json!({"score": 12.0}),
        6 => json!("seven"),
        _ => json!({"score": 150}),
    }
}

/// The parameters of one arbitrary event: kind, day, two small numbers, a count, two picks,
/// a target for corrections and an ODI score.
type EventParameters = (u8, f64, u8, u8, u32, u8, u128, f64);

fn build(parameters: EventParameters) -> EpisodeEvent {
    let (kind, day, small, other, count, pick, target, odi_score) = parameters;
    let pain = small % 11;
    match kind % 11 {
        0 => evaluation(day, pain, odi_score, other % 121),
        1 => plan(day, other % 9, 1 + pick % 12),
        2 if other % 5 == 0 => session_with_adverse_event(day, count),
        2 => session(day, count, pain, TOLERANCES[usize::from(pick % 4)]),
        3 => missed(day, count),
        4 => outcome(day, count, pain, (other % 2 == 0).then_some(odi_score)),
        5 => home_care(day),
        6 => adherence(day, other % 101),
        7 => reassessment(day, count, pain, (other % 3 != 0).then_some(odi_score)),
        8 => {
            let frequency = FREQUENCIES[usize::from(pick % 4)];
            // Includes cadences that do not fit the frequency: the log may hold anything.
            let cadence = match other % 3 {
                0 => Cadence::None,
                1 => Cadence::SessionsPerWeek(
                    SessionsPerWeek::new(f64::from(1 + pick % 7) / 2.0).unwrap(),
                ),
                _ => Cadence::IntervalDays(IntervalDays::new(1 + u16::from(small)).unwrap()),
            };
            EpisodeEvent::TreatmentPlanAdjusted(TreatmentPlanAdjusted {
                occurred_at: at(day),
                frequency,
                cadence,
                reason: None,
            })
        }
        9 => discharge(day, REASONS[usize::from(pick % 6)]),
        _ => EpisodeEvent::RecordCorrected(RecordCorrected {
            occurred_at: at(day),
            corrected_event_id: Uuid::from_u128(1 + target),
            corrected_event_type: "SessionRecorded".to_owned(),
            corrections: vec![FieldCorrection {
                field: ShortText::new(FIELDS[usize::from(pick % 8)]).unwrap(),
                corrected_value: corrected_value(other),
            }],
            reason: Note::new("wrong").unwrap(),
        }),
    }
}

fn events() -> impl Strategy<Value = Vec<(Uuid, EpisodeEvent)>> {
    let event = (
        any::<u8>(),
        0.0f64..200.0,
        any::<u8>(),
        any::<u8>(),
        0u32..16,
        any::<u8>(),
        0u128..40,
        0.0f64..=100.0,
    )
        .prop_map(build);
    prop::collection::vec(event, 0..40).prop_map(|events| {
        (1u128..)
            .zip(events)
            .map(|(n, event)| (Uuid::from_u128(n), event))
            .collect()
    })
}

fn fold(events: &[(Uuid, EpisodeEvent)]) -> (TreatmentPlanView, EpisodeOutcome) {
    let log = || events.iter().map(|(id, event)| (*id, event));
    (
        crate::derive_from_log(clinic(), episode(), log()),
        crate::derive_from_log(clinic(), episode(), log()),
    )
}

/// What the projector does with the next event: extend the stored view when that is exact,
/// else derive it again from every event so far (`events[..=index]`).
fn extend_or_derive<V: crate::EpisodeView>(
    view: &mut V,
    events: &[(Uuid, EpisodeEvent)],
    index: usize,
) {
    let (id, event) = &events[index];
    let version = index as u64 + 1;
    if !crate::extend(view, *id, version, event) {
        *view = crate::derive_from_log(
            clinic(),
            episode(),
            events[..=index].iter().map(|(id, event)| (*id, event)),
        );
    }
}

proptest! {
    #[test]
    fn folding_any_events_never_panics_and_survives_json(
        events in events(),
        today in -10.0f64..400.0,
        min_cell in 0usize..4,
    ) {
        let (plan, outcome) = fold(&events);

        let plan_json = serde_json::to_string(&plan).unwrap();
        prop_assert_eq!(&serde_json::from_str::<TreatmentPlanView>(&plan_json).unwrap(), &plan);
        let outcome_json = serde_json::to_string(&outcome).unwrap();
        prop_assert_eq!(&serde_json::from_str::<EpisodeOutcome>(&outcome_json).unwrap(), &outcome);
        // As JSONB stores it: through a JSON value.
        let plan_value = serde_json::to_value(&plan).unwrap();
        prop_assert_eq!(&serde_json::from_value::<TreatmentPlanView>(plan_value).unwrap(), &plan);

        // The derived answers are total too.
        let status = plan.status_at(at(today));
        prop_assert_eq!(status.next_session_due, plan.next_session_due());
        prop_assert_eq!(status.flags.reassessment_due, plan.reassessment_due());
        let _ = plan.tolerance_trend();
        let min_cell = crate::MinCell::new(min_cell).unwrap_or(crate::MinCell::SMALLEST);
        // As many copies as the cell needs, so the statistics are computed, not suppressed.
        let copies = vec![outcome; min_cell.get()];
        let groups = aggregate(&copies, &Dimension::ALL, min_cell);
        prop_assert!(!groups[0].is_suppressed());
        prop_assert_eq!(groups.len(), 1);
    }

    #[test]
    fn folding_the_same_events_twice_gives_identical_json(events in events()) {
        let (plan, outcome) = fold(&events);
        let (plan_again, outcome_again) = fold(&events);
        prop_assert_eq!(
            serde_json::to_string(&plan).unwrap(),
            serde_json::to_string(&plan_again).unwrap()
        );
        prop_assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            serde_json::to_string(&outcome_again).unwrap()
        );
    }

    #[test]
    fn a_view_resumed_from_json_folds_on_like_the_live_one(
        events in events(),
        split in 0usize..40,
    ) {
        // The projector stores the view, reads it back and applies the next events to it;
        // a rebuild applies them all at once. Both must end in the same JSON.
        let split = split.min(events.len());
        let (head, tail) = events.split_at(split);
        let (plan, outcome) = fold(head);
        let mut plan: TreatmentPlanView =
            serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        let mut outcome: EpisodeOutcome =
            serde_json::from_value(serde_json::to_value(&outcome).unwrap()).unwrap();
        for index in head.len()..head.len() + tail.len() {
            extend_or_derive(&mut plan, &events, index);
            extend_or_derive(&mut outcome, &events, index);
        }
        let (plan_rebuilt, outcome_rebuilt) = fold(&events);
        prop_assert_eq!(
            serde_json::to_string(&plan).unwrap(),
            serde_json::to_string(&plan_rebuilt).unwrap()
        );
        prop_assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            serde_json::to_string(&outcome_rebuilt).unwrap()
        );
    }

    #[test]
    fn views_depend_on_the_set_of_events_not_the_order_they_are_read(
        events in events(),
        seed in any::<u64>(),
    ) {
        // The projector may meet a stream's events out of version order; the chart sorts
        // them, so any reading order gives the same views.
        let versioned: Vec<(Uuid, u64, EpisodeEvent)> = events
            .iter()
            .zip(1u64..)
            .map(|((id, event), version)| (*id, version, event.clone()))
            .collect();
        let mut shuffled = versioned.clone();
        let len = shuffled.len();
        for i in 0..len {
            let j = (seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64) % len as u64) as usize;
            shuffled.swap(i, j);
        }
        let in_order: TreatmentPlanView =
            crate::derive(clinic(), episode(), &spineledger_domain::Chart::new(versioned.clone()));
        let reordered: TreatmentPlanView =
            crate::derive(clinic(), episode(), &spineledger_domain::Chart::new(shuffled.clone()));
        prop_assert_eq!(in_order, reordered);
        let in_order: EpisodeOutcome =
            crate::derive(clinic(), episode(), &spineledger_domain::Chart::new(versioned));
        let reordered: EpisodeOutcome =
            crate::derive(clinic(), episode(), &spineledger_domain::Chart::new(shuffled));
        prop_assert_eq!(in_order, reordered);
    }
}
