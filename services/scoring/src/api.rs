//! gRPC handlers of the scoring service.

use purple_api::scoring::v1::scoring_service_server::ScoringService;
use purple_runtime::ServiceContext;

/// The scoring gRPC API.
pub struct ScoringApi {
    _ctx: ServiceContext,
}

impl ScoringApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { _ctx: ctx }
    }
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {}
