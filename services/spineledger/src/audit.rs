//! The auditor's API: a stream's history as the log holds it, and an episode's treatment
//! plan as it stood at a moment, replayed from the log with the projector's own fold.

use spineledger_api::convert::{
    AccessLogQuery, AsOf, CheckpointQuery, ClinicChangesQuery, ConsistencyQuery, InclusionQuery,
    LogRecord, PlanAsOfQuery, StreamEventsQuery, access_page_token,
};
use spineledger_api::error::{ApiError, LogPrecondition};
use spineledger_api::v1;
use spineledger_api::v1::audit_service_server::AuditService;
use spineledger_api::views;
use spineledger_api::views::timestamp;
use spineledger_auth::Principal;
use spineledger_domain::EpisodeId;
use spineledger_domain::PatientId;
use spineledger_projections::clinic_log::{self, SignedCheckpoint, in_clinic};
use spineledger_store::{Access, AccessRecord, AccessSort, Reader, RecordedEvent, StreamKey};
use spineledger_verifier::bundle::LeafKind;
use spineledger_verifier::checkpoint::{CheckpointSigner, VerifierKey};
use spineledger_verifier::merkle::{LogTree, ProofError};
use tonic::{Request, Response, Status};

use crate::{App, access, auth};

/// The `AuditService` implementation.
#[derive(Debug, Clone)]
pub struct Audit {
    app: App,
}

impl Audit {
    /// The audit service over `app`.
    pub fn new(app: App) -> Self {
        Self { app }
    }

    async fn history(
        &self,
        principal: &Principal,
        reader: &Reader,
        request: v1::ListStreamEventsRequest,
    ) -> Result<v1::ListStreamEventsResponse, ApiError> {
        let query = StreamEventsQuery::try_from(request)?;
        let (patient_id, episode_id) = subject_of(&query.stream_id);
        access::require_clinic(principal, "ListStreamEvents", query.clinic_id)?;
        let stream = StreamKey::new(query.clinic_id, query.stream_id);
        let page = usize::from(query.page_size);
        // One more than the page tells whether another page follows. No version lies
        // beyond what the store can count.
        let mut events = if query.after_version >= i64::MAX.unsigned_abs() {
            Vec::new()
        } else {
            self.app
                .store
                .read_stream(&stream, query.after_version + 1, page + 1)
                .await?
        };
        let next_after_version = if events.len() > page {
            events.truncate(page);
            events
                .last()
                .map_or(0, |event| i64::try_from(event.version).unwrap_or(i64::MAX))
        } else {
            0
        };
        let shown = Access {
            clinic_id: query.clinic_id,
            rpc: "ListStreamEvents".into(),
            patient_id,
            episode_id,
            shown_position: events.last().map(|event| event.cursor.position),
            outcome: "OK".into(),
        };
        access::record(&self.app, reader, &[shown]).await?;
        Ok(v1::ListStreamEventsResponse {
            events: events.iter().map(stored_event).collect(),
            next_after_version,
        })
    }

    async fn changes(
        &self,
        principal: &Principal,
        reader: &Reader,
        request: v1::ListClinicChangesRequest,
    ) -> Result<v1::ListClinicChangesResponse, ApiError> {
        let query = ClinicChangesQuery::try_from(request)?;
        access::require_clinic(principal, "ListClinicChanges", query.clinic_id)?;
        let page = usize::from(query.page_size);
        let mut events = self
            .app
            .store
            .read_clinic_changes(
                query.clinic_id,
                query.from,
                query.to,
                query.after_position,
                page + 1,
            )
            .await?;
        let next_after_global_position = if events.len() > page {
            events.truncate(page);
            events.last().map_or(0, |event| event.cursor.position)
        } else {
            0
        };
        // One access per stream shown, at the last position shown of it.
        let mut shown: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for event in &events {
            shown.insert(&event.stream_id, event.cursor.position);
        }
        let changed = |(patient_id, episode_id), shown_position| Access {
            clinic_id: query.clinic_id,
            rpc: "ListClinicChanges".into(),
            patient_id,
            episode_id,
            shown_position,
            outcome: "OK".into(),
        };
        let mut accesses: Vec<Access> = shown
            .into_iter()
            .map(|(stream_id, position)| changed(subject_of(stream_id), Some(position)))
            .collect();
        // A period that showed nothing is recorded too.
        if accesses.is_empty() {
            accesses.push(changed((None, None), None));
        }
        access::record(&self.app, reader, &accesses).await?;
        Ok(v1::ListClinicChangesResponse {
            events: events.iter().map(stored_event).collect(),
            next_after_global_position,
        })
    }

    async fn plan_as_of(
        &self,
        principal: &Principal,
        reader: &Reader,
        request: v1::GetTreatmentPlanAsOfRequest,
    ) -> Result<v1::GetTreatmentPlanAsOfResponse, ApiError> {
        let query = PlanAsOfQuery::try_from(request)?;
        access::require_clinic(principal, "GetTreatmentPlanAsOf", query.clinic_id)?;
        let stream = StreamKey::new(query.clinic_id, EpisodeId(query.episode_id).stream_id());
        let events = self.app.store.read_whole_stream(&stream).await?;
        // The state after a prefix of the stream, which once existed: versions and
        // positions rise together (both taken under the stream's lock), recording times
        // almost (a recording time is its transaction's start, which may precede an
        // earlier version's), so the prefix ends at the first event past the moment.
        let events: Vec<RecordedEvent> = events
            .into_iter()
            .take_while(|event| match query.as_of {
                AsOf::RecordedAt(at) => event.recorded_at <= at,
                AsOf::Position(position) => event.cursor.position <= position,
            })
            .collect();
        let view =
            spineledger_projections::treatment_plan_of(query.clinic_id, query.episode_id, &events)?;
        let shown = Access {
            clinic_id: query.clinic_id,
            rpc: "GetTreatmentPlanAsOf".into(),
            patient_id: view.as_ref().and_then(|view| view.patient_id),
            episode_id: Some(query.episode_id),
            shown_position: events.last().map(|event| event.cursor.position),
            outcome: if view.is_some() { "OK" } else { "NOT_FOUND" }.into(),
        };
        access::record(&self.app, reader, &[shown]).await?;
        let view = view.ok_or(ApiError::PlanNotFound)?;
        let last = events.last().ok_or(ApiError::PlanNotFound)?;
        // "Today", for due dates and flags, is the moment asked about.
        let today = match query.as_of {
            AsOf::RecordedAt(at) => at,
            AsOf::Position(_) => last.recorded_at,
        };
        Ok(v1::GetTreatmentPlanAsOfResponse {
            plan: Some(views::treatment_plan(&view, today)),
            events: i64::try_from(events.len()).unwrap_or(i64::MAX),
            last_global_position: last.cursor.position,
        })
    }
}

impl Audit {
    async fn access_log(
        &self,
        principal: &Principal,
        request: v1::ListAccessLogRequest,
    ) -> Result<v1::ListAccessLogResponse, ApiError> {
        let AccessLogQuery {
            access: query,
            page_size,
        } = AccessLogQuery::try_from(request)?;
        auth::require_clinic(principal, query.clinic_id, "clinic_id")?;
        let page = usize::from(page_size);
        let mut entries = self.app.store.list_access(&query).await?;
        let (next_after_position, next_page_token) = if entries.len() > page {
            entries.truncate(page);
            entries
                .last()
                .map_or((0, String::new()), |(entry, cursor)| {
                    (
                        if query.sort == AccessSort::Position {
                            entry.position
                        } else {
                            0
                        },
                        access_page_token(query.sort, query.descending, cursor),
                    )
                })
        } else {
            (0, String::new())
        };
        Ok(v1::ListAccessLogResponse {
            entries: entries
                .iter()
                .map(|(entry, _)| access_entry(entry))
                .collect(),
            next_after_position,
            next_page_token,
        })
    }
}

/// The clinic's signed log: checkpoints and proofs. Everything is read in the clinic's
/// scope (the app role's wall holds here as everywhere); proofs carry hashes only, so
/// they are not entries of the access log.
impl Audit {
    async fn checkpoint(
        &self,
        principal: &Principal,
        request: v1::GetCheckpointRequest,
    ) -> Result<v1::GetCheckpointResponse, ApiError> {
        let query = CheckpointQuery::try_from(request)?;
        auth::require_clinic(principal, query.clinic_id, "clinic_id")?;
        let key = self.verifier_key()?;
        let (checkpoint, log_size) =
            in_clinic(self.app.store.pool(), query.clinic_id, async |tx| {
                let checkpoint =
                    clinic_log::checkpoint_at_most(tx, query.clinic_id, query.tree_size, &key)
                        .await?;
                Ok((checkpoint, clinic_log::log_size(tx, query.clinic_id).await?))
            })
            .await?;
        Ok(self.checkpoint_response(checkpoint.as_ref(), log_size))
    }

    async fn sign(
        &self,
        principal: &Principal,
        request: v1::SignCheckpointRequest,
    ) -> Result<v1::GetCheckpointResponse, ApiError> {
        let query = CheckpointQuery::try_from(request)?;
        auth::require_clinic(principal, query.clinic_id, "clinic_id")?;
        let signer = self.signer()?;
        let (checkpoint, log_size) =
            in_clinic(self.app.store.pool(), query.clinic_id, async |tx| {
                let checkpoint = clinic_log::sign_checkpoint(tx, &signer, query.clinic_id).await?;
                Ok((checkpoint, clinic_log::log_size(tx, query.clinic_id).await?))
            })
            .await?;
        let checkpoint = checkpoint.ok_or(LogPrecondition::NoCheckpoint)?;
        Ok(self.checkpoint_response(Some(&checkpoint), log_size))
    }

    /// The server's signing key.
    fn signer(&self) -> Result<std::sync::Arc<CheckpointSigner>, LogPrecondition> {
        self.app
            .checkpoints
            .clone()
            .ok_or(LogPrecondition::NoCheckpointKey)
    }

    /// The key every stored checkpoint is checked against before it is shown or relied
    /// on (the signer's, or the notary's public key given to a server that does not sign).
    fn verifier_key(&self) -> Result<VerifierKey, LogPrecondition> {
        self.app
            .checkpoint_verifier
            .clone()
            .or_else(|| {
                self.app
                    .checkpoints
                    .as_ref()
                    .map(|signer| signer.verifier().clone())
            })
            .ok_or(LogPrecondition::NoCheckpointKey)
    }

    fn checkpoint_response(
        &self,
        checkpoint: Option<&SignedCheckpoint>,
        log_size: u64,
    ) -> v1::GetCheckpointResponse {
        v1::GetCheckpointResponse {
            checkpoint: checkpoint.map(log_checkpoint),
            verifier_key: self
                .verifier_key()
                .map(|key| key.to_string())
                .unwrap_or_default(),
            log_size: size_to_wire(log_size),
        }
    }

    async fn inclusion(
        &self,
        principal: &Principal,
        request: v1::GetInclusionProofRequest,
    ) -> Result<v1::GetInclusionProofResponse, ApiError> {
        let query = InclusionQuery::try_from(request)?;
        auth::require_clinic(principal, query.clinic_id, "clinic_id")?;
        let clinic_id = query.clinic_id;
        let (kind, position) = match query.record {
            LogRecord::Event(position) => (LeafKind::Event, position),
            LogRecord::Access(position) => (LeafKind::Access, position),
        };
        let key = &self.verifier_key()?;
        in_clinic(self.app.store.pool(), clinic_id, async |tx| {
            let Some((index, leaf)) = clinic_log::find_leaf(tx, clinic_id, kind, position).await?
            else {
                return Ok(Err(LogPrecondition::NotYetIndexed));
            };
            let size = match query.tree_size {
                Some(size) => size,
                None => match clinic_log::latest_checkpoint(tx, clinic_id, key).await? {
                    Some(latest) => latest.head.size,
                    None => return Ok(Err(LogPrecondition::NoCheckpoint)),
                },
            };
            let tree = clinic_log::load_tree(tx, clinic_id, Some(size)).await?;
            let proof = match tree.inclusion_proof(index, size) {
                Ok(proof) => proof,
                Err(error) => return Ok(Err(log_precondition(error, &tree))),
            };
            let head = tree.head();
            let checkpoint = clinic_log::checkpoint_at_most(tx, clinic_id, Some(size), key)
                .await?
                .filter(|checkpoint| checkpoint.head.size == size);
            Ok(Ok(v1::GetInclusionProofResponse {
                leaf_index: size_to_wire(index),
                leaf_hash: leaf.to_vec(),
                tree_size: size_to_wire(head.size),
                root_hash: head.root.to_vec(),
                audit_path: proof.iter().map(|hash| hash.to_vec()).collect(),
                checkpoint: checkpoint.as_ref().map(log_checkpoint),
            }))
        })
        .await?
        .map_err(ApiError::from)
    }

    async fn consistency(
        &self,
        principal: &Principal,
        request: v1::GetConsistencyProofRequest,
    ) -> Result<v1::GetConsistencyProofResponse, ApiError> {
        let query = ConsistencyQuery::try_from(request)?;
        auth::require_clinic(principal, query.clinic_id, "clinic_id")?;
        let clinic_id = query.clinic_id;
        let key = &self.verifier_key()?;
        in_clinic(self.app.store.pool(), clinic_id, async |tx| {
            let second = match query.second_size {
                Some(size) => size,
                None => match clinic_log::latest_checkpoint(tx, clinic_id, key).await? {
                    Some(latest) => latest.head.size,
                    None => return Ok(Err(LogPrecondition::NoCheckpoint)),
                },
            };
            let tree = clinic_log::load_tree(tx, clinic_id, Some(second)).await?;
            let proof = match tree.consistency_proof(query.first_size, second) {
                Ok(proof) => proof,
                Err(error) => return Ok(Err(log_precondition(error, &tree))),
            };
            let first = tree.head_at(query.first_size).map_err(|_| {
                spineledger_projections::ProjectionError::CorruptRow("a tree prefix".into())
            })?;
            Ok(Ok(v1::GetConsistencyProofResponse {
                first_size: size_to_wire(first.size),
                second_size: size_to_wire(second),
                first_root: first.root.to_vec(),
                second_root: tree.head().root.to_vec(),
                proof: proof.iter().map(|hash| hash.to_vec()).collect(),
            }))
        })
        .await?
        .map_err(ApiError::from)
    }
}

/// What a proof that could not be made tells the caller (the request was validated;
/// what remains is sizes beyond the log or the checkpoint, and records beyond the tree).
fn log_precondition(error: ProofError, tree: &LogTree) -> LogPrecondition {
    match error {
        ProofError::BeyondLog { asked, size } => LogPrecondition::LogTooSmall { size, asked },
        ProofError::IndexOutOfRange { index, size } => LogPrecondition::BeyondTree { index, size },
        ProofError::OldLarger { old, new } => LogPrecondition::BeyondTree {
            index: old.saturating_sub(1),
            size: new,
        },
        ProofError::EmptyTree | ProofError::Malformed | ProofError::Mismatch => {
            LogPrecondition::LogTooSmall {
                size: tree.size(),
                asked: 1,
            }
        }
    }
}

fn size_to_wire(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

fn log_checkpoint(checkpoint: &SignedCheckpoint) -> v1::LogCheckpoint {
    v1::LogCheckpoint {
        tree_size: size_to_wire(checkpoint.head.size),
        root_hash: checkpoint.head.root.to_vec(),
        note: checkpoint.note.clone(),
        signed_at: Some(timestamp(checkpoint.signed_at)),
    }
}

/// The patient or episode a stream is about.
fn subject_of(stream_id: &str) -> (Option<uuid::Uuid>, Option<uuid::Uuid>) {
    match (
        PatientId::from_stream_id(stream_id),
        EpisodeId::from_stream_id(stream_id),
    ) {
        (Some(PatientId(patient)), _) => (Some(patient), None),
        (None, Some(EpisodeId(episode))) => (None, Some(episode)),
        (None, None) => (None, None),
    }
}

fn access_entry(record: &AccessRecord) -> v1::AccessLogEntry {
    let id = |id: Option<uuid::Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    v1::AccessLogEntry {
        position: record.position,
        accessed_at: Some(timestamp(record.accessed_at)),
        principal_subject: record.reader.subject.clone(),
        principal_issuer: record.reader.issuer.clone(),
        principal_role: record.reader.role.clone(),
        actor: record.reader.actor.clone().unwrap_or_default(),
        purpose_of_use: record.reader.purpose.clone().unwrap_or_default(),
        break_glass: record.reader.break_glass,
        rpc: record.access.rpc.clone(),
        patient_id: id(record.access.patient_id),
        episode_id: id(record.access.episode_id),
        shown_position: record.access.shown_position.unwrap_or_default(),
        outcome: record.access.outcome.clone(),
    }
}

fn stored_event(event: &RecordedEvent) -> v1::StoredEvent {
    let hex = |hash: Option<spineledger_store::chain::EventHash>| {
        hash.map(|hash| hash.to_hex()).unwrap_or_default()
    };
    v1::StoredEvent {
        event_id: event.event_id.to_string(),
        stream_id: event.stream_id.clone(),
        version: i64::try_from(event.version).unwrap_or(i64::MAX),
        global_position: event.cursor.position,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        payload_json: event.payload.to_string(),
        metadata_json: event.stored_metadata.to_string(),
        occurred_at: event.occurred_at.map(timestamp),
        recorded_at: Some(timestamp(event.recorded_at)),
        previous_hash: hex(event.previous_hash),
        event_hash: hex(event.hash),
        correction_reason: if event.event_type == "RecordCorrected" {
            event
                .payload
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            String::new()
        },
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_stream_events(
        &self,
        request: Request<v1::ListStreamEventsRequest>,
    ) -> Result<Response<v1::ListStreamEventsResponse>, Status> {
        let principal = auth::principal(&request)?;
        let reader = access::reader(&request, &principal);
        Ok(Response::new(
            self.history(&principal, &reader, request.into_inner())
                .await?,
        ))
    }

    async fn list_clinic_changes(
        &self,
        request: Request<v1::ListClinicChangesRequest>,
    ) -> Result<Response<v1::ListClinicChangesResponse>, Status> {
        let principal = auth::principal(&request)?;
        let reader = access::reader(&request, &principal);
        Ok(Response::new(
            self.changes(&principal, &reader, request.into_inner())
                .await?,
        ))
    }

    async fn list_access_log(
        &self,
        request: Request<v1::ListAccessLogRequest>,
    ) -> Result<Response<v1::ListAccessLogResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.access_log(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.checkpoint(&principal, request.into_inner()).await?,
        ))
    }

    async fn sign_checkpoint(
        &self,
        request: Request<v1::SignCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.sign(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<v1::GetInclusionProofRequest>,
    ) -> Result<Response<v1::GetInclusionProofResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.inclusion(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<v1::GetConsistencyProofRequest>,
    ) -> Result<Response<v1::GetConsistencyProofResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.consistency(&principal, request.into_inner()).await?,
        ))
    }

    async fn get_treatment_plan_as_of(
        &self,
        request: Request<v1::GetTreatmentPlanAsOfRequest>,
    ) -> Result<Response<v1::GetTreatmentPlanAsOfResponse>, Status> {
        let principal = auth::principal(&request)?;
        let reader = access::reader(&request, &principal);
        Ok(Response::new(
            self.plan_as_of(&principal, &reader, request.into_inner())
                .await?,
        ))
    }
}
