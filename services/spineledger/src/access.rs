//! Recording reads of episode data in the access log: who (the principal, and the user
//! an integration reads for), why (the declared purpose of use, emergency access), what
//! (the patient and episode shown, the log position the answer reflects), and the
//! outcome. A read whose access cannot be recorded fails instead of showing anything.

use spineledger_api::error::ApiError;
use spineledger_auth::Principal;
use spineledger_store::{Access, Reader};
use tonic::Request;
use uuid::Uuid;

use crate::App;

/// The longest header value kept.
const MAX_HEADER_CHARS: usize = 200;

/// A client header as stored text: visible ASCII only (a value that is not is ignored),
/// control characters dropped, at most 200 characters; `None` when absent or empty.
/// Stored values can never fail the statement that stores them.
pub fn header_text<T>(request: &Request<T>, name: &str) -> Option<String> {
    request
        .metadata()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_HEADER_CHARS)
                .collect::<String>()
        })
        .filter(|value| !value.is_empty())
}

/// Purposes of use (HL7 v3 PurposeOfUse) that are emergency access.
const EMERGENCY_PURPOSES: &[&str] = &["ETREAT", "BTG"];

/// Who reads and why, from the principal and the request's headers: `x-actor` (the user
/// an integration reads for), `x-purpose-of-use` (an HL7 PurposeOfUse code such as TREAT,
/// HOPERAT or ETREAT) and `x-break-glass: true` (emergency access; ETREAT and BTG imply
/// it).
pub fn reader<T>(request: &Request<T>, principal: &Principal) -> Reader {
    let purpose =
        header_text(request, "x-purpose-of-use").map(|purpose| purpose.to_ascii_uppercase());
    let break_glass = header_text(request, "x-break-glass")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || purpose
            .as_deref()
            .is_some_and(|purpose| EMERGENCY_PURPOSES.contains(&purpose));
    Reader {
        subject: principal.subject.clone(),
        issuer: principal.issuer.clone(),
        role: principal.role.name().to_owned(),
        actor: header_text(request, "x-actor"),
        purpose,
        break_glass,
    }
}

/// Records `accesses` for `reader`.
///
/// # Errors
/// The store's: the read must then not be answered.
pub async fn record(app: &App, reader: &Reader, accesses: &[Access]) -> Result<(), ApiError> {
    app.store.record_access(reader, accesses).await?;
    Ok(())
}

/// The clinic check of a read of episode data by `rpc`. A principal not granted
/// `clinic_id` is refused (PERMISSION_DENIED), and the attempt goes to the
/// service's log (principal, role, RPC, clinic; a security event an operator's log
/// pipeline keeps), not to the clinic's access log: a caller must not be able to write
/// into the log of a clinic it has no rights to — with an actor and a patient of its
/// choosing, in a log that is signed and never shrinks. (Calls the role table refuses
/// never reach a handler; they are in the service's log too.)
///
/// # Errors
/// [`ApiError::ClinicNotGranted`] when refused.
pub fn require_clinic(principal: &Principal, rpc: &str, clinic_id: Uuid) -> Result<(), ApiError> {
    crate::auth::require_clinic(principal, clinic_id, "clinic_id").inspect_err(|_| {
        tracing::warn!(
            subject = %principal.subject,
            issuer = %principal.issuer,
            role = principal.role.name(),
            rpc,
            %clinic_id,
            "read refused: the token does not grant the clinic"
        );
    })
}
