//! W3C trace context across gRPC hops with no handler code: a peer call
//! runs in a client span ([`TracedCall`]) whose context travels as
//! `traceparent` (command-line clients inject theirs with
//! [`TraceInjector`]), and the server continues that trace in the request
//! span made by [`server_span`] — so one trace shows both sides of every
//! hop.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tonic::{
    body::Body,
    codegen::http,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tower::Service;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::instruments;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A client interceptor that writes the current span's context into the
/// outgoing metadata.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceInjector;

impl tonic::service::Interceptor for TraceInjector {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
        });
        Ok(request)
    }
}

/// The span of one incoming RPC, a child of the caller's trace when the
/// request carries `traceparent`. Its `trace_id` field puts the trace id on
/// every log line written inside the request.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    // Probes every few seconds would bury the traces worth reading.
    if path.starts_with("/grpc.health.v1.Health/") {
        return tracing::Span::none();
    }
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        trace_id = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

/// A channel whose every call is a client span (`otel.kind = client`,
/// the method, the status) carrying its context to the server, and a
/// `rpc.client.call.duration` measurement.
#[derive(Clone, Debug)]
pub struct TracedCall<S> {
    inner: S,
}

impl<S> TracedCall<S> {
    /// Wraps a channel.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for TracedCall<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path.as_str(), ""));
        let span = tracing::info_span!(
            "grpc.call",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut HeaderInjector(request.headers_mut()));
        });
        let started = Instant::now();
        let response = self.inner.call(request);
        let recorder = span.clone();
        Box::pin(
            async move {
                let response = response.await;
                // A transport failure reaches the caller as UNAVAILABLE.
                let code = response
                    .as_ref()
                    .map_or(14, |r| instruments::response_code(r.headers()));
                recorder.record("rpc.grpc.status_code", code);
                instruments::record_client_call(&path, code, started.elapsed());
                response
            }
            .instrument(span),
        )
    }
}
