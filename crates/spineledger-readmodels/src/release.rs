//! What a statistics answer may show: the rules that keep a small group of patients from
//! being seen, directly or by subtracting one figure from another.
//!
//! # The unit of release
//!
//! Every figure is a sum of *parts*: the tally of the episodes of one clinic, first
//! evaluated in one UTC calendar month, that share the group's key (episodes with no
//! evaluation form a part of their own, counted only when a query names no dates). A
//! query can vary its clinics, its window (whole months only) and its grouping, so
//! those are exactly the ways two answers can differ. The rules below hold for each
//! part, whatever query it is read by:
//!
//! 1. **Small parts are withheld.** A part of fewer than `k` episodes (the minimum cell
//!    size) is never added into any figure.
//! 2. **Withheld parts cannot be recovered from their margins.** Within one clinic-month,
//!    the parts of a grouping add up to the parts of every coarser grouping (its
//!    margins: the clinic-month total, and for two or more dimensions, each row and
//!    column). For each such line, if the withheld parts hold fewer than `k` episodes
//!    between them, the smallest part still shown is withheld as well, until the
//!    withheld parts of every line hold at least `k` episodes, or none, or the whole
//!    line. What a margin minus the shown parts reveals is then a union of at least `k`
//!    episodes, as large as any group that is shown.
//! 3. **A finer grouping never undoes a coarser one.** A part is withheld whenever one
//!    of its margins is withheld by the coarser grouping's own release (computed by the
//!    same rules, from the same clinic-month).
//!
//! 4. **`no_plan` is one set in two dimensions.** An episode without a plan is
//!    `no_plan` by initial sessions and by frequency phase alike. If the other plan
//!    dimension's release withholds `no_plan`, this one withholds it too, and never as
//!    the only withheld part of the clinic-month (the total minus the parts shown would
//!    give it): the smallest shown part goes with it.
//!
//! 5. **`no_plan` counts for nothing in a withheld set.** Its episodes had no sessions,
//!    so they add nothing to the counts of missed sessions, adverse events or completed
//!    initial phases: a withheld set of a small part and `no_plan` would give those
//!    counts of the small part away. The withheld parts must hold k episodes besides
//!    `no_plan`, and it is the last part chosen to go with a small one.
//!
//! With rule 5, rule 4 no longer changes an answer: `no_plan` is withheld only when it
//! is small itself (then in both plan dimensions) or when the planned episodes of the
//! clinic-month number fewer than k (then every part of both is). It stays as a guard
//! should rule 5 change, and `withheld_forcing` is tested on its own.
//!
//! The decision depends only on the clinic-month's sizes and the set of dimensions, not
//! on the order a query names them, so every query sees the same release of a part.
//!
//! # One dimension at a time
//!
//! The API groups by at most one dimension besides the clinic. For those groupings the
//! rules hold against any linear combination of what is shown: a test solves the whole
//! system (the total and every one-dimension grouping of a clinic-month, over its finest
//! parts) for random clinic-months and finds no withheld part of fewer than `k`, and no
//! two of them together, in its span. With cross-tabulations added (two dimensions at
//! once) the same attacker finds derivations: rows of two different cross-tabulations
//! can cover the same episodes, so a part withheld in one is shown in another. Keeping
//! arbitrary cross-tabulations safe takes suppression at the finest level (which hides
//! nearly everything at these clinic sizes) or perturbed counts (no longer exact), so
//! they are refused instead. The rules above are written for any number of dimensions,
//! and are at their most protective there, but they are only promised for one.
//!
//! A figure is the sum of the released parts of its group. So is the difference of
//! any two figures, across windows (a month more or less), clinic sets (a clinic more
//! or less) or groupings (a total against its groups): each released part holds at
//! least `k` episodes, and so does anything derived from them. A group none of whose
//! parts is released is not listed, and nothing tells which groups lost parts: a key
//! with a withheld part would tell that some patient of that clinic-month has it.
//!
//! Why not arbitrary windows with suppression of small answers: two windows one second
//! apart, holding 8 and 9 episodes, are both large enough, and their difference is one
//! patient. Whole months make the smallest difference a clinic-month, and rule 1 makes
//! that clinic-month either at least `k` episodes or absent from both answers.
//!
//! A group with no released part is not listed (its key would tell that a patient of
//! the window has it).
//!
//! What these rules do not promise: inside a released union of `k` or more episodes, a
//! statistic over fewer values (say, the one episode of nine with a score at session 6)
//! can be derived by differencing; it is attributed to the union, not to a person.
//! Figures reproduced at two log positions differ by what was recorded in between.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use uuid::Uuid;

use crate::statistics::{Dimension, MinCell};
use crate::tally::{Count, Tally};

/// A window of first evaluations in whole UTC months, `[from, to)`: each bound the first
/// day of a month, unbounded where None. Episodes without an evaluation are counted only
/// by a window with neither bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Months {
    /// The first month counted.
    pub from: Option<NaiveDate>,
    /// The first month no longer counted.
    pub to: Option<NaiveDate>,
}

impl Months {
    /// Whether an episode first evaluated in `month` (None: never) counts.
    #[must_use]
    pub fn contains(self, month: Option<NaiveDate>) -> bool {
        match month {
            Some(month) => {
                self.from.is_none_or(|from| month >= from) && self.to.is_none_or(|to| month < to)
            }
            None => self.from.is_none() && self.to.is_none(),
        }
    }
}

/// The month that `at` starts, if it is 00:00:00 UTC on the first day of a month
/// (to the nanosecond); None for any other instant.
#[must_use]
pub fn month_starting_at(at: DateTime<Utc>) -> Option<NaiveDate> {
    let date = at.date_naive();
    (date.day() == 1 && at.time() == NaiveTime::MIN).then_some(date)
}

/// The two dimensions that share a value: an episode without a plan is `no_plan` both by
/// initial sessions and by frequency phase, so those two parts are one set of episodes.
pub const PLAN_DIMENSIONS: [Dimension; 2] = [Dimension::InitialSessions, Dimension::FrequencyPhase];
/// The value the plan dimensions share.
pub const NO_PLAN: &str = "no_plan";

/// The tallies of a query's parts, by clinic-month and group key, before release.
#[derive(Debug, Clone)]
pub struct Parts {
    dimensions: Vec<Dimension>,
    by_clinic_month: BTreeMap<(Uuid, Option<NaiveDate>), BTreeMap<Vec<String>, Tally>>,
    /// Grouped by a plan dimension: the sizes of the other plan dimension's parts, by
    /// clinic-month and value.
    sibling: BTreeMap<(Uuid, Option<NaiveDate>), BTreeMap<Vec<String>, u64>>,
}

/// A group's figures after release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Released {
    /// The sum of the group's released parts (empty when none is released).
    pub tally: Tally,
    /// Whether any part of the group was withheld.
    pub withheld: bool,
}

impl Parts {
    /// No parts yet, for groups keyed by their values along `dimensions`.
    #[must_use]
    pub fn new(dimensions: &[Dimension]) -> Self {
        Self {
            dimensions: dimensions.to_vec(),
            by_clinic_month: BTreeMap::new(),
            sibling: BTreeMap::new(),
        }
    }

    /// The plan dimension the parts are grouped by, and the other one, whose release
    /// must agree with theirs on `no_plan` (none unless exactly one of them is grouped
    /// by).
    #[must_use]
    pub fn sibling_dimension(&self) -> Option<(Dimension, Dimension)> {
        let [first, second] = PLAN_DIMENSIONS;
        match (
            self.dimensions.contains(&first),
            self.dimensions.contains(&second),
        ) {
            (true, false) => Some((first, second)),
            (false, true) => Some((second, first)),
            _ => None,
        }
    }

    /// Adds `episodes` to the part of the sibling plan dimension (see
    /// [`Parts::sibling_dimension`]) with `value`, in `clinic` and `month`.
    pub fn add_sibling(
        &mut self,
        clinic: Uuid,
        month: Option<NaiveDate>,
        value: String,
        episodes: u64,
    ) {
        *self
            .sibling
            .entry((clinic, month))
            .or_default()
            .entry(vec![value])
            .or_default() += episodes;
    }

    /// Adds `tally` to the part of `clinic`, `month` and group `key`.
    pub fn add(&mut self, clinic: Uuid, month: Option<NaiveDate>, key: Vec<String>, tally: &Tally) {
        self.by_clinic_month
            .entry((clinic, month))
            .or_default()
            .entry(key)
            .or_default()
            .add(tally);
    }

    /// Applies the release rules part by part and sums what is released, by group key.
    /// Groups with no episodes at all are left out.
    #[must_use]
    pub fn release(mut self, min_cell: MinCell) -> BTreeMap<Vec<String>, Released> {
        let mut groups: BTreeMap<Vec<String>, Released> = BTreeMap::new();
        let sibling = self.sibling_dimension();
        for (clinic_month, parts) in self.by_clinic_month {
            let sizes: BTreeMap<&Vec<String>, u64> = parts
                .iter()
                .map(|(key, tally)| (key, episodes(tally)))
                .filter(|(_, size)| *size > 0)
                .collect();
            // Rule 4: `no_plan` withheld by the other plan dimension is withheld here too.
            let mut forced = BTreeSet::new();
            if let Some((grouped, other)) = sibling {
                let other_sizes = self.sibling.remove(&clinic_month).unwrap_or_default();
                let no_plan = vec![NO_PLAN.to_owned()];
                if withheld(&[other], &other_sizes, min_cell).contains(&no_plan) {
                    let position = self.dimensions.iter().position(|d| *d == grouped);
                    forced = sizes
                        .keys()
                        .filter(|key| position.is_some_and(|p| key[p] == NO_PLAN))
                        .map(|key| (*key).clone())
                        .collect();
                }
            }
            let withheld = withheld_forcing(&self.dimensions, &sizes, min_cell, &forced);
            for (key, tally) in &parts {
                if episodes(tally) == 0 {
                    continue;
                }
                let group = groups.entry(key.clone()).or_default();
                if withheld.contains(key) {
                    group.withheld = true;
                } else {
                    group.tally.add(tally);
                }
            }
        }
        groups
    }
}

fn episodes(tally: &Tally) -> u64 {
    u64::try_from(tally.count(Count::Episodes)).unwrap_or(0)
}

/// The parts of one clinic-month that are withheld, by the rules of the module: `sizes`
/// maps each part's key (its values along `dimensions`, in that order) to its episodes,
/// every size above zero and every key as long as `dimensions`.
#[must_use]
pub fn withheld<K: Ord + AsRef<[String]>>(
    dimensions: &[Dimension],
    sizes: &BTreeMap<K, u64>,
    min_cell: MinCell,
) -> BTreeSet<Vec<String>> {
    withheld_forcing(dimensions, sizes, min_cell, &BTreeSet::new())
}

/// [`withheld`], with the parts `forced` (keys as in `sizes`) withheld from the start
/// (rule 4), and never left as the only withheld part of a line: the total minus the
/// other parts would show it.
#[must_use]
pub fn withheld_forcing<K: Ord + AsRef<[String]>>(
    dimensions: &[Dimension],
    sizes: &BTreeMap<K, u64>,
    min_cell: MinCell,
    forced: &BTreeSet<Vec<String>>,
) -> BTreeSet<Vec<String>> {
    // Canonical positions: the dimensions in `Dimension::ALL` order, the clinic left out
    // (one clinic-month has one clinic, so it splits nothing).
    let mut order: Vec<usize> = (0..dimensions.len())
        .filter(|position| dimensions[*position] != Dimension::Clinic)
        .collect();
    order.sort_by_key(|position| dimensions[*position]);
    let canonical: BTreeMap<Vec<&str>, (&[String], u64)> = sizes
        .iter()
        .map(|(key, size)| {
            let key = key.as_ref();
            let canonical = order
                .iter()
                .map(|position| key[*position].as_str())
                .collect();
            (canonical, (key, *size))
        })
        .collect();
    let forced: BTreeSet<Vec<&str>> = canonical
        .iter()
        .filter(|(_, (original, _))| forced.contains(*original))
        .map(|(key, _)| key.clone())
        .collect();
    // Parts that tell nothing about plan-related figures (rule 5): `no_plan` along a plan
    // dimension.
    let plan_positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, position)| PLAN_DIMENSIONS.contains(&dimensions[**position]))
        .map(|(canonical, _)| canonical)
        .collect();
    let uninformative: BTreeSet<Vec<&str>> = canonical
        .keys()
        .filter(|key| plan_positions.iter().any(|p| key[*p] == NO_PLAN))
        .cloned()
        .collect();
    let parts: Vec<(Vec<&str>, u64)> = canonical
        .iter()
        .map(|(key, (_, size))| (key.clone(), *size))
        .collect();
    let full = (1_u32 << order.len()) - 1;
    let mut release = Release {
        k: min_cell.get() as u64,
        parts: &parts,
        full,
        forced,
        uninformative,
        memo: BTreeMap::new(),
    };
    let hidden = release.hidden(full);
    canonical
        .iter()
        .filter(|(key, _)| hidden.contains(*key))
        .map(|(_, (original, _))| original.to_vec())
        .collect()
}

/// The release of the coarser groupings of one clinic-month, worked out once each.
struct Release<'a> {
    k: u64,
    /// The finest parts: canonical key and size.
    parts: &'a [(Vec<&'a str>, u64)],
    /// The finest grouping's mask.
    full: u32,
    /// Finest parts withheld from the start (rule 4).
    forced: BTreeSet<Vec<&'a str>>,
    /// Finest parts that count for nothing towards the k a withheld set must hold (rule 5).
    uninformative: BTreeSet<Vec<&'a str>>,
    /// For each grouping (a mask of canonical positions): its hidden parts' keys, as the
    /// projection of the finest keys onto the mask.
    memo: BTreeMap<u32, BTreeSet<Vec<&'a str>>>,
}

impl<'a> Release<'a> {
    /// The hidden parts of the grouping `mask`.
    fn hidden(&mut self, mask: u32) -> BTreeSet<Vec<&'a str>> {
        if let Some(hidden) = self.memo.get(&mask) {
            return hidden.clone();
        }
        let mut sizes: BTreeMap<Vec<&'a str>, u64> = BTreeMap::new();
        for (key, size) in self.parts {
            *sizes.entry(project(key, mask)).or_default() += size;
        }
        let keys: Vec<Vec<&'a str>> = sizes.keys().cloned().collect();
        let size: Vec<u64> = sizes.values().copied().collect();
        // Rule 1: small parts. Rule 3: parts with a withheld margin one dimension coarser
        // (whose own release already carries every coarser one).
        let forced: Vec<bool> = keys
            .iter()
            .map(|key| mask == self.full && self.forced.contains(key))
            .collect();
        let mut hidden: Vec<bool> = size
            .iter()
            .zip(&forced)
            .map(|(n, forced)| *n < self.k || *forced)
            .collect();
        let weight: Vec<u64> = keys
            .iter()
            .zip(&size)
            .map(|(key, size)| {
                if mask == self.full && self.uninformative.contains(key) {
                    0
                } else {
                    *size
                }
            })
            .collect();
        for bit in (0..u32::BITS).filter(|bit| mask & (1 << bit) != 0) {
            let coarser = mask & !(1 << bit);
            let withheld = self.hidden(coarser);
            for (index, key) in keys.iter().enumerate() {
                if withheld.contains(&project_within(key, mask, coarser)) {
                    hidden[index] = true;
                }
            }
        }
        // Rule 2: lines, one per proper subset of the grouping's dimensions.
        let mut lines: Vec<Vec<usize>> = Vec::new();
        for margin in (0..mask).filter(|margin| margin & !mask == 0) {
            let mut by_margin: BTreeMap<Vec<&str>, Vec<usize>> = BTreeMap::new();
            for (index, key) in keys.iter().enumerate() {
                by_margin
                    .entry(project_within(key, mask, margin))
                    .or_default()
                    .push(index);
            }
            lines.extend(by_margin.into_values().filter(|line| line.len() > 1));
        }
        loop {
            let mut changed = false;
            for line in &lines {
                let hidden_weight: u64 = line
                    .iter()
                    .filter(|i| hidden[**i])
                    .map(|i| weight[*i])
                    .sum();
                let mut hidden_parts = line.iter().filter(|i| hidden[**i]);
                let (first, second) = (hidden_parts.next(), hidden_parts.next());
                let lone_forced = second.is_none() && first.is_some_and(|only| forced[*only]);
                if first.is_none() || (hidden_weight >= self.k && !lone_forced) {
                    continue;
                }
                // The smallest part still shown that counts, the first key on a tie.
                if let Some(next) = line
                    .iter()
                    .filter(|i| !hidden[**i])
                    .min_by_key(|i| (weight[**i] == 0, size[**i], **i))
                {
                    hidden[*next] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let hidden: BTreeSet<Vec<&'a str>> = keys
            .into_iter()
            .zip(hidden)
            .filter_map(|(key, hidden)| hidden.then_some(key))
            .collect();
        self.memo.insert(mask, hidden.clone());
        hidden
    }
}

/// A finest key's values at the positions of `mask`.
fn project<'a>(key: &[&'a str], mask: u32) -> Vec<&'a str> {
    key.iter()
        .enumerate()
        .filter(|(position, _)| mask & (1 << position) != 0)
        .map(|(_, value)| *value)
        .collect()
}

/// A key of the grouping `mask` (its values at `mask`'s positions, in order) projected
/// onto `margin`, a subset of `mask`.
fn project_within<'a>(key: &[&'a str], mask: u32, margin: u32) -> Vec<&'a str> {
    (0..u32::BITS)
        .filter(|bit| mask & (1 << bit) != 0)
        .zip(key)
        .filter(|(bit, _)| margin & (1 << bit) != 0)
        .map(|(_, value)| *value)
        .collect()
}
