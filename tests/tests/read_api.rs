//! The query API's contract over gRPC (issue 7): how treatment plans are listed (order,
//! filters, page tokens), which plan fields are absent without a schedule, what a
//! suppressed statistics group carries, and over whom the median sessions to NRS response
//! is taken.

use chrono::{DateTime, Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_e2e::AuthChannel as Channel;
use spineledger_e2e::Harness;
use spineledger_e2e::requests::EpisodeScript;
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

type Writes = ClinicalRecordsServiceClient<Channel>;
type Plans = TreatmentPlanServiceClient<Channel>;

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

/// An episode of `clinic` whose plan (5 sessions over 3 weeks: one every 4.2 days)
/// started at `plan_at`, without sessions: its next session is due 4.2 days later.
async fn planned(writes: &mut Writes, clinic: Uuid, plan_at: DateTime<Utc>) -> EpisodeScript {
    let script = evaluated(writes, clinic, plan_at - Duration::days(1)).await;
    writes
        .start_treatment_plan(script.plan(plan_at))
        .await
        .expect("plan");
    script
}

/// Whole seconds: the wire's timestamps of the requests carry no fractions.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now")
}

fn list_request(clinic: Uuid) -> v1::ListTreatmentPlansRequest {
    v1::ListTreatmentPlansRequest {
        clinic_id: clinic.to_string(),
        ..Default::default()
    }
}

/// Every page of `request`, `page_size` plans at a time: the plans in list order.
async fn list_all(
    plans: &mut Plans,
    request: &v1::ListTreatmentPlansRequest,
    page_size: i32,
) -> Vec<v1::TreatmentPlan> {
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = plans
            .list_treatment_plans(v1::ListTreatmentPlansRequest {
                page_size,
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.plans.len() <= usize::try_from(page_size).expect("size"));
        listed.extend(page.plans);
        if page.next_page_token.is_empty() {
            return listed;
        }
        token = page.next_page_token;
        assert!(listed.len() < 100, "the pages do not end");
    }
}

fn ids(plans: &[v1::TreatmentPlan]) -> Vec<String> {
    plans.iter().map(|plan| plan.episode_id.clone()).collect()
}

fn id(script: &EpisodeScript) -> String {
    script.episode_id.to_string()
}

/// The plans of one clinic in a known order of next session due: three overdue (two of
/// them tied on their due date), two due soon, one awaiting a plan, one discharged: the
/// scripts in the expected list order and how many of the first are overdue.
struct Clinic {
    id: Uuid,
    in_order: Vec<EpisodeScript>,
    overdue: usize,
    /// The global position of the clinic's last write.
    position: i64,
}

async fn clinic_with_plans_due_at_different_times(writes: &mut Writes, clinic: Uuid) -> Clinic {
    let now = now();
    // Due 15.8 days ago, 5.8 days ago (twice), in 0.2 days, in 1.2 days.
    let most_overdue = planned(writes, clinic, now - Duration::days(20)).await;
    let tied_a = planned(writes, clinic, now - Duration::days(10)).await;
    let tied_b = planned(writes, clinic, now - Duration::days(10)).await;
    let due_soonest = planned(writes, clinic, now - Duration::days(4)).await;
    let due_later = planned(writes, clinic, now - Duration::days(3)).await;
    let awaiting = evaluated(writes, clinic, now - Duration::days(2)).await;
    let discharged = planned(writes, clinic, now - Duration::days(30)).await;
    // The clinic's last write: a read at its position sees every plan above.
    let position = writes
        .discharge_episode(
            discharged.discharge(now - Duration::days(1), v1::DischargeReason::SelfDischarge),
        )
        .await
        .expect("discharge")
        .into_inner()
        .result
        .expect("result")
        .global_position;
    let (first_tied, second_tied) = if tied_a.episode_id < tied_b.episode_id {
        (tied_a, tied_b)
    } else {
        (tied_b, tied_a)
    };
    let (first_undated, second_undated) = if awaiting.episode_id < discharged.episode_id {
        (awaiting, discharged)
    } else {
        (discharged, awaiting)
    };
    Clinic {
        id: clinic,
        in_order: vec![
            most_overdue,
            first_tied,
            second_tied,
            due_soonest,
            due_later,
            first_undated,
            second_undated,
        ],
        overdue: 3,
        position,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_listed_next_session_due_first_then_those_without_a_due_date() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let clinic = clinic_with_plans_due_at_different_times(&mut writes, harness.clinic()).await;
    // Another clinic's plans are never listed.
    planned(&mut writes, harness.clinic(), now() - Duration::days(40)).await;
    let want: Vec<String> = clinic.in_order.iter().map(id).collect();
    let request = v1::ListTreatmentPlansRequest {
        min_position: Some(clinic.position),
        ..list_request(clinic.id)
    };
    // Every page size cuts the list somewhere else: inside the dated plans, between a
    // tie, at the border to the plans without a due date and inside those.
    for page_size in 1..=8 {
        let listed = list_all(&mut plans, &request, page_size).await;
        assert_eq!(ids(&listed), want, "page size {page_size}");
    }
    let listed = list_all(&mut plans, &request, 50).await;
    let due: Vec<Option<i64>> = listed
        .iter()
        .map(|plan| plan.next_session_due.map(|due| due.seconds))
        .collect();
    assert!(due[..5].iter().all(Option::is_some), "{due:?}");
    assert!(due[..5].is_sorted(), "{due:?}");
    assert!(due[5..].iter().all(Option::is_none), "{due:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overdue_false_lists_only_plans_that_are_not_overdue() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let clinic = clinic_with_plans_due_at_different_times(&mut writes, harness.clinic()).await;
    let (overdue, on_time) = clinic.in_order.split_at(clinic.overdue);

    let listed = list_all(
        &mut plans,
        &v1::ListTreatmentPlansRequest {
            overdue: Some(false),
            min_position: Some(clinic.position),
            ..list_request(clinic.id)
        },
        2,
    )
    .await;
    assert_eq!(ids(&listed), on_time.iter().map(id).collect::<Vec<_>>());
    assert!(
        listed
            .iter()
            .all(|plan| plan.flags.is_some_and(|f| !f.overdue))
    );

    let listed = list_all(
        &mut plans,
        &v1::ListTreatmentPlansRequest {
            overdue: Some(true),
            ..list_request(clinic.id)
        },
        2,
    )
    .await;
    assert_eq!(ids(&listed), overdue.iter().map(id).collect::<Vec<_>>());
    assert!(
        listed
            .iter()
            .all(|plan| plan.flags.is_some_and(|f| f.overdue))
    );

    // Absent: no filter.
    let listed = list_all(&mut plans, &list_request(clinic.id), 50).await;
    assert_eq!(listed.len(), clinic.in_order.len());
    harness.stop().await;
}

fn field_violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|request| {
            request
                .field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_tokens_are_opaque_and_a_malformed_one_is_invalid_argument() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let clinic = clinic_with_plans_due_at_different_times(&mut writes, harness.clinic()).await;

    let first = plans
        .list_treatment_plans(v1::ListTreatmentPlansRequest {
            page_size: 2,
            min_position: Some(clinic.position),
            ..list_request(clinic.id)
        })
        .await
        .expect("first page")
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    assert!(
        !token.contains(&first.plans[1].episode_id),
        "the token is not the raw episode id: {token}"
    );
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );

    let mut shortened = token.clone();
    shortened.pop();
    let mut other_version = token.clone().into_bytes();
    other_version[0] = if other_version[0] == b'B' { b'C' } else { b'B' };
    let malformed = [
        "garbage!".to_owned(),
        // What the previous version handed out.
        first.plans[1].episode_id.clone(),
        shortened,
        String::from_utf8(other_version).expect("ascii"),
        format!("{token}AAAA"),
    ];
    for page_token in malformed {
        let status = plans
            .list_treatment_plans(v1::ListTreatmentPlansRequest {
                page_size: 2,
                page_token: page_token.clone(),
                ..list_request(clinic.id)
            })
            .await
            .expect_err("malformed token");
        assert_eq!(status.code(), Code::InvalidArgument, "{page_token}");
        assert_eq!(field_violations(&status), ["page_token"], "{page_token}");
    }
    harness.stop().await;
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
    let clinic = harness.clinic();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_filtered_by_patient() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let clinic = clinic_with_plans_due_at_different_times(&mut writes, harness.clinic()).await;
    // A second episode of the patient of the most overdue plan, awaiting its plan.
    let patient = clinic.in_order[0].clone();
    let second = EpisodeScript {
        episode_id: Uuid::new_v4(),
        ..patient.clone()
    };
    let position = writes
        .record_evaluation(second.evaluation(now() - Duration::hours(1)))
        .await
        .expect("second evaluation")
        .into_inner()
        .result
        .expect("result")
        .global_position;

    let request = v1::ListTreatmentPlansRequest {
        patient_id: Some(patient.patient_id.to_string()),
        min_position: Some(position.max(clinic.position)),
        ..list_request(clinic.id)
    };
    let listed = list_all(&mut plans, &request, 1).await;
    assert_eq!(ids(&listed), [id(&patient), id(&second)]);
    assert!(
        listed
            .iter()
            .all(|plan| plan.patient_id == patient.patient_id.to_string())
    );
    // Combined with another filter: the second episode has no due date, never overdue.
    let overdue = list_all(
        &mut plans,
        &v1::ListTreatmentPlansRequest {
            overdue: Some(true),
            ..request.clone()
        },
        10,
    )
    .await;
    assert_eq!(ids(&overdue), [id(&patient)]);
    // Another clinic has no plans of this patient; an unknown patient none at all.
    for (clinic_id, patient_id) in [
        (harness.clinic(), patient.patient_id),
        (clinic.id, Uuid::new_v4()),
    ] {
        let listed = list_all(
            &mut plans,
            &v1::ListTreatmentPlansRequest {
                clinic_id: clinic_id.to_string(),
                patient_id: Some(patient_id.to_string()),
                ..Default::default()
            },
            10,
        )
        .await;
        assert!(listed.is_empty(), "{listed:?}");
    }

    for bad in ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let status = plans
            .list_treatment_plans(v1::ListTreatmentPlansRequest {
                patient_id: Some(bad.into()),
                ..list_request(clinic.id)
            })
            .await
            .expect_err("invalid patient id");
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(field_violations(&status), ["patient_id"], "{bad:?}");
    }
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pacing_and_expected_sessions_are_absent_without_a_schedule() {
    let harness = Harness::start().await;
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let clinic = clinic_with_plans_due_at_different_times(&mut writes, harness.clinic()).await;
    let listed = list_all(
        &mut plans,
        &v1::ListTreatmentPlansRequest {
            min_position: Some(clinic.position),
            ..list_request(clinic.id)
        },
        50,
    )
    .await;
    assert_eq!(listed.len(), 7);
    for plan in &listed {
        let scheduled = !matches!(
            plan.phase(),
            v1::PlanPhase::AwaitingPlan | v1::PlanPhase::AsNeeded | v1::PlanPhase::Discharged
        );
        assert_eq!(plan.pacing.is_some(), scheduled, "{plan:?}");
        assert_eq!(
            plan.expected_sessions_by_today.is_some(),
            scheduled,
            "{plan:?}"
        );
    }
    let phases: Vec<v1::PlanPhase> = listed.iter().map(v1::TreatmentPlan::phase).collect();
    assert!(phases.contains(&v1::PlanPhase::AwaitingPlan));
    assert!(phases.contains(&v1::PlanPhase::Discharged));
    // A scheduled plan carries its numbers: planned 3 days ago, one session expected on
    // the first day, none attended.
    let due_later = &listed[4];
    assert_eq!(due_later.phase(), v1::PlanPhase::Initial);
    assert_eq!(due_later.expected_sessions_by_today, Some(1));
    assert_eq!(due_later.pacing, Some(-1));
    harness.stop().await;
}
