//! Background work of the campaigns service: the outbox relay, which
//! delivers pending events in order and in batches to metrics
//! (`RecordEvents`) and their techniques to scoring
//! (`InvalidateTechniques`), marking them delivered once acknowledged and
//! backing off while a receiver is down; and the scheduler, which runs due
//! recurring campaigns. Receivers deduplicate, so a crash between delivery
//! and marking only repeats an event, never loses one.

use std::time::Duration;

use purple_api::batch::MAX_BATCH_IDS;
use purple_runtime::{instruments, time::now_micros};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    clients::PeerClients,
    schedule::Scheduler,
    store::{CampaignStore, outbox::DeadLetter},
};

/// Events per delivery batch: the receivers' batch limit.
const BATCH: i64 = MAX_BATCH_IDS as i64;
/// The longest wait between attempts at a receiver that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the relay reads from and delivers to.
#[derive(Clone, Debug)]
pub struct Relay {
    pub(crate) store: CampaignStore,
    pub(crate) peers: PeerClients,
}

/// When a receiver may be tried next, doubling the wait on each failure.
struct Backoff {
    base: Duration,
    wait: Duration,
    next: Instant,
}

impl Backoff {
    fn new(base: Duration) -> Self {
        Self {
            base,
            wait: base,
            next: Instant::now(),
        }
    }

    fn ready(&self) -> bool {
        Instant::now() >= self.next
    }

    fn succeeded(&mut self) {
        self.wait = self.base;
    }

    fn failed(&mut self) {
        self.next = Instant::now() + self.wait;
        self.wait = (self.wait * 2).min(MAX_BACKOFF);
    }
}

/// The sort key of the dead-letter list: (dead_at, event id), newest
/// first.
pub const DEAD_LETTER_KEY_LEN: usize = 2;

/// The index of the event a permanent refusal names (`events[3].kind: …`).
fn refused_event(status: &tonic::Status) -> Option<usize> {
    if status.code() != tonic::Code::InvalidArgument {
        return None;
    }
    let rest = status.message().strip_prefix("events[")?;
    rest[..rest.find(']')?].parse().ok()
}

impl Relay {
    /// A page of dead letters, newest first, and the next token.
    pub async fn dead_letters(
        &self,
        page: &purple_runtime::paging::Page,
    ) -> Result<(Vec<DeadLetter>, String), crate::error::CampaignError> {
        let mut rows = self.store.dead_letters(page).await?;
        let next = page.finish(&mut rows, |d| vec![d.dead_at.into(), (&d.event_id).into()]);
        Ok((rows, next))
    }

    /// Delivers what is pending to metrics; Ok(true) when something was
    /// sent.
    async fn deliver_metrics(&self) -> Result<bool, String> {
        let events = self
            .store
            .pending_for_metrics(BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if events.is_empty() {
            return Ok(false);
        }
        // Only a delivery is traced: the idle poll above has no span.
        let span = tracing::info_span!(
            "outbox.deliver",
            receiver = "metrics",
            events = events.len()
        );
        self.send_to_metrics(events).instrument(span).await
    }

    async fn send_to_metrics(&self, events: Vec<crate::domain::Event>) -> Result<bool, String> {
        let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
        if let Err(e) = self.peers.record_events(events.clone()).await {
            // Metrics checks every event of a batch before it stores any,
            // and names the first it refuses (`events[i].field: why`): set
            // that one aside and carry on with the rest.
            if let Some(refused) = refused_event(&e.status).and_then(|i| events.get(i)) {
                let reason = e.status.message().to_owned();
                tracing::warn!(
                    event_id = %refused.event_id,
                    kind = refused.kind.key().unwrap_or(""),
                    %reason,
                    "metrics refused an event for good; set aside as a dead letter"
                );
                self.store
                    .dead_letter(&refused.event_id, "metrics", &reason, now_micros())
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(true);
            }
            return Err(format!(
                "metrics: {:?} {}",
                e.status.code(),
                e.status.message()
            ));
        }
        self.store
            .mark_metrics_delivered(&ids, now_micros())
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Delivers pending technique invalidations to scoring.
    async fn deliver_scoring(&self) -> Result<bool, String> {
        let pending = self
            .store
            .pending_for_scoring(BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok(false);
        }
        let span = tracing::info_span!(
            "outbox.deliver",
            receiver = "scoring",
            events = pending.len()
        );
        self.send_to_scoring(pending).instrument(span).await
    }

    async fn send_to_scoring(&self, pending: Vec<(String, String)>) -> Result<bool, String> {
        let techniques: Vec<String> = pending
            .iter()
            .map(|(_, t)| t.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.peers
            .invalidate(&techniques)
            .await
            .map_err(|e| format!("scoring: {:?} {}", e.status.code(), e.status.message()))?;
        let ids: Vec<String> = pending.into_iter().map(|(id, _)| id).collect();
        self.store
            .mark_scoring_delivered(&ids, now_micros())
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

impl Relay {
    /// Refreshes the outbox gauges (`purple.outbox.backlog`, `oldest_age`).
    async fn measure_backlog(&self) {
        match self.store.backlog().await {
            Ok(rows) => {
                for (receiver, count, oldest) in rows {
                    let receiver = if receiver == "metrics" {
                        "metrics"
                    } else {
                        "scoring"
                    };
                    let count = u64::try_from(count).unwrap_or(0);
                    instruments::outbox_backlog(receiver, count, oldest);
                }
            }
            Err(err) => tracing::debug!(%err, "measuring the outbox backlog failed"),
        }
    }
}

/// Runs the relay until shutdown.
pub async fn run_relay(relay: Relay, interval: Duration, shutdown: CancellationToken) {
    let mut metrics = Backoff::new(interval);
    let mut scoring = Backoff::new(interval);
    let mut measured = Instant::now() - BACKLOG_EVERY;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if measured.elapsed() >= BACKLOG_EVERY {
            relay.measure_backlog().await;
            measured = Instant::now();
        }
        for (backoff, receiver) in [(&mut metrics, "metrics"), (&mut scoring, "scoring")] {
            // Drain while batches keep coming, in order; stop at the first
            // failure so nothing is delivered ahead of what failed.
            while backoff.ready() && !shutdown.is_cancelled() {
                // Measured between batches too: a drain after an import
                // lasts minutes, when the gauges matter most.
                if measured.elapsed() >= BACKLOG_EVERY {
                    relay.measure_backlog().await;
                    measured = Instant::now();
                }
                let sent = if receiver == "metrics" {
                    relay.deliver_metrics().await
                } else {
                    relay.deliver_scoring().await
                };
                match sent {
                    Ok(true) => backoff.succeeded(),
                    Ok(false) => break,
                    Err(err) => {
                        backoff.failed();
                        tracing::warn!(receiver, %err, retry_in = ?backoff.wait, "outbox delivery failed");
                        break;
                    }
                }
            }
        }
    }
}

/// Runs due recurring campaigns until shutdown.
pub async fn run_scheduler(scheduler: Scheduler, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match scheduler.run_due(now_micros()).await {
            Ok((created, _)) if !created.is_empty() => {
                tracing::info!(campaigns = created.len(), "ran due campaigns");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "running due campaigns failed"),
        }
    }
}
