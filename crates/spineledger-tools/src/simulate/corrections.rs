//! Corrections as a clinic makes them, in the API's terms: each names fields by their
//! proto path in the request that recorded the event and gives proto3-JSON values (enum
//! names, forces with a unit), dated a few hours to two days after the fact it corrects.
//!
//! At the end of its course every patient corrects one group of fields of one of its facts
//! ([`GROUPS`]), chosen by the patient's place in the cohort ([`ROTATION`]; the next group
//! whose event type the course has, when it has none of that type), and a fifth of the
//! patients one more group at random. The groups hold every correctable field of every
//! event type, so a cohort of 3 x 40 patients corrects each at least once. Corrections
//! come after the course, so no later command is judged against a corrected fact, and
//! their values keep the rules anyway: forces stay under the ceiling (body weight is only
//! ever corrected upwards) and rest under peak, the corrected age fits the registered birth
//! year, a poorly tolerated session stays poorly tolerated, an initial phase stays within
//! 4-6 sessions, a frequency keeps a cadence that fits it, and no absolute
//! contraindication is added.

use chrono::{DateTime, Datelike, Duration, Utc};
use rand::Rng;
use serde_json::{Value as Json, json};
use spineledger_api::v1;

use super::{DIAGNOSES, Writer, odi_sections, timestamp};

/// A fact the simulator recorded (the event id is the command id).
pub(super) struct Recorded {
    pub(super) event_id: String,
    pub(super) at: DateTime<Utc>,
    pub(super) fact: Fact,
}

/// What corrections of a fact need to know of it.
#[derive(Debug, Clone)]
pub(super) enum Fact {
    Evaluation {
        age: i32,
        birth_year: i32,
        pain_back: i32,
        pain_leg: i32,
        weight: f64,
        /// Index into `DIAGNOSES`.
        diagnosis: usize,
        /// (contraindication, finding) as sent.
        screening: Vec<(i32, i32)>,
        /// Sciatica as recorded.
        sciatica: bool,
    },
    Plan {
        initial_sessions: i32,
        span_weeks: i32,
        /// Newtons.
        force: f64,
    },
    Session {
        /// Newtons, as sent.
        peak: f64,
        /// Newtons, as sent.
        rest: f64,
        poor: bool,
        pain_before: i32,
        pain_after: i32,
        angle: i32,
        adverse: bool,
    },
    Missed {
        reason: v1::MissedReason,
    },
    Outcome {
        pain_back: i32,
        pain_leg: i32,
        pgic: i32,
        responder: bool,
    },
    HomeCare,
    Adherence {
        percent: i32,
    },
    Reassessment {
        pain_back: i32,
        pain_leg: i32,
        recommendation: v1::Recommendation,
    },
    Adjusted {
        frequency: v1::Frequency,
    },
    Discharged {
        reason: v1::DischargeReason,
    },
}

impl Fact {
    const fn event_type(&self) -> &'static str {
        match self {
            Self::Evaluation { .. } => "EvaluationRecorded",
            Self::Plan { .. } => "TreatmentPlanStarted",
            Self::Session { .. } => "SessionRecorded",
            Self::Missed { .. } => "SessionMissed",
            Self::Outcome { .. } => "OutcomeRecorded",
            Self::HomeCare => "HomeCareInstructed",
            Self::Adherence { .. } => "HomeCareAdherenceReported",
            Self::Reassessment { .. } => "ReassessmentRecorded",
            Self::Adjusted { .. } => "TreatmentPlanAdjusted",
            Self::Discharged { .. } => "EpisodeDischarged",
        }
    }
}

/// The catalogue's name of "one screened item" (`contraindications.CONTRAINDICATION_…`).
pub const SCREENED_ITEM: &str = "contraindications.<CONTRAINDICATION_…>";

/// The fields one correction names together, by event type and proto path; together they
/// are every field of `spineledger_api::convert::correction::correctable_fields`.
pub const GROUPS: [(&str, &[&str]); 28] = [
    ("EvaluationRecorded", &["pain_back", "pain_leg"]),
    ("EvaluationRecorded", &["odi", "rmdq"]),
    (
        "EvaluationRecorded",
        &["age_years", "provider_id", "odi.score"],
    ),
    (
        "EvaluationRecorded",
        &["straight_leg_raise", "lumbar_flexion_cm", "sleep_quality"],
    ),
    (
        "EvaluationRecorded",
        &["posture_notes", "overall_health", "body_weight_kg"],
    ),
    ("EvaluationRecorded", &["diagnoses", SCREENED_ITEM]),
    ("EvaluationRecorded", &["contraindications"]),
    (
        "TreatmentPlanStarted",
        &["initial_sessions", "justification"],
    ),
    (
        "TreatmentPlanStarted",
        &["initial_span_weeks", "target_levels"],
    ),
    ("TreatmentPlanStarted", &["starting_force", "goals"]),
    ("SessionRecorded", &["peak_force", "rest_force"]),
    (
        "SessionRecorded",
        &["mode", "hold_seconds", "relax_seconds"],
    ),
    (
        "SessionRecorded",
        &["cycles", "duration_minutes", "angle_degrees"],
    ),
    ("SessionRecorded", &["levels", "pain_before", "pain_after"]),
    (
        "SessionRecorded",
        &["tolerance", "adverse_event", "provider_id"],
    ),
    ("SessionMissed", &["reason"]),
    ("OutcomeRecorded", &["pain_back", "pain_leg", "odi"]),
    (
        "OutcomeRecorded",
        &["rmdq", "straight_leg_raise", "lumbar_flexion_cm"],
    ),
    (
        "OutcomeRecorded",
        &["sleep_quality", "pgic", "sciatica", "odi.score"],
    ),
    ("HomeCareInstructed", &["instructions"]),
    (
        "HomeCareAdherenceReported",
        &["period_days", "adherence_percent"],
    ),
    ("ReassessmentRecorded", &["pain_back", "pain_leg", "odi"]),
    (
        "ReassessmentRecorded",
        &["rmdq", "recommendation", "notes", "odi.score"],
    ),
    ("TreatmentPlanAdjusted", &["frequency", "sessions_per_week"]),
    ("TreatmentPlanAdjusted", &["interval_days", "reason"]),
    ("TreatmentPlanAdjusted", &["frequency", "cadence"]),
    ("EpisodeDischarged", &["reason", "notes"]),
    (
        "EvaluationRecorded",
        &["sciatica", "symptom_duration_weeks"],
    ),
];

/// The group patient `i` of a cohort corrects: `ROTATION[i % 40]`. Every group is in it;
/// missed sessions (15, in about 40 % of courses), adjustments (23-25, about 65 %) and
/// discharges (26, 85 %) come more often (27, sciatica and symptom duration, came later
/// and took one of the missed sessions' turns), since a course without the event type passes
/// its turn to the next group.
pub const ROTATION: [usize; 40] = [
    0, 15, 10, 23, 16, 1, 15, 24, 11, 2, 26, 15, 25, 17, 12, 3, 15, 23, 4, 13, 20, 15, 24, 5, 18,
    14, 6, 15, 25, 7, 19, 21, 27, 8, 22, 26, 9, 23, 24, 25,
];

/// The share of patients who make a second correction, of a group chosen at random.
const SECOND_CORRECTION: f64 = 0.2;

/// A JSON value as a `google.protobuf.Value`.
fn proto_value(json: Json) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(proto_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.into_iter().map(|(k, v)| (k, proto_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A force in kilogram-force, to 0.1 kgf.
fn kgf(newtons: f64) -> Json {
    json!({
        "value": (newtons / 9.806_65 * 10.0).floor() / 10.0,
        "unit": v1::ForceUnit::KilogramForce.as_str_name(),
    })
}

impl Writer {
    /// The corrections at the end of the course (see the module documentation).
    pub(super) async fn correct_course(&mut self) -> anyhow::Result<()> {
        let has = |journal: &[Recorded], group: usize| {
            journal
                .iter()
                .any(|r| r.fact.event_type() == GROUPS[group].0)
        };
        let Some(first) = (0..ROTATION.len())
            .map(|k| ROTATION[(self.index + k) % ROTATION.len()])
            .find(|&group| has(&self.journal, group))
        else {
            return Ok(());
        };
        let second = self
            .rng
            .random_bool(SECOND_CORRECTION)
            .then(|| self.rng.random_range(0..GROUPS.len()));
        self.correct(first).await?;
        // Another event type: two corrections of one fact could contradict each other
        // (as needed, then an interval).
        if let Some(second) = second
            && GROUPS[second].0 != GROUPS[first].0
            && has(&self.journal, second)
        {
            self.correct(second).await?;
        }
        Ok(())
    }

    /// Corrects the fields of `group` in one of the course's facts of its type.
    async fn correct(&mut self, group: usize) -> anyhow::Result<()> {
        let (event_type, fields) = GROUPS[group];
        let candidates: Vec<usize> = (0..self.journal.len())
            .filter(|&i| self.journal[i].fact.event_type() == event_type)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let chosen = &self.journal[candidates[self.rng.random_range(0..candidates.len())]];
        let (event_id, fact_at, fact) = (chosen.event_id.clone(), chosen.at, chosen.fact.clone());
        let corrections = fields
            .iter()
            .map(|field| {
                let (path, value) = self.corrected_value(field, fields, &fact, fact_at);
                v1::FieldCorrection {
                    field: path,
                    corrected_value: Some(proto_value(value)),
                }
            })
            .collect();
        let at = fact_at + Duration::hours(self.rng.random_range(1..=48));
        self.send_correction(
            event_id,
            at,
            corrections,
            "entry checked against the paper chart",
        )
        .await
    }

    /// A mistyped pain score, corrected later the same day.
    pub(super) async fn correct_pain_after(
        &mut self,
        event_id: &str,
        at: DateTime<Utc>,
        pain_after: i32,
    ) -> anyhow::Result<()> {
        let correction = v1::FieldCorrection {
            field: "pain_after".into(),
            corrected_value: Some(proto_value(json!(pain_after))),
        };
        self.send_correction(
            event_id.to_owned(),
            at,
            vec![correction],
            "pain score mistyped at entry",
        )
        .await
    }

    async fn send_correction(
        &mut self,
        corrected_event_id: String,
        at: DateTime<Utc>,
        corrections: Vec<v1::FieldCorrection>,
        reason: &str,
    ) -> anyhow::Result<()> {
        let header = self.header();
        send!(
            self,
            record_correction,
            "RecordCorrected",
            v1::RecordCorrectionRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                corrected_event_id,
                corrections,
                reason: reason.into(),
            }
        );
        Ok(())
    }

    /// A pain score one point off (the other way at the ends of the scale).
    fn pain_shift(&mut self, nrs: i32) -> Json {
        let up = nrs == 0 || (nrs < 10 && self.rng.random_bool(0.5));
        json!(if up { nrs + 1 } else { nrs - 1 })
    }

    /// An ODI given as the index alone, 10.0-59.9 %.
    fn odi_score(&mut self) -> Json {
        json!(f64::from(self.rng.random_range(100..600)) / 10.0)
    }

    fn odi_answers(&mut self) -> Json {
        let target = self.rng.random_range(10.0..60.0);
        let answers = match odi_sections(&mut self.rng, target).and_then(|odi| odi.input) {
            Some(v1::oswestry_disability_index::Input::Sections(sections)) => sections.answers,
            _ => vec![1; 10],
        };
        json!({ "sections": { "answers": answers } })
    }

    fn straight_leg_raise(&mut self) -> Json {
        let left = self.rng.random_range(35..80);
        let right = self.rng.random_range(60..85);
        json!([
            { "side": v1::Side::Left.as_str_name(), "angle_degrees": left, "positive": left < 60 },
            { "side": v1::Side::Right.as_str_name(), "angle_degrees": right, "positive": false },
        ])
    }

    /// The proto path and corrected value of `field` of `fact` (recorded at `at`), one of
    /// the `group` corrected together.
    fn corrected_value(
        &mut self,
        field: &str,
        group: &[&str],
        fact: &Fact,
        at: DateTime<Utc>,
    ) -> (String, Json) {
        let value = match (fact, field) {
            (Fact::Evaluation { .. }, SCREENED_ITEM) => return self.screened_item(fact),
            (Fact::Evaluation { .. }, _) => self.evaluation_value(field, fact, at),
            (Fact::Plan { .. }, _) => self.plan_value(field, fact),
            (Fact::Session { .. }, _) => self.session_value(field, fact),
            (Fact::Adjusted { frequency }, _) => {
                adjusted_value(*frequency, field, group.contains(&"cadence"))
            }
            (_, "pain_back" | "pain_leg" | "odi" | "odi.score" | "rmdq" | "notes") => {
                self.follow_up_value(field, fact)
            }
            _ => self.other_value(field, fact),
        };
        (field.to_owned(), value)
    }

    /// One relative contraindication (never blocking) found the other way.
    fn screened_item(&mut self, fact: &Fact) -> (String, Json) {
        let item = if self.rng.random_bool(0.5) {
            v1::Contraindication::AnticoagulantTherapy
        } else {
            v1::Contraindication::PriorFailedBackSurgery
        };
        let present = matches!(fact, Fact::Evaluation { screening, .. }
            if screening.contains(&(item as i32, v1::Finding::Present as i32)));
        let finding = if present {
            v1::Finding::Absent
        } else {
            v1::Finding::Present
        };
        (
            format!("contraindications.{}", item.as_str_name()),
            json!(finding.as_str_name()),
        )
    }

    fn evaluation_value(&mut self, field: &str, fact: &Fact, at: DateTime<Utc>) -> Json {
        let Fact::Evaluation {
            age,
            birth_year,
            pain_back,
            pain_leg,
            weight,
            diagnosis,
            screening,
            sciatica,
        } = fact
        else {
            return Json::Null;
        };
        match field {
            "provider_id" => json!("provider-2"),
            // Before or after this year's birthday: the other age the birth year allows.
            "age_years" => {
                let oldest = at.year() - birth_year;
                json!(if *age == oldest { oldest - 1 } else { oldest })
            }
            "pain_back" => self.pain_shift(*pain_back),
            "pain_leg" => self.pain_shift(*pain_leg),
            "odi" => self.odi_answers(),
            "odi.score" => self.odi_score(),
            "rmdq" => json!(self.rng.random_range(2..20)),
            "straight_leg_raise" => self.straight_leg_raise(),
            "lumbar_flexion_cm" => json!(f64::from(self.rng.random_range(20..70)) / 10.0),
            "sleep_quality" => json!(self.rng.random_range(2..9)),
            "posture_notes" => json!("reduced lumbar lordosis, slight antalgic lean"),
            "overall_health" => json!(self.rng.random_range(3..9)),
            "sciatica" => json!(!*sciatica),
            "symptom_duration_weeks" => json!(self.rng.random_range(1..60)),
            // Upwards only: the force ceiling derives from the weight.
            "body_weight_kg" => json!(weight + f64::from(self.rng.random_range(1..=3))),
            "diagnoses" => {
                let (system, code) = DIAGNOSES[(diagnosis + 1) % DIAGNOSES.len()];
                json!([{ "system": system.as_str_name(), "code": code }])
            }
            // The same screening with the relative items found the other way.
            "contraindications" => {
                let items: Vec<Json> = screening
                    .iter()
                    .map(|&(item, finding)| {
                        let relative = item >= v1::Contraindication::AnticoagulantTherapy as i32;
                        let finding = match v1::Finding::try_from(finding) {
                            Ok(v1::Finding::Present) if relative => v1::Finding::Absent,
                            Ok(_) if relative => v1::Finding::Present,
                            Ok(finding) => finding,
                            Err(_) => v1::Finding::Unknown,
                        };
                        let item = v1::Contraindication::try_from(item)
                            .unwrap_or(v1::Contraindication::Unspecified);
                        json!({
                            "contraindication": item.as_str_name(),
                            "finding": finding.as_str_name(),
                        })
                    })
                    .collect();
                Json::Array(items)
            }
            _ => Json::Null,
        }
    }

    fn plan_value(&mut self, field: &str, fact: &Fact) -> Json {
        let Fact::Plan {
            initial_sessions,
            span_weeks,
            force,
        } = fact
        else {
            return Json::Null;
        };
        match field {
            // Within 4-6, so no justification is needed whatever it says.
            "initial_sessions" => json!(match initial_sessions {
                4 => 5,
                5 => 6,
                _ => 4,
            }),
            "justification" => json!("initial phase agreed with the patient after the evaluation"),
            "initial_span_weeks" => json!(if *span_weeks >= 6 { 5 } else { span_weeks + 1 }),
            "target_levels" => json!([
                v1::SpinalLevel::L4.as_str_name(),
                v1::SpinalLevel::L5.as_str_name(),
                v1::SpinalLevel::S1.as_str_name(),
            ]),
            "starting_force" => kgf(force * 0.95),
            "goals" => json!([
                "walk 30 minutes without leg pain",
                "return to full duties at work",
            ]),
            _ => Json::Null,
        }
    }

    fn session_value(&mut self, field: &str, fact: &Fact) -> Json {
        let Fact::Session {
            peak,
            rest,
            poor,
            pain_before,
            pain_after,
            angle,
            adverse,
        } = fact
        else {
            return Json::Null;
        };
        match field {
            "mode" => json!(v1::SessionMode::Static.as_str_name()),
            // Lower: under the ceiling, and never above a poorly tolerated session before.
            "peak_force" => kgf(peak * 0.97),
            // Still well under the (corrected) peak.
            "rest_force" => json!({
                "value": (rest * 1.1 * 10.0).round() / 10.0,
                "unit": v1::ForceUnit::Newton.as_str_name(),
            }),
            "hold_seconds" => json!(45),
            "relax_seconds" => json!(20),
            "cycles" => json!(12),
            "duration_minutes" => json!(20),
            "angle_degrees" => json!(angle + 2),
            "levels" => json!([
                v1::SpinalLevel::L5.as_str_name(),
                v1::SpinalLevel::S1.as_str_name(),
            ]),
            "pain_before" => self.pain_shift(*pain_before),
            "pain_after" => self.pain_shift(*pain_after),
            // A poorly tolerated session stays poorly tolerated (the force rule).
            "tolerance" => json!(if *poor {
                v1::Tolerance::StoppedEarly.as_str_name()
            } else {
                v1::Tolerance::Fair.as_str_name()
            }),
            "adverse_event" => {
                if *adverse {
                    Json::Null
                } else {
                    json!({
                        "severity": v1::Severity::Mild.as_str_name(),
                        "description": "brief muscle spasm during the session",
                    })
                }
            }
            "provider_id" => json!("provider-2"),
            _ => Json::Null,
        }
    }

    /// Scores of an outcome or a reassessment, and a reassessment's notes.
    fn follow_up_value(&mut self, field: &str, fact: &Fact) -> Json {
        let (pain_back, pain_leg) = match fact {
            Fact::Outcome {
                pain_back,
                pain_leg,
                ..
            }
            | Fact::Reassessment {
                pain_back,
                pain_leg,
                ..
            } => (*pain_back, *pain_leg),
            _ => return Json::Null,
        };
        match field {
            "pain_back" => self.pain_shift(pain_back),
            "pain_leg" => self.pain_shift(pain_leg),
            "odi" if matches!(fact, Fact::Outcome { .. }) => json!({ "score": self.odi_score() }),
            "odi" => self.odi_answers(),
            "odi.score" => self.odi_score(),
            "rmdq" => json!(self.rng.random_range(2..20)),
            "notes" => json!("reassessed with the patient; goals reviewed"),
            _ => Json::Null,
        }
    }

    fn other_value(&mut self, field: &str, fact: &Fact) -> Json {
        match (fact, field) {
            (Fact::Missed { reason }, "reason") => {
                let other = if *reason == v1::MissedReason::ClinicCancelled {
                    v1::MissedReason::Other
                } else {
                    v1::MissedReason::ClinicCancelled
                };
                json!(other.as_str_name())
            }
            (Fact::Outcome { .. }, "straight_leg_raise") => self.straight_leg_raise(),
            (Fact::Outcome { .. }, "lumbar_flexion_cm") => {
                json!(f64::from(self.rng.random_range(30..80)) / 10.0)
            }
            (Fact::Outcome { .. }, "sleep_quality") => json!(self.rng.random_range(3..9)),
            (Fact::Outcome { pgic, .. }, "pgic") => json!(if *pgic >= 7 { 6 } else { pgic + 1 }),
            (Fact::Outcome { responder, .. }, "sciatica") => json!(if *responder {
                v1::SciaticaSymptoms::None.as_str_name()
            } else {
                v1::SciaticaSymptoms::Worse.as_str_name()
            }),
            (Fact::HomeCare, "instructions") => json!([
                {
                    "kind": v1::HomeCareKind::Stretching.as_str_name(),
                    "description": "hamstring and hip flexor stretches",
                    "times_per_week": 5,
                },
                {
                    "kind": v1::HomeCareKind::Walking.as_str_name(),
                    "description": "walk 20 minutes on level ground",
                    "times_per_week": 7,
                },
            ]),
            (Fact::Adherence { .. }, "period_days") => json!(21),
            (Fact::Adherence { percent }, "adherence_percent") => {
                json!(if *percent >= 95 {
                    percent - 5
                } else {
                    percent + 5
                })
            }
            (Fact::Reassessment { recommendation, .. }, "recommendation") => {
                json!(if *recommendation == v1::Recommendation::ChangeFrequency {
                    v1::Recommendation::ContinueCurrentPlan.as_str_name()
                } else {
                    v1::Recommendation::ChangeFrequency.as_str_name()
                })
            }
            (Fact::Discharged { reason }, "reason") => {
                let other = if *reason == v1::DischargeReason::Plateau {
                    v1::DischargeReason::SelfDischarge
                } else {
                    v1::DischargeReason::Plateau
                };
                json!(other.as_str_name())
            }
            (Fact::Discharged { .. }, "notes") => {
                json!("discharge summary sent to the referring physician")
            }
            _ => Json::Null,
        }
    }
}

/// Values for an adjustment's fields. Paired in [`GROUPS`] so the cadence always fits the
/// frequency: another frequency with sessions per week, an interval for the frequency
/// recorded (never as needed), or as needed (`as_needed`, with the cadence) with none.
fn adjusted_value(frequency: v1::Frequency, field: &str, as_needed: bool) -> Json {
    use v1::Frequency as F;
    let corrected = match frequency {
        F::Intensive => (F::Tapering, 2.0, 3),
        F::Tapering => (F::Intensive, 2.5, 7),
        _ => (F::Tapering, 1.0, 28),
    };
    match field {
        "frequency" if as_needed => json!(F::AsNeeded.as_str_name()),
        "frequency" => json!(corrected.0.as_str_name()),
        "sessions_per_week" => json!(corrected.1),
        "interval_days" => json!(corrected.2),
        "cadence" => Json::Null,
        "reason" => json!("responded well; sessions spaced out as agreed"),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use spineledger_api::convert::correction::correctable_fields;
    use spineledger_domain::events::EPISODE_EVENT_TYPES;

    use super::{GROUPS, ROTATION};

    #[test]
    fn the_groups_name_every_correctable_field_and_nothing_else() {
        for event_type in EPISODE_EVENT_TYPES {
            let catalogue: BTreeSet<&str> = correctable_fields(event_type).into_iter().collect();
            let grouped: BTreeSet<&str> = GROUPS
                .iter()
                .filter(|(t, _)| *t == event_type)
                .flat_map(|(_, fields)| fields.iter().copied())
                .collect();
            assert_eq!(grouped, catalogue, "{event_type}");
        }
    }

    #[test]
    fn the_rotation_holds_every_group() {
        let rotated: BTreeSet<usize> = ROTATION.iter().copied().collect();
        assert_eq!(rotated, (0..GROUPS.len()).collect());
    }
}
