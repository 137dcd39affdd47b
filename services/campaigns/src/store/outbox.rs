//! The transactional outbox: events written in the transaction of the
//! change they record, read back in order by the relay, and marked
//! delivered per receiver once acknowledged.

use std::collections::BTreeMap;

use purple_runtime::time::Micros;
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::CampaignStore;

const INSERT: &str = "
    INSERT INTO outbox (event_id, technique_id, payload, created_at)
    SELECT json_extract(value, '$.event_id'), json_extract(value, '$.technique_id'),
           json_extract(value, '$.payload'), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)
    ORDER BY CAST(json_extract(value, '$.position') AS BIGINT)";

const PENDING_METRICS: &str = "
    SELECT event_id, payload FROM outbox WHERE metrics_delivered_at IS NULL ORDER BY seq LIMIT $1";
const PENDING_SCORING: &str = "
    SELECT event_id, technique_id FROM outbox WHERE scoring_delivered_at IS NULL ORDER BY seq LIMIT $1";
const MARK_METRICS: &str = "
    UPDATE outbox SET metrics_delivered_at = $2 WHERE event_id IN (SELECT value FROM json_each($1))";
const MARK_SCORING: &str = "
    UPDATE outbox SET scoring_delivered_at = $2 WHERE event_id IN (SELECT value FROM json_each($1))";

/// An event as the outbox keeps it (and metrics receives it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub event_id: String,
    pub kind: String,
    pub occurred_at: Micros,
    pub test_id: String,
    pub technique_id: String,
    pub campaign_id: String,
    pub remediation_id: String,
    pub outcome: Option<String>,
    pub side: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
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
    /// Writes events into the outbox, in order, in one statement.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[OutboxEvent],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<Row_> = events
            .iter()
            .enumerate()
            .map(|(position, e)| Row_ {
                position,
                event_id: &e.event_id,
                technique_id: &e.technique_id,
                payload: serde_json::to_string(e).expect("events serialize"),
                created_at: now,
            })
            .collect();
        self.db
            .stmt(INSERT)
            .bind_rows(&rows)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The oldest events metrics has not acknowledged.
    pub async fn pending_for_metrics(&self, limit: i64) -> Result<Vec<OutboxEvent>, sqlx::Error> {
        self.db
            .stmt(PENDING_METRICS)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                let payload: String = row.try_get(1)?;
                serde_json::from_str(&payload).map_err(|e| sqlx::Error::Decode(e.into()))
            })
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
            .execute(self.db.pool())
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
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
