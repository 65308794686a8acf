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
    for table in ["events", "streams", "treatment_plans", "outcome_episodes"] {
        let row = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count");
        counts.push(row.get::<_, i64>(0));
    }
    counts
}

/// The role admitted to `path` that the refusals use, and one that is not admitted.
fn roles_for(path: &str) -> (Role, Role) {
    if path == STATISTICS {
        (Role::Analyst, Role::Admin)
    } else {
        (Role::Integration, Role::Analyst)
    }
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
        let (admitted, refused_role) = roles_for(path);
        let good = claims(admitted, script.clinic_id);
        let signed = |claims: &Claims| format!("Bearer {}", key.sign(claims).expect("sign"));
        let tampered = {
            let token = key.sign(&good).expect("sign");
            let (rest, signature) = token.rsplit_once('.').expect("three parts");
            let flipped = if signature.starts_with('A') { "B" } else { "A" };
            format!("Bearer {rest}.{flipped}{}", &signature[1..])
        };
        let cases: Vec<(&str, Option<String>, Code)> = vec![
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
                "wrong role",
                Some(signed(&claims(refused_role, script.clinic_id))),
                Code::PermissionDenied,
            ),
            (
                "other clinic",
                Some(signed(&claims(admitted, other_clinic))),
                Code::PermissionDenied,
            ),
        ];
        for (case, authorization, code) in cases {
            let status = call(&harness, path, body.clone(), authorization.as_deref())
                .await
                .expect_err(case);
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

    // The same calls with a good token get past authentication and authorisation.
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

#[tokio::test]
async fn a_write_whose_deadline_has_passed_is_not_appended() {
    let harness = Harness::start().await;
    let script = harness.script();
    let mut writes = v1::clinical_records_service_client::ClinicalRecordsServiceClient::new(
        harness.channel().await,
    );
    let mut request = tonic::Request::new(script.register_patient(Utc::now()));
    request.set_timeout(StdDuration::from_nanos(1));
    let status = writes
        .register_patient(request)
        .await
        .expect_err("past its deadline");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Give a late append every chance to show up: there must be none.
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(row_counts(&harness).await[0], 0, "nothing was appended");
    harness.stop().await;
}
