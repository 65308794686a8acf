//! Limits a hostile or broken client meets: a request larger than the configured maximum
//! is refused before it is decoded, and nothing is written; past the most requests in
//! flight, one more is refused at once instead of queueing.

use chrono::{Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_e2e::Harness;
use tonic::Code;

#[tokio::test]
async fn a_request_over_the_message_limit_is_refused_before_decoding_and_writes_nothing() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let script = harness.script();
    let at = Utc::now() - Duration::days(1);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");

    // Over the default 4 MiB: refused as too large, whatever it holds.
    let mut huge = script.evaluation(at);
    huge.posture_notes = Some("x".repeat(5 * 1024 * 1024));
    let status = writes.record_evaluation(huge).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Under it but over the field's own limit: decoded, and refused by validation.
    let mut long = script.evaluation(at);
    long.posture_notes = Some("x".repeat(1024 * 1024));
    let status = writes
        .record_evaluation(long)
        .await
        .expect_err("too long a note");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let stored = harness.episode_events(&script).await;
    assert!(stored.is_empty(), "nothing written: {stored:?}");
}

#[tokio::test]
async fn past_the_most_requests_in_flight_one_more_is_resource_exhausted_at_once() {
    let settings = spineledger::server::ServeSettings {
        max_in_flight: 1,
        ..spineledger::server::ServeSettings::default()
    };
    let catch_up = std::time::Duration::from_secs(3);
    let harness = Harness::start_with_settings(Utc::now(), catch_up, settings).await;
    let channel = harness.channel().await;
    let mut writes = ClinicalRecordsServiceClient::new(channel.clone());
    let mut plans = TreatmentPlanServiceClient::new(channel.clone());
    let script = harness.script();
    let at = Utc::now() - Duration::days(1);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    let evaluated = writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result");
    let plan_request = |position: i64| v1::GetTreatmentPlanRequest {
        clinic_id: script.clinic_id.to_string(),
        episode_id: script.episode_id.to_string(),
        min_position: Some(position),
    };

    // Project the evaluation, then stop the projector: a read waiting for a later write
    // stays in flight for the whole catch-up wait.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projector = tokio::spawn(harness.projector().run(async {
        let _ = stopped.await;
    }));
    // Until the projector has made its checkpoints, a read is refused at once; retry.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Err(status) = plans
        .get_treatment_plan(plan_request(evaluated.global_position))
        .await
    {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(std::time::Instant::now() < deadline, "never projected");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    projector.await.expect("task").expect("projector");
    let later = writes
        .record_outcome(script.outcome(at + Duration::minutes(30), 5, 35.0))
        .await
        .expect("outcome")
        .into_inner()
        .result
        .expect("result");
    let waiting_request = plan_request(later.global_position);
    let waiting = tokio::spawn(async move { plans.get_treatment_plan(waiting_request).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let refused = writes
        .record_outcome(script.outcome(at + Duration::hours(1), 4, 30.0))
        .await
        .expect_err("one too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // Refused, not queued: a queued request would have been served once the read ended.
    // Health checks are answered even with every slot taken.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is never shed")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let waited = waiting.await.expect("task").expect_err("not projected");
    assert_eq!(waited.code(), Code::Unavailable, "{waited:?}");
    assert_eq!(
        harness.episode_events(&script).await.len(),
        2,
        "the refused outcome was not written"
    );

    // Once the slot is free, requests are served again.
    writes
        .record_outcome(script.outcome(at + Duration::hours(2), 4, 30.0))
        .await
        .expect("served again");
}
