//! The change feed's SQL: the feed's position, the last published state of
//! every technique, the numbered changes and the regressions campaigns has
//! not yet acknowledged. A feed pass writes in one transaction that first
//! moves the feed row's version (compare-and-set), so when several replicas
//! run the same pass one writes and the others find the version moved and
//! write nothing.

use std::collections::BTreeMap;

use purple_runtime::time::Micros;
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::ScoreStore;
use crate::domain::Status;

const FEED_STATE: &str =
    "SELECT version, generation, last_seq, swept_at FROM feed_state WHERE feed_key = 'scores'";
const ADVANCE_FEED: &str = "
    UPDATE feed_state SET version = version + 1, generation = $2, last_seq = $3, swept_at = $4
    WHERE feed_key = 'scores' AND version = $1";
const STATES: &str = "SELECT technique_id, score, status FROM score_states";
const UPSERT_STATES: &str = "
    INSERT INTO score_states (technique_id, score, status, observed_at)
    SELECT json_extract(value, '$.technique_id'), CAST(json_extract(value, '$.score') AS DOUBLE PRECISION),
           json_extract(value, '$.status'), $2
    FROM json_each($1) WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET score = excluded.score, status = excluded.status,
                                             observed_at = excluded.observed_at";
const INSERT_CHANGES: &str = "
    INSERT INTO score_changes (seq, kind, technique_id, old_score, new_score, old_status, new_status, observed_at, notified)
    SELECT CAST(json_extract(value, '$.seq') AS BIGINT), json_extract(value, '$.kind'),
           json_extract(value, '$.technique_id'),
           CAST(json_extract(value, '$.old_score') AS DOUBLE PRECISION),
           CAST(json_extract(value, '$.new_score') AS DOUBLE PRECISION),
           json_extract(value, '$.old_status'), json_extract(value, '$.new_status'), $2,
           CASE WHEN json_extract(value, '$.kind') = 'regression' THEN 0 ELSE 1 END
    FROM json_each($1)";
macro_rules! change_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT seq, kind, technique_id, old_score, new_score, old_status, new_status, observed_at ",
            "FROM score_changes ", $($rest),*
        )
    };
}
const CHANGES_AFTER: &str = change_select!("WHERE seq > $1 ORDER BY seq LIMIT $2");
const PENDING_REGRESSIONS: &str = change_select!("WHERE notified = 0 ORDER BY seq LIMIT $1");
const MARK_NOTIFIED: &str = "
    UPDATE score_changes SET notified = 1
    WHERE seq IN (SELECT CAST(value AS BIGINT) FROM json_each($1))";
/// Each technique's status in the latest snapshot, with its label.
const LATEST_SNAPSHOT_STATUSES: &str = "
    SELECT ss.technique_id, ss.status, s.label
    FROM snapshots s JOIN snapshot_scores ss ON ss.snapshot_id = s.snapshot_id
    WHERE s.snapshot_id = (SELECT snapshot_id FROM snapshots
                           ORDER BY created_at DESC, snapshot_id DESC LIMIT 1)";

/// Where the feed stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Moves on every pass that wrote.
    pub version: i64,
    /// The score generation the last pass diffed up to.
    pub generation: i64,
    /// The last change's number.
    pub last_seq: i64,
    /// When the last full sweep ran.
    pub swept_at: Micros,
}

/// The kind of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Technique,
    Regression,
    Organization,
}

impl ChangeKind {
    fn from_key(key: &str) -> Option<Self> {
        match key {
            "technique" => Some(Self::Technique),
            "regression" => Some(Self::Regression),
            "organization" => Some(Self::Organization),
            _ => None,
        }
    }
}

/// One numbered change. The organization has no status ("" stored).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeRow {
    pub seq: i64,
    pub kind: ChangeKind,
    pub technique_id: String,
    pub old_score: f64,
    pub new_score: f64,
    #[serde(serialize_with = "status_key")]
    pub old_status: Option<Status>,
    #[serde(serialize_with = "status_key")]
    pub new_status: Option<Status>,
    #[serde(skip)]
    pub observed_at: Micros,
}

fn status_key<S: serde::Serializer>(status: &Option<Status>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(status.map_or("", Status::key))
}

/// A published state: the rounded score and the status (None for the
/// organization).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateRow {
    pub technique_id: String,
    pub score: f64,
    #[serde(serialize_with = "status_key")]
    pub status: Option<Status>,
}

/// What one feed pass writes.
pub struct FeedWrite<'a> {
    pub seen: FeedState,
    pub generation: i64,
    pub swept_at: Micros,
    pub states: &'a [StateRow],
    pub changes: &'a [ChangeRow],
    pub at: Micros,
}

fn change_row(row: &AnyRow) -> Result<ChangeRow, sqlx::Error> {
    let kind: String = row.try_get(1)?;
    let status = |i: usize| -> Result<Option<Status>, sqlx::Error> {
        Ok(Status::from_key(&row.try_get::<String, _>(i)?))
    };
    Ok(ChangeRow {
        seq: row.try_get(0)?,
        kind: ChangeKind::from_key(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown change kind {kind:?}").into()))?,
        technique_id: row.try_get(2)?,
        old_score: row.try_get(3)?,
        new_score: row.try_get(4)?,
        old_status: status(5)?,
        new_status: status(6)?,
        observed_at: row.try_get(7)?,
    })
}

impl ScoreStore {
    /// The feed's position.
    pub async fn feed_state(&self) -> Result<FeedState, sqlx::Error> {
        let row = self.db.stmt(FEED_STATE).fetch_one(self.db.pool()).await?;
        Ok(FeedState {
            version: row.try_get(0)?,
            generation: row.try_get(1)?,
            last_seq: row.try_get(2)?,
            swept_at: row.try_get(3)?,
        })
    }

    /// Every published state, by technique ('' for the organization).
    pub async fn score_states(&self) -> Result<BTreeMap<String, StateRow>, sqlx::Error> {
        self.db
            .stmt(STATES)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                Ok((
                    id.clone(),
                    StateRow {
                        technique_id: id,
                        score: row.try_get(1)?,
                        status: Status::from_key(&row.try_get::<String, _>(2)?),
                    },
                ))
            })
            .collect()
    }

    /// Writes a pass (at most three statements in one transaction) unless
    /// another replica moved the feed since `write.seen`: then nothing is
    /// written and false returned.
    pub async fn write_feed(&self, write: FeedWrite<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let last_seq = write.changes.last().map_or(write.seen.last_seq, |c| c.seq);
        let moved = self
            .db
            .stmt(ADVANCE_FEED)
            .bind(write.seen.version)
            .bind(write.generation)
            .bind(last_seq)
            .bind(write.swept_at)
            .execute(&mut tx)
            .await?
            .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if !write.states.is_empty() {
            self.db
                .stmt(UPSERT_STATES)
                .bind_rows(write.states)
                .bind(write.at)
                .execute(&mut tx)
                .await?;
        }
        if !write.changes.is_empty() {
            self.db
                .stmt(INSERT_CHANGES)
                .bind_rows(write.changes)
                .bind(write.at)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` changes after `seq`, in order.
    pub async fn changes_after(&self, seq: i64, limit: i64) -> Result<Vec<ChangeRow>, sqlx::Error> {
        self.db
            .stmt(CHANGES_AFTER)
            .bind(seq)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(change_row)
            .collect()
    }

    /// Regressions campaigns has not acknowledged, oldest first.
    pub async fn pending_regressions(&self, limit: i64) -> Result<Vec<ChangeRow>, sqlx::Error> {
        self.db
            .stmt(PENDING_REGRESSIONS)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(change_row)
            .collect()
    }

    /// Marks regressions acknowledged.
    pub async fn mark_notified(&self, seqs: &[i64]) -> Result<(), sqlx::Error> {
        if seqs.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = seqs.iter().map(i64::to_string).collect();
        self.db
            .stmt(MARK_NOTIFIED)
            .bind_ids(&ids)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Each technique's status in the latest snapshot and its label (empty
    /// when there is no snapshot).
    pub async fn latest_snapshot_statuses(
        &self,
    ) -> Result<BTreeMap<String, (Status, String)>, sqlx::Error> {
        let rows = self
            .db
            .stmt(LATEST_SNAPSHOT_STATUSES)
            .fetch_all(self.db.pool())
            .await?;
        let mut out = BTreeMap::new();
        for row in &rows {
            if let Some(status) = Status::from_key(&row.try_get::<String, _>(1)?) {
                out.insert(row.try_get(0)?, (status, row.try_get(2)?));
            }
        }
        Ok(out)
    }
}
