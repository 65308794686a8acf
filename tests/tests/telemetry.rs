//! The real server exports to an OTLP receiver in the test, as an operator's collector
//! would receive it: RPC spans named by the conventions with their status codes, the
//! `rpc.server.call.duration` histogram with its attributes, the resource naming the
//! process, nothing for health checks, and no personal data anywhere in what is sent.
//!
//! One test per binary: the telemetry is process-wide (a global subscriber and
//! providers), as in the service.

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use spineledger_e2e::Harness;

/// Everything the receiver was sent.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces
            .lock()
            .expect("traces")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics
            .lock()
            .expect("metrics")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(kv.value.as_ref()))
}

const CANARY: &str = "CANARY-posture-7f3a";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_receives_named_spans_red_metrics_and_no_personal_data() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let endpoint = format!("http://{address}");
    let telemetry = spineledger::telemetry::init_from(&move |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_SERVICE_NAME" => Some("spineledger-under-test".to_owned()),
        _ => None,
    })
    .expect("telemetry");

    let settings = spineledger::server::ServeSettings {
        lag_sample_interval: std::time::Duration::from_millis(50),
        ..spineledger::server::ServeSettings::default()
    };
    let mut harness =
        Harness::start_with_settings(Utc::now(), std::time::Duration::from_secs(30), settings)
            .await;
    harness.start_projector();
    let script = harness.script();
    let mut writes = ClinicalRecordsServiceClient::new(harness.channel().await);
    let at = Utc::now() - Duration::days(1);
    writes
        .register_patient(script.register_patient(at))
        .await
        .expect("register");
    let mut evaluation = script.evaluation(at);
    evaluation.posture_notes = Some(CANARY.to_owned());
    writes
        .record_evaluation(evaluation)
        .await
        .expect("evaluation");
    // A client's mistake: INVALID_ARGUMENT, not a server fault.
    let mut bad = script.evaluation(at);
    bad.pain_back = 11;
    let refused = writes.record_evaluation(bad).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // The projectors take their leases (and checkpoints) and the lag is sampled.
    let db = harness.database();
    let events = spineledger_e2e::oracle::all_events(db.projector_pool(), Some(2)).await;
    spineledger_e2e::oracle::wait_until_projected(
        db.projector_pool(),
        &Harness::projector_config(),
        &events,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The lag gauges report while their server runs: collect them now.
    tokio::task::block_in_place(|| telemetry.flush());
    // Health checks are the infrastructure's: no span, no measurement.
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(harness.plain_channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health");
    harness.stop().await;
    // Shutting the providers down flushes them; it blocks on the exporters, which need
    // the runtime's other threads.
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .expect("flush");

    let traces = received.traces.lock().expect("traces").clone();
    let metrics = received.metrics.lock().expect("metrics").clone();
    assert!(!traces.is_empty(), "no spans arrived");
    assert!(!metrics.is_empty(), "no metrics arrived");

    // The resource names the process.
    let resource = traces[0]
        .resource_spans
        .first()
        .and_then(|r| r.resource.clone())
        .expect("resource");
    assert_eq!(
        attribute(&resource.attributes, "service.name").as_deref(),
        Some("spineledger-under-test")
    );
    assert!(attribute(&resource.attributes, "service.version").is_some());
    assert!(attribute(&resource.attributes, "service.instance.id").is_some());

    let spans: Vec<_> = traces
        .iter()
        .flat_map(|t| &t.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let named = |name: &str| -> Vec<_> { spans.iter().filter(|s| s.name == name).collect() };
    let evaluations = named("spineledger.v1.ClinicalRecordsService/RecordEvaluation");
    assert_eq!(
        evaluations.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let codes: Vec<Option<String>> = evaluations
        .iter()
        .map(|s| attribute(&s.attributes, "rpc.grpc.status_code"))
        .collect();
    assert!(codes.contains(&Some("0".to_owned())), "{codes:?}");
    assert!(codes.contains(&Some("3".to_owned())), "{codes:?}");
    for span in &evaluations {
        assert_eq!(
            attribute(&span.attributes, "rpc.service").as_deref(),
            Some("spineledger.v1.ClinicalRecordsService")
        );
        assert_eq!(
            attribute(&span.attributes, "rpc.method").as_deref(),
            Some("RecordEvaluation")
        );
        assert_eq!(
            attribute(&span.attributes, "rpc.system").as_deref(),
            Some("grpc")
        );
        // A client's mistake leaves the span's status unset, never ERROR.
        let status = span.status.as_ref().map_or(0, |s| s.code);
        assert_ne!(status, StatusCode::Error as i32, "{span:?}");
    }
    assert!(
        !spans.iter().any(|s| s.name.contains("grpc.health")),
        "health checks are not traced"
    );
    // The work inside: the command, its append, and the projector's batches. The
    // command's span is a child of the RPC's, in the same trace.
    for inner in ["episode_command", "store.group_commit", "projector.batch"] {
        assert!(!named(inner).is_empty(), "no {inner} span");
    }
    let command = named("episode_command")[0];
    assert!(
        evaluations
            .iter()
            .any(|rpc| rpc.trace_id == command.trace_id && rpc.span_id == command.parent_span_id),
        "the command's span is not the RPC's child"
    );

    // RED metrics: one histogram, by method and status code.
    let durations: Vec<_> = metrics
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "rpc.server.call.duration")
        .collect();
    assert!(!durations.is_empty(), "no rpc.server.call.duration");
    assert_eq!(durations[0].unit, "s");
    let points: Vec<_> = durations
        .iter()
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(histogram)) => Some(&histogram.data_points),
            _ => None,
        })
        .flatten()
        .collect();
    let evaluation_points: Vec<_> = points
        .iter()
        .filter(|p| attribute(&p.attributes, "rpc.method").as_deref() == Some("RecordEvaluation"))
        .collect();
    let mut codes: Vec<String> = evaluation_points
        .iter()
        .filter_map(|p| attribute(&p.attributes, "rpc.grpc.status_code"))
        .collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes, ["0", "3"], "{evaluation_points:?}");
    for point in &evaluation_points {
        assert_eq!(
            attribute(&point.attributes, "rpc.system").as_deref(),
            Some("grpc")
        );
        assert_eq!(
            attribute(&point.attributes, "rpc.service").as_deref(),
            Some("spineledger.v1.ClinicalRecordsService")
        );
        assert!(point.count >= 1);
    }
    assert!(
        !points
            .iter()
            .any(|p| attribute(&p.attributes, "rpc.service").is_some_and(|s| s.contains("health"))),
        "health checks are not measured"
    );

    // Events appended by type (the refused evaluation appended nothing).
    let all_metrics: Vec<_> = metrics
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .collect();
    let sums = |name: &str| -> Vec<(Option<String>, i64)> {
        all_metrics
            .iter()
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(metric::Data::Sum(sum)) => Some(&sum.data_points),
                _ => None,
            })
            .flatten()
            .map(|p| {
                let value = match p.value {
                    Some(number_data_point::Value::AsInt(i)) => i,
                    Some(number_data_point::Value::AsDouble(d)) => d as i64,
                    None => 0,
                };
                (attribute(&p.attributes, "event.type"), value)
            })
            .collect()
    };
    let appended = sums("spineledger.events.appended");
    assert!(
        appended.contains(&(Some("EvaluationRecorded".to_owned()), 1)),
        "{appended:?}"
    );
    assert!(
        appended.contains(&(Some("PatientRegistered".to_owned()), 1)),
        "{appended:?}"
    );
    // Gauges of the pools and of the projection lag, per projection and shard.
    let gauge_points = |name: &str| -> Vec<Vec<KeyValue>> {
        all_metrics
            .iter()
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(metric::Data::Gauge(gauge)) => Some(&gauge.data_points),
                _ => None,
            })
            .flatten()
            .map(|p| p.attributes.clone())
            .collect()
    };
    let connections = gauge_points("db.client.connection.count");
    assert!(
        connections.iter().any(|a| {
            attribute(a, "db.client.connection.pool.name").as_deref() == Some("app")
                && attribute(a, "db.client.connection.state").as_deref() == Some("used")
        }),
        "{connections:?}"
    );
    assert!(!gauge_points("db.client.connection.pending_requests").is_empty());
    for name in [
        "spineledger.projector.lag",
        "spineledger.projector.events_behind",
    ] {
        let points = gauge_points(name);
        assert!(
            points.iter().any(|a| {
                attribute(a, "projection").as_deref() == Some("outcome_statistics")
                    && attribute(a, "shard").is_some()
            }),
            "{name}: {points:?}"
        );
    }

    // No personal data in anything sent: the free text, the patient's id.
    let mut bytes = Vec::new();
    for request in &traces {
        bytes.extend(request.encode_to_vec());
    }
    for request in &metrics {
        bytes.extend(request.encode_to_vec());
    }
    let sent = String::from_utf8_lossy(&bytes);
    for secret in [CANARY.to_owned(), script.patient_id.to_string()] {
        assert!(!sent.contains(&secret), "{secret} was exported");
    }
}
