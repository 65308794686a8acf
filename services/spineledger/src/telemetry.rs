//! Logs, traces and metrics. Logs go to stderr through `tracing` with an env filter
//! (`RUST_LOG`, default `info,tokio_postgres=warn`; tokio-postgres is never more verbose
//! than info, because its debug output quotes statement parameters). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans and
//! metrics (e.g. `spineledger.projector.lag`) are also exported over OTLP/gRPC; otherwise
//! nothing leaves the process. Spans carry ids, never personal data.

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the exporter alive; flushes spans when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
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

/// Installs the global subscriber. Call once, from `main`.
pub fn init() -> anyhow::Result<Telemetry> {
    // tokio-postgres logs statement parameters (whole event payloads) at debug level:
    // it is capped at info whatever RUST_LOG says, so no setting puts clinical data in logs.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"))
        .add_directive("tokio_postgres=info".parse()?);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(fmt);

    let endpoint_set =
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    if !endpoint_set {
        registry.try_init()?;
        return Ok(Telemetry {
            provider: None,
            meters: None,
        });
    }
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* settings).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("spineledger")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.clone())
        .build();
    let meters = SdkMeterProvider::builder()
        .with_periodic_exporter(
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()?,
        )
        .with_resource(resource)
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("spineledger");
    registry
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Telemetry {
        provider: Some(provider),
        meters: Some(meters),
    })
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

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), if
/// well formed. Recorded in event metadata so a write can be found in traces.
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
    use super::trace_id_from_traceparent;

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
}
