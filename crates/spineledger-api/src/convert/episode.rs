//! The episode's write requests (all but corrections, in `correction.rs`).

use chrono::{DateTime, Utc};
use spineledger_domain::commands::{
    AdjustTreatmentPlan, DischargeEpisode, EpisodeCommand, GiveHomeCareInstructions,
    RecordEvaluation, RecordMissedSession, RecordOutcome, RecordReassessment, RecordSession,
    ReportHomeCareAdherence, StartTreatmentPlan,
};
use spineledger_domain::ids::{EpisodeId, PatientId};
use spineledger_domain::measures::{
    self as m, AdherencePercent, AgeYears, BodyWeightKg, Cadence, Cycles, DurationMinutes,
    HoldSeconds, HomeCareInstruction, InitialSpanWeeks, IntervalDays, LumbarFlexionCm,
    OverallHealth, PainNrs, PeriodDays, Pgic, RelaxSeconds, RolandMorris, SessionsPerWeek,
    SleepQuality, SymptomWeeks, TimesPerWeek, TractionAngleDegrees,
};

use super::enums::{
    discharge_reason, frequency, home_care_kind, missed_reason, recommendation, sciatica,
    session_mode, severity, tolerance,
};
use super::*;
use crate::error::FieldViolations;
use crate::v1;

pub(super) fn episode_id(check: &mut Check, raw: &str) -> Option<EpisodeId> {
    check.uuid("episode_id", raw).map(EpisodeId)
}

pub(super) fn episode_request(
    check: Check,
    header: Option<ValidHeader>,
    occurred_at: Option<DateTime<Utc>>,
    episode_id: Option<EpisodeId>,
    command: impl FnOnce(DateTime<Utc>) -> Option<EpisodeCommand>,
) -> Result<EpisodeRequest, FieldViolations> {
    let request = match (header, occurred_at, episode_id) {
        (Some(header), Some(occurred_at), Some(episode_id)) => {
            command(occurred_at).map(|command| {
                (
                    episode_id,
                    ValidCommand {
                        header,
                        occurred_at,
                        command,
                    },
                )
            })
        }
        _ => None,
    };
    check.finish(request)
}

/// Validates a `RecordEvaluationRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_evaluation(
    req: v1::RecordEvaluationRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let patient_id = check.uuid("patient_id", &req.patient_id).map(PatientId);
    let provider_id = check.text("provider_id", req.provider_id);
    let age_years = check.scaled("age_years", req.age_years, AgeYears::try_from_i64);
    let pain_back = check.scaled("pain_back", req.pain_back, PainNrs::try_from_i64);
    let pain_leg = check.scaled("pain_leg", req.pain_leg, PainNrs::try_from_i64);
    let odi = check.required_odi("odi", req.odi);
    let rmdq = check.optional_scaled("rmdq", req.rmdq, RolandMorris::try_from_i64);
    let slr = check.straight_leg_raises("straight_leg_raise", req.straight_leg_raise);
    let flexion = check.optional_float(
        "lumbar_flexion_cm",
        req.lumbar_flexion_cm,
        LumbarFlexionCm::new,
    );
    let sleep = check.optional_scaled(
        "sleep_quality",
        req.sleep_quality,
        SleepQuality::try_from_i64,
    );
    let posture_notes = check.optional_text("posture_notes", req.posture_notes);
    let overall_health = check.optional_scaled(
        "overall_health",
        req.overall_health,
        OverallHealth::try_from_i64,
    );
    let body_weight = check.optional_float("body_weight_kg", req.body_weight_kg, BodyWeightKg::new);
    let diagnoses = check.diagnoses("diagnoses", req.diagnoses);
    let contraindications = check.screening("contraindications", req.contraindications);
    let symptom_duration_weeks = check.optional_scaled(
        "symptom_duration_weeks",
        req.symptom_duration_weeks,
        SymptomWeeks::try_from_i64,
    );
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordEvaluation(RecordEvaluation {
            occurred_at,
            episode_id: episode?,
            patient_id: patient_id?,
            provider_id: provider_id?,
            age_years: age_years?,
            pain_back: pain_back?,
            pain_leg: pain_leg?,
            odi: odi?,
            rmdq: rmdq?,
            straight_leg_raise: slr?,
            lumbar_flexion_cm: flexion?,
            sleep_quality: sleep?,
            posture_notes: posture_notes?,
            overall_health: overall_health?,
            body_weight_kg: body_weight?,
            diagnoses: diagnoses?,
            contraindications: contraindications?,
            sciatica: req.sciatica,
            symptom_duration_weeks: symptom_duration_weeks?,
        }))
    })
}

/// Validates a `StartTreatmentPlanRequest`.
///
/// # Errors
/// Every field violation found.
pub fn start_treatment_plan(
    req: v1::StartTreatmentPlanRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let initial_sessions = match u8::try_from(req.initial_sessions) {
        Ok(sessions) if (1..=MAX_INITIAL_SESSIONS).contains(&req.initial_sessions) => {
            Some(sessions)
        }
        _ => {
            check.add(
                "initial_sessions",
                format!(
                    "{} is outside 1-{MAX_INITIAL_SESSIONS}",
                    req.initial_sessions
                ),
            );
            None
        }
    };
    let span = check.scaled(
        "initial_span_weeks",
        req.initial_span_weeks,
        InitialSpanWeeks::try_from_i64,
    );
    let target_levels = check.levels("target_levels", &req.target_levels);
    let starting_force = check.force("starting_force", req.starting_force);
    let goals = check
        .list_len("goals", &req.goals, 0, MAX_GOALS)
        .and_then(|()| {
            check.each("goals", req.goals, |check, path, goal| {
                check.text(path, goal)
            })
        });
    let justification = check.optional_text("justification", req.justification);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::StartTreatmentPlan(StartTreatmentPlan {
            occurred_at,
            initial_sessions: initial_sessions?,
            initial_span_weeks: span?,
            target_levels: target_levels?,
            starting_force: starting_force?,
            goals: goals?,
            justification: justification?,
        }))
    })
}

/// Validates a `RecordSessionRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_session(
    req: v1::RecordSessionRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let mode = check.enumeration("mode", req.mode, session_mode::from_proto);
    let peak_force = check.force("peak_force", req.peak_force);
    let rest_force = check.force("rest_force", req.rest_force);
    if let (Some(peak), Some(rest)) = (peak_force, rest_force)
        && rest.newtons() > peak.newtons()
    {
        check.add("rest_force", "must not exceed peak_force");
    }
    let hold = check.scaled("hold_seconds", req.hold_seconds, HoldSeconds::try_from_i64);
    let relax = check.scaled(
        "relax_seconds",
        req.relax_seconds,
        RelaxSeconds::try_from_i64,
    );
    let cycles = check.scaled("cycles", req.cycles, Cycles::try_from_i64);
    let duration = check.scaled(
        "duration_minutes",
        req.duration_minutes,
        DurationMinutes::try_from_i64,
    );
    let angle = check.scaled(
        "angle_degrees",
        req.angle_degrees,
        TractionAngleDegrees::try_from_i64,
    );
    let levels = check.levels("levels", &req.levels);
    let pain_before = check.scaled("pain_before", req.pain_before, PainNrs::try_from_i64);
    let pain_after = check.scaled("pain_after", req.pain_after, PainNrs::try_from_i64);
    let tolerance = check.enumeration("tolerance", req.tolerance, tolerance::from_proto);
    let adverse_event = match req.adverse_event {
        None => Some(None),
        Some(adverse) => {
            let severity = check.enumeration(
                "adverse_event.severity",
                adverse.severity,
                severity::from_proto,
            );
            let description = check.text("adverse_event.description", adverse.description);
            severity.zip(description).map(|(severity, description)| {
                Some(m::AdverseEvent {
                    severity,
                    description,
                })
            })
        }
    };
    let provider_id = check.text("provider_id", req.provider_id);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordSession(RecordSession {
            occurred_at,
            mode: mode?,
            peak_force: peak_force?,
            rest_force: rest_force?,
            hold_seconds: hold?,
            relax_seconds: relax?,
            cycles: cycles?,
            duration_minutes: duration?,
            angle_degrees: angle?,
            levels: levels?,
            pain_before: pain_before?,
            pain_after: pain_after?,
            tolerance: tolerance?,
            adverse_event: adverse_event?,
            provider_id: provider_id?,
        }))
    })
}

/// Validates a `RecordMissedSessionRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_missed_session(
    req: v1::RecordMissedSessionRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let reason = check.enumeration("reason", req.reason, missed_reason::from_proto);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordMissedSession(RecordMissedSession {
            occurred_at,
            reason: reason?,
        }))
    })
}

/// Validates a `RecordOutcomeRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_outcome(
    req: v1::RecordOutcomeRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let pain_back = check.scaled("pain_back", req.pain_back, PainNrs::try_from_i64);
    let pain_leg = check.scaled("pain_leg", req.pain_leg, PainNrs::try_from_i64);
    let odi = check.optional_odi("odi", req.odi);
    let rmdq = check.optional_scaled("rmdq", req.rmdq, RolandMorris::try_from_i64);
    let slr = check.straight_leg_raises("straight_leg_raise", req.straight_leg_raise);
    let flexion = check.optional_float(
        "lumbar_flexion_cm",
        req.lumbar_flexion_cm,
        LumbarFlexionCm::new,
    );
    let sleep = check.optional_scaled(
        "sleep_quality",
        req.sleep_quality,
        SleepQuality::try_from_i64,
    );
    let pgic = check.optional_scaled("pgic", req.pgic, Pgic::try_from_i64);
    let sciatica = check.optional_enumeration("sciatica", req.sciatica, sciatica::from_proto);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordOutcome(RecordOutcome {
            occurred_at,
            pain_back: pain_back?,
            pain_leg: pain_leg?,
            odi: odi?,
            rmdq: rmdq?,
            straight_leg_raise: slr?,
            lumbar_flexion_cm: flexion?,
            sleep_quality: sleep?,
            pgic: pgic?,
            sciatica: sciatica?,
        }))
    })
}

/// Validates a `GiveHomeCareInstructionsRequest`.
///
/// # Errors
/// Every field violation found.
pub fn give_home_care_instructions(
    req: v1::GiveHomeCareInstructionsRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let instructions = check
        .list_len("instructions", &req.instructions, 1, MAX_LIST_ITEMS)
        .and_then(|()| {
            check.each("instructions", req.instructions, |check, path, raw| {
                let kind = check.enumeration(
                    &format!("{path}.kind"),
                    raw.kind,
                    home_care_kind::from_proto,
                );
                let description = check.text(&format!("{path}.description"), raw.description);
                let times = check.optional_scaled(
                    &format!("{path}.times_per_week"),
                    raw.times_per_week,
                    TimesPerWeek::try_from_i64,
                );
                Some(HomeCareInstruction {
                    kind: kind?,
                    description: description?,
                    times_per_week: times?,
                })
            })
        });
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::GiveHomeCareInstructions(
            GiveHomeCareInstructions {
                occurred_at,
                instructions: instructions?,
            },
        ))
    })
}

/// Validates a `ReportHomeCareAdherenceRequest`.
///
/// # Errors
/// Every field violation found.
pub fn report_home_care_adherence(
    req: v1::ReportHomeCareAdherenceRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let period = check.scaled("period_days", req.period_days, PeriodDays::try_from_i64);
    let adherence = check.scaled(
        "adherence_percent",
        req.adherence_percent,
        AdherencePercent::try_from_i64,
    );
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::ReportHomeCareAdherence(
            ReportHomeCareAdherence {
                occurred_at,
                period_days: period?,
                adherence_percent: adherence?,
            },
        ))
    })
}

/// Validates a `RecordReassessmentRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_reassessment(
    req: v1::RecordReassessmentRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let pain_back = check.scaled("pain_back", req.pain_back, PainNrs::try_from_i64);
    let pain_leg = check.scaled("pain_leg", req.pain_leg, PainNrs::try_from_i64);
    let odi = check.optional_odi("odi", req.odi);
    let rmdq = check.optional_scaled("rmdq", req.rmdq, RolandMorris::try_from_i64);
    let recommendation = check.enumeration(
        "recommendation",
        req.recommendation,
        recommendation::from_proto,
    );
    let notes = check.optional_text("notes", req.notes);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordReassessment(RecordReassessment {
            occurred_at,
            pain_back: pain_back?,
            pain_leg: pain_leg?,
            odi: odi?,
            rmdq: rmdq?,
            recommendation: recommendation?,
            notes: notes?,
        }))
    })
}

/// Validates an `AdjustTreatmentPlanRequest`.
///
/// # Errors
/// Every field violation found.
pub fn adjust_treatment_plan(
    req: v1::AdjustTreatmentPlanRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    use v1::adjust_treatment_plan_request::Cadence as RawCadence;
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let frequency = check.enumeration("frequency", req.frequency, frequency::from_proto);
    let cadence = match req.cadence {
        None => Some(Cadence::None),
        Some(RawCadence::SessionsPerWeek(per_week)) => check
            .measure("sessions_per_week", SessionsPerWeek::new(per_week))
            .map(Cadence::SessionsPerWeek),
        Some(RawCadence::IntervalDays(days)) => check
            .scaled("interval_days", days, IntervalDays::try_from_i64)
            .map(Cadence::IntervalDays),
    };
    if let (Some(frequency), Some(cadence)) = (frequency, cadence)
        && !cadence.fits(frequency)
    {
        let description = if cadence == Cadence::None {
            "is required (sessions_per_week or interval_days) for this frequency"
        } else {
            "must be absent for FREQUENCY_AS_NEEDED"
        };
        check.add("cadence", description);
    }
    let reason = check.optional_text("reason", req.reason);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::AdjustTreatmentPlan(AdjustTreatmentPlan {
            occurred_at,
            frequency: frequency?,
            cadence: cadence?,
            reason: reason?,
        }))
    })
}

/// Validates a `DischargeEpisodeRequest`.
///
/// # Errors
/// Every field violation found.
pub fn discharge_episode(
    req: v1::DischargeEpisodeRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let reason = check.enumeration("reason", req.reason, discharge_reason::from_proto);
    let notes = check.optional_text("notes", req.notes);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::DischargeEpisode(DischargeEpisode {
            occurred_at,
            reason: reason?,
            notes: notes?,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_support::*;
    use chrono::TimeZone;
    use prost_types::Timestamp;
    use spineledger_domain::measures::{Contraindication, Finding};

    #[test]
    fn valid_evaluation_converts() {
        let (episode, valid) = record_evaluation(evaluation(), now()).unwrap();
        assert_eq!(episode.to_string(), EPISODE);
        let EpisodeCommand::RecordEvaluation(command) = valid.command else {
            panic!("expected an evaluation");
        };
        // 22 / (5 x 9) x 100 = 48.9
        assert!((command.odi.score() - 48.9).abs() < 1e-9);
        assert_eq!(command.diagnoses.len(), 2);
        assert_eq!(
            command
                .contraindications
                .finding(Contraindication::Pregnancy),
            Finding::Absent
        );
    }

    #[test]
    fn valid_plan_converts() {
        let result = start_treatment_plan(
            v1::StartTreatmentPlanRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                initial_sessions: 5,
                initial_span_weeks: 3,
                target_levels: vec![v1::SpinalLevel::L5 as i32, v1::SpinalLevel::S1 as i32],
                starting_force: newtons(300.0),
                goals: vec!["sleep through the night".to_owned()],
                justification: None,
            },
            now(),
        );
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn valid_session_converts_units_to_newtons() {
        let (_, valid) = record_session(session(), now()).unwrap();
        let EpisodeCommand::RecordSession(command) = valid.command else {
            panic!("expected a session");
        };
        assert!((command.peak_force.newtons() - 294.1995).abs() < 1e-9);
        assert!((command.rest_force.newtons() - 133.446_648_457_815).abs() < 1e-9);
    }

    #[test]
    fn valid_missed_session_outcome_home_care_and_adherence_convert() {
        assert!(
            record_missed_session(
                v1::RecordMissedSessionRequest {
                    header: header(),
                    occurred_at: past(),
                    episode_id: EPISODE.to_owned(),
                    reason: v1::MissedReason::NoShow as i32,
                },
                now()
            )
            .is_ok()
        );
        let outcome = record_outcome(
            v1::RecordOutcomeRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                pain_back: 3,
                pain_leg: 1,
                odi: Some(v1::OswestryDisabilityIndex {
                    input: Some(v1::oswestry_disability_index::Input::Score(22.0)),
                }),
                rmdq: None,
                straight_leg_raise: vec![],
                lumbar_flexion_cm: None,
                sleep_quality: Some(8),
                pgic: Some(2),
                sciatica: v1::SciaticaSymptoms::Improved as i32,
            },
            now(),
        );
        assert!(outcome.is_ok(), "{outcome:?}");
        let home_care = give_home_care_instructions(
            v1::GiveHomeCareInstructionsRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                instructions: vec![v1::HomeCareInstruction {
                    kind: v1::HomeCareKind::Walking as i32,
                    description: "walk 20 minutes".to_owned(),
                    times_per_week: Some(5),
                }],
            },
            now(),
        );
        assert!(home_care.is_ok(), "{home_care:?}");
        let adherence = report_home_care_adherence(
            v1::ReportHomeCareAdherenceRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                period_days: 14,
                adherence_percent: 80,
            },
            now(),
        );
        assert!(adherence.is_ok(), "{adherence:?}");
    }

    #[test]
    fn evaluation_with_several_bad_fields_reports_each_field() {
        let mut request = evaluation();
        request.header = Some(v1::CommandHeader {
            command_id: "not-a-uuid".to_owned(),
            expected_version: Some(-1),
            actor: String::new(),
            ..header().unwrap()
        });
        request.pain_back = 11;
        request.age_years = -3;
        request.odi = Some(v1::OswestryDisabilityIndex {
            input: Some(v1::oswestry_disability_index::Input::Sections(
                v1::OdiSections {
                    answers: vec![3, 2, 3, 9, -1, 2, 3, 2, 3, 2],
                },
            )),
        });
        request.diagnoses[0].code = "51.2".to_owned();
        request.body_weight_kg = Some(f64::NAN);
        request.posture_notes = Some("x".repeat(2001));
        request.contraindications.pop();
        let found = violations(record_evaluation(request, now()));
        for field in [
            "header.command_id",
            "header.expected_version",
            "header.actor",
            "pain_back",
            "age_years",
            "odi.sections.answers[3]",
            "diagnoses[0].code",
            "body_weight_kg",
            "posture_notes",
            "contraindications",
        ] {
            assert!(
                found.contains_field(field),
                "{field} not reported in {found}"
            );
        }
        assert_eq!(found.len(), 10, "{found}");
    }

    #[test]
    fn unspecified_and_unknown_enums_are_rejected() {
        let mut request = session();
        request.mode = v1::SessionMode::Unspecified as i32;
        request.tolerance = 42;
        request.levels = vec![v1::SpinalLevel::L4 as i32, 0];
        request.peak_force = Some(v1::Force {
            value: 300.0,
            unit: v1::ForceUnit::Unspecified as i32,
        });
        let found = violations(record_session(request, now()));
        for field in ["mode", "tolerance", "levels[1]", "peak_force.unit"] {
            assert!(
                found.contains_field(field),
                "{field} not reported in {found}"
            );
        }
    }

    #[test]
    fn occurred_at_in_the_future_is_rejected() {
        let mut request = session();
        request.occurred_at = ts(now() + TimeDelta::minutes(6));
        assert!(violations(record_session(request, now())).contains_field("occurred_at"));
        let mut within_skew = session();
        within_skew.occurred_at = ts(now() + TimeDelta::minutes(4));
        assert!(record_session(within_skew, now()).is_ok());
    }

    #[test]
    fn text_with_nul_or_control_characters_is_not_storable() {
        assert!(unstorable_text("a\0b").is_some_and(|why| why.contains("NUL")));
        for control in ["\u{1}", "\u{1b}[2J", "\u{7f}", "\u{85}"] {
            assert!(unstorable_text(control).is_some(), "{control:?}");
        }
        assert_eq!(unstorable_text("two lines\r\n\tindented, é ✓"), None);

        let mut request = session();
        request.provider_id = "provider\0".to_owned();
        request.header = Some(v1::CommandHeader {
            actor: "\0".to_owned(),
            ..header().unwrap()
        });
        let found = violations(record_session(request, now()));
        assert!(found.contains_field("provider_id"), "{found}");
        assert!(found.contains_field("header.actor"), "{found}");
    }

    #[test]
    fn occurred_at_missing_invalid_or_before_1900_is_rejected() {
        for occurred_at in [
            None,
            ts(Utc.with_ymd_and_hms(1899, 12, 31, 0, 0, 0).unwrap()),
            Some(Timestamp {
                seconds: i64::MAX,
                nanos: -1,
            }),
        ] {
            let mut request = session();
            request.occurred_at = occurred_at;
            assert!(violations(record_session(request, now())).contains_field("occurred_at"));
        }
    }

    #[test]
    fn rest_force_above_peak_and_non_finite_forces_are_rejected() {
        let mut request = session();
        request.rest_force = newtons(400.0);
        assert!(violations(record_session(request, now())).contains_field("rest_force"));
        let mut request = session();
        request.peak_force = newtons(f64::INFINITY);
        request.rest_force = None;
        let found = violations(record_session(request, now()));
        assert!(found.contains_field("peak_force.value"));
        assert!(found.contains_field("rest_force"));
    }

    #[test]
    fn odi_with_wrong_section_count_is_rejected() {
        let mut request = evaluation();
        request.odi = Some(v1::OswestryDisabilityIndex {
            input: Some(v1::oswestry_disability_index::Input::Sections(
                v1::OdiSections {
                    answers: vec![1; 9],
                },
            )),
        });
        assert!(
            violations(record_evaluation(request, now())).contains_field("odi.sections.answers")
        );
    }

    #[test]
    fn plan_outside_scales_reports_each_field() {
        let found = violations(start_treatment_plan(
            v1::StartTreatmentPlanRequest {
                header: None,
                occurred_at: past(),
                episode_id: String::new(),
                initial_sessions: 300,
                initial_span_weeks: 0,
                target_levels: vec![],
                starting_force: newtons(2500.0),
                goals: vec!["  ".to_owned()],
                justification: None,
            },
            now(),
        ));
        for field in [
            "header",
            "episode_id",
            "initial_sessions",
            "initial_span_weeks",
            "target_levels",
            "starting_force.value",
            "goals[0]",
        ] {
            assert!(
                found.contains_field(field),
                "{field} not reported in {found}"
            );
        }
    }

    #[test]
    fn cadence_must_fit_the_frequency() {
        let request = |frequency: v1::Frequency, cadence| v1::AdjustTreatmentPlanRequest {
            header: header(),
            occurred_at: past(),
            episode_id: EPISODE.to_owned(),
            frequency: frequency as i32,
            cadence,
            reason: None,
        };
        let as_needed_weekly = request(
            v1::Frequency::AsNeeded,
            Some(v1::adjust_treatment_plan_request::Cadence::IntervalDays(7)),
        );
        assert!(
            violations(adjust_treatment_plan(as_needed_weekly, now())).contains_field("cadence")
        );
        let maintenance_without = request(v1::Frequency::Maintenance, None);
        assert!(
            violations(adjust_treatment_plan(maintenance_without, now())).contains_field("cadence")
        );
        assert!(adjust_treatment_plan(request(v1::Frequency::AsNeeded, None), now()).is_ok());
    }

    #[test]
    fn valid_reassessment_adjustment_and_discharge_convert() {
        let reassessment = record_reassessment(
            v1::RecordReassessmentRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                pain_back: 3,
                pain_leg: 2,
                odi: None,
                rmdq: Some(6),
                recommendation: v1::Recommendation::ChangeFrequency as i32,
                notes: Some("responding well".to_owned()),
            },
            now(),
        );
        assert!(reassessment.is_ok(), "{reassessment:?}");
        let adjustment = adjust_treatment_plan(
            v1::AdjustTreatmentPlanRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                frequency: v1::Frequency::Tapering as i32,
                cadence: Some(v1::adjust_treatment_plan_request::Cadence::SessionsPerWeek(
                    1.5,
                )),
                reason: None,
            },
            now(),
        );
        assert!(adjustment.is_ok(), "{adjustment:?}");
        let discharge = discharge_episode(
            v1::DischargeEpisodeRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                reason: v1::DischargeReason::GoalsMet as i32,
                notes: None,
            },
            now(),
        );
        assert!(discharge.is_ok(), "{discharge:?}");
    }
}
