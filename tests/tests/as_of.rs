//! Statistics as of an earlier point of the log: a figure taken earlier, with the
//! positions it states, is given again exactly after further writes and corrections.

use chrono::{DateTime, NaiveDate, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::get_outcome_statistics_request::AsOf;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_e2e::oracle::{self, all_events};
use spineledger_e2e::requests::EpisodeScript;
use spineledger_e2e::{AuthChannel, Harness};
use tonic::Code;
use uuid::Uuid;

type Writes = ClinicalRecordsServiceClient<AuthChannel>;
type Stats = OutcomeStatisticsServiceClient<AuthChannel>;

/// A new patient of `clinic` evaluated at `at` (back pain 7); returns the script and the
/// evaluation's event id.
async fn evaluated(writes: &mut Writes, clinic: Uuid, at: DateTime<Utc>) -> (EpisodeScript, Uuid) {
    let script = EpisodeScript {
        clinic_id: clinic,
        ..EpisodeScript::new()
    };
    writes
        .register_patient(script.register_patient(at - chrono::Duration::days(1)))
        .await
        .expect("register");
    let written = writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result");
    let event_id = written.event_id.parse().expect("event id");
    (script, event_id)
}

fn march(day: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 3, day)
        .and_then(|date| date.and_hms_opt(10, 0, 0))
        .expect("date")
        .and_utc()
}

async fn statistics(
    stats: &mut Stats,
    clinics: &[Uuid],
    group_by: &[v1::StatisticsDimension],
    as_of: Option<AsOf>,
) -> Result<v1::GetOutcomeStatisticsResponse, tonic::Status> {
    stats
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            clinic_ids: clinics.iter().map(ToString::to_string).collect(),
            group_by: group_by.iter().map(|d| *d as i32).collect(),
            as_of,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn settle(harness: &Harness, events: usize) {
    let db = harness.database();
    let events = all_events(db.projector_pool(), Some(events)).await;
    oracle::wait_until_projected(db.projector_pool(), &Harness::projector_config(), &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_figure_taken_earlier_is_given_again_as_of_the_positions_it_stated() {
    let harness = Harness::start().await;
    let (clinic, other) = (harness.clinic(), harness.clinic());
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut stats = OutcomeStatisticsServiceClient::new(harness.channel().await);
    let mut evaluations = Vec::new();
    for day in 1..=10 {
        evaluations.push(evaluated(&mut writes, clinic, march(day)).await);
    }
    for day in 1..=9 {
        evaluated(&mut writes, other, march(day)).await;
    }
    settle(&harness, 38).await;
    use v1::StatisticsDimension as D;
    let both = [clinic, other];
    let earlier = statistics(&mut stats, &both, &[D::Clinic], None)
        .await
        .expect("earlier");
    let earlier_by_age = statistics(&mut stats, &[clinic], &[D::AgeBand], None)
        .await
        .expect("earlier by age band");
    assert_eq!(earlier.groups.len(), 2, "{earlier:?}");
    assert_eq!(earlier.reflects.len(), 2);
    let recorded_then = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    // Later: two more patients, and the first baseline corrected from 7 to 5.
    evaluated(&mut writes, clinic, march(11)).await;
    evaluated(&mut writes, clinic, march(12)).await;
    let (first, evaluation) = &evaluations[0];
    writes
        .record_correction(first.correction(march(20), *evaluation))
        .await
        .expect("correction");
    settle(&harness, 43).await;
    let now = statistics(&mut stats, &both, &[D::Clinic], None)
        .await
        .expect("now");
    assert_ne!(
        now.groups, earlier.groups,
        "the later writes changed the figures"
    );

    // As of the positions the earlier answer stated: that answer, exactly.
    let positions = AsOf::AsOfPositions(v1::ClinicPositions {
        positions: earlier.reflects.clone(),
    });
    let again = statistics(&mut stats, &both, &[D::Clinic], Some(positions.clone()))
        .await
        .expect("as of the earlier positions");
    assert_eq!(again.groups, earlier.groups);
    assert_eq!(again.reflects, earlier.reflects);
    // Naming no clinic: the positions' clinics, not whatever the token grants by now
    // (a third clinic, granted since, with patients of its own).
    let third = harness.clinic();
    for day in 1..=9 {
        evaluated(&mut writes, third, march(day)).await;
    }
    settle(&harness, 61).await;
    let unnamed = statistics(&mut stats, &[], &[D::Clinic], Some(positions.clone()))
        .await
        .expect("as of the earlier positions, no clinic named");
    assert_eq!(unnamed.groups, earlier.groups);
    let again_by_age = statistics(&mut stats, &[clinic], &[D::AgeBand], Some(positions))
        .await
        .expect("by age band as of the earlier positions");
    assert_eq!(again_by_age.groups, earlier_by_age.groups);
    // As of the time it was taken: the same.
    let at_time = AsOf::AsOfRecordedAt(prost_types::Timestamp {
        seconds: recorded_then.timestamp(),
        nanos: i32::try_from(recorded_then.timestamp_subsec_nanos()).expect("nanos"),
    });
    let by_time = statistics(&mut stats, &both, &[D::Clinic], Some(at_time))
        .await
        .expect("as of a time");
    assert_eq!(by_time.groups, earlier.groups);
    // The time picked a cut; the positions it states give the same figures.
    let picked = AsOf::AsOfPositions(v1::ClinicPositions {
        positions: by_time.reflects.clone(),
    });
    let by_picked = statistics(&mut stats, &both, &[D::Clinic], Some(picked))
        .await
        .expect("as of the positions the time picked");
    assert_eq!(by_picked.groups, earlier.groups);
    // As of where the live answer stands now: the live answer (replay equals the cells).
    let current = AsOf::AsOfPositions(v1::ClinicPositions {
        positions: now.reflects.clone(),
    });
    let replayed = statistics(&mut stats, &both, &[D::Clinic], Some(current))
        .await
        .expect("as of now");
    assert_eq!(replayed.groups, now.groups);
    // One position for every clinic: the clinic's own log up to there.
    let position = earlier
        .reflects
        .iter()
        .map(|r| r.position)
        .max()
        .expect("a position");
    let single = statistics(
        &mut stats,
        &[clinic],
        &[],
        Some(AsOf::AsOfPosition(position)),
    )
    .await
    .expect("one position");
    let single_group = single.groups[0].statistics.as_ref().expect("shown");
    assert_eq!(single_group.episodes, 10);
    assert_eq!(single_group.baseline_nrs.expect("baselines").mean, 7.0);

    // Refused: a position no event has, as_of with min_position, and positions that
    // leave out a clinic answered.
    let unknown = statistics(
        &mut stats,
        &[clinic],
        &[],
        Some(AsOf::AsOfPosition(1 << 40)),
    )
    .await
    .expect_err("no such position");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let mixed = stats
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![clinic.to_string()],
            min_position: Some(1),
            as_of: Some(AsOf::AsOfPosition(position)),
            ..Default::default()
        })
        .await
        .expect_err("min_position and as_of");
    assert_eq!(mixed.code(), Code::InvalidArgument);
    let partial = AsOf::AsOfPositions(v1::ClinicPositions {
        positions: vec![v1::ClinicPosition {
            clinic_id: clinic.to_string(),
            position,
        }],
    });
    let incomplete = statistics(&mut stats, &both, &[], Some(partial))
        .await
        .expect_err("a clinic without a position");
    assert_eq!(incomplete.code(), Code::InvalidArgument);
    harness.stop().await;
}
