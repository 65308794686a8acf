//! Edge validation: every `spineledger.v1` request becomes a valid domain command (writes)
//! or a valid query (reads, `reads.rs`) here, or is refused with every problem it has
//! (never only the first), each named by its field path. Nothing here panics on any input: no unchecked indexing, no unwrap, no wrapping
//! `as` casts. The domain then only ever sees valid values.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use spineledger_domain::commands::{
    AdjustTreatmentPlan, DischargeEpisode, EpisodeCommand, GiveHomeCareInstructions,
    RecordCorrection, RecordEvaluation, RecordMissedSession, RecordOutcome, RecordReassessment,
    RecordSession, ReportHomeCareAdherence, StartTreatmentPlan,
};
use spineledger_domain::events::FieldCorrection;
use spineledger_domain::ids::{ClinicId, EpisodeId, PatientId};
use spineledger_domain::measures::{
    self as m, AdherencePercent, AgeYears, BodyWeightKg, Cadence, ContraindicationScreening,
    Cycles, Diagnosis, DurationMinutes, Force, HoldSeconds, HomeCareInstruction, InitialSpanWeeks,
    IntervalDays, LumbarFlexionCm, MeasureError, OdiSections, OswestryIndex, OverallHealth,
    PainNrs, PeriodDays, Pgic, RelaxSeconds, RolandMorris, SessionsPerWeek, ShortText,
    SleepQuality, SlrAngleDegrees, StraightLegRaise, Text, TimesPerWeek, TractionAngleDegrees,
};
use spineledger_domain::patient::RegisterPatient;
use spineledger_domain::serde_json;
use uuid::Uuid;

use crate::error::FieldViolations;
use crate::v1;

pub mod enums;
mod reads;

pub use reads::{
    DEFAULT_PAGE_SIZE, MAX_CLINICS_PER_QUERY, MAX_PAGE_SIZE, PlanListQuery, PlanQuery,
    StatisticsQuery, page_token,
};

use enums::{
    code_system, contraindication, discharge_reason, finding, force_unit, frequency,
    home_care_kind, missed_reason, recommendation, sciatica, session_mode, severity, sex, side,
    spinal_level, tolerance,
};

/// How far in the future `occurred_at` may lie, for clocks that disagree.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
/// The earliest year any timestamp of a request (or a birth year) may name.
pub const EARLIEST_YEAR: i32 = 1900;
/// The latest year any timestamp of a request may name.
pub const LATEST_YEAR: i32 = 9999;
/// The most items any repeated field may hold.
pub const MAX_LIST_ITEMS: usize = 50;
/// The most goals a plan may name.
pub const MAX_GOALS: usize = 20;
/// The largest initial phase, in sessions.
pub const MAX_INITIAL_SESSIONS: i32 = 30;
/// The deepest nesting of a corrected JSON value.
pub const MAX_CORRECTION_VALUE_DEPTH: usize = 16;

/// The validated command header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidHeader {
    /// The clinic the command is for.
    pub clinic_id: ClinicId,
    /// The idempotency key; becomes the event id.
    pub command_id: Uuid,
    /// The stream version expected before the append; `None`: any.
    pub expected_version: Option<u64>,
    /// The correlation id, when given.
    pub correlation_id: Option<Uuid>,
    /// The causation id, when given.
    pub causation_id: Option<Uuid>,
    /// Who records it (provider or user id), at most 200 characters.
    pub actor: String,
}

/// A request that passed edge validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCommand<T> {
    /// The header.
    pub header: ValidHeader,
    /// When the fact happened in the clinic.
    pub occurred_at: DateTime<Utc>,
    /// The domain command.
    pub command: T,
}

/// An episode command with the episode (stream) it is for.
pub type EpisodeRequest = (EpisodeId, ValidCommand<EpisodeCommand>);

/// Why `text` may not be stored, if it may not: every request string that reaches the
/// store (texts, the header's actor, diagnosis codes, the string values of corrections)
/// keeps this rule, checked here at the edge so the domain never sees such a string.
///
/// - U+0000 (NUL) is refused because PostgreSQL cannot store it in `jsonb` (SQLSTATE
///   22P05): accepted, it failed the append with INTERNAL.
/// - The other control characters (the rest of C0, DEL and C1) are refused too: no clinic
///   software has a reason to send them, they are invisible wherever the record is shown,
///   and they garble terminals, logs and exports. Tab, line feed and carriage return are
///   allowed: notes are often several lines.
#[must_use]
pub fn unstorable_text(text: &str) -> Option<&'static str> {
    if text.contains('\0') {
        Some("must not contain the NUL character (U+0000)")
    } else if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        Some("must not contain control characters (other than tab, line feed and carriage return)")
    } else {
        None
    }
}

/// Collects violations while converting fields; each helper returns `None` exactly when it
/// recorded a violation.
#[derive(Debug, Default)]
pub(crate) struct Check {
    violations: FieldViolations,
}

impl Check {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&mut self, field: &str, description: impl Into<String>) {
        self.violations.add(field, description);
    }

    /// How many problems have been recorded so far.
    pub(crate) fn problems(&self) -> usize {
        self.violations.len()
    }

    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, FieldViolations> {
        match value {
            Some(value) if self.violations.is_empty() => Ok(value),
            Some(_) => Err(self.violations),
            None => {
                if self.violations.is_empty() {
                    self.add("", "the request is invalid");
                }
                Err(self.violations)
            }
        }
    }

    /// A required UUID: surrounding whitespace is ignored; empty, nil and malformed
    /// values are violations.
    fn uuid(&mut self, field: &str, raw: &str) -> Option<Uuid> {
        if raw.trim().is_empty() {
            self.add(field, "is required (a UUID)");
            return None;
        }
        match Uuid::parse_str(raw.trim()) {
            Ok(uuid) if uuid.is_nil() => {
                self.add(field, "must not be the nil UUID");
                None
            }
            Ok(uuid) => Some(uuid),
            Err(_) => {
                self.add(field, "must be a UUID");
                None
            }
        }
    }

    fn optional_uuid(&mut self, field: &str, raw: &str) -> Option<Option<Uuid>> {
        if raw.trim().is_empty() {
            Some(None)
        } else {
            self.uuid(field, raw).map(Some)
        }
    }

    pub(crate) fn measure<T>(&mut self, field: &str, result: Result<T, MeasureError>) -> Option<T> {
        result
            .map_err(|error| self.add(field, error.to_string()))
            .ok()
    }

    pub(crate) fn scaled<T>(
        &mut self,
        field: &str,
        raw: i32,
        make: fn(i64) -> Result<T, MeasureError>,
    ) -> Option<T> {
        self.measure(field, make(i64::from(raw)))
    }

    pub(crate) fn optional_scaled<T>(
        &mut self,
        field: &str,
        raw: Option<i32>,
        make: fn(i64) -> Result<T, MeasureError>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(raw) => self.scaled(field, raw, make).map(Some),
        }
    }

    fn optional_float<T>(
        &mut self,
        field: &str,
        raw: Option<f64>,
        make: fn(f64) -> Result<T, MeasureError>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(raw) => self.measure(field, make(raw)).map(Some),
        }
    }

    /// A required enum: unknown numbers and the UNSPECIFIED zero are violations.
    pub(crate) fn enumeration<P: TryFrom<i32>, D>(
        &mut self,
        field: &str,
        raw: i32,
        map: fn(P) -> Option<D>,
    ) -> Option<D> {
        match self.optional_enumeration(field, raw, map) {
            Some(Some(value)) => Some(value),
            Some(None) => {
                self.add(field, "must be specified");
                None
            }
            None => None,
        }
    }

    /// An optional enum whose UNSPECIFIED zero means "not recorded".
    pub(crate) fn optional_enumeration<P: TryFrom<i32>, D>(
        &mut self,
        field: &str,
        raw: i32,
        map: fn(P) -> Option<D>,
    ) -> Option<Option<D>> {
        match P::try_from(raw) {
            Ok(value) => Some(map(value)),
            Err(_) => {
                self.add(field, format!("unknown value {raw}"));
                None
            }
        }
    }

    /// A request string that will be stored: see [`unstorable_text`].
    fn storable(&mut self, field: &str, raw: &str) -> Option<()> {
        match unstorable_text(raw) {
            Some(description) => {
                self.add(field, description);
                None
            }
            None => Some(()),
        }
    }

    pub(crate) fn text<const MAX: usize>(&mut self, field: &str, raw: String) -> Option<Text<MAX>> {
        if raw.trim().is_empty() {
            self.add(field, "is required");
            return None;
        }
        self.storable(field, &raw)?;
        self.measure(field, Text::new(raw))
    }

    /// An optional text; empty or blank counts as not given.
    pub(crate) fn optional_text<const MAX: usize>(
        &mut self,
        field: &str,
        raw: Option<String>,
    ) -> Option<Option<Text<MAX>>> {
        match raw {
            Some(raw) if !raw.trim().is_empty() => {
                self.storable(field, &raw)?;
                self.measure(field, Text::new(raw)).map(Some)
            }
            _ => Some(None),
        }
    }

    /// Every timestamp of every request: a valid instant in the years
    /// [`EARLIEST_YEAR`]-[`LATEST_YEAR`].
    fn timestamp(&mut self, field: &str, raw: prost_types::Timestamp) -> Option<DateTime<Utc>> {
        let time = u32::try_from(raw.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(raw.seconds, nanos));
        let Some(time) = time else {
            self.add(field, "is not a valid timestamp");
            return None;
        };
        if time.year() < EARLIEST_YEAR {
            self.add(field, format!("must not be before {EARLIEST_YEAR}"));
            return None;
        }
        if time.year() > LATEST_YEAR {
            self.add(field, format!("must not be after {LATEST_YEAR}"));
            return None;
        }
        Some(time)
    }

    /// An optional timestamp (absent: not given).
    fn optional_timestamp(
        &mut self,
        field: &str,
        raw: Option<prost_types::Timestamp>,
    ) -> Option<Option<DateTime<Utc>>> {
        match raw {
            None => Some(None),
            Some(raw) => self.timestamp(field, raw).map(Some),
        }
    }

    /// When a fact happened: required, and not ahead of the server clock `now` by more
    /// than [`MAX_CLOCK_SKEW`].
    fn occurred_at(
        &mut self,
        raw: Option<prost_types::Timestamp>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let field = "occurred_at";
        let Some(raw) = raw else {
            self.add(field, "is required");
            return None;
        };
        let time = self.timestamp(field, raw)?;
        if time > now + MAX_CLOCK_SKEW {
            self.add(
                field,
                "must not be in the future (more than 5 minutes ahead of the server clock)",
            );
            return None;
        }
        Some(time)
    }

    fn header(&mut self, raw: Option<v1::CommandHeader>) -> Option<ValidHeader> {
        let Some(raw) = raw else {
            self.add("header", "is required");
            return None;
        };
        let clinic_id = self.uuid("header.clinic_id", &raw.clinic_id);
        let command_id = self.uuid("header.command_id", &raw.command_id);
        let expected_version = match raw.expected_version {
            None => Some(None),
            Some(version) => match u64::try_from(version) {
                Ok(version) => Some(Some(version)),
                Err(_) => {
                    self.add("header.expected_version", "must not be negative");
                    None
                }
            },
        };
        let correlation_id = self.optional_uuid("header.correlation_id", &raw.correlation_id);
        let causation_id = self.optional_uuid("header.causation_id", &raw.causation_id);
        let actor: Option<ShortText> = self.text("header.actor", raw.actor);
        let (
            Some(clinic_id),
            Some(command_id),
            Some(expected_version),
            Some(correlation_id),
            Some(causation_id),
            Some(actor),
        ) = (
            clinic_id,
            command_id,
            expected_version,
            correlation_id,
            causation_id,
            actor,
        )
        else {
            return None;
        };
        Some(ValidHeader {
            clinic_id: ClinicId(clinic_id),
            command_id,
            expected_version,
            correlation_id,
            causation_id,
            actor: actor.as_str().to_owned(),
        })
    }

    pub(crate) fn list_len<T>(
        &mut self,
        field: &str,
        items: &[T],
        min: usize,
        max: usize,
    ) -> Option<()> {
        if items.len() < min {
            self.add(field, format!("needs at least {min} item(s)"));
            return None;
        }
        if items.len() > max {
            self.add(field, format!("may hold at most {max} items"));
            return None;
        }
        Some(())
    }

    /// Converts every item, reporting each bad one; `None` if any failed.
    pub(crate) fn each<R, T>(
        &mut self,
        field: &str,
        items: Vec<R>,
        mut convert: impl FnMut(&mut Self, &str, R) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut converted = Vec::with_capacity(items.len());
        let mut all_valid = true;
        for (index, item) in items.into_iter().enumerate() {
            match convert(self, &format!("{field}[{index}]"), item) {
                Some(value) => converted.push(value),
                None => all_valid = false,
            }
        }
        all_valid.then_some(converted)
    }

    pub(crate) fn force(&mut self, field: &str, raw: Option<v1::Force>) -> Option<Force> {
        let Some(raw) = raw else {
            self.add(field, "is required");
            return None;
        };
        let unit = self.enumeration(&format!("{field}.unit"), raw.unit, force_unit::from_proto);
        if !raw.value.is_finite() {
            self.add(&format!("{field}.value"), "must be a finite number");
            return None;
        }
        let unit = unit?;
        self.measure(
            &format!("{field}.value"),
            Force::from_value(raw.value, unit),
        )
    }

    pub(crate) fn odi(
        &mut self,
        field: &str,
        raw: v1::OswestryDisabilityIndex,
    ) -> Option<OswestryIndex> {
        use v1::oswestry_disability_index::Input;
        match raw.input {
            None => {
                self.add(field, "set either sections or score");
                None
            }
            Some(Input::Score(score)) => {
                self.measure(&format!("{field}.score"), OswestryIndex::from_score(score))
            }
            Some(Input::Sections(sections)) => {
                let answers_field = format!("{field}.sections.answers");
                if sections.answers.len() != m::ODI_SECTIONS {
                    self.add(
                        &answers_field,
                        format!(
                            "must have exactly {} entries (-1 for not answered), got {}",
                            m::ODI_SECTIONS,
                            sections.answers.len()
                        ),
                    );
                    return None;
                }
                let mut answers: OdiSections = [None; m::ODI_SECTIONS];
                let mut all_valid = true;
                for (index, (slot, raw)) in answers.iter_mut().zip(&sections.answers).enumerate() {
                    match *raw {
                        -1 => {}
                        raw => match u8::try_from(raw) {
                            Ok(answer) if answer <= m::ODI_MAX_SECTION_SCORE => {
                                *slot = Some(answer);
                            }
                            _ => {
                                self.add(
                                    &format!("{answers_field}[{index}]"),
                                    format!("{raw} is not 0-5 or -1 (not answered)"),
                                );
                                all_valid = false;
                            }
                        },
                    }
                }
                if !all_valid {
                    return None;
                }
                self.measure(&answers_field, OswestryIndex::from_sections(answers))
            }
        }
    }

    fn required_odi(
        &mut self,
        field: &str,
        raw: Option<v1::OswestryDisabilityIndex>,
    ) -> Option<OswestryIndex> {
        if let Some(raw) = raw {
            self.odi(field, raw)
        } else {
            self.add(field, "is required");
            None
        }
    }

    fn optional_odi(
        &mut self,
        field: &str,
        raw: Option<v1::OswestryDisabilityIndex>,
    ) -> Option<Option<OswestryIndex>> {
        match raw {
            None => Some(None),
            Some(raw) => self.odi(field, raw).map(Some),
        }
    }

    pub(crate) fn straight_leg_raises(
        &mut self,
        field: &str,
        raw: Vec<v1::StraightLegRaise>,
    ) -> Option<Vec<StraightLegRaise>> {
        self.list_len(field, &raw, 0, 2)?;
        let tests = self.each(field, raw, |check, path, test| {
            let side = check.enumeration(&format!("{path}.side"), test.side, side::from_proto);
            let angle = check.scaled(
                &format!("{path}.angle_degrees"),
                test.angle_degrees,
                SlrAngleDegrees::try_from_i64,
            );
            Some(StraightLegRaise {
                side: side?,
                angle_degrees: angle?,
                positive: test.positive,
            })
        })?;
        let mut sides = BTreeSet::new();
        for (index, test) in tests.iter().enumerate() {
            if !sides.insert(test.side) {
                self.add(&format!("{field}[{index}].side"), "each side at most once");
                return None;
            }
        }
        Some(tests)
    }

    pub(crate) fn levels(&mut self, field: &str, raw: &[i32]) -> Option<Vec<m::SpinalLevel>> {
        self.list_len(field, raw, 1, 6)?;
        let levels = self.each(field, raw.to_vec(), |check, path, level| {
            check.enumeration(path, level, spinal_level::from_proto)
        })?;
        let mut seen = BTreeSet::new();
        for (index, level) in levels.iter().enumerate() {
            if !seen.insert(*level) {
                self.add(&format!("{field}[{index}]"), "repeats a level");
                return None;
            }
        }
        Some(levels)
    }

    pub(crate) fn diagnoses(
        &mut self,
        field: &str,
        raw: Vec<v1::Diagnosis>,
    ) -> Option<Vec<Diagnosis>> {
        self.list_len(field, &raw, 1, MAX_LIST_ITEMS)?;
        self.each(field, raw, |check, path, diagnosis| {
            let system = check.enumeration(
                &format!("{path}.system"),
                diagnosis.system,
                code_system::from_proto,
            );
            let code_path = format!("{path}.code");
            check.storable(&code_path, &diagnosis.code)?;
            check.measure(&code_path, Diagnosis::new(system?, &diagnosis.code))
        })
    }

    pub(crate) fn screening(
        &mut self,
        field: &str,
        raw: Vec<v1::ContraindicationFinding>,
    ) -> Option<ContraindicationScreening> {
        self.list_len(field, &raw, 0, MAX_LIST_ITEMS)?;
        let items = self.each(field, raw, |check, path, item| {
            let contraindication = check.enumeration(
                &format!("{path}.contraindication"),
                item.contraindication,
                contraindication::from_proto,
            );
            let found = check.enumeration(
                &format!("{path}.finding"),
                item.finding,
                finding::from_proto,
            );
            Some((contraindication?, found?))
        })?;
        let mut seen = BTreeSet::new();
        for (index, (item, _)) in items.iter().enumerate() {
            if !seen.insert(*item) {
                self.add(
                    &format!("{field}[{index}].contraindication"),
                    format!("{} is screened more than once", item.as_str()),
                );
                return None;
            }
        }
        self.measure(field, ContraindicationScreening::new(items))
    }
}

fn episode_id(check: &mut Check, raw: &str) -> Option<EpisodeId> {
    check.uuid("episode_id", raw).map(EpisodeId)
}

fn episode_request(
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

// ---------------------------------------------------------------------------------------
// Requests

/// Validates a `RegisterPatientRequest`.
///
/// # Errors
/// Every field violation found.
pub fn register_patient(
    req: v1::RegisterPatientRequest,
    now: DateTime<Utc>,
) -> Result<ValidCommand<RegisterPatient>, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let patient_id = check.uuid("patient_id", &req.patient_id).map(PatientId);
    let birth_year = match req.birth_year {
        None => Some(None),
        Some(year) if (EARLIEST_YEAR..=now.year()).contains(&year) => Some(Some(year)),
        Some(year) => {
            check.add(
                "birth_year",
                format!("{year} is not between {EARLIEST_YEAR} and this year"),
            );
            None
        }
    };
    let sex = check.optional_enumeration("sex", req.sex, sex::from_proto);
    let request = (|| {
        let occurred_at = occurred_at?;
        Some(ValidCommand {
            header: header?,
            occurred_at,
            command: RegisterPatient {
                occurred_at,
                patient_id: patient_id?,
                birth_year: birth_year?,
                sex: sex?,
            },
        })
    })();
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

/// Validates a `RecordCorrectionRequest`.
///
/// # Errors
/// Every field violation found.
pub fn record_correction(
    req: v1::RecordCorrectionRequest,
    now: DateTime<Utc>,
) -> Result<EpisodeRequest, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let episode = episode_id(&mut check, &req.episode_id);
    let corrected_event_id = check.uuid("corrected_event_id", &req.corrected_event_id);
    let corrections = check
        .list_len("corrections", &req.corrections, 1, MAX_LIST_ITEMS)
        .and_then(|()| {
            check.each("corrections", req.corrections, |check, path, raw| {
                let field_path = format!("{path}.field");
                let field: Option<ShortText> = check.text(&field_path, raw.field);
                let field = field.filter(|field| {
                    let valid = is_field_path(field.as_str());
                    if !valid {
                        check.add(
                            &field_path,
                            "must be the field's path in the request that recorded the event, e.g. pain_after, peak_force or contraindications.CONTRAINDICATION_PREGNANCY",
                        );
                    }
                    valid
                });
                let value_path = format!("{path}.corrected_value");
                let value = match raw.corrected_value {
                    None => {
                        check.add(&value_path, "is required");
                        None
                    }
                    Some(value) => json_value(check, &value_path, value, 0),
                };
                Some(FieldCorrection {
                    field: field?,
                    corrected_value: value?,
                })
            })
        });
    let reason = check.text("reason", req.reason);
    episode_request(check, header, occurred_at, episode, |occurred_at| {
        Some(EpisodeCommand::RecordCorrection(RecordCorrection {
            occurred_at,
            corrected_event_id: corrected_event_id?,
            corrections: corrections?,
            reason: reason?,
        }))
    })
}

/// A dotted field path as the proto names fields: segments of letters, digits and
/// underscores (enum value names are upper case, e.g.
/// `contraindications.CONTRAINDICATION_PREGNANCY`). Whether the event corrected has the
/// field is decided once its type is known ([`crate::correction::resolve`]).
fn is_field_path(path: &str) -> bool {
    path.split('.').all(is_field_name)
}

/// A proto field name (snake_case or lowerCamelCase) or enum value name.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `google.protobuf.Value` as JSON. Whole numbers become JSON integers, so a corrected
/// integer field reads back as one.
/// At most this many items in one list or fields in one object of a corrected value.
const MAX_CORRECTION_VALUE_ITEMS: usize = 100;
/// At most this many characters in a key of a corrected value.
const MAX_CORRECTION_KEY_CHARS: usize = 100;

fn json_value(
    check: &mut Check,
    field: &str,
    value: prost_types::Value,
    depth: usize,
) -> Option<serde_json::Value> {
    use prost_types::value::Kind;
    if depth > MAX_CORRECTION_VALUE_DEPTH {
        check.add(field, "is nested too deeply");
        return None;
    }
    match value.kind {
        None => {
            check.add(field, "is required");
            None
        }
        Some(Kind::NullValue(_)) => Some(serde_json::Value::Null),
        Some(Kind::BoolValue(b)) => Some(serde_json::Value::Bool(b)),
        Some(Kind::StringValue(s)) => {
            if let Some(description) = unstorable_text(&s) {
                check.add(field, description);
                return None;
            }
            if s.chars().count() > m::MAX_NOTE_CHARS {
                check.add(
                    field,
                    format!("is longer than {} characters", m::MAX_NOTE_CHARS),
                );
                return None;
            }
            Some(serde_json::Value::String(s))
        }
        Some(Kind::NumberValue(n)) => number(n).or_else(|| {
            check.add(field, "must be a finite number");
            None
        }),
        Some(Kind::ListValue(list)) if list.values.len() > MAX_CORRECTION_VALUE_ITEMS => {
            check.add(
                field,
                format!("has more than {MAX_CORRECTION_VALUE_ITEMS} items"),
            );
            None
        }
        Some(Kind::StructValue(object)) if object.fields.len() > MAX_CORRECTION_VALUE_ITEMS => {
            check.add(
                field,
                format!("has more than {MAX_CORRECTION_VALUE_ITEMS} fields"),
            );
            None
        }
        Some(Kind::StructValue(object))
            if object
                .fields
                .keys()
                .any(|key| key.len() > MAX_CORRECTION_KEY_CHARS || !is_field_name(key)) =>
        {
            // The offending key is not echoed: the path names the value that holds it.
            check.add(
                field,
                format!(
                    "has a key that is not a proto field name (letters, digits, underscores, \
                     at most {MAX_CORRECTION_KEY_CHARS} characters)"
                ),
            );
            None
        }
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::with_capacity(list.values.len());
            let mut all_valid = true;
            for (index, item) in list.values.into_iter().enumerate() {
                match json_value(check, &format!("{field}[{index}]"), item, depth + 1) {
                    Some(item) => items.push(item),
                    None => all_valid = false,
                }
            }
            all_valid.then_some(serde_json::Value::Array(items))
        }
        Some(Kind::StructValue(object)) => {
            let mut map = serde_json::Map::new();
            let mut all_valid = true;
            for (key, item) in object.fields {
                match json_value(check, &format!("{field}.{key}"), item, depth + 1) {
                    Some(item) => {
                        map.insert(key, item);
                    }
                    None => all_valid = false,
                }
            }
            all_valid.then_some(serde_json::Value::Object(map))
        }
    }
}

fn number(n: f64) -> Option<serde_json::Value> {
    if !n.is_finite() {
        return None;
    }
    // 2^53: beyond it a double no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // In range and whole, so the conversion through a string is exact.
        if let Ok(whole) = format!("{n:.0}").parse::<i64>() {
            return Some(serde_json::Value::from(whole));
        }
    }
    serde_json::Number::from_f64(n).map(serde_json::Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use prost_types::Timestamp;
    use spineledger_domain::measures::{Contraindication, Finding};

    const CLINIC: &str = "6f1c2b9e-8a41-4c52-9b0e-1d2f3a4b5c6d";
    const EPISODE: &str = "0b7e3c1a-2d4f-4e6a-8b9c-0d1e2f3a4b5c";
    const PATIENT: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 4, 12, 0, 0).unwrap()
    }

    fn ts(time: DateTime<Utc>) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: time.timestamp(),
            nanos: 0,
        })
    }

    fn past() -> Option<Timestamp> {
        ts(now() - TimeDelta::hours(2))
    }

    fn header() -> Option<v1::CommandHeader> {
        Some(v1::CommandHeader {
            clinic_id: CLINIC.to_owned(),
            command_id: Uuid::new_v4().to_string(),
            expected_version: Some(3),
            correlation_id: String::new(),
            causation_id: Uuid::new_v4().to_string(),
            actor: "provider-17".to_owned(),
        })
    }

    fn newtons(value: f64) -> Option<v1::Force> {
        Some(v1::Force {
            value,
            unit: v1::ForceUnit::Newton as i32,
        })
    }

    fn evaluation() -> v1::RecordEvaluationRequest {
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
        }
    }

    fn session() -> v1::RecordSessionRequest {
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

    fn violations<T: std::fmt::Debug>(result: Result<T, FieldViolations>) -> FieldViolations {
        result.unwrap_err()
    }

    #[test]
    fn valid_register_patient_converts() {
        let valid = register_patient(
            v1::RegisterPatientRequest {
                header: header(),
                occurred_at: past(),
                patient_id: PATIENT.to_owned(),
                birth_year: Some(1974),
                sex: v1::Sex::Unspecified as i32,
            },
            now(),
        )
        .unwrap();
        assert_eq!(valid.command.birth_year, Some(1974));
        assert_eq!(valid.command.sex, None);
        assert_eq!(valid.header.expected_version, Some(3));
        assert_eq!(valid.header.correlation_id, None);
        assert!(valid.header.causation_id.is_some());
    }

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
    fn valid_reassessment_adjustment_discharge_and_correction_convert() {
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
        let (_, correction) = record_correction(
            v1::RecordCorrectionRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                corrected_event_id: Uuid::new_v4().to_string(),
                corrections: vec![v1::FieldCorrection {
                    field: "rmdq".to_owned(),
                    corrected_value: Some(prost_types::Value {
                        kind: Some(prost_types::value::Kind::NumberValue(45.0)),
                    }),
                }],
                reason: "transcription error".to_owned(),
            },
            now(),
        )
        .unwrap();
        let EpisodeCommand::RecordCorrection(command) = correction.command else {
            panic!("expected a correction");
        };
        assert_eq!(
            command.corrections[0].corrected_value,
            serde_json::json!(45)
        );
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
    fn correction_paths_and_values_are_checked() {
        let found = violations(record_correction(
            v1::RecordCorrectionRequest {
                header: header(),
                occurred_at: past(),
                episode_id: EPISODE.to_owned(),
                corrected_event_id: "nope".to_owned(),
                corrections: vec![
                    v1::FieldCorrection {
                        field: "Pain After!".to_owned(),
                        corrected_value: None,
                    },
                    v1::FieldCorrection {
                        field: "odi.sections[1".to_owned(),
                        corrected_value: Some(prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                        }),
                    },
                ],
                reason: String::new(),
            },
            now(),
        ));
        for field in [
            "corrected_event_id",
            "corrections[0].field",
            "corrections[0].corrected_value",
            "corrections[1].field",
            "corrections[1].corrected_value",
            "reason",
        ] {
            assert!(
                found.contains_field(field),
                "{field} not reported in {found}"
            );
        }
    }

    #[test]
    fn field_paths_are_dotted_proto_names() {
        assert!(is_field_path("pain_after"));
        assert!(is_field_path(
            "contraindications.CONTRAINDICATION_PREGNANCY"
        ));
        assert!(is_field_path("odi.score"));
        assert!(!is_field_path(""));
        assert!(!is_field_path("a..b"));
        assert!(!is_field_path("straight_leg_raise[0].angle_degrees"));
        assert!(!is_field_path("pain-after"));
    }

    #[test]
    fn whole_numbers_become_json_integers() {
        assert_eq!(number(3.0), Some(serde_json::json!(3)));
        assert_eq!(number(-2.0), Some(serde_json::json!(-2)));
        assert_eq!(number(2.5), Some(serde_json::json!(2.5)));
        assert_eq!(number(1e300), Some(serde_json::json!(1e300)));
        assert_eq!(number(f64::NAN), None);
    }
}
