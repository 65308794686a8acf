//! Authentication and authorisation at the edge.
//!
//! [`Authenticate`] is a tower layer in front of every service: it looks the RPC up in the
//! role table (`spineledger_auth::role::RPC_ACCESS`), verifies the bearer token of every
//! non-public call and checks its role, before the request is decoded. A refused call
//! gets UNAUTHENTICATED (no, or an invalid, token) or PERMISSION_DENIED (a valid token
//! whose role may not call the RPC) and never reaches a handler. An admitted call carries
//! its [`Principal`] in the request extensions.
//!
//! Handlers then check the clinic the request names against the token's clinics
//! ([`require_clinic`], [`require_writer`]) after validating the request and before
//! touching the store, so a request for another clinic reads and writes nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use spineledger_api::convert::ValidHeader;
use spineledger_api::error::ApiError;
use spineledger_auth::{Access, AuthError, Principal, Verifier, role};
use tonic::{Request, Status};
use tower::{Layer, Service};
use uuid::Uuid;

/// The layer that authenticates every call.
#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: Arc<Verifier>,
}

impl Authenticate {
    /// Authenticates with `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            verifier: Arc::clone(&self.verifier),
        }
    }
}

/// See [`Authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    verifier: Arc<Verifier>,
}

/// Who may call `path`, and as whom: `Ok(None)` for a public RPC, the principal for an
/// admitted call.
fn admit(
    verifier: &Verifier,
    path: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<Principal>, AuthError> {
    let access = role::access(path).ok_or_else(|| AuthError::Unlisted(path.to_owned()))?;
    if access == Access::Public {
        return Ok(None);
    }
    let principal = verifier.verify_authorization(authorization)?;
    if !access.admits(principal.role) {
        return Err(AuthError::RoleNotAllowed {
            role: principal.role,
            rpc: path.to_owned(),
        });
    }
    Ok(Some(principal))
}

type Respond<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Respond<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let admitted = admit(
            &self.verifier,
            request.uri().path(),
            request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes),
        );
        match admitted {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Box::pin(self.inner.call(request))
            }
            Err(error) => {
                tracing::info!(
                    rpc = %request.uri().path(),
                    reason = error.reason(),
                    "call refused"
                );
                let status = Status::from(ApiError::Auth(error));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The principal the layer admitted `request` as.
///
/// # Errors
/// UNAUTHENTICATED if there is none: a handler reached without the layer (a wiring
/// mistake) refuses rather than serves anonymously.
pub fn principal<T>(request: &Request<T>) -> Result<Principal, ApiError> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(ApiError::Auth(AuthError::MissingToken))
}

/// PERMISSION_DENIED unless the token grants `clinic` (named by the request's `field`).
///
/// # Errors
/// [`ApiError::ClinicNotGranted`].
pub fn require_clinic(
    principal: &Principal,
    clinic: Uuid,
    field: &'static str,
) -> Result<(), ApiError> {
    if principal.may_access(clinic) {
        Ok(())
    } else {
        Err(ApiError::ClinicNotGranted { field })
    }
}

/// The checks of a write beyond its role: the clinic is granted, and a caller that may not
/// act for others records as itself (the header's actor is its subject).
///
/// # Errors
/// [`ApiError::ClinicNotGranted`], [`ApiError::ActorNotPermitted`].
pub fn require_writer(principal: &Principal, header: &ValidHeader) -> Result<(), ApiError> {
    require_clinic(principal, header.clinic_id.0, "header.clinic_id")?;
    if !principal.role.may_act_for_others() && header.actor != principal.subject {
        return Err(ApiError::ActorNotPermitted {
            role: principal.role,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_rpcs_are_refused_before_the_token_is_looked_at() {
        let verifier = Verifier::new("spineledger");
        assert!(matches!(
            admit(
                &verifier,
                "/spineledger.v1.ClinicalRecordsService/DropAll",
                None
            ),
            Err(AuthError::Unlisted(_))
        ));
        assert_eq!(
            admit(&verifier, "/grpc.health.v1.Health/Check", None),
            Ok(None)
        );
        assert_eq!(
            admit(
                &verifier,
                "/spineledger.v1.TreatmentPlanService/GetTreatmentPlan",
                None
            ),
            Err(AuthError::MissingToken)
        );
    }
}
