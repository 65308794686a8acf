//! The violation accumulator and the field rules every request shares.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};
use spineledger_domain::ids::ClinicId;
use spineledger_domain::measures::{
    self as m, ContraindicationScreening, Diagnosis, Force, MeasureError, OdiSections,
    OswestryIndex, ShortText, SlrAngleDegrees, StraightLegRaise, Text,
};
use uuid::Uuid;

use super::enums::{code_system, contraindication, finding, force_unit, side, spinal_level};
use super::*;
use crate::error::FieldViolations;
use crate::v1;

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
    pub(crate) fn uuid(&mut self, field: &str, raw: &str) -> Option<Uuid> {
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

    pub(crate) fn optional_uuid(&mut self, field: &str, raw: &str) -> Option<Option<Uuid>> {
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

    pub(crate) fn optional_float<T>(
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
    pub(crate) fn storable(&mut self, field: &str, raw: &str) -> Option<()> {
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
    pub(crate) fn timestamp(
        &mut self,
        field: &str,
        raw: prost_types::Timestamp,
    ) -> Option<DateTime<Utc>> {
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
    pub(crate) fn optional_timestamp(
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
    pub(crate) fn occurred_at(
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

    pub(crate) fn header(&mut self, raw: Option<v1::CommandHeader>) -> Option<ValidHeader> {
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

    pub(crate) fn required_odi(
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

    pub(crate) fn optional_odi(
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
