//! The Prometheus scrape endpoint (`--metrics-listen`, its own port): the
//! process's OpenTelemetry metrics in the Prometheus text format at
//! `GET /metrics`. A periodic reader of the meter provider hands each
//! collection to [`SnapshotExporter`], which renders it once; a scrape
//! serves the latest rendering, so it costs no collection and cannot
//! slow the gRPC side. The endpoint speaks plain HTTP/1.1, bounds its
//! connections and header wait, and answers nothing but `/metrics`.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, OnceLock, RwLock},
    time::Duration,
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        Temporality,
        data::{AggregatedMetrics, MetricData, ResourceMetrics},
        exporter::PushMetricExporter,
    },
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

/// The latest rendering, shared by the exporter and the endpoint.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(Arc<RwLock<String>>);

/// The process's snapshot: one meter provider per process, one rendering.
pub fn snapshot() -> Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(Snapshot::default).clone()
}

impl Snapshot {
    /// The text a scrape returns.
    pub fn text(&self) -> String {
        self.0.read().expect("snapshot poisoned").clone()
    }
}

/// A metric exporter that renders each collection as Prometheus text.
#[derive(Debug)]
pub struct SnapshotExporter {
    snapshot: Snapshot,
}

impl SnapshotExporter {
    /// An exporter writing into `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self { snapshot }
    }
}

impl PushMetricExporter for SnapshotExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let text = render(metrics);
        *self.snapshot.0.write().expect("snapshot poisoned") = text;
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        // Prometheus expects running totals.
        Temporality::Cumulative
    }
}

/// `rpc.server.call.duration` with unit `s` → `rpc_server_call_duration_seconds`.
fn metric_name(name: &str, unit: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if unit == "s" {
        out.push_str("_seconds");
    }
    out
}

fn labels(attributes: &mut dyn Iterator<Item = &KeyValue>, extra: Option<(&str, &str)>) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .map(|kv| {
            let key: String = kv
                .key
                .as_str()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            (key, kv.value.as_str().into_owned())
        })
        .collect();
    if let Some((k, v)) = extra {
        pairs.push((k.to_owned(), v.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// One metric's series, whatever its number type.
fn render_data<T: Value>(out: &mut String, name: &str, data: &MetricData<T>) {
    match data {
        MetricData::Gauge(gauge) => {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for point in gauge.data_points() {
                let l = labels(&mut point.attributes(), None);
                let _ = writeln!(out, "{name}{l} {}", point.value().to_f64());
            }
        }
        MetricData::Sum(sum) => {
            let (kind, name) = if sum.is_monotonic() {
                ("counter", format!("{name}_total"))
            } else {
                ("gauge", name.to_owned())
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for point in sum.data_points() {
                let l = labels(&mut point.attributes(), None);
                let _ = writeln!(out, "{name}{l} {}", point.value().to_f64());
            }
        }
        MetricData::Histogram(histogram) => {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = point.bounds().collect();
                for (i, count) in point.bucket_counts().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).map_or("+Inf".to_owned(), f64::to_string);
                    let l = labels(&mut point.attributes(), Some(("le", &le)));
                    let _ = writeln!(out, "{name}_bucket{l} {cumulative}");
                }
                let l = labels(&mut point.attributes(), None);
                let _ = writeln!(out, "{name}_sum{l} {}", point.sum().to_f64());
                let _ = writeln!(out, "{name}_count{l} {}", point.count());
            }
        }
        // Not configured anywhere in Purple.
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// A collection in the Prometheus text exposition format (0.0.4).
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let name = metric_name(metric.name(), metric.unit());
            if !metric.description().is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", metric.description());
            }
            match metric.data() {
                AggregatedMetrics::F64(data) => render_data(&mut out, &name, data),
                AggregatedMetrics::U64(data) => render_data(&mut out, &name, data),
                AggregatedMetrics::I64(data) => render_data(&mut out, &name, data),
            }
        }
    }
    out
}

/// A series value as the text format writes it. Integers go through f64:
/// exact below 2^53, far above any count or gauge here.
trait Value: Copy {
    fn to_f64(self) -> f64;
}

impl Value for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

impl Value for u64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Value for i64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

/// Connections the endpoint serves at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 8;

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, snapshot: Snapshot, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        // Refuse rather than queue: a flood of connections holds nothing.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let snapshot = snapshot.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&request, &snapshot)) }
                });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
            drop(slot);
        });
    }
}

fn answer<B>(request: &Request<B>, snapshot: &Snapshot) -> Response<Full<Bytes>> {
    let (status, body, content_type) =
        if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
            (
                StatusCode::OK,
                snapshot.text(),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        } else {
            (
                StatusCode::NOT_FOUND,
                "not found\n".to_owned(),
                "text/plain",
            )
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Binds the endpoint's address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        assert_eq!(
            metric_name("rpc.server.call.duration", "s"),
            "rpc_server_call_duration_seconds"
        );
        assert_eq!(
            metric_name("purple.outbox.backlog", "{event}"),
            "purple_outbox_backlog"
        );
        let attrs = [KeyValue::new("rpc.method", "a\"b")];
        assert_eq!(
            labels(&mut attrs.iter(), Some(("le", "0.5"))),
            "{rpc_method=\"a\\\"b\",le=\"0.5\"}"
        );
    }
}
