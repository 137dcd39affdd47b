//! The transactional outbox: events written in the transaction of the
//! change they record, read back in order by the relay, and marked
//! delivered per receiver once acknowledged.

use std::collections::BTreeMap;

use purple_api::common::v1::{EventKind, Outcome};
use purple_runtime::{WriteTx, db::Stmt, time::Micros};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::CampaignStore;
use crate::domain::Event;

const INSERT: &str = "
    INSERT INTO outbox (event_id, technique_id, payload, created_at)
    SELECT json_extract(value, '$.event_id'), json_extract(value, '$.technique_id'),
           json_extract(value, '$.payload'), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ORDER BY CAST(json_extract(value, '$.position') AS BIGINT)
    ON CONFLICT (event_id) DO NOTHING";

const PENDING_METRICS: &str = "
    SELECT event_id, payload FROM outbox WHERE metrics_delivered_at IS NULL ORDER BY seq LIMIT $1";
const PENDING_SCORING: &str = "
    SELECT event_id, technique_id FROM outbox WHERE scoring_delivered_at IS NULL ORDER BY seq LIMIT $1";
/// Per receiver, the undelivered events and the oldest one's instant (the
/// pending indexes answer both).
const BACKLOG: &str = "
    SELECT 'metrics', CAST(COUNT(*) AS BIGINT), MIN(created_at) FROM outbox WHERE metrics_delivered_at IS NULL
    UNION ALL
    SELECT 'scoring', CAST(COUNT(*) AS BIGINT), MIN(created_at) FROM outbox WHERE scoring_delivered_at IS NULL";
const MARK_METRICS: &str = "
    UPDATE outbox SET metrics_delivered_at = $2 WHERE event_id IN (SELECT value FROM json_each($1))";
const MARK_SCORING: &str = "
    UPDATE outbox SET scoring_delivered_at = $2 WHERE event_id IN (SELECT value FROM json_each($1))";

/// Sets an event aside for one receiver: recorded as a dead letter and
/// marked delivered to that receiver, so the relay moves past it.
const DEAD_LETTER: &str = "
    INSERT INTO dead_letters (event_id, receiver, reason, dead_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (event_id, receiver) DO NOTHING";
const MARK_METRICS_ONE: &str = "UPDATE outbox SET metrics_delivered_at = $2 WHERE event_id = $1";
const MARK_SCORING_ONE: &str = "UPDATE outbox SET scoring_delivered_at = $2 WHERE event_id = $1";

/// Keyset page: `$2` 1 when the page starts after (`$3` dead_at, `$4`
/// event id), newest first.
const LIST_DEAD_LETTERS: &str = "
    SELECT d.event_id, d.receiver, d.reason, d.dead_at, o.payload
    FROM dead_letters d LEFT JOIN outbox o ON o.event_id = d.event_id
    WHERE ($2 = 0 OR d.dead_at < $3 OR (d.dead_at = $3 AND d.event_id < $4))
    ORDER BY d.dead_at DESC, d.event_id DESC LIMIT $1";

/// An event a receiver refused for good.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub event_id: String,
    pub receiver: String,
    pub reason: String,
    pub dead_at: Micros,
    /// The event, while the outbox still holds it.
    pub event: Option<Event>,
}

/// An event's payload as the outbox stores it: kinds and outcomes as
/// their lower-case names, so rows written by any release read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Payload {
    event_id: String,
    kind: String,
    occurred_at: Micros,
    test_id: String,
    technique_id: String,
    campaign_id: String,
    remediation_id: String,
    outcome: Option<String>,
    side: String,
    actor_id: String,
    attributes: BTreeMap<String, String>,
}

impl From<&Event> for Payload {
    fn from(e: &Event) -> Self {
        Payload {
            event_id: e.event_id.clone(),
            kind: e.kind.key().unwrap_or_default().to_owned(),
            occurred_at: e.occurred_at,
            test_id: e.test_id.clone(),
            technique_id: e.technique_id.clone(),
            campaign_id: e.campaign_id.clone(),
            remediation_id: e.remediation_id.clone(),
            outcome: e.outcome.and_then(Outcome::key).map(str::to_owned),
            side: e.side.clone(),
            actor_id: e.actor_id.clone(),
            attributes: e.attributes.clone(),
        }
    }
}

impl Payload {
    fn event(self) -> Result<Event, sqlx::Error> {
        Ok(Event {
            kind: EventKind::from_key(&self.kind).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown event kind {:?}", self.kind).into())
            })?,
            outcome: self.outcome.as_deref().and_then(Outcome::from_key),
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            test_id: self.test_id,
            technique_id: self.technique_id,
            campaign_id: self.campaign_id,
            remediation_id: self.remediation_id,
            side: self.side,
            actor_id: self.actor_id,
            attributes: self.attributes,
        })
    }
}

#[derive(Serialize)]
struct Row_<'a> {
    position: usize,
    event_id: &'a str,
    technique_id: &'a str,
    payload: String,
    created_at: Micros,
}

impl CampaignStore {
    /// Writes events into the outbox, in order, in one statement; an event
    /// already there (a history imported again) is left as it is.
    pub async fn enqueue(
        &self,
        tx: &mut WriteTx,
        events: &[Event],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        if let Some(write) = self.enqueue_write(events, now) {
            write.execute(tx).await?;
        }
        Ok(())
    }

    /// The statement of [`CampaignStore::enqueue`], for a transaction to
    /// run with its commit ([`WriteTx::commit_with`]); none for no event.
    pub fn enqueue_write(&self, events: &[Event], now: Micros) -> Option<Stmt> {
        if events.is_empty() {
            return None;
        }
        let rows: Vec<Row_> = events
            .iter()
            .enumerate()
            .map(|(position, e)| Row_ {
                position,
                event_id: &e.event_id,
                technique_id: &e.technique_id,
                payload: serde_json::to_string(&Payload::from(e)).expect("events serialize"),
                created_at: now,
            })
            .collect();
        Some(self.db.stmt(INSERT).bind_rows(&rows))
    }

    /// The oldest events metrics has not acknowledged.
    pub async fn pending_for_metrics(&self, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
        self.db
            .stmt(PENDING_METRICS)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                let payload: String = row.try_get(1)?;
                serde_json::from_str::<Payload>(&payload)
                    .map_err(|e| sqlx::Error::Decode(e.into()))?
                    .event()
            })
            .collect()
    }

    /// Per receiver, how many events wait and since when.
    pub async fn backlog(&self) -> Result<Vec<(String, i64, Option<Micros>)>, sqlx::Error> {
        self.db
            .stmt(BACKLOG)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// The oldest (event id, technique id) scoring has not acknowledged.
    pub async fn pending_for_scoring(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        self.db
            .stmt(PENDING_SCORING)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Sets an event aside for `receiver` (one transaction).
    pub async fn dead_letter(
        &self,
        event_id: &str,
        receiver: &str,
        reason: &str,
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        let mark = match receiver {
            "metrics" => MARK_METRICS_ONE,
            _ => MARK_SCORING_ONE,
        };
        let mut tx = self.db.begin().await?;
        self.db
            .stmt(DEAD_LETTER)
            .bind(event_id.to_owned())
            .bind(receiver.to_owned())
            .bind(reason.chars().take(1_000).collect::<String>())
            .bind(now)
            .execute(&mut tx)
            .await?;
        self.db
            .stmt(mark)
            .bind(event_id.to_owned())
            .bind(now)
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    /// A page of dead letters, newest first.
    pub async fn dead_letters(
        &self,
        page: &purple_runtime::paging::Page,
    ) -> Result<Vec<DeadLetter>, sqlx::Error> {
        self.db
            .stmt(LIST_DEAD_LETTERS)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                let payload: Option<String> = row.try_get(4)?;
                Ok(DeadLetter {
                    event_id: row.try_get(0)?,
                    receiver: row.try_get(1)?,
                    reason: row.try_get(2)?,
                    dead_at: row.try_get(3)?,
                    event: payload
                        .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
                        .and_then(|p| p.event().ok()),
                })
            })
            .collect()
    }

    /// Marks events delivered to metrics.
    pub async fn mark_metrics_delivered(
        &self,
        event_ids: &[String],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(MARK_METRICS)
            .bind_ids(event_ids)
            .bind(now)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Marks events delivered to scoring.
    pub async fn mark_scoring_delivered(
        &self,
        event_ids: &[String],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(MARK_SCORING)
            .bind_ids(event_ids)
            .bind(now)
            .write(&self.db)
            .await?;
        Ok(())
    }
}
