//! gRPC handlers of the metrics service: validate, call the store, convert
//! back. Each metric is one statement; the summary runs the four at once.

use std::collections::HashMap;

use purple_api::{
    batch::check_batch_len,
    common::v1::{Event, Outcome, TimeWindow},
    metrics::v1::{
        DurationStats as DurationStatsPb, GetMttdRequest, GetMttdResponse, GetMttrRequest,
        GetMttrResponse, GetOperationalSummaryRequest, GetOperationalSummaryResponse,
        GetOperationalTrendRequest, GetOperationalTrendResponse, GetRejectionRatesRequest,
        GetRejectionRatesResponse, ListAuditEventsRequest, ListAuditEventsResponse, MetricFilter,
        RecordEventsRequest, RecordEventsResponse, WeekPoint,
        metrics_service_server::MetricsService,
    },
};
use purple_runtime::{
    ServiceContext,
    paging::Page,
    time::{Micros, datetime, from_timestamp, now_micros, timestamp},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, DurationStats, Filter, MAX_TREND_WEEKS, RawEvent, Rejections, WEEK, Week},
    error::MetricsError,
    store::{AuditQuery, EventStore, StoredEvent},
};

/// The metrics gRPC API.
pub struct MetricsApi {
    store: EventStore,
}

impl MetricsApi {
    /// The API over a service context.
    pub fn new(ctx: ServiceContext) -> Self {
        Self {
            store: EventStore::new(ctx.db),
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MetricsService for MetricsApi {
    async fn record_events(
        &self,
        request: Request<RecordEventsRequest>,
    ) -> Rpc<RecordEventsResponse> {
        let events = request.into_inner().events;
        check_batch_len("events", events.len()).map_err(MetricsError::from)?;
        let now = now_micros();
        let mut valid = Vec::with_capacity(events.len());
        let mut seen = std::collections::HashSet::new();
        for (index, event) in events.iter().enumerate() {
            let new = domain::validate_event(index, &raw(event), now)?;
            // The same id twice in one batch is one event.
            if seen.insert(new.event_id.clone()) {
                valid.push(new);
            }
        }
        let recorded = self
            .store
            .append(&valid, now)
            .await
            .map_err(MetricsError::from)?;
        Ok(Response::new(RecordEventsResponse {
            recorded: recorded as i32,
            duplicates: (events.len() as u64 - recorded) as i32,
        }))
    }

    async fn get_mttd(&self, request: Request<GetMttdRequest>) -> Rpc<GetMttdResponse> {
        let filter = filter(request.into_inner().filter)?;
        let mttd = self.store.mttd(&filter).await.map_err(MetricsError::from)?;
        Ok(Response::new(GetMttdResponse {
            mttd: Some(stats_pb(mttd)),
        }))
    }

    async fn get_mttr(&self, request: Request<GetMttrRequest>) -> Rpc<GetMttrResponse> {
        let filter = filter(request.into_inner().filter)?;
        let mttr = self.store.mttr(&filter).await.map_err(MetricsError::from)?;
        Ok(Response::new(GetMttrResponse {
            mttr: Some(stats_pb(mttr)),
        }))
    }

    async fn get_rejection_rates(
        &self,
        request: Request<GetRejectionRatesRequest>,
    ) -> Rpc<GetRejectionRatesResponse> {
        let filter = filter(request.into_inner().filter)?;
        let counts = self
            .store
            .rejections(&filter)
            .await
            .map_err(MetricsError::from)?;
        Ok(Response::new(rejections_pb(counts)))
    }

    async fn get_operational_trend(
        &self,
        request: Request<GetOperationalTrendRequest>,
    ) -> Rpc<GetOperationalTrendResponse> {
        let filter = trend_filter(request.into_inner().filter)?;
        let first = domain::iso_week_start(filter.from);
        let weeks = self
            .store
            .trend(&filter, first)
            .await
            .map_err(MetricsError::from)?;
        Ok(Response::new(GetOperationalTrendResponse {
            weeks: weeks.into_iter().map(week_pb).collect(),
        }))
    }

    async fn get_operational_summary(
        &self,
        request: Request<GetOperationalSummaryRequest>,
    ) -> Rpc<GetOperationalSummaryResponse> {
        let filter = trend_filter(request.into_inner().filter)?;
        let first = domain::iso_week_start(filter.from);
        let (mttd, mttr, rejections, weeks) = futures::try_join!(
            self.store.mttd(&filter),
            self.store.mttr(&filter),
            self.store.rejections(&filter),
            self.store.trend(&filter, first),
        )
        .map_err(MetricsError::from)?;
        Ok(Response::new(GetOperationalSummaryResponse {
            mttd: Some(stats_pb(mttd)),
            mttr: Some(stats_pb(mttr)),
            rejection: Some(rejections_pb(rejections)),
            weeks: weeks.into_iter().map(week_pb).collect(),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Rpc<ListAuditEventsResponse> {
        let request = request.into_inner();
        let page =
            Page::parse(request.page_size, &request.page_token, 100).map_err(MetricsError::from)?;
        let window = request.window.unwrap_or_default();
        let bound = |ts: Option<&prost_types::Timestamp>, name: &str, default: Micros| match ts {
            None => Ok(default),
            Some(ts) => from_timestamp(ts)
                .map_err(|e| MetricsError::invalid(format!("window.{name}"), e.to_string())),
        };
        let query = AuditQuery {
            test_id: request.test_id,
            technique_id: request.technique_id,
            kind: request.kind,
            from: bound(window.from.as_ref(), "from", Micros::MIN)?,
            to: bound(window.to.as_ref(), "to", Micros::MAX)?,
        };
        let mut events = self
            .store
            .audit(&query, page)
            .await
            .map_err(MetricsError::from)?;
        let next_page_token = page.finish(&mut events);
        Ok(Response::new(ListAuditEventsResponse {
            events: events.into_iter().map(event_pb).collect(),
            next_page_token,
        }))
    }
}

fn raw(event: &Event) -> RawEvent<'_> {
    RawEvent {
        event_id: &event.event_id,
        kind: &event.kind,
        occurred_at: event
            .occurred_at
            .as_ref()
            .map(|ts| from_timestamp(ts).map_err(|e| e.to_string())),
        test_id: &event.test_id,
        technique_id: &event.technique_id,
        campaign_id: &event.campaign_id,
        remediation_id: &event.remediation_id,
        outcome: Outcome::try_from(event.outcome).unwrap_or(Outcome::Unspecified),
        side: &event.side,
        actor_id: &event.actor_id,
        attributes: &event.attributes,
    }
}

/// A metric's window and filters, checked.
fn filter(filter: Option<MetricFilter>) -> Result<Filter, MetricsError> {
    let filter = filter.ok_or_else(|| MetricsError::invalid("filter", "required"))?;
    let TimeWindow { from, to } = filter
        .window
        .ok_or_else(|| MetricsError::invalid("filter.window", "required"))?;
    let instant = |ts: Option<prost_types::Timestamp>, name: &str| {
        let field = format!("filter.window.{name}");
        let ts = ts.ok_or_else(|| MetricsError::invalid(&field, "required"))?;
        from_timestamp(&ts).map_err(|e| MetricsError::invalid(&field, e.to_string()))
    };
    let (from, to) = (instant(from, "from")?, instant(to, "to")?);
    if from >= to {
        return Err(MetricsError::invalid(
            "filter.window",
            "from must be before to",
        ));
    }
    check_batch_len("filter.technique_ids", filter.technique_ids.len())?;
    Ok(Filter {
        from,
        to,
        technique_ids: filter.technique_ids,
        campaign_id: filter.campaign_id,
    })
}

/// A trend's filter: also bounded in length, since it returns a row a week.
fn trend_filter(raw: Option<MetricFilter>) -> Result<Filter, MetricsError> {
    let filter = filter(raw)?;
    let span = filter.to - domain::iso_week_start(filter.from);
    let weeks = (span + WEEK - 1) / WEEK;
    if weeks > MAX_TREND_WEEKS {
        return Err(MetricsError::invalid(
            "filter.window",
            format!("spans {weeks} weeks; a trend covers at most {MAX_TREND_WEEKS}"),
        ));
    }
    Ok(filter)
}

fn stats_pb(stats: DurationStats) -> DurationStatsPb {
    DurationStatsPb {
        count: stats.count,
        mean_seconds: stats.mean,
        p50_seconds: stats.p50,
        p90_seconds: stats.p90,
    }
}

fn rejections_pb(c: Rejections) -> GetRejectionRatesResponse {
    GetRejectionRatesResponse {
        validated: c.validated,
        rejected: c.rejected,
        red_rejected: c.red_rejected,
        red_executed: c.red_executed,
        red_rate: domain::rate(c.red_rejected, c.red_executed),
        blue_rejected: c.blue_rejected,
        blue_completed: c.blue_completed,
        blue_rate: domain::rate(c.blue_rejected, c.blue_completed),
    }
}

fn week_pb(week: Week) -> WeekPoint {
    use chrono::Datelike;
    let start = datetime(week.start);
    let iso = start.iso_week();
    WeekPoint {
        week_start: Some(timestamp(week.start)),
        iso_week: format!("{}-W{:02}", iso.year(), iso.week()),
        validated: week.validated,
        cumulative_validated: week.cumulative_validated,
        detection_rate: domain::rate(week.detections, week.validated),
        mttd: Some(stats_pb(week.mttd)),
    }
}

fn event_pb(event: StoredEvent) -> Event {
    let attributes: HashMap<String, String> =
        serde_json::from_str(&event.attributes).unwrap_or_default();
    Event {
        event_id: event.event_id,
        kind: event.kind,
        occurred_at: Some(timestamp(event.occurred_at)),
        test_id: event.test_id.unwrap_or_default(),
        technique_id: event.technique_id.unwrap_or_default(),
        campaign_id: event.campaign_id.unwrap_or_default(),
        remediation_id: event.remediation_id.unwrap_or_default(),
        outcome: event
            .outcome
            .as_deref()
            .and_then(Outcome::from_key)
            .unwrap_or(Outcome::Unspecified) as i32,
        side: event.side.unwrap_or_default(),
        actor_id: event.actor_id.unwrap_or_default(),
        attributes,
    }
}
