//! Outcome statistics: [`EpisodeOutcome`] rows grouped by dimensions and aggregated, with
//! small-cell suppression. Analysts see only these aggregates,
//! never an episode row.
//!
//! # Suppression
//!
//! What a group may show is decided part by part ([`crate::release`]): a group adds up
//! its released parts and is listed only if it has one. Inside a listed group, every
//! mean, median and proportion computed over fewer than `min_cell` values is left out
//! (`None`), and so is each point of the pain trajectory. The default,
//! [`MinCell::DEFAULT`] = 8, follows NHS Digital's small-number policy, which suppresses
//! counts and means of 1-7 values. Counts of the group's episodes by category (discharge
//! reasons, adverse events) are shown; the API leaves out counts by adherence band,
//! which would cross-tabulate a grouping dimension.
//!
//! # Definitions
//!
//! - **NRS** is back pain on the 0-10 numeric rating scale (LOINC 72514-3); **ODI** is the
//!   Oswestry Disability Index, 0-100 % (Fairbank JCT, Pynsent PB. The Oswestry Disability
//!   Index. Spine 2000;25(22):2940-2952).
//! - **Baseline**: the first evaluation. **Follow-up at session 4 / 6**: the outcome or
//!   reassessment recorded after 4 / 6 sessions. **At discharge**: the latest follow-up of a
//!   discharged episode. See [`crate::outcomes`] for the exact rules.
//! - **Mean change** = follow-up minus baseline, over the episodes that have both; a
//!   **negative change is an improvement** (both scales: lower is better).
//! - **Responders** (Ostelo RWJG, Deyo RA, Stratford P, et al. Interpreting change scores
//!   for pain and functional status in low back pain: towards international consensus
//!   regarding minimal important change. Spine 2008;33(1):90-94): NRS improved by at least
//!   2 points or 30 %; ODI by at least 10 points or 30 %; measured at the latest follow-up.
//!   The denominator is the episodes with a baseline and a follow-up of that measure.
//! - **Sessions to first response**: median over the episodes that are NRS responders at
//!   the latest follow-up (the numerator of the NRS responder rate), of the completed
//!   sessions when their back-pain NRS first met the responder threshold. Episodes that met
//!   it once but are non-responders (or not assessed) at the latest follow-up are left
//!   out.
//! - **Pain trajectory**: mean pre-session NRS by session number, sessions 1 to
//!   [`TRAJECTORY_SESSIONS`].
//! - **Adherence band**: from the mean of an episode's adherence reports (none reported,
//!   low < 50 %, moderate 50-79 %, high >= 80 %).
//! - **Drop-out**: discharged as self-discharge or lost to follow-up.
//! - **Scores corrected**: episodes where a correction changed a score the facts use.
//!
//! Every statistic is computed from the group's exact tally ([`crate::tally`]): integer
//! sums (ODI in nanopoints) and histograms, so the result does not depend on the order of
//! the input rows, and statistics read from the projector's cells equal those aggregated
//! from episode rows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::outcomes::EpisodeOutcome;
use crate::release::{Parts, Released};
use crate::tally::{Count, Tally};

/// The smallest group (and the smallest number of values behind a statistic) that is
/// shown. It cannot be made below [`MinCell::SMALLEST`] (3): a cell of one or two
/// episodes discloses individuals. The default, 8, follows NHS Digital, which suppresses
/// 1-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MinCell(usize);

/// A minimum cell size below 3 was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a minimum cell size of {0} would disclose individuals: it must be at least 3")]
pub struct MinCellTooSmall(pub usize);

impl MinCell {
    /// The smallest minimum cell size there is: 3.
    pub const SMALLEST: Self = Self(3);
    /// The default: 8.
    pub const DEFAULT: Self = Self(8);

    /// The minimum cell size `size`, if it is at least 3.
    ///
    /// # Errors
    /// [`MinCellTooSmall`] below 3.
    pub const fn new(size: usize) -> Result<Self, MinCellTooSmall> {
        if size < Self::SMALLEST.0 {
            Err(MinCellTooSmall(size))
        } else {
            Ok(Self(size))
        }
    }

    /// The size.
    #[must_use]
    pub const fn get(self) -> usize {
        self.0
    }
}

impl Default for MinCell {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for MinCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for MinCell {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let size: usize = text
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        Self::new(size).map_err(|error| error.to_string())
    }
}
/// The sessions the pain trajectory covers, from session 1.
pub const TRAJECTORY_SESSIONS: u32 = 12;

/// What episodes can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The clinic id.
    Clinic,
    /// The primary diagnosis (`ICD10:M51.2`, `SNOMED:23056005`, `unknown`).
    Diagnosis,
    /// The planned initial sessions (`4`, `5`, `6`, …, `no_plan`).
    InitialSessions,
    /// The frequency phase reached (`intensive`, …, `initial_only`, `no_plan`).
    FrequencyPhase,
    /// The adherence band (`none_reported`, `low`, `moderate`, `high`).
    AdherenceBand,
    /// The age band at evaluation (`<18`, `18-29`, …, `75+`, `unknown`).
    AgeBand,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Self; 6] = [
        Self::Clinic,
        Self::Diagnosis,
        Self::InitialSessions,
        Self::FrequencyPhase,
        Self::AdherenceBand,
        Self::AgeBand,
    ];

    /// The snake_case name, as serialized and parsed.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clinic => "clinic",
            Self::Diagnosis => "diagnosis",
            Self::InitialSessions => "initial_sessions",
            Self::FrequencyPhase => "frequency_phase",
            Self::AdherenceBand => "adherence_band",
            Self::AgeBand => "age_band",
        }
    }
}

impl Dimension {
    /// The group key of `episode` along this dimension: the clinic id; the primary
    /// diagnosis (`unknown` without an evaluation); the initial session count (`no_plan`
    /// without a plan); the frequency phase; the adherence band; the age band (`unknown`
    /// without an evaluation).
    #[must_use]
    pub fn key_of(self, episode: &EpisodeOutcome) -> String {
        match self {
            Self::Clinic => episode.clinic_id.to_string(),
            Self::Diagnosis => episode.diagnosis_key().to_owned(),
            Self::InitialSessions => episode.initial_sessions_key(),
            Self::FrequencyPhase => episode.frequency_phase.as_str().to_owned(),
            Self::AdherenceBand => episode.adherence_band.as_str().to_owned(),
            Self::AgeBand => episode.age_band_key().to_owned(),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dimension name that is not one of [`Dimension::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDimension(pub String);

impl fmt::Display for UnknownDimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown dimension {:?}; expected one of clinic, diagnosis, initial_sessions, \
             frequency_phase, adherence_band, age_band",
            self.0
        )
    }
}

impl std::error::Error for UnknownDimension {}

impl FromStr for Dimension {
    type Err = UnknownDimension;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|dimension| dimension.as_str() == name)
            .ok_or_else(|| UnknownDimension(name.to_owned()))
    }
}

/// A mean over `n` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// Values averaged.
    pub n: usize,
    /// The mean.
    pub mean: f64,
}

/// A median over `n` values (the mean of the middle two for an even `n`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Median {
    /// Values.
    pub n: usize,
    /// The median.
    pub median: f64,
}

/// `count` of `n` episodes, and the rate `count / n`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// The denominator.
    pub n: usize,
    /// The numerator.
    pub count: usize,
    /// `count / n`, 0-1.
    pub rate: f64,
}

/// The mean pre-session pain at one session number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryPoint {
    /// The session number, from 1.
    pub session_number: u32,
    /// Mean pre-session NRS; None when suppressed (fewer than `min_cell` sessions).
    pub mean_pain_before: Option<Mean>,
}

/// Episodes by adherence band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AdherenceBandCounts {
    /// No adherence report.
    pub none_reported: usize,
    /// Mean below 50 %.
    pub low: usize,
    /// Mean 50-79 %.
    pub moderate: usize,
    /// Mean 80 % and above.
    pub high: usize,
}

/// Episodes by discharge reason, and those still ongoing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DischargeCounts {
    /// Treatment goals met.
    pub goals_met: usize,
    /// No further improvement.
    pub plateau: usize,
    /// The patient stopped on their own.
    pub self_discharge: usize,
    /// Referred elsewhere.
    pub referred: usize,
    /// Stopped because of an adverse event.
    pub adverse_event: usize,
    /// Stopped coming and could not be reached.
    pub lost_to_follow_up: usize,
    /// Not discharged.
    pub ongoing: usize,
}

/// The statistics of a group that is large enough to show. Every `Option` is None when
/// fewer than `min_cell` values stand behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatistics {
    /// Episodes in the group.
    pub episodes: usize,
    /// Episodes whose initial phase was completed.
    pub initial_phase_completed: usize,
    /// Mean baseline back-pain NRS.
    pub baseline_nrs: Option<Mean>,
    /// Mean baseline ODI.
    pub baseline_odi: Option<Mean>,
    /// Mean NRS change at session 4 (follow-up minus baseline; negative = improvement).
    pub nrs_change_session_4: Option<Mean>,
    /// Mean ODI change at session 4 (follow-up minus baseline; negative = improvement).
    pub odi_change_session_4: Option<Mean>,
    /// Mean NRS change at session 6 (follow-up minus baseline; negative = improvement).
    pub nrs_change_session_6: Option<Mean>,
    /// Mean ODI change at session 6 (follow-up minus baseline; negative = improvement).
    pub odi_change_session_6: Option<Mean>,
    /// Mean NRS change at discharge (follow-up minus baseline; negative = improvement).
    pub nrs_change_discharge: Option<Mean>,
    /// Mean ODI change at discharge (follow-up minus baseline; negative = improvement).
    pub odi_change_discharge: Option<Mean>,
    /// NRS responders at the latest follow-up, of the episodes with baseline and follow-up.
    pub nrs_responders: Option<Proportion>,
    /// ODI responders at the latest follow-up, of the episodes with baseline and follow-up.
    pub odi_responders: Option<Proportion>,
    /// Median completed sessions to the first NRS response, over the episodes that are NRS
    /// responders at the latest follow-up.
    pub sessions_to_first_nrs_response: Option<Median>,
    /// Mean pre-session NRS by session number, 1 to [`TRAJECTORY_SESSIONS`].
    pub pain_trajectory: Vec<TrajectoryPoint>,
    /// Episodes by adherence band.
    pub adherence_bands: AdherenceBandCounts,
    /// Missed sessions, all episodes together.
    pub missed_sessions: u64,
    /// Adverse events, all episodes together.
    pub adverse_events: u64,
    /// Episodes with at least one adverse event.
    pub episodes_with_adverse_events: usize,
    /// Episodes by discharge reason.
    pub discharges: DischargeCounts,
    /// Episodes discharged as self-discharge or lost to follow-up.
    pub drop_outs: usize,
    /// Episodes where a correction changed a score.
    pub scores_corrected: usize,
}

/// One group of episodes sharing a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The dimension values shared by the group, in the order grouped by.
    pub key: Vec<(Dimension, String)>,
    /// Episodes in the group's released parts; None when the group is suppressed.
    pub episodes: Option<usize>,
    /// The statistics of the released parts; None when the group is suppressed.
    pub statistics: Option<GroupStatistics>,
    /// Whether some of the group's clinic-months were withheld ([`crate::release`]): the
    /// figures cover the rest. For tests and tools: the API does not send it, as beside
    /// a month's released parts it would tell that a withheld part has the group's key.
    pub partial: bool,
}

impl Group {
    /// Whether the group is suppressed: none of its parts could be released.
    #[must_use]
    pub const fn is_suppressed(&self) -> bool {
        self.statistics.is_none()
    }
}

/// Groups `episodes` by the values of `group_by` (all in one group when empty), releases
/// their parts by the rules of [`crate::release`] and aggregates each group. Groups come
/// sorted by key; no input, no groups.
#[must_use]
pub fn aggregate(
    episodes: &[EpisodeOutcome],
    group_by: &[Dimension],
    min_cell: MinCell,
) -> Vec<Group> {
    let mut parts = Parts::new(group_by);
    let sibling = parts.sibling_dimension();
    for episode in episodes {
        let key = group_by.iter().map(|d| d.key_of(episode)).collect();
        let month = episode.evaluated_month();
        parts.add(episode.clinic_id, month, key, &Tally::of(episode));
        if let Some((_, other)) = sibling {
            parts.add_sibling(episode.clinic_id, month, other.key_of(episode), 1);
        }
    }
    groups(parts.release(min_cell), group_by, min_cell)
}

/// The groups of `released` (each group's released tally by its values along
/// `group_by`) that have a released part, sorted by key, with their statistics (means
/// and rates over fewer than `min_cell` values left out). A group with nothing released
/// is left out: its key alone would disclose that a patient of the window has it.
#[must_use]
pub fn groups(
    released: BTreeMap<Vec<String>, Released>,
    group_by: &[Dimension],
    min_cell: MinCell,
) -> Vec<Group> {
    released
        .into_iter()
        .filter(|(_, group)| group.tally.count(Count::Episodes) > 0)
        .map(|(values, group)| {
            let key = group_by.iter().copied().zip(values).collect();
            let statistics = if group.tally.count(Count::Episodes) > 0 {
                group.tally.statistics(min_cell.get())
            } else {
                None
            };
            Group {
                key,
                episodes: statistics.as_ref().map(|statistics| statistics.episodes),
                statistics,
                partial: group.withheld,
            }
        })
        .collect()
}
