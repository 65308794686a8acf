//! The simulator sends what clinics really send: late entries, back-dated sessions and
//! corrections of every correctable field of every event type, all accepted; and the same
//! seed twice appends nothing new.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value as Json;
use spineledger_api::convert::correction::correctable_fields;
use spineledger_domain::events::EPISODE_EVENT_TYPES;
use spineledger_e2e::Harness;
use spineledger_e2e::oracle::all_events;
use spineledger_store::RecordedEvent;
use spineledger_tools::simulate::{self, Cohort};
use uuid::Uuid;

/// The README's three clinics.
const README_CLINICS: [Uuid; 3] = [
    Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111),
    Uuid::from_u128(0x2222_2222_2222_4222_8222_2222_2222_2222),
    Uuid::from_u128(0x3333_3333_3333_4333_8333_3333_3333_3333),
];

/// The README's cohort.
fn readme_cohort() -> Cohort {
    Cohort {
        clinics: README_CLINICS.to_vec(),
        patients_per_clinic: 40,
        seed: 7,
        start_date: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
        concurrency: 8,
    }
}

/// One stored field correction: the corrected event's type, the payload path, the value.
type StoredCorrection = (String, String, Json);

/// Whether a stored correction is the stored form of correcting `proto_field` (the API's
/// name) of an event of `event_type`: the cadence fields become the payload's `cadence`,
/// one screened item a `contraindications.<item>` path; every other field keeps its name.
fn covers(stored: &StoredCorrection, event_type: &str, proto_field: &str) -> bool {
    let (stored_type, path, value) = stored;
    if stored_type != event_type {
        return false;
    }
    match proto_field {
        "sessions_per_week" | "interval_days" => {
            path == "cadence" && value.get(proto_field).is_some()
        }
        "cadence" => path == "cadence" && value == "none",
        "contraindications.<CONTRAINDICATION_…>" => path.starts_with("contraindications."),
        // The index alone is stored as an ODI without sections.
        "odi.score" => path == "odi" && value.get("sections").is_none(),
        _ => path == proto_field,
    }
}

fn occurred_at(event: &RecordedEvent) -> DateTime<Utc> {
    event
        .payload
        .get("occurred_at")
        .and_then(|at| serde_json::from_value(at.clone()).ok())
        .expect("every episode event has occurred_at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_simulated_cohort_has_late_entries_back_dated_sessions_and_every_correction() {
    let harness = Harness::start_at(Utc::now()).await;
    let token = harness.bearer(spineledger_auth::Role::Integration, &README_CLINICS);
    let report = simulate::run(harness.plain_channel().await, &token, &readme_cohort())
        .await
        .expect("simulate");
    assert_eq!(report.total_rejected(), 0, "{}", report.render());
    let log = harness.database().projector_pool();
    let accepted = usize::try_from(report.total_accepted()).expect("n");
    let events = all_events(log, Some(accepted)).await;

    let mut streams: BTreeMap<(Uuid, &str), Vec<&RecordedEvent>> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| e.stream_id.starts_with("episode-"))
    {
        streams
            .entry((event.clinic_id, event.stream_id.as_str()))
            .or_default()
            .push(event);
    }
    let mut late: BTreeMap<String, usize> = BTreeMap::new();
    let mut back_dated = 0;
    let mut corrections: Vec<StoredCorrection> = Vec::new();
    for stream in streams.values_mut() {
        stream.sort_by_key(|e| e.version);
        let mut facts: BTreeMap<Uuid, (&str, DateTime<Utc>)> = BTreeMap::new();
        let mut latest: Option<DateTime<Utc>> = None;
        let mut previous_session: Option<DateTime<Utc>> = None;
        for event in stream.iter() {
            let at = occurred_at(event);
            if event.event_type == "RecordCorrected" {
                let target: Uuid =
                    serde_json::from_value(event.payload["corrected_event_id"].clone())
                        .expect("corrected event id");
                let (target_type, target_at) = facts[&target];
                assert!(
                    at >= target_at,
                    "a correction dated before the fact it corrects"
                );
                for field in event.payload["corrections"].as_array().expect("list") {
                    corrections.push((
                        target_type.to_owned(),
                        field["field"].as_str().expect("path").to_owned(),
                        field["corrected_value"].clone(),
                    ));
                }
                continue;
            }
            facts.insert(event.event_id, (event.event_type.as_str(), at));
            if latest.is_some_and(|latest| at < latest) {
                *late.entry(event.event_type.clone()).or_default() += 1;
            }
            latest = latest.max(Some(at));
            if event.event_type == "SessionRecorded" {
                if previous_session.is_some_and(|previous| at <= previous - Duration::days(1)) {
                    back_dated += 1;
                }
                previous_session = Some(at);
            }
        }
    }
    eprintln!(
        "late entries {late:?}, back-dated sessions {back_dated}, field corrections {}",
        corrections.len()
    );
    for event_type in ["SessionRecorded", "OutcomeRecorded", "SessionMissed"] {
        assert!(
            late.contains_key(event_type),
            "no late {event_type}: {late:?}"
        );
    }
    assert!(back_dated > 0, "no back-dated session");
    let mut missing = BTreeSet::new();
    for event_type in EPISODE_EVENT_TYPES {
        for field in correctable_fields(event_type) {
            if !corrections.iter().any(|c| covers(c, event_type, field)) {
                missing.insert(format!("{event_type}.{field}"));
            }
        }
    }
    assert!(missing.is_empty(), "never corrected: {missing:?}");

    // The same seed again: the same commands, recognised as retries, append nothing.
    let again = simulate::run(harness.plain_channel().await, &token, &readme_cohort())
        .await
        .expect("simulate again");
    assert_eq!(again.total_rejected(), 0, "{}", again.render());
    assert_eq!(again.total_accepted(), report.total_accepted());
    let after = all_events(log, None).await;
    assert_eq!(after.len(), events.len(), "a second run appended events");
    harness.stop().await;
}
