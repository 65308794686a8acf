//! The service as a function of a bound listener, its settings and a shutdown future
//! ([`serve`]): the binary's `serve` runs it until SIGINT/SIGTERM, and the end-to-end
//! tests run the same function in-process on `127.0.0.1:0`. [`run`] is the gRPC server
//! alone.
//!
//! It serves grpc.health.v1 (NOT_SERVING until the store answers, SERVING then, NOT_SERVING
//! again once shutdown begins), server reflection v1 and v1alpha (grpcurl, GUI clients),
//! and the spineledger.v1 services. Every RPC gets a tracing span carrying the W3C trace
//! context of the caller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::App;
use crate::audit::Audit;
use crate::clinical::ClinicalRecords;
use crate::reads::ReadModels;
use crate::telemetry::HeaderExtractor;
use spineledger_api::v1::audit_service_server::AuditServiceServer;
use spineledger_api::v1::clinical_records_service_server::ClinicalRecordsServiceServer;
use spineledger_api::v1::outcome_statistics_service_server::OutcomeStatisticsServiceServer;
use spineledger_api::v1::treatment_plan_service_server::TreatmentPlanServiceServer;
use spineledger_auth::Verifier;
use spineledger_projections::{Projector, ProjectorConfig};
use spineledger_verifier::checkpoint::CheckpointSigner;

/// What runs beside the gRPC server.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The projectors to run in this process; `None` when workers run elsewhere (or, in
    /// tests, are started separately).
    pub projector: Option<ProjectorConfig>,
    /// Appends wake projectors with a NOTIFY at most this often.
    pub notify_interval: Duration,
    /// The largest request message accepted, in bytes; a larger one is refused with
    /// OUT_OF_RANGE (tonic's code for an over-long message) before it is decoded.
    pub max_message_bytes: usize,
    /// The most requests served at once, over all connections; one more is refused at
    /// once with RESOURCE_EXHAUSTED instead of queueing without bound.
    pub max_in_flight: usize,
    /// Verifies the bearer token of every call but health and reflection (see
    /// [`crate::auth`]).
    pub verifier: Arc<Verifier>,
    /// TLS (rustls) with the server's certificate, and optionally the CA whose client
    /// certificates it requires (mTLS); `None` serves plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// With in-process projectors and a checkpoint key (`App::checkpoints`), the notary
    /// signs each grown clinic log this often.
    pub checkpoint_interval: Duration,
    /// How often the projection lag is measured for the metrics
    /// (`spineledger_projections::lag`).
    pub lag_sample_interval: Duration,
}

/// The default of [`ServeSettings::max_in_flight`]: well above what the database pool
/// (32 connections by default) can serve at once, so only a flood meets it.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// gRPC's customary limit, and the default: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            projector: Some(ProjectorConfig::default()),
            notify_interval: Duration::from_millis(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            // Trusts no issuer: every authenticated call is refused until one is given.
            verifier: Arc::new(Verifier::new(spineledger_auth::dev::DEFAULT_AUDIENCE)),
            tls: None,
            checkpoint_interval: Duration::from_secs(60),
            lag_sample_interval: Duration::from_secs(5),
        }
    }
}

/// The service until `shutdown` completes: the append notifier, the in-process
/// projectors (if any, logging in with `projector_database`, the projector role's
/// settings) and the gRPC server on `listener`; then the server drains its in-flight
/// requests and the projectors stop after their current batch.
///
/// # Errors
/// The server's or a projector's failure; an app login that could see past row-level
/// security (see `spineledger_store::ensure_walled`).
pub async fn serve(
    listener: TcpListener,
    app: App,
    projector_database: &spineledger_store::tokio_postgres::Config,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let when_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let notifier = app.store.spawn_notifier(settings.notify_interval);
    let mut pools = vec![("app", app.store.pool().clone())];
    let projector = match settings.projector.clone() {
        Some(config) => {
            // A connection per lease task, one for the rest (checkpoints, release).
            let size = config.projections.len() * usize::from(config.shards) + 1;
            let pool = spineledger_store::pool(projector_database, size)?;
            pools.push(("projector", pool.clone()));
            if let Some(signer) = &app.checkpoints {
                tokio::spawn(spineledger_projections::clinic_log::run_notary(
                    spineledger_store::pool(projector_database, 2)?,
                    CheckpointSigner::clone(signer),
                    settings.checkpoint_interval,
                    when_stopped(stopped.clone()),
                ));
            }
            let projector = Projector::new(pool, projector_database.clone(), config);
            Some(tokio::spawn(projector.run(when_stopped(stopped.clone()))))
        }
        None => None,
    };
    let _pool_gauges = crate::pool_metrics::observe(pools);
    // Measured from outside the projectors (with their login, which sees every clinic),
    // so that a stuck one shows a growing lag.
    let _lag_gauges = if crate::telemetry::metrics_exported() {
        Some(spineledger_projections::lag::spawn(
            spineledger_store::pool(projector_database, 1)?,
            settings.lag_sample_interval,
        ))
    } else {
        None
    };
    let served = run(listener, app, &settings, when_stopped(stopped)).await;
    notifier.abort();
    if let Some(projector) = projector {
        if served.is_err() {
            // The server failed (e.g. at startup): nothing will signal the shutdown the
            // projectors wait for, so stop them here rather than wait forever.
            projector.abort();
            return served;
        }
        projector.await??;
    }
    served
}

/// The gRPC server alone, until `shutdown` completes; then it drains in-flight requests
/// and returns.
async fn run(
    listener: TcpListener,
    app: App,
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spineledger_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spineledger_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Ready means the store answers, as a login row-level security holds; only then
    // report SERVING.
    spineledger_store::ensure_walled(app.store.pool()).await?;
    health
        .set_serving::<ClinicalRecordsServiceServer<ClinicalRecords>>()
        .await;
    health
        .set_serving::<TreatmentPlanServiceServer<ReadModels>>()
        .await;
    health
        .set_serving::<OutcomeStatisticsServiceServer<ReadModels>>()
        .await;
    health.set_serving::<AuditServiceServer<Audit>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let draining = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<ClinicalRecordsServiceServer<ClinicalRecords>>()
                .await;
            health
                .set_not_serving::<TreatmentPlanServiceServer<ReadModels>>()
                .await;
            health
                .set_not_serving::<OutcomeStatisticsServiceServer<ReadModels>>()
                .await;
            health.set_not_serving::<AuditServiceServer<Audit>>().await;
        }
    };

    let max_message_bytes = settings.max_message_bytes;
    // Shed, don't queue: past the limit a request is refused at once (tonic turns the
    // load-shed error into RESOURCE_EXHAUSTED), so a flood cannot pile up unbounded work;
    // health checks are always answered. Then authenticate, before anything is decoded.
    let mut server = Server::builder();
    if let Some(tls) = settings.tls.clone() {
        server = server.tls_config(tls)?;
    }
    server
        .trace_fn(rpc_span)
        .layer(crate::rpc_metrics::ObserveRpc)
        .layer(crate::shed::ShedOutsideHealth::new(settings.max_in_flight))
        .layer(crate::auth::Authenticate::new(Arc::clone(
            &settings.verifier,
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            ClinicalRecordsServiceServer::new(ClinicalRecords::new(app.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            TreatmentPlanServiceServer::new(ReadModels::new(app.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            OutcomeStatisticsServiceServer::new(ReadModels::new(app.clone()))
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            AuditServiceServer::new(Audit::new(app)).max_decoding_message_size(max_message_bytes),
        )
        // TCP_NODELAY: without it a response written in more than one segment (a
        // statistics answer) waits for the client's delayed ACK, about 40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            draining,
        )
        .await?;
    Ok(())
}

/// One span per RPC, parented on the caller's W3C trace context when it sends one, named
/// as the conventions name RPC spans (`spineledger.v1.ClinicalRecordsService/RecordSession`),
/// with `rpc.service`, `rpc.method` and, when the call ends, `rpc.grpc.status_code` and an
/// ERROR status for server faults (`rpc_metrics`). Health checks and reflection get none.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    if !crate::rpc_metrics::is_observed(path) {
        return tracing::Span::none();
    }
    let (service, method) = crate::rpc_metrics::service_and_method(path);
    let name = if service == crate::rpc_metrics::OTHER {
        crate::rpc_metrics::OTHER
    } else {
        path.trim_start_matches('/')
    };
    let span = tracing::info_span!(
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "no trace context attached");
    }
    span
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
}
