//! Builders of valid episode events, so each test states only what it is about.

use chrono::{DateTime, Duration, TimeZone, Utc};
use spineledger_domain::EpisodeEvent;
use spineledger_domain::events::{
    EpisodeDischarged, EvaluationRecorded, FieldCorrection, HomeCareAdherenceReported,
    HomeCareInstructed, OutcomeRecorded, ReassessmentRecorded, RecordCorrected, SessionMissed,
    SessionRecorded, TreatmentPlanAdjusted, TreatmentPlanStarted,
};
use spineledger_domain::ids::{EpisodeId, PatientId};
use spineledger_domain::measures::*;
use uuid::Uuid;

use crate::{EpisodeOutcome, TreatmentPlanView};

pub fn at(day: f64) -> DateTime<Utc> {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    start + Duration::seconds((day * 86_400.0).round() as i64)
}

pub fn clinic() -> Uuid {
    Uuid::from_u128(0xC)
}

pub fn episode() -> Uuid {
    Uuid::from_u128(0xE)
}

pub fn pain(value: u8) -> PainNrs {
    PainNrs::new(value).unwrap()
}

pub fn odi(score: f64) -> OswestryIndex {
    OswestryIndex::from_score(score).unwrap()
}

pub fn newtons(value: f64) -> Force {
    Force::from_newtons(value).unwrap()
}

pub fn evaluation(day: f64, pain_back: u8, odi_score: f64, age: u8) -> EpisodeEvent {
    EpisodeEvent::EvaluationRecorded(EvaluationRecorded {
        occurred_at: at(day),
        episode_id: EpisodeId(episode()),
        patient_id: PatientId(Uuid::from_u128(0xA)),
        provider_id: ShortText::new("provider-17").unwrap(),
        age_years: AgeYears::new(age).unwrap(),
        pain_back: pain(pain_back),
        pain_leg: pain(6),
        odi: odi(odi_score),
        rmdq: Some(RolandMorris::new(14).unwrap()),
        straight_leg_raise: vec![],
        lumbar_flexion_cm: None,
        sleep_quality: None,
        posture_notes: None,
        overall_health: None,
        body_weight_kg: Some(BodyWeightKg::new(80.0).unwrap()),
        diagnoses: vec![
            Diagnosis::new(CodeSystem::Icd10, "M51.2").unwrap(),
            Diagnosis::new(CodeSystem::SnomedCt, "23056005").unwrap(),
        ],
        contraindications: ContraindicationScreening::all(Finding::Absent),
        sciatica: None,
        symptom_duration_weeks: None,
    })
}

pub fn evaluation_with_diagnosis(day: f64, diagnosis: Diagnosis) -> EpisodeEvent {
    let EpisodeEvent::EvaluationRecorded(mut recorded) = evaluation(day, 7, 40.0, 52) else {
        unreachable!("evaluation builds an evaluation");
    };
    recorded.diagnoses = vec![diagnosis];
    EpisodeEvent::EvaluationRecorded(recorded)
}

pub fn plan(day: f64, initial_sessions: u8, span_weeks: u8) -> EpisodeEvent {
    EpisodeEvent::TreatmentPlanStarted(TreatmentPlanStarted {
        occurred_at: at(day),
        initial_sessions,
        initial_span_weeks: InitialSpanWeeks::new(span_weeks).unwrap(),
        target_levels: vec![SpinalLevel::L4, SpinalLevel::L5],
        starting_force: newtons(300.0),
        goals: vec![ShortText::new("walk 30 minutes without leg pain").unwrap()],
        justification: None,
    })
}

pub fn session(day: f64, number: u32, pain_before: u8, tolerance: Tolerance) -> EpisodeEvent {
    EpisodeEvent::SessionRecorded(SessionRecorded {
        occurred_at: at(day),
        session_number: number,
        phase_session_number: number,
        mode: SessionMode::Intermittent,
        peak_force: newtons(320.0),
        rest_force: newtons(160.0),
        hold_seconds: HoldSeconds::new(60).unwrap(),
        relax_seconds: RelaxSeconds::new(30).unwrap(),
        cycles: Cycles::new(15).unwrap(),
        duration_minutes: DurationMinutes::new(25).unwrap(),
        angle_degrees: TractionAngleDegrees::new(10).unwrap(),
        levels: vec![SpinalLevel::L4, SpinalLevel::L5],
        pain_before: pain(pain_before),
        pain_after: pain(pain_before.saturating_sub(1)),
        tolerance,
        adverse_event: None,
        provider_id: ShortText::new("provider-17").unwrap(),
    })
}

pub fn session_with_adverse_event(day: f64, number: u32) -> EpisodeEvent {
    let EpisodeEvent::SessionRecorded(mut recorded) =
        session(day, number, 6, Tolerance::StoppedEarly)
    else {
        unreachable!("session builds a session");
    };
    recorded.adverse_event = Some(AdverseEvent {
        severity: Severity::Mild,
        description: Note::new("transient muscle spasm").unwrap(),
    });
    EpisodeEvent::SessionRecorded(recorded)
}

pub fn missed(day: f64, sessions_done: u32) -> EpisodeEvent {
    EpisodeEvent::SessionMissed(SessionMissed {
        occurred_at: at(day),
        reason: MissedReason::Illness,
        sessions_done_at_miss: sessions_done,
    })
}

pub fn outcome(
    day: f64,
    after_session: u32,
    pain_back: u8,
    odi_score: Option<f64>,
) -> EpisodeEvent {
    EpisodeEvent::OutcomeRecorded(OutcomeRecorded {
        occurred_at: at(day),
        after_session,
        pain_back: pain(pain_back),
        pain_leg: pain(2),
        odi: odi_score.map(odi),
        rmdq: None,
        straight_leg_raise: vec![],
        lumbar_flexion_cm: None,
        sleep_quality: None,
        pgic: Some(Pgic::new(2).unwrap()),
        sciatica: Some(SciaticaSymptoms::Improved),
    })
}

pub fn reassessment(
    day: f64,
    after_session: u32,
    pain_back: u8,
    odi_score: Option<f64>,
) -> EpisodeEvent {
    EpisodeEvent::ReassessmentRecorded(ReassessmentRecorded {
        occurred_at: at(day),
        after_session,
        pain_back: pain(pain_back),
        pain_leg: pain(2),
        odi: odi_score.map(odi),
        rmdq: None,
        recommendation: Recommendation::ChangeFrequency,
        notes: None,
    })
}

pub fn home_care(day: f64) -> EpisodeEvent {
    EpisodeEvent::HomeCareInstructed(HomeCareInstructed {
        occurred_at: at(day),
        instructions: vec![HomeCareInstruction {
            kind: HomeCareKind::Walking,
            description: Note::new("walk 20 minutes on flat ground").unwrap(),
            times_per_week: Some(TimesPerWeek::new(5).unwrap()),
        }],
    })
}

pub fn adherence(day: f64, percent: u8) -> EpisodeEvent {
    EpisodeEvent::HomeCareAdherenceReported(HomeCareAdherenceReported {
        occurred_at: at(day),
        period_days: PeriodDays::new(14).unwrap(),
        adherence_percent: AdherencePercent::new(percent).unwrap(),
    })
}

pub fn adjust_interval(day: f64, frequency: Frequency, days: u16) -> EpisodeEvent {
    EpisodeEvent::TreatmentPlanAdjusted(TreatmentPlanAdjusted {
        occurred_at: at(day),
        frequency,
        cadence: Cadence::IntervalDays(IntervalDays::new(days).unwrap()),
        reason: None,
    })
}

pub fn adjust_per_week(day: f64, frequency: Frequency, per_week: f64) -> EpisodeEvent {
    EpisodeEvent::TreatmentPlanAdjusted(TreatmentPlanAdjusted {
        occurred_at: at(day),
        frequency,
        cadence: Cadence::SessionsPerWeek(SessionsPerWeek::new(per_week).unwrap()),
        reason: None,
    })
}

pub fn discharge(day: f64, reason: DischargeReason) -> EpisodeEvent {
    EpisodeEvent::EpisodeDischarged(EpisodeDischarged {
        occurred_at: at(day),
        reason,
        notes: None,
    })
}

pub fn correction(
    day: f64,
    corrected: Uuid,
    corrected_type: &str,
    field: &str,
    value: serde_json::Value,
) -> EpisodeEvent {
    EpisodeEvent::RecordCorrected(RecordCorrected {
        occurred_at: at(day),
        corrected_event_id: corrected,
        corrected_event_type: corrected_type.to_owned(),
        corrections: vec![FieldCorrection {
            field: ShortText::new(field).unwrap(),
            corrected_value: value,
        }],
        reason: Note::new("transcribed wrongly").unwrap(),
    })
}

/// An episode log numbering event ids from 1.
#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<(Uuid, EpisodeEvent)>,
}

impl Log {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the event and returns its id.
    pub fn push(&mut self, event: EpisodeEvent) -> Uuid {
        let id = Uuid::from_u128(self.events.len() as u128 + 1);
        self.events.push((id, event));
        id
    }

    pub fn plan_view(&self) -> TreatmentPlanView {
        crate::derive_from_log(
            clinic(),
            episode(),
            self.events.iter().map(|(id, e)| (*id, e)),
        )
    }

    pub fn outcome(&self) -> EpisodeOutcome {
        crate::derive_from_log(
            clinic(),
            episode(),
            self.events.iter().map(|(id, e)| (*id, e)),
        )
    }
}

/// The episode the plan and outcome specifications share: evaluated (back 7, ODI 40, age
/// 52, M51.2), a plan of 4 sessions over 2 weeks (one every 3.5 days) from day 1, four
/// sessions, a reassessment after session 4, maintenance every 14 days from day 12, a
/// fifth session on day 26.
pub fn treated_episode() -> Log {
    let mut log = Log::new();
    log.push(evaluation(0.0, 7, 40.0, 52));
    log.push(plan(1.0, 4, 2));
    log.push(session(1.0, 1, 7, Tolerance::Discomfort));
    log.push(session(4.5, 2, 6, Tolerance::Fair));
    log.push(home_care(4.5));
    log.push(session(8.0, 3, 5, Tolerance::Good));
    log.push(adherence(8.0, 90));
    log.push(session(11.0, 4, 4, Tolerance::Good));
    log
}
