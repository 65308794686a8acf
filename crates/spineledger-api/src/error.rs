//! Every error a client sees is decided here, following AIP-193: a canonical code, one
//! `ErrorInfo` with an UPPER_SNAKE reason in the `spineledger.dev` domain (each reason a
//! constant below, or the domain rule's own [`Rejection::reason`]), and `BadRequest`
//! field violations that name the offending field by its request path
//! (`header.command_id`, `odi.sections.answers[3]`).
//!
//! Handlers, conversions and the codec produce an [`ApiError`] (most often through `?`
//! and the `From` impls: field violations, domain rejections, store and projection
//! errors); the one `impl From<ApiError> for Status` picks the code, message, reason and
//! details, and logs what the service must know about (never request content or
//! personal data: ids, types, SQLSTATEs, rule names).

use std::collections::HashMap;
use std::fmt;

use spineledger_auth::{AuthError, Role};
use spineledger_domain::Rejection;
use spineledger_projections::ProjectionError;
use spineledger_store::StoreError;
use spineledger_store::deadpool_postgres::PoolError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use uuid::Uuid;

/// The `ErrorInfo` domain of every spineledger error.
pub const ERROR_DOMAIN: &str = "spineledger.dev";

/// `ErrorInfo` reason of invalid input (with field violations).
pub const REASON_INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
/// `ErrorInfo` reason of an optimistic concurrency conflict.
pub const REASON_VERSION_CONFLICT: &str = "VERSION_CONFLICT";
/// `ErrorInfo` reason of a command id reused with different content.
pub const REASON_COMMAND_ID_REUSED: &str = "COMMAND_ID_REUSED";
/// `ErrorInfo` reason of an evaluation for a patient the clinic has not registered.
pub const REASON_PATIENT_NOT_REGISTERED: &str = "PATIENT_NOT_REGISTERED";
/// `ErrorInfo` reason of a request naming a clinic its token does not grant.
pub const REASON_CLINIC_NOT_GRANTED: &str = "CLINIC_NOT_GRANTED";
/// `ErrorInfo` reason of a caller asserting an actor other than itself without the role
/// to do so.
pub const REASON_ACTOR_NOT_PERMITTED: &str = "ACTOR_NOT_PERMITTED";
/// `ErrorInfo` reason of a request whose gRPC deadline passed before it was written.
pub const REASON_DEADLINE_PASSED: &str = "DEADLINE_PASSED";

/// What a client is told when the fault is the service's own (the detail is logged).
const INTERNAL_MESSAGE: &str = "internal error";
/// UNAVAILABLE on the write side: the event store cannot be reached or has no connection.
const STORE_UNAVAILABLE_MESSAGE: &str = "the record store is temporarily unavailable; retry";
/// UNAVAILABLE on the read side.
const READ_MODELS_UNAVAILABLE_MESSAGE: &str = "the read models are temporarily unavailable; retry";

/// Everything a spineledger RPC can fail with, in the service's terms. Turned into a
/// `tonic::Status` by the one `From` impl below.
#[derive(Debug)]
pub enum ApiError {
    /// The request has invalid fields (edge validation, a correction's resolution, a
    /// message that does not decode): INVALID_ARGUMENT with every violation.
    InvalidArgument(FieldViolations),
    /// A domain rule refused the command: FAILED_PRECONDITION with the rule's reason
    /// (INVALID_ARGUMENT for a command whose shape the edge should have refused).
    Rejected(Rejection),
    /// An evaluation names a patient that is not registered at the clinic.
    PatientNotRegistered,
    /// `min_position` is not the position of an event of the requested clinics.
    UnknownMinPosition,
    /// `as_of_positions` lacks a position for a clinic the statistics cover.
    AsOfPositionsIncomplete,
    /// Another as-of replay held the server's replay slot for too long.
    ReplayBusy,
    /// No treatment plan for the requested episode at the clinic.
    PlanNotFound,
    /// A stored event of the stream does not decode (DATA_LOSS).
    UndecodableEvent {
        /// The stored event's id.
        event_id: Uuid,
        /// Its stored type.
        event_type: String,
        /// Its stored schema version.
        schema_version: i32,
    },
    /// The store acknowledged an append without events (a bug).
    EmptyAppend,
    /// The caller is not authenticated (UNAUTHENTICATED) or its token does not permit the
    /// call (PERMISSION_DENIED); the error says which and why.
    Auth(AuthError),
    /// The request names a clinic (in `field`) that the token does not grant.
    ClinicNotGranted {
        /// The request field naming the clinic.
        field: &'static str,
    },
    /// The request's actor is not the caller, and the caller's role may not record on
    /// behalf of others.
    ActorNotPermitted {
        /// The caller's role.
        role: Role,
    },
    /// The client's deadline passed before the command could be written; nothing was.
    DeadlinePassed,
    /// What the clinic's signed log cannot answer yet (FAILED_PRECONDITION with the
    /// reason).
    Log(LogPrecondition),
    /// An error of the event store on the write path (conflicts included).
    Store(StoreError),
    /// An error of the read side (catch-up, queries, their connections).
    Projection(ProjectionError),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArgument(violations) => violations.fmt(f),
            Self::Rejected(rejection) => rejection.fmt(f),
            Self::PatientNotRegistered => f.write_str("the patient is not registered"),
            Self::UnknownMinPosition => f.write_str("min_position is not a requested event"),
            Self::AsOfPositionsIncomplete => {
                f.write_str("as_of_positions lacks a clinic the statistics cover")
            }
            Self::ReplayBusy => f.write_str("another as-of replay is running"),
            Self::PlanNotFound => f.write_str("no treatment plan"),
            Self::UndecodableEvent { event_id, .. } => {
                write!(f, "stored event {event_id} cannot be decoded")
            }
            Self::EmptyAppend => f.write_str("the store acknowledged an empty append"),
            Self::Auth(error) => error.fmt(f),
            Self::ClinicNotGranted { field } => {
                write!(f, "the token does not grant the clinic named in {field}")
            }
            Self::ActorNotPermitted { role } => write!(
                f,
                "a {role} token records as itself: header.actor must be the token's subject"
            ),
            Self::DeadlinePassed => {
                f.write_str("the request's deadline passed before it was written")
            }
            Self::Log(precondition) => precondition.fmt(f),
            Self::Store(error) => error.fmt(f),
            Self::Projection(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<FieldViolations> for ApiError {
    fn from(violations: FieldViolations) -> Self {
        Self::InvalidArgument(violations)
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Why the clinic's signed log cannot answer a request yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPrecondition {
    /// The server holds no checkpoint key.
    NoCheckpointKey,
    /// No checkpoint has been signed for the clinic yet (or none of the size asked).
    NoCheckpoint,
    /// The record does not exist, or the integrator has not indexed it yet (moments after
    /// it was written).
    NotYetIndexed,
    /// The record (or the older tree) lies beyond the tree asked about: ask for a larger
    /// tree size (a later checkpoint).
    BeyondTree {
        /// The record's leaf index (or the older tree's last).
        index: u64,
        /// The tree size asked about.
        size: u64,
    },
    /// A tree size larger than the clinic's log.
    LogTooSmall {
        /// Leaves in the log.
        size: u64,
        /// The size asked for.
        asked: u64,
    },
}

impl fmt::Display for LogPrecondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoCheckpointKey => f.write_str(
                "this server holds no checkpoint signing key (see --checkpoint-key-file)",
            ),
            Self::NoCheckpoint => {
                f.write_str("no checkpoint of the clinic's log is signed yet at or below that size")
            }
            Self::NotYetIndexed => f.write_str(
                "no such record in the clinic's log (it may not be indexed yet: retry shortly)",
            ),
            Self::BeyondTree { index, size } => write!(
                f,
                "leaf {index} is not in the tree of {size} leaves: ask about a larger tree"
            ),
            Self::LogTooSmall { size, asked } => {
                write!(
                    f,
                    "the clinic's log has {size} leaves, a tree of {asked} was asked"
                )
            }
        }
    }
}

impl LogPrecondition {
    /// The `ErrorInfo` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoCheckpointKey => "NO_CHECKPOINT_KEY",
            Self::NoCheckpoint => "NO_CHECKPOINT",
            Self::NotYetIndexed => "NOT_YET_INDEXED",
            Self::BeyondTree { .. } => "BEYOND_TREE",
            Self::LogTooSmall { .. } => "LOG_TOO_SMALL",
        }
    }
}

impl From<LogPrecondition> for ApiError {
    fn from(precondition: LogPrecondition) -> Self {
        Self::Log(precondition)
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        Self::Projection(error)
    }
}

/// A read-side connection that could not be had.
impl From<PoolError> for ApiError {
    fn from(error: PoolError) -> Self {
        Self::Projection(ProjectionError::Pool(error))
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument(violations) => invalid_argument(violations),
            ApiError::Rejected(rejection) => rejected(&rejection),
            ApiError::PatientNotRegistered => with_reason(
                Code::FailedPrecondition,
                "the patient is not registered at this clinic: register the patient first",
                REASON_PATIENT_NOT_REGISTERED,
                HashMap::new(),
            ),
            ApiError::UnknownMinPosition => {
                let mut violations = FieldViolations::new();
                violations.add(
                    "min_position",
                    "is not the position of an event of the requested clinics",
                );
                invalid_argument(violations)
            }
            ApiError::AsOfPositionsIncomplete => {
                let mut violations = FieldViolations::new();
                violations.add(
                    "as_of_positions",
                    "needs a position for every clinic named in clinic_ids",
                );
                invalid_argument(violations)
            }
            ApiError::ReplayBusy => Status::unavailable(
                "another as-of statistics replay is running on this server; retry shortly",
            ),
            ApiError::PlanNotFound => {
                Status::not_found("no treatment plan for this episode at this clinic")
            }
            ApiError::UndecodableEvent {
                event_id,
                event_type,
                schema_version,
            } => {
                // Only the id and type: the decoder's message may quote stored values.
                tracing::error!(
                    %event_id,
                    %event_type,
                    schema_version,
                    "stored event cannot be decoded"
                );
                Status::data_loss("a stored event of this stream cannot be decoded")
            }
            ApiError::EmptyAppend => {
                tracing::error!("the store acknowledged an empty append");
                Status::internal("the store acknowledged an empty append")
            }
            ApiError::Store(error) => store_status(error),
            ApiError::Projection(error) => projection_status(error),
            ApiError::Auth(error) => {
                let code = if error.is_unauthenticated() {
                    Code::Unauthenticated
                } else {
                    Code::PermissionDenied
                };
                with_reason(code, error.to_string(), error.reason(), HashMap::new())
            }
            error @ ApiError::ClinicNotGranted { field } => with_reason(
                Code::PermissionDenied,
                error.to_string(),
                REASON_CLINIC_NOT_GRANTED,
                HashMap::from([("field".to_owned(), field.to_owned())]),
            ),
            ApiError::Log(precondition) => with_reason(
                Code::FailedPrecondition,
                precondition.to_string(),
                precondition.reason(),
                HashMap::new(),
            ),
            error @ ApiError::ActorNotPermitted { .. } => with_reason(
                Code::PermissionDenied,
                error.to_string(),
                REASON_ACTOR_NOT_PERMITTED,
                HashMap::new(),
            ),
            ApiError::DeadlinePassed => with_reason(
                Code::DeadlineExceeded,
                "the deadline passed before the command was written; nothing was recorded",
                REASON_DEADLINE_PASSED,
                HashMap::new(),
            ),
        }
    }
}

/// Store failures: conflicts are the caller's business, the rest is ours (logged without
/// request content).
fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::VersionConflict { expected, actual } => {
            // Version 0 is "no stream".
            let expected = match expected {
                spineledger_store::ExpectedVersion::Exact(version) => version,
                spineledger_store::ExpectedVersion::NoStream
                | spineledger_store::ExpectedVersion::Any => 0,
            };
            let stream_version = |version: u64| (version > 0).then_some(version);
            version_conflict(stream_version(expected), stream_version(actual))
        }
        StoreError::IdempotencyConflict { event_id } => command_id_reused(event_id),
        StoreError::Pool(error) => {
            tracing::warn!(%error, "no database connection available");
            Status::unavailable(STORE_UNAVAILABLE_MESSAGE)
        }
        StoreError::Unreachable { url, .. } => {
            tracing::warn!(database = %url, "database unreachable");
            Status::unavailable(STORE_UNAVAILABLE_MESSAGE)
        }
        other => {
            // Only the SQLSTATE: a database error's detail can quote row contents.
            let sqlstate = match &other {
                StoreError::Database(error) => error.code().map(|code| code.code().to_owned()),
                _ => None,
            };
            tracing::error!(error = %other, ?sqlstate, "store failure");
            Status::internal(INTERNAL_MESSAGE)
        }
    }
}

/// Read-side failures: a projection behind the requested position is UNAVAILABLE (retry
/// shortly), a query too broad FAILED_PRECONDITION, a missing connection UNAVAILABLE; the
/// rest is ours.
fn projection_status(error: ProjectionError) -> Status {
    match error {
        ProjectionError::NotCaughtUp { .. } => Status::unavailable(
            "the read model has not caught up with min_position yet; retry shortly",
        ),
        ProjectionError::UnknownPosition { position } => {
            let mut violations = FieldViolations::new();
            violations.add("as_of", format!("no event has global position {position}"));
            invalid_argument(violations)
        }
        ProjectionError::PositionNotFinal { position } => Status::unavailable(format!(
            "the log up to position {position} is not final yet (a transaction that could \
             still write before it is running); retry shortly"
        )),
        ProjectionError::Pool(error) | ProjectionError::Store(StoreError::Pool(error)) => {
            tracing::warn!(%error, "no database connection available");
            Status::unavailable(READ_MODELS_UNAVAILABLE_MESSAGE)
        }
        ProjectionError::Store(StoreError::Unreachable { url, .. }) => {
            tracing::warn!(database = %url, "database unreachable");
            Status::unavailable(READ_MODELS_UNAVAILABLE_MESSAGE)
        }
        other => {
            tracing::error!(error = %other, sqlstate = ?other.sqlstate(), "read model query failed");
            Status::internal(INTERNAL_MESSAGE)
        }
    }
}

/// INVALID_ARGUMENT with a `BadRequest` listing every field violation and an `ErrorInfo`.
fn invalid_argument(violations: FieldViolations) -> Status {
    let message = violations.to_string();
    let field_violations: Vec<FieldViolation> = violations
        .violations
        .into_iter()
        .map(|(field, description)| FieldViolation::new(field, description))
        .collect();
    let mut details = ErrorDetails::with_bad_request(field_violations);
    details.set_error_info(REASON_INVALID_ARGUMENT, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// A status with an `ErrorInfo` of `reason` and `metadata`.
fn with_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// A domain rejection: FAILED_PRECONDITION with the rule's reason, or INVALID_ARGUMENT for
/// a command whose shape the edge should have refused. The rule is logged, not the
/// command.
fn rejected(rejection: &Rejection) -> Status {
    tracing::info!(reason = rejection.reason(), "command rejected");
    let code = if rejection.is_invalid_command() {
        Code::InvalidArgument
    } else {
        Code::FailedPrecondition
    };
    let metadata: HashMap<String, String> = rejection
        .metadata()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    with_reason(code, rejection.to_string(), rejection.reason(), metadata)
}

/// ABORTED: the stream is not at the expected version. `expected` None means "must not
/// exist"; `actual` None means "does not exist".
fn version_conflict(expected: Option<u64>, actual: Option<u64>) -> Status {
    let show = |version: Option<u64>| version.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let metadata = HashMap::from([
        ("expected_version".to_owned(), show(expected)),
        ("actual_version".to_owned(), show(actual)),
    ]);
    with_reason(
        Code::Aborted,
        format!(
            "version conflict: expected {}, actual {}",
            show(expected),
            show(actual)
        ),
        REASON_VERSION_CONFLICT,
        metadata,
    )
}

/// ALREADY_EXISTS: the command id was used before for a different command.
fn command_id_reused(command_id: Uuid) -> Status {
    let metadata = HashMap::from([("command_id".to_owned(), command_id.to_string())]);
    with_reason(
        Code::AlreadyExists,
        format!("command id {command_id} was already used for a different command"),
        REASON_COMMAND_ID_REUSED,
        metadata,
    )
}

/// Every problem found in a request, each with the path of its field. Conversions collect
/// all of them before answering, so a client fixes its request in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
    /// Violations beyond [`MAX_REPORTED_VIOLATIONS`], counted but not kept: a hostile
    /// request must not make the error itself huge.
    omitted: usize,
}

/// At most this many field violations are reported in one error.
pub const MAX_REPORTED_VIOLATIONS: usize = 100;

impl FieldViolations {
    /// No violations yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong because of `description`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.violations.len() >= MAX_REPORTED_VIOLATIONS {
            self.omitted += 1;
            return;
        }
        self.violations.push((field.into(), description.into()));
    }

    /// Whether nothing is wrong.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty() && self.omitted == 0
    }

    /// The number of violations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.violations.len() + self.omitted
    }

    /// The violations as `(field path, description)`, in the order found.
    #[must_use]
    pub fn violations(&self) -> &[(String, String)] {
        &self.violations
    }

    /// Whether some violation names exactly `field`.
    #[must_use]
    pub fn contains_field(&self, field: &str) -> bool {
        self.violations.iter().any(|(path, _)| path == field)
    }
}

impl fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} invalid field(s)",
            self.violations.len() + self.omitted
        )?;
        for (index, (field, description)) in self.violations.iter().enumerate() {
            let separator = if index == 0 { ": " } else { "; " };
            write!(f, "{separator}{field}: {description}")?;
        }
        if self.omitted > 0 {
            write!(f, "; and {} more not listed", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldViolations {}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_status(error: impl Into<ApiError>) -> Status {
        Status::from(error.into())
    }

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let mut violations = FieldViolations::new();
        violations.add("pain_back", "out of scale");
        violations.add("header.command_id", "not a UUID");
        let status = to_status(violations);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().unwrap();
        let fields: Vec<&str> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["pain_back", "header.command_id"]);
        assert_eq!(
            details.error_info().unwrap().reason,
            REASON_INVALID_ARGUMENT
        );
    }

    #[test]
    fn a_flood_of_violations_is_reported_with_a_bounded_list() {
        let mut violations = FieldViolations::new();
        for index in 0..10_000 {
            violations.add(format!("corrections[{index}]"), "is required");
        }
        assert_eq!(violations.len(), 10_000);
        assert_eq!(violations.violations().len(), MAX_REPORTED_VIOLATIONS);
        assert!(violations.to_string().ends_with("and 9900 more not listed"));
        let status = to_status(violations);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations.len(),
            MAX_REPORTED_VIOLATIONS
        );
    }

    #[test]
    fn version_conflict_reports_both_versions() {
        let status = to_status(StoreError::VersionConflict {
            expected: spineledger_store::ExpectedVersion::Exact(3),
            actual: 5,
        });
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.message(), "version conflict: expected 3, actual 5");
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, REASON_VERSION_CONFLICT);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["actual_version"], "5");
        assert_eq!(info.metadata["expected_version"], "3");
    }

    #[test]
    fn version_zero_is_no_stream() {
        let status = to_status(StoreError::VersionConflict {
            expected: spineledger_store::ExpectedVersion::NoStream,
            actual: 0,
        });
        assert_eq!(
            status.message(),
            "version conflict: expected none, actual none"
        );
    }

    #[test]
    fn rejection_maps_to_failed_precondition_with_its_reason() {
        let status = to_status(Rejection::PlanNotActive);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "PLAN_NOT_ACTIVE");
    }

    #[test]
    fn reused_command_id_is_already_exists() {
        let status = to_status(StoreError::IdempotencyConflict {
            event_id: Uuid::from_u128(1),
        });
        assert_eq!(status.code(), Code::AlreadyExists);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            REASON_COMMAND_ID_REUSED
        );
    }

    #[test]
    fn rules_of_the_edge_have_named_reasons() {
        let status = to_status(ApiError::PatientNotRegistered);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            REASON_PATIENT_NOT_REGISTERED
        );
    }

    #[test]
    fn read_side_failures_keep_their_codes() {
        let status = to_status(ProjectionError::NotCaughtUp { position: 7 });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(to_status(ApiError::ReplayBusy).code(), Code::Unavailable);
        assert_eq!(
            to_status(ProjectionError::PositionNotFinal { position: 7 }).code(),
            Code::Unavailable
        );
        let unknown = to_status(ProjectionError::UnknownPosition { position: 7 });
        assert_eq!(unknown.code(), Code::InvalidArgument);
        let details = unknown.get_error_details();
        let violations = details.bad_request().expect("field violations");
        assert_eq!(violations.field_violations[0].field, "as_of");
        let status = to_status(ApiError::UnknownMinPosition);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "min_position"
        );
        assert_eq!(to_status(ApiError::PlanNotFound).code(), Code::NotFound);
        let status = to_status(ProjectionError::CorruptRow("x".to_owned()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
    }

    #[test]
    fn an_undecodable_stored_event_is_data_loss() {
        let status = to_status(ApiError::UndecodableEvent {
            event_id: Uuid::from_u128(2),
            event_type: "SessionRecorded".to_owned(),
            schema_version: 1,
        });
        assert_eq!(status.code(), Code::DataLoss);
    }
}
