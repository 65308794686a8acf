//! Limits a hostile or broken client meets: a request larger than the configured maximum
//! is refused before it is decoded, and nothing is written.

use chrono::{Duration, Utc};
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_e2e::Harness;
use spineledger_e2e::requests::EpisodeScript;
use tonic::Code;

#[tokio::test]
async fn a_request_over_the_message_limit_is_refused_before_decoding_and_writes_nothing() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let script = EpisodeScript::new();
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
