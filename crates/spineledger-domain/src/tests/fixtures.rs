use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use crate::commands::*;
use crate::episode::Episode;
use crate::events::{EpisodeEvent, FieldCorrection};
use crate::ids::{EpisodeId, PatientId};
use crate::measures::*;
use crate::policy::Policy;
use crate::rejection::Rejection;

pub fn at(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + Duration::days(day)
}

pub fn patient() -> PatientId {
    PatientId(Uuid::from_u128(0xA))
}

pub fn episode_id() -> EpisodeId {
    EpisodeId(Uuid::from_u128(0xE))
}

pub fn newtons(value: f64) -> Force {
    Force::from_newtons(value).unwrap()
}

pub fn evaluation_with(
    screening: ContraindicationScreening,
    body_weight_kg: Option<f64>,
) -> EpisodeCommand {
    EpisodeCommand::RecordEvaluation(RecordEvaluation {
        occurred_at: at(0),
        episode_id: episode_id(),
        patient_id: patient(),
        provider_id: ShortText::new("provider-17").unwrap(),
        age_years: AgeYears::new(52).unwrap(),
        pain_back: PainNrs::new(7).unwrap(),
        pain_leg: PainNrs::new(6).unwrap(),
        odi: OswestryIndex::from_sections([
            Some(3),
            Some(2),
            Some(3),
            Some(2),
            Some(3),
            Some(2),
            Some(3),
            Some(2),
            None,
            Some(2),
        ])
        .unwrap(),
        rmdq: Some(RolandMorris::new(14).unwrap()),
        straight_leg_raise: vec![StraightLegRaise {
            side: Side::Left,
            angle_degrees: SlrAngleDegrees::new(45).unwrap(),
            positive: true,
        }],
        lumbar_flexion_cm: Some(LumbarFlexionCm::new(3.5).unwrap()),
        sleep_quality: Some(SleepQuality::new(4).unwrap()),
        posture_notes: Some(Note::new("antalgic lean to the right").unwrap()),
        overall_health: Some(OverallHealth::new(7).unwrap()),
        body_weight_kg: body_weight_kg.map(|kg| BodyWeightKg::new(kg).unwrap()),
        diagnoses: vec![
            Diagnosis::new(CodeSystem::Icd10, "M51.2").unwrap(),
            Diagnosis::new(CodeSystem::SnomedCt, "23056005").unwrap(),
        ],
        contraindications: screening,
        sciatica: Some(true),
        symptom_duration_weeks: Some(SymptomWeeks::new(10).unwrap()),
    })
}

pub fn evaluation() -> EpisodeCommand {
    evaluation_with(
        ContraindicationScreening::all(Finding::Absent)
            .with(Contraindication::AnticoagulantTherapy, Finding::Present),
        Some(80.0),
    )
}

pub fn plan(initial_sessions: u8, justification: Option<&str>) -> EpisodeCommand {
    EpisodeCommand::StartTreatmentPlan(StartTreatmentPlan {
        occurred_at: at(1),
        initial_sessions,
        initial_span_weeks: InitialSpanWeeks::new(3).unwrap(),
        target_levels: vec![SpinalLevel::L4, SpinalLevel::L5],
        starting_force: newtons(300.0),
        goals: vec![ShortText::new("walk 30 minutes without leg pain").unwrap()],
        justification: justification.map(|j| Note::new(j).unwrap()),
    })
}

pub fn session(day: i64, peak_newtons: f64, tolerance: Tolerance) -> EpisodeCommand {
    EpisodeCommand::RecordSession(RecordSession {
        occurred_at: at(day),
        mode: SessionMode::Intermittent,
        peak_force: newtons(peak_newtons),
        rest_force: newtons(peak_newtons / 2.0),
        hold_seconds: HoldSeconds::new(60).unwrap(),
        relax_seconds: RelaxSeconds::new(30).unwrap(),
        cycles: Cycles::new(15).unwrap(),
        duration_minutes: DurationMinutes::new(25).unwrap(),
        angle_degrees: TractionAngleDegrees::new(10).unwrap(),
        levels: vec![SpinalLevel::L4, SpinalLevel::L5],
        pain_before: PainNrs::new(6).unwrap(),
        pain_after: PainNrs::new(4).unwrap(),
        tolerance,
        adverse_event: None,
        provider_id: ShortText::new("provider-17").unwrap(),
    })
}

pub fn missed(day: i64) -> EpisodeCommand {
    EpisodeCommand::RecordMissedSession(RecordMissedSession {
        occurred_at: at(day),
        reason: MissedReason::Illness,
    })
}

pub fn outcome(day: i64) -> EpisodeCommand {
    EpisodeCommand::RecordOutcome(RecordOutcome {
        occurred_at: at(day),
        pain_back: PainNrs::new(3).unwrap(),
        pain_leg: PainNrs::new(2).unwrap(),
        odi: Some(OswestryIndex::from_score(24.0).unwrap()),
        rmdq: Some(RolandMorris::new(7).unwrap()),
        straight_leg_raise: vec![],
        lumbar_flexion_cm: Some(LumbarFlexionCm::new(4.5).unwrap()),
        sleep_quality: Some(SleepQuality::new(7).unwrap()),
        pgic: Some(Pgic::new(2).unwrap()),
        sciatica: Some(SciaticaSymptoms::Improved),
    })
}

pub fn home_care(day: i64) -> EpisodeCommand {
    EpisodeCommand::GiveHomeCareInstructions(GiveHomeCareInstructions {
        occurred_at: at(day),
        instructions: vec![HomeCareInstruction {
            kind: HomeCareKind::Walking,
            description: Note::new("walk 20 minutes on flat ground").unwrap(),
            times_per_week: Some(TimesPerWeek::new(5).unwrap()),
        }],
    })
}

pub fn adherence(day: i64) -> EpisodeCommand {
    EpisodeCommand::ReportHomeCareAdherence(ReportHomeCareAdherence {
        occurred_at: at(day),
        period_days: PeriodDays::new(14).unwrap(),
        adherence_percent: AdherencePercent::new(80).unwrap(),
    })
}

pub fn reassessment(day: i64) -> EpisodeCommand {
    EpisodeCommand::RecordReassessment(RecordReassessment {
        occurred_at: at(day),
        pain_back: PainNrs::new(3).unwrap(),
        pain_leg: PainNrs::new(2).unwrap(),
        odi: Some(OswestryIndex::from_score(24.0).unwrap()),
        rmdq: None,
        recommendation: Recommendation::ChangeFrequency,
        notes: None,
    })
}

pub fn adjust_to_maintenance(day: i64) -> EpisodeCommand {
    EpisodeCommand::AdjustTreatmentPlan(AdjustTreatmentPlan {
        occurred_at: at(day),
        frequency: Frequency::Maintenance,
        cadence: Cadence::IntervalDays(IntervalDays::new(14).unwrap()),
        reason: Some(Note::new("responding; space out visits").unwrap()),
    })
}

pub fn discharge(day: i64) -> EpisodeCommand {
    EpisodeCommand::DischargeEpisode(DischargeEpisode {
        occurred_at: at(day),
        reason: DischargeReason::GoalsMet,
        notes: None,
    })
}

pub fn correction(day: i64, event_id: Uuid) -> EpisodeCommand {
    EpisodeCommand::RecordCorrection(RecordCorrection {
        occurred_at: at(day),
        corrected_event_id: event_id,
        corrections: vec![FieldCorrection {
            field: ShortText::new("pain_after").unwrap(),
            corrected_value: serde_json::json!(3),
        }],
        reason: Note::new("pain after was transcribed wrongly").unwrap(),
    })
}

/// An episode that records events as decided, numbering event ids from 1.
pub struct Recorder {
    pub state: Episode,
    pub policy: Policy,
    pub log: Vec<(Uuid, EpisodeEvent)>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            state: Episode::default(),
            policy: Policy::default(),
            log: Vec::new(),
        }
    }

    /// Decides and applies; panics (in tests) on rejection. Returns the event id.
    pub fn record(&mut self, command: EpisodeCommand) -> Uuid {
        match self.try_record(command) {
            Ok(id) => id,
            Err(rejection) => panic!("unexpected rejection: {rejection}"),
        }
    }

    pub fn try_record(&mut self, command: EpisodeCommand) -> Result<Uuid, Rejection> {
        let event = crate::commands::decide(&self.state, &command, &self.policy)?;
        let id = Uuid::from_u128(self.log.len() as u128 + 1);
        self.state.apply(id, &event);
        self.log.push((id, event));
        Ok(id)
    }

    pub fn last_event(&self) -> &EpisodeEvent {
        &self.log.last().unwrap().1
    }

    /// Evaluation (80 kg, no absolute contraindication) and a plan of `n` sessions.
    pub fn with_plan(initial_sessions: u8) -> Self {
        let mut recorder = Self::new();
        recorder.record(evaluation());
        recorder.record(plan(initial_sessions, Some("protocol of the clinic")));
        recorder
    }

    pub fn rejection(&self, command: EpisodeCommand) -> Rejection {
        crate::commands::decide(&self.state, &command, &self.policy).unwrap_err()
    }
}
