//! The record as the chart reads it, over gRPC (issue 7): corrections are validated like
//! the fields they correct and reach every read model, late entries take their place,
//! impossible orders of care are refused, the age agrees with the birth year, and two
//! sessions give a tolerance trend.

use chrono::{DateTime, Duration, Utc};
use prost_types::value::Kind;
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_e2e::AuthChannel as Channel;
use spineledger_e2e::Harness;
use spineledger_e2e::requests::{EpisodeScript, newtons, timestamp};
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

type Writes = ClinicalRecordsServiceClient<Channel>;
type Plans = TreatmentPlanServiceClient<Channel>;

async fn clients(harness: &Harness) -> (Writes, Plans) {
    let channel = harness.channel().await;
    (
        ClinicalRecordsServiceClient::new(channel.clone()),
        TreatmentPlanServiceClient::new(channel),
    )
}

/// Whole seconds, as the requests carry them.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("now")
}

async fn stored_count(harness: &Harness, script: &EpisodeScript) -> usize {
    harness.episode_events(script).await.len()
}

/// Registered and evaluated `days_ago`; the evaluation's event id.
async fn evaluated(writes: &mut Writes, script: &EpisodeScript, at: DateTime<Utc>) -> Uuid {
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    event_id(
        writes
            .record_evaluation(script.evaluation(at))
            .await
            .expect("evaluation")
            .into_inner()
            .result,
    )
}

fn event_id(result: Option<v1::WriteResult>) -> Uuid {
    Uuid::parse_str(&result.expect("result").event_id).expect("event id")
}

fn position(result: Option<&v1::WriteResult>) -> i64 {
    result.expect("result").global_position
}

fn value(kind: Kind) -> Option<prost_types::Value> {
    Some(prost_types::Value { kind: Some(kind) })
}

fn number(n: f64) -> Option<prost_types::Value> {
    value(Kind::NumberValue(n))
}

fn string(s: &str) -> Option<prost_types::Value> {
    value(Kind::StringValue(s.to_owned()))
}

fn object(fields: &[(&str, Option<prost_types::Value>)]) -> Option<prost_types::Value> {
    value(Kind::StructValue(prost_types::Struct {
        fields: fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone().expect("value")))
            .collect(),
    }))
}

fn correction(
    script: &EpisodeScript,
    at: DateTime<Utc>,
    corrected: Uuid,
    fields: &[(&str, Option<prost_types::Value>)],
) -> v1::RecordCorrectionRequest {
    v1::RecordCorrectionRequest {
        header: script.header(),
        occurred_at: timestamp(at),
        episode_id: script.episode_id.to_string(),
        corrected_event_id: corrected.to_string(),
        corrections: fields
            .iter()
            .map(|(field, corrected_value)| v1::FieldCorrection {
                field: (*field).to_owned(),
                corrected_value: corrected_value.clone(),
            })
            .collect(),
        reason: "entered wrongly".into(),
    }
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    status.get_details_error_info().expect("ErrorInfo").reason
}

async fn plan_at(
    plans: &mut Plans,
    script: &EpisodeScript,
    min_position: i64,
) -> v1::TreatmentPlan {
    plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: script.clinic_id.to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: Some(min_position),
        })
        .await
        .expect("plan")
        .into_inner()
        .plan
        .expect("plan")
}

#[tokio::test]
async fn a_correction_off_the_original_fields_scale_type_or_name_is_refused_and_appends_nothing() {
    let harness = Harness::start().await;
    let (mut writes, _) = clients(&harness).await;
    let script = harness.script();
    let start = now() - Duration::days(10);
    let evaluation = evaluated(&mut writes, &script, start).await;
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    let session = event_id(
        writes
            .record_session(script.session(start + Duration::days(2), 200.0, v1::Tolerance::Good))
            .await
            .expect("session")
            .into_inner()
            .result,
    );
    let before = stored_count(&harness, &script).await;
    let at = start + Duration::days(3);
    let value_path = "corrections[0].corrected_value";
    let refused: Vec<(Uuid, &str, Option<prost_types::Value>, &str)> = vec![
        (evaluation, "pain_back", number(11.0), value_path),
        (evaluation, "pain_back", number(-3.0), value_path),
        (evaluation, "pain_back", string("seven"), value_path),
        (evaluation, "pain_back", number(6.5), value_path),
        (
            evaluation,
            "odi",
            object(&[("score", number(250.0))]),
            "corrections[0].corrected_value.score",
        ),
        (evaluation, "age_years", number(500.0), value_path),
        (evaluation, "pain_bakc", number(5.0), "corrections[0].field"),
        // A field of another event type is not a field of this one.
        (
            evaluation,
            "tolerance",
            string("TOLERANCE_GOOD"),
            "corrections[0].field",
        ),
        // The stored form is not the API's: enums by their proto names, forces with units.
        (session, "tolerance", string("good"), value_path),
        (
            session,
            "peak_force",
            object(&[
                ("value", number(99_999.0)),
                ("unit", string("FORCE_UNIT_NEWTON")),
            ]),
            "corrections[0].corrected_value.value",
        ),
        (session, "peak_force", number(300.0), value_path),
        (session, "pain_before", number(3.5), value_path),
        // Not correctable: what the service derived, and the time that places the fact.
        (
            session,
            "session_number",
            number(1.0),
            "corrections[0].field",
        ),
        (
            session,
            "occurred_at",
            string("2026-01-01T00:00:00Z"),
            "corrections[0].field",
        ),
    ];
    for (target, field, corrected, path) in refused {
        let status = writes
            .record_correction(correction(
                &script,
                at,
                target,
                &[(field, corrected.clone())],
            ))
            .await
            .expect_err(field);
        assert_eq!(
            violated_fields(&status),
            vec![path.to_owned()],
            "{field} = {corrected:?}: {status:?}"
        );
    }
    // A peak force corrected below the rest force breaks the rule between the two.
    let status = writes
        .record_correction(correction(
            &script,
            at,
            session,
            &[(
                "peak_force",
                object(&[
                    ("value", number(50.0)),
                    ("unit", string("FORCE_UNIT_NEWTON")),
                ]),
            )],
        ))
        .await
        .expect_err("below rest force");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "CORRECTION_INVALID"
    );
    assert_eq!(stored_count(&harness, &script).await, before);
}

#[tokio::test]
async fn a_correction_reaches_the_plan_and_the_outcome_facts_and_is_flagged() {
    let mut harness = Harness::start().await;
    harness.start_projector();
    let (mut writes, mut plans) = clients(&harness).await;
    let script = harness.script();
    let start = now() - Duration::days(10);
    let evaluation = evaluated(&mut writes, &script, start).await;
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    let session = event_id(
        writes
            .record_session(script.session(start + Duration::days(2), 200.0, v1::Tolerance::Good))
            .await
            .expect("session")
            .into_inner()
            .result,
    );
    let at = start + Duration::days(3);
    writes
        .record_correction(correction(
            &script,
            at,
            evaluation,
            &[("pain_back", number(5.0)), ("age_years", number(58.0))],
        ))
        .await
        .expect("evaluation corrected");
    let written = writes
        .record_correction(correction(
            &script,
            at,
            session,
            &[
                (
                    "peak_force",
                    object(&[
                        ("value", number(30.0)),
                        ("unit", string("FORCE_UNIT_KILOGRAM_FORCE")),
                    ]),
                ),
                ("tolerance", string("TOLERANCE_DISCOMFORT")),
                ("pain_before", number(8.0)),
            ],
        ))
        .await
        .expect("session corrected")
        .into_inner();
    let plan = plan_at(&mut plans, &script, position(written.result.as_ref())).await;
    assert_eq!(plan.baseline_pain_back, Some(5));
    let settings = plan.last_settings.expect("settings");
    assert!((settings.peak_force_newtons - 30.0 * 9.806_65).abs() < 1e-9);
    assert_eq!(
        plan.recent_tolerances,
        vec![v1::Tolerance::Discomfort as i32]
    );
    for field in ["baseline_pain_back", "last_settings", "recent_tolerances"] {
        assert!(
            plan.corrected_fields.iter().any(|f| f == field),
            "{field} flagged: {:?}",
            plan.corrected_fields
        );
    }
    assert!(!plan.corrected_fields.iter().any(|f| f == "baseline_odi"));

    // The facts statistics are computed from, read as an analyst's SQL would.
    let facts = harness.outcome_facts(&script).await;
    assert_eq!(facts["baseline_pain_back"], 5);
    assert_eq!(facts["pain_before_by_session"]["1"], 8);
    assert_eq!(facts["scores_corrected"], true);
    assert_eq!(facts["corrections"], 2);
}

/// The case: a plan of 6 sessions over 6 weeks (one every 7 days) started 20
/// days ago; sessions dated 19 and 2 days ago, then one dated 12 days ago entered last.
#[tokio::test]
async fn a_session_entered_late_takes_its_place_and_the_plan_is_not_overdue() {
    let mut harness = Harness::start().await;
    harness.start_projector();
    let (mut writes, mut plans) = clients(&harness).await;
    let script = harness.script();
    let today = now();
    evaluated(&mut writes, &script, today - Duration::days(21)).await;
    let mut plan = script.plan(today - Duration::days(20));
    plan.initial_sessions = 6;
    plan.initial_span_weeks = 6;
    writes.start_treatment_plan(plan).await.expect("plan");
    for (days_ago, peak) in [(19, 200.0), (2, 260.0), (12, 230.0)] {
        writes
            .record_session(script.session(
                today - Duration::days(days_ago),
                peak,
                v1::Tolerance::Good,
            ))
            .await
            .expect("session");
    }
    let last = writes
        .record_outcome(script.outcome(today - Duration::days(1), 4, 30.0))
        .await
        .expect("outcome")
        .into_inner();
    let plan = plan_at(&mut plans, &script, position(last.result.as_ref())).await;
    assert_eq!(plan.sessions_total, 3);
    assert_eq!(plan.last_session_at, timestamp(today - Duration::days(2)));
    assert_eq!(plan.next_session_due, timestamp(today + Duration::days(5)));
    assert_eq!(
        plan.last_settings.expect("settings").peak_force_newtons,
        260.0
    );
    let flags = plan.flags.expect("flags");
    assert!(!flags.overdue);
    // 20 days at one session every 7 days: 3 expected (one on the first day), 3 attended.
    assert_eq!(plan.expected_sessions_by_today, Some(3));
    assert_eq!(plan.pacing, Some(0));

    let overdue = plans
        .list_treatment_plans(v1::ListTreatmentPlansRequest {
            clinic_id: script.clinic_id.to_string(),
            overdue: Some(true),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(overdue.plans.is_empty(), "{:?}", overdue.plans);

    // The session numbers are the order the sessions took place in, in the outcome facts.
    let facts = harness.outcome_facts(&script).await;
    assert_eq!(facts["sessions_completed"], 3);
    assert_eq!(facts["latest_follow_up"]["pain_back"], 4);
}

#[tokio::test]
async fn impossible_orders_of_care_are_refused_and_late_entries_accepted() {
    let harness = Harness::start().await;
    let (mut writes, _) = clients(&harness).await;
    let script = harness.script();
    let evaluated_at = now() - Duration::days(30);
    evaluated(&mut writes, &script, evaluated_at).await;
    let plan_at = evaluated_at + Duration::days(2);
    writes
        .start_treatment_plan(script.plan(plan_at))
        .await
        .expect("plan");
    writes
        .record_session(script.session(
            evaluated_at + Duration::days(10),
            200.0,
            v1::Tolerance::Good,
        ))
        .await
        .expect("session");
    let before = stored_count(&harness, &script).await;

    let before_evaluation = writes
        .record_session(script.session(
            evaluated_at - Duration::days(1),
            200.0,
            v1::Tolerance::Good,
        ))
        .await
        .expect_err("a session before the evaluation");
    assert_eq!(reason(&before_evaluation), "OCCURRED_OUT_OF_ORDER");
    let info = before_evaluation
        .get_details_error_info()
        .expect("ErrorInfo");
    assert_eq!(info.metadata["must_not_precede"], "treatment plan start");

    let discharge = writes
        .discharge_episode(script.discharge(
            evaluated_at - Duration::days(40),
            v1::DischargeReason::GoalsMet,
        ))
        .await
        .expect_err("a discharge before the evaluation");
    assert_eq!(reason(&discharge), "OCCURRED_OUT_OF_ORDER");
    let discharge_before_care = writes
        .discharge_episode(script.discharge(
            evaluated_at + Duration::days(5),
            v1::DischargeReason::GoalsMet,
        ))
        .await
        .expect_err("a discharge before a recorded session");
    assert_eq!(reason(&discharge_before_care), "OCCURRED_OUT_OF_ORDER");
    let outcome = writes
        .record_outcome(script.outcome(evaluated_at - Duration::hours(1), 5, 30.0))
        .await
        .expect_err("an outcome before the evaluation");
    assert_eq!(reason(&outcome), "OCCURRED_OUT_OF_ORDER");
    assert_eq!(stored_count(&harness, &script).await, before);

    // Entered late but possible: a session between the plan start and the last session,
    // and an outcome dated before it.
    writes
        .record_session(script.session(
            evaluated_at + Duration::days(6),
            200.0,
            v1::Tolerance::Good,
        ))
        .await
        .expect("a late entry");
    writes
        .record_outcome(script.outcome(evaluated_at + Duration::days(4), 5, 30.0))
        .await
        .expect("a late outcome");
    writes
        .discharge_episode(script.discharge(
            evaluated_at + Duration::days(11),
            v1::DischargeReason::GoalsMet,
        ))
        .await
        .expect("a discharge after the care");
}

#[tokio::test]
async fn the_age_at_evaluation_must_fit_the_registered_birth_year() {
    let harness = Harness::start().await;
    let (mut writes, _) = clients(&harness).await;
    let script = harness.script();
    let at = DateTime::parse_from_rfc3339("2026-06-15T09:00:00Z")
        .expect("date")
        .with_timezone(&Utc);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register (born 1968)");
    let mut wrong = script.evaluation(at);
    wrong.age_years = 40;
    let status = writes.record_evaluation(wrong).await.expect_err("age 40");
    assert_eq!(reason(&status), "AGE_INCONSISTENT_WITH_BIRTH_YEAR");
    for age in [57, 58] {
        let mut evaluation = script.evaluation(at + Duration::minutes(i64::from(age)));
        evaluation.age_years = age;
        writes
            .record_evaluation(evaluation)
            .await
            .expect("58 after the birthday, 57 before it");
    }
    let evaluation = event_id(
        writes
            .record_evaluation(script.evaluation(at + Duration::hours(2)))
            .await
            .expect("evaluation")
            .into_inner()
            .result,
    );
    let status = writes
        .record_correction(correction(
            &script,
            at + Duration::hours(3),
            evaluation,
            &[("age_years", number(30.0))],
        ))
        .await
        .expect_err("a corrected age must fit too");
    assert_eq!(reason(&status), "AGE_INCONSISTENT_WITH_BIRTH_YEAR");
}

#[tokio::test]
async fn two_sessions_give_a_tolerance_trend() {
    let mut harness = Harness::start().await;
    harness.start_projector();
    let (mut writes, mut plans) = clients(&harness).await;
    let script = harness.script();
    let start = now() - Duration::days(5);
    evaluated(&mut writes, &script, start).await;
    writes
        .start_treatment_plan(script.plan(start))
        .await
        .expect("plan");
    writes
        .record_session(script.session(start + Duration::days(1), 200.0, v1::Tolerance::Good))
        .await
        .expect("good");
    let mut second = script.session(start + Duration::days(3), 200.0, v1::Tolerance::Discomfort);
    second.peak_force = newtons(200.0);
    let written = writes
        .record_session(second)
        .await
        .expect("discomfort")
        .into_inner();
    let plan = plan_at(&mut plans, &script, position(written.result.as_ref())).await;
    assert_eq!(plan.tolerance_trend, v1::ToleranceTrend::Worsening as i32);
}

#[tokio::test]
async fn corrections_keep_the_originals_rules_and_only_those() {
    let harness = Harness::start().await;
    let (mut writes, _) = clients(&harness).await;
    let script = harness.script();
    let start = now() - Duration::days(20);
    evaluated(&mut writes, &script, start).await;
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    let first = event_id(
        writes
            .record_session(script.session(start + Duration::days(2), 300.0, v1::Tolerance::Good))
            .await
            .expect("first")
            .into_inner()
            .result,
    );
    writes
        .record_session(script.session(start + Duration::days(5), 350.0, v1::Tolerance::Good))
        .await
        .expect("second, stronger");
    let outcome = event_id(
        writes
            .record_outcome(script.outcome(start + Duration::days(6), 4, 30.0))
            .await
            .expect("outcome")
            .into_inner()
            .result,
    );
    // A re-evaluation at a lower body weight lowers the ceiling from then on (40 kg: a
    // ceiling under 300 N); the earlier session's pain may still be corrected.
    let mut lighter = script.evaluation(start + Duration::days(7));
    lighter.body_weight_kg = Some(40.0);
    writes
        .record_evaluation(lighter)
        .await
        .expect("re-evaluation");
    let at = start + Duration::days(8);
    writes
        .record_correction(correction(
            &script,
            at,
            first,
            &[("pain_before", number(5.0))],
        ))
        .await
        .expect("a pain correction is not judged by today's ceiling");

    // Poorly tolerated with a stronger session after it breaks the force rule.
    let status = writes
        .record_correction(correction(
            &script,
            at,
            first,
            &[("tolerance", string("TOLERANCE_STOPPED_EARLY"))],
        ))
        .await
        .expect_err("the next session was stronger");
    assert_eq!(reason(&status), "FORCE_INCREASE_AFTER_POOR_TOLERANCE");

    // The score alone, and "not recorded" for an optional enum, are corrections too.
    writes
        .record_correction(correction(
            &script,
            at,
            outcome,
            &[
                ("odi.score", number(28.0)),
                ("sciatica", string("SCIATICA_SYMPTOMS_UNSPECIFIED")),
            ],
        ))
        .await
        .expect("odi.score and sciatica");
    let stored = harness.episode_events(&script).await;
    let last = stored.last().expect("the correction");
    assert_eq!(last.payload["corrections"][0]["field"], "odi");
    assert_eq!(
        last.payload["corrections"][0]["corrected_value"]["score"],
        28.0
    );
    assert_eq!(last.payload["corrections"][1]["field"], "sciatica");
    assert!(last.payload["corrections"][1]["corrected_value"].is_null());

    // The same stored value named twice is refused.
    let status = writes
        .record_correction(correction(
            &script,
            at,
            outcome,
            &[
                ("odi", object(&[("score", number(20.0))])),
                ("odi.score", number(21.0)),
            ],
        ))
        .await
        .expect_err("odi twice");
    assert_eq!(
        violated_fields(&status),
        vec!["corrections[1].field".to_owned()]
    );
}

#[tokio::test]
async fn care_dated_before_the_discharge_may_be_entered_after_it() {
    let harness = Harness::start().await;
    let (mut writes, _) = clients(&harness).await;
    let script = harness.script();
    let start = now() - Duration::days(20);
    evaluated(&mut writes, &script, start).await;
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    writes
        .record_session(script.session(start + Duration::days(2), 200.0, v1::Tolerance::Good))
        .await
        .expect("session");
    writes
        .discharge_episode(
            script.discharge(start + Duration::days(10), v1::DischargeReason::GoalsMet),
        )
        .await
        .expect("discharge");
    writes
        .record_session(script.session(start + Duration::days(6), 200.0, v1::Tolerance::Good))
        .await
        .expect("a session dated before the discharge, entered after it");
    let after = writes
        .record_outcome(script.outcome(start + Duration::days(11), 3, 20.0))
        .await
        .expect_err("an outcome dated after the discharge");
    assert_eq!(reason(&after), "EPISODE_DISCHARGED");
}
