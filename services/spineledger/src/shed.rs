//! The in-flight limit, applied to every RPC except health checks: under a flood the
//! service sheds work with RESOURCE_EXHAUSTED, but an orchestrator asking whether the
//! server is alive still gets its answer (a shed health check would get a busy server
//! restarted, making the flood worse).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShed;
use tower::{BoxError, Layer, Service, ServiceExt};

/// The path prefix of `grpc.health.v1` calls, which the limit lets through.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Sheds requests past `max_in_flight` over all connections, health checks excepted.
#[derive(Debug, Clone)]
pub struct ShedOutsideHealth {
    limit: GlobalConcurrencyLimitLayer,
}

impl ShedOutsideHealth {
    /// At most `max_in_flight` requests (at least 1) at once; one more is refused.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            limit: GlobalConcurrencyLimitLayer::new(max_in_flight.max(1)),
        }
    }
}

impl<S: Clone> Layer<S> for ShedOutsideHealth {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            limited: LoadShed::new(self.limit.layer(inner.clone())),
            plain: inner,
        }
    }
}

/// See [`ShedOutsideHealth`].
#[derive(Debug, Clone)]
pub struct Shed<S> {
    plain: S,
    limited: LoadShed<tower::limit::ConcurrencyLimit<S>>,
}

type Respond<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Respond<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.plain.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            let response = self.plain.call(request);
            return Box::pin(async move { response.await.map_err(Into::into) });
        }
        // A fresh clone takes its own permit when made ready, or, when none is free, is
        // shed at once: a permit is never held by a clone that was not called.
        let limited = self.limited.clone();
        Box::pin(async move { limited.oneshot(request).await })
    }
}
