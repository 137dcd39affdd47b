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

use opentelemetry::{Context, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, Span, SpanData, SpanProcessor},
};
use tracing_subscriber::{EnvFilter, Layer, filter, layer::SubscriberExt, util::SubscriberInitExt};

/// Targets whose spans would trace the exporter itself (it speaks gRPC too)
/// or drown a request's trace in transport detail.
const TRANSPORT_TARGETS: [&str; 5] = ["tonic", "hyper", "h2", "tower", "opentelemetry"];

/// Keeps the tracer provider alive; [`TelemetryGuard::shutdown`] flushes it.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes pending spans and stops the exporter. The SDK's shutdown
    /// blocks, so it runs on a blocking thread and never on a request path.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(err) = provider.shutdown() {
                    eprintln!("telemetry shutdown: {err}");
                }
            })
            .await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Not shut down explicitly (an early error): flush from a plain
            // thread so a current-thread runtime cannot stall on it.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
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

/// Installs the global subscriber: logs filtered by `RUST_LOG` (default
/// `info`), and an OpenTelemetry layer whose spans go to OTLP when the
/// standard OTel variables name an endpoint.
pub fn init(service_name: &str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(service_name));
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    install(&provider, format, false)?;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

fn resource(service_name: &str) -> Resource {
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .build()
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
            collector
        })
        .clone()
}
