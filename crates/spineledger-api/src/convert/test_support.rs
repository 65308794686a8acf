//! Requests and clocks the conversion tests share.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use prost_types::Timestamp;
use uuid::Uuid;

use crate::error::FieldViolations;
use crate::v1;

pub(crate) const CLINIC: &str = "6f1c2b9e-8a41-4c52-9b0e-1d2f3a4b5c6d";
pub(crate) const EPISODE: &str = "0b7e3c1a-2d4f-4e6a-8b9c-0d1e2f3a4b5c";
pub(crate) const PATIENT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

pub(crate) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 4, 12, 0, 0).unwrap()
}

pub(crate) fn ts(time: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: time.timestamp(),
        nanos: 0,
    })
}

pub(crate) fn past() -> Option<Timestamp> {
    ts(now() - TimeDelta::hours(2))
}

pub(crate) fn header() -> Option<v1::CommandHeader> {
    Some(v1::CommandHeader {
        clinic_id: CLINIC.to_owned(),
        command_id: Uuid::new_v4().to_string(),
        expected_version: Some(3),
        correlation_id: String::new(),
        causation_id: Uuid::new_v4().to_string(),
        actor: "provider-17".to_owned(),
    })
}

pub(crate) fn newtons(value: f64) -> Option<v1::Force> {
    Some(v1::Force {
        value,
        unit: v1::ForceUnit::Newton as i32,
    })
}

pub(crate) fn evaluation() -> v1::RecordEvaluationRequest {
    v1::RecordEvaluationRequest {
        header: header(),
        occurred_at: past(),
        episode_id: EPISODE.to_owned(),
        patient_id: PATIENT.to_owned(),
        provider_id: "provider-17".to_owned(),
        age_years: 52,
        pain_back: 7,
        pain_leg: 5,
        odi: Some(v1::OswestryDisabilityIndex {
            input: Some(v1::oswestry_disability_index::Input::Sections(
                v1::OdiSections {
                    answers: vec![3, 2, 3, 2, -1, 2, 3, 2, 3, 2],
                },
            )),
        }),
        rmdq: Some(12),
        straight_leg_raise: vec![v1::StraightLegRaise {
            side: v1::Side::Left as i32,
            angle_degrees: 40,
            positive: true,
        }],
        lumbar_flexion_cm: Some(3.5),
        sleep_quality: Some(4),
        posture_notes: None,
        overall_health: Some(7),
        body_weight_kg: Some(82.5),
        diagnoses: vec![
            v1::Diagnosis {
                system: v1::CodeSystem::Icd10 as i32,
                code: "M51.2".to_owned(),
            },
            v1::Diagnosis {
                system: v1::CodeSystem::SnomedCt as i32,
                code: "23056005".to_owned(),
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

pub(crate) fn session() -> v1::RecordSessionRequest {
    v1::RecordSessionRequest {
        header: header(),
        occurred_at: past(),
        episode_id: EPISODE.to_owned(),
        mode: v1::SessionMode::Intermittent as i32,
        peak_force: Some(v1::Force {
            value: 30.0,
            unit: v1::ForceUnit::KilogramForce as i32,
        }),
        rest_force: Some(v1::Force {
            value: 30.0,
            unit: v1::ForceUnit::PoundForce as i32,
        }),
        hold_seconds: 60,
        relax_seconds: 30,
        cycles: 15,
        duration_minutes: 25,
        angle_degrees: 10,
        levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
        pain_before: 6,
        pain_after: 4,
        tolerance: v1::Tolerance::Good as i32,
        adverse_event: None,
        provider_id: "provider-17".to_owned(),
    }
}

pub(crate) fn violations<T: std::fmt::Debug>(
    result: Result<T, FieldViolations>,
) -> FieldViolations {
    result.unwrap_err()
}
