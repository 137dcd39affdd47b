//! gRPC handlers of the metrics service.

use purple_api::metrics::v1::metrics_service_server::MetricsService;
use purple_runtime::ServiceContext;

/// The metrics gRPC API.
pub struct MetricsApi {
    _ctx: ServiceContext,
}

impl MetricsApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { _ctx: ctx }
    }
}

#[tonic::async_trait]
impl MetricsService for MetricsApi {}
