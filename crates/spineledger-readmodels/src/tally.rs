//! Outcome statistics as exact, additive tallies: what one episode contributes, and what
//! a group of episodes adds up to. Every statistic of [`crate::statistics`] is computed
//! from a [`Tally`], so the statistics of a group are the same whether its tally was
//! summed from episode rows at query time or read from the cells the projector keeps
//! ([`Cell`]): the two paths share one definition and integer arithmetic, and cannot
//! drift apart.
//!
//! # Exactness
//!
//! A tally holds counts, integer sums and a histogram, never a float:
//!
//! - NRS values are whole points, summed as integers.
//! - ODI values are summed in [`ODI_UNITS_PER_POINT`] units per point (nanopoints). A
//!   score is rounded to the nearest nanopoint before it is summed (a questionnaire score
//!   has one decimal and is not changed by it; a score given directly with more than
//!   nine decimals moves by less than 5e-10). A change is the follow-up's units minus the
//!   baseline's.
//! - Sessions to first response are kept as a histogram (episodes by session count), so
//!   the median is exact.
//!
//! A mean is the integer sum divided by `n` in double precision, a function of `(sum, n)`
//! alone: both paths compute it from the same integers. Sums of tallies are associative and
//! commutative, so a group's statistics do not depend on the order its episodes or cells
//! are added in, and the projector can subtract an episode's old contribution from a
//! cell and add its new one.
//!
//! # Cells
//!
//! The projector keeps one tally per [`Cell`]: a clinic, the UTC month of the first
//! evaluation, and the values of the five non-clinic dimensions. Besides the cells with
//! every dimension ([`Grouping::EVERY`]), it keeps roll-ups with one dimension and with
//! none, so that the common queries (by clinic, by one dimension) read a few rows per
//! clinic and month instead of every combination.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use spineledger_domain::measures::DischargeReason;
use uuid::Uuid;

use crate::outcomes::{AdherenceBand, EpisodeOutcome};
use crate::responder::ResponderStatus;
use crate::statistics::{
    AdherenceBandCounts, Dimension, DischargeCounts, GroupStatistics, Mean, Median, Proportion,
    TRAJECTORY_SESSIONS, TrajectoryPoint,
};

/// ODI units summed per ODI point: nanopoints.
pub const ODI_UNITS_PER_POINT: i64 = 1_000_000_000;

/// An ODI score (0-100) in [`ODI_UNITS_PER_POINT`] units, rounded to the nearest unit.
#[must_use]
#[allow(clippy::cast_possible_truncation)] // |score| <= 100, so the product fits easily
pub fn odi_units(score: f64) -> i64 {
    (score * ODI_UNITS_PER_POINT as f64).round() as i64
}

macro_rules! counts {
    ($($(#[$doc:meta])* $variant:ident => $column:literal,)*) => {
        /// The scalar parts of a [`Tally`]: counts, and the `n` and sum of each mean. Each
        /// is a column of the cells table, named by [`Count::column`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Count {
            $($(#[$doc])* $variant,)*
        }

        impl Count {
            /// Every count, in column order.
            pub const ALL: [Self; [$(Self::$variant),*].len()] = [$(Self::$variant),*];

            /// The column holding it.
            #[must_use]
            pub const fn column(self) -> &'static str {
                match self {
                    $(Self::$variant => $column,)*
                }
            }
        }
    };
}

counts! {
    /// Episodes.
    Episodes => "episodes",
    /// Episodes whose initial phase was completed.
    InitialPhaseCompleted => "initial_phase_completed",
    /// Episodes with a baseline NRS.
    BaselineNrsN => "baseline_nrs_n",
    /// Sum of baseline NRS, points.
    BaselineNrsSum => "baseline_nrs_sum",
    /// Episodes with a baseline ODI.
    BaselineOdiN => "baseline_odi_n",
    /// Sum of baseline ODI, nanopoints.
    BaselineOdiSum => "baseline_odi_sum",
    /// Episodes with a baseline and a follow-up NRS after session 4.
    NrsChangeSession4N => "nrs_change_session_4_n",
    /// Sum of their NRS change, points.
    NrsChangeSession4Sum => "nrs_change_session_4_sum",
    /// Episodes with a baseline and a follow-up NRS after session 6.
    NrsChangeSession6N => "nrs_change_session_6_n",
    /// Sum of their NRS change, points.
    NrsChangeSession6Sum => "nrs_change_session_6_sum",
    /// Discharged episodes with a baseline and a follow-up NRS.
    NrsChangeDischargeN => "nrs_change_discharge_n",
    /// Sum of their NRS change, points.
    NrsChangeDischargeSum => "nrs_change_discharge_sum",
    /// Episodes with a baseline and a follow-up ODI after session 4.
    OdiChangeSession4N => "odi_change_session_4_n",
    /// Sum of their ODI change, nanopoints.
    OdiChangeSession4Sum => "odi_change_session_4_sum",
    /// Episodes with a baseline and a follow-up ODI after session 6.
    OdiChangeSession6N => "odi_change_session_6_n",
    /// Sum of their ODI change, nanopoints.
    OdiChangeSession6Sum => "odi_change_session_6_sum",
    /// Discharged episodes with a baseline and a follow-up ODI.
    OdiChangeDischargeN => "odi_change_discharge_n",
    /// Sum of their ODI change, nanopoints.
    OdiChangeDischargeSum => "odi_change_discharge_sum",
    /// Episodes assessed for NRS response.
    NrsAssessed => "nrs_assessed",
    /// NRS responders among them.
    NrsResponders => "nrs_responders",
    /// Episodes assessed for ODI response.
    OdiAssessed => "odi_assessed",
    /// ODI responders among them.
    OdiResponders => "odi_responders",
    /// Episodes without an adherence report.
    AdherenceNoneReported => "adherence_none_reported",
    /// Episodes of low adherence.
    AdherenceLow => "adherence_low",
    /// Episodes of moderate adherence.
    AdherenceModerate => "adherence_moderate",
    /// Episodes of high adherence.
    AdherenceHigh => "adherence_high",
    /// Missed sessions.
    MissedSessions => "missed_sessions",
    /// Sessions with an adverse event.
    AdverseEvents => "adverse_events",
    /// Episodes with at least one adverse event.
    EpisodesWithAdverseEvents => "episodes_with_adverse_events",
    /// Discharged: goals met.
    DischargedGoalsMet => "discharged_goals_met",
    /// Discharged: plateau.
    DischargedPlateau => "discharged_plateau",
    /// Discharged: self-discharge.
    DischargedSelfDischarge => "discharged_self_discharge",
    /// Discharged: referred.
    DischargedReferred => "discharged_referred",
    /// Discharged: adverse event.
    DischargedAdverseEvent => "discharged_adverse_event",
    /// Discharged: lost to follow-up.
    DischargedLostToFollowUp => "discharged_lost_to_follow_up",
    /// Not discharged.
    Ongoing => "ongoing",
    /// Episodes where a correction changed a score.
    ScoresCorrected => "scores_corrected",
}

/// The number of [`Count`]s.
pub const COUNTS: usize = Count::ALL.len();

/// The exact, additive sufficient statistics of a group of episodes (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    counts: [i64; COUNTS],
    /// Index `k`: NRS responders whose first response came after `k` sessions. No
    /// trailing zeros, so equal tallies have equal histograms.
    sessions_to_first_nrs_response: Vec<i64>,
    /// Index `s - 1`: episodes with a pre-session NRS at session `s`.
    pain_before_n: [i64; TRAJECTORY_SESSIONS as usize],
    /// Index `s - 1`: the sum of those pre-session NRS values.
    pain_before_sum: [i64; TRAJECTORY_SESSIONS as usize],
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            counts: [0; COUNTS],
            sessions_to_first_nrs_response: Vec::new(),
            pain_before_n: [0; TRAJECTORY_SESSIONS as usize],
            pain_before_sum: [0; TRAJECTORY_SESSIONS as usize],
        }
    }
}

impl Tally {
    /// What one episode contributes.
    #[must_use]
    pub fn of(episode: &EpisodeOutcome) -> Self {
        let mut tally = Self::default();
        let mut bump = |count: Count, by: i64| tally.counts[count as usize] += by;
        bump(Count::Episodes, 1);
        bump(
            Count::InitialPhaseCompleted,
            i64::from(episode.initial_phase_completed),
        );
        let baseline_nrs = episode.baseline_pain_back.map(i64::from);
        let baseline_odi = episode.baseline_odi.map(odi_units);
        if let Some(nrs) = baseline_nrs {
            bump(Count::BaselineNrsN, 1);
            bump(Count::BaselineNrsSum, nrs);
        }
        if let Some(odi) = baseline_odi {
            bump(Count::BaselineOdiN, 1);
            bump(Count::BaselineOdiSum, odi);
        }
        let follow_ups = [
            (
                episode.at_session_4,
                Count::NrsChangeSession4N,
                Count::OdiChangeSession4N,
            ),
            (
                episode.at_session_6,
                Count::NrsChangeSession6N,
                Count::OdiChangeSession6N,
            ),
            (
                episode.at_discharge,
                Count::NrsChangeDischargeN,
                Count::OdiChangeDischargeN,
            ),
        ];
        for (scores, nrs_n, odi_n) in follow_ups {
            let Some(scores) = scores else { continue };
            if let Some(baseline) = baseline_nrs {
                bump(nrs_n, 1);
                bump(nrs_n.sum(), i64::from(scores.pain_back) - baseline);
            }
            if let (Some(baseline), Some(odi)) = (baseline_odi, scores.odi) {
                bump(odi_n, 1);
                bump(odi_n.sum(), odi_units(odi) - baseline);
            }
        }
        for (status, assessed, responders) in [
            (
                episode.nrs_response,
                Count::NrsAssessed,
                Count::NrsResponders,
            ),
            (
                episode.odi_response,
                Count::OdiAssessed,
                Count::OdiResponders,
            ),
        ] {
            if status != ResponderStatus::NotAssessed {
                bump(assessed, 1);
            }
            if status == ResponderStatus::Responder {
                bump(responders, 1);
            }
        }
        bump(
            match episode.adherence_band {
                AdherenceBand::NoneReported => Count::AdherenceNoneReported,
                AdherenceBand::Low => Count::AdherenceLow,
                AdherenceBand::Moderate => Count::AdherenceModerate,
                AdherenceBand::High => Count::AdherenceHigh,
            },
            1,
        );
        bump(Count::MissedSessions, i64::from(episode.missed_sessions));
        bump(Count::AdverseEvents, i64::from(episode.adverse_events));
        bump(
            Count::EpisodesWithAdverseEvents,
            i64::from(episode.adverse_events > 0),
        );
        bump(
            match episode.discharge_reason {
                None => Count::Ongoing,
                Some(DischargeReason::GoalsMet) => Count::DischargedGoalsMet,
                Some(DischargeReason::Plateau) => Count::DischargedPlateau,
                Some(DischargeReason::SelfDischarge) => Count::DischargedSelfDischarge,
                Some(DischargeReason::Referred) => Count::DischargedReferred,
                Some(DischargeReason::AdverseEvent) => Count::DischargedAdverseEvent,
                Some(DischargeReason::LostToFollowUp) => Count::DischargedLostToFollowUp,
            },
            1,
        );
        bump(Count::ScoresCorrected, i64::from(episode.scores_corrected));
        if episode.nrs_response == ResponderStatus::Responder
            && let Some(sessions) = episode.sessions_to_first_nrs_response
            && let Ok(index) = usize::try_from(sessions)
        {
            tally.sessions_to_first_nrs_response = vec![0; index + 1];
            tally.sessions_to_first_nrs_response[index] = 1;
        }
        for (session, pain) in episode
            .pain_before_by_session
            .range(1..=TRAJECTORY_SESSIONS)
        {
            let index = (*session - 1) as usize;
            tally.pain_before_n[index] = 1;
            tally.pain_before_sum[index] = i64::from(*pain);
        }
        tally
    }

    /// The tally from its stored parts (a cell row); `None` when an array has the wrong
    /// length.
    #[must_use]
    pub fn from_parts(
        counts: &[i64],
        sessions_to_first_nrs_response: Vec<i64>,
        pain_before_n: &[i64],
        pain_before_sum: &[i64],
    ) -> Option<Self> {
        let mut tally = Self {
            counts: counts.try_into().ok()?,
            sessions_to_first_nrs_response,
            pain_before_n: pain_before_n.try_into().ok()?,
            pain_before_sum: pain_before_sum.try_into().ok()?,
        };
        tally.trim();
        Some(tally)
    }

    /// The value of `count`.
    #[must_use]
    pub const fn count(&self, count: Count) -> i64 {
        self.counts[count as usize]
    }

    /// Every count, in [`Count::ALL`] order.
    #[must_use]
    pub const fn counts(&self) -> &[i64; COUNTS] {
        &self.counts
    }

    /// Episodes by the sessions after which their NRS first responded (index = sessions).
    #[must_use]
    pub fn sessions_to_first_nrs_response(&self) -> &[i64] {
        &self.sessions_to_first_nrs_response
    }

    /// Episodes with a pre-session NRS at sessions 1 to [`TRAJECTORY_SESSIONS`].
    #[must_use]
    pub const fn pain_before_n(&self) -> &[i64; TRAJECTORY_SESSIONS as usize] {
        &self.pain_before_n
    }

    /// The sums of those pre-session NRS values.
    #[must_use]
    pub const fn pain_before_sum(&self) -> &[i64; TRAJECTORY_SESSIONS as usize] {
        &self.pain_before_sum
    }

    /// Whether nothing has been added (or everything added was taken away again).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &Self) {
        self.combine(other, i64::saturating_add);
    }

    /// Takes `other` out (an episode's old contribution to a cell).
    pub fn subtract(&mut self, other: &Self) {
        self.combine(other, i64::saturating_sub);
    }

    /// Sums saturate: the sums of one clinic's cells stay far below `i64::MAX` (a sum of
    /// ODI nanopoints reaches it only past 92 million episodes), and a saturated sum
    /// is no worse than a wrapped one while never panicking.
    fn combine(&mut self, other: &Self, op: fn(i64, i64) -> i64) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = op(*mine, theirs);
        }
        let histogram = &mut self.sessions_to_first_nrs_response;
        if histogram.len() < other.sessions_to_first_nrs_response.len() {
            histogram.resize(other.sessions_to_first_nrs_response.len(), 0);
        }
        for (mine, theirs) in histogram
            .iter_mut()
            .zip(&other.sessions_to_first_nrs_response)
        {
            *mine = op(*mine, *theirs);
        }
        for (mine, theirs) in self.pain_before_n.iter_mut().zip(other.pain_before_n) {
            *mine = op(*mine, theirs);
        }
        for (mine, theirs) in self.pain_before_sum.iter_mut().zip(other.pain_before_sum) {
            *mine = op(*mine, theirs);
        }
        self.trim();
    }

    fn trim(&mut self) {
        while self.sessions_to_first_nrs_response.last() == Some(&0) {
            self.sessions_to_first_nrs_response.pop();
        }
    }

    /// The statistics of the group, or `None` when it has fewer than `min_cell` episodes
    /// (suppressed). Every mean, median and proportion over fewer than `min_cell` values
    /// is `None` too.
    #[must_use]
    pub fn statistics(&self, min_cell: usize) -> Option<GroupStatistics> {
        let episodes = self.size(Count::Episodes);
        if episodes == 0 || episodes < min_cell {
            return None;
        }
        let mean = |n: Count, per_unit: i64| self.mean(n, per_unit, min_cell);
        let proportion = |assessed: Count, responders: Count| {
            let n = self.size(assessed);
            (n > 0 && n >= min_cell).then(|| {
                let count = self.size(responders);
                Proportion {
                    n,
                    count,
                    rate: count as f64 / n as f64,
                }
            })
        };
        let discharges = DischargeCounts {
            goals_met: self.size(Count::DischargedGoalsMet),
            plateau: self.size(Count::DischargedPlateau),
            self_discharge: self.size(Count::DischargedSelfDischarge),
            referred: self.size(Count::DischargedReferred),
            adverse_event: self.size(Count::DischargedAdverseEvent),
            lost_to_follow_up: self.size(Count::DischargedLostToFollowUp),
            ongoing: self.size(Count::Ongoing),
        };
        Some(GroupStatistics {
            episodes,
            initial_phase_completed: self.size(Count::InitialPhaseCompleted),
            baseline_nrs: mean(Count::BaselineNrsN, 1),
            baseline_odi: mean(Count::BaselineOdiN, ODI_UNITS_PER_POINT),
            nrs_change_session_4: mean(Count::NrsChangeSession4N, 1),
            odi_change_session_4: mean(Count::OdiChangeSession4N, ODI_UNITS_PER_POINT),
            nrs_change_session_6: mean(Count::NrsChangeSession6N, 1),
            odi_change_session_6: mean(Count::OdiChangeSession6N, ODI_UNITS_PER_POINT),
            nrs_change_discharge: mean(Count::NrsChangeDischargeN, 1),
            odi_change_discharge: mean(Count::OdiChangeDischargeN, ODI_UNITS_PER_POINT),
            nrs_responders: proportion(Count::NrsAssessed, Count::NrsResponders),
            odi_responders: proportion(Count::OdiAssessed, Count::OdiResponders),
            sessions_to_first_nrs_response: self.median_sessions_to_response(min_cell),
            pain_trajectory: (0..TRAJECTORY_SESSIONS as usize)
                .map(|index| TrajectoryPoint {
                    session_number: index as u32 + 1,
                    mean_pain_before: mean_of(
                        self.pain_before_n[index],
                        self.pain_before_sum[index],
                        1,
                        min_cell,
                    ),
                })
                .collect(),
            adherence_bands: AdherenceBandCounts {
                none_reported: self.size(Count::AdherenceNoneReported),
                low: self.size(Count::AdherenceLow),
                moderate: self.size(Count::AdherenceModerate),
                high: self.size(Count::AdherenceHigh),
            },
            missed_sessions: u64::try_from(self.count(Count::MissedSessions)).unwrap_or(0),
            adverse_events: u64::try_from(self.count(Count::AdverseEvents)).unwrap_or(0),
            episodes_with_adverse_events: self.size(Count::EpisodesWithAdverseEvents),
            drop_outs: discharges.self_discharge + discharges.lost_to_follow_up,
            discharges,
            scores_corrected: self.size(Count::ScoresCorrected),
        })
    }

    /// A count as a size (a negative count, impossible in a consistent tally, as 0).
    fn size(&self, count: Count) -> usize {
        usize::try_from(self.count(count)).unwrap_or(0)
    }

    /// The mean whose `n` is `n` (its sum is the next count), over `per_unit` units a
    /// point.
    fn mean(&self, n: Count, per_unit: i64, min_cell: usize) -> Option<Mean> {
        mean_of(self.count(n), self.count(n.sum()), per_unit, min_cell)
    }

    /// The exact median of the sessions-to-first-response histogram.
    fn median_sessions_to_response(&self, min_cell: usize) -> Option<Median> {
        let histogram = &self.sessions_to_first_nrs_response;
        let n: i64 = histogram.iter().sum();
        let size = usize::try_from(n).ok()?;
        if size == 0 || size < min_cell {
            return None;
        }
        // The value at 0-based rank `rank` in sorted order.
        let at = |rank: i64| {
            let mut seen = 0;
            histogram.iter().position(|count| {
                seen += count;
                seen > rank
            })
        };
        let middle = n / 2;
        let median = if n % 2 == 1 {
            at(middle)? as f64
        } else {
            (at(middle - 1)? as f64 + at(middle)? as f64) / 2.0
        };
        Some(Median { n: size, median })
    }
}

impl Count {
    /// The sum that follows an `n` count (the count itself for any other).
    const fn sum(self) -> Self {
        match self {
            Self::BaselineNrsN => Self::BaselineNrsSum,
            Self::BaselineOdiN => Self::BaselineOdiSum,
            Self::NrsChangeSession4N => Self::NrsChangeSession4Sum,
            Self::NrsChangeSession6N => Self::NrsChangeSession6Sum,
            Self::NrsChangeDischargeN => Self::NrsChangeDischargeSum,
            Self::OdiChangeSession4N => Self::OdiChangeSession4Sum,
            Self::OdiChangeSession6N => Self::OdiChangeSession6Sum,
            Self::OdiChangeDischargeN => Self::OdiChangeDischargeSum,
            other => other,
        }
    }
}

/// `sum / n` points (the sum in `per_unit` units a point), or `None` below `min_cell`.
fn mean_of(n: i64, sum: i64, per_unit: i64, min_cell: usize) -> Option<Mean> {
    let size = usize::try_from(n).ok()?;
    if size == 0 || size < min_cell {
        return None;
    }
    Some(Mean {
        n: size,
        mean: sum as f64 / (n as f64 * per_unit as f64),
    })
}

/// Which of the five non-clinic dimensions a cell keeps (the others are rolled up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grouping(u8);

impl Grouping {
    /// The non-clinic dimensions, in cell order (bit `i` of a grouping is `CELL[i]`).
    pub const DIMENSIONS: [Dimension; 5] = [
        Dimension::Diagnosis,
        Dimension::InitialSessions,
        Dimension::FrequencyPhase,
        Dimension::AdherenceBand,
        Dimension::AgeBand,
    ];
    /// No dimension: a clinic-month's total.
    pub const NONE: Self = Self(0);
    /// Every dimension.
    pub const EVERY: Self = Self(0b1_1111);

    /// The groupings the projector keeps: none, each dimension alone, every dimension.
    pub const KEPT: [Self; 7] = [
        Self::NONE,
        Self(1),
        Self(1 << 1),
        Self(1 << 2),
        Self(1 << 3),
        Self(1 << 4),
        Self::EVERY,
    ];

    /// The smallest kept grouping that holds every dimension of `group_by` (the clinic
    /// is always held).
    #[must_use]
    pub fn serving(group_by: &[Dimension]) -> Self {
        let mask = group_by
            .iter()
            .filter_map(|dimension| Self::bit_of(*dimension))
            .fold(0_u8, |mask, bit| mask | (1 << bit));
        if mask.count_ones() <= 1 {
            Self(mask)
        } else {
            Self::EVERY
        }
    }

    /// The bit mask, as stored.
    #[must_use]
    pub const fn bits(self) -> i16 {
        self.0 as i16
    }

    /// The kept grouping whose mask is `bits`.
    #[must_use]
    pub fn from_bits(bits: i16) -> Option<Self> {
        Self::KEPT
            .into_iter()
            .find(|grouping| grouping.bits() == bits)
    }

    /// Whether the grouping keeps `dimension` (always, for the clinic).
    #[must_use]
    pub fn keeps(self, dimension: Dimension) -> bool {
        Self::bit_of(dimension).is_none_or(|bit| self.0 & (1 << bit) != 0)
    }

    /// The bit of `dimension` in a grouping's mask; `None` for the clinic.
    fn bit_of(dimension: Dimension) -> Option<usize> {
        Self::DIMENSIONS.iter().position(|d| *d == dimension)
    }
}

/// Where an episode's tally is kept: its clinic, the UTC month of its first evaluation
/// (`None` without one), and the values of the dimensions its grouping keeps (`None` for
/// a rolled-up dimension), in [`Grouping::DIMENSIONS`] order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The first day of the month of the first evaluation.
    pub month: Option<NaiveDate>,
    /// The dimensions kept.
    pub grouping: Grouping,
    /// The kept dimensions' values.
    pub values: [Option<String>; 5],
}

impl Cell {
    /// The cells `episode` is counted in: one per [`Grouping::KEPT`].
    #[must_use]
    pub fn of(episode: &EpisodeOutcome) -> Vec<Self> {
        let month = episode.evaluated_month();
        let values = Grouping::DIMENSIONS.map(|dimension| dimension.key_of(episode));
        Grouping::KEPT
            .iter()
            .map(|grouping| Self {
                clinic_id: episode.clinic_id,
                month,
                grouping: *grouping,
                values: std::array::from_fn(|bit| {
                    (grouping.0 & (1 << bit) != 0).then(|| values[bit].clone())
                }),
            })
            .collect()
    }

    /// A text key unique among the cells of a clinic (the table's key with the clinic).
    #[must_use]
    pub fn key(&self) -> String {
        let month = self.month.map(|month| month.to_string());
        serde_json::json!([month, self.grouping.0, self.values]).to_string()
    }

    /// The group key of this cell along `group_by`, which its grouping must keep;
    /// `None` when it does not.
    #[must_use]
    pub fn group_key(&self, group_by: &[Dimension]) -> Option<Vec<String>> {
        group_by
            .iter()
            .map(|dimension| {
                if *dimension == Dimension::Clinic {
                    return Some(self.clinic_id.to_string());
                }
                let bit = Grouping::bit_of(*dimension)?;
                self.values[bit].clone()
            })
            .collect()
    }
}

/// Each episode's change to its cells: its new contribution added and its old one (if
/// it had one) taken out. Cells an episode stays in get the difference.
#[must_use]
pub fn cell_changes<'a>(
    changes: impl IntoIterator<Item = (Option<&'a EpisodeOutcome>, &'a EpisodeOutcome)>,
) -> BTreeMap<Cell, Tally> {
    let mut cells: BTreeMap<Cell, Tally> = BTreeMap::new();
    for (before, after) in changes {
        if let Some(before) = before {
            let old = Tally::of(before);
            for cell in Cell::of(before) {
                cells.entry(cell).or_default().subtract(&old);
            }
        }
        let new = Tally::of(after);
        for cell in Cell::of(after) {
            cells.entry(cell).or_default().add(&new);
        }
    }
    cells.retain(|_, change| !change.is_empty());
    cells
}
