//! The wire edge of the metrics service: requests checked and turned into
//! domain queries, domain results turned into responses. Every conversion
//! that can fail names the field it refuses.

use std::collections::HashMap;

use purple_api::{
    common::v1::{Event, EventKind, Outcome, TimeWindow},
    metrics::v1 as pb,
};
use purple_runtime::{
    paging::Page,
    time::{Micros, from_timestamp, timestamp},
};

use crate::{
    domain::{self, DurationStats, Filter, MAX_TREND_WEEKS, RawEvent, Rejections, WEEK, Week},
    error::MetricsError,
    store::{AuditQuery, StoredEvent},
};

/// The sort key of the audit trail: (occurred_at, seq), newest first.
pub const AUDIT_KEY_LEN: usize = 2;

/// An event as received, for [`domain::validate_event`].
pub fn raw_event(event: &Event) -> RawEvent<'_> {
    #[allow(deprecated)]
    let name = event.kind.as_str();
    let kind = match EventKind::try_from(event.event_kind) {
        Ok(EventKind::Unspecified) | Err(_) => {
            EventKind::from_key(name).unwrap_or(EventKind::Unspecified)
        }
        Ok(kind) => kind,
    };
    RawEvent {
        event_id: &event.event_id,
        kind,
        kind_name: name,
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
impl TryFrom<Option<pb::MetricFilter>> for Filter {
    type Error = MetricsError;

    fn try_from(filter: Option<pb::MetricFilter>) -> Result<Self, MetricsError> {
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
        purple_api::batch::check_ids("filter.technique_ids", &filter.technique_ids)?;
        Ok(Filter {
            from,
            to,
            technique_ids: filter.technique_ids,
            campaign_id: filter.campaign_id,
        })
    }
}

/// A trend's filter: also bounded in length, since it returns a row a week.
pub struct TrendFilter(pub Filter);

impl TryFrom<Option<pb::MetricFilter>> for TrendFilter {
    type Error = MetricsError;

    fn try_from(raw: Option<pb::MetricFilter>) -> Result<Self, MetricsError> {
        let filter = Filter::try_from(raw)?;
        let span = filter.to - domain::iso_week_start(filter.from);
        let weeks = (span + WEEK - 1) / WEEK;
        if weeks > MAX_TREND_WEEKS {
            return Err(MetricsError::invalid(
                "filter.window",
                format!("spans {weeks} weeks; a trend covers at most {MAX_TREND_WEEKS}"),
            ));
        }
        Ok(TrendFilter(filter))
    }
}

/// A request for a page of the audit trail.
pub struct AuditRequest {
    /// What to list.
    pub query: AuditQuery,
    /// Which page.
    pub page: Page,
}

impl TryFrom<pb::ListAuditEventsRequest> for AuditRequest {
    type Error = MetricsError;

    fn try_from(request: pb::ListAuditEventsRequest) -> Result<Self, MetricsError> {
        let window = request.window.unwrap_or_default();
        let bound = |ts: Option<&prost_types::Timestamp>, name: &str, default: Micros| match ts {
            None => Ok(default),
            Some(ts) => from_timestamp(ts)
                .map_err(|e| MetricsError::invalid(format!("window.{name}"), e.to_string())),
        };
        #[allow(deprecated)]
        let legacy = request.kind;
        let kind = match EventKind::try_from(request.event_kind) {
            Err(_) => {
                return Err(MetricsError::invalid(
                    "event_kind",
                    format!("unknown value {}", request.event_kind),
                ));
            }
            Ok(EventKind::Unspecified) if legacy.is_empty() => None,
            Ok(EventKind::Unspecified) => Some(EventKind::from_key(&legacy).ok_or_else(|| {
                MetricsError::invalid("kind", "not a known event kind; see EventKind")
            })?),
            Ok(kind) => Some(kind),
        };
        let query = AuditQuery {
            test_id: request.test_id,
            technique_id: request.technique_id,
            kind: kind.and_then(EventKind::key).unwrap_or("").to_owned(),
            from: bound(window.from.as_ref(), "from", Micros::MIN)?,
            to: bound(window.to.as_ref(), "to", Micros::MAX)?,
        };
        let filters = format!(
            "{}|{}|{}|{:?}|{:?}",
            query.test_id, query.technique_id, query.kind, query.from, query.to
        );
        let page = Page::parse(
            request.page_size,
            &request.page_token,
            100,
            &filters,
            AUDIT_KEY_LEN,
        )?;
        Ok(AuditRequest { query, page })
    }
}

impl From<DurationStats> for pb::DurationStats {
    fn from(stats: DurationStats) -> Self {
        pb::DurationStats {
            count: stats.count,
            mean_seconds: stats.mean,
            p50_seconds: stats.p50,
            p90_seconds: stats.p90,
        }
    }
}

impl From<Rejections> for pb::GetRejectionRatesResponse {
    fn from(c: Rejections) -> Self {
        pb::GetRejectionRatesResponse {
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
}

impl From<Week> for pb::WeekPoint {
    fn from(week: Week) -> Self {
        use chrono::Datelike;
        let iso = week.start.datetime().iso_week();
        pb::WeekPoint {
            week_start: Some(timestamp(week.start)),
            iso_week: format!("{}-W{:02}", iso.year(), iso.week()),
            validated: week.validated,
            cumulative_validated: week.cumulative_validated,
            detection_rate: domain::rate(week.detections, week.validated),
            mttd: Some(week.mttd.into()),
        }
    }
}

/// An event of the audit trail on the wire.
pub fn event_pb(event: StoredEvent) -> Event {
    let attributes: HashMap<String, String> =
        serde_json::from_str(&event.attributes).unwrap_or_default();
    let kind = EventKind::from_key(&event.kind).unwrap_or(EventKind::Unspecified);
    #[allow(deprecated)]
    Event {
        event_id: event.event_id,
        kind: event.kind,
        event_kind: kind as i32,
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
