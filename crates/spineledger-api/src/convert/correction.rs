//! Corrections in the proto's own terms: the request ([`record_correction`]: a field path
//! and a proto3 JSON value per correction, checked for shape) and, once the corrected
//! event's type is known, its resolution ([`resolve`]).
//!
//! Corrections in the proto's own terms. A client names the field it corrects by its path
//! in the request that recorded the event (`pain_back`, `peak_force`, `odi`,
//! `contraindications.CONTRAINDICATION_PREGNANCY`) and gives the value as the proto3 JSON
//! form of that field (`7`, `{"value": 40, "unit": "FORCE_UNIT_KILOGRAM_FORCE"}`,
//! `"TOLERANCE_DISCOMFORT"`). Which fields exist depends on the corrected event's type, so
//! requested corrections are resolved once the service has read the episode: each value
//! goes through the same checks as the original request field (same scale, unit, enum
//! names, list rules), and comes out in the stored payload form the domain applies.
//!
//! Correctable: every field the clinic entered, except the ids, `occurred_at` (the time
//! places the fact in the chart; record the fact anew instead) and what the service
//! derived (session numbers). Repeated fields are replaced whole. Paths use the proto's
//! snake_case names. A message field is given as a JSON object whose keys are the proto
//! field names (snake_case or lowerCamelCase, as proto3 JSON allows); an enum as its name
//! (or number); an optional field may be set to `null` to remove it.

use std::collections::BTreeSet;

use serde::Serialize;
use spineledger_domain::commands::RecordCorrection;
use spineledger_domain::events::{FieldCorrection, SessionRecorded};
use spineledger_domain::measures::{
    self as m, AdherencePercent, AgeYears, BodyWeightKg, Contraindication, Cycles, DurationMinutes,
    HoldSeconds, HomeCareInstruction, InitialSpanWeeks, IntervalDays, LumbarFlexionCm,
    MeasureError, Note, OverallHealth, PainNrs, PeriodDays, Pgic, RelaxSeconds, RolandMorris,
    SessionsPerWeek, ShortText, SleepQuality, SymptomWeeks, TimesPerWeek, TractionAngleDegrees,
};
use spineledger_domain::serde_json::{self, Value as Json};

use crate::convert::enums::{
    contraindication, discharge_reason, finding, frequency, home_care_kind, missed_reason,
    recommendation, sciatica, session_mode, severity, tolerance,
};
use crate::convert::{Check, MAX_GOALS, MAX_INITIAL_SESSIONS, MAX_LIST_ITEMS};
use crate::error::FieldViolations;
use crate::v1;

use super::episode::{episode_id, episode_request};
use super::{EpisodeRequest, MAX_CORRECTION_VALUE_DEPTH, unstorable_text};
use chrono::{DateTime, Utc};
use spineledger_domain::commands::EpisodeCommand;

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
/// field is decided once its type is known ([`resolve`]).
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

/// Resolves the requested corrections of `requested` (proto paths, proto3 JSON values)
/// against the type of the event they correct: the same correction in the stored form
/// (payload paths and values), or every field violation found.
///
/// # Errors
/// Field violations on `corrections[i].field` (a path the event type does not have, or
/// named twice) and `corrections[i].corrected_value` (a value the original field would not
/// take).
pub fn resolve(
    event_type: &str,
    requested: &RecordCorrection,
) -> Result<RecordCorrection, FieldViolations> {
    let mut check = Check::new();
    let mut seen = BTreeSet::new();
    let mut payload_paths = BTreeSet::new();
    let mut resolved = Vec::with_capacity(requested.corrections.len());
    for (index, correction) in requested.corrections.iter().enumerate() {
        let path = correction.field.as_str();
        let field_path = format!("corrections[{index}].field");
        let value_path = format!("corrections[{index}].corrected_value");
        if !seen.insert(path.to_owned()) {
            check.add(
                &field_path,
                "names a field already corrected in this request",
            );
            continue;
        }
        let value = correction.corrected_value.clone();
        let problems_before = check.problems();
        match resolve_field(&mut check, event_type, path, &value_path, value) {
            Field::Unknown => check.add(
                &field_path,
                format!(
                    "{path} is not a correctable field of {event_type}; correctable: {}",
                    correctable_fields(event_type).join(", ")
                ),
            ),
            Field::Invalid => {
                // Every refusal names its reason; this only guards against one that did not.
                if check.problems() == problems_before {
                    check.add(&value_path, "is not a valid value for this field");
                }
            }
            Field::Resolved(payload_path, _) if !payload_paths.insert(payload_path.clone()) => {
                check.add(
                    &field_path,
                    "corrects the same stored value as another field of this request \
                     (sessions_per_week, interval_days and cadence are one cadence)",
                );
            }
            Field::Resolved(payload_path, payload_value) => match ShortText::new(payload_path) {
                Ok(field) => resolved.push(FieldCorrection {
                    field,
                    corrected_value: payload_value,
                }),
                Err(error) => check.add(&field_path, error.to_string()),
            },
        }
    }
    let command = RecordCorrection {
        occurred_at: requested.occurred_at,
        corrected_event_id: requested.corrected_event_id,
        corrections: resolved,
        reason: requested.reason.clone(),
    };
    check.finish(Some(command))
}

/// What one requested field resolved to.
enum Field {
    /// The event type has no such correctable field.
    Unknown,
    /// The value was refused (violations recorded).
    Invalid,
    /// The payload path and value.
    Resolved(String, Json),
}

/// The correctable fields of each event type, by proto path (for error messages).
#[must_use]
pub fn correctable_fields(event_type: &str) -> Vec<&'static str> {
    match event_type {
        "EvaluationRecorded" => vec![
            "provider_id",
            "age_years",
            "pain_back",
            "pain_leg",
            "odi",
            "odi.score",
            "rmdq",
            "straight_leg_raise",
            "lumbar_flexion_cm",
            "sleep_quality",
            "posture_notes",
            "overall_health",
            "body_weight_kg",
            "diagnoses",
            "contraindications",
            "contraindications.<CONTRAINDICATION_…>",
            "sciatica",
            "symptom_duration_weeks",
        ],
        "TreatmentPlanStarted" => vec![
            "initial_sessions",
            "initial_span_weeks",
            "target_levels",
            "starting_force",
            "goals",
            "justification",
        ],
        "SessionRecorded" => {
            let mut fields = SessionRecorded::SETTINGS.to_vec();
            fields.extend([
                "pain_before",
                "pain_after",
                "tolerance",
                "adverse_event",
                "provider_id",
            ]);
            fields
        }
        "SessionMissed" => vec!["reason"],
        "OutcomeRecorded" => vec![
            "pain_back",
            "pain_leg",
            "odi",
            "odi.score",
            "rmdq",
            "straight_leg_raise",
            "lumbar_flexion_cm",
            "sleep_quality",
            "pgic",
            "sciatica",
        ],
        "HomeCareInstructed" => vec!["instructions"],
        "HomeCareAdherenceReported" => vec!["period_days", "adherence_percent"],
        "ReassessmentRecorded" => vec![
            "pain_back",
            "pain_leg",
            "odi",
            "odi.score",
            "rmdq",
            "recommendation",
            "notes",
        ],
        "TreatmentPlanAdjusted" => vec![
            "frequency",
            "sessions_per_week",
            "interval_days",
            "cadence",
            "reason",
        ],
        "EpisodeDischarged" => vec!["reason", "notes"],
        _ => Vec::new(),
    }
}

fn resolve_field(check: &mut Check, event_type: &str, path: &str, at: &str, v: Json) -> Field {
    if !correctable_fields(event_type).contains(&path) {
        return match path.strip_prefix("contraindications.") {
            Some(name) if event_type == "EvaluationRecorded" => screened_item(check, name, at, v),
            _ => Field::Unknown,
        };
    }
    let same = |value: Option<Json>| match value {
        Some(value) => Field::Resolved(path.to_owned(), value),
        None => Field::Invalid,
    };
    use v1 as p;
    match (event_type, path) {
        (_, "pain_back" | "pain_leg" | "pain_before" | "pain_after") => {
            same(int(check, at, v, PainNrs::try_from_i64))
        }
        (_, "provider_id") => same(text::<{ m::MAX_SHORT_TEXT_CHARS }>(check, at, v, false)),
        (_, "posture_notes" | "justification" | "notes") => {
            same(text::<{ m::MAX_NOTE_CHARS }>(check, at, v, true))
        }
        ("TreatmentPlanAdjusted", "reason") => {
            same(text::<{ m::MAX_NOTE_CHARS }>(check, at, v, true))
        }
        (_, "age_years") => same(int(check, at, v, AgeYears::try_from_i64)),
        (_, "rmdq") => same(optional(v, |v| {
            int(check, at, v, RolandMorris::try_from_i64)
        })),
        (_, "sleep_quality") => same(optional(v, |v| {
            int(check, at, v, SleepQuality::try_from_i64)
        })),
        ("EvaluationRecorded", "sciatica") => same(optional(v, |v| match v {
            Json::Bool(_) => Some(v),
            _ => {
                check.add(at, "must be true or false (or null: not recorded)");
                None
            }
        })),
        ("EvaluationRecorded", "symptom_duration_weeks") => same(optional(v, |v| {
            int(check, at, v, SymptomWeeks::try_from_i64)
        })),
        (_, "overall_health") => same(optional(v, |v| {
            int(check, at, v, OverallHealth::try_from_i64)
        })),
        (_, "pgic") => same(optional(v, |v| int(check, at, v, Pgic::try_from_i64))),
        (_, "lumbar_flexion_cm") => {
            same(optional(v, |v| float(check, at, v, LumbarFlexionCm::new)))
        }
        (_, "body_weight_kg") => same(optional(v, |v| float(check, at, v, BodyWeightKg::new))),
        ("EvaluationRecorded", "odi") => same(odi(check, at, v)),
        (_, "odi") => same(optional(v, |v| odi(check, at, v))),
        // The score alone: the index given directly, as the `score` of the oneof.
        (_, "odi.score") => match odi(check, at, serde_json::json!({ "score": v })) {
            Some(value) => Field::Resolved("odi".to_owned(), value),
            None => Field::Invalid,
        },
        (_, "straight_leg_raise") => same(
            list::<p::StraightLegRaise>(check, at, v, slr)
                .and_then(|tests| encode(check.straight_leg_raises(at, tests))),
        ),
        (_, "diagnoses") => {
            same(list(check, at, v, diagnosis).and_then(|items| encode(check.diagnoses(at, items))))
        }
        (_, "contraindications") => same(
            list(check, at, v, contraindication_finding)
                .and_then(|items| encode(check.screening(at, items))),
        ),
        (_, "initial_sessions") => same(initial_sessions(check, at, v)),
        (_, "initial_span_weeks") => same(int(check, at, v, InitialSpanWeeks::try_from_i64)),
        (_, "target_levels" | "levels") => same(
            list(check, at, v, |check, at, v| {
                enum_number(check, at, v, p::SpinalLevel::from_str_name)
            })
            .and_then(|levels| encode(check.levels(at, &levels))),
        ),
        (_, "starting_force" | "peak_force" | "rest_force") => same(force(check, at, v)),
        (_, "goals") => same(goals(check, at, v)),
        (_, "mode") => same(required_enum(
            check,
            at,
            v,
            p::SessionMode::from_str_name,
            session_mode::from_proto,
        )),
        (_, "hold_seconds") => same(int(check, at, v, HoldSeconds::try_from_i64)),
        (_, "relax_seconds") => same(int(check, at, v, RelaxSeconds::try_from_i64)),
        (_, "cycles") => same(int(check, at, v, Cycles::try_from_i64)),
        (_, "duration_minutes") => same(int(check, at, v, DurationMinutes::try_from_i64)),
        (_, "angle_degrees") => same(int(check, at, v, TractionAngleDegrees::try_from_i64)),
        (_, "tolerance") => same(required_enum(
            check,
            at,
            v,
            p::Tolerance::from_str_name,
            tolerance::from_proto,
        )),
        (_, "adverse_event") => same(optional(v, |v| adverse_event(check, at, v))),
        ("SessionMissed", "reason") => same(required_enum(
            check,
            at,
            v,
            p::MissedReason::from_str_name,
            missed_reason::from_proto,
        )),
        ("EpisodeDischarged", "reason") => same(required_enum(
            check,
            at,
            v,
            p::DischargeReason::from_str_name,
            discharge_reason::from_proto,
        )),
        // SCIATICA_SYMPTOMS_UNSPECIFIED (or null) is "not recorded", as in the request.
        (_, "sciatica") => same(optional(v, |v| {
            enum_number(check, at, v, p::SciaticaSymptoms::from_str_name)
                .and_then(|n| check.optional_enumeration(at, n, sciatica::from_proto))
                .map(|symptoms| encode(symptoms).unwrap_or(Json::Null))
        })),
        (_, "instructions") => same(instructions(check, at, v)),
        (_, "period_days") => same(int(check, at, v, PeriodDays::try_from_i64)),
        (_, "adherence_percent") => same(int(check, at, v, AdherencePercent::try_from_i64)),
        (_, "recommendation") => same(required_enum(
            check,
            at,
            v,
            p::Recommendation::from_str_name,
            recommendation::from_proto,
        )),
        (_, "frequency") => same(required_enum(
            check,
            at,
            v,
            p::Frequency::from_str_name,
            frequency::from_proto,
        )),
        (_, "sessions_per_week") => cadence(
            float(check, at, v, SessionsPerWeek::new)
                .map(|per_week| serde_json::json!({ "sessions_per_week": per_week })),
        ),
        (_, "interval_days") => cadence(
            int(check, at, v, IntervalDays::try_from_i64)
                .map(|days| serde_json::json!({ "interval_days": days })),
        ),
        (_, "cadence") => {
            if v.is_null() {
                cadence(Some(Json::String("none".to_owned())))
            } else {
                check.add(
                    at,
                    "may only be null (no cadence, for FREQUENCY_AS_NEEDED); correct sessions_per_week or interval_days to set one",
                );
                Field::Invalid
            }
        }
        _ => Field::Unknown,
    }
}

fn cadence(value: Option<Json>) -> Field {
    value.map_or(Field::Invalid, |value| {
        Field::Resolved("cadence".to_owned(), value)
    })
}

/// `contraindications.CONTRAINDICATION_PREGNANCY` with a finding name.
fn screened_item(check: &mut Check, name: &str, at: &str, v: Json) -> Field {
    let Some(item) = v1::Contraindication::from_str_name(name)
        .and_then(contraindication::from_proto)
        .map(Contraindication::as_str)
    else {
        return Field::Unknown;
    };
    match required_enum(
        check,
        at,
        v,
        v1::Finding::from_str_name,
        finding::from_proto,
    ) {
        Some(finding) => Field::Resolved(format!("contraindications.{item}"), finding),
        None => Field::Invalid,
    }
}

/// The stored JSON of a validated value.
fn encode<T: Serialize>(value: Option<T>) -> Option<Json> {
    value.and_then(|value| serde_json::to_value(value).ok())
}

/// `null` is "not recorded" for an optional field; anything else goes to `convert`.
fn optional(v: Json, convert: impl FnOnce(Json) -> Option<Json>) -> Option<Json> {
    if v.is_null() {
        Some(Json::Null)
    } else {
        convert(v)
    }
}

/// A whole number that fits `i32`, as the request field's type.
fn whole(check: &mut Check, at: &str, v: &Json) -> Option<i32> {
    let number = v
        .as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
    match number.and_then(|n| i32::try_from(n).ok()) {
        Some(n) => Some(n),
        None if v.is_number() => {
            check.add(at, "must be a whole number");
            None
        }
        None => {
            check.add(at, "must be a number");
            None
        }
    }
}

fn int<T: Serialize>(
    check: &mut Check,
    at: &str,
    v: Json,
    make: fn(i64) -> Result<T, MeasureError>,
) -> Option<Json> {
    let n = whole(check, at, &v)?;
    encode(check.scaled(at, n, make))
}

fn float<T: Serialize>(
    check: &mut Check,
    at: &str,
    v: Json,
    make: fn(f64) -> Result<T, MeasureError>,
) -> Option<Json> {
    let Some(n) = v.as_f64() else {
        check.add(at, "must be a number");
        return None;
    };
    encode(check.measure(at, make(n)))
}

fn string(check: &mut Check, at: &str, v: Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s),
        _ => {
            check.add(at, "must be a string");
            None
        }
    }
}

fn text<const MAX: usize>(check: &mut Check, at: &str, v: Json, optional: bool) -> Option<Json> {
    if optional && v.is_null() {
        return Some(Json::Null);
    }
    let s = string(check, at, v)?;
    if optional {
        encode(check.optional_text::<MAX>(at, Some(s)))
    } else {
        encode(check.text::<MAX>(at, s))
    }
}

/// An enum given by name (`TOLERANCE_GOOD`) or number, as proto3 JSON allows.
fn enum_number<P: Into<i32>>(
    check: &mut Check,
    at: &str,
    v: Json,
    from_name: fn(&str) -> Option<P>,
) -> Option<i32> {
    match &v {
        Json::String(name) => match from_name(name) {
            Some(value) => Some(value.into()),
            None => {
                check.add(at, "is not a value of the field's enum");
                None
            }
        },
        Json::Number(_) => whole(check, at, &v),
        _ => {
            check.add(at, "must be an enum value name");
            None
        }
    }
}

fn required_enum<P: Into<i32> + TryFrom<i32>, D: Serialize>(
    check: &mut Check,
    at: &str,
    v: Json,
    from_name: fn(&str) -> Option<P>,
    map: fn(P) -> Option<D>,
) -> Option<Json> {
    let n = enum_number(check, at, v, from_name)?;
    encode(check.enumeration(at, n, map))
}

/// A field of a JSON object by its proto name, snake_case or lowerCamelCase.
fn member(object: &serde_json::Map<String, Json>, name: &str) -> Option<Json> {
    if let Some(value) = object.get(name) {
        return Some(value.clone());
    }
    let mut camel = String::with_capacity(name.len());
    let mut upper = false;
    for ch in name.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            camel.extend(ch.to_uppercase());
            upper = false;
        } else {
            camel.push(ch);
        }
    }
    object.get(&camel).cloned()
}

fn object(check: &mut Check, at: &str, v: Json) -> Option<serde_json::Map<String, Json>> {
    match v {
        Json::Object(map) => Some(map),
        _ => {
            check.add(at, "must be an object with the message's fields");
            None
        }
    }
}

fn list<T>(
    check: &mut Check,
    at: &str,
    v: Json,
    item: impl Fn(&mut Check, &str, Json) -> Option<T>,
) -> Option<Vec<T>> {
    let Json::Array(items) = v else {
        check.add(at, "must be a list (repeated fields are replaced whole)");
        return None;
    };
    check.list_len(at, &items, 0, MAX_LIST_ITEMS)?;
    check.each(at, items, |check, path, raw| item(check, path, raw))
}

fn force(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    let object = object(check, at, v)?;
    let value = match member(&object, "value") {
        Some(value) => value.as_f64().or_else(|| {
            check.add(&format!("{at}.value"), "must be a number");
            None
        })?,
        None => 0.0,
    };
    let unit = match member(&object, "unit") {
        Some(unit) => enum_number(
            check,
            &format!("{at}.unit"),
            unit,
            v1::ForceUnit::from_str_name,
        )?,
        None => 0,
    };
    encode(check.force(at, Some(v1::Force { value, unit })))
}

fn odi(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    use v1::oswestry_disability_index::Input;
    let object = object(check, at, v)?;
    let input = match (member(&object, "score"), member(&object, "sections")) {
        (Some(score), None) => match score.as_f64() {
            Some(score) => Some(Input::Score(score)),
            None => {
                check.add(&format!("{at}.score"), "must be a number");
                return None;
            }
        },
        (None, Some(sections)) => {
            let sections_at = format!("{at}.sections");
            let sections = object_member(check, &sections_at, sections, "answers")?;
            let answers = list(
                check,
                &format!("{sections_at}.answers"),
                sections,
                |check, at, v| whole(check, at, &v),
            )?;
            Some(Input::Sections(v1::OdiSections { answers }))
        }
        _ => None,
    };
    encode(check.odi(at, v1::OswestryDisabilityIndex { input }))
}

/// The member `name` of the object `v` (absent: an empty list).
fn object_member(check: &mut Check, at: &str, v: Json, name: &str) -> Option<Json> {
    let object = object(check, at, v)?;
    Some(member(&object, name).unwrap_or(Json::Array(Vec::new())))
}

fn slr(check: &mut Check, at: &str, v: Json) -> Option<v1::StraightLegRaise> {
    let object = object(check, at, v)?;
    let side = match member(&object, "side") {
        Some(side) => enum_number(check, &format!("{at}.side"), side, v1::Side::from_str_name)?,
        None => 0,
    };
    let angle_degrees = match member(&object, "angle_degrees") {
        Some(angle) => whole(check, &format!("{at}.angle_degrees"), &angle)?,
        None => 0,
    };
    let positive = match member(&object, "positive") {
        None => false,
        Some(Json::Bool(positive)) => positive,
        Some(_) => {
            check.add(&format!("{at}.positive"), "must be true or false");
            return None;
        }
    };
    Some(v1::StraightLegRaise {
        side,
        angle_degrees,
        positive,
    })
}

fn diagnosis(check: &mut Check, at: &str, v: Json) -> Option<v1::Diagnosis> {
    let object = object(check, at, v)?;
    let system = match member(&object, "system") {
        Some(system) => enum_number(
            check,
            &format!("{at}.system"),
            system,
            v1::CodeSystem::from_str_name,
        )?,
        None => 0,
    };
    let code = match member(&object, "code") {
        Some(code) => string(check, &format!("{at}.code"), code)?,
        None => String::new(),
    };
    Some(v1::Diagnosis { system, code })
}

fn contraindication_finding(
    check: &mut Check,
    at: &str,
    v: Json,
) -> Option<v1::ContraindicationFinding> {
    let object = object(check, at, v)?;
    let contraindication = match member(&object, "contraindication") {
        Some(item) => enum_number(
            check,
            &format!("{at}.contraindication"),
            item,
            v1::Contraindication::from_str_name,
        )?,
        None => 0,
    };
    let finding = match member(&object, "finding") {
        Some(finding) => enum_number(
            check,
            &format!("{at}.finding"),
            finding,
            v1::Finding::from_str_name,
        )?,
        None => 0,
    };
    Some(v1::ContraindicationFinding {
        contraindication,
        finding,
    })
}

fn initial_sessions(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    let n = whole(check, at, &v)?;
    match u8::try_from(n) {
        Ok(sessions) if (1..=MAX_INITIAL_SESSIONS).contains(&n) => Some(Json::from(sessions)),
        _ => {
            check.add(at, format!("{n} is outside 1-{MAX_INITIAL_SESSIONS}"));
            None
        }
    }
}

fn goals(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    let Json::Array(items) = v else {
        check.add(at, "must be a list (repeated fields are replaced whole)");
        return None;
    };
    check.list_len(at, &items, 0, MAX_GOALS)?;
    let goals = check.each(at, items, |check, path, raw| {
        let goal = string(check, path, raw)?;
        check.text::<{ m::MAX_SHORT_TEXT_CHARS }>(path, goal)
    })?;
    encode(Some(goals))
}

fn adverse_event(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    let object = object(check, at, v)?;
    let severity = match member(&object, "severity") {
        Some(severity) => enum_number(
            check,
            &format!("{at}.severity"),
            severity,
            v1::Severity::from_str_name,
        )?,
        None => 0,
    };
    let description = match member(&object, "description") {
        Some(description) => string(check, &format!("{at}.description"), description)?,
        None => String::new(),
    };
    let severity = check.enumeration(&format!("{at}.severity"), severity, severity::from_proto);
    let description: Option<Note> = check.text(&format!("{at}.description"), description);
    encode(
        severity
            .zip(description)
            .map(|(severity, description)| m::AdverseEvent {
                severity,
                description,
            }),
    )
}

fn instructions(check: &mut Check, at: &str, v: Json) -> Option<Json> {
    let Json::Array(items) = v else {
        check.add(at, "must be a list (repeated fields are replaced whole)");
        return None;
    };
    check.list_len(at, &items, 1, MAX_LIST_ITEMS)?;
    let instructions = check.each(at, items, |check, path, raw| {
        let object = object(check, path, raw)?;
        let kind = match member(&object, "kind") {
            Some(kind) => enum_number(
                check,
                &format!("{path}.kind"),
                kind,
                v1::HomeCareKind::from_str_name,
            )?,
            None => 0,
        };
        let description = match member(&object, "description") {
            Some(description) => string(check, &format!("{path}.description"), description)?,
            None => String::new(),
        };
        let times = match member(&object, "times_per_week") {
            None | Some(Json::Null) => None,
            Some(times) => Some(whole(check, &format!("{path}.times_per_week"), &times)?),
        };
        let kind = check.enumeration(&format!("{path}.kind"), kind, home_care_kind::from_proto);
        let description = check.text(&format!("{path}.description"), description);
        let times = check.optional_scaled(
            &format!("{path}.times_per_week"),
            times,
            TimesPerWeek::try_from_i64,
        );
        Some(HomeCareInstruction {
            kind: kind?,
            description: description?,
            times_per_week: times?,
        })
    })?;
    encode(Some(instructions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_support::*;
    use uuid::Uuid;

    #[test]
    fn valid_correction_converts_whole_numbers_to_integers() {
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
