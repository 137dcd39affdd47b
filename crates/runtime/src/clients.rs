//! Typed clients of the four services, each injecting trace context, built
//! lazily from the peer addresses so that start-up order does not matter and
//! a peer that is down fails calls, not the process.

use std::{net::SocketAddr, time::Duration};

use purple_api::{
    campaigns::v1::campaigns_service_client::CampaignsServiceClient,
    ingest::v1::ingest_service_client::IngestServiceClient,
    metrics::v1::metrics_service_client::MetricsServiceClient,
    scoring::v1::scoring_service_client::ScoringServiceClient,
};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    settings::{PeerSettings, ServiceName},
    tracecontext::TraceInjector,
};

/// A channel that carries the caller's trace.
pub type TracedChannel = InterceptedService<Channel, TraceInjector>;

/// Connections to the other services.
#[derive(Clone, Debug)]
pub struct Peers {
    ingest: Channel,
    campaigns: Channel,
    scoring: Channel,
    metrics: Channel,
    max_message_bytes: usize,
}

/// A peer address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("address of {service}: {source}")]
pub struct PeerAddrError {
    service: &'static str,
    #[source]
    source: tonic::transport::Error,
}

impl Peers {
    /// Channels to every peer: the configured address, or `local` (this
    /// process's own port) for a peer served in this process.
    pub fn new(
        settings: &PeerSettings,
        local: SocketAddr,
        max_message_bytes: usize,
    ) -> Result<Self, PeerAddrError> {
        let channel = |service: ServiceName| -> Result<Channel, PeerAddrError> {
            let addr = settings
                .addr(service)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("http://{local}"));
            let endpoint = Endpoint::from_shared(addr)
                .map_err(|source| PeerAddrError {
                    service: service.as_str(),
                    source,
                })?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            Ok(endpoint.connect_lazy())
        };
        Ok(Self {
            ingest: channel(ServiceName::Ingest)?,
            campaigns: channel(ServiceName::Campaigns)?,
            scoring: channel(ServiceName::Scoring)?,
            metrics: channel(ServiceName::Metrics)?,
            max_message_bytes,
        })
    }

    /// A client of ingest.
    pub fn ingest(&self) -> IngestServiceClient<TracedChannel> {
        IngestServiceClient::with_interceptor(self.ingest.clone(), TraceInjector)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// A client of campaigns.
    pub fn campaigns(&self) -> CampaignsServiceClient<TracedChannel> {
        CampaignsServiceClient::with_interceptor(self.campaigns.clone(), TraceInjector)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// A client of scoring.
    pub fn scoring(&self) -> ScoringServiceClient<TracedChannel> {
        ScoringServiceClient::with_interceptor(self.scoring.clone(), TraceInjector)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// A client of metrics.
    pub fn metrics(&self) -> MetricsServiceClient<TracedChannel> {
        MetricsServiceClient::with_interceptor(self.metrics.clone(), TraceInjector)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }
}
