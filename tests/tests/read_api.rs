//! The query API's contract over gRPC (issue 7): how treatment plans are listed (order,
//! filters, page tokens), which plan fields are absent without a schedule, what a
//! suppressed statistics group carries, and over whom the median sessions to NRS response
//! is taken.

use chrono::{DateTime, Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_e2e::Harness;
use spineledger_e2e::requests::EpisodeScript;
use tonic::transport::Channel;
use uuid::Uuid;

type Writes = ClinicalRecordsServiceClient<Channel>;

/// An episode of `clinic` (a fresh patient), evaluated at `at`.
async fn evaluated(writes: &mut Writes, clinic: Uuid, at: DateTime<Utc>) -> EpisodeScript {
    let script = EpisodeScript {
        clinic_id: clinic,
        ..EpisodeScript::new()
    };
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation");
    script
}

/// Whole seconds: the wire's timestamps of the requests carry no fractions.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now")
}

/// An episode whose back pain (baseline 7) first meets the responder threshold after
/// `sessions_to_response` sessions (pre-session pain of the next session: 3) and whose
/// latest follow-up, after one more session, is `latest_pain_back`. Returns the global
/// position of that follow-up.
async fn responding_episode(
    writes: &mut Writes,
    clinic: Uuid,
    sessions_to_response: u32,
    latest_pain_back: i32,
) -> i64 {
    let start = now() - Duration::days(60);
    let script = evaluated(writes, clinic, start).await;
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    let mut day = 2;
    for number in 1..=sessions_to_response + 1 {
        let mut session = script.session(start + Duration::days(day), 200.0, v1::Tolerance::Good);
        // Against a baseline of 7, 6 is no response (1 point, 14 %); 3 is one.
        session.pain_before = if number <= sessions_to_response { 6 } else { 3 };
        writes.record_session(session).await.expect("session");
        day += 3;
    }
    writes
        .record_outcome(script.outcome(start + Duration::days(day), latest_pain_back, 20.0))
        .await
        .expect("outcome")
        .into_inner()
        .result
        .expect("result")
        .global_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_median_sessions_to_nrs_response_is_over_responders_at_the_latest_follow_up() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let clinic = Uuid::new_v4();
    // Eight responders at the latest follow-up, who first responded after 3 sessions, and
    // eight who responded after 1 session but are back at their baseline pain at the
    // latest follow-up (non-responders): the median leaves those out.
    let mut position = 0;
    for _ in 0..8 {
        position = responding_episode(&mut writes, clinic, 3, 3).await;
        position = position.max(responding_episode(&mut writes, clinic, 1, 7).await);
    }
    let mut stats = OutcomeStatisticsServiceClient::new(harness.channel().await);
    let response = stats
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![clinic.to_string()],
            min_position: Some(position),
            ..Default::default()
        })
        .await
        .expect("statistics")
        .into_inner();
    let statistics = response
        .groups
        .first()
        .and_then(|group| group.statistics.clone())
        .expect("one group of 16");
    assert_eq!(statistics.episodes, 16);
    let responders = statistics.nrs_responders.expect("responders");
    assert_eq!((responders.count, responders.denominator), (8, 16));
    assert_eq!(statistics.median_sessions_to_nrs_response, Some(3.0));
    harness.stop().await;
}
