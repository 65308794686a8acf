//! The clinical write API: one handler per RPC, all of them the same four steps —
//! validate at the edge, recognise a retry, decide against the folded episode, append.
//!
//! The decision is made inside the appending transaction, under the stream's lock
//! (`EventStore::append_decided`): concurrent writers of one episode queue instead of
//! racing. A retry (same command id, same request) returns the first response, whatever
//! happened to the episode since; a command id reused for something else is
//! ALREADY_EXISTS; a stale expected version is ABORTED with the actual version. Any
//! rejection appends nothing.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use chrono::{DateTime, Utc};
use spineledger_api::convert::correction;
use spineledger_api::convert::{self, ValidCommand, ValidHeader};
use spineledger_api::error::{ApiError, FieldViolations};
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_server::ClinicalRecordsService;
use spineledger_auth::Principal;
use spineledger_domain::{
    Episode, EpisodeCommand, EpisodeEvent, EpisodeId, PatientEvent, PatientFacts, PatientState,
    RegisterPatient,
};
use spineledger_store::{
    EventMetadata, ExpectedVersion, Fingerprint, NewEvent, RecordedEvent, RecordedPrincipal,
    StreamKey,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::telemetry::request_trace_id;
use crate::{App, auth};

/// The `ClinicalRecordsService` implementation.
#[derive(Debug, Clone)]
pub struct ClinicalRecords {
    app: App,
}

impl ClinicalRecords {
    /// The write service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }
}

/// What is recorded about the request itself, next to the actor from the header.
#[derive(Debug, PartialEq, Eq)]
struct RequestContext {
    client_name: Option<String>,
    client_version: Option<String>,
    trace_id: Option<String>,
}

impl RequestContext {
    /// Reads the client's headers. They are stored in the event metadata (`jsonb`), so a
    /// value that is not visible ASCII is ignored and control characters (tab, the only
    /// one HTTP allows, and U+0000, which PostgreSQL cannot store, should a transport ever
    /// pass one) are dropped: nothing here can fail the append.
    fn of<T>(request: &Request<T>) -> Self {
        let header = |name: &str| crate::access::header_text(request, name);
        Self {
            client_name: header("x-client-name").or_else(|| header("user-agent")),
            client_version: header("x-client-version"),
            trace_id: Some(request_trace_id(header("traceparent").as_deref())),
        }
    }

    fn metadata(&self, header: &ValidHeader, principal: &Principal) -> EventMetadata {
        EventMetadata {
            actor: header.actor.clone(),
            principal: Some(RecordedPrincipal {
                subject: principal.subject.clone(),
                issuer: principal.issuer.clone(),
                role: principal.role.name().to_owned(),
            }),
            command_id: header.command_id,
            correlation_id: header.correlation_id,
            causation_id: header.causation_id,
            client_name: self.client_name.clone(),
            client_version: self.client_version.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// Who writes, through what, and by when the write must be done.
struct Caller {
    principal: Principal,
    deadline: Option<Instant>,
    context: RequestContext,
}

impl Caller {
    /// The authenticated caller of `request` (see [`auth::principal`]) and its deadline.
    fn of<T>(request: &Request<T>) -> Result<Self, ApiError> {
        Ok(Self {
            principal: auth::principal(request)?,
            deadline: request
                .metadata()
                .get("grpc-timeout")
                .and_then(|value| value.to_str().ok())
                .and_then(grpc_timeout)
                .map(|timeout| Instant::now() + timeout),
            context: RequestContext::of(request),
        })
    }

    /// DEADLINE_EXCEEDED once the client's deadline has passed: checked before reading and
    /// again under the stream's lock right before the insert. tonic also drops a handler
    /// whose deadline passes, which rolls its open transaction back. Either way nothing is
    /// appended for a call that ends past its deadline before COMMIT is sent; a deadline
    /// passing in the instant between COMMIT and the answer can leave the client without
    /// the answer to a write that happened, which a retry with the same command id then
    /// returns.
    fn check_deadline(&self) -> Result<(), ApiError> {
        check_deadline(self.deadline)
    }
}

/// DEADLINE_EXCEEDED once `deadline` has passed (see [`Caller::check_deadline`]).
fn check_deadline(deadline: Option<Instant>) -> Result<(), ApiError> {
    match deadline {
        Some(deadline) if Instant::now() >= deadline => Err(ApiError::DeadlinePassed),
        _ => Ok(()),
    }
}

/// The `grpc-timeout` header's duration: at most 8 digits and a unit (H, M, S, m, u, n),
/// as the gRPC HTTP/2 protocol defines it; `None` for anything else.
pub(crate) fn grpc_timeout(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl ClinicalRecords {
    /// Validates, decides and appends one episode command; the common path of every
    /// episode RPC.
    async fn write_episode<T>(
        &self,
        request: Request<T>,
        validate: impl FnOnce(
            T,
            chrono::DateTime<chrono::Utc>,
        )
            -> Result<(EpisodeId, ValidCommand<EpisodeCommand>), FieldViolations>,
    ) -> Result<v1::WriteResult, ApiError> {
        let caller = Caller::of(&request)?;
        let (episode, valid) = validate(request.into_inner(), self.app.clock.now())?;
        auth::require_writer(&caller.principal, &valid.header)?;
        caller.check_deadline()?;
        let stream = StreamKey::new(valid.header.clinic_id.0, episode.stream_id());
        let span = tracing::info_span!(
            "episode_command",
            clinic = %valid.header.clinic_id,
            episode = %episode,
            command = valid.command.name(),
            command_id = %valid.header.command_id,
        );
        self.decide_and_append(&caller, &stream, &valid)
            .instrument(span)
            .await
    }

    async fn decide_and_append(
        &self,
        caller: &Caller,
        stream: &StreamKey,
        valid: &ValidCommand<EpisodeCommand>,
    ) -> Result<v1::WriteResult, ApiError> {
        let fingerprint = fingerprint(stream, &valid.command)?;
        let patient = match &valid.command {
            EpisodeCommand::RecordEvaluation(evaluation) => {
                self.registered_patient(&valid.header, evaluation.patient_id.stream_id())
                    .await?
            }
            EpisodeCommand::RecordCorrection(correction)
                if correction
                    .corrections
                    .iter()
                    .any(|field| field.field.as_str() == "age_years") =>
            {
                self.episode_patient(&valid.header, stream).await?
            }
            _ => PatientFacts::default(),
        };
        let policy = self.app.policy;
        let command = valid.command.clone();
        self.record(
            caller,
            &valid.header,
            valid.occurred_at,
            stream,
            fingerprint,
            move |history| {
                let state = fold_episode(history)?;
                let resolved = resolve_correction(&state, &command)?;
                let command = resolved.as_ref().unwrap_or(&command);
                let event =
                    spineledger_domain::decide_for_patient(&state, command, &policy, patient)?;
                Ok((event.event_type(), event.to_payload()))
            },
        )
        .await
    }

    /// Decides under the stream's lock and appends: the common tail of every write. A
    /// retry of the same command (found under the lock, before deciding) gets the first
    /// response, a reused command id ALREADY_EXISTS; a refusal appends nothing.
    async fn record(
        &self,
        caller: &Caller,
        header: &ValidHeader,
        occurred_at: DateTime<Utc>,
        stream: &StreamKey,
        fingerprint: Fingerprint,
        mut decide: impl FnMut(&[RecordedEvent]) -> Result<(&'static str, serde_json::Value), ApiError>
        + Send
        + 'static,
    ) -> Result<v1::WriteResult, ApiError> {
        let expected = header
            .expected_version
            .map_or(ExpectedVersion::Any, ExpectedVersion::Exact);
        let metadata = caller.context.metadata(header, &caller.principal);
        let command_id = header.command_id;
        let request = [(command_id, fingerprint)];
        let deadline = caller.deadline;
        let decided_type: Arc<Mutex<Option<&'static str>>> = Arc::default();
        let decided = Arc::clone(&decided_type);
        let outcome = self
            .app
            .store
            .append_decided(stream, expected, &request, move |history| {
                let (event_type, payload) = decide(history)?;
                if let Ok(mut decided) = decided.lock() {
                    *decided = Some(event_type);
                }
                check_deadline(deadline)?;
                Ok::<_, ApiError>(vec![NewEvent {
                    event_id: command_id,
                    event_type: event_type.to_owned(),
                    schema_version: spineledger_domain::SCHEMA_VERSION,
                    payload,
                    metadata: metadata.clone(),
                    occurred_at: Some(occurred_at),
                    fingerprint,
                }])
            })
            .await??;
        if !outcome.replayed
            && let Some(event_type) = decided_type.lock().ok().and_then(|decided| *decided)
        {
            events_appended().add(1, &[KeyValue::new("event.type", event_type)]);
        }
        write_result(stream, &outcome)
    }

    /// What the patient's own stream says that episode rules compare with (the year of
    /// birth); FAILED_PRECONDITION when the patient is not registered at this clinic.
    async fn registered_patient(
        &self,
        header: &ValidHeader,
        patient_stream: String,
    ) -> Result<PatientFacts, ApiError> {
        let stream = StreamKey::new(header.clinic_id.0, patient_stream);
        let history = self.app.store.read_whole_stream(&stream).await?;
        if history.is_empty() {
            return Err(ApiError::PatientNotRegistered);
        }
        Ok(PatientFacts {
            birth_year: fold_patient(&history)?.birth_year,
        })
    }

    /// The facts of the patient of an existing episode (none before its first evaluation).
    /// Read before the append: an episode's patient never changes.
    async fn episode_patient(
        &self,
        header: &ValidHeader,
        stream: &StreamKey,
    ) -> Result<PatientFacts, ApiError> {
        let history = self.app.store.read_whole_stream(stream).await?;
        match fold_episode(&history)?.patient_id {
            Some(patient) => self.registered_patient(header, patient.stream_id()).await,
            None => Ok(PatientFacts::default()),
        }
    }

    async fn write_patient(
        &self,
        request: Request<v1::RegisterPatientRequest>,
    ) -> Result<v1::WriteResult, ApiError> {
        let caller = Caller::of(&request)?;
        let valid = convert::register_patient(request.into_inner(), self.app.clock.now())?;
        auth::require_writer(&caller.principal, &valid.header)?;
        caller.check_deadline()?;
        let command: RegisterPatient = valid.command.clone();
        let stream = StreamKey::new(valid.header.clinic_id.0, command.patient_id.stream_id());
        let fingerprint = fingerprint(&stream, &command)?;
        self.record(
            &caller,
            &valid.header,
            valid.occurred_at,
            &stream,
            fingerprint,
            move |history| {
                let event = spineledger_domain::decide_patient(&fold_patient(history)?, &command)?;
                Ok((event.event_type(), event.to_payload()))
            },
        )
        .await
    }
}

/// Folds a patient's stored events into its state.
fn fold_patient(history: &[RecordedEvent]) -> Result<PatientState, ApiError> {
    let events = history
        .iter()
        .map(|stored| {
            PatientEvent::from_payload(
                &stored.event_type,
                stored.schema_version,
                stored.payload.clone(),
            )
            .map_err(|_| undecodable(stored))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PatientState::fold(&events))
}

/// Folds an episode's stored events into its state.
fn fold_episode(history: &[RecordedEvent]) -> Result<Episode, ApiError> {
    let events = history
        .iter()
        .map(|stored| {
            EpisodeEvent::from_payload(
                &stored.event_type,
                stored.schema_version,
                stored.payload.clone(),
            )
            .map(|event| (stored.event_id, event))
            .map_err(|_| undecodable(stored))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Episode::fold(events.iter().map(|(id, event)| (*id, event))))
}

/// A correction names its fields as the request that recorded the corrected event did;
/// once the episode is read, the corrected event's type says what they are. The resolved
/// command (stored form), or None for every other command and for a correction whose
/// event is missing or is itself a correction (the domain refuses those with a reason).
fn resolve_correction(
    state: &Episode,
    command: &EpisodeCommand,
) -> Result<Option<EpisodeCommand>, ApiError> {
    let EpisodeCommand::RecordCorrection(requested) = command else {
        return Ok(None);
    };
    let Some(Some(corrected)) = state.events.get(&requested.corrected_event_id) else {
        return Ok(None);
    };
    let resolved = correction::resolve(corrected.event_type(), requested)?;
    Ok(Some(EpisodeCommand::RecordCorrection(resolved)))
}

/// A stored event that does not decode. The decoder's message is dropped: it may quote
/// stored (clinical) values.
fn undecodable(stored: &RecordedEvent) -> ApiError {
    ApiError::UndecodableEvent {
        event_id: stored.event_id,
        event_type: stored.event_type.clone(),
        schema_version: stored.schema_version,
    }
}

/// The idempotency fingerprint, version 1: SHA-256 of the `serde_json` serialisation of
/// (stream id, the command exactly as validated). A retry across a deploy must stay a
/// retry, so this must not change silently: tests pin the fingerprints of known
/// commands. A change to a command's serialised form (a renamed or added field) is a new
/// version, and retries must then be recognised by either version.
fn fingerprint<T: serde::Serialize>(
    stream: &StreamKey,
    command: &T,
) -> Result<Fingerprint, ApiError> {
    Ok(Fingerprint::of(&(&stream.stream_id, command))?)
}

/// Events appended (acknowledged, retries not counted), by event type.
fn events_appended() -> &'static Counter<u64> {
    static APPENDED: OnceLock<Counter<u64>> = OnceLock::new();
    APPENDED.get_or_init(|| {
        opentelemetry::global::meter("spineledger")
            .u64_counter("spineledger.events.appended")
            .with_unit("{event}")
            .with_description("Events appended and acknowledged, by event type")
            .build()
    })
}

fn write_result(
    stream: &StreamKey,
    outcome: &spineledger_store::AppendOutcome,
) -> Result<v1::WriteResult, ApiError> {
    let Some(event) = outcome.events.first() else {
        return Err(ApiError::EmptyAppend);
    };
    Ok(v1::WriteResult {
        event_id: event.event_id.to_string(),
        stream_id: stream.stream_id.clone(),
        stream_version: clamp(event.version),
        global_position: event.cursor.position,
        event_hash: event.hash.map(|hash| hash.to_hex()).unwrap_or_default(),
    })
}

fn clamp(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// The service impl: `register_patient` on the patient stream, every other RPC through
/// `write_episode` with its own edge conversion. (The impl is generated whole because
/// `async_trait` must see the methods after macro expansion.)
macro_rules! clinical_records_service {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl ClinicalRecordsService for ClinicalRecords {
            async fn register_patient(
                &self,
                request: Request<v1::RegisterPatientRequest>,
            ) -> Result<Response<v1::RegisterPatientResponse>, Status> {
                let result = self.write_patient(request).await?;
                Ok(Response::new(v1::RegisterPatientResponse { result: Some(result) }))
            }

            $(
                async fn $method(
                    &self,
                    request: Request<v1::$request>,
                ) -> Result<Response<v1::$response>, Status> {
                    let result = self.write_episode(request, convert::$method).await?;
                    Ok(Response::new(v1::$response { result: Some(result) }))
                }
            )*
        }
    };
}

clinical_records_service! {
    record_evaluation(RecordEvaluationRequest) -> RecordEvaluationResponse;
    start_treatment_plan(StartTreatmentPlanRequest) -> StartTreatmentPlanResponse;
    record_session(RecordSessionRequest) -> RecordSessionResponse;
    record_missed_session(RecordMissedSessionRequest) -> RecordMissedSessionResponse;
    record_outcome(RecordOutcomeRequest) -> RecordOutcomeResponse;
    give_home_care_instructions(GiveHomeCareInstructionsRequest) -> GiveHomeCareInstructionsResponse;
    report_home_care_adherence(ReportHomeCareAdherenceRequest) -> ReportHomeCareAdherenceResponse;
    record_reassessment(RecordReassessmentRequest) -> RecordReassessmentResponse;
    adjust_treatment_plan(AdjustTreatmentPlanRequest) -> AdjustTreatmentPlanResponse;
    discharge_episode(DischargeEpisodeRequest) -> DischargeEpisodeResponse;
    record_correction(RecordCorrectionRequest) -> RecordCorrectionResponse;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn request_headers_are_stored_without_control_characters() {
        let mut request = Request::new(());
        let metadata = request.metadata_mut();
        metadata.insert("x-client-name", MetadataValue::from_static("front\tdesk"));
        metadata.insert("x-client-version", MetadataValue::from_static("\t"));
        metadata.insert(
            "traceparent",
            MetadataValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            RequestContext::of(&request),
            RequestContext {
                client_name: Some("frontdesk".to_owned()),
                client_version: None,
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
            }
        );
    }

    #[test]
    fn a_request_without_trace_context_gets_a_trace_id_of_its_own() {
        let first = RequestContext::of(&Request::new(()))
            .trace_id
            .expect("trace id");
        let second = RequestContext::of(&Request::new(()))
            .trace_id
            .expect("trace id");
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }

    /// Version 1 of the fingerprint, pinned: if this fails, retries of commands sent
    /// before the change would be refused as reused command ids. Do not update the
    /// constants; add a fingerprint version instead.
    #[test]
    fn command_fingerprints_are_pinned() {
        let now = DateTime::from_timestamp(1_793_000_000, 0).expect("time");
        let header = || {
            Some(v1::CommandHeader {
                clinic_id: "7d8e4a52-3b1f-4c7a-9a43-1f2d5c6b7e80".into(),
                command_id: "0b6f1c9e-2d4a-4f8b-9c3e-5a7d1e2f3b4c".into(),
                expected_version: None,
                correlation_id: String::new(),
                causation_id: String::new(),
                actor: "provider-7".into(),
            })
        };
        let at = Some(prost_types::Timestamp {
            seconds: 1_792_990_000,
            nanos: 0,
        });
        let registration = convert::register_patient(
            v1::RegisterPatientRequest {
                header: header(),
                occurred_at: at,
                patient_id: "3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41".into(),
                birth_year: Some(1971),
                sex: v1::Sex::Female as i32,
            },
            now,
        )
        .expect("valid");
        let stream = StreamKey::new(
            registration.header.clinic_id.0,
            registration.command.patient_id.stream_id(),
        );
        let registered = fingerprint(&stream, &registration.command).expect("fingerprint");
        assert_eq!(hex(registered.as_bytes()), PINNED_REGISTRATION);

        let (episode, session) = convert::record_session(
            v1::RecordSessionRequest {
                header: header(),
                occurred_at: at,
                episode_id: "5f0c8a8e-1b2d-4c3e-9f4a-6b7c8d9e0f1a".into(),
                mode: v1::SessionMode::Intermittent as i32,
                peak_force: Some(v1::Force {
                    value: 300.0,
                    unit: v1::ForceUnit::Newton as i32,
                }),
                rest_force: Some(v1::Force {
                    value: 150.0,
                    unit: v1::ForceUnit::Newton as i32,
                }),
                hold_seconds: 60,
                relax_seconds: 30,
                cycles: 15,
                duration_minutes: 25,
                angle_degrees: 10,
                levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
                pain_before: 6,
                pain_after: 4,
                tolerance: v1::Tolerance::Good as i32,
                adverse_event: None,
                provider_id: "provider-7".into(),
            },
            now,
        )
        .expect("valid");
        let stream = StreamKey::new(session.header.clinic_id.0, episode.stream_id());
        let recorded = fingerprint(&stream, &session.command).expect("fingerprint");
        assert_eq!(hex(recorded.as_bytes()), PINNED_SESSION);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    const PINNED_REGISTRATION: &str =
        "4966776038809d0b84bfe3a8014bb1aac7560b6332cdec64309b2541defcd5ff";
    const PINNED_SESSION: &str = "fb15db996769e0e8720f19c2f9b72ee03f94879bbebb6ccf01dafc4b1bae4982";

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_defines_them() {
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "5", "123456789S", "5s", "-5S", "5 S", "é"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_header_that_is_not_visible_ascii_is_ignored() {
        let mut request = Request::new(());
        let metadata = request.metadata_mut();
        let opaque = MetadataValue::try_from(&b"caf\xc3\xa9"[..]).expect("obs-text is allowed");
        metadata.insert("x-client-name", opaque);
        metadata.insert("user-agent", MetadataValue::from_static("grpc-rust/0.14"));
        assert_eq!(
            RequestContext::of(&request).client_name.as_deref(),
            Some("grpc-rust/0.14")
        );
    }
}
