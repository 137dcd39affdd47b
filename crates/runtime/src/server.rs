//! The gRPC server every Purple process runs: the services it hosts plus
//! `grpc.health.v1.Health` and, when enabled, server reflection (v1 and
//! v1alpha, so both grpcurl and buf work), behind the gate (authentication,
//! roles, admission: `auth::gate`), with TLS when a certificate is
//! configured, a request deadline, and a per-connection bound on streams.
//!
//! Shutdown drains before it closes: health goes NOT_SERVING (probes and
//! load balancers stop sending), the listener keeps accepting while the
//! requests in flight finish — including the calls this process makes to
//! the services it hosts itself — and only then does the server stop
//! accepting and close its connections.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    body::Body,
    codegen::http,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::ServerTlsConfig,
};
use tower::Service;

use crate::{
    auth::gate::{Gate, GateLayer},
    health::Health,
    instruments::RpcMetricsLayer,
    settings::LimitSettings,
    tracecontext,
};

/// Accepted connections with Nagle's algorithm off: tonic sets TCP_NODELAY
/// only on listeners it binds itself, and without it small responses wait
/// out the peer's delayed ACK (~40 ms).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
        })
    })
}

/// How a server is exposed: its gate, its TLS, whether it serves
/// reflection.
pub struct Exposure {
    /// Authentication, roles and admission.
    pub gate: Gate,
    /// TLS (and client-certificate verification) when configured.
    pub tls: Option<ServerTlsConfig>,
    /// Whether to serve reflection.
    pub reflection: bool,
}

/// A bound listener and the services it will serve.
pub struct GrpcServer {
    listener: TcpListener,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    limits: LimitSettings,
    health: Health,
    exposure: Exposure,
}

impl GrpcServer {
    /// Binds the address now, so the real port (for `:0`) is known before
    /// the services that call back into it are built.
    pub async fn bind(
        addr: SocketAddr,
        limits: LimitSettings,
        exposure: Exposure,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Ok(Self {
            listener,
            routes,
            names: Vec::new(),
            limits,
            health: Health::new(health),
            exposure,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The process's health, for the watchers of hosted services'
    /// databases.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Hosts a service; its health is reported under its full name.
    pub fn add_service<S>(&mut self, service: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
    }

    /// Serves until `shutdown` resolves, then drains for at most the grace
    /// period before closing; says how the drain went.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<Stopped> {
        if self.exposure.reflection {
            // Reflection lists what this process hosts (plus health and
            // itself); every descriptor stays resolvable, so the error
            // details (google.rpc.*) print in grpcurl.
            let builder = || {
                self.names.iter().fold(
                    tonic_reflection::server::Builder::configure()
                        .register_encoded_file_descriptor_set(purple_api::FILE_DESCRIPTOR_SET)
                        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                        .with_service_name("grpc.health.v1.Health"),
                    |builder, name| builder.with_service_name(*name),
                )
            };
            let reflection_v1 = builder()
                .with_service_name("grpc.reflection.v1.ServerReflection")
                .build_v1()?;
            let reflection_v1alpha = builder()
                .with_service_name("grpc.reflection.v1alpha.ServerReflection")
                .build_v1alpha()?;
            self.routes.add_service(reflection_v1);
            self.routes.add_service(reflection_v1alpha);
        }

        for name in &self.names {
            self.health.host(name).await;
        }
        self.health.open().await;

        let routes: Routes = self.routes.routes();
        let grace = self.limits.shutdown_grace();
        let in_flight = self.exposure.gate.in_flight();
        let closing = tokio_util::sync::CancellationToken::new();
        let at_drain = Arc::new(AtomicUsize::new(0));
        let drained = {
            let (health, closing) = (self.health.clone(), closing.clone());
            let (in_flight, at_drain) = (in_flight.clone(), at_drain.clone());
            async move {
                shutdown.await;
                at_drain.store(in_flight.count(), Ordering::SeqCst);
                tracing::info!(
                    in_flight = in_flight.count(),
                    "shutting down: health NOT_SERVING, draining in-flight requests"
                );
                health.drain().await;
                let idle = in_flight.wait_idle(grace).await;
                if !idle {
                    tracing::warn!(
                        ?grace,
                        still_in_flight = in_flight.count(),
                        "grace period over; closing with requests in flight"
                    );
                }
                closing.cancel();
            }
        };

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.exposure.tls.take() {
            builder = builder.tls_config(tls)?;
        }
        if self.limits.max_connection_age_secs > 0 {
            builder = builder
                .max_connection_age(Duration::from_secs(self.limits.max_connection_age_secs))
                .max_connection_age_grace(self.limits.request_timeout());
        }
        let serve = builder
            .timeout(self.limits.request_timeout())
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .trace_fn(tracecontext::server_span)
            .layer(RpcMetricsLayer)
            .layer(GateLayer::new(self.exposure.gate.clone()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(self.listener), drained);
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            // Connections that linger after the drain (an idle client that
            // never reads its GOAWAY) do not hold the process.
            () = async { closing.cancelled().await; tokio::time::sleep(Duration::from_secs(1)).await } => {}
        }
        let abandoned = in_flight.count();
        let stopped = Stopped {
            drained: at_drain.load(Ordering::SeqCst).saturating_sub(abandoned),
            abandoned,
        };
        tracing::debug!(?stopped, "server stopped");
        Ok(stopped)
    }
}

/// How a server's drain went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Requests in progress when shutdown began that completed.
    pub drained: usize,
    /// Requests still in progress when the grace period ran out.
    pub abandoned: usize,
}
