//! `spineledger replay`: an episode's history and the treatment plan as it stood, for a
//! person, through the auditor's API (`ListStreamEvents`, `GetTreatmentPlanAsOf`).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::audit_service_client::AuditServiceClient;
use spineledger_api::v1::get_treatment_plan_as_of_request::AsOf;
use tonic::transport::Channel;
use uuid::Uuid;

/// Which episode, up to when.
#[derive(Debug, Clone)]
pub struct ReplayQuery {
    /// The clinic.
    pub clinic: Uuid,
    /// The episode.
    pub episode: Uuid,
    /// Up to this time (recorded), or this global position; `None`: now.
    pub as_of: Option<Moment>,
}

/// A moment of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Everything recorded at or before this time.
    RecordedAt(DateTime<Utc>),
    /// Everything at or before this global position.
    Position(i64),
}

/// The largest page the history is read in.
const PAGE: i32 = 500;

/// Reads the episode's history and its plan as of the moment, and renders both.
///
/// # Errors
/// The server's refusal (its code and message).
pub async fn fetch_and_render(
    channel: Channel,
    token: &BearerToken,
    query: &ReplayQuery,
) -> anyhow::Result<String> {
    let refused =
        |status: tonic::Status| anyhow::anyhow!("{:?}: {}", status.code(), status.message());
    let mut audit = AuditServiceClient::with_interceptor(channel, token.clone());
    let mut events = Vec::new();
    let mut after_version = 0;
    loop {
        let page = audit
            .list_stream_events(v1::ListStreamEventsRequest {
                clinic_id: query.clinic.to_string(),
                stream_id: format!("episode-{}", query.episode),
                after_version,
                page_size: PAGE,
            })
            .await
            .map_err(refused)?
            .into_inner();
        events.extend(page.events);
        if page.next_after_version == 0 {
            break;
        }
        after_version = page.next_after_version;
    }
    let moment = query.as_of.unwrap_or(Moment::RecordedAt(Utc::now()));
    let as_of = match moment {
        Moment::RecordedAt(at) => AsOf::RecordedAt(spineledger_api::views::timestamp(at)),
        Moment::Position(position) => AsOf::GlobalPosition(position),
    };
    let plan = match audit
        .get_treatment_plan_as_of(v1::GetTreatmentPlanAsOfRequest {
            clinic_id: query.clinic.to_string(),
            episode_id: query.episode.to_string(),
            as_of: Some(as_of),
        })
        .await
    {
        Ok(response) => response.into_inner().plan,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(refused(status)),
    };
    Ok(render(query, moment, &events, plan.as_ref()))
}

fn time(at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    at.and_then(spineledger_api::views::instant)
}

fn show(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn within(event: &v1::StoredEvent, moment: Moment) -> bool {
    match moment {
        Moment::RecordedAt(at) => {
            time(event.recorded_at.as_ref()).is_some_and(|recorded| recorded <= at)
        }
        Moment::Position(position) => event.global_position <= position,
    }
}

/// Who wrote an event: the asserted actor, and the authenticated principal.
fn writer(event: &v1::StoredEvent) -> String {
    let metadata: serde_json::Value =
        serde_json::from_str(&event.metadata_json).unwrap_or_default();
    let text = |value: &serde_json::Value, key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let actor = text(&metadata, "actor");
    match metadata.get("principal") {
        Some(principal) => format!(
            "{actor} via {} ({})",
            text(principal, "subject"),
            text(principal, "role")
        ),
        None => format!("{actor} (no authenticated principal recorded)"),
    }
}

/// A correction's one-line summary: what it corrects, which fields, why.
fn correction(event: &v1::StoredEvent) -> Option<String> {
    if event.event_type != "RecordCorrected" {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_str(&event.payload_json).ok()?;
    let fields: Vec<&str> = payload
        .get("corrections")
        .and_then(serde_json::Value::as_array)
        .map(|corrections| {
            corrections
                .iter()
                .filter_map(|c| c.get("field").and_then(serde_json::Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let text = |key: &str| {
        payload
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
    };
    Some(format!(
        "corrects {} {} ({}): {}",
        text("corrected_event_type"),
        text("corrected_event_id"),
        fields.join(", "),
        payload
            .get("reason")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no reason")
    ))
}

fn render(
    query: &ReplayQuery,
    moment: Moment,
    events: &[v1::StoredEvent],
    plan: Option<&v1::TreatmentPlan>,
) -> String {
    let mut out = String::new();
    let shown: Vec<&v1::StoredEvent> = events
        .iter()
        .filter(|event| within(event, moment))
        .collect();
    let moment_text = match moment {
        Moment::RecordedAt(at) => format!("as recorded by {}", at.to_rfc3339()),
        Moment::Position(position) => format!("as of global position {position}"),
    };
    let _ = writeln!(
        out,
        "Episode {} at clinic {}, {moment_text}: {} of {} events",
        query.episode,
        query.clinic,
        shown.len(),
        events.len()
    );
    let _ = writeln!(
        out,
        "\n{:>3}  {:<19}  {:<19}  {:<28}  {:<40}  hash",
        "v", "recorded", "occurred", "event", "written by"
    );
    for event in &shown {
        let _ = writeln!(
            out,
            "{:>3}  {:<19}  {:<19}  {:<28}  {:<40}  {}",
            event.version,
            show(time(event.recorded_at.as_ref())),
            show(time(event.occurred_at.as_ref())),
            event.event_type,
            writer(event),
            event.event_hash.get(..16).unwrap_or("(before the chain)")
        );
        if let Some(summary) = correction(event) {
            let _ = writeln!(out, "{:>5}{summary}", "");
        }
    }
    let _ = writeln!(out, "\nTreatment plan as it stood:");
    let Some(plan) = plan else {
        let _ = writeln!(out, "  none (no episode fact recorded yet)");
        return out;
    };
    let phase = v1::PlanPhase::try_from(plan.phase).map_or("unknown", |p| p.as_str_name());
    let optional = |value: Option<i32>| value.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let optional_f =
        |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let rows = [
        (
            "phase",
            phase.trim_start_matches("PLAN_PHASE_").to_ascii_lowercase(),
        ),
        (
            "sessions",
            format!(
                "{} in the episode, {} in the phase{}",
                plan.sessions_total,
                plan.sessions_in_phase,
                plan.sessions_planned_in_phase
                    .map_or_else(String::new, |planned| format!(" of {planned} planned"))
            ),
        ),
        ("last session", show(time(plan.last_session_at.as_ref()))),
        (
            "next session due",
            show(time(plan.next_session_due.as_ref())),
        ),
        (
            "back pain (NRS)",
            format!(
                "{} at baseline, {} latest",
                optional(plan.baseline_pain_back),
                optional(plan.latest_pain_back)
            ),
        ),
        (
            "leg pain (NRS)",
            format!(
                "{} at baseline, {} latest",
                optional(plan.baseline_pain_leg),
                optional(plan.latest_pain_leg)
            ),
        ),
        (
            "disability (ODI %)",
            format!(
                "{} at baseline, {} latest",
                optional_f(plan.baseline_odi),
                optional_f(plan.latest_odi)
            ),
        ),
        ("missed sessions", plan.missed_sessions.to_string()),
        ("adverse events", plan.adverse_events.to_string()),
        ("discharged", show(time(plan.discharged_at.as_ref()))),
        (
            "corrected fields",
            if plan.corrected_fields.is_empty() {
                "none".to_owned()
            } else {
                plan.corrected_fields.join(", ")
            },
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<20} {value}");
    }
    out
}
