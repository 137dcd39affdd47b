//! Tracing and OpenTelemetry for a Purple process: structured logs that
//! carry the trace id, spans for every RPC and SQL statement, OTLP export
//! when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace
//! context as the propagation format.
//!
//! Export runs on the SDK's own batch thread: an unreachable collector
//! drops spans, it never fails or slows a request.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use crate::scrape::{self, SnapshotExporter};
use opentelemetry::{Context, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider},
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, Span, SpanData, SpanProcessor},
};
use tracing_subscriber::{EnvFilter, Layer, filter, layer::SubscriberExt, util::SubscriberInitExt};

/// Targets whose spans would trace the exporter itself (it speaks gRPC too)
/// or drown a request's trace in transport detail.
const TRANSPORT_TARGETS: [&str; 5] = ["tonic", "hyper", "h2", "tower", "opentelemetry"];

/// How often metrics are collected for the scrape endpoint.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps the tracer and meter providers alive; [`TelemetryGuard::shutdown`]
/// flushes them.
pub struct TelemetryGuard {
    providers: Option<(SdkTracerProvider, SdkMeterProvider)>,
}

fn shutdown_providers((traces, meters): (SdkTracerProvider, SdkMeterProvider)) {
    if let Err(err) = traces.shutdown() {
        eprintln!("telemetry shutdown: {err}");
    }
    let _ = meters.shutdown();
}

impl TelemetryGuard {
    /// Flushes pending spans and metrics and stops the exporters. The SDK's
    /// shutdown blocks, so it runs on a blocking thread and never on a
    /// request path.
    pub async fn shutdown(mut self) {
        if let Some(providers) = self.providers.take() {
            let _ = tokio::task::spawn_blocking(move || shutdown_providers(providers)).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(providers) = self.providers.take() {
            // Not shut down explicitly (an early error): flush from a plain
            // thread so a current-thread runtime cannot stall on it.
            let _ = std::thread::spawn(move || shutdown_providers(providers)).join();
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the enclosing spans' fields
    /// (trace_id among them).
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// From `PURPLE_LOG_FORMAT` (`json` or `text`; JSON by default).
    pub fn from_env() -> Self {
        match std::env::var("PURPLE_LOG_FORMAT").as_deref() {
            Ok("text") => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }
}

fn env_set(names: &[&str]) -> bool {
    names.iter().any(|n| std::env::var_os(n).is_some())
}

/// Installs the global subscriber and meter provider: logs filtered by
/// `RUST_LOG` (default `info`); an OpenTelemetry layer whose spans go to
/// OTLP when the standard OTel variables name an endpoint; metrics
/// rendered for the scrape endpoint and, with an endpoint, sent over OTLP
/// too. `service_name` applies unless `OTEL_SERVICE_NAME` (or a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise.
pub fn init(service_name: &str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let resource = resource(service_name);
    let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
    if env_set(&[
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        traces = traces.with_batch_exporter(exporter);
    }
    let mut meters = meter_provider(resource);
    if env_set(&[
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ]) {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()?;
        meters = meters.with_periodic_exporter(exporter);
    }
    let (traces, meters) = (traces.build(), meters.build());
    install(&traces, format, false)?;
    opentelemetry::global::set_meter_provider(meters.clone());
    Ok(TelemetryGuard {
        providers: Some((traces, meters)),
    })
}

/// Metrics collected every [`SCRAPE_INTERVAL`] into the scrape endpoint's
/// snapshot.
fn meter_provider(resource: Resource) -> MeterProviderBuilder {
    let reader = PeriodicReader::builder(SnapshotExporter::new(scrape::snapshot()))
        .with_interval(SCRAPE_INTERVAL)
        .build();
    SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(reader)
}

/// The process's resource: the standard detectors (OTEL_SERVICE_NAME,
/// OTEL_RESOURCE_ATTRIBUTES — the Kubernetes pod and namespace come in
/// there from the downward API), with `service_name` as the default name.
fn resource(service_name: &str) -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
            attributes
                .split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

fn install(provider: &SdkTracerProvider, format: LogFormat, test: bool) -> anyhow::Result<()> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("purple");
    let no_transport = filter::filter_fn(|meta| {
        !TRANSPORT_TARGETS
            .iter()
            .any(|t| meta.target().starts_with(t))
    });
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter::LevelFilter::INFO)
        .with_filter(no_transport);
    let default_level = if test { "warn" } else { "info" };
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = match (format, test) {
        (_, true) => tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(env)
            .boxed(),
        (LogFormat::Json, false) => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(env)
            .boxed(),
        (LogFormat::Text, false) => tracing_subscriber::fmt::layer().with_filter(env).boxed(),
    };
    tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init()?;
    Ok(())
}

/// A finished span as tests inspect it.
#[derive(Clone, Debug)]
pub struct CollectedSpan {
    /// The OTel span name.
    pub name: String,
    /// Hex trace id.
    pub trace_id: String,
    /// `server` (an RPC served), `client` (a call to a peer) or
    /// `internal`.
    pub kind: &'static str,
    /// String attributes.
    pub attributes: Vec<(String, String)>,
}

impl CollectedSpan {
    /// The value of one attribute.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every span that ended in this process, kept in memory: how tests count
/// the SQL statements and RPCs one request cost.
#[derive(Clone, Debug, Default)]
pub struct SpanCollector {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl SpanCollector {
    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans
            .lock()
            .expect("span collector poisoned")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

impl SpanProcessor for SpanCollector {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let collected = CollectedSpan {
            name: span.name.to_string(),
            trace_id: span.span_context.trace_id().to_string(),
            kind: match span.span_kind {
                opentelemetry::trace::SpanKind::Server => "server",
                opentelemetry::trace::SpanKind::Client => "client",
                _ => "internal",
            },
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
        };
        self.spans
            .lock()
            .expect("span collector poisoned")
            .push(collected);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber whose spans go to an
/// in-memory collector, and returns the collector. For tests.
pub fn init_for_tests() -> SpanCollector {
    static COLLECTOR: OnceLock<SpanCollector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let collector = SpanCollector::default();
            let provider = SdkTracerProvider::builder()
                .with_resource(resource("purple-test"))
                .with_span_processor(collector.clone())
                .build();
            install(&provider, LogFormat::Text, true).expect("test telemetry installs once");
            opentelemetry::global::set_meter_provider(
                meter_provider(resource("purple-test")).build(),
            );
            collector
        })
        .clone()
}
