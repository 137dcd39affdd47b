//! What each metrics RPC does, between the wire conversions and the SQL:
//! events are validated and appended (deduplicated by id), each metric is
//! one statement, the summary runs the four at once.

use std::collections::HashSet;

use purple_runtime::{
    paging::Page,
    time::{Micros, now_micros},
};

use crate::{
    domain::{self, DurationStats, Filter, RawEvent, Rejections, Week},
    error::MetricsError,
    store::{AuditQuery, EventStore, StoredEvent},
};

/// The four metrics of one window, for the summary.
#[derive(Clone)]
pub struct Summary {
    /// MTTD.
    pub mttd: DurationStats,
    /// MTTR.
    pub mttr: DurationStats,
    /// Rejection counts.
    pub rejections: Rejections,
    /// The weekly trend.
    pub weeks: Vec<Week>,
}

/// The event log and the metrics over it.
#[derive(Clone, Debug)]
pub struct EventLog {
    store: EventStore,
}

impl EventLog {
    /// The log over its store.
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    /// Validates every event, then appends them all in one statement; an
    /// event id seen before (or twice in the batch) is acknowledged, not
    /// stored again. Returns (recorded, duplicates).
    pub async fn record(&self, events: &[RawEvent<'_>]) -> Result<(u64, u64), MetricsError> {
        purple_api::batch::check_batch_len("events", events.len())?;
        let now = now_micros();
        let mut valid = Vec::with_capacity(events.len());
        let mut seen = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            let new = domain::validate_event(index, event, now)?;
            if seen.insert(new.event_id.clone()) {
                valid.push(new);
            }
        }
        let recorded = self.store.append(&valid, now).await?;
        Ok((recorded, events.len() as u64 - recorded))
    }

    /// MTTD over a window.
    pub async fn mttd(&self, filter: &Filter) -> Result<DurationStats, MetricsError> {
        Ok(self.store.mttd(filter).await?)
    }

    /// MTTR over a window.
    pub async fn mttr(&self, filter: &Filter) -> Result<DurationStats, MetricsError> {
        Ok(self.store.mttr(filter).await?)
    }

    /// Rejection counts over a window.
    pub async fn rejections(&self, filter: &Filter) -> Result<Rejections, MetricsError> {
        Ok(self.store.rejections(filter).await?)
    }

    /// The weekly trend of a window.
    pub async fn trend(&self, filter: &Filter) -> Result<Vec<Week>, MetricsError> {
        let first: Micros = domain::iso_week_start(filter.from);
        Ok(self.store.trend(filter, first).await?)
    }

    /// All four metrics of a window, computed concurrently.
    pub async fn summary(&self, filter: &Filter) -> Result<Summary, MetricsError> {
        let (mttd, mttr, rejections, weeks) = futures::try_join!(
            self.mttd(filter),
            self.mttr(filter),
            self.rejections(filter),
            self.trend(filter),
        )?;
        Ok(Summary {
            mttd,
            mttr,
            rejections,
            weeks,
        })
    }

    /// A page of the audit trail, newest first, and the next page's token.
    pub async fn audit(
        &self,
        query: &AuditQuery,
        page: &Page,
    ) -> Result<(Vec<StoredEvent>, String), MetricsError> {
        let mut events = self.store.audit(query, page).await?;
        let next = page.finish(&mut events, |e| vec![e.occurred_at.into(), e.seq.into()]);
        Ok((events, next))
    }
}
