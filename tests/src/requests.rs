//! Valid requests for one episode, built the way clinic software would send them; tests
//! change one field to break one rule.

use chrono::{DateTime, Utc};
use spineledger_api::v1;
use uuid::Uuid;

/// The ids of one patient's episode at one clinic, and a clock for its facts.
#[derive(Debug, Clone)]
pub struct EpisodeScript {
    pub clinic_id: Uuid,
    pub patient_id: Uuid,
    pub episode_id: Uuid,
}

impl Default for EpisodeScript {
    fn default() -> Self {
        Self::new()
    }
}

pub fn timestamp(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

pub fn newtons(value: f64) -> Option<v1::Force> {
    Some(v1::Force {
        value,
        unit: v1::ForceUnit::Newton as i32,
    })
}

impl EpisodeScript {
    pub fn new() -> Self {
        Self {
            clinic_id: Uuid::new_v4(),
            patient_id: Uuid::new_v4(),
            episode_id: Uuid::new_v4(),
        }
    }

    /// A header with a fresh command id and no expected version.
    pub fn header(&self) -> Option<v1::CommandHeader> {
        Some(v1::CommandHeader {
            clinic_id: self.clinic_id.to_string(),
            command_id: Uuid::new_v4().to_string(),
            expected_version: None,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: "provider-7".into(),
        })
    }

    pub fn register_patient(&self, at: DateTime<Utc>) -> v1::RegisterPatientRequest {
        v1::RegisterPatientRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            patient_id: self.patient_id.to_string(),
            birth_year: Some(1968),
            sex: v1::Sex::Female as i32,
        }
    }

    /// An evaluation with nothing contraindicated, body weight 80 kg.
    pub fn evaluation(&self, at: DateTime<Utc>) -> v1::RecordEvaluationRequest {
        v1::RecordEvaluationRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            patient_id: self.patient_id.to_string(),
            provider_id: "provider-7".into(),
            age_years: 57,
            pain_back: 7,
            pain_leg: 6,
            odi: Some(v1::OswestryDisabilityIndex {
                input: Some(v1::oswestry_disability_index::Input::Sections(
                    v1::OdiSections {
                        answers: vec![3, 2, 2, 3, 2, 2, 1, 2, 2, 3],
                    },
                )),
            }),
            rmdq: Some(14),
            straight_leg_raise: vec![v1::StraightLegRaise {
                side: v1::Side::Left as i32,
                angle_degrees: 45,
                positive: true,
            }],
            lumbar_flexion_cm: Some(4.5),
            sleep_quality: Some(4),
            posture_notes: None,
            overall_health: Some(6),
            body_weight_kg: Some(80.0),
            diagnoses: vec![
                v1::Diagnosis {
                    system: v1::CodeSystem::Icd10 as i32,
                    code: "M51.2".into(),
                },
                v1::Diagnosis {
                    system: v1::CodeSystem::SnomedCt as i32,
                    code: "23056005".into(),
                },
            ],
            contraindications: (1..=9)
                .map(|item| v1::ContraindicationFinding {
                    contraindication: item,
                    finding: v1::Finding::Absent as i32,
                })
                .collect(),
            sciatica: Some(true),
            symptom_duration_weeks: Some(10),
        }
    }

    /// A plan of 5 initial sessions over 3 weeks starting at 200 N.
    pub fn plan(&self, at: DateTime<Utc>) -> v1::StartTreatmentPlanRequest {
        v1::StartTreatmentPlanRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            initial_sessions: 5,
            initial_span_weeks: 3,
            target_levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
            starting_force: newtons(200.0),
            goals: vec!["walk 30 minutes without leg pain".into()],
            justification: None,
        }
    }

    /// A session at `peak` newtons with the given tolerance.
    pub fn session(
        &self,
        at: DateTime<Utc>,
        peak: f64,
        tolerance: v1::Tolerance,
    ) -> v1::RecordSessionRequest {
        v1::RecordSessionRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            mode: v1::SessionMode::Intermittent as i32,
            peak_force: newtons(peak),
            rest_force: newtons(peak / 2.0),
            hold_seconds: 60,
            relax_seconds: 30,
            cycles: 15,
            duration_minutes: 25,
            angle_degrees: 10,
            levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
            pain_before: 6,
            pain_after: 4,
            tolerance: tolerance as i32,
            adverse_event: None,
            provider_id: "provider-7".into(),
        }
    }

    pub fn outcome(&self, at: DateTime<Utc>, pain_back: i32, odi: f64) -> v1::RecordOutcomeRequest {
        v1::RecordOutcomeRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            pain_back,
            pain_leg: pain_back.saturating_sub(1).max(0),
            odi: Some(v1::OswestryDisabilityIndex {
                input: Some(v1::oswestry_disability_index::Input::Score(odi)),
            }),
            rmdq: None,
            straight_leg_raise: Vec::new(),
            lumbar_flexion_cm: None,
            sleep_quality: Some(7),
            pgic: Some(2),
            sciatica: v1::SciaticaSymptoms::Improved as i32,
        }
    }

    pub fn home_care(&self, at: DateTime<Utc>) -> v1::GiveHomeCareInstructionsRequest {
        v1::GiveHomeCareInstructionsRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            instructions: vec![v1::HomeCareInstruction {
                kind: v1::HomeCareKind::Exercise as i32,
                description: "core stabilisation, 10 minutes".into(),
                times_per_week: Some(5),
            }],
        }
    }

    pub fn adherence(&self, at: DateTime<Utc>, percent: i32) -> v1::ReportHomeCareAdherenceRequest {
        v1::ReportHomeCareAdherenceRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            period_days: 14,
            adherence_percent: percent,
        }
    }

    pub fn reassessment(&self, at: DateTime<Utc>) -> v1::RecordReassessmentRequest {
        v1::RecordReassessmentRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            pain_back: 3,
            pain_leg: 2,
            odi: Some(v1::OswestryDisabilityIndex {
                input: Some(v1::oswestry_disability_index::Input::Score(22.0)),
            }),
            rmdq: None,
            recommendation: v1::Recommendation::ChangeFrequency as i32,
            notes: None,
        }
    }

    pub fn maintenance(&self, at: DateTime<Utc>) -> v1::AdjustTreatmentPlanRequest {
        v1::AdjustTreatmentPlanRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            frequency: v1::Frequency::Maintenance as i32,
            reason: Some("responding; space the visits".into()),
            cadence: Some(v1::adjust_treatment_plan_request::Cadence::IntervalDays(21)),
        }
    }

    pub fn missed_session(&self, at: DateTime<Utc>) -> v1::RecordMissedSessionRequest {
        v1::RecordMissedSessionRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            reason: v1::MissedReason::NoShow as i32,
        }
    }

    /// A correction of `pain_back` to 5 in the event `corrected_event_id`.
    pub fn correction(
        &self,
        at: DateTime<Utc>,
        corrected_event_id: Uuid,
    ) -> v1::RecordCorrectionRequest {
        v1::RecordCorrectionRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            corrected_event_id: corrected_event_id.to_string(),
            corrections: vec![v1::FieldCorrection {
                field: "pain_back".into(),
                corrected_value: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(5.0)),
                }),
            }],
            reason: "typo".into(),
        }
    }

    pub fn discharge(
        &self,
        at: DateTime<Utc>,
        reason: v1::DischargeReason,
    ) -> v1::DischargeEpisodeRequest {
        v1::DischargeEpisodeRequest {
            header: self.header(),
            occurred_at: timestamp(at),
            episode_id: self.episode_id.to_string(),
            reason: reason as i32,
            notes: None,
        }
    }
}
