//! `spineledger access-log`: a clinic's access log as FHIR R4 AuditEvent resources,
//! one JSON object per line (NDJSON, the FHIR bulk format), read through the auditor's
//! API (`ListAccessLog`).
//!
//! Each entry becomes one AuditEvent: a RESTful read (`type` rest; `subtype` read for one
//! plan or history, search-type for listings), recorded at the access time, outcome 0
//! (success) or 4 (nothing found); the authenticated principal as an agent identified by
//! issuer and subject (with its role), and the user an integration named (`x-actor`) as
//! the requesting agent; the purpose of use as `purposeOfEvent` (HL7 v3 ActReason, with
//! BTG added for emergency access); the clinic as the source site; the patient and the
//! episode as entities, the RPC and the log position shown as entity details.

use std::io::Write;

use serde_json::{Value, json};
use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::audit_service_client::AuditServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

/// Entries read per page.
const PAGE: i32 = 500;

/// Writes every access log entry of `clinic` to `out` as an AuditEvent per line, oldest
/// first; returns how many.
///
/// # Errors
/// The server's refusal, or `out`'s.
pub async fn export(
    channel: Channel,
    token: &BearerToken,
    clinic: Uuid,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut audit = AuditServiceClient::with_interceptor(channel, token.clone());
    let mut after_position = 0;
    let mut written = 0;
    loop {
        let page = audit
            .list_access_log(v1::ListAccessLogRequest {
                clinic_id: clinic.to_string(),
                after_position,
                page_size: PAGE,
                ..Default::default()
            })
            .await
            .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        for entry in &page.entries {
            serde_json::to_writer(&mut *out, &audit_event(clinic, entry))?;
            out.write_all(b"\n")?;
            written += 1;
        }
        if page.next_after_position == 0 {
            break;
        }
        after_position = page.next_after_position;
    }
    Ok(written)
}

/// The RPCs that read one thing (the rest search).
const SINGLE_READS: &[&str] = &[
    "GetTreatmentPlan",
    "GetTreatmentPlanAsOf",
    "ListStreamEvents",
];

/// One access log entry as a FHIR R4 AuditEvent.
pub fn audit_event(clinic: Uuid, entry: &v1::AccessLogEntry) -> Value {
    let recorded = entry
        .accessed_at
        .as_ref()
        .and_then(spineledger_api::views::instant)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default();
    let (interaction, display) = if SINGLE_READS.contains(&entry.rpc.as_str()) {
        ("read", "read")
    } else {
        ("search-type", "search type")
    };
    let mut purposes = Vec::new();
    if !entry.purpose_of_use.is_empty() {
        purposes.push(json!({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": entry.purpose_of_use,
        }]}));
    }
    if entry.break_glass && entry.purpose_of_use != "BTG" {
        purposes.push(json!({"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "BTG",
            "display": "break the glass",
        }]}));
    }
    let principal = json!({
        "type": {"coding": [{
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110153",
            "display": "Source Role ID",
        }]},
        "role": [{"text": entry.principal_role}],
        "who": {"identifier": {"system": entry.principal_issuer, "value": entry.principal_subject}},
        "requestor": entry.actor.is_empty(),
    });
    let mut agents = vec![principal];
    if !entry.actor.is_empty() {
        agents.push(json!({
            "who": {"identifier": {"value": entry.actor}},
            "requestor": true,
        }));
    }
    let mut entities = Vec::new();
    if !entry.patient_id.is_empty() {
        entities.push(json!({
            "what": {"identifier": {"system": "urn:spineledger:patient", "value": entry.patient_id}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        }));
    }
    let mut details = vec![json!({"type": "rpc", "valueString": entry.rpc})];
    if entry.shown_position > 0 {
        details.push(json!({"type": "shown_global_position", "valueString": entry.shown_position.to_string()}));
    }
    entities.push(json!({
        "what": {"identifier": {
            "system": "urn:spineledger:episode",
            "value": if entry.episode_id.is_empty() { "none" } else { entry.episode_id.as_str() },
        }},
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
        "detail": details,
    }));
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("{clinic}-{}", entry.position),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{
            "system": "http://hl7.org/fhir/restful-interaction",
            "code": interaction,
            "display": display,
        }],
        "action": "R",
        "recorded": recorded,
        "outcome": if entry.outcome == "OK" { "0" } else { "4" },
        "agent": agents,
        "source": {
            "site": clinic.to_string(),
            "observer": {"display": "spineledger"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
        "entity": entities,
    });
    if !purposes.is_empty() {
        event["purposeOfEvent"] = Value::Array(purposes);
    }
    event
}
