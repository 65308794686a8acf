use std::collections::BTreeMap;
use std::str::FromStr;

use spineledger_domain::measures::DischargeReason;
use uuid::Uuid;

use crate::{
    AdherenceBand, AgeBand, Dimension, DischargeCounts, EpisodeOutcome, FollowUpScores,
    FrequencyPhase, Mean, Median, MinCell, Proportion, ResponderStatus, aggregate,
};

pub(super) fn row(clinic: u128, episode: u128) -> EpisodeOutcome {
    let mut outcome = EpisodeOutcome::new(Uuid::from_u128(clinic), Uuid::from_u128(episode));
    outcome.age_band = Some(AgeBand::From45To59);
    outcome.primary_diagnosis = Some("ICD10:M51.2".to_owned());
    outcome.initial_sessions = Some(4);
    outcome.frequency_phase = FrequencyPhase::InitialOnly;
    outcome
}

pub(super) fn rows(clinic: u128, count: u128) -> Vec<EpisodeOutcome> {
    (0..count).map(|n| row(clinic, clinic * 1000 + n)).collect()
}

fn scores(pain_back: u8, odi: Option<f64>) -> Option<FollowUpScores> {
    Some(FollowUpScores { pain_back, odi })
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

/// Four episodes whose statistics are computed by hand in the test below.
fn hand_computed_rows() -> Vec<EpisodeOutcome> {
    let mut first = row(1, 1);
    first.baseline_pain_back = Some(8);
    first.baseline_odi = Some(50.0);
    first.at_session_4 = scores(5, Some(40.0));
    first.at_session_6 = scores(4, Some(30.0));
    first.at_discharge = scores(2, Some(20.0));
    first.nrs_response = ResponderStatus::Responder;
    first.odi_response = ResponderStatus::Responder;
    first.sessions_to_first_nrs_response = Some(2);
    first.pain_before_by_session = BTreeMap::from([(1, 8), (2, 7)]);
    first.adherence_band = AdherenceBand::High;
    first.missed_sessions = 1;
    first.discharge_reason = Some(DischargeReason::GoalsMet);
    first.initial_phase_completed = true;
    first.scores_corrected = true;

    let mut second = row(1, 2);
    second.baseline_pain_back = Some(6);
    second.baseline_odi = Some(30.0);
    second.at_session_4 = scores(5, Some(28.0));
    second.nrs_response = ResponderStatus::NonResponder;
    second.odi_response = ResponderStatus::NonResponder;
    second.pain_before_by_session = BTreeMap::from([(1, 6), (2, 6)]);
    second.adherence_band = AdherenceBand::Low;
    second.missed_sessions = 2;
    second.adverse_events = 1;

    let mut third = row(1, 3);
    third.baseline_pain_back = Some(7);
    third.baseline_odi = Some(44.0);
    third.at_session_4 = scores(4, Some(34.0));
    third.at_session_6 = scores(3, None);
    third.at_discharge = scores(3, Some(34.0));
    third.nrs_response = ResponderStatus::Responder;
    third.odi_response = ResponderStatus::Responder;
    third.sessions_to_first_nrs_response = Some(4);
    third.pain_before_by_session = BTreeMap::from([(1, 7)]);
    third.discharge_reason = Some(DischargeReason::SelfDischarge);
    third.initial_phase_completed = true;

    let mut fourth = row(1, 4);
    fourth.baseline_pain_back = Some(5);
    fourth.baseline_odi = Some(20.0);
    fourth.pain_before_by_session = BTreeMap::from([(1, 5)]);
    fourth.discharge_reason = Some(DischargeReason::LostToFollowUp);

    vec![first, second, third, fourth]
}

#[test]
fn means_rates_and_counts_match_a_hand_computed_example() {
    let groups = aggregate(&hand_computed_rows(), &[], MinCell::SMALLEST);
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    assert!(group.key.is_empty());
    assert_eq!(group.episodes, Some(4));
    let stats = group.statistics.as_ref().unwrap();
    assert_eq!(stats.episodes, 4);
    assert_eq!(stats.initial_phase_completed, 2);

    let baseline_nrs = stats.baseline_nrs.unwrap();
    assert_eq!(baseline_nrs.n, 4);
    assert_close(baseline_nrs.mean, 6.5);
    assert_close(stats.baseline_odi.unwrap().mean, 36.0);

    // Session 4: NRS -3, -1, -3; ODI -10, -2, -10.
    let nrs_4 = stats.nrs_change_session_4.unwrap();
    assert_eq!(nrs_4.n, 3);
    assert_close(nrs_4.mean, -7.0 / 3.0);
    assert_close(stats.odi_change_session_4.unwrap().mean, -22.0 / 3.0);
    // Session 6 and discharge have two values each: fewer than 3, suppressed.
    assert_eq!(stats.nrs_change_session_6, None);
    assert_eq!(stats.odi_change_session_6, None);
    assert_eq!(stats.nrs_change_discharge, None);
    assert_eq!(stats.odi_change_discharge, None);

    let nrs_responders = stats.nrs_responders.unwrap();
    assert_eq!((nrs_responders.n, nrs_responders.count), (3, 2));
    assert_close(nrs_responders.rate, 2.0 / 3.0);
    // Two responders only: the median is suppressed at a minimum cell of 3.
    assert_eq!(stats.sessions_to_first_nrs_response, None);

    assert_eq!(stats.pain_trajectory.len(), 12);
    let first_point = stats.pain_trajectory[0];
    assert_eq!(first_point.session_number, 1);
    assert_eq!(first_point.mean_pain_before, Some(Mean { n: 4, mean: 6.5 }));
    assert_eq!(stats.pain_trajectory[1].mean_pain_before, None);

    assert_eq!(stats.adherence_bands.high, 1);
    assert_eq!(stats.adherence_bands.low, 1);
    assert_eq!(stats.adherence_bands.moderate, 0);
    assert_eq!(stats.adherence_bands.none_reported, 2);
    assert_eq!(stats.missed_sessions, 3);
    assert_eq!(stats.adverse_events, 1);
    assert_eq!(stats.episodes_with_adverse_events, 1);
    assert_eq!(
        stats.discharges,
        DischargeCounts {
            goals_met: 1,
            self_discharge: 1,
            lost_to_follow_up: 1,
            ongoing: 1,
            ..DischargeCounts::default()
        }
    );
    assert_eq!(stats.drop_outs, 2);
    assert_eq!(stats.scores_corrected, 1);
}

#[test]
fn statistics_hidden_behind_two_values_show_with_a_third() {
    // At the smallest cell (3), session 6, discharge, the median and session 2 of the
    // trajectory have two values each in the hand-computed rows: hidden. A fifth
    // episode gives each a third value.
    let hidden = aggregate(&hand_computed_rows(), &[], MinCell::SMALLEST);
    let stats = hidden[0].statistics.as_ref().unwrap();
    assert_eq!(stats.nrs_change_session_6, None);
    assert_eq!(stats.sessions_to_first_nrs_response, None);

    let mut fifth = row(1, 5);
    fifth.baseline_pain_back = Some(9);
    fifth.baseline_odi = Some(40.0);
    fifth.at_session_6 = scores(6, None);
    fifth.at_discharge = scores(3, Some(10.0));
    fifth.nrs_response = ResponderStatus::Responder;
    fifth.odi_response = ResponderStatus::Responder;
    fifth.sessions_to_first_nrs_response = Some(5);
    fifth.pain_before_by_session = BTreeMap::from([(1, 9), (2, 8)]);
    fifth.discharge_reason = Some(DischargeReason::GoalsMet);
    let mut episodes = hand_computed_rows();
    episodes.push(fifth);
    let groups = aggregate(&episodes, &[], MinCell::SMALLEST);
    let stats = groups[0].statistics.as_ref().unwrap();
    // Session 6: NRS 4-8, 3-7, 6-9 = -4, -4, -3.
    let session_6 = stats.nrs_change_session_6.unwrap();
    assert_eq!(session_6.n, 3);
    assert_close(session_6.mean, -11.0 / 3.0);
    // Discharge: NRS -6, -4, -6; ODI 20-50, 34-44, 10-40 = -30, -10, -30.
    assert_close(stats.nrs_change_discharge.unwrap().mean, -16.0 / 3.0);
    assert_close(stats.odi_change_discharge.unwrap().mean, -70.0 / 3.0);
    // Median of 2, 4 and 5 over the responders.
    assert_eq!(
        stats.sessions_to_first_nrs_response,
        Some(Median { n: 3, median: 4.0 })
    );
    // Session 2 before treatment: 7, 6, 8.
    assert_eq!(
        stats.pain_trajectory[1].mean_pain_before,
        Some(Mean { n: 3, mean: 7.0 })
    );
}

#[test]
fn a_minimum_cell_below_three_cannot_be_made() {
    assert!(MinCell::new(2).is_err());
    assert!(MinCell::new(0).is_err());
    assert_eq!(MinCell::new(3).map(MinCell::get), Ok(3));
    assert_eq!(MinCell::default().get(), 8);
    assert!("1".parse::<MinCell>().is_err());
    assert_eq!("12".parse::<MinCell>().map(MinCell::get), Ok(12));
}

#[test]
fn the_median_of_an_odd_count_is_the_middle_value() {
    let mut episodes = hand_computed_rows();
    episodes[1].nrs_response = ResponderStatus::Responder;
    episodes[1].sessions_to_first_nrs_response = Some(9);
    let groups = aggregate(&episodes, &[], MinCell::SMALLEST);
    assert_eq!(
        groups[0]
            .statistics
            .as_ref()
            .unwrap()
            .sessions_to_first_nrs_response,
        Some(Median { n: 3, median: 4.0 })
    );
}

#[test]
fn the_median_sessions_to_response_is_over_responders_at_the_latest_follow_up() {
    // Three responders at the latest follow-up, and three episodes that met the threshold
    // early but are non-responders or not assessed at the latest follow-up.
    let mut episodes = rows(1, 6);
    for (episode, (status, sessions)) in episodes.iter_mut().zip([
        (ResponderStatus::Responder, 4),
        (ResponderStatus::Responder, 5),
        (ResponderStatus::Responder, 6),
        (ResponderStatus::NonResponder, 1),
        (ResponderStatus::NonResponder, 1),
        (ResponderStatus::NotAssessed, 1),
    ]) {
        episode.nrs_response = status;
        episode.sessions_to_first_nrs_response = Some(sessions);
    }
    let groups = aggregate(&episodes, &[], MinCell::SMALLEST);
    let stats = groups[0].statistics.as_ref().unwrap();
    assert_eq!(
        stats.sessions_to_first_nrs_response,
        Some(Median { n: 3, median: 5.0 })
    );
    assert_eq!(stats.nrs_responders.map(|r| r.count), Some(3));
    // Two responders only: fewer values than the minimum cell.
    episodes[2].nrs_response = ResponderStatus::NonResponder;
    let groups = aggregate(&episodes, &[], MinCell::SMALLEST);
    let stats = groups[0].statistics.as_ref().unwrap();
    assert_eq!(stats.sessions_to_first_nrs_response, None);
}

#[test]
fn groups_with_nothing_released_are_not_listed() {
    let mut episodes = rows(1, 3);
    episodes.extend(rows(2, 8));
    let groups = aggregate(&episodes, &[Dimension::Clinic], MinCell::default());
    // Clinic 1's three episodes are withheld; even its key is not listed.
    assert_eq!(groups.len(), 1);
    let large = &groups[0];
    assert_eq!(
        large.key,
        vec![(Dimension::Clinic, Uuid::from_u128(2).to_string())]
    );
    assert!(!large.is_suppressed());
    assert!(!large.partial);
    assert_eq!(large.episodes, Some(8));
    assert_eq!(large.statistics.as_ref().unwrap().episodes, 8);
    // Together, clinic 1's part is left out of the total, which says so.
    let total = aggregate(&episodes, &[], MinCell::default());
    assert_eq!(total[0].episodes, Some(8));
    assert!(total[0].partial);
}

#[test]
fn a_statistic_behind_fewer_than_min_cell_values_is_suppressed_in_a_shown_group() {
    let mut episodes = rows(1, 8);
    for episode in &mut episodes {
        episode.baseline_pain_back = Some(6);
        episode.nrs_response = ResponderStatus::NonResponder;
        episode.pain_before_by_session = BTreeMap::from([(1, 6)]);
    }
    for episode in episodes.iter_mut().take(7) {
        episode.pain_before_by_session.insert(2, 5);
    }
    episodes[0].nrs_response = ResponderStatus::NotAssessed;
    let groups = aggregate(&episodes, &[], MinCell::default());
    let stats = groups[0].statistics.as_ref().unwrap();
    assert_eq!(
        stats.pain_trajectory[0].mean_pain_before,
        Some(Mean { n: 8, mean: 6.0 })
    );
    assert_eq!(stats.pain_trajectory[1].mean_pain_before, None);
    assert_eq!(stats.baseline_nrs, Some(Mean { n: 8, mean: 6.0 }));
    // Seven assessed responders of eight episodes: the rate is suppressed.
    assert_eq!(stats.nrs_responders, None);
}

#[test]
fn groups_are_keyed_by_each_dimension() {
    let mut other = row(2, 2);
    other.primary_diagnosis = None;
    other.initial_sessions = Some(6);
    other.frequency_phase = FrequencyPhase::Maintenance;
    other.adherence_band = AdherenceBand::High;
    other.age_band = Some(AgeBand::From75);
    // Three of each, so that every part reaches the smallest minimum cell (3).
    let episodes: Vec<_> = [row(1, 1), other]
        .iter()
        .flat_map(|episode| std::iter::repeat_n(episode.clone(), 3))
        .collect();
    let expected = [
        (
            Dimension::Clinic,
            [
                Uuid::from_u128(1).to_string(),
                Uuid::from_u128(2).to_string(),
            ],
        ),
        (
            Dimension::Diagnosis,
            ["ICD10:M51.2".to_owned(), "unknown".to_owned()],
        ),
        (Dimension::InitialSessions, ["4".to_owned(), "6".to_owned()]),
        (
            Dimension::FrequencyPhase,
            ["initial_only".to_owned(), "maintenance".to_owned()],
        ),
        (
            Dimension::AdherenceBand,
            ["high".to_owned(), "none_reported".to_owned()],
        ),
        (Dimension::AgeBand, ["45-59".to_owned(), "75+".to_owned()]),
    ];
    for (dimension, keys) in expected {
        let groups = aggregate(&episodes, &[dimension], MinCell::SMALLEST);
        let actual: Vec<Vec<(Dimension, String)>> =
            groups.into_iter().map(|group| group.key).collect();
        let wanted: Vec<Vec<(Dimension, String)>> =
            keys.into_iter().map(|key| vec![(dimension, key)]).collect();
        assert_eq!(actual, wanted, "{dimension}");
    }
}

#[test]
fn several_dimensions_key_groups_in_the_order_given_and_sort_them() {
    let mut episodes = rows(2, 2);
    episodes.extend(rows(1, 2));
    episodes[0].age_band = Some(AgeBand::From18To29);
    // Three of each, so that every part reaches the smallest minimum cell (3).
    let episodes: Vec<_> = episodes
        .iter()
        .flat_map(|episode| std::iter::repeat_n(episode.clone(), 3))
        .collect();
    let groups = aggregate(
        &episodes,
        &[Dimension::Clinic, Dimension::AgeBand],
        MinCell::SMALLEST,
    );
    let keys: Vec<Vec<String>> = groups
        .iter()
        .map(|group| group.key.iter().map(|(_, value)| value.clone()).collect())
        .collect();
    let clinic_1 = Uuid::from_u128(1).to_string();
    let clinic_2 = Uuid::from_u128(2).to_string();
    assert_eq!(
        keys,
        vec![
            vec![clinic_1, "45-59".to_owned()],
            vec![clinic_2.clone(), "18-29".to_owned()],
            vec![clinic_2, "45-59".to_owned()],
        ]
    );
    assert!(groups.iter().all(|group| {
        group
            .key
            .iter()
            .map(|(d, _)| *d)
            .eq([Dimension::Clinic, Dimension::AgeBand])
    }));
}

#[test]
fn no_episodes_give_no_groups() {
    assert!(aggregate(&[], &[Dimension::Clinic], MinCell::default()).is_empty());
}

#[test]
fn the_result_does_not_depend_on_the_order_of_rows() {
    let mut episodes = hand_computed_rows();
    episodes[0].baseline_odi = Some(50.1);
    episodes[1].baseline_odi = Some(30.7);
    episodes[2].baseline_odi = Some(44.3);
    let forward = aggregate(&episodes, &[], MinCell::SMALLEST);
    episodes.reverse();
    assert_eq!(aggregate(&episodes, &[], MinCell::SMALLEST), forward);
}

#[test]
fn dimensions_parse_from_their_names() {
    for dimension in Dimension::ALL {
        assert_eq!(Dimension::from_str(dimension.as_str()), Ok(dimension));
        assert_eq!(
            serde_json::to_value(dimension).unwrap(),
            serde_json::json!(dimension.as_str())
        );
    }
    let error = Dimension::from_str("postcode").unwrap_err();
    assert!(error.to_string().contains("postcode"));
}

#[test]
fn responder_rates_count_only_assessed_episodes() {
    let mut episodes = rows(1, 10);
    for (n, episode) in episodes.iter_mut().enumerate() {
        episode.odi_response = match n {
            0..=5 => ResponderStatus::Responder,
            6..=7 => ResponderStatus::NonResponder,
            _ => ResponderStatus::NotAssessed,
        };
    }
    let groups = aggregate(&episodes, &[], MinCell::default());
    assert_eq!(
        groups[0].statistics.as_ref().unwrap().odi_responders,
        Some(Proportion {
            n: 8,
            count: 6,
            rate: 0.75
        })
    );
}
