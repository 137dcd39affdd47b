//! The change feed (docs/design.md §4, "Change feed"): each relay
//! interval, when an invalidation moved the score generation (or a sweep
//! is due), every live technique is scored afresh and compared with the
//! state last published; status changes, score changes of the techniques
//! the invalidations named, and organization changes become numbered
//! changes, written once whatever the number of replicas (the feed row's
//! compare-and-set). `WatchScores` streams them from any cursor; each
//! regression (a status gone down) is delivered to campaigns, which tells
//! the purple leads once per regression (its key is the change's number).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use purple_runtime::{
    clients::CampaignsPeer,
    time::{Micros, now_micros},
};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    domain::{self, Scored, Status, round1},
    engine::Scorer,
    error::ScoringError,
    plan::is_regression,
    store::feed::{ChangeKind, ChangeRow, FeedState, FeedWrite, StateRow},
};

/// How often the whole board is compared even when nothing was
/// invalidated: recency decays with time, so a status can go down with no
/// event (a covered technique not validated for months).
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// The most watchers one replica serves at once.
pub const MAX_WATCHERS: usize = 256;
/// The most changes one stream message carries.
pub const BATCH: i64 = 500;

/// The feed of one replica: it runs the passes and serves the watchers.
#[derive(Clone, Debug)]
pub struct Feed {
    scorer: Scorer,
    campaigns: CampaignsPeer,
    critical_k: i64,
    /// The last change number this replica knows of; watchers wake on it.
    tip: Arc<watch::Sender<i64>>,
    watchers: Arc<Semaphore>,
    /// When this replica started: its first sweep is one period later, so
    /// a process that just started (and sees nothing happen) stays idle.
    started: Micros,
}

impl Feed {
    /// The feed over a scorer.
    pub fn new(scorer: Scorer, campaigns: CampaignsPeer, critical_k: i64) -> Self {
        Self {
            scorer,
            campaigns,
            critical_k,
            tip: Arc::new(watch::channel(0).0),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            started: now_micros(),
        }
    }

    /// One pass: compares and publishes when the generation moved or a
    /// sweep is due; returns whether regressions may await delivery.
    pub async fn pass(&self) -> Result<bool, ScoringError> {
        let store = &self.scorer.store;
        let seen = store.feed_state().await?;
        self.tip.send_if_modified(|tip| {
            let moved = *tip != seen.last_seq;
            *tip = seen.last_seq;
            moved
        });
        // The generation this replica's cache has applied (the loop syncs
        // before each pass): the invalidations up to it are in the survey.
        let (generation, _) = self.scorer.cache.generations();
        let now = now_micros();
        let sweep = now - seen.swept_at.max(self.started) >= SWEEP_EVERY.as_micros() as i64;
        if generation <= seen.generation && !sweep {
            return Ok(false);
        }
        // Work worth a trace: the survey's calls and statements in one.
        self.publish(seen, generation, sweep, now)
            .instrument(tracing::info_span!("score.feed", generation, sweep))
            .await
    }

    async fn publish(
        &self,
        seen: FeedState,
        generation: i64,
        sweep: bool,
        now: Micros,
    ) -> Result<bool, ScoringError> {
        let store = &self.scorer.store;
        let (invalidated, states, scores) = futures::try_join!(
            async {
                let changed = store.changed_since(seen.generation).await?;
                Ok::<_, ScoringError>(changed.into_iter().map(|(id, _)| id).collect::<Vec<_>>())
            },
            async { Ok(store.score_states().await?) },
            self.scorer.survey(sweep),
        )?;
        let (states_out, changes) = diff(
            &seen,
            &invalidated,
            &states,
            &scores,
            domain::organization(&scores, self.critical_k).score,
        );
        let regressions = changes.iter().any(|c| c.kind == ChangeKind::Regression);
        let wrote = store
            .write_feed(FeedWrite {
                seen,
                generation,
                swept_at: if sweep { now } else { seen.swept_at },
                states: &states_out,
                changes: &changes,
                at: now,
            })
            .await?;
        if wrote && let Some(last) = changes.last() {
            self.tip.send_replace(last.seq);
        }
        Ok(wrote && regressions)
    }

    /// Delivers the regressions campaigns has not acknowledged; false when
    /// campaigns could not be reached (retried next interval).
    pub async fn deliver(&self) -> Result<bool, ScoringError> {
        let store = &self.scorer.store;
        let pending = store.pending_regressions(1_000).await?;
        if pending.is_empty() {
            return Ok(true);
        }
        match crate::clients::notify_regressions(&self.campaigns, &pending).await {
            Ok(_) => {
                let seqs: Vec<i64> = pending.iter().map(|c| c.seq).collect();
                store.mark_notified(&seqs).await?;
                Ok(true)
            }
            Err(err) => {
                tracing::warn!(code = ?err.status.code(), message = err.status.message(), regressions = pending.len(), "campaigns was not told of regressions; retrying");
                Ok(false)
            }
        }
    }

    /// A watcher's place, or None when this replica serves its maximum.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.watchers.clone().try_acquire_owned().ok()
    }

    /// Wakes when the tip moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.tip.subscribe()
    }

    /// The store, for the watchers' reads.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }
}

/// The key a regression is notified under.
pub fn regression_key(seq: i64) -> String {
    format!("score-change-{seq}")
}

/// The states to publish and the changes to number, from the published
/// `states` and the fresh `scores`. A technique with no published state
/// (new to the catalogue, or the feed's first pass) is published quietly
/// unless an invalidation named it and it is more than untested, when it
/// is a change from nothing.
pub fn diff(
    seen: &FeedState,
    invalidated: &[String],
    states: &BTreeMap<String, StateRow>,
    scores: &[Scored],
    organization: f64,
) -> (Vec<StateRow>, Vec<ChangeRow>) {
    let named: std::collections::BTreeSet<&str> = invalidated.iter().map(String::as_str).collect();
    let (mut out, mut changes) = (Vec::new(), Vec::new());
    let mut seq = seen.last_seq;
    let mut change = |kind, id: &str, old: Option<&StateRow>, score: f64, status| {
        seq += 1;
        ChangeRow {
            seq,
            kind,
            technique_id: id.to_owned(),
            old_score: old.map_or(0.0, |o| o.score),
            new_score: score,
            old_status: old.and_then(|o| o.status),
            new_status: status,
            observed_at: Micros::EPOCH,
        }
    };
    for s in scores {
        let score = round1(s.score);
        let old = states.get(&s.technique_id);
        let status_moved = old.is_some_and(|o| o.status != Some(s.status));
        let score_moved = old.is_none_or(|o| o.score != score);
        if !status_moved && !score_moved {
            continue;
        }
        out.push(StateRow {
            technique_id: s.technique_id.clone(),
            score,
            status: Some(s.status),
        });
        let kind = match old.and_then(|o| o.status) {
            // A technique that appears untested (an import) is news to no
            // one: published quietly.
            None if s.status == Status::Untested && score == 0.0 => continue,
            Some(before) if is_regression(before, s.status) => ChangeKind::Regression,
            _ if status_moved || named.contains(s.technique_id.as_str()) => ChangeKind::Technique,
            // Drift with time alone, status unchanged: published quietly.
            _ => continue,
        };
        changes.push(change(kind, &s.technique_id, old, score, Some(s.status)));
    }
    let org = round1(organization);
    let old = states.get("");
    if old.is_none_or(|o| o.score != org) {
        out.push(StateRow {
            technique_id: String::new(),
            score: org,
            status: None,
        });
        if !changes.is_empty() || !named.is_empty() {
            changes.push(change(ChangeKind::Organization, "", old, org, None));
        }
    }
    (out, changes)
}

/// Each `interval` until shutdown, and at once when this replica records
/// an invalidation: applies the invalidations any replica recorded to this
/// replica's cache (docs/adr/0009), runs a feed pass, and delivers
/// regressions when a pass made some or a delivery failed.
pub async fn run(feed: Feed, interval: Duration, shutdown: CancellationToken) {
    let mut pending = true;
    let changed = feed.scorer.changed.clone();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = changed.notified() => {}
        }
        if let Err(err) = feed.scorer.sync().await {
            // The database is down: health says so; the TTL bounds how
            // long an entry this replica holds can be served.
            tracing::debug!(error = %err, "score cache sync failed");
            continue;
        }
        match feed.pass().await {
            Ok(more) => pending |= more,
            Err(err) => tracing::debug!(error = %err, "score feed pass failed"),
        }
        if pending {
            pending = !matches!(feed.deliver().await, Ok(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(id: &str, score: f64, status: Status) -> Scored {
        Scored::stub(id, score, status)
    }

    fn state(id: &str, score: f64, status: Status) -> (String, StateRow) {
        (
            id.into(),
            StateRow {
                technique_id: id.into(),
                score,
                status: Some(status),
            },
        )
    }

    #[test]
    fn status_moves_are_changes_drift_is_quiet_and_new_untested_techniques_are_news_to_no_one() {
        let states = BTreeMap::from([
            state("T1", 80.0, Status::Covered),
            state("T2", 50.0, Status::Partial),
            state("T3", 50.0, Status::Partial),
            state("", 40.0, Status::Untested),
        ]);
        let scores = [
            scored("T1", 60.04, Status::Partial), // regression
            scored("T2", 49.0, Status::Partial),  // drift, not named: quiet
            scored("T3", 45.0, Status::Partial),  // named: a change
            scored("T4", 0.0, Status::Untested),  // new and untested: quiet
            scored("T5", 70.0, Status::Partial),  // new, named: from nothing
        ];
        let seen = FeedState {
            last_seq: 10,
            ..FeedState::default()
        };
        let named = ["T3".to_owned(), "T4".to_owned(), "T5".to_owned()];
        let (out, changes) = diff(&seen, &named, &states, &scores, 41.0);
        let kinds: Vec<(i64, ChangeKind, &str)> = changes
            .iter()
            .map(|c| (c.seq, c.kind, c.technique_id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (11, ChangeKind::Regression, "T1"),
                (12, ChangeKind::Technique, "T3"),
                (13, ChangeKind::Technique, "T5"),
                (14, ChangeKind::Organization, ""),
            ]
        );
        assert_eq!(changes[0].new_score, 60.0, "rounded as users see it");
        assert_eq!(changes[2].old_status, None);
        // Every moved state is published, the quiet ones too.
        let published: Vec<&str> = out.iter().map(|s| s.technique_id.as_str()).collect();
        assert_eq!(published, ["T1", "T2", "T3", "T4", "T5", ""]);
    }
}
