//! The clinical write API over gRPC against the real server and PostgreSQL.

use chrono::{Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_e2e::AuthChannel as Channel;
use spineledger_e2e::requests::{EpisodeScript, newtons};
use spineledger_e2e::{Harness, RawCodec};
use spineledger_store::StreamKey;
use tonic::Code;
use tonic_types::StatusExt;

type Client = ClinicalRecordsServiceClient<Channel>;

async fn client(harness: &Harness) -> Client {
    ClinicalRecordsServiceClient::new(harness.channel().await)
}

fn episode_stream(script: &EpisodeScript) -> StreamKey {
    StreamKey::new(script.clinic_id, format!("episode-{}", script.episode_id))
}

async fn event_types(harness: &Harness, script: &EpisodeScript) -> Vec<String> {
    harness
        .database()
        .store()
        .read_whole_stream(&episode_stream(script))
        .await
        .expect("read the episode")
        .into_iter()
        .map(|event| event.event_type)
        .collect()
}

/// Registers the patient and records an evaluation `days_ago` days before now.
async fn evaluated(client: &mut Client, script: &EpisodeScript, days_ago: i64) {
    let at = Utc::now() - Duration::days(days_ago);
    client
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    client
        .record_evaluation(script.evaluation(at + Duration::hours(1)))
        .await
        .expect("evaluation");
}

async fn planned(client: &mut Client, script: &EpisodeScript, days_ago: i64) {
    evaluated(client, script, days_ago).await;
    let at = Utc::now() - Duration::days(days_ago) + Duration::days(1);
    client
        .start_treatment_plan(script.plan(at))
        .await
        .expect("plan");
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// Asserts the status is FAILED_PRECONDITION with `expected` as its reason.
fn assert_rule(status: &tonic::Status, expected: &str) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(status), expected, "{status:?}");
}

#[tokio::test]
async fn a_whole_episode_of_care_is_recorded_and_read_back() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let start = Utc::now() - Duration::days(60);

    client
        .register_patient(script.register_patient(start))
        .await
        .expect("register");
    let evaluation = client
        .record_evaluation(script.evaluation(start + Duration::hours(1)))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(evaluation.stream_version, 1);
    assert_eq!(
        evaluation.stream_id,
        format!("episode-{}", script.episode_id)
    );

    client
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    client
        .give_home_care_instructions(script.home_care(start + Duration::days(1)))
        .await
        .expect("home care");

    // Five sessions over three weeks; discomfort at the third, so the fourth goes lower.
    let forces = [200.0, 220.0, 240.0, 230.0, 235.0];
    let tolerances = [
        v1::Tolerance::Good,
        v1::Tolerance::Good,
        v1::Tolerance::Discomfort,
        v1::Tolerance::Good,
        v1::Tolerance::Good,
    ];
    for (index, (force, tolerance)) in forces.iter().zip(tolerances).enumerate() {
        let day = 2 + 4 * i64::try_from(index).expect("small");
        client
            .record_session(script.session(start + Duration::days(day), *force, tolerance))
            .await
            .unwrap_or_else(|status| panic!("session {}: {status:?}", index + 1));
        if index == 3 {
            client
                .record_outcome(script.outcome(start + Duration::days(day), 4, 28.0))
                .await
                .expect("outcome at 4");
        }
    }
    client
        .record_outcome(script.outcome(start + Duration::days(19), 3, 22.0))
        .await
        .expect("outcome at 5");
    client
        .report_home_care_adherence(script.adherence(start + Duration::days(19), 80))
        .await
        .expect("adherence");
    client
        .record_reassessment(script.reassessment(start + Duration::days(20)))
        .await
        .expect("reassessment");
    client
        .adjust_treatment_plan(script.maintenance(start + Duration::days(20)))
        .await
        .expect("maintenance");
    client
        .record_session(script.session(start + Duration::days(41), 235.0, v1::Tolerance::Good))
        .await
        .expect("maintenance session");
    let discharged = client
        .discharge_episode(
            script.discharge(start + Duration::days(42), v1::DischargeReason::GoalsMet),
        )
        .await
        .expect("discharge")
        .into_inner()
        .result
        .expect("result");

    let stored = harness
        .database()
        .store()
        .read_whole_stream(&episode_stream(&script))
        .await
        .expect("read");
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "EvaluationRecorded",
            "TreatmentPlanStarted",
            "HomeCareInstructed",
            "SessionRecorded",
            "SessionRecorded",
            "SessionRecorded",
            "SessionRecorded",
            "OutcomeRecorded",
            "SessionRecorded",
            "OutcomeRecorded",
            "HomeCareAdherenceReported",
            "ReassessmentRecorded",
            "TreatmentPlanAdjusted",
            "SessionRecorded",
            "EpisodeDischarged",
        ]
    );
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=15).collect::<Vec<_>>());
    assert_eq!(discharged.stream_version, 15);
    assert!(stored.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(
        stored.last().map(|e| e.cursor.position),
        Some(discharged.global_position)
    );
    // The domain numbered the sessions and stored the force in newtons.
    let fourth = stored
        .iter()
        .filter(|e| e.event_type == "SessionRecorded")
        .nth(3)
        .expect("4th");
    assert_eq!(fourth.payload["session_number"], 4);
    assert_eq!(fourth.metadata.actor, "provider-7");
    // The fact's time is kept apart from the recording time.
    assert!(
        stored[0].occurred_at.expect("occurred_at") < stored[0].recorded_at - Duration::days(50)
    );

    // After discharge only corrections are accepted.
    let late = client
        .record_session(script.session(start + Duration::days(43), 200.0, v1::Tolerance::Good))
        .await
        .expect_err("after discharge");
    assert_rule(&late, "EPISODE_DISCHARGED");
    let correction = v1::RecordCorrectionRequest {
        header: script.header(),
        occurred_at: spineledger_e2e::requests::timestamp(start + Duration::days(44)),
        episode_id: script.episode_id.to_string(),
        corrected_event_id: fourth.event_id.to_string(),
        corrections: vec![v1::FieldCorrection {
            field: "pain_after".into(),
            corrected_value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(3.0)),
            }),
        }],
        reason: "pain score mistyped".into(),
    };
    client
        .record_correction(correction)
        .await
        .expect("correction after discharge");
    assert_eq!(event_types(&harness, &script).await.len(), 16);
}

#[tokio::test]
async fn a_plan_before_an_evaluation_is_rejected_and_nothing_is_appended() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let status = client
        .start_treatment_plan(script.plan(Utc::now()))
        .await
        .expect_err("no evaluation");
    assert_rule(&status, "EPISODE_NOT_STARTED");
    assert!(event_types(&harness, &script).await.is_empty());
}

#[tokio::test]
async fn an_evaluation_of_an_unregistered_patient_is_rejected() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let status = client
        .record_evaluation(script.evaluation(Utc::now()))
        .await
        .expect_err("not registered");
    assert_rule(&status, "PATIENT_NOT_REGISTERED");
    assert!(event_types(&harness, &script).await.is_empty());
}

#[tokio::test]
async fn a_patient_of_another_clinic_cannot_be_evaluated_here() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let home = harness.script();
    client
        .register_patient(home.register_patient(Utc::now()))
        .await
        .expect("register");
    let other_clinic = EpisodeScript {
        clinic_id: harness.clinic(),
        ..home.clone()
    };
    let status = client
        .record_evaluation(other_clinic.evaluation(Utc::now()))
        .await
        .expect_err("other clinic");
    assert_rule(&status, "PATIENT_NOT_REGISTERED");
}

#[tokio::test]
async fn a_session_before_a_plan_is_rejected() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    evaluated(&mut client, &script, 3).await;
    let status = client
        .record_session(script.session(Utc::now(), 200.0, v1::Tolerance::Good))
        .await
        .expect_err("no plan");
    assert_rule(&status, "PLAN_NOT_ACTIVE");
    assert_eq!(event_types(&harness, &script).await, ["EvaluationRecorded"]);
}

#[tokio::test]
async fn a_present_absolute_contraindication_blocks_the_plan_until_a_new_evaluation_clears_it() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let at = Utc::now() - Duration::days(5);
    client
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    let mut evaluation = script.evaluation(at);
    evaluation.contraindications[1].finding = v1::Finding::Present as i32; // vertebral fracture
    client
        .record_evaluation(evaluation)
        .await
        .expect("evaluation");

    let status = client
        .start_treatment_plan(script.plan(at))
        .await
        .expect_err("blocked");
    assert_rule(&status, "CONTRAINDICATION_PRESENT");
    assert_eq!(event_types(&harness, &script).await.len(), 1);

    client
        .record_evaluation(script.evaluation(at + Duration::days(1)))
        .await
        .expect("re-evaluation clears it");
    client
        .start_treatment_plan(script.plan(at + Duration::days(1)))
        .await
        .expect("plan after clearance");
}

#[tokio::test]
async fn an_initial_phase_outside_four_to_six_sessions_needs_a_justification() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    evaluated(&mut client, &script, 3).await;
    let mut plan = script.plan(Utc::now());
    plan.initial_sessions = 10;
    let status = client
        .start_treatment_plan(plan.clone())
        .await
        .expect_err("10 sessions");
    assert_rule(&status, "INITIAL_PHASE_OUT_OF_RANGE_WITHOUT_JUSTIFICATION");
    assert_eq!(event_types(&harness, &script).await.len(), 1);

    plan.header = script.header();
    plan.justification = Some("severe disability at baseline".into());
    client.start_treatment_plan(plan).await.expect("justified");
}

#[tokio::test]
async fn force_may_not_rise_after_a_poorly_tolerated_session() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 10).await;
    let at = Utc::now() - Duration::days(5);
    client
        .record_session(script.session(at, 250.0, v1::Tolerance::StoppedEarly))
        .await
        .expect("session");
    let status = client
        .record_session(script.session(at + Duration::days(2), 260.0, v1::Tolerance::Good))
        .await
        .expect_err("increase after poor tolerance");
    assert_rule(&status, "FORCE_INCREASE_AFTER_POOR_TOLERANCE");
    assert_eq!(event_types(&harness, &script).await.len(), 3);
    client
        .record_session(script.session(at + Duration::days(2), 225.0, v1::Tolerance::Good))
        .await
        .expect("a reduced force is fine");
}

#[tokio::test]
async fn force_above_the_body_weight_ceiling_is_rejected() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 10).await;
    // 80 kg x 60 % x 9.80665 = 470.7 N; 110 lbf = 489.3 N.
    let mut session = script.session(Utc::now() - Duration::days(1), 100.0, v1::Tolerance::Good);
    session.peak_force = Some(v1::Force {
        value: 110.0,
        unit: v1::ForceUnit::PoundForce as i32,
    });
    let status = client
        .record_session(session)
        .await
        .expect_err("above ceiling");
    assert_rule(&status, "FORCE_ABOVE_CEILING");
    assert_eq!(event_types(&harness, &script).await.len(), 2);
}

#[tokio::test]
async fn a_personalised_frequency_needs_a_complete_initial_phase_and_a_reassessment() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 30).await;
    let start = Utc::now() - Duration::days(28);

    let early = client
        .adjust_treatment_plan(script.maintenance(start))
        .await
        .expect_err("early");
    assert_rule(&early, "INITIAL_PHASE_INCOMPLETE");
    for day in 0..5 {
        client
            .record_session(script.session(
                start + Duration::days(day * 3),
                200.0,
                v1::Tolerance::Good,
            ))
            .await
            .expect("session");
    }
    let unassessed = client
        .adjust_treatment_plan(script.maintenance(start + Duration::days(16)))
        .await
        .expect_err("no reassessment");
    assert_rule(&unassessed, "REASSESSMENT_REQUIRED");
    assert_eq!(event_types(&harness, &script).await.len(), 7);

    client
        .record_reassessment(script.reassessment(start + Duration::days(16)))
        .await
        .expect("reassessment");
    client
        .adjust_treatment_plan(script.maintenance(start + Duration::days(16)))
        .await
        .expect("adjusted");
}

#[tokio::test]
async fn adherence_before_home_care_instructions_is_rejected() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 5).await;
    let status = client
        .report_home_care_adherence(script.adherence(Utc::now(), 70))
        .await
        .expect_err("no instructions");
    assert_rule(&status, "HOME_CARE_NOT_INSTRUCTED");
}

#[tokio::test]
async fn a_correction_must_name_an_event_of_this_episode() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    evaluated(&mut client, &script, 3).await;
    let request = v1::RecordCorrectionRequest {
        header: script.header(),
        occurred_at: spineledger_e2e::requests::timestamp(Utc::now()),
        episode_id: script.episode_id.to_string(),
        corrected_event_id: uuid::Uuid::new_v4().to_string(),
        corrections: vec![v1::FieldCorrection {
            field: "pain_back".into(),
            corrected_value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(5.0)),
            }),
        }],
        reason: "typo".into(),
    };
    let status = client
        .record_correction(request)
        .await
        .expect_err("unknown event");
    assert_rule(&status, "CORRECTED_EVENT_NOT_FOUND");
}

#[tokio::test]
async fn invalid_fields_are_reported_one_by_one_and_nothing_is_appended() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 5).await;

    let mut session = script.session(Utc::now(), 200.0, v1::Tolerance::Good);
    session.pain_before = 11;
    session.tolerance = v1::Tolerance::Unspecified as i32;
    session.mode = 99;
    session.duration_minutes = 0;
    session.rest_force = newtons(300.0);
    session.occurred_at = spineledger_e2e::requests::timestamp(Utc::now() + Duration::hours(2));
    session.header = Some(v1::CommandHeader {
        command_id: "not-a-uuid".into(),
        ..script.header().expect("header")
    });
    let status = client.record_session(session).await.expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|violation| violation.field.as_str())
        .collect();
    for field in [
        "pain_before",
        "tolerance",
        "mode",
        "duration_minutes",
        "rest_force",
        "occurred_at",
        "header.command_id",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    assert_eq!(event_types(&harness, &script).await.len(), 2);

    let empty = client
        .record_evaluation(v1::RecordEvaluationRequest::default())
        .await
        .expect_err("empty request");
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_retry_with_the_same_command_id_returns_the_first_response() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 5).await;
    let session = script.session(Utc::now() - Duration::days(1), 200.0, v1::Tolerance::Good);
    let first = client
        .record_session(session.clone())
        .await
        .expect("first")
        .into_inner();
    client
        .record_session(script.session(
            Utc::now() - Duration::hours(20),
            200.0,
            v1::Tolerance::Good,
        ))
        .await
        .expect("another session");
    let retry = client
        .record_session(session.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first, retry);
    assert_eq!(event_types(&harness, &script).await.len(), 4);

    // The same command id with different content is a client bug, not a retry.
    let mut changed = session;
    changed.pain_after = 1;
    let status = client.record_session(changed).await.expect_err("reused id");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(reason(&status), "COMMAND_ID_REUSED");
    assert_eq!(event_types(&harness, &script).await.len(), 4);
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_with_the_actual_version() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 5).await;
    let mut session = script.session(Utc::now(), 200.0, v1::Tolerance::Good);
    session.header = Some(v1::CommandHeader {
        expected_version: Some(1),
        ..script.header().expect("header")
    });
    let status = client
        .record_session(session.clone())
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::Aborted);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "VERSION_CONFLICT");
    assert_eq!(info.metadata["actual_version"], "2");

    session.header = Some(v1::CommandHeader {
        expected_version: Some(2),
        ..script.header().expect("header")
    });
    let written = client
        .record_session(session)
        .await
        .expect("current")
        .into_inner();
    assert_eq!(written.result.expect("result").stream_version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_episode_all_land_without_gaps() {
    let harness = Harness::start().await;
    let mut setup = client(&harness).await;
    let script = harness.script();
    planned(&mut setup, &script, 20).await;

    let writers: i64 = 12;
    let tasks: Vec<_> = (0..writers)
        .map(|n| {
            let mut client = setup.clone();
            let request =
                script.session(Utc::now() - Duration::hours(n), 200.0, v1::Tolerance::Good);
            tokio::spawn(async move { client.record_session(request).await })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let response = task
            .await
            .expect("task")
            .expect("every concurrent session lands");
        versions.push(response.into_inner().result.expect("result").stream_version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (3..3 + writers).collect::<Vec<_>>());
    let stored = harness
        .database()
        .store()
        .read_whole_stream(&episode_stream(&script))
        .await
        .expect("read");
    // Each session was decided under the stream lock with every earlier append in view:
    // it is numbered after the sessions already recorded that took place before it (the
    // writers' dates are an hour apart and arrive in any order).
    let sessions: Vec<(chrono::DateTime<Utc>, i64)> = stored
        .iter()
        .filter(|e| e.event_type == "SessionRecorded")
        .map(|e| {
            (
                e.occurred_at.expect("occurred_at"),
                e.payload["session_number"].as_i64().expect("number"),
            )
        })
        .collect();
    assert_eq!(sessions.len(), 12);
    for (index, (at, number)) in sessions.iter().enumerate() {
        let earlier = sessions[..index].iter().filter(|(t, _)| t <= at).count();
        assert_eq!(
            *number,
            i64::try_from(earlier).expect("small") + 1,
            "session numbers count the sessions recorded before that took place earlier"
        );
    }

    // With the same expected version, exactly one of them wins.
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let mut client = setup.clone();
            let mut request = script.session(
                Utc::now() - Duration::minutes(n),
                200.0,
                v1::Tolerance::Good,
            );
            request.header = Some(v1::CommandHeader {
                expected_version: Some(2 + writers),
                ..script.header().expect("header")
            });
            tokio::spawn(async move { client.record_session(request).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::Aborted),
        }
    }
    assert_eq!(won, 1);
}

/// A string PostgreSQL cannot store (in `jsonb`): it holds U+0000.
const NUL: &str = "provider\0-7";

/// Asserts the status is INVALID_ARGUMENT with a field violation naming `field`.
fn assert_invalid_field(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let bad_request = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("{field}: no BadRequest details in {status:?}"));
    assert!(
        bad_request
            .field_violations
            .iter()
            .any(|v| v.field == field),
        "{field} not named in {bad_request:?}"
    );
}

/// The request with `actor` as its header's actor.
macro_rules! with_actor {
    ($request:expr, $actor:expr) => {{
        let mut request = $request;
        if let Some(header) = request.header.as_mut() {
            header.actor = $actor.into();
        }
        request
    }};
}

#[tokio::test]
async fn a_nul_in_the_actor_of_any_write_is_invalid_argument_and_appends_nothing() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 10).await;
    let newcomer = EpisodeScript {
        clinic_id: script.clinic_id,
        ..EpisodeScript::new()
    };
    let at = Utc::now() - Duration::days(1);
    let some_event = uuid::Uuid::new_v4();
    let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "RegisterPatient",
            client
                .register_patient(with_actor!(newcomer.register_patient(at), NUL))
                .await
                .map(drop),
        ),
        (
            "RecordEvaluation",
            client
                .record_evaluation(with_actor!(script.evaluation(at), NUL))
                .await
                .map(drop),
        ),
        (
            "StartTreatmentPlan",
            client
                .start_treatment_plan(with_actor!(script.plan(at), NUL))
                .await
                .map(drop),
        ),
        (
            "RecordSession",
            client
                .record_session(with_actor!(
                    script.session(at, 200.0, v1::Tolerance::Good),
                    NUL
                ))
                .await
                .map(drop),
        ),
        (
            "RecordMissedSession",
            client
                .record_missed_session(with_actor!(script.missed_session(at), NUL))
                .await
                .map(drop),
        ),
        (
            "RecordOutcome",
            client
                .record_outcome(with_actor!(script.outcome(at, 4, 28.0), NUL))
                .await
                .map(drop),
        ),
        (
            "GiveHomeCareInstructions",
            client
                .give_home_care_instructions(with_actor!(script.home_care(at), NUL))
                .await
                .map(drop),
        ),
        (
            "ReportHomeCareAdherence",
            client
                .report_home_care_adherence(with_actor!(script.adherence(at, 80), NUL))
                .await
                .map(drop),
        ),
        (
            "RecordReassessment",
            client
                .record_reassessment(with_actor!(script.reassessment(at), NUL))
                .await
                .map(drop),
        ),
        (
            "AdjustTreatmentPlan",
            client
                .adjust_treatment_plan(with_actor!(script.maintenance(at), NUL))
                .await
                .map(drop),
        ),
        (
            "DischargeEpisode",
            client
                .discharge_episode(with_actor!(
                    script.discharge(at, v1::DischargeReason::GoalsMet),
                    NUL
                ))
                .await
                .map(drop),
        ),
        (
            "RecordCorrection",
            client
                .record_correction(with_actor!(script.correction(at, some_event), NUL))
                .await
                .map(drop),
        ),
    ];
    assert_eq!(results.len(), 12, "every write RPC");
    for (rpc, result) in results {
        let status = result.expect_err(rpc);
        assert_invalid_field(&status, "header.actor");
    }
    assert_eq!(event_types(&harness, &script).await.len(), 2);
    let newcomer_stream = StreamKey::new(
        newcomer.clinic_id,
        format!("patient-{}", newcomer.patient_id),
    );
    let stored = harness
        .database()
        .store()
        .read_whole_stream(&newcomer_stream)
        .await
        .expect("read the patient");
    assert!(stored.is_empty(), "{stored:?}");

    // Other control characters are refused as well; tab and newlines are not.
    let status = client
        .record_session(with_actor!(
            script.session(at, 200.0, v1::Tolerance::Good),
            "provider\u{7}-7"
        ))
        .await
        .expect_err("a bell character");
    assert_invalid_field(&status, "header.actor");
    client
        .record_session(with_actor!(
            script.session(at, 200.0, v1::Tolerance::Good),
            "provider 7\tfront desk\r\n"
        ))
        .await
        .expect("tab, CR and LF are text");
    assert_eq!(event_types(&harness, &script).await.len(), 3);
}

#[tokio::test]
async fn a_nul_in_any_free_text_field_is_invalid_argument_naming_it_and_appends_nothing() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    planned(&mut client, &script, 10).await;
    let at = Utc::now() - Duration::days(1);
    let text = |value: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(value.into())),
    };

    let mut evaluation = script.evaluation(at);
    evaluation.provider_id = NUL.into();
    evaluation.posture_notes = Some(NUL.into());
    evaluation.diagnoses[0].code = "M51.2\0".into();
    let status = client
        .record_evaluation(evaluation)
        .await
        .expect_err("evaluation");
    for field in ["provider_id", "posture_notes", "diagnoses[0].code"] {
        assert_invalid_field(&status, field);
    }

    let mut plan = script.plan(at);
    plan.goals = vec!["walk".into(), NUL.into()];
    plan.justification = Some(NUL.into());
    let status = client.start_treatment_plan(plan).await.expect_err("plan");
    for field in ["goals[1]", "justification"] {
        assert_invalid_field(&status, field);
    }

    let mut session = script.session(at, 200.0, v1::Tolerance::Good);
    session.provider_id = NUL.into();
    session.adverse_event = Some(v1::AdverseEvent {
        severity: v1::Severity::Mild as i32,
        description: NUL.into(),
    });
    let status = client.record_session(session).await.expect_err("session");
    for field in ["provider_id", "adverse_event.description"] {
        assert_invalid_field(&status, field);
    }

    let mut home_care = script.home_care(at);
    home_care.instructions[0].description = NUL.into();
    let status = client
        .give_home_care_instructions(home_care)
        .await
        .expect_err("home care");
    assert_invalid_field(&status, "instructions[0].description");

    let mut reassessment = script.reassessment(at);
    reassessment.notes = Some(NUL.into());
    let status = client
        .record_reassessment(reassessment)
        .await
        .expect_err("reassessment");
    assert_invalid_field(&status, "notes");

    let mut adjustment = script.maintenance(at);
    adjustment.reason = Some(NUL.into());
    let status = client
        .adjust_treatment_plan(adjustment)
        .await
        .expect_err("adjustment");
    assert_invalid_field(&status, "reason");

    let mut discharge = script.discharge(at, v1::DischargeReason::GoalsMet);
    discharge.notes = Some(NUL.into());
    let status = client
        .discharge_episode(discharge)
        .await
        .expect_err("discharge");
    assert_invalid_field(&status, "notes");

    let mut correction = script.correction(at, uuid::Uuid::new_v4());
    correction.reason = NUL.into();
    correction.corrections = vec![
        v1::FieldCorrection {
            field: "pain_back\0".into(),
            corrected_value: Some(text("5")),
        },
        v1::FieldCorrection {
            field: "posture_notes".into(),
            corrected_value: Some(text(NUL)),
        },
        v1::FieldCorrection {
            field: "diagnoses".into(),
            corrected_value: Some(prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue {
                        values: vec![text("M51.2"), text(NUL)],
                    },
                )),
            }),
        },
    ];
    let status = client
        .record_correction(correction)
        .await
        .expect_err("correction");
    for field in [
        "reason",
        "corrections[0].field",
        "corrections[1].corrected_value",
        "corrections[2].corrected_value[1]",
    ] {
        assert_invalid_field(&status, field);
    }
    let description = status
        .get_details_bad_request()
        .and_then(|bad| {
            bad.field_violations
                .into_iter()
                .find(|v| v.field == "reason")
        })
        .map(|v| v.description)
        .unwrap_or_default();
    assert!(description.contains("NUL"), "{description}");

    assert_eq!(event_types(&harness, &script).await.len(), 2);
    // Several lines with tabs are ordinary text.
    let mut home_care = script.home_care(at);
    home_care.instructions[0].description = "core stabilisation\n\t10 minutes\r\n".into();
    client
        .give_home_care_instructions(home_care)
        .await
        .expect("multi-line text");
    assert_eq!(event_types(&harness, &script).await.len(), 3);
}

/// `message` encoded, with the first byte of the first `marker` replaced by 0xFF (never
/// valid in UTF-8).
fn encoded_with_invalid_utf8(message: &impl prost::Message, marker: &str) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    let at = bytes
        .windows(marker.len())
        .position(|window| window == marker.as_bytes())
        .expect("the marker is in the encoding");
    bytes[at] = 0xFF;
    bytes
}

async fn call_raw(harness: &Harness, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(harness.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("not decodable")
}

#[tokio::test]
async fn a_string_that_is_not_utf8_is_invalid_argument_naming_the_field() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let at = Utc::now() - Duration::days(3);
    client
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    let evaluation_path = "/spineledger.v1.ClinicalRecordsService/RecordEvaluation";

    let mut evaluation = script.evaluation(at);
    evaluation.provider_id = "PROVIDER-MARK".into();
    let status = call_raw(
        &harness,
        evaluation_path,
        encoded_with_invalid_utf8(&evaluation, "PROVIDER-MARK"),
    )
    .await;
    assert_invalid_field(&status, "provider_id");

    let evaluation = with_actor!(script.evaluation(at), "ACTOR-MARK");
    let status = call_raw(
        &harness,
        evaluation_path,
        encoded_with_invalid_utf8(&evaluation, "ACTOR-MARK"),
    )
    .await;
    assert_invalid_field(&status, "header.actor");

    // The index of a repeated field is not known where prost fails: the field is named.
    let mut plan = script.plan(at);
    plan.goals = vec!["walk".into(), "GOAL-MARK".into()];
    let status = call_raw(
        &harness,
        "/spineledger.v1.ClinicalRecordsService/StartTreatmentPlan",
        encoded_with_invalid_utf8(&plan, "GOAL-MARK"),
    )
    .await;
    assert_invalid_field(&status, "goals");

    // The read services decode the same way.
    let read = v1::GetTreatmentPlanRequest {
        clinic_id: "CLINIC-MARK".into(),
        episode_id: script.episode_id.to_string(),
        min_position: None,
    };
    let status = call_raw(
        &harness,
        "/spineledger.v1.TreatmentPlanService/GetTreatmentPlan",
        encoded_with_invalid_utf8(&read, "CLINIC-MARK"),
    )
    .await;
    assert_invalid_field(&status, "clinic_id");

    assert!(event_types(&harness, &script).await.is_empty());
}

#[tokio::test]
async fn strings_that_look_like_sql_are_stored_and_returned_as_data() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let at = Utc::now() - Duration::days(2);
    let actor = "Robert'); DROP TABLE events;--";
    let notes = "' OR 1=1; DELETE FROM streams WHERE ''='; SELECT pg_sleep(10); --\\x00";
    let mut register = script.register_patient(at);
    if let Some(header) = register.header.as_mut() {
        header.actor = actor.into();
    }
    client.register_patient(register).await.expect("register");
    let mut evaluation = script.evaluation(at + Duration::hours(1));
    evaluation.posture_notes = Some(notes.into());
    client
        .record_evaluation(evaluation)
        .await
        .expect("evaluation");

    let patient = harness
        .database()
        .store()
        .read_whole_stream(&StreamKey::new(
            script.clinic_id,
            format!("patient-{}", script.patient_id),
        ))
        .await
        .expect("patient stream");
    assert_eq!(patient[0].metadata.actor, actor);
    let episode = harness
        .database()
        .store()
        .read_whole_stream(&episode_stream(&script))
        .await
        .expect("episode stream");
    assert_eq!(
        episode[0]
            .payload
            .get("posture_notes")
            .and_then(|v| v.as_str()),
        Some(notes)
    );
    // Nothing was dropped, deleted or delayed: both streams and their events are there.
    let owner = harness.database().owner_client().await;
    let counts = owner
        .query_one(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM streams)",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (2, 2));
    harness.stop().await;
}

#[tokio::test]
async fn a_write_returns_the_events_hash_as_a_receipt_and_a_retry_the_same_one() {
    let harness = Harness::start().await;
    let mut client = client(&harness).await;
    let script = harness.script();
    let request = script.register_patient(Utc::now() - Duration::days(1));
    let first = client
        .register_patient(request.clone())
        .await
        .expect("register")
        .into_inner()
        .result
        .expect("result");
    let retried = client
        .register_patient(request)
        .await
        .expect("retry")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(first.event_hash.len(), 64, "{first:?}");
    assert_eq!(retried.event_hash, first.event_hash);
    let stored = harness
        .database()
        .store()
        .read_whole_stream(&StreamKey::new(
            script.clinic_id,
            format!("patient-{}", script.patient_id),
        ))
        .await
        .expect("stream");
    assert_eq!(
        stored[0].hash.map(|hash| hash.to_hex()),
        Some(first.event_hash)
    );
    harness.stop().await;
}
