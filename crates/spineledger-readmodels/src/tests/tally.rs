//! Tallies: exact sums that cells and episode rows share, and the cells an episode moves
//! between.

use chrono::{TimeZone, Utc};

use super::statistics::{row, rows};
use crate::release::Parts;
use crate::{
    AdherenceBand, Cell, Count, Dimension, Grouping, Median, MinCell, ResponderStatus, aggregate,
    cell_changes, groups,
};

#[test]
fn odi_means_are_exact_sums_of_the_recorded_decimals() {
    let mut episodes = rows(1, 3);
    for (episode, odi) in episodes.iter_mut().zip([0.1, 0.2, 0.3]) {
        episode.baseline_odi = Some(odi);
    }
    let stats = aggregate(&episodes, &[], MinCell::SMALLEST)[0]
        .statistics
        .clone()
        .unwrap();
    // Summed as floats, 0.1 + 0.2 + 0.3 is 0.6000000000000001; in nanopoints it is 0.6.
    assert_eq!(stats.baseline_odi.unwrap().mean, 0.2);
}

#[test]
fn the_median_of_sessions_to_response_comes_exactly_from_the_histogram() {
    let median_of = |sessions: &[u32]| {
        let episodes: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(n, sessions)| {
                let mut episode = row(1, n as u128);
                episode.nrs_response = ResponderStatus::Responder;
                episode.sessions_to_first_nrs_response = Some(*sessions);
                episode
            })
            .collect();
        aggregate(&episodes, &[], MinCell::SMALLEST)[0]
            .statistics
            .clone()
            .unwrap()
            .sessions_to_first_nrs_response
    };
    assert_eq!(median_of(&[7, 2, 3]), Some(Median { n: 3, median: 3.0 }));
    assert_eq!(
        median_of(&[2, 9, 3, 40]),
        Some(Median { n: 4, median: 6.0 })
    );
    assert_eq!(median_of(&[4, 4, 1, 4]), Some(Median { n: 4, median: 4.0 }));
}

#[test]
fn an_episode_counts_in_one_cell_of_every_kept_grouping() {
    let mut episode = row(1, 1);
    episode.evaluated_at = Some(Utc.with_ymd_and_hms(2026, 3, 31, 23, 59, 59).unwrap());
    let cells = Cell::of(&episode);
    assert_eq!(cells.len(), Grouping::KEPT.len());
    let months: Vec<_> = cells.iter().map(|cell| cell.month).collect();
    assert!(
        months
            .iter()
            .all(|month| month.unwrap().to_string() == "2026-03-01"),
        "{months:?}"
    );
    let total = cells
        .iter()
        .find(|cell| cell.grouping == Grouping::NONE)
        .unwrap();
    assert_eq!(total.values, [None, None, None, None, None]);
    let every = cells
        .iter()
        .find(|cell| cell.grouping == Grouping::EVERY)
        .unwrap();
    assert_eq!(
        every.group_key(&[Dimension::AgeBand, Dimension::Clinic, Dimension::Diagnosis]),
        Some(vec![
            "45-59".to_owned(),
            episode.clinic_id.to_string(),
            "ICD10:M51.2".to_owned()
        ])
    );
    assert_eq!(total.group_key(&[Dimension::Diagnosis]), None);
}

#[test]
fn a_moved_episode_leaves_its_old_cells_and_joins_its_new_ones() {
    let before = row(1, 1);
    let mut after = before.clone();
    after.adherence_band = AdherenceBand::High;
    after.missed_sessions = 2;
    let changes = cell_changes([(Some(&before), &after)]);
    for (cell, change) in &changes {
        let keeps_adherence = cell.grouping.keeps(Dimension::AdherenceBand);
        let episodes = change.count(Count::Episodes);
        if keeps_adherence {
            // Out of the old band's cell, into the new one's.
            let into_high = cell.values[3].as_deref() == Some("high");
            assert_eq!(episodes, if into_high { 1 } else { -1 }, "{cell:?}");
        } else {
            // Still in the same cell: only what changed moves.
            assert_eq!(episodes, 0, "{cell:?}");
            assert_eq!(change.count(Count::MissedSessions), 2);
            assert_eq!(change.count(Count::AdherenceHigh), 1);
            assert_eq!(change.count(Count::AdherenceNoneReported), -1);
        }
    }
    // An unchanged episode changes no cell.
    assert!(cell_changes([(Some(&before), &before)]).is_empty());
}

#[test]
fn cells_summed_along_any_grouping_equal_the_episodes_aggregated() {
    let mut episodes = rows(1, 20);
    episodes.extend(rows(2, 12));
    for (n, episode) in episodes.iter_mut().enumerate() {
        episode.adherence_band = [AdherenceBand::Low, AdherenceBand::High][n % 2];
        episode.initial_sessions = Some([4, 5, 6][n % 3]);
        episode.baseline_pain_back = Some((n % 11) as u8);
        episode.baseline_odi = Some(n as f64 * 1.7);
    }
    let cells = cell_changes(episodes.iter().map(|episode| (None, episode)));
    for group_by in [
        vec![],
        vec![Dimension::Clinic],
        vec![Dimension::AdherenceBand],
        vec![Dimension::InitialSessions, Dimension::Clinic],
        vec![Dimension::AdherenceBand, Dimension::InitialSessions],
    ] {
        let grouping = Grouping::serving(&group_by);
        let mut parts = Parts::new(&group_by);
        for (cell, tally) in cells.iter().filter(|(cell, _)| cell.grouping == grouping) {
            parts.add(
                cell.clinic_id,
                cell.month,
                cell.group_key(&group_by).unwrap(),
                tally,
            );
        }
        assert_eq!(
            groups(
                parts.release(MinCell::SMALLEST),
                &group_by,
                MinCell::SMALLEST
            ),
            aggregate(&episodes, &group_by, MinCell::SMALLEST),
            "{group_by:?}"
        );
    }
}

#[test]
fn the_serving_grouping_is_the_smallest_kept_one() {
    assert_eq!(Grouping::serving(&[]), Grouping::NONE);
    assert_eq!(Grouping::serving(&[Dimension::Clinic]), Grouping::NONE);
    let one = Grouping::serving(&[Dimension::Clinic, Dimension::AgeBand]);
    assert!(one.keeps(Dimension::AgeBand) && !one.keeps(Dimension::Diagnosis));
    assert_eq!(
        Grouping::serving(&[Dimension::AgeBand, Dimension::Diagnosis]),
        Grouping::EVERY
    );
    for grouping in Grouping::KEPT {
        assert_eq!(Grouping::from_bits(grouping.bits()), Some(grouping));
    }
}
