//! Logs, traces and metrics.
//!
//! **Logs** go to stderr through `tracing` with an env filter (`RUST_LOG`, default
//! `info,tokio_postgres=warn`; tokio-postgres is never more verbose than info, because
//! its debug output quotes statement parameters). `SPINELEDGER_LOG_FORMAT=json` writes
//! one JSON object per line instead, with the `trace_id` and `span_id` of the span it
//! was logged in, so a log line can be joined to its trace.
//!
//! **Traces and metrics** are exported over OTLP when an endpoint is configured, after the
//! standard `OTEL_*` environment (see the README, "Observability"):
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`, or per signal `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (a signal is exported when either is set);
//!   `https://` endpoints use TLS with the Mozilla roots;
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`, `..._METRICS_PROTOCOL`):
//!   `grpc` (the default) or `http/protobuf`;
//! - headers, timeouts and gzip compression as the exporter reads them
//!   (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`);
//! - `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (default name `spineledger`),
//!   with `service.version` and a `service.instance.id` per process unless given;
//! - `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds, default 60000), the `OTEL_BSP_*`
//!   batch settings and `OTEL_TRACES_SAMPLER`, as the SDK reads them;
//! - `OTEL_SDK_DISABLED=true`: nothing is exported whatever else is set.
//!
//! Spans carry ids, never personal data. Without an endpoint nothing leaves the process;
//! spans still get trace ids when JSON logs ask for them.

use opentelemetry::KeyValue;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _, WithTonicConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod json;

pub use json::JsonWithTrace;

/// Whether metrics are exported: what costs work only to be measured (the projection
/// lag's sampling) runs only then.
static METRICS_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`init`] set up a metrics exporter.
#[must_use]
pub fn metrics_exported() -> bool {
    METRICS_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the exporters alive; flushes spans and metrics when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports what has been recorded so far (blocks on the exporters: call it off the
    /// runtime's threads, or in `block_in_place`).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            eprintln!("warning: could not flush traces: {error}");
        }
        if let Some(meters) = &self.meters
            && let Err(error) = meters.force_flush()
        {
            eprintln!("warning: could not flush metrics: {error}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: could not flush traces: {error}");
        }
        if let Some(meters) = self.meters.take()
            && let Err(error) = meters.shutdown()
        {
            eprintln!("warning: could not flush metrics: {error}");
        }
    }
}

/// A signal of the OTLP exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    const fn suffix(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
        }
    }
}

/// Reads a setting: None when unset or blank.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn from_process(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// What the `OTEL_*` environment asks for: per signal, its transport and endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OtelSettings {
    traces: Option<(Protocol, String)>,
    metrics: Option<(Protocol, String)>,
}

/// An OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl OtelSettings {
    fn read(env: Env<'_>) -> anyhow::Result<Self> {
        let disabled =
            env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let signal = |signal: Signal| -> anyhow::Result<Option<(Protocol, String)>> {
            let suffix = signal.suffix();
            let own = env(&format!("OTEL_EXPORTER_OTLP_{suffix}_ENDPOINT"));
            let shared = env("OTEL_EXPORTER_OTLP_ENDPOINT");
            if disabled || (own.is_none() && shared.is_none()) {
                return Ok(None);
            }
            let variable = format!("OTEL_EXPORTER_OTLP_{suffix}_PROTOCOL");
            let protocol = env(&variable).or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
            let protocol = match protocol.as_deref().map(str::trim) {
                None => Protocol::Grpc,
                Some(p) if p.eq_ignore_ascii_case("grpc") => Protocol::Grpc,
                Some(p) if p.eq_ignore_ascii_case("http/protobuf") => Protocol::HttpProtobuf,
                Some(other) => anyhow::bail!(
                    "{variable} (or OTEL_EXPORTER_OTLP_PROTOCOL) is {other:?}: spineledger \
                     speaks grpc and http/protobuf"
                ),
            };
            // A signal's own endpoint is used as given; the shared one, over HTTP, gets
            // the signal's path (as the OTLP exporter specification says).
            let endpoint = match (own, shared, protocol) {
                (Some(own), _, _) => own,
                (None, Some(shared), Protocol::Grpc) => shared,
                (None, Some(shared), Protocol::HttpProtobuf) => format!(
                    "{}/v1/{}",
                    shared.trim_end_matches('/'),
                    signal.suffix().to_ascii_lowercase()
                ),
                (None, None, _) => return Ok(None),
            };
            let endpoint = endpoint.trim().to_owned();
            if protocol == Protocol::HttpProtobuf && endpoint.starts_with("https://") {
                anyhow::bail!(
                    "the OTLP {} endpoint {endpoint} is https:// with http/protobuf, which \
                     spineledger speaks over plain http:// only; use grpc for TLS",
                    signal.suffix().to_ascii_lowercase()
                );
            }
            Ok(Some((protocol, endpoint)))
        };
        Ok(Self {
            traces: signal(Signal::Traces)?,
            metrics: signal(Signal::Metrics)?,
        })
    }
}

/// The resource every signal carries: `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`
/// first, then the defaults they leave out: `service.name` `spineledger`,
/// `service.version` the build's, `service.instance.id` a fresh UUID per process.
fn resource(env: Env<'_>) -> opentelemetry_sdk::Resource {
    let from_env = EnvResourceDetector::new().detect();
    let name = env("OTEL_SERVICE_NAME")
        .or_else(|| {
            from_env
                .get(&opentelemetry::Key::from_static_str("service.name"))
                .map(|value| value.to_string())
        })
        .unwrap_or_else(|| "spineledger".to_owned());
    opentelemetry_sdk::Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
        ])
        // Given attributes override the defaults above.
        .with_detector(Box::new(EnvResourceDetector::new()))
        .with_service_name(name)
        .build()
}

/// TLS for `https://` gRPC endpoints, trusting the Mozilla roots (plain `http://`
/// endpoints are unaffected).
fn grpc_tls() -> opentelemetry_otlp::tonic_types::transport::ClientTlsConfig {
    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_enabled_roots()
}

fn span_exporter((protocol, endpoint): (Protocol, String)) -> anyhow::Result<SpanExporter> {
    Ok(match protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_tls_config(grpc_tls())
            .build()?,
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?,
    })
}

fn metric_exporter((protocol, endpoint): (Protocol, String)) -> anyhow::Result<MetricExporter> {
    Ok(match protocol {
        Protocol::Grpc => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_tls_config(grpc_tls())
            .build()?,
        Protocol::HttpProtobuf => MetricExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?,
    })
}

/// Installs the global subscriber (and, as configured, the OTLP exporters) after the
/// process environment. Call once, from `main`, inside the runtime.
///
/// # Errors
/// A malformed setting (a protocol not spoken, an endpoint that is not a URL).
pub fn init() -> anyhow::Result<Telemetry> {
    init_from(&from_process)
}

/// [`init`] with the settings read from `env` (a variable's value, None when unset), for
/// tests. The exporters still read their headers, timeouts and batch settings from the
/// process environment.
///
/// # Errors
/// As [`init`].
pub fn init_from(env: Env<'_>) -> anyhow::Result<Telemetry> {
    // tokio-postgres logs statement parameters (whole event payloads) at debug level:
    // it is capped at info whatever RUST_LOG says, so no setting puts clinical data in logs.
    // RUST_LOG chooses what is logged, not what is traced: the filter is the log
    // layer's own.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"))
    };
    let json_logs =
        env("SPINELEDGER_LOG_FORMAT").is_some_and(|f| f.trim().eq_ignore_ascii_case("json"));
    let text = (!json_logs).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .with_filter(tracing_subscriber::filter::filter_fn(
                no_statement_parameters,
            ))
    });
    let json = json_logs.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(JsonWithTrace)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .with_filter(tracing_subscriber::filter::filter_fn(
                no_statement_parameters,
            ))
    });
    let registry = tracing_subscriber::registry().with(text).with(json);

    let settings = OtelSettings::read(env)?;
    let resource = resource(env);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let meters = match settings.metrics {
        Some(protocol) => {
            let meters = SdkMeterProvider::builder()
                .with_periodic_exporter(metric_exporter(protocol)?)
                .with_resource(resource.clone())
                .build();
            opentelemetry::global::set_meter_provider(meters.clone());
            METRICS_EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(meters)
        }
        None => None,
    };
    // Spans get ids when they are exported or when JSON logs name them.
    let provider = match settings.traces {
        Some(protocol) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(span_exporter(protocol)?)
                .with_resource(resource)
                .build(),
        ),
        // Ids for the log lines, nothing recorded: no span is sampled.
        None if json_logs => Some(
            SdkTracerProvider::builder()
                .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
                .with_resource(resource)
                .build(),
        ),
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        // Spans only, at info and above: log events (which could quote whatever a
        // message holds) do not leave the process as span events.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("spineledger"))
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && *metadata.level() <= tracing::Level::INFO
            }))
    });
    registry.with(otel).try_init()?;
    Ok(Telemetry { provider, meters })
}

/// tokio-postgres logs statement parameters (whole event payloads) below info: whatever
/// `RUST_LOG` says (a more specific directive would win over a cap in the env filter),
/// nothing of it is logged.
fn no_statement_parameters(metadata: &tracing::Metadata<'_>) -> bool {
    !(metadata.target().starts_with("tokio_postgres") && *metadata.level() > tracing::Level::INFO)
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from HTTP/2 headers.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The trace id an event records of the request that wrote it: the request span's own
/// when traces are on (the caller's, when it sent W3C trace context), else the caller's
/// `traceparent`'s, else a fresh random one, so that every event names a trace id (and,
/// with JSON logs, the log lines of its request).
pub fn request_trace_id(traceparent: Option<&str>) -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span = context.span();
    let own = span.span_context();
    if own.is_valid() {
        return own.trace_id().to_string();
    }
    traceparent
        .and_then(trace_id_from_traceparent)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), if
/// well formed.
pub fn trace_id_from_traceparent(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    let well_formed = trace_id.len() == 32
        && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
        && trace_id.bytes().any(|b| b != b'0');
    well_formed.then(|| trace_id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn trace_id_is_read_from_a_traceparent_header() {
        assert_eq!(
            trace_id_from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id_from_traceparent("garbage"), None);
        assert_eq!(
            trace_id_from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
    }

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<OtelSettings> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtelSettings::read(&move |name: &str| map.get(name).cloned().filter(|v| !v.is_empty()))
    }

    #[test]
    fn each_signal_follows_its_own_endpoint_and_protocol() {
        assert_eq!(
            settings(&[]).unwrap(),
            OtelSettings {
                traces: None,
                metrics: None
            }
        );
        let both = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]).unwrap();
        let grpc = Some((Protocol::Grpc, "https://collector:4317".to_owned()));
        assert_eq!(both.traces, grpc);
        assert_eq!(both.metrics, grpc);
        // A per-signal endpoint alone exports that signal.
        let traces = settings(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(
            traces.traces,
            Some((
                Protocol::HttpProtobuf,
                "http://collector:4318/v1/traces".to_owned()
            ))
        );
        assert_eq!(traces.metrics, None);
        let mixed = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(
            mixed.traces,
            Some((Protocol::Grpc, "http://collector:4318/".to_owned()))
        );
        assert_eq!(
            mixed.metrics,
            Some((
                Protocol::HttpProtobuf,
                "http://collector:4318/v1/metrics".to_owned()
            ))
        );
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ])
            .is_err()
        );
        // HTTP is spoken without TLS: an https:// endpoint over it is refused at start
        // rather than failing at every export.
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ])
            .is_err()
        );
        let disabled = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .unwrap();
        assert_eq!(disabled.traces, None);
        assert_eq!(disabled.metrics, None);
    }

    #[test]
    fn the_environment_names_the_service_and_the_defaults_fill_in() {
        let named =
            resource(&|name: &str| (name == "OTEL_SERVICE_NAME").then(|| "ledger-eu-1".to_owned()));
        let get = |resource: &opentelemetry_sdk::Resource, key: &'static str| {
            resource
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|v| v.to_string())
        };
        assert_eq!(get(&named, "service.name").as_deref(), Some("ledger-eu-1"));
        assert_eq!(
            get(&named, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let instance = get(&named, "service.instance.id").expect("instance id");
        assert!(uuid::Uuid::parse_str(&instance).is_ok());
        let default = resource(&|_: &str| None);
        assert_eq!(
            get(&default, "service.name").as_deref(),
            Some("spineledger")
        );
    }
}
