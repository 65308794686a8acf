//! The release rules, attacked: whatever the total and every one-dimension grouping of a
//! clinic-month show, no withheld part of fewer than k episodes (nor two of them
//! together) can be worked out by adding and subtracting what is shown: the attacker
//! solves the linear system of everything shown, over the finest parts (every
//! combination of values), and checks whether a withheld part's episodes are in its
//! span. Combinations the domain rules out are known to it (the plan table).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use proptest::prelude::*;
use uuid::Uuid;

use super::statistics::row;
use crate::release::{Months, Parts, month_starting_at, withheld};
use crate::{Dimension, MinCell, Tally, aggregate};

const DIMENSIONS: [Dimension; 3] = [
    Dimension::Diagnosis,
    Dimension::AdherenceBand,
    Dimension::AgeBand,
];
/// Values per dimension: a 3 x 3 x 2 table of finest parts.
const VALUES: [usize; 3] = [3, 3, 2];

fn min_cell(k: usize) -> MinCell {
    MinCell::new(k).expect("k >= 3")
}

/// The finest parts: one per combination of values, in row-major order.
fn finest_keys() -> Vec<Vec<String>> {
    let mut keys = vec![Vec::new()];
    for (dimension, values) in VALUES.iter().enumerate() {
        keys = keys
            .into_iter()
            .flat_map(|key| {
                (0..*values).map(move |value| {
                    let mut key = key.clone();
                    key.push(format!("d{dimension}v{value}"));
                    key
                })
            })
            .collect();
    }
    keys
}

/// One grouping's parts (key to size and the finest parts inside), from the finest sizes.
type Grouped = BTreeMap<Vec<String>, (u64, BTreeSet<usize>)>;

/// A part's finest parts include the empty ones: nothing released tells an attacker
/// which combinations of values no episode has (those the domain rules out, like a
/// frequency phase without a plan, are another test's: the plan table below).
fn grouped(sizes: &[u64], mask: usize) -> Grouped {
    let mut parts: Grouped = BTreeMap::new();
    for (index, key) in finest_keys().into_iter().enumerate() {
        let key: Vec<String> = key
            .into_iter()
            .enumerate()
            .filter(|(position, _)| mask & (1 << position) != 0)
            .map(|(_, value)| value)
            .collect();
        let part = parts.entry(key).or_default();
        part.0 += sizes[index];
        part.1.insert(index);
    }
    parts.retain(|_, (size, _)| *size > 0);
    parts
}

fn dimensions_of(mask: usize) -> Vec<Dimension> {
    (0..DIMENSIONS.len())
        .filter(|position| mask & (1 << position) != 0)
        .map(|position| DIMENSIONS[position])
        .collect()
}

/// Linear combinations of the finest parts' sizes: a basis in echelon form.
#[derive(Default)]
struct Span {
    rows: Vec<(usize, Vec<f64>)>,
}

impl Span {
    fn residual(&self, mut vector: Vec<f64>) -> Vec<f64> {
        for (pivot, row) in &self.rows {
            let factor = vector[*pivot] / row[*pivot];
            if factor != 0.0 {
                for (value, r) in vector.iter_mut().zip(row) {
                    *value -= factor * r;
                }
            }
        }
        vector
    }

    fn add(&mut self, vector: Vec<f64>) {
        let residual = self.residual(vector);
        if let Some(pivot) = residual.iter().position(|value| value.abs() > 1e-9) {
            self.rows.push((pivot, residual));
        }
    }

    fn contains(&self, vector: Vec<f64>) -> bool {
        self.residual(vector).iter().all(|value| value.abs() < 1e-9)
    }
}

fn indicator(parts: &BTreeSet<usize>, width: usize) -> Vec<f64> {
    (0..width)
        .map(|index| if parts.contains(&index) { 1.0 } else { 0.0 })
        .collect()
}

/// Every grouping's release of one clinic-month; panics with the derivation if a
/// withheld part of fewer than k episodes, or two withheld parts of one grouping holding
/// fewer than k together, lie in the span of what is shown.
fn assert_nothing_small_derivable(sizes: &[u64], k: usize) {
    let width = sizes.len();
    let mut shown = Span::default();
    let mut hidden: Vec<(usize, u64, BTreeSet<usize>)> = Vec::new();
    // The groupings the API answers: the total and each dimension alone. (With pairs of
    // dimensions as well, this attacker finds derivations: see the module's docs.)
    for mask in (0..(1_usize << DIMENSIONS.len())).filter(|mask| mask.count_ones() <= 1) {
        let parts = grouped(sizes, mask);
        let query: BTreeMap<Vec<String>, u64> = parts
            .iter()
            .map(|(key, (size, _))| (key.clone(), *size))
            .collect();
        let withheld = withheld(&dimensions_of(mask), &query, min_cell(k));
        for (key, (size, inside)) in parts {
            if withheld.contains(&key) {
                hidden.push((mask, size, inside));
            } else {
                assert!(size >= k as u64, "a part of {size} < {k} is shown");
                shown.add(indicator(&inside, width));
            }
        }
    }
    for (mask, size, inside) in &hidden {
        if *size < k as u64 {
            assert!(
                !shown.contains(indicator(inside, width)),
                "grouping {mask:03b}: a withheld part of {size} can be derived from {sizes:?}"
            );
        }
    }
    for (i, (mask, size, inside)) in hidden.iter().enumerate() {
        for (other_mask, other_size, other) in &hidden[i + 1..] {
            if mask == other_mask && size + other_size < k as u64 {
                let union: BTreeSet<usize> = inside.union(other).copied().collect();
                assert!(
                    !shown.contains(indicator(&union, width)),
                    "grouping {mask:03b}: two withheld parts of {size} and {other_size} \
                     together can be derived from {sizes:?}"
                );
            }
        }
    }
}

fn part_size() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0_u64), 3 => 1_u64..8, 4 => 8_u64..40]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_small_withheld_part_can_be_derived_from_every_grouping(
        sizes in prop::collection::vec(part_size(), 18),
        k in prop_oneof![Just(3_usize), Just(5), Just(8)],
    ) {
        assert_nothing_small_derivable(&sizes, k);
    }

    #[test]
    fn the_release_does_not_depend_on_the_order_dimensions_are_named(
        sizes in prop::collection::vec(part_size(), 18),
    ) {
        let forward = grouped(&sizes, 0b111);
        let query: BTreeMap<Vec<String>, u64> =
            forward.iter().map(|(key, (size, _))| (key.clone(), *size)).collect();
        let reversed: BTreeMap<Vec<String>, u64> = query
            .iter()
            .map(|(key, size)| (key.iter().rev().cloned().collect(), *size))
            .collect();
        let mut names = DIMENSIONS.to_vec();
        let hidden = withheld(&names, &query, MinCell::DEFAULT);
        names.reverse();
        let hidden_reversed: BTreeSet<Vec<String>> = withheld(&names, &reversed, MinCell::DEFAULT)
            .into_iter()
            .map(|key| key.into_iter().rev().collect())
            .collect();
        prop_assert_eq!(hidden, hidden_reversed);
    }
}

/// Cases a person can check by hand (k = 8).
#[test]
fn worked_examples() {
    let one = |sizes: &[(&str, u64)]| -> BTreeSet<String> {
        let query: BTreeMap<Vec<String>, u64> = sizes
            .iter()
            .map(|(key, size)| (vec![(*key).to_owned()], *size))
            .collect();
        withheld(&[Dimension::Diagnosis], &query, MinCell::DEFAULT)
            .into_iter()
            .map(|mut key| key.remove(0))
            .collect()
    };
    let set = |keys: &[&str]| keys.iter().map(|key| (*key).to_owned()).collect();
    // Nothing small: everything shown.
    assert_eq!(one(&[("a", 8), ("b", 30)]), set(&[]));
    // One small part: the total minus the other would give it away, so the smallest
    // other part goes too.
    assert_eq!(one(&[("a", 3), ("b", 20), ("c", 9)]), set(&["a", "c"]));
    // Two small parts holding 8 between them protect each other.
    assert_eq!(one(&[("a", 3), ("b", 5), ("c", 20)]), set(&["a", "b"]));
    // Two holding 7 do not: a third goes.
    assert_eq!(
        one(&[("a", 3), ("b", 4), ("c", 20), ("d", 30)]),
        set(&["a", "b", "c"])
    );
    // A clinic-month of 7 is withheld whole.
    assert_eq!(one(&[("a", 4), ("b", 3)]), set(&["a", "b"]));
    // The grouping by diagnosis and age band of a month whose diagnosis margin withheld
    // B (to protect A) withholds all of B's row, though each of its parts is large.
    let two: BTreeMap<Vec<String>, u64> = [
        (["A", "young"], 3),
        (["B", "old"], 9),
        (["C", "young"], 15),
        (["C", "old"], 15),
    ]
    .into_iter()
    .map(|(key, size)| (key.map(str::to_owned).to_vec(), size))
    .collect();
    let hidden = withheld(
        &[Dimension::Diagnosis, Dimension::AgeBand],
        &two,
        MinCell::DEFAULT,
    );
    assert!(hidden.contains(&vec!["B".to_owned(), "old".to_owned()]));
    assert!(hidden.contains(&vec!["A".to_owned(), "young".to_owned()]));
}

/// Figures over windows and clinic sets add released parts only, so the difference of
/// two of them is made of parts of at least k episodes.
#[test]
fn windows_and_clinic_sets_differ_by_released_parts_only() {
    let clinic = Uuid::from_u128(1);
    let other = Uuid::from_u128(2);
    let march = NaiveDate::from_ymd_opt(2026, 3, 1);
    let april = NaiveDate::from_ymd_opt(2026, 4, 1);
    let may = NaiveDate::from_ymd_opt(2026, 5, 1);
    let episode = |clinic: Uuid, month: Option<NaiveDate>, pain: u8| {
        let mut episode = row(0, 0);
        episode.clinic_id = clinic;
        episode.evaluated_at = month
            .and_then(|m| m.and_hms_opt(10, 0, 0))
            .map(|at| at.and_utc());
        episode.baseline_pain_back = Some(pain);
        episode
    };
    let mut episodes: Vec<_> = (0..9).map(|_| episode(clinic, march, 7)).collect();
    episodes.push(episode(clinic, april, 1));
    episodes.extend((0..3).map(|_| episode(other, march, 1)));
    let figure = |window: Months, clinics: &[Uuid]| {
        let cohort: Vec<_> = episodes
            .iter()
            .filter(|e| window.contains(e.evaluated_month()) && clinics.contains(&e.clinic_id))
            .cloned()
            .collect();
        let groups = aggregate(&cohort, &[], MinCell::DEFAULT);
        assert!(groups.len() <= 1);
        groups.first().map(|group| {
            let s = group.statistics.as_ref().expect("a listed group is shown");
            (
                s.episodes,
                s.baseline_nrs.expect("baselines").mean,
                group.partial,
            )
        })
    };
    let march_only = Months {
        from: march,
        to: april,
    };
    let spring = Months {
        from: march,
        to: may,
    };
    assert_eq!(figure(march_only, &[clinic]), Some((9, 7.0, false)));
    assert_eq!(figure(spring, &[clinic]), Some((9, 7.0, true)));
    assert_eq!(
        figure(
            Months {
                from: april,
                to: may
            },
            &[clinic]
        ),
        None,
        "nothing released, nothing listed"
    );
    assert_eq!(figure(march_only, &[clinic, other]), Some((9, 7.0, true)));
    assert_eq!(
        figure(Months::default(), &[clinic, other]),
        Some((9, 7.0, true))
    );
    // Parts are released per clinic-month, whatever else the query holds.
    let mut parts = Parts::new(&[]);
    for e in &episodes {
        parts.add(e.clinic_id, e.evaluated_month(), Vec::new(), &Tally::of(e));
    }
    let released = parts.release(MinCell::DEFAULT);
    assert_eq!(released[&Vec::new()].tally.count(crate::Count::Episodes), 9);
}

#[test]
fn windows_are_whole_utc_months() {
    use chrono::{TimeZone, Utc};
    let start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    assert_eq!(
        month_starting_at(start),
        NaiveDate::from_ymd_opt(2026, 3, 1)
    );
    assert_eq!(
        month_starting_at(start + chrono::Duration::nanoseconds(1)),
        None
    );
    assert_eq!(
        month_starting_at(start - chrono::Duration::seconds(1)),
        None
    );
    assert_eq!(month_starting_at(start + chrono::Duration::days(1)), None);
    let window = Months {
        from: NaiveDate::from_ymd_opt(2026, 3, 1),
        to: NaiveDate::from_ymd_opt(2026, 4, 1),
    };
    assert!(window.contains(NaiveDate::from_ymd_opt(2026, 3, 1)));
    assert!(!window.contains(NaiveDate::from_ymd_opt(2026, 4, 1)));
    assert!(
        !window.contains(None),
        "no evaluation: only in an unbounded window"
    );
    assert!(Months::default().contains(None));
}

/// The plan table: initial sessions x frequency phase, where an episode without a plan
/// is `no_plan` in both (and no other cell holds `no_plan`). Cells, in order:
/// (no_plan, no_plan), (4, initial_only), (4, intensive), (6, initial_only),
/// (6, intensive).
const PLAN_CELLS: [(Option<u8>, crate::FrequencyPhase); 5] = [
    (None, crate::FrequencyPhase::NoPlan),
    (Some(4), crate::FrequencyPhase::InitialOnly),
    (Some(4), crate::FrequencyPhase::Intensive),
    (Some(6), crate::FrequencyPhase::InitialOnly),
    (Some(6), crate::FrequencyPhase::Intensive),
];

/// One clinic-month of the plan table with `sizes[i]` episodes in cell `i`.
fn plan_month(sizes: &[u64]) -> Vec<crate::EpisodeOutcome> {
    let mut episodes = Vec::new();
    for (cell, size) in PLAN_CELLS.iter().zip(sizes) {
        for _ in 0..*size {
            let mut episode = row(1, episodes.len() as u128);
            episode.initial_sessions = cell.0;
            episode.frequency_phase = cell.1;
            episode.evaluated_at = NaiveDate::from_ymd_opt(2026, 3, 1)
                .and_then(|day| day.and_hms_opt(9, 0, 0))
                .map(|at| at.and_utc());
            episodes.push(episode);
        }
    }
    episodes
}

/// Everything the total, the grouping by initial sessions and the grouping by frequency
/// phase show of one clinic-month of the plan table; panics if a withheld part of fewer
/// than k episodes (or two withheld parts of one grouping holding fewer than k) can be
/// derived from it.
fn assert_plan_parts_underivable(sizes: &[u64], k: usize) {
    let width = sizes.len();
    let episodes = plan_month(sizes);
    let mut shown = Span::default();
    let mut hidden: Vec<(Dimension, u64, BTreeSet<usize>)> = Vec::new();
    let total: u64 = sizes.iter().sum();
    let every: BTreeSet<usize> = (0..width).collect();
    if total >= k as u64 {
        shown.add(indicator(&every, width));
    } else if total > 0 {
        hidden.push((Dimension::Clinic, total, every));
    }
    for dimension in [Dimension::InitialSessions, Dimension::FrequencyPhase] {
        let listed: BTreeMap<String, usize> = aggregate(&episodes, &[dimension], min_cell(k))
            .into_iter()
            .map(|group| (group.key[0].1.clone(), group.episodes.expect("listed")))
            .collect();
        // The part of each value: its cells, empty ones included (which plan cells are
        // empty is nothing the attacker is told; only the domain's zeros, the cells
        // PLAN_CELLS leaves out, are known).
        let mut parts: BTreeMap<String, (u64, BTreeSet<usize>)> = BTreeMap::new();
        for (index, (sessions, phase)) in PLAN_CELLS.iter().enumerate() {
            let value = match dimension {
                Dimension::InitialSessions => {
                    sessions.map_or_else(|| "no_plan".to_owned(), |n| n.to_string())
                }
                _ => phase.as_str().to_owned(),
            };
            let part = parts.entry(value).or_default();
            part.0 += sizes[index];
            part.1.insert(index);
        }
        for (value, (size, inside)) in parts {
            if size == 0 {
                continue;
            }
            match listed.get(&value) {
                Some(episodes) => {
                    assert_eq!(*episodes as u64, size, "one clinic-month: whole parts");
                    assert!(size >= k as u64);
                    shown.add(indicator(&inside, width));
                }
                None => hidden.push((dimension, size, inside)),
            }
        }
    }
    for (dimension, size, inside) in &hidden {
        if *size < k as u64 {
            assert!(
                !shown.contains(indicator(inside, width)),
                "{dimension}: a withheld part of {size} can be derived from {sizes:?}"
            );
        }
    }
    // Counts that only planned episodes have (sessions, missed sessions, adverse
    // events): the attacker knows `no_plan` adds 0 to them, so its cell is known. No
    // withheld set of fewer than k planned episodes may then be derivable.
    let mut planned = Span::default();
    for row in &shown.rows {
        planned.add(row.1.clone());
    }
    planned.add(indicator(&BTreeSet::from([0]), width));
    // (All the planned episodes of the clinic-month are what the shown total's plan
    // counts are about: a statistic over fewer values inside a released group, which the
    // rules do not promise to hide.)
    let all_planned: BTreeSet<usize> = (1..width).collect();
    for (dimension, _, inside) in &hidden {
        let planned_inside: BTreeSet<usize> = inside.iter().copied().filter(|i| *i != 0).collect();
        let size: u64 = planned_inside.iter().map(|i| sizes[*i]).sum();
        if size > 0 && size < k as u64 && planned_inside != all_planned {
            assert!(
                !planned.contains(indicator(&planned_inside, width)),
                "{dimension}: the plan counts of {size} withheld planned episodes can be \
                 derived from {sizes:?}, knowing no_plan has none"
            );
        }
    }
    for (i, (dimension, size, inside)) in hidden.iter().enumerate() {
        for (other_dimension, other_size, other) in &hidden[i + 1..] {
            if dimension == other_dimension && size + other_size < k as u64 {
                let union: BTreeSet<usize> = inside.union(other).copied().collect();
                assert!(
                    !shown.contains(indicator(&union, width)),
                    "{dimension}: withheld parts of {size} and {other_size} together can \
                     be derived from {sizes:?}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_plan_shared_by_two_dimensions_does_not_undo_their_suppression(
        sizes in prop::collection::vec(part_size(), 5),
        k in prop_oneof![Just(3_usize), Just(5), Just(8)],
    ) {
        assert_plan_parts_underivable(&sizes, k);
    }
}

/// The case a review found (k = 8): by frequency phase, `initial_only` (3) is small.
/// Withholding `no_plan` (10) with it would let the total minus `intensive` give the
/// three's session counts (`no_plan` has none), so `intensive` goes with it instead, and
/// `no_plan` is shown by both plan dimensions.
#[test]
fn no_plan_never_stands_in_for_a_small_plan_part() {
    let episodes = plan_month(&[10, 0, 0, 3, 27]);
    let listed = |dimension| -> Vec<String> {
        aggregate(&episodes, &[dimension], MinCell::DEFAULT)
            .into_iter()
            .map(|group| group.key[0].1.clone())
            .collect()
    };
    assert_eq!(listed(Dimension::FrequencyPhase), ["no_plan"]);
    assert_eq!(listed(Dimension::InitialSessions), ["6", "no_plan"]);
    assert_plan_parts_underivable(&[10, 0, 0, 3, 27], 8);
}

/// Rule 4's mechanism, on its own: a forced part is withheld, and never alone.
#[test]
fn a_forced_part_is_withheld_with_a_companion() {
    use crate::release::withheld_forcing;
    let sizes: BTreeMap<Vec<String>, u64> = [("a", 20_u64), ("b", 9), ("c", 30)]
        .into_iter()
        .map(|(key, size)| (vec![key.to_owned()], size))
        .collect();
    let forced = BTreeSet::from([vec!["a".to_owned()]]);
    let hidden = withheld_forcing(&[Dimension::Diagnosis], &sizes, MinCell::DEFAULT, &forced);
    // "a" holds 20 (at least k), yet alone the total minus the rest would show it: the
    // smallest other part ("b") goes with it.
    assert_eq!(
        hidden,
        BTreeSet::from([vec!["a".to_owned()], vec!["b".to_owned()]])
    );
    assert!(withheld(&[Dimension::Diagnosis], &sizes, MinCell::DEFAULT).is_empty());
}
