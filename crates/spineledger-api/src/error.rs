//! gRPC errors in one place, following AIP-193: a canonical code, one `ErrorInfo` with an
//! UPPER_SNAKE reason in the `spineledger.dev` domain, and `BadRequest` field violations
//! that name the offending field by its request path (`header.command_id`,
//! `odi.sections.answers[3]`).

use std::collections::HashMap;
use std::fmt;

use spineledger_domain::Rejection;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo` domain of every spineledger error.
pub const ERROR_DOMAIN: &str = "spineledger.dev";

/// `ErrorInfo` reason of invalid input (with field violations).
pub const REASON_INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
/// `ErrorInfo` reason of an optimistic concurrency conflict.
pub const REASON_VERSION_CONFLICT: &str = "VERSION_CONFLICT";
/// `ErrorInfo` reason of a command id reused with different content.
pub const REASON_COMMAND_ID_REUSED: &str = "COMMAND_ID_REUSED";

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

    /// Adds every violation of `other` after these (within the same bound).
    pub fn append(&mut self, other: FieldViolations) {
        for (field, description) in other.violations {
            self.add(field, description);
        }
        self.omitted += other.omitted;
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

impl From<FieldViolations> for Status {
    fn from(violations: FieldViolations) -> Self {
        invalid_argument(violations)
    }
}

/// INVALID_ARGUMENT with a `BadRequest` listing every field violation and an `ErrorInfo`.
#[must_use]
pub fn invalid_argument(violations: FieldViolations) -> Status {
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

/// FAILED_PRECONDITION with an `ErrorInfo` whose reason names the broken rule.
#[must_use]
pub fn failed_precondition(
    reason: &str,
    message: impl Into<String>,
    metadata: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.into(), value.into()))
        .collect();
    Status::with_error_details(
        Code::FailedPrecondition,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// The status for a domain rejection: FAILED_PRECONDITION with the rule's reason, or
/// INVALID_ARGUMENT for a command whose shape the edge should have refused.
#[must_use]
pub fn from_rejection(rejection: &Rejection) -> Status {
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
    Status::with_error_details(
        code,
        rejection.to_string(),
        ErrorDetails::with_error_info(rejection.reason(), ERROR_DOMAIN, metadata),
    )
}

/// ABORTED: the stream is not at the expected version. `expected` None means "must not
/// exist"; `actual` None means "does not exist".
#[must_use]
pub fn aborted_version_conflict(expected: Option<u64>, actual: Option<u64>) -> Status {
    let show = |version: Option<u64>| version.map_or_else(|| "none".to_owned(), |v| v.to_string());
    let metadata = HashMap::from([
        ("expected_version".to_owned(), show(expected)),
        ("actual_version".to_owned(), show(actual)),
    ]);
    Status::with_error_details(
        Code::Aborted,
        format!(
            "version conflict: expected {}, actual {}",
            show(expected),
            show(actual)
        ),
        ErrorDetails::with_error_info(REASON_VERSION_CONFLICT, ERROR_DOMAIN, metadata),
    )
}

/// ALREADY_EXISTS: the command id was used before for a different command.
#[must_use]
pub fn already_exists_command_reused(command_id: uuid::Uuid) -> Status {
    let metadata = HashMap::from([("command_id".to_owned(), command_id.to_string())]);
    Status::with_error_details(
        Code::AlreadyExists,
        format!("command id {command_id} was already used for a different command"),
        ErrorDetails::with_error_info(REASON_COMMAND_ID_REUSED, ERROR_DOMAIN, metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let mut violations = FieldViolations::new();
        violations.add("pain_back", "out of scale");
        violations.add("header.command_id", "not a UUID");
        let status = invalid_argument(violations);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad_request = details.bad_request().unwrap();
        let fields: Vec<&str> = bad_request
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["pain_back", "header.command_id"]);
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
        let status = invalid_argument(violations);
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations.len(),
            MAX_REPORTED_VIOLATIONS
        );
    }

    #[test]
    fn version_conflict_reports_the_actual_version() {
        let status = aborted_version_conflict(Some(3), Some(5));
        assert_eq!(status.code(), Code::Aborted);
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, REASON_VERSION_CONFLICT);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["actual_version"], "5");
        assert_eq!(info.metadata["expected_version"], "3");
    }

    #[test]
    fn rejection_maps_to_failed_precondition_with_its_reason() {
        let status = from_rejection(&Rejection::PlanNotActive);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "PLAN_NOT_ACTIVE");
    }

    #[test]
    fn reused_command_id_is_already_exists() {
        let status = already_exists_command_reused(uuid::Uuid::from_u128(1));
        assert_eq!(status.code(), Code::AlreadyExists);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            REASON_COMMAND_ID_REUSED
        );
    }
}
