//! Who may call what (issue 9): every RPC refuses every kind of bad credential and every
//! clinic the token does not grant, and a refused call changes nothing; the principal is
//! stored with what it wrote; a write past its deadline is not appended.

use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use chrono::{Duration, Utc};
use prost::Message;
use spineledger_api::v1;
use spineledger_auth::role::{Access, RPC_ACCESS};
use spineledger_auth::{Audience, Claims, Role};
use spineledger_e2e::requests::EpisodeScript;
use spineledger_e2e::{Harness, RawCodec};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_types::StatusExt;
use uuid::Uuid;

const WRITE: &str = "/spineledger.v1.ClinicalRecordsService/";
const PLANS: &str = "/spineledger.v1.TreatmentPlanService/";
const STATISTICS: &str = "/spineledger.v1.OutcomeStatisticsService/GetOutcomeStatistics";
const AUDIT: &str = "/spineledger.v1.AuditService/";

/// One valid request of every RPC for `script`'s clinic and episode, by path.
fn every_rpc(script: &EpisodeScript) -> Vec<(String, Vec<u8>)> {
    let at = Utc::now() - Duration::days(1);
    let write = |method: &str, body: Vec<u8>| (format!("{WRITE}{method}"), body);
    vec![
        write(
            "RegisterPatient",
            script.register_patient(at).encode_to_vec(),
        ),
        write("RecordEvaluation", script.evaluation(at).encode_to_vec()),
        write("StartTreatmentPlan", script.plan(at).encode_to_vec()),
        write(
            "RecordSession",
            script
                .session(at, 300.0, v1::Tolerance::Good)
                .encode_to_vec(),
        ),
        write(
            "RecordMissedSession",
            script.missed_session(at).encode_to_vec(),
        ),
        write("RecordOutcome", script.outcome(at, 3, 20.0).encode_to_vec()),
        write(
            "GiveHomeCareInstructions",
            script.home_care(at).encode_to_vec(),
        ),
        write(
            "ReportHomeCareAdherence",
            script.adherence(at, 80).encode_to_vec(),
        ),
        write(
            "RecordReassessment",
            script.reassessment(at).encode_to_vec(),
        ),
        write(
            "AdjustTreatmentPlan",
            script.maintenance(at).encode_to_vec(),
        ),
        write(
            "DischargeEpisode",
            script
                .discharge(at, v1::DischargeReason::GoalsMet)
                .encode_to_vec(),
        ),
        write(
            "RecordCorrection",
            script.correction(at, Uuid::new_v4()).encode_to_vec(),
        ),
        (
            format!("{PLANS}GetTreatmentPlan"),
            v1::GetTreatmentPlanRequest {
                clinic_id: script.clinic_id.to_string(),
                episode_id: script.episode_id.to_string(),
                min_position: None,
            }
            .encode_to_vec(),
        ),
        (
            format!("{PLANS}ListTreatmentPlans"),
            v1::ListTreatmentPlansRequest {
                clinic_id: script.clinic_id.to_string(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            STATISTICS.to_owned(),
            v1::GetOutcomeStatisticsRequest {
                clinic_ids: vec![script.clinic_id.to_string()],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/spineledger.v1.OutcomeStatisticsService/CompareClinics".to_owned(),
            v1::CompareClinicsRequest {
                clinic_ids: vec![script.clinic_id.to_string()],
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}ListStreamEvents"),
            v1::ListStreamEventsRequest {
                clinic_id: script.clinic_id.to_string(),
                stream_id: format!("episode-{}", script.episode_id),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}ListClinicChanges"),
            v1::ListClinicChangesRequest {
                clinic_id: script.clinic_id.to_string(),
                recorded_from: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                recorded_to: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}ListAccessLog"),
            v1::ListAccessLogRequest {
                clinic_id: script.clinic_id.to_string(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}GetCheckpoint"),
            v1::GetCheckpointRequest {
                clinic_id: script.clinic_id.to_string(),
                tree_size: 0,
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}SignCheckpoint"),
            v1::SignCheckpointRequest {
                clinic_id: script.clinic_id.to_string(),
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}GetInclusionProof"),
            v1::GetInclusionProofRequest {
                clinic_id: script.clinic_id.to_string(),
                record: Some(v1::get_inclusion_proof_request::Record::GlobalPosition(1)),
                tree_size: 0,
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}GetConsistencyProof"),
            v1::GetConsistencyProofRequest {
                clinic_id: script.clinic_id.to_string(),
                first_size: 1,
                second_size: 0,
            }
            .encode_to_vec(),
        ),
        (
            format!("{AUDIT}GetTreatmentPlanAsOf"),
            v1::GetTreatmentPlanAsOfRequest {
                clinic_id: script.clinic_id.to_string(),
                episode_id: script.episode_id.to_string(),
                as_of: Some(v1::get_treatment_plan_as_of_request::AsOf::GlobalPosition(
                    i64::MAX,
                )),
            }
            .encode_to_vec(),
        ),
    ]
}

/// Calls `path` with `body` and the `authorization` value, if any.
async fn call(
    harness: &Harness,
    path: &str,
    body: Vec<u8>,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(harness.plain_channel().await);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(body);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("header"));
    }
    let path = PathAndQuery::try_from(path.to_owned()).expect("path");
    grpc.unary(request, path, RawCodec).await.map(drop)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims(role: Role, clinic: Uuid) -> Claims {
    Claims {
        iss: spineledger_auth::dev::DEV_ISSUER.into(),
        sub: "svc-frontdesk".into(),
        aud: Audience::One(spineledger_auth::dev::DEFAULT_AUDIENCE.into()),
        exp: now() + 600,
        nbf: Some(now()),
        iat: Some(now()),
        role: role.name().into(),
        clinics: vec![clinic.to_string()],
    }
}

/// Rows of every table a call could change.
async fn row_counts(harness: &Harness) -> Vec<i64> {
    let client = harness.database().owner_client().await;
    let mut counts = Vec::new();
    for table in [
        "events",
        "streams",
        "treatment_plans",
        "outcome_episodes",
        "outcome_cells",
        "access_log",
    ] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count");
        counts.push(row.get::<_, i64>(0));
    }
    counts
}

/// The role admitted to `path` that the tests use, and every role that is not admitted.
fn roles_for(path: &str) -> (Role, Vec<Role>) {
    let access = spineledger_auth::role::access(path).expect("listed");
    let refused = Role::ALL
        .into_iter()
        .filter(|role| !access.admits(*role))
        .collect();
    let admitted = if path == STATISTICS {
        Role::Analyst
    } else if path.starts_with(AUDIT) {
        Role::Auditor
    } else {
        Role::Integration
    };
    assert!(access.admits(admitted));
    (admitted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_refuses_every_bad_credential_and_changes_nothing() {
    let mut harness = Harness::start_at(Utc::now()).await;
    harness.start_projector();
    let script = harness.script();
    let other_clinic = Uuid::new_v4();

    // Clinic A has a planned episode, projected, so reads would have something to show.
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    let at = Utc::now() - Duration::days(3);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation");
    let position = writes
        .start_treatment_plan(script.plan(at + Duration::hours(1)))
        .await
        .expect("plan")
        .into_inner()
        .result
        .expect("result")
        .global_position;
    let mut plans =
        v1::treatment_plan_service_client::TreatmentPlanServiceClient::new(harness.channel().await);
    plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: script.clinic_id.to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: Some(position),
        })
        .await
        .expect("projected");
    let statistics_position = v1::GetOutcomeStatisticsRequest {
        clinic_ids: vec![script.clinic_id.to_string()],
        min_position: Some(position),
        ..Default::default()
    };
    v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient::new(
        harness.channel().await,
    )
    .get_outcome_statistics(statistics_position)
    .await
    .expect("projected");

    let key = harness.key();
    let before = row_counts(&harness).await;
    let rpcs = every_rpc(&script);
    assert_eq!(rpcs.len(), RPC_ACCESS.len(), "a request for every RPC");
    for (path, body) in &rpcs {
        let (admitted, refused_roles) = roles_for(path);
        assert!(!refused_roles.is_empty(), "{path} is refused to some role");
        let good = claims(admitted, script.clinic_id);
        let signed = |claims: &Claims| format!("Bearer {}", key.sign(claims).expect("sign"));
        let tampered = {
            let token = key.sign(&good).expect("sign");
            let (rest, signature) = token.rsplit_once('.').expect("three parts");
            let flipped = if signature.starts_with('A') { "B" } else { "A" };
            format!("Bearer {rest}.{flipped}{}", &signature[1..])
        };
        let mut cases: Vec<(String, Option<String>, Code)> = vec![
            ("no token", None, Code::Unauthenticated),
            ("bad signature", Some(tampered), Code::Unauthenticated),
            (
                "expired",
                Some(signed(&Claims {
                    exp: now() - 3600,
                    ..good.clone()
                })),
                Code::Unauthenticated,
            ),
            (
                "not yet valid",
                Some(signed(&Claims {
                    nbf: Some(now() + 3600),
                    ..good.clone()
                })),
                Code::Unauthenticated,
            ),
            (
                "wrong issuer",
                Some(signed(&Claims {
                    iss: "https://id.other.example".into(),
                    ..good.clone()
                })),
                Code::Unauthenticated,
            ),
            (
                "wrong audience",
                Some(signed(&Claims {
                    aud: Audience::One("billing".into()),
                    ..good.clone()
                })),
                Code::Unauthenticated,
            ),
            (
                "other clinic",
                Some(signed(&claims(admitted, other_clinic))),
                Code::PermissionDenied,
            ),
        ]
        .into_iter()
        .map(|(case, token, code)| (case.to_owned(), token, code))
        .collect();
        for role in refused_roles {
            cases.push((
                format!("wrong role {role}"),
                Some(signed(&claims(role, script.clinic_id))),
                Code::PermissionDenied,
            ));
        }
        for (case, authorization, code) in cases {
            let status = call(&harness, path, body.clone(), authorization.as_deref())
                .await
                .expect_err(&case);
            assert_eq!(status.code(), code, "{path} with {case}: {status:?}");
            assert!(
                status.get_details_error_info().is_some(),
                "{path} with {case}: a reason"
            );
        }
    }
    assert_eq!(
        row_counts(&harness).await,
        before,
        "a refused call changed rows"
    );
    // A refused read writes nothing to the clinic's access log (an outsider must not be
    // able to write there); the service's log has it.
    let refused_reads: i64 = harness
        .database()
        .owner_client()
        .await
        .query_one(
            "SELECT count(*) FROM access_log WHERE outcome = 'PERMISSION_DENIED'",
            &[],
        )
        .await
        .expect("refused reads")
        .get(0);
    assert_eq!(refused_reads, 0);

    // The same calls with a good token get past authentication and authorisation, and
    // the writes among them change the log.
    for (path, body) in every_rpc(&script) {
        let (admitted, _) = roles_for(&path);
        let token = format!(
            "Bearer {}",
            key.sign(&claims(admitted, script.clinic_id)).expect("sign")
        );
        if let Err(status) = call(&harness, &path, body, Some(&token)).await {
            assert!(
                !matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ),
                "{path} with a good token: {status:?}"
            );
        }
    }
    let after = row_counts(&harness).await;
    assert!(
        after[0] > before[0],
        "good writes appended: {before:?} -> {after:?}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analyst_sees_the_statistics_of_granted_clinics_only() {
    let mut harness = Harness::start_at(Utc::now()).await;
    harness.start_projector();
    let clinic_a = harness.clinic();
    let clinic_b = Uuid::new_v4();
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    let at = Utc::now() - Duration::days(3);
    let mut position = 0;
    // As many episodes as the smallest cell shown.
    let count = spineledger_readmodels::statistics::MinCell::DEFAULT.get();
    for _ in 0..count {
        let script = EpisodeScript {
            clinic_id: clinic_a,
            ..EpisodeScript::new()
        };
        writes
            .register_patient(script.register_patient(at))
            .await
            .expect("register");
        position = writes
            .record_evaluation(script.evaluation(at))
            .await
            .expect("evaluation")
            .into_inner()
            .result
            .expect("result")
            .global_position;
    }
    let episodes = |response: v1::GetOutcomeStatisticsResponse| -> i64 {
        response
            .groups
            .iter()
            .map(|group| group.episodes.unwrap_or_default())
            .sum()
    };
    let channel = harness.plain_channel().await;
    let statistics = |clinic: Uuid| {
        v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient::with_interceptor(
            channel.clone(),
            harness.bearer(Role::Analyst, &[clinic]),
        )
    };
    // Clinic A's analyst, naming no clinic, sees A's episodes (once projected).
    let mut analyst_a = statistics(clinic_a);
    let seen = analyst_a
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            min_position: Some(position),
            ..Default::default()
        })
        .await
        .expect("A's statistics")
        .into_inner();
    assert_eq!(episodes(seen), i64::try_from(count).expect("small"));
    // Clinic B's analyst naming no clinic sees nothing of A; naming A is refused.
    let mut analyst_b = statistics(clinic_b);
    let seen = analyst_b
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest::default())
        .await
        .expect("B's statistics")
        .into_inner();
    assert_eq!(episodes(seen), 0);
    let refused = analyst_b
        .get_outcome_statistics(v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![clinic_a.to_string()],
            ..Default::default()
        })
        .await
        .expect_err("A is not granted");
    assert_eq!(refused.code(), Code::PermissionDenied);
    harness.stop().await;
}

#[test]
fn every_rpc_of_the_api_has_a_row_in_the_role_table() {
    let descriptors = prost_types::FileDescriptorSet::decode(spineledger_api::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let mut paths = Vec::new();
    for file in descriptors.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert!(paths.len() >= 15, "{paths:?}");
    for path in &paths {
        assert!(
            matches!(
                spineledger_auth::role::access(path),
                Some(Access::Roles(roles)) if !roles.is_empty()
            ),
            "{path} has no row in the role table"
        );
    }
    assert_eq!(
        paths.len(),
        RPC_ACCESS.len(),
        "rows for RPCs that do not exist"
    );
}

#[tokio::test]
async fn a_clinician_records_as_itself_and_the_principal_is_stored_with_the_event() {
    let harness = Harness::start().await;
    let script = EpisodeScript::new();
    let clinician = |actor: &str| {
        let mut request = script.register_patient(Utc::now() - Duration::days(1));
        if let Some(header) = request.header.as_mut() {
            header.actor = actor.into();
        }
        request.encode_to_vec()
    };
    let token = format!(
        "Bearer {}",
        harness
            .key()
            .sign(&Claims {
                sub: "dr-okafor".into(),
                ..claims(Role::Clinician, script.clinic_id)
            })
            .expect("sign")
    );
    let path = format!("{WRITE}RegisterPatient");
    let status = call(&harness, &path, clinician("dr-someone-else"), Some(&token))
        .await
        .expect_err("a clinician may not name another actor");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("ACTOR_NOT_PERMITTED".to_owned())
    );
    call(&harness, &path, clinician("dr-okafor"), Some(&token))
        .await
        .expect("as itself");

    let events = harness
        .database()
        .store()
        .read_whole_stream(&spineledger_store::StreamKey::new(
            script.clinic_id,
            format!("patient-{}", script.patient_id),
        ))
        .await
        .expect("stream");
    assert_eq!(events.len(), 1);
    let metadata = &events[0].metadata;
    assert_eq!(metadata.actor, "dr-okafor");
    let principal = metadata.principal.as_ref().expect("principal stored");
    assert_eq!(principal.subject, "dr-okafor");
    assert_eq!(principal.issuer, spineledger_auth::dev::DEV_ISSUER);
    assert_eq!(principal.role, "clinician");
    harness.stop().await;
}

#[tokio::test]
async fn an_integration_writes_for_its_users_under_its_own_principal() {
    let harness = Harness::start().await;
    let script = harness.script();
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    writes
        .register_patient(script.register_patient(Utc::now() - Duration::days(1)))
        .await
        .expect("register");
    let events = harness
        .database()
        .store()
        .read_whole_stream(&spineledger_store::StreamKey::new(
            script.clinic_id,
            format!("patient-{}", script.patient_id),
        ))
        .await
        .expect("stream");
    let metadata = &events[0].metadata;
    assert_eq!(metadata.actor, "provider-7", "the user it names");
    let principal = metadata.principal.as_ref().expect("principal stored");
    assert_eq!(
        (principal.subject.as_str(), principal.role.as_str()),
        ("e2e-frontdesk", "integration")
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_deadline_passes_while_it_waits_is_not_appended() {
    let harness = Harness::start().await;
    let script = harness.script();
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    let at = Utc::now() - Duration::days(2);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation");
    let before = row_counts(&harness).await;

    // Another transaction holds the episode's stream row, so the plan waits for its lock
    // inside the service's transaction, past the client's deadline.
    let mut owner = harness.database().owner_client().await;
    let holder = owner.transaction().await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM streams WHERE clinic_id = $1 AND stream_id = $2 FOR UPDATE",
            &[&script.clinic_id, &format!("episode-{}", script.episode_id)],
        )
        .await
        .expect("lock");
    let mut request = tonic::Request::new(script.plan(at + Duration::hours(2)));
    request
        .metadata_mut()
        .insert("grpc-timeout", "700m".parse().expect("header"));
    let call = tokio::spawn(async move { writes.start_treatment_plan(request).await });

    // The service reached the database and waits for the lock.
    let observer = harness.database().owner_client().await;
    let mut waited = false;
    for _ in 0..50 {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if waiting > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert!(waited, "the write never reached the stream lock");
    let status = call
        .await
        .expect("task")
        .expect_err("the deadline passed while it waited");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // The client's deadline ran out; the server's, counted from when the request
    // arrived, runs out a moment later. Past both, the lock is released: an append still
    // pending would go through now.
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    holder.commit().await.expect("release");
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    // (The read models may still be catching up with the evaluation: compare the log.)
    assert_eq!(
        row_counts(&harness).await[..2],
        before[..2],
        "nothing was appended"
    );
    harness.stop().await;
}
