//! The auditor's API (issue 10): an episode's plan as of any position equals what the
//! projector showed right after that position, however the record changed later; a
//! stream's history, page by page, is the log itself, and its hashes can be recomputed
//! from what the API returns.

use chrono::{DateTime, Duration, Utc};
use spineledger_api::v1;
use spineledger_api::v1::audit_service_client::AuditServiceClient;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_auth::Role;
use spineledger_e2e::Harness;
use spineledger_verifier::chain::{EventHash, Hashed};
use tonic::Code;
use uuid::Uuid;

/// The plan without what depends on "today" (due-date flags, pacing), which the live read
/// and the as-of read compute for different days.
fn without_today(mut plan: v1::TreatmentPlan) -> v1::TreatmentPlan {
    plan.expected_sessions_by_today = None;
    plan.pacing = None;
    plan.flags = None;
    plan.as_of = None;
    plan
}

fn time(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(spineledger_api::views::instant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plan_as_of_every_position_is_what_the_projector_showed_then() {
    let mut harness = Harness::start_at(Utc::now()).await;
    harness.start_projector();
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let start = Utc::now() - Duration::days(30);

    writes
        .register_patient(script.register_patient(start))
        .await
        .expect("register");
    // After each write, what the projector showed once it had applied that write (and
    // before the next was sent).
    let mut shown: Vec<(i64, v1::TreatmentPlan)> = Vec::new();
    let episode =
        |script: &spineledger_e2e::requests::EpisodeScript, position| v1::GetTreatmentPlanRequest {
            clinic_id: script.clinic_id.to_string(),
            episode_id: script.episode_id.to_string(),
            min_position: Some(position),
        };
    macro_rules! written {
        ($call:expr) => {{
            let result = $call
                .await
                .expect("write")
                .into_inner()
                .result
                .expect("result");
            let plan = plans
                .get_treatment_plan(episode(&script, result.global_position))
                .await
                .expect("plan")
                .into_inner()
                .plan
                .expect("plan");
            shown.push((result.global_position, plan));
            result
        }};
    }
    let evaluation =
        written!(writes.record_evaluation(script.evaluation(start + Duration::hours(1))));
    let evaluation_id = Uuid::parse_str(&evaluation.event_id).expect("id");
    written!(writes.start_treatment_plan(script.plan(start + Duration::days(1))));
    for day in [2, 5, 9] {
        written!(writes.record_session(script.session(
            start + Duration::days(day),
            300.0,
            v1::Tolerance::Good
        )));
    }
    // A late entry (dated before the last session) and a correction of the evaluation.
    written!(writes.record_session(script.session(
        start + Duration::days(4),
        280.0,
        v1::Tolerance::Fair
    )));
    written!(
        writes.record_correction(script.correction(start + Duration::days(10), evaluation_id))
    );

    let mut auditor = AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Auditor, &[script.clinic_id]),
    );
    for (position, live) in shown {
        let as_of = auditor
            .get_treatment_plan_as_of(v1::GetTreatmentPlanAsOfRequest {
                clinic_id: script.clinic_id.to_string(),
                episode_id: script.episode_id.to_string(),
                as_of: Some(v1::get_treatment_plan_as_of_request::AsOf::GlobalPosition(
                    position,
                )),
            })
            .await
            .expect("as of")
            .into_inner();
        assert_eq!(as_of.last_global_position, position);
        assert_eq!(
            without_today(as_of.plan.expect("plan")),
            without_today(live),
            "as of position {position}"
        );
    }
    // Asking twice gives the same answer, byte for byte.
    // Now, to the nanosecond (a whole-second "now" could precede events recorded within
    // the current second), and the same moment both times.
    let now = Utc::now();
    let ask = || v1::GetTreatmentPlanAsOfRequest {
        clinic_id: script.clinic_id.to_string(),
        episode_id: script.episode_id.to_string(),
        as_of: Some(v1::get_treatment_plan_as_of_request::AsOf::RecordedAt(
            prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
            },
        )),
    };
    let once = auditor.get_treatment_plan_as_of(ask()).await.expect("once");
    let twice = auditor
        .get_treatment_plan_as_of(ask())
        .await
        .expect("twice");
    assert_eq!(
        prost::Message::encode_to_vec(once.get_ref()),
        prost::Message::encode_to_vec(twice.get_ref())
    );
    // Before the episode's first event there is no plan.
    let before = auditor
        .get_treatment_plan_as_of(v1::GetTreatmentPlanAsOfRequest {
            clinic_id: script.clinic_id.to_string(),
            episode_id: script.episode_id.to_string(),
            as_of: Some(v1::get_treatment_plan_as_of_request::AsOf::GlobalPosition(
                1,
            )),
        })
        .await
        .expect_err("nothing yet");
    assert_eq!(before.code(), Code::NotFound);
    harness.stop().await;
}

#[tokio::test]
async fn a_streams_history_is_the_log_and_its_hashes_can_be_recomputed_from_it() {
    let harness = Harness::start().await;
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let start = Utc::now() - Duration::days(10);
    writes
        .register_patient(script.register_patient(start))
        .await
        .expect("register");
    writes
        .record_evaluation(script.evaluation(start))
        .await
        .expect("evaluation");
    writes
        .start_treatment_plan(script.plan(start + Duration::days(1)))
        .await
        .expect("plan");
    for day in 2..5 {
        writes
            .record_session(script.session(start + Duration::days(day), 300.0, v1::Tolerance::Good))
            .await
            .expect("session");
    }

    let mut auditor = AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Auditor, &[script.clinic_id]),
    );
    let stream_id = format!("episode-{}", script.episode_id);
    let mut events = Vec::new();
    let mut after_version = 0;
    let mut pages = 0;
    loop {
        let page = auditor
            .list_stream_events(v1::ListStreamEventsRequest {
                clinic_id: script.clinic_id.to_string(),
                stream_id: stream_id.clone(),
                after_version,
                page_size: 2,
            })
            .await
            .expect("history")
            .into_inner();
        pages += 1;
        events.extend(page.events);
        if page.next_after_version == 0 {
            break;
        }
        after_version = page.next_after_version;
    }
    assert_eq!(pages, 3, "five events in pages of two");
    let stored = harness
        .database()
        .store()
        .read_whole_stream(&spineledger_store::StreamKey::new(
            script.clinic_id,
            stream_id.clone(),
        ))
        .await
        .expect("stream");
    assert_eq!(
        events
            .iter()
            .map(|event| event.event_id.clone())
            .collect::<Vec<_>>(),
        stored
            .iter()
            .map(|event| event.event_id.to_string())
            .collect::<Vec<_>>()
    );

    // An auditor recomputes every hash from the API's answer alone.
    let mut previous = EventHash::GENESIS;
    for event in &events {
        let payload: serde_json::Value =
            serde_json::from_str(&event.payload_json).expect("payload");
        let metadata: serde_json::Value =
            serde_json::from_str(&event.metadata_json).expect("metadata");
        assert!(
            metadata.get("principal").is_some(),
            "who wrote it: {metadata}"
        );
        let hash = Hashed {
            clinic_id: script.clinic_id,
            stream_id: &event.stream_id,
            version: u64::try_from(event.version).expect("version"),
            event_id: Uuid::parse_str(&event.event_id).expect("id"),
            event_type: &event.event_type,
            schema_version: event.schema_version,
            payload: &payload,
            metadata: &metadata,
            occurred_at: time(event.occurred_at.as_ref()),
            recorded_at: time(event.recorded_at.as_ref()).expect("recorded at"),
            previous,
        }
        .hash();
        assert_eq!(event.previous_hash, previous.to_hex());
        assert_eq!(event.event_hash, hash.to_hex(), "version {}", event.version);
        previous = hash;
    }

    // The same, for a person: `spineledger replay`.
    let printed = spineledger_tools::replay::fetch_and_render(
        harness.plain_channel().await,
        &harness.bearer(Role::Auditor, &[script.clinic_id]),
        &spineledger_tools::replay::ReplayQuery {
            clinic: script.clinic_id,
            episode: script.episode_id,
            as_of: None,
        },
    )
    .await
    .expect("replay");
    assert!(printed.contains(": 5 of 5 events"), "{printed}");
    assert!(printed.contains("SessionRecorded"), "{printed}");
    assert!(
        printed.contains("provider-7 via e2e-frontdesk (integration)"),
        "{printed}"
    );
    assert!(printed.contains(&events[4].event_hash[..16]), "{printed}");
    assert!(printed.contains("3 in the episode"), "{printed}");
    let earlier = spineledger_tools::replay::fetch_and_render(
        harness.plain_channel().await,
        &harness.bearer(Role::Auditor, &[script.clinic_id]),
        &spineledger_tools::replay::ReplayQuery {
            clinic: script.clinic_id,
            episode: script.episode_id,
            as_of: Some(spineledger_tools::replay::Moment::Position(
                events[1].global_position,
            )),
        },
    )
    .await
    .expect("replay as of");
    assert!(earlier.contains(": 2 of 5 events"), "{earlier}");
    assert!(earlier.contains("0 in the episode"), "{earlier}");
    // Replayed again (after more reads were logged), the same bytes.
    let again = spineledger_tools::replay::fetch_and_render(
        harness.plain_channel().await,
        &harness.bearer(Role::Auditor, &[script.clinic_id]),
        &spineledger_tools::replay::ReplayQuery {
            clinic: script.clinic_id,
            episode: script.episode_id,
            as_of: Some(spineledger_tools::replay::Moment::Position(
                events[1].global_position,
            )),
        },
    )
    .await
    .expect("replay as of, again");
    assert_eq!(again.as_bytes(), earlier.as_bytes());

    // Another clinic's auditor gets nothing; nor does a malformed stream id.
    let mut stranger = AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Auditor, &[Uuid::new_v4()]),
    );
    let refused = stranger
        .list_stream_events(v1::ListStreamEventsRequest {
            clinic_id: script.clinic_id.to_string(),
            stream_id: stream_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("other clinic");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let malformed = auditor
        .list_stream_events(v1::ListStreamEventsRequest {
            clinic_id: script.clinic_id.to_string(),
            stream_id: "events; DROP TABLE events".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    harness.stop().await;
}

#[tokio::test]
async fn a_clinics_changes_in_a_period_come_in_log_order_with_the_reasons_of_corrections() {
    let harness = Harness::start().await;
    let clinic = harness.clinic();
    let elsewhere = harness.script();
    let first = spineledger_e2e::requests::EpisodeScript {
        clinic_id: clinic,
        ..spineledger_e2e::requests::EpisodeScript::new()
    };
    let second = spineledger_e2e::requests::EpisodeScript {
        clinic_id: clinic,
        ..spineledger_e2e::requests::EpisodeScript::new()
    };
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let at = Utc::now() - Duration::days(5);
    for script in [&first, &second, &elsewhere] {
        writes
            .register_patient(script.register_patient(at))
            .await
            .expect("register");
    }
    let evaluation = writes
        .record_evaluation(first.evaluation(at))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result");
    writes
        .record_evaluation(second.evaluation(at))
        .await
        .expect("evaluation");
    writes
        .record_correction(first.correction(
            at + Duration::hours(1),
            Uuid::parse_str(&evaluation.event_id).expect("id"),
        ))
        .await
        .expect("correction");

    // The period starts at the first evaluation's recording.
    let stored = harness
        .database()
        .store()
        .read_whole_stream(&spineledger_store::StreamKey::new(
            clinic,
            format!("episode-{}", first.episode_id),
        ))
        .await
        .expect("stream");
    let from = stored[0].recorded_at;
    let stamp = |at: DateTime<Utc>| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).expect("nanos"),
    };
    let mut auditor = AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Auditor, &[clinic]),
    );
    let mut changes = Vec::new();
    let mut after = 0;
    loop {
        let page = auditor
            .list_clinic_changes(v1::ListClinicChangesRequest {
                clinic_id: clinic.to_string(),
                recorded_from: Some(stamp(from)),
                recorded_to: Some(stamp(Utc::now() + Duration::minutes(1))),
                after_global_position: after,
                page_size: 2,
            })
            .await
            .expect("changes")
            .into_inner();
        changes.extend(page.events);
        if page.next_after_global_position == 0 {
            break;
        }
        after = page.next_after_global_position;
    }
    let types: Vec<&str> = changes
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "EvaluationRecorded",
            "EvaluationRecorded",
            "RecordCorrected"
        ],
        "the registrations came before the period, the other clinic is not shown"
    );
    assert!(
        changes
            .windows(2)
            .all(|pair| pair[0].global_position < pair[1].global_position)
    );
    assert_eq!(changes[2].correction_reason, "typo");
    assert!(
        changes[..2]
            .iter()
            .all(|event| event.correction_reason.is_empty())
    );

    let backwards = auditor
        .list_clinic_changes(v1::ListClinicChangesRequest {
            clinic_id: clinic.to_string(),
            recorded_from: Some(stamp(Utc::now())),
            recorded_to: Some(stamp(from)),
            ..Default::default()
        })
        .await
        .expect_err("an empty period");
    assert_eq!(backwards.code(), Code::InvalidArgument);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_of_episode_data_is_in_the_access_log_with_who_why_and_what() {
    let mut harness = Harness::start_at(Utc::now()).await;
    harness.start_projector();
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let at = Utc::now() - Duration::days(3);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    let position = writes
        .record_evaluation(script.evaluation(at))
        .await
        .expect("evaluation")
        .into_inner()
        .result
        .expect("result")
        .global_position;

    // Clinic software reads for a clinician, saying why.
    let mut plans = TreatmentPlanServiceClient::new(harness.channel().await);
    let mut read = tonic::Request::new(v1::GetTreatmentPlanRequest {
        clinic_id: script.clinic_id.to_string(),
        episode_id: script.episode_id.to_string(),
        min_position: Some(position),
    });
    read.metadata_mut()
        .insert("x-actor", "dr-okafor".parse().expect("header"));
    read.metadata_mut()
        .insert("x-purpose-of-use", "treat".parse().expect("header"));
    plans.get_treatment_plan(read).await.expect("plan");
    let mut emergency = tonic::Request::new(v1::ListTreatmentPlansRequest {
        clinic_id: script.clinic_id.to_string(),
        ..Default::default()
    });
    emergency
        .metadata_mut()
        .insert("x-purpose-of-use", "ETREAT".parse().expect("header"));
    plans.list_treatment_plans(emergency).await.expect("list");
    // A plan that does not exist is asked for: recorded as such.
    let missing = Uuid::new_v4();
    plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: script.clinic_id.to_string(),
            episode_id: missing.to_string(),
            min_position: None,
        })
        .await
        .expect_err("no such plan");

    let mut auditor = AuditServiceClient::with_interceptor(
        harness.plain_channel().await,
        harness.bearer(Role::Auditor, &[script.clinic_id]),
    );
    let log = auditor
        .list_access_log(v1::ListAccessLogRequest {
            clinic_id: script.clinic_id.to_string(),
            ..Default::default()
        })
        .await
        .expect("access log")
        .into_inner()
        .entries;
    assert_eq!(log.len(), 3, "{log:?}");
    let first = &log[0];
    assert_eq!(first.rpc, "GetTreatmentPlan");
    assert_eq!(
        (
            first.principal_subject.as_str(),
            first.principal_role.as_str()
        ),
        ("e2e-frontdesk", "integration")
    );
    assert_eq!(first.actor, "dr-okafor");
    assert_eq!(first.purpose_of_use, "TREAT");
    assert!(!first.break_glass);
    assert_eq!(first.patient_id, script.patient_id.to_string());
    assert_eq!(first.episode_id, script.episode_id.to_string());
    assert_eq!(first.shown_position, position);
    assert_eq!(first.outcome, "OK");
    assert_eq!(log[1].rpc, "ListTreatmentPlans");
    assert!(log[1].break_glass, "ETREAT is emergency access");
    assert_eq!(log[2].episode_id, missing.to_string());
    assert_eq!(log[2].outcome, "NOT_FOUND");

    // Filtered by who, newest first, in pages of one.
    let page = auditor
        .list_access_log(v1::ListAccessLogRequest {
            clinic_id: script.clinic_id.to_string(),
            who: "dr-okafor".into(),
            newest_first: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].rpc, "GetTreatmentPlan");
    assert_eq!(
        page.next_after_position, 0,
        "only one entry names dr-okafor"
    );

    // The auditor's own history read is recorded too.
    auditor
        .list_stream_events(v1::ListStreamEventsRequest {
            clinic_id: script.clinic_id.to_string(),
            stream_id: format!("patient-{}", script.patient_id),
            ..Default::default()
        })
        .await
        .expect("history");
    let newest = auditor
        .list_access_log(v1::ListAccessLogRequest {
            clinic_id: script.clinic_id.to_string(),
            patient_id: script.patient_id.to_string(),
            newest_first: true,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("newest")
        .into_inner();
    assert_eq!(newest.entries[0].rpc, "ListStreamEvents");
    assert_eq!(newest.entries[0].principal_role, "auditor");

    // Sorted by each field, both ways, in pages of two: the order is the field's, ties by
    // position, and a page token serves only the order it came from.
    let all = auditor
        .list_access_log(v1::ListAccessLogRequest {
            clinic_id: script.clinic_id.to_string(),
            ..Default::default()
        })
        .await
        .expect("all")
        .into_inner()
        .entries;
    assert_eq!(all.len(), 4);
    type Key = fn(&v1::AccessLogEntry) -> String;
    let sorts: [(v1::AccessLogSort, Key); 11] = [
        (v1::AccessLogSort::Position, |e| {
            format!("{:020}", e.position)
        }),
        (v1::AccessLogSort::AccessedAt, |e| {
            let at = e.accessed_at.expect("time");
            format!("{:012}{:09}", at.seconds, at.nanos)
        }),
        (v1::AccessLogSort::Patient, |e| e.patient_id.clone()),
        (v1::AccessLogSort::Episode, |e| e.episode_id.clone()),
        (v1::AccessLogSort::Principal, |e| {
            e.principal_subject.clone()
        }),
        (v1::AccessLogSort::Role, |e| e.principal_role.clone()),
        (v1::AccessLogSort::Actor, |e| e.actor.clone()),
        (v1::AccessLogSort::Rpc, |e| e.rpc.clone()),
        (v1::AccessLogSort::Purpose, |e| e.purpose_of_use.clone()),
        (v1::AccessLogSort::BreakGlass, |e| e.break_glass.to_string()),
        (v1::AccessLogSort::Outcome, |e| e.outcome.clone()),
    ];
    for (sort, key) in sorts {
        for descending in [false, true] {
            let mut expected: Vec<&v1::AccessLogEntry> = all.iter().collect();
            expected.sort_by(|a, b| key(a).cmp(&key(b)).then(a.position.cmp(&b.position)));
            if descending {
                expected.reverse();
            }
            let expected: Vec<i64> = expected.iter().map(|entry| entry.position).collect();
            let mut listed = Vec::new();
            let mut token = String::new();
            loop {
                let page = auditor
                    .list_access_log(v1::ListAccessLogRequest {
                        clinic_id: script.clinic_id.to_string(),
                        sort_by: sort as i32,
                        descending,
                        page_size: 2,
                        page_token: token.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("a page")
                    .into_inner();
                listed.extend(page.entries.iter().map(|entry| entry.position));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
                if sort == v1::AccessLogSort::Principal && !descending {
                    // The token of one order is refused by another.
                    let status = auditor
                        .list_access_log(v1::ListAccessLogRequest {
                            clinic_id: script.clinic_id.to_string(),
                            sort_by: v1::AccessLogSort::Rpc as i32,
                            page_token: token.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect_err("another order's token");
                    assert_eq!(status.code(), tonic::Code::InvalidArgument);
                    // A token made up with a NUL in its key: INVALID_ARGUMENT, not a
                    // database error.
                    use base64::Engine;
                    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(format!("{}:0:1:a\0b", v1::AccessLogSort::Principal as i32));
                    let status = auditor
                        .list_access_log(v1::ListAccessLogRequest {
                            clinic_id: script.clinic_id.to_string(),
                            sort_by: v1::AccessLogSort::Principal as i32,
                            page_token: forged,
                            ..Default::default()
                        })
                        .await
                        .expect_err("a forged token");
                    assert_eq!(status.code(), tonic::Code::InvalidArgument);
                }
            }
            assert_eq!(listed, expected, "{sort:?} descending {descending}");
        }
    }

    // Exported as FHIR R4 AuditEvent resources, one per line.
    let mut ndjson = Vec::new();
    let written = spineledger_tools::access_log::export(
        harness.plain_channel().await,
        &harness.bearer(Role::Auditor, &[script.clinic_id]),
        script.clinic_id,
        &mut ndjson,
    )
    .await
    .expect("export");
    let text = String::from_utf8(ndjson).expect("utf-8");
    // (Set SPINELEDGER_TEST_FHIR_OUT to keep the file, e.g. to validate it with the
    // fhir.resources package.)
    if let Ok(path) = std::env::var("SPINELEDGER_TEST_FHIR_OUT") {
        std::fs::write(path, &text).expect("write the export");
    }
    let resources: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(u64::try_from(resources.len()).expect("n"), written);
    assert_eq!(written, 4);
    let read = &resources[0];
    assert_eq!(read["resourceType"], "AuditEvent");
    assert_eq!(read["action"], "R");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["subtype"][0]["code"], "read");
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
    assert_eq!(
        read["agent"][0]["who"]["identifier"]["value"],
        "e2e-frontdesk"
    );
    assert_eq!(read["agent"][0]["requestor"], false);
    assert_eq!(read["agent"][1]["who"]["identifier"]["value"], "dr-okafor");
    assert_eq!(read["agent"][1]["requestor"], true);
    assert_eq!(
        read["entity"][0]["what"]["identifier"]["value"],
        script.patient_id.to_string()
    );
    assert_eq!(read["source"]["site"], script.clinic_id.to_string());
    assert!(
        read["recorded"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert_eq!(resources[1]["subtype"][0]["code"], "search-type");
    assert_eq!(
        resources[1]["purposeOfEvent"][1]["coding"][0]["code"],
        "BTG"
    );
    assert_eq!(resources[2]["outcome"], "4", "the plan that was not found");

    // Nobody changes it, the owner included.
    let owner = harness.database().owner_client().await;
    let refused = owner
        .execute("UPDATE access_log SET outcome = 'OK'", &[])
        .await
        .expect_err("immutable");
    assert!(refused.to_string().contains("immutable") || refused.code().is_some());
    harness.stop().await;
}
