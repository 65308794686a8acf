//! Validated clinical measures and vocabulary. Every value type has a fallible constructor
//! that enforces its scale, and its serde form re-validates on the
//! way in, so a payload read back from the log can never smuggle in an out-of-scale value.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value outside its scale or in the wrong format. The description names the measure and
/// the expected scale, never the patient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{measure}: {problem}")]
pub struct MeasureError {
    /// The measure that was rejected, e.g. "pain (NRS)".
    pub measure: &'static str,
    /// What is wrong with it, in words a clinician understands.
    pub problem: String,
}

impl MeasureError {
    /// A rejection of `measure` because of `problem`.
    pub fn new(measure: &'static str, problem: impl Into<String>) -> Self {
        Self {
            measure,
            problem: problem.into(),
        }
    }
}

macro_rules! bounded_int {
    ($(#[$meta:meta])* $name:ident, $ty:ty, $min:expr, $max:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($ty);

        impl $name {
            /// The lowest value on the scale.
            pub const MIN: $ty = $min;
            /// The highest value on the scale.
            pub const MAX: $ty = $max;

            /// The value, if it lies on the scale.
            ///
            /// # Errors
            /// A [`MeasureError`] when the value is outside the scale.
            pub fn new(value: $ty) -> Result<Self, MeasureError> {
                if (Self::MIN..=Self::MAX).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(Self::out_of_range(value))
                }
            }

            /// The value from a wide integer (as the wire carries it), if it lies on the scale.
            ///
            /// # Errors
            /// A [`MeasureError`] when the value is outside the scale.
            pub fn try_from_i64(value: i64) -> Result<Self, MeasureError> {
                <$ty>::try_from(value)
                    .map_err(|_| Self::out_of_range(value))
                    .and_then(Self::new)
            }

            fn out_of_range(value: impl fmt::Display) -> MeasureError {
                MeasureError::new(
                    $what,
                    format!("{value} is outside the scale {}-{}", Self::MIN, Self::MAX),
                )
            }

            /// The value on its scale.
            #[must_use]
            pub const fn value(self) -> $ty {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <$ty>::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! bounded_float {
    ($(#[$meta:meta])* $name:ident, $min:expr, $min_inclusive:expr, $max:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// The bound below (inclusive or exclusive, see the type's doc).
            pub const MIN: f64 = $min;
            /// The highest value on the scale (inclusive).
            pub const MAX: f64 = $max;

            /// The value, if finite and on the scale.
            ///
            /// # Errors
            /// A [`MeasureError`] when the value is NaN, infinite or outside the scale.
            pub fn new(value: f64) -> Result<Self, MeasureError> {
                check_float($what, value, Self::MIN, $min_inclusive, Self::MAX).map(Self)
            }

            /// The value on its scale.
            #[must_use]
            pub const fn value(self) -> f64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = f64::deserialize(deserializer)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_float(
    what: &'static str,
    value: f64,
    min: f64,
    min_inclusive: bool,
    max: f64,
) -> Result<f64, MeasureError> {
    if !value.is_finite() {
        return Err(MeasureError::new(what, "must be a finite number"));
    }
    let above_min = if min_inclusive {
        value >= min
    } else {
        value > min
    };
    if above_min && value <= max {
        Ok(value)
    } else {
        let open = if min_inclusive { "[" } else { "(" };
        Err(MeasureError::new(
            what,
            format!("{value} is outside the scale {open}{min}, {max}]"),
        ))
    }
}

bounded_int!(
    /// Pain on the numeric rating scale, 0 (none) to 10 (worst imaginable). LOINC 72514-3.
    PainNrs, u8, 0, 10, "pain (NRS 0-10)"
);
bounded_int!(
    /// Roland-Morris Disability Questionnaire score, 0-24 (higher is more disabled).
    RolandMorris, u8, 0, 24, "Roland-Morris score (0-24)"
);
bounded_int!(
    /// Sleep quality rating, 0 (worst) to 10 (best).
    SleepQuality, u8, 0, 10, "sleep quality (0-10)"
);
bounded_int!(
    /// Patient Global Impression of Change, 1 (very much improved) to 7 (very much worse).
    Pgic, u8, 1, 7, "global impression of change (PGIC 1-7)"
);
bounded_int!(
    /// Self-rated overall health, 0 (worst) to 10 (best).
    OverallHealth, u8, 0, 10, "overall health (0-10)"
);
bounded_int!(
    /// How long the current symptoms have lasted at evaluation, in whole weeks since their
    /// onset, 0-5200 (a hundred years). Statistics band it by chronicity.
    SymptomWeeks, u16, 0, 5200, "symptom duration (weeks, 0-5200)"
);
bounded_int!(
    /// Age in whole years at evaluation, kept so statistics survive personal-data erasure.
    AgeYears, u8, 0, 120, "age (years, 0-120)"
);
bounded_int!(
    /// Straight leg raise angle in degrees, 0-90.
    SlrAngleDegrees, u8, 0, 90, "straight leg raise angle (degrees, 0-90)"
);
bounded_int!(
    /// The span of the initial phase in weeks, 1-12.
    InitialSpanWeeks, u8, 1, 12, "initial phase span (weeks, 1-12)"
);
bounded_int!(
    /// Session duration in minutes, 1-60.
    DurationMinutes, u8, 1, 60, "session duration (minutes, 1-60)"
);
bounded_int!(
    /// Traction hold time in seconds, 0-600.
    HoldSeconds, u16, 0, 600, "hold time (seconds, 0-600)"
);
bounded_int!(
    /// Traction relax time in seconds, 0-600.
    RelaxSeconds, u16, 0, 600, "relax time (seconds, 0-600)"
);
bounded_int!(
    /// Number of hold/relax cycles in a session, 0-200 (0 for static traction).
    Cycles, u16, 0, 200, "cycles (0-200)"
);
bounded_int!(
    /// Traction angle in degrees, 0-45.
    TractionAngleDegrees, u8, 0, 45, "traction angle (degrees, 0-45)"
);
bounded_int!(
    /// Home-care adherence in percent of the instructed activity done, 0-100.
    AdherencePercent, u8, 0, 100, "adherence (percent, 0-100)"
);
bounded_int!(
    /// The period an adherence report covers, in days, 1-90.
    PeriodDays, u8, 1, 90, "adherence period (days, 1-90)"
);
bounded_int!(
    /// How often a home-care instruction is to be done, times per week, 1-50.
    TimesPerWeek, u8, 1, 50, "times per week (1-50)"
);
bounded_int!(
    /// Days between sessions in a personalised frequency, 1-365.
    IntervalDays, u16, 1, 365, "interval (days, 1-365)"
);

bounded_float!(
    /// Lumbar flexion (modified Schober) excursion in centimetres, 0-15 inclusive.
    LumbarFlexionCm, 0.0, true, 15.0, "lumbar flexion (cm, 0-15)"
);
bounded_float!(
    /// Body weight in kilograms, 20-350 inclusive.
    BodyWeightKg, 20.0, true, 350.0, "body weight (kg, 20-350)"
);
bounded_float!(
    /// Sessions per week in a personalised frequency: more than 0, at most 7.
    SessionsPerWeek, 0.0, false, 7.0, "sessions per week (0 < x <= 7)"
);

impl BodyWeightKg {
    /// The weight as a force in newtons (standard gravity).
    #[must_use]
    pub fn weight_newtons(self) -> f64 {
        self.0 * NEWTONS_PER_KILOGRAM_FORCE
    }
}

/// Maximum length of notes, justifications, descriptions and reasons, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
/// Maximum length of short texts (goal items, provider ids, field paths), in characters.
pub const MAX_SHORT_TEXT_CHARS: usize = 200;

/// Free text of at most `MAX` characters (Unicode scalar values).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<const MAX: usize>(String);

/// A note, justification, description or reason (at most [`MAX_NOTE_CHARS`]).
pub type Note = Text<MAX_NOTE_CHARS>;
/// A short text: a goal item, a provider id (at most [`MAX_SHORT_TEXT_CHARS`]).
pub type ShortText = Text<MAX_SHORT_TEXT_CHARS>;

impl<const MAX: usize> Text<MAX> {
    /// The text, if it is not longer than `MAX` characters.
    ///
    /// # Errors
    /// A [`MeasureError`] when the text is too long.
    pub fn new(text: impl Into<String>) -> Result<Self, MeasureError> {
        let text = text.into();
        let chars = text.chars().count();
        if chars > MAX {
            return Err(MeasureError::new(
                "text",
                format!("{chars} characters is longer than the limit of {MAX}"),
            ));
        }
        Ok(Self(text))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the text is empty or only whitespace.
    #[must_use]
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Oswestry Disability Index

/// Number of sections in the ODI questionnaire.
pub const ODI_SECTIONS: usize = 10;
/// Minimum number of answered sections for a valid index (ODI convention).
pub const ODI_MIN_ANSWERED: usize = 8;
/// Highest score of one ODI section.
pub const ODI_MAX_SECTION_SCORE: u8 = 5;

/// Answers to the ten ODI sections, each 0-5 or not answered.
pub type OdiSections = [Option<u8>; ODI_SECTIONS];

/// The Oswestry Disability Index, 0-100 %. Either computed from the ten section answers
/// (index = sum / (5 x answered) x 100, rounded to one decimal, at least 8 answered; the
/// sections are kept) or given directly as a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OswestryRepr", into = "OswestryRepr")]
pub struct OswestryIndex {
    score: f64,
    sections: Option<OdiSections>,
}

#[derive(Serialize, Deserialize)]
struct OswestryRepr {
    score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sections: Option<OdiSections>,
}

impl OswestryIndex {
    /// The index from section answers.
    ///
    /// # Errors
    /// A [`MeasureError`] when an answer is above 5 or fewer than 8 sections are answered.
    pub fn from_sections(sections: OdiSections) -> Result<Self, MeasureError> {
        let mut sum: u32 = 0;
        let mut answered: u32 = 0;
        for (index, answer) in sections.iter().enumerate() {
            if let Some(value) = answer {
                if *value > ODI_MAX_SECTION_SCORE {
                    return Err(MeasureError::new(
                        "Oswestry section",
                        format!("section {} answer {value} is outside 0-5", index + 1),
                    ));
                }
                sum += u32::from(*value);
                answered += 1;
            }
        }
        if (answered as usize) < ODI_MIN_ANSWERED {
            return Err(MeasureError::new(
                "Oswestry Disability Index",
                format!("{answered} sections answered, at least {ODI_MIN_ANSWERED} are needed"),
            ));
        }
        let raw = f64::from(sum) / (5.0 * f64::from(answered)) * 100.0;
        let score = (raw * 10.0).round() / 10.0;
        Ok(Self {
            score,
            sections: Some(sections),
        })
    }

    /// The index given directly as a score, 0-100.
    ///
    /// # Errors
    /// A [`MeasureError`] when the score is not finite or outside 0-100.
    pub fn from_score(score: f64) -> Result<Self, MeasureError> {
        let score = check_float("Oswestry Disability Index (0-100)", score, 0.0, true, 100.0)?;
        Ok(Self {
            score,
            sections: None,
        })
    }

    /// The index, 0-100 %.
    #[must_use]
    pub const fn score(&self) -> f64 {
        self.score
    }

    /// The section answers, when the index was computed from them.
    #[must_use]
    pub const fn sections(&self) -> Option<&OdiSections> {
        self.sections.as_ref()
    }
}

impl TryFrom<OswestryRepr> for OswestryIndex {
    type Error = MeasureError;

    fn try_from(repr: OswestryRepr) -> Result<Self, Self::Error> {
        match repr.sections {
            None => Self::from_score(repr.score),
            Some(sections) => {
                let index = Self::from_sections(sections)?;
                if (index.score - repr.score).abs() > 0.05 {
                    return Err(MeasureError::new(
                        "Oswestry Disability Index",
                        "the stored score does not match the section answers",
                    ));
                }
                Ok(index)
            }
        }
    }
}

impl From<OswestryIndex> for OswestryRepr {
    fn from(index: OswestryIndex) -> Self {
        Self {
            score: index.score,
            sections: index.sections,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Examination

/// A side of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Left.
    Left,
    /// Right.
    Right,
}

/// A straight leg raise test: side, angle reached and whether it reproduced radiating pain
/// below the knee (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StraightLegRaise {
    /// The leg tested.
    pub side: Side,
    /// Angle reached, degrees 0-90.
    pub angle_degrees: SlrAngleDegrees,
    /// Radiating pain below the knee reproduced.
    pub positive: bool,
}

/// A lumbar or sacral spinal level that traction targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpinalLevel {
    /// First lumbar vertebra.
    L1,
    /// Second lumbar vertebra.
    L2,
    /// Third lumbar vertebra.
    L3,
    /// Fourth lumbar vertebra.
    L4,
    /// Fifth lumbar vertebra.
    L5,
    /// First sacral vertebra.
    S1,
}

/// The coding system of a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeSystem {
    /// ICD-10, e.g. M51.2.
    Icd10,
    /// SNOMED CT concept id, e.g. 279039007.
    SnomedCt,
}

/// A coded diagnosis whose code has the format of its system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "DiagnosisRepr", into = "DiagnosisRepr")]
pub struct Diagnosis {
    system: CodeSystem,
    code: String,
}

#[derive(Serialize, Deserialize)]
struct DiagnosisRepr {
    system: CodeSystem,
    code: String,
}

impl Diagnosis {
    /// The diagnosis, if `code` is well formed for `system`. ICD-10 codes are taken in upper
    /// case: a letter, two digits, then optionally a dot and 1-4 letters or digits. SNOMED CT
    /// ids are 6-18 digits with no leading zero and a valid Verhoeff check digit.
    ///
    /// # Errors
    /// A [`MeasureError`] when the code is malformed.
    pub fn new(system: CodeSystem, code: &str) -> Result<Self, MeasureError> {
        let code = code.trim().to_ascii_uppercase();
        let valid = match system {
            CodeSystem::Icd10 => is_icd10(&code),
            CodeSystem::SnomedCt => is_snomed_ct(&code),
        };
        if !valid {
            let expected = match system {
                CodeSystem::Icd10 => {
                    "ICD-10 code must be a letter, two digits and optionally '.' and 1-4 letters or digits (e.g. M51.2)"
                }
                CodeSystem::SnomedCt => {
                    "SNOMED CT id must be 6-18 digits with a valid check digit (e.g. 279039007)"
                }
            };
            return Err(MeasureError::new("diagnosis code", expected));
        }
        Ok(Self { system, code })
    }

    /// The coding system.
    #[must_use]
    pub const fn system(&self) -> CodeSystem {
        self.system
    }

    /// The code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }
}

impl TryFrom<DiagnosisRepr> for Diagnosis {
    type Error = MeasureError;

    fn try_from(repr: DiagnosisRepr) -> Result<Self, Self::Error> {
        Self::new(repr.system, &repr.code)
    }
}

impl From<Diagnosis> for DiagnosisRepr {
    fn from(diagnosis: Diagnosis) -> Self {
        Self {
            system: diagnosis.system,
            code: diagnosis.code,
        }
    }
}

fn is_icd10(code: &str) -> bool {
    let bytes = code.as_bytes();
    let (head, tail) = bytes.split_at(bytes.len().min(3));
    let head_ok = matches!(head, [letter, d1, d2]
        if letter.is_ascii_uppercase() && d1.is_ascii_digit() && d2.is_ascii_digit());
    if !head_ok {
        return false;
    }
    match tail {
        [] => true,
        [b'.', rest @ ..] => {
            (1..=4).contains(&rest.len())
                && rest
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }
        _ => false,
    }
}

fn is_snomed_ct(code: &str) -> bool {
    (6..=18).contains(&code.len())
        && code.bytes().all(|c| c.is_ascii_digit())
        && !code.starts_with('0')
        && verhoeff_valid(code)
}

/// The Verhoeff check used by SNOMED CT identifiers.
fn verhoeff_valid(digits: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 8, 7, 6, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut check: u8 = 0;
    for (position, byte) in digits.bytes().rev().enumerate() {
        let Some(digit) = byte.checked_sub(b'0').filter(|d| *d < 10) else {
            return false;
        };
        let permuted = P[position % 8][usize::from(digit)];
        check = D[usize::from(check)][usize::from(permuted)];
    }
    check == 0
}

// ---------------------------------------------------------------------------------------
// Contraindications

/// An item of the contraindication screening done at every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contraindication {
    /// Pregnancy.
    Pregnancy,
    /// Vertebral fracture.
    VertebralFracture,
    /// Advanced osteoporosis.
    AdvancedOsteoporosis,
    /// Spinal fusion or implant.
    SpinalFusionOrImplant,
    /// Spinal infection.
    SpinalInfection,
    /// Spinal tumour.
    SpinalTumour,
    /// Cauda equina signs.
    CaudaEquinaSigns,
    /// Anticoagulant therapy (relative).
    AnticoagulantTherapy,
    /// Prior failed back surgery (relative).
    PriorFailedBackSurgery,
}

impl Contraindication {
    /// Every item that must be screened.
    pub const ALL: [Self; 9] = [
        Self::Pregnancy,
        Self::VertebralFracture,
        Self::AdvancedOsteoporosis,
        Self::SpinalFusionOrImplant,
        Self::SpinalInfection,
        Self::SpinalTumour,
        Self::CaudaEquinaSigns,
        Self::AnticoagulantTherapy,
        Self::PriorFailedBackSurgery,
    ];

    /// Whether the item, when present, rules out traction (absolute). Relative items are
    /// recorded but never block a plan.
    #[must_use]
    pub const fn is_absolute(self) -> bool {
        !matches!(
            self,
            Self::AnticoagulantTherapy | Self::PriorFailedBackSurgery
        )
    }

    /// The item's snake_case name, as in payloads.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pregnancy => "pregnancy",
            Self::VertebralFracture => "vertebral_fracture",
            Self::AdvancedOsteoporosis => "advanced_osteoporosis",
            Self::SpinalFusionOrImplant => "spinal_fusion_or_implant",
            Self::SpinalInfection => "spinal_infection",
            Self::SpinalTumour => "spinal_tumour",
            Self::CaudaEquinaSigns => "cauda_equina_signs",
            Self::AnticoagulantTherapy => "anticoagulant_therapy",
            Self::PriorFailedBackSurgery => "prior_failed_back_surgery",
        }
    }
}

/// The finding for one screened item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// The item is present.
    Present,
    /// The item is absent.
    Absent,
    /// Not known (not asked, or the patient does not know).
    Unknown,
}

/// A complete contraindication screening: every item of [`Contraindication::ALL`] exactly
/// once. Serialized as an object from item name to finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<Contraindication, Finding>",
    into = "BTreeMap<Contraindication, Finding>"
)]
pub struct ContraindicationScreening(BTreeMap<Contraindication, Finding>);

impl ContraindicationScreening {
    /// The screening, if every item is screened exactly once.
    ///
    /// # Errors
    /// A [`MeasureError`] naming the duplicated or missing items.
    pub fn new(
        items: impl IntoIterator<Item = (Contraindication, Finding)>,
    ) -> Result<Self, MeasureError> {
        let mut findings = BTreeMap::new();
        for (item, finding) in items {
            if findings.insert(item, finding).is_some() {
                return Err(MeasureError::new(
                    "contraindication screening",
                    format!("{} is screened more than once", item.as_str()),
                ));
            }
        }
        Self::complete(findings)
    }

    fn complete(findings: BTreeMap<Contraindication, Finding>) -> Result<Self, MeasureError> {
        let missing: Vec<&str> = Contraindication::ALL
            .iter()
            .filter(|item| !findings.contains_key(item))
            .map(|item| item.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(MeasureError::new(
                "contraindication screening",
                format!("not screened: {}", missing.join(", ")),
            ));
        }
        Ok(Self(findings))
    }

    /// A screening with the same finding for every item (handy in tests and simulations).
    #[must_use]
    pub fn all(finding: Finding) -> Self {
        Self(
            Contraindication::ALL
                .iter()
                .map(|c| (*c, finding))
                .collect(),
        )
    }

    /// This screening with one item's finding replaced.
    #[must_use]
    pub fn with(mut self, item: Contraindication, finding: Finding) -> Self {
        self.0.insert(item, finding);
        self
    }

    /// The finding for an item.
    #[must_use]
    pub fn finding(&self, item: Contraindication) -> Finding {
        self.0.get(&item).copied().unwrap_or(Finding::Unknown)
    }

    /// Every item with its finding, in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = (Contraindication, Finding)> + '_ {
        self.0.iter().map(|(item, finding)| (*item, *finding))
    }

    /// The absolute contraindications marked present.
    pub fn absolute_present(&self) -> impl Iterator<Item = Contraindication> + '_ {
        self.iter()
            .filter(|(item, finding)| item.is_absolute() && *finding == Finding::Present)
            .map(|(item, _)| item)
    }
}

impl TryFrom<BTreeMap<Contraindication, Finding>> for ContraindicationScreening {
    type Error = MeasureError;

    fn try_from(findings: BTreeMap<Contraindication, Finding>) -> Result<Self, Self::Error> {
        Self::complete(findings)
    }
}

impl From<ContraindicationScreening> for BTreeMap<Contraindication, Finding> {
    fn from(screening: ContraindicationScreening) -> Self {
        screening.0
    }
}

// ---------------------------------------------------------------------------------------
// Force

/// Newtons in one kilogram-force (standard gravity).
pub const NEWTONS_PER_KILOGRAM_FORCE: f64 = 9.806_65;
/// Newtons in one pound-force.
pub const NEWTONS_PER_POUND_FORCE: f64 = 4.448_221_615_260_5;

/// The unit a traction force is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceUnit {
    /// Newtons.
    Newtons,
    /// Kilogram-force (9.80665 N).
    KilogramForce,
    /// Pound-force (4.4482216152605 N).
    PoundForce,
}

impl ForceUnit {
    /// Newtons in one of this unit.
    #[must_use]
    pub const fn newtons_per_unit(self) -> f64 {
        match self {
            Self::Newtons => 1.0,
            Self::KilogramForce => NEWTONS_PER_KILOGRAM_FORCE,
            Self::PoundForce => NEWTONS_PER_POUND_FORCE,
        }
    }
}

/// A traction force, stored in newtons: finite, above 0, at most 2000 N. Serialized as a
/// number of newtons.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Force(f64);

impl Force {
    /// The highest plausible traction force, newtons.
    pub const MAX_NEWTONS: f64 = 2000.0;

    /// The force in newtons.
    ///
    /// # Errors
    /// A [`MeasureError`] when not finite, not above 0 or above 2000 N.
    pub fn from_newtons(newtons: f64) -> Result<Self, MeasureError> {
        check_float(
            "traction force (N, 0 < x <= 2000)",
            newtons,
            0.0,
            false,
            Self::MAX_NEWTONS,
        )
        .map(Self)
    }

    /// The force given as a value in a unit.
    ///
    /// # Errors
    /// A [`MeasureError`] when the converted force is out of range.
    pub fn from_value(value: f64, unit: ForceUnit) -> Result<Self, MeasureError> {
        Self::from_newtons(value * unit.newtons_per_unit())
    }

    /// The force in newtons.
    #[must_use]
    pub const fn newtons(self) -> f64 {
        self.0
    }

    /// The force expressed in `unit`.
    #[must_use]
    pub fn in_unit(self, unit: ForceUnit) -> f64 {
        self.0 / unit.newtons_per_unit()
    }
}

impl fmt::Display for Force {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} N", self.0)
    }
}

impl Serialize for Force {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Force {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = f64::deserialize(deserializer)?;
        Self::from_newtons(raw).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Sessions, plans, home care, discharge

/// How traction is delivered in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Constant force.
    Static,
    /// Alternating hold and relax.
    Intermittent,
    /// Repeated ramp cycles.
    Cyclic,
    /// Force stepped up through the session.
    Progressive,
}

/// How the patient tolerated a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    /// Tolerated well.
    Good,
    /// Tolerated fairly.
    Fair,
    /// Caused discomfort.
    Discomfort,
    /// Stopped before the planned end.
    StoppedEarly,
}

impl Tolerance {
    /// Whether tolerance was poor, so the next session may not raise the force.
    #[must_use]
    pub const fn is_poor(self) -> bool {
        matches!(self, Self::Discomfort | Self::StoppedEarly)
    }
}

/// The severity of an adverse event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Mild.
    Mild,
    /// Moderate.
    Moderate,
    /// Severe.
    Severe,
}

/// An adverse event during a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdverseEvent {
    /// How severe it was.
    pub severity: Severity,
    /// What happened (no personal data), at most 2000 characters.
    pub description: Note,
}

/// Why a planned session did not take place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedReason {
    /// The patient cancelled.
    PatientCancelled,
    /// The patient did not come.
    NoShow,
    /// The clinic cancelled.
    ClinicCancelled,
    /// The patient was ill.
    Illness,
    /// Another reason.
    Other,
}

/// The personalised frequency chosen after the initial phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// Frequent visits over a short period.
    Intensive,
    /// Visits spaced out progressively.
    Tapering,
    /// Occasional visits.
    Maintenance,
    /// Visits only when needed.
    AsNeeded,
}

/// The cadence of a personalised frequency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// Sessions per week (0 < x <= 7).
    SessionsPerWeek(SessionsPerWeek),
    /// Days between sessions (1-365).
    IntervalDays(IntervalDays),
    /// No schedule: only for [`Frequency::AsNeeded`].
    None,
}

impl Cadence {
    /// Whether this cadence fits `frequency`: as-needed has no cadence, every other
    /// frequency has one.
    #[must_use]
    pub const fn fits(self, frequency: Frequency) -> bool {
        matches!(frequency, Frequency::AsNeeded) == matches!(self, Self::None)
    }
}

/// What a reassessment recommends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// Keep the current plan.
    ContinueCurrentPlan,
    /// Move to another frequency.
    ChangeFrequency,
    /// Discharge the patient.
    Discharge,
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DischargeReason {
    /// Treatment goals met.
    GoalsMet,
    /// No further improvement.
    Plateau,
    /// The patient stopped on their own.
    SelfDischarge,
    /// Referred elsewhere.
    Referred,
    /// Stopped because of an adverse event.
    AdverseEvent,
    /// The patient stopped coming and could not be reached.
    LostToFollowUp,
}

/// The kind of a home-care instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HomeCareKind {
    /// Exercise.
    Exercise,
    /// Stretching.
    Stretching,
    /// Posture.
    Posture,
    /// Ice or heat.
    IceHeat,
    /// Activity modification.
    ActivityModification,
    /// Walking.
    Walking,
    /// Anything else.
    Other,
}

/// One home-care instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeCareInstruction {
    /// The kind of activity.
    pub kind: HomeCareKind,
    /// What to do, at most 2000 characters.
    pub description: Note,
    /// How often, times per week (1-50), when prescribed.
    pub times_per_week: Option<TimesPerWeek>,
}

/// Sciatica symptoms compared with the evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SciaticaSymptoms {
    /// No sciatica symptoms.
    None,
    /// Improved.
    Improved,
    /// Unchanged.
    Unchanged,
    /// Worse.
    Worse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pain_accepts_its_scale_and_rejects_beyond() {
        assert_eq!(PainNrs::new(0).unwrap().value(), 0);
        assert_eq!(PainNrs::new(10).unwrap().value(), 10);
        assert!(PainNrs::new(11).is_err());
        assert!(PainNrs::try_from_i64(-1).is_err());
        assert!(PainNrs::try_from_i64(266).is_err());
    }

    #[test]
    fn bounded_values_revalidate_when_deserialized() {
        assert!(serde_json::from_value::<PainNrs>(serde_json::json!(11)).is_err());
        assert!(serde_json::from_value::<Pgic>(serde_json::json!(0)).is_err());
        let pain: PainNrs = serde_json::from_value(serde_json::json!(7)).unwrap();
        assert_eq!(serde_json::to_value(pain).unwrap(), serde_json::json!(7));
    }

    #[test]
    fn odi_from_sections_follows_the_convention() {
        let all_answered = [Some(2); 10];
        assert!((OswestryIndex::from_sections(all_answered).unwrap().score() - 40.0).abs() < 1e-9);
        // 9 answered, sum 13: 13 / 45 * 100 = 28.888… -> 28.9
        let nine = [
            Some(1),
            Some(2),
            Some(1),
            Some(2),
            Some(1),
            Some(2),
            Some(1),
            Some(2),
            Some(1),
            None,
        ];
        let index = OswestryIndex::from_sections(nine).unwrap();
        assert!((index.score() - 28.9).abs() < 1e-9);
        assert_eq!(index.sections(), Some(&nine));
    }

    #[test]
    fn odi_needs_eight_answered_sections_of_at_most_five() {
        let seven = [
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            None,
            None,
            None,
        ];
        assert!(OswestryIndex::from_sections(seven).is_err());
        let mut too_high = [Some(1); 10];
        too_high[4] = Some(6);
        assert!(OswestryIndex::from_sections(too_high).is_err());
        assert!(OswestryIndex::from_score(100.1).is_err());
        assert!(OswestryIndex::from_score(f64::NAN).is_err());
    }

    #[test]
    fn odi_round_trips_through_serde() {
        let from_sections = OswestryIndex::from_sections([Some(3); 10]).unwrap();
        let json = serde_json::to_value(&from_sections).unwrap();
        assert_eq!(
            serde_json::from_value::<OswestryIndex>(json).unwrap(),
            from_sections
        );
        let direct = OswestryIndex::from_score(22.0).unwrap();
        let json = serde_json::to_value(&direct).unwrap();
        assert_eq!(
            serde_json::from_value::<OswestryIndex>(json).unwrap(),
            direct
        );
    }

    #[test]
    fn odi_with_a_score_that_contradicts_its_sections_is_refused() {
        let json = serde_json::json!({"score": 10.0, "sections": [3,3,3,3,3,3,3,3,3,3]});
        assert!(serde_json::from_value::<OswestryIndex>(json).is_err());
    }

    #[test]
    fn force_converts_units_to_newtons() {
        let kgf = Force::from_value(30.0, ForceUnit::KilogramForce).unwrap();
        assert!((kgf.newtons() - 294.1995).abs() < 1e-9);
        let lbf = Force::from_value(100.0, ForceUnit::PoundForce).unwrap();
        assert!((lbf.newtons() - 444.822_161_526_05).abs() < 1e-9);
        let newtons = Force::from_value(500.0, ForceUnit::Newtons).unwrap();
        assert!((newtons.newtons() - 500.0).abs() < f64::EPSILON);
        assert!((lbf.in_unit(ForceUnit::PoundForce) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn force_must_be_finite_positive_and_at_most_2000_newtons() {
        assert!(Force::from_newtons(0.0).is_err());
        assert!(Force::from_newtons(-5.0).is_err());
        assert!(Force::from_newtons(f64::INFINITY).is_err());
        assert!(Force::from_newtons(f64::NAN).is_err());
        assert!(Force::from_newtons(2000.0).is_ok());
        assert!(Force::from_value(204.0, ForceUnit::KilogramForce).is_err());
    }

    #[test]
    fn body_weight_converts_to_newtons() {
        let weight = BodyWeightKg::new(80.0).unwrap();
        assert!((weight.weight_newtons() - 784.532).abs() < 1e-9);
        assert!(BodyWeightKg::new(19.9).is_err());
        assert!(BodyWeightKg::new(350.1).is_err());
    }

    #[test]
    fn diagnosis_codes_are_checked_for_format() {
        for code in ["M51.2", "M54.4", "M54.16", "m51.2", "M54"] {
            assert!(Diagnosis::new(CodeSystem::Icd10, code).is_ok(), "{code}");
        }
        for code in ["51.2", "M5", "M51.", "M51.12345", "MM1.2", "M51-2", ""] {
            assert!(Diagnosis::new(CodeSystem::Icd10, code).is_err(), "{code}");
        }
        for code in ["279039007", "23056005"] {
            assert!(Diagnosis::new(CodeSystem::SnomedCt, code).is_ok(), "{code}");
        }
        for code in [
            "279039008",
            "12345",
            "0279039007",
            "27903900A",
            "1234567890123456789",
        ] {
            assert!(
                Diagnosis::new(CodeSystem::SnomedCt, code).is_err(),
                "{code}"
            );
        }
    }

    #[test]
    fn screening_must_cover_every_item_exactly_once() {
        let complete = Contraindication::ALL.map(|item| (item, Finding::Absent));
        assert!(ContraindicationScreening::new(complete).is_ok());
        assert!(ContraindicationScreening::new(complete.into_iter().skip(1)).is_err());
        let duplicated = complete
            .into_iter()
            .chain([(Contraindication::Pregnancy, Finding::Absent)]);
        assert!(ContraindicationScreening::new(duplicated).is_err());
    }

    #[test]
    fn relative_contraindications_are_not_absolute() {
        let relative: Vec<_> = Contraindication::ALL
            .into_iter()
            .filter(|item| !item.is_absolute())
            .collect();
        assert_eq!(
            relative,
            [
                Contraindication::AnticoagulantTherapy,
                Contraindication::PriorFailedBackSurgery
            ]
        );
    }

    #[test]
    fn text_is_limited_in_characters_not_bytes() {
        assert!(ShortText::new("é".repeat(200)).is_ok());
        assert!(ShortText::new("é".repeat(201)).is_err());
        assert!(Note::new("  ").unwrap().is_blank());
    }

    #[test]
    fn cadence_fits_frequency() {
        let weekly = Cadence::SessionsPerWeek(SessionsPerWeek::new(2.0).unwrap());
        assert!(weekly.fits(Frequency::Intensive));
        assert!(!weekly.fits(Frequency::AsNeeded));
        assert!(Cadence::None.fits(Frequency::AsNeeded));
        assert!(!Cadence::None.fits(Frequency::Maintenance));
        assert!(SessionsPerWeek::new(0.0).is_err());
    }
}
