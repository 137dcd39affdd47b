//! The gRPC server every Purple process runs: the services it hosts plus
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha, so both
//! grpcurl and buf work), with a request deadline, a global concurrency
//! limit, and a shutdown that goes health NOT_SERVING, stops accepting,
//! drains in-flight requests for a bounded time, then returns.

use std::{convert::Infallible, future::Future, net::SocketAddr};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    body::Body,
    codegen::http,
    server::NamedService,
    service::{Routes, RoutesBuilder},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Service;

use crate::{settings::LimitSettings, tracecontext};

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

/// A bound listener and the services it will serve.
pub struct GrpcServer {
    listener: TcpListener,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    limits: LimitSettings,
    health: HealthReporter,
}

impl GrpcServer {
    /// Binds the address now, so the real port (for `:0`) is known before
    /// the services that call back into it are built.
    pub async fn bind(addr: SocketAddr, limits: LimitSettings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Ok(Self {
            listener,
            routes,
            names: Vec::new(),
            limits,
            health,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
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
    /// period.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(purple_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(purple_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        self.routes.add_service(reflection_v1);
        self.routes.add_service(reflection_v1alpha);

        for name in &self.names {
            self.health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        self.health
            .set_service_status("", ServingStatus::Serving)
            .await;

        let routes: Routes = self.routes.routes();
        let grace = self.limits.shutdown_grace();
        let draining = tokio_util::sync::CancellationToken::new();
        let signal = {
            let (health, names, draining) =
                (self.health.clone(), self.names.clone(), draining.clone());
            async move {
                shutdown.await;
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight requests");
                for name in names {
                    health
                        .set_service_status(name, ServingStatus::NotServing)
                        .await;
                }
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                draining.cancel();
            }
        };

        let mut builder = tonic::transport::Server::builder();
        if self.limits.max_connection_age_secs > 0 {
            builder = builder
                .max_connection_age(std::time::Duration::from_secs(
                    self.limits.max_connection_age_secs,
                ))
                .max_connection_age_grace(self.limits.request_timeout());
        }
        let serve = builder
            .timeout(self.limits.request_timeout())
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .trace_fn(tracecontext::server_span)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                self.limits.concurrency_limit,
            ))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(self.listener), signal);
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; dropping requests still in flight");
            }
        }
        Ok(())
    }
}
