//! What a Purple process measures, as OpenTelemetry metrics (exported over
//! OTLP with the traces, and on the Prometheus endpoint of [`crate::scrape`]):
//! every RPC on both sides — calls, errors and latency per method, from
//! one duration histogram labelled with the gRPC status — the connection
//! pools, and the outbox's backlog and age. Labels are bounded: a method
//! Purple does not serve is recorded as `_OTHER`, so a caller cannot
//! create series at will.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use opentelemetry::{
    KeyValue,
    metrics::{Histogram, ObservableGauge},
};
use tonic::{body::Body, codegen::http};
use tower::{Layer, Service};

use crate::{
    auth::access::{self, Rule},
    db::Database,
    time::{Micros, now_micros},
};

/// Latency buckets, in seconds: from a cached score to a large import.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Instruments {
    server: Histogram<f64>,
    client: Histogram<f64>,
    statements: opentelemetry::metrics::Counter<u64>,
    _gauges: Vec<ObservableGauge<i64>>,
    _ages: ObservableGauge<f64>,
}

/// Pools to report (held weakly: a registry must not keep a pool and its
/// connections alive), and the outbox figures the relay last measured.
static POOLS: Mutex<Vec<Weak<Database>>> = Mutex::new(Vec::new());
static OUTBOX: Mutex<BTreeMap<&'static str, (u64, Option<Micros>)>> = Mutex::new(BTreeMap::new());

/// The instruments, made on first use from the global meter provider
/// (which `telemetry::init` installs before anything is measured).
fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("purple");
        let duration = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(BUCKETS.to_vec())
                .build()
        };
        let connections = meter
            .i64_observable_gauge("db.client.connection.count")
            .with_unit("{connection}")
            .with_description("Connections of each service's pool, by state")
            .with_callback(|observer| {
                for (service, used, idle) in pool_usage() {
                    observer.observe(used, &pool_labels(service, "used"));
                    observer.observe(idle, &pool_labels(service, "idle"));
                }
            })
            .build();
        let backlog = meter
            .i64_observable_gauge("purple.outbox.backlog")
            .with_unit("{event}")
            .with_description("Outbox events not yet delivered, by receiver")
            .with_callback(|observer| {
                for (receiver, (count, _)) in outbox() {
                    let count = i64::try_from(count).unwrap_or(i64::MAX);
                    observer.observe(count, &[KeyValue::new("receiver", receiver)]);
                }
            })
            .build();
        let ages = meter
            .f64_observable_gauge("purple.outbox.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest undelivered outbox event, by receiver")
            .with_callback(|observer| {
                let now = now_micros();
                for (receiver, (_, oldest)) in outbox() {
                    let age = oldest.map_or(0.0, |at| seconds_between(at, now));
                    observer.observe(age, &[KeyValue::new("receiver", receiver)]);
                }
            })
            .build();
        Instruments {
            server: duration("rpc.server.call.duration", "Duration of RPCs served"),
            client: duration("rpc.client.call.duration", "Duration of RPCs made to peers"),
            statements: meter
                .u64_counter("purple.db.statements")
                .with_unit("{statement}")
                .with_description(
                    "SQL statements run, by service (the load driver's cost per request)",
                )
                .build(),
            _gauges: vec![connections, backlog],
            _ages: ages,
        }
    })
}

/// Counts one statement of `service`'s store.
pub fn count_statement(service: &'static str) {
    instruments()
        .statements
        .add(1, &[KeyValue::new("service", service)]);
}

fn seconds_between(from: Micros, to: Micros) -> f64 {
    to.seconds_since(from).max(0.0)
}

fn pool_labels(service: &'static str, state: &'static str) -> [KeyValue; 2] {
    [
        KeyValue::new("db.client.connection.pool.name", service),
        KeyValue::new("db.client.connection.state", state),
    ]
}

fn pool_usage() -> Vec<(&'static str, i64, i64)> {
    let mut pools = POOLS.lock().expect("pool registry poisoned");
    pools.retain(|db| db.upgrade().is_some_and(|db| !db.pool().is_closed()));
    pools
        .iter()
        .filter_map(Weak::upgrade)
        .map(|db| {
            let (size, idle) = db.pool_usage();
            let (size, idle) = (i64::from(size), i64::from(idle));
            (db.service().as_str(), size - idle, idle)
        })
        .collect()
}

/// The outbox figures the relay last measured: (receiver, (backlog, oldest)).
pub fn outbox() -> Vec<(&'static str, (u64, Option<Micros>))> {
    OUTBOX
        .lock()
        .expect("outbox figures poisoned")
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// Keeps a pool reported while it is held.
#[derive(Debug)]
pub struct PoolWatch(#[allow(dead_code)] Arc<Database>);

/// Reports `db`'s pool until it closes or the returned watch is dropped.
pub fn watch_pool(db: &Database) -> PoolWatch {
    instruments();
    let held = Arc::new(db.clone());
    POOLS
        .lock()
        .expect("pool registry poisoned")
        .push(Arc::downgrade(&held));
    PoolWatch(held)
}

/// The outbox figures of one receiver, as the relay measured them.
pub fn outbox_backlog(receiver: &'static str, backlog: u64, oldest: Option<Micros>) {
    instruments();
    OUTBOX
        .lock()
        .expect("outbox figures poisoned")
        .insert(receiver, (backlog, oldest));
}

/// The bounded labels of a request path: the served method, `_OTHER` for
/// anything else; None for health and reflection, which are not measured.
fn method_labels(path: &str) -> Option<[KeyValue; 3]> {
    let (service, method) = match access::rule(path) {
        Rule::Open => return None,
        Rule::Roles(_) => path
            .trim_start_matches('/')
            .split_once('/')
            .map_or(("_OTHER", "_OTHER"), |(s, m)| (s, m)),
        Rule::Unknown => ("_OTHER", "_OTHER"),
    };
    Some([
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ])
}

/// The gRPC status of a response: in its headers for an error (a
/// trailers-only response), OK otherwise.
pub fn response_code(headers: &http::HeaderMap) -> i64 {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn record(histogram: &Histogram<f64>, labels: [KeyValue; 3], code: i64, elapsed: Duration) {
    let [system, service, method] = labels;
    histogram.record(
        elapsed.as_secs_f64(),
        &[
            system,
            service,
            method,
            KeyValue::new("rpc.grpc.status_code", code),
        ],
    );
}

/// Records one call this process made to a peer.
pub fn record_client_call(path: &str, code: i64, elapsed: Duration) {
    if let Some(labels) = method_labels(path) {
        record(&instruments().client, labels, code, elapsed);
    }
}

/// The server layer that records every RPC's duration and status.
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// A service whose calls are measured.
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let labels = method_labels(request.uri().path());
        let response = self.inner.call(request);
        let Some(labels) = labels else {
            return Box::pin(response);
        };
        let started = Instant::now();
        Box::pin(async move {
            let response = response.await;
            // A transport-level failure: the client sees UNAVAILABLE.
            let code = response.as_ref().map_or(14, |r| response_code(r.headers()));
            record(&instruments().server, labels, code, started.elapsed());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_to_served_methods() {
        let served = method_labels("/purple.scoring.v1.ScoringService/ScoreTechniques").unwrap();
        assert_eq!(served[2].value.as_str(), "ScoreTechniques");
        let other = method_labels("/purple.scoring.v1.ScoringService/x-1234").unwrap();
        assert_eq!(other[1].value.as_str(), "_OTHER");
        assert_eq!(other[2].value.as_str(), "_OTHER");
        assert!(method_labels("/grpc.health.v1.Health/Check").is_none());
    }
}
