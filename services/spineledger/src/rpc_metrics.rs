//! RED metrics and span status of every RPC, after the OpenTelemetry semantic conventions
//! for RPC: the histogram `rpc.server.call.duration` (seconds) with `rpc.system`
//! (`grpc`), `rpc.service` (`spineledger.v1.ClinicalRecordsService`), `rpc.method`
//! (`RecordSession`) and `rpc.grpc.status_code` (the gRPC code as an integer), so request
//! rate, error rate and latency all come from one instrument. The same code is recorded
//! on the RPC's span, whose status is ERROR only for server faults (UNKNOWN,
//! DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), not for a
//! client's mistakes, as the conventions say for servers.
//!
//! The layer sits outside the in-flight limit and the authentication, so shed and
//! refused calls are counted with their codes, and the time includes authenticating.
//! Health checks and reflection are neither measured nor traced: they are the
//! infrastructure's, not the clinics'. Only the API's own methods (the role table's) are
//! named; any other path is `_OTHER`, so a client cannot mint series or span names.
//! Every RPC of the API is unary, so a call ends with its response's head: the code is
//! the head's `grpc-status` (a refusal, "trailers-only"), or OK when the handler
//! answered (a failure to encode the answer afterwards would still count as OK). A call
//! whose future is dropped first (the client's deadline passed, and tonic answered for
//! it; or the client went away) counts as DEADLINE_EXCEEDED or CANCELLED.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tower::{BoxError, Layer, Service};

/// Paths that are neither measured nor traced.
const UNOBSERVED_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Whether calls to `path` are measured and traced.
#[must_use]
pub fn is_observed(path: &str) -> bool {
    !UNOBSERVED_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// The name of calls to a path that is not one of the API's methods.
pub const OTHER: &str = "_OTHER";

/// `/spineledger.v1.ClinicalRecordsService/RecordSession` as (service, method), for the
/// API's own methods (those of the role table); ([`OTHER`], [`OTHER`]) for any other path.
#[must_use]
pub fn service_and_method(path: &str) -> (&'static str, &'static str) {
    spineledger_auth::role::RPC_ACCESS
        .iter()
        .find(|(known, _)| *known == path)
        .and_then(|(known, _)| known.trim_start_matches('/').split_once('/'))
        .unwrap_or((OTHER, OTHER))
}

/// Whether a code is the server's fault (the span's status is then ERROR).
#[must_use]
pub const fn is_server_fault(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    )
}

/// Histogram buckets in seconds: 1 ms to 10 s (the SDK's defaults are sized for
/// milliseconds).
const BUCKETS: [f64; 15] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

fn duration_histogram() -> &'static Histogram<f64> {
    static DURATION: OnceLock<Histogram<f64>> = OnceLock::new();
    DURATION.get_or_init(|| {
        opentelemetry::global::meter("spineledger")
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of RPCs the server handled, by method and gRPC status")
            .with_boundaries(BUCKETS.to_vec())
            .build()
    })
}

/// One call in flight: recorded once, when it ends or when its future is dropped.
struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
    /// When the client's `grpc-timeout` runs out.
    deadline: Option<Instant>,
    span: tracing::Span,
    recorded: bool,
}

impl Call {
    /// Records the call: the histogram, and the code on the call's span.
    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        duration_histogram().record(
            self.started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", self.service),
                KeyValue::new("rpc.method", self.method),
                KeyValue::new("rpc.grpc.status_code", i64::from(code as i32)),
            ],
        );
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

impl Drop for Call {
    /// A call dropped before it ended: tonic answered DEADLINE_EXCEEDED for it, or the
    /// client reset the stream.
    fn drop(&mut self) {
        let code = if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            tonic::Code::DeadlineExceeded
        } else {
            tonic::Code::Cancelled
        };
        self.record(code);
    }
}

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveRpc;

impl<S> Layer<S> for ObserveRpc {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed { inner }
    }
}

/// See [`ObserveRpc`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
}

type Respond<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = Respond<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !is_observed(path) {
            let response = self.inner.call(request);
            return Box::pin(async move { response.await.map_err(Into::into) });
        }
        let (service, method) = service_and_method(path);
        // Before the inner call: authentication runs inside it.
        let started = Instant::now();
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::clinical::grpc_timeout)
            .map(|timeout| started + timeout);
        let response = self.inner.call(request);
        Box::pin(async move {
            // The RPC's span (from the server's trace function): tonic enters it while it
            // polls this future, not while it calls the service.
            let mut call = Call {
                service,
                method,
                started,
                deadline,
                span: tracing::Span::current(),
                recorded: false,
            };
            match response.await.map_err(Into::into) {
                Ok(response) => {
                    let code = response
                        .headers()
                        .get("grpc-status")
                        .map_or(tonic::Code::Ok, |value| {
                            tonic::Code::from_bytes(value.as_bytes())
                        });
                    call.record(code);
                    Ok(response)
                }
                Err(error) => {
                    // What tonic's error recovery will answer (shed: RESOURCE_EXHAUSTED).
                    let response = tonic::Status::try_from_error(error)
                        .map(|status| {
                            call.record(status.code());
                            status.into_http::<R>()
                        })
                        .inspect_err(|_| call.record(tonic::Code::Unknown))?;
                    Ok(response)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_service_and_method() {
        assert_eq!(
            service_and_method("/spineledger.v1.ClinicalRecordsService/RecordSession"),
            ("spineledger.v1.ClinicalRecordsService", "RecordSession")
        );
        // A path the API does not have is not a name a client can choose.
        assert_eq!(
            service_and_method("/spineledger.v1.ClinicalRecordsService/Nope"),
            (OTHER, OTHER)
        );
        assert_eq!(service_and_method("/x.Y/Z"), (OTHER, OTHER));
        assert!(!is_observed("/grpc.health.v1.Health/Check"));
        assert!(!is_observed(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_observed("/spineledger.v1.AuditService/ListAccessLog"));
    }

    #[test]
    fn only_server_faults_are_errors() {
        assert!(is_server_fault(tonic::Code::Internal));
        assert!(is_server_fault(tonic::Code::Unavailable));
        assert!(!is_server_fault(tonic::Code::InvalidArgument));
        assert!(!is_server_fault(tonic::Code::PermissionDenied));
        assert!(!is_server_fault(tonic::Code::Aborted));
        assert!(!is_server_fault(tonic::Code::ResourceExhausted));
    }
}
