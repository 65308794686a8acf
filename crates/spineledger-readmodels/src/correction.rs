//! Reading the score fields of a `RecordCorrected`. Only the scores the read models fold
//! (back and leg pain, pre-session pain, ODI) are understood here; a value that is not on
//! its scale is not a correction the views can apply, so it is ignored (and only counted).

use spineledger_domain::events::FieldCorrection;
use spineledger_domain::measures::{OswestryIndex, PainNrs};

/// A corrected score, with its new value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScoreCorrection {
    /// `pain_back`, NRS 0-10.
    PainBack(u8),
    /// `pain_leg`, NRS 0-10.
    PainLeg(u8),
    /// `pain_before` of a session, NRS 0-10.
    PainBefore(u8),
    /// `odi` (or `odi.score`): a score 0-100, or `None` when the correction removes it.
    Odi(Option<f64>),
}

impl ScoreCorrection {
    /// The score correction `field` makes, if it corrects a score with a valid value.
    pub(crate) fn parse(field: &FieldCorrection) -> Option<Self> {
        let value = &field.corrected_value;
        match field.field.as_str() {
            "pain_back" => pain(value).map(Self::PainBack),
            "pain_leg" => pain(value).map(Self::PainLeg),
            "pain_before" => pain(value).map(Self::PainBefore),
            "odi" => odi(value).map(Self::Odi),
            "odi.score" => odi_score(value).map(|score| Self::Odi(Some(score))),
            _ => None,
        }
    }
}

fn pain(value: &serde_json::Value) -> Option<u8> {
    serde_json::from_value::<PainNrs>(value.clone())
        .ok()
        .map(PainNrs::value)
}

/// An ODI given as a bare score, in its payload form (`{"score": …, "sections": …}`), or
/// as `null` (no ODI).
fn odi(value: &serde_json::Value) -> Option<Option<f64>> {
    match value {
        serde_json::Value::Null => Some(None),
        serde_json::Value::Number(_) => odi_score(value).map(Some),
        _ => serde_json::from_value::<OswestryIndex>(value.clone())
            .ok()
            .map(|index| Some(index.score())),
    }
}

fn odi_score(value: &serde_json::Value) -> Option<f64> {
    value
        .as_f64()
        .and_then(|score| OswestryIndex::from_score(score).ok())
        .map(|index| index.score())
}
