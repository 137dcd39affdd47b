//! gRPC handlers of the ingest service.

use purple_api::ingest::v1::ingest_service_server::IngestService;
use purple_runtime::ServiceContext;

/// The ingest gRPC API.
pub struct IngestApi {
    _ctx: ServiceContext,
}

impl IngestApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { _ctx: ctx }
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {}
