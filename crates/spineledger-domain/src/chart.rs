//! The episode as a clinician's chart reads it: every fact with its corrections applied,
//! placed by when it happened in the clinic rather than when it was entered.
//!
//! Clinics enter data late (a session recorded on Friday for Tuesday) and fix mistakes
//! with corrections, so the order of the log is not the order of care. Everything that
//! folds an episode — the domain's rules and every read model — goes through [`Chart`], so
//! the two questions "which value is true" and "what came first" have one answer.
//!
//! - **Clinical order**: by `occurred_at`; ties keep the log order (stream version).
//! - **Corrections** replace the values of the event they name, in log order; a later
//!   correction of the same field wins. A correction that does not fit the corrected event
//!   (only possible for events written before corrections were validated) changes nothing
//!   and is kept aside as unapplied, never silently dropped from the count.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::events::{EpisodeEvent, FieldCorrection, RecordCorrected, SCHEMA_VERSION};

/// Top-level payload fields no correction may change: identities, the time of the fact
/// (which places it in the chart) and what the domain derived when it was recorded.
pub const FIXED_PAYLOAD_FIELDS: [&str; 9] = [
    "occurred_at",
    "episode_id",
    "patient_id",
    "session_number",
    "phase_session_number",
    "after_session",
    "sessions_done_at_miss",
    "corrected_event_id",
    "corrected_event_type",
];

/// Fields added to an event type after its payloads were first written, and left out of
/// a payload when not recorded: a correction may give them a value although the payload
/// has no key for them.
pub const LATER_OPTIONAL_FIELDS: [(&str, &str); 2] = [
    ("EvaluationRecorded", "sciatica"),
    ("EvaluationRecorded", "symptom_duration_weeks"),
];

/// Why a correction does not fit the event it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionMisfit {
    /// The path does not name a field of the event, or names one that may not change.
    #[error("{path} is not a correctable field of {event_type}")]
    UnknownField {
        /// The payload path.
        path: String,
        /// The corrected event's type.
        event_type: &'static str,
    },
    /// The corrected event would not be a valid event (a value off its scale, a broken
    /// invariant between fields).
    #[error("the corrected {event_type} is not valid: {problem}")]
    Invalid {
        /// The corrected event's type.
        event_type: &'static str,
        /// What is wrong, without values.
        problem: String,
    },
}

impl EpisodeEvent {
    /// This event with `corrections` applied (payload paths and payload values), validated
    /// as the original was: every value decoded into its measure type, the invariants
    /// between fields checked.
    ///
    /// # Errors
    /// A [`CorrectionMisfit`] for a path that is not a correctable field or a result that is
    /// not a valid event.
    pub fn corrected(&self, corrections: &[FieldCorrection]) -> Result<Self, CorrectionMisfit> {
        let event_type = self.event_type();
        if matches!(self, Self::RecordCorrected(_)) {
            return Err(CorrectionMisfit::UnknownField {
                path: String::new(),
                event_type,
            });
        }
        let mut payload = self.to_payload();
        for correction in corrections {
            let path = correction.field.as_str();
            let top = path.split(['.', '[']).next().unwrap_or_default();
            if top == path
                && LATER_OPTIONAL_FIELDS.contains(&(event_type, top))
                && let Some(object) = payload.as_object_mut()
            {
                object.entry(top).or_insert(serde_json::Value::Null);
            }
            let known = payload.get(top).is_some() && !FIXED_PAYLOAD_FIELDS.contains(&top);
            if !known || !replace_at_path(&mut payload, path, correction.corrected_value.clone()) {
                return Err(CorrectionMisfit::UnknownField {
                    path: path.to_owned(),
                    event_type,
                });
            }
        }
        let corrected =
            Self::from_payload(event_type, SCHEMA_VERSION, payload).map_err(|error| {
                CorrectionMisfit::Invalid {
                    event_type,
                    problem: serde_problem(&error),
                }
            })?;
        if let Some(problem) = corrected.shape_problem() {
            return Err(CorrectionMisfit::Invalid {
                event_type,
                problem: problem.to_owned(),
            });
        }
        Ok(corrected)
    }
}

/// What does not fit, without the decoder's detail: that detail can quote the offending
/// value, which may be clinical data. (Values reaching the domain through the API are
/// validated field by field before; this only describes other callers' mistakes.)
fn serde_problem(error: &crate::events::DecodeError) -> String {
    error.to_string()
}

/// Replaces the value at a dotted path (`a.b`, `a[2].c`) of existing objects and arrays.
/// Only existing keys are replaced, except that the last segment may add a key to an
/// object whose other keys are optional fields (the decoder then judges it). False when
/// the path does not lead anywhere.
fn replace_at_path(root: &mut serde_json::Value, path: &str, value: serde_json::Value) -> bool {
    let normalised = path.replace('[', ".").replace(']', "");
    let segments: Vec<&str> = normalised.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = root;
    for segment in parents {
        let next = match current {
            serde_json::Value::Object(map) => map.get_mut(*segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            }
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        current = next;
    }
    match current {
        serde_json::Value::Object(map) if !last.is_empty() => {
            map.insert((*last).to_owned(), value);
            true
        }
        serde_json::Value::Array(items) => {
            match last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                Some(slot) => {
                    *slot = value;
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}

/// One fact of the chart: the event as corrected, where it sits in the log, and which of
/// its fields corrections changed (payload paths).
#[derive(Debug, Clone, PartialEq)]
pub struct ChartEntry {
    /// The event's id.
    pub event_id: Uuid,
    /// Its version in the stream (log order).
    pub version: u64,
    /// The event with every applicable correction applied.
    pub event: EpisodeEvent,
    /// Payload paths that corrections changed.
    pub corrected_fields: BTreeSet<String>,
}

impl ChartEntry {
    /// When the fact happened in the clinic.
    #[must_use]
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        self.event.occurred_at()
    }

    /// Whether a correction changed the field `name` (a top-level payload field) or
    /// anything inside it.
    #[must_use]
    pub fn is_corrected(&self, name: &str) -> bool {
        self.corrected_fields.iter().any(|path| {
            path == name
                || path
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    /// The clinical sort key: when it happened, then log order.
    #[must_use]
    pub const fn sort_key(&self) -> (DateTime<Utc>, u64) {
        (self.event.occurred_at(), self.version)
    }
}

/// A correction as recorded, with whether it could be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartCorrection {
    /// The correction event's id.
    pub event_id: Uuid,
    /// Its version in the stream.
    pub version: u64,
    /// The correction.
    pub correction: RecordCorrected,
    /// Whether it was applied to the event it names.
    pub applied: bool,
}

/// An episode's facts in clinical order, corrections applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    entries: Vec<ChartEntry>,
    corrections: Vec<ChartCorrection>,
}

impl Chart {
    /// The chart of an episode's events, given with their ids and stream versions in any
    /// order: the result depends only on the set of events.
    pub fn new(events: impl IntoIterator<Item = (Uuid, u64, EpisodeEvent)>) -> Self {
        let mut entries = Vec::new();
        let mut corrections = Vec::new();
        for (event_id, version, event) in events {
            match event {
                EpisodeEvent::RecordCorrected(correction) => corrections.push(ChartCorrection {
                    event_id,
                    version,
                    correction,
                    applied: false,
                }),
                event => entries.push(ChartEntry {
                    event_id,
                    version,
                    event,
                    corrected_fields: BTreeSet::new(),
                }),
            }
        }
        corrections.sort_by_key(|c| (c.version, c.event_id));
        for correction in &mut corrections {
            let target = correction.correction.corrected_event_id;
            let Some(entry) = entries.iter_mut().find(|entry| entry.event_id == target) else {
                continue;
            };
            if let Ok(corrected) = entry.event.corrected(&correction.correction.corrections) {
                entry.event = corrected;
                entry.corrected_fields.extend(
                    correction
                        .correction
                        .corrections
                        .iter()
                        .map(|field| field.field.as_str().to_owned()),
                );
                correction.applied = true;
            }
        }
        entries.sort_by_key(|entry| (entry.sort_key(), entry.event_id));
        Self {
            entries,
            corrections,
        }
    }

    /// The facts (everything but corrections) in clinical order.
    #[must_use]
    pub fn entries(&self) -> &[ChartEntry] {
        &self.entries
    }

    /// The corrections in log order.
    #[must_use]
    pub fn corrections(&self) -> &[ChartCorrection] {
        &self.corrections
    }

    /// The fact with this id, as corrected.
    #[must_use]
    pub fn entry(&self, event_id: Uuid) -> Option<&ChartEntry> {
        self.entries.iter().find(|entry| entry.event_id == event_id)
    }
}
