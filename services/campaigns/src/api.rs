//! gRPC handlers of the campaigns service.

use purple_api::campaigns::v1::campaigns_service_server::CampaignsService;
use purple_runtime::ServiceContext;

/// The campaigns gRPC API.
pub struct CampaignsApi {
    _ctx: ServiceContext,
}

impl CampaignsApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { _ctx: ctx }
    }
}

#[tonic::async_trait]
impl CampaignsService for CampaignsApi {}
