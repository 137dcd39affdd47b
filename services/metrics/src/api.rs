//! gRPC handlers of the metrics service: each converts its request (see
//! `convert`), calls one [`EventLog`] function and converts the answer
//! back; errors become a status once, through `MetricsError`.

use std::sync::Arc;

use purple_api::metrics::v1::{self as pb, metrics_service_server::MetricsService};
use purple_runtime::ServiceContext;
use tonic::{Request, Response, Status};

use crate::{
    coalesce::Coalesce,
    convert::{AuditRequest, TrendFilter, event_pb, raw_event},
    domain::Filter,
    event_log::{EventLog, Summary},
    store::EventStore,
};

/// The metrics gRPC API.
pub struct MetricsApi {
    log: EventLog,
    /// Identical summaries asked at once share one computation.
    summaries: Coalesce<Filter, Arc<Summary>>,
}

impl MetricsApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self {
            log: EventLog::new(EventStore::new(ctx.db)),
            summaries: Coalesce::default(),
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MetricsService for MetricsApi {
    async fn record_events(
        &self,
        request: Request<pb::RecordEventsRequest>,
    ) -> Rpc<pb::RecordEventsResponse> {
        let request = request.into_inner();
        let events: Vec<_> = request.events.iter().map(raw_event).collect();
        let (recorded, duplicates) = self.log.record(&events).await?;
        Ok(Response::new(pb::RecordEventsResponse {
            recorded: recorded as i32,
            duplicates: duplicates as i32,
        }))
    }

    async fn get_mttd(&self, request: Request<pb::GetMttdRequest>) -> Rpc<pb::GetMttdResponse> {
        let filter = Filter::try_from(request.into_inner().filter)?;
        let mttd = self.log.mttd(&filter).await?;
        Ok(Response::new(pb::GetMttdResponse {
            mttd: Some(mttd.into()),
        }))
    }

    async fn get_mttr(&self, request: Request<pb::GetMttrRequest>) -> Rpc<pb::GetMttrResponse> {
        let filter = Filter::try_from(request.into_inner().filter)?;
        let mttr = self.log.mttr(&filter).await?;
        Ok(Response::new(pb::GetMttrResponse {
            mttr: Some(mttr.into()),
        }))
    }

    async fn get_rejection_rates(
        &self,
        request: Request<pb::GetRejectionRatesRequest>,
    ) -> Rpc<pb::GetRejectionRatesResponse> {
        let filter = Filter::try_from(request.into_inner().filter)?;
        Ok(Response::new(self.log.rejections(&filter).await?.into()))
    }

    async fn get_operational_trend(
        &self,
        request: Request<pb::GetOperationalTrendRequest>,
    ) -> Rpc<pb::GetOperationalTrendResponse> {
        let TrendFilter(filter) = TrendFilter::try_from(request.into_inner().filter)?;
        let weeks = self.log.trend(&filter).await?;
        Ok(Response::new(pb::GetOperationalTrendResponse {
            weeks: weeks.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_operational_summary(
        &self,
        request: Request<pb::GetOperationalSummaryRequest>,
    ) -> Rpc<pb::GetOperationalSummaryResponse> {
        let TrendFilter(filter) = TrendFilter::try_from(request.into_inner().filter)?;
        let log = self.log.clone();
        let summary = self
            .summaries
            .get(filter, move |filter| {
                let log = log.clone();
                async move { Ok(Arc::new(log.summary(&filter).await?)) }
            })
            .await?;
        let summary = Arc::unwrap_or_clone(summary);
        Ok(Response::new(pb::GetOperationalSummaryResponse {
            mttd: Some(summary.mttd.into()),
            mttr: Some(summary.mttr.into()),
            rejection: Some(summary.rejections.into()),
            weeks: summary.weeks.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Rpc<pb::ListAuditEventsResponse> {
        let AuditRequest { query, page } = request.into_inner().try_into()?;
        let (events, next_page_token) = self.log.audit(&query, &page).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }
}
