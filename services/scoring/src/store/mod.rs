//! All SQL of the scoring service: the generations that keep every
//! replica's score cache coherent, and snapshots with their per-technique
//! rows; the change feed's in [`feed`].

pub mod feed;

use std::collections::BTreeMap;

use purple_runtime::{Database, paging::Page, time::Micros};
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use crate::domain::{Scored, Status};

/// One invalidation: the next generation, then the techniques stamped with
/// it. Every invalidation takes the one generation row first, so two never
/// wait on each other's technique rows (no deadlock).
const BUMP_GENERATION: &str = "
    UPDATE cache_generation SET generation = generation + 1 WHERE cache_key = 'scores'
    RETURNING generation";
/// `$3` 1 when the techniques' tests changed (else only their catalogue
/// side did): migration 0006.
const STAMP_TECHNIQUES: &str = "
    INSERT INTO technique_generations (technique_id, generation, tests_generation, tests_kept_generation)
    SELECT value, $2, CASE WHEN $3 = 1 THEN $2 ELSE 0 END, CASE WHEN $3 = 1 THEN 0 ELSE $2 END
    FROM json_each($1) WHERE true
    ON CONFLICT (technique_id) DO UPDATE SET generation = excluded.generation,
        tests_generation = CASE WHEN $3 = 1 THEN excluded.generation
                                ELSE technique_generations.tests_generation END,
        tests_kept_generation = CASE WHEN $3 = 1 THEN technique_generations.tests_kept_generation
                                     ELSE excluded.generation END";
const BUMP_CATALOGUE: &str =
    "UPDATE cache_generation SET generation = generation + 1 WHERE cache_key = 'catalogue'";
const GENERATIONS: &str = "
    SELECT MAX(CASE WHEN cache_key = 'scores' THEN generation END),
           MAX(CASE WHEN cache_key = 'catalogue' THEN generation END)
    FROM cache_generation";
/// Each technique stamped since `$1`, and 1 when its tests changed since
/// (a stamp by an older binary counts as a test change).
const CHANGED_SINCE: &str = "
    SELECT technique_id,
           CAST(CASE WHEN tests_generation > $1 OR tests_kept_generation <> generation THEN 1 ELSE 0 END
                AS BIGINT)
    FROM technique_generations WHERE generation > $1 ORDER BY technique_id";

const INSERT_SNAPSHOT: &str = "
    INSERT INTO snapshots (snapshot_id, label, as_of, organization_score, technique_count, status_counts, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_SNAPSHOT_SCORES: &str = "
    INSERT INTO snapshot_scores (snapshot_id, technique_id, score, status, payload)
    SELECT $1, json_extract(value, '$.technique_id'), CAST(json_extract(value, '$.score') AS DOUBLE PRECISION),
           json_extract(value, '$.status'), json_extract(value, '$.payload')
    FROM json_each($2)";
macro_rules! snapshot_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT snapshot_id, label, as_of, organization_score, technique_count, status_counts, created_at ",
            "FROM snapshots ", $($rest),*
        )
    };
}
/// Keyset page: `$2` 1 when the page starts after (`$3` created_at, `$4`
/// snapshot id).
const LIST_SNAPSHOTS: &str = snapshot_select!(
    "WHERE ($2 = 0 OR created_at < $3 OR (created_at = $3 AND snapshot_id < $4)) ",
    "ORDER BY created_at DESC, snapshot_id DESC LIMIT $1"
);
const SNAPSHOTS_BY_IDS: &str =
    snapshot_select!("WHERE snapshot_id IN (SELECT value FROM json_each($1))");
const SNAPSHOT_SCORES: &str =
    "SELECT payload FROM snapshot_scores WHERE snapshot_id = $1 ORDER BY technique_id";
/// Both snapshots' rows side by side, technique by technique.
const COMPARE: &str = "
    SELECT ids.technique_id, b.score, b.status, t.score, t.status
    FROM (SELECT DISTINCT technique_id FROM snapshot_scores WHERE snapshot_id IN ($1, $2)) ids
    LEFT JOIN snapshot_scores b ON b.snapshot_id = $1 AND b.technique_id = ids.technique_id
    LEFT JOIN snapshot_scores t ON t.snapshot_id = $2 AND t.technique_id = ids.technique_id
    ORDER BY ids.technique_id";

/// A snapshot's header.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotRow {
    pub snapshot_id: String,
    pub label: String,
    pub as_of: Micros,
    pub organization_score: f64,
    pub technique_count: i64,
    pub status_counts: String,
    pub created_at: Micros,
}

fn snapshot_row(row: &AnyRow) -> Result<SnapshotRow, sqlx::Error> {
    Ok(SnapshotRow {
        snapshot_id: row.try_get(0)?,
        label: row.try_get(1)?,
        as_of: row.try_get(2)?,
        organization_score: row.try_get(3)?,
        technique_count: row.try_get(4)?,
        status_counts: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

/// One technique in two snapshots: (id, base score and status, target).
pub type Compared = (String, Option<(f64, Status)>, Option<(f64, Status)>);

#[derive(Serialize)]
struct SnapshotScoreRow<'a> {
    technique_id: &'a str,
    score: f64,
    status: String,
    payload: String,
}

fn decode<T: serde::de::DeserializeOwned>(payload: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(payload).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Scoring's SQL.
#[derive(Clone, Debug)]
pub struct ScoreStore {
    db: Database,
}

impl ScoreStore {
    /// The store over the scoring database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Records an invalidation of `ids` in one transaction (two
    /// statements; three when the catalogue changed too). `tests`: their
    /// tests changed (every invalidation but ingest's).
    pub async fn invalidate(
        &self,
        ids: &[String],
        catalogue: bool,
        tests: bool,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let generation: i64 = self
            .db
            .stmt(BUMP_GENERATION)
            .fetch_one(&mut tx)
            .await?
            .try_get(0)?;
        self.db
            .stmt(STAMP_TECHNIQUES)
            .bind_ids(ids)
            .bind(generation)
            .bind(i64::from(tests))
            .execute(&mut tx)
            .await?;
        if catalogue {
            self.db.stmt(BUMP_CATALOGUE).execute(&mut tx).await?;
        }
        tx.commit().await
    }

    /// The current generations: (scores, catalogue).
    pub async fn generations(&self) -> Result<(i64, i64), sqlx::Error> {
        let row = self.db.stmt(GENERATIONS).fetch_one(self.db.pool()).await?;
        Ok((
            row.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
            row.try_get::<Option<i64>, _>(1)?.unwrap_or(0),
        ))
    }

    /// The techniques invalidated after generation `seen`, each with
    /// whether its tests changed since.
    pub async fn changed_since(&self, seen: i64) -> Result<Vec<(String, bool)>, sqlx::Error> {
        self.db
            .stmt(CHANGED_SINCE)
            .bind(seen)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get::<i64, _>(1)? == 1)))
            .collect()
    }

    /// Stores a snapshot and its rows in one transaction (two statements).
    pub async fn insert_snapshot(
        &self,
        snapshot: &SnapshotRow,
        scores: &[Scored],
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<SnapshotScoreRow> = scores
            .iter()
            .map(|s| SnapshotScoreRow {
                technique_id: &s.technique_id,
                score: s.score,
                status: s.status.key().to_owned(),
                payload: serde_json::to_string(s).expect("scores serialize"),
            })
            .collect();
        let mut tx = self.db.begin().await?;
        self.db
            .stmt(INSERT_SNAPSHOT)
            .bind(snapshot.snapshot_id.clone())
            .bind(snapshot.label.clone())
            .bind(snapshot.as_of)
            .bind(snapshot.organization_score)
            .bind(snapshot.technique_count)
            .bind(snapshot.status_counts.clone())
            .bind(snapshot.created_at)
            .execute(&mut tx)
            .await?;
        if !rows.is_empty() {
            self.db
                .stmt(INSERT_SNAPSHOT_SCORES)
                .bind(snapshot.snapshot_id.clone())
                .bind_rows(&rows)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await
    }

    /// A page of snapshots, newest first.
    pub async fn list_snapshots(&self, page: &Page) -> Result<Vec<SnapshotRow>, sqlx::Error> {
        self.db
            .stmt(LIST_SNAPSHOTS)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(snapshot_row)
            .collect()
    }

    /// Snapshot headers by id.
    pub async fn snapshots(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, SnapshotRow>, sqlx::Error> {
        self.db
            .stmt(SNAPSHOTS_BY_IDS)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| snapshot_row(row).map(|s| (s.snapshot_id.clone(), s)))
            .collect()
    }

    /// A snapshot's technique rows.
    pub async fn snapshot_scores(&self, id: &str) -> Result<Vec<Scored>, sqlx::Error> {
        let rows = self
            .db
            .stmt(SNAPSHOT_SCORES)
            .bind(id.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| decode(&row.try_get::<String, _>(0)?))
            .collect()
    }

    /// Two snapshots technique by technique, in one statement.
    pub async fn compare(&self, base: &str, target: &str) -> Result<Vec<Compared>, sqlx::Error> {
        let rows = self
            .db
            .stmt(COMPARE)
            .bind(base.to_owned())
            .bind(target.to_owned())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                let side = |score: usize| -> Result<Option<(f64, Status)>, sqlx::Error> {
                    let s: Option<f64> = row.try_get(score)?;
                    let status: Option<String> = row.try_get(score + 1)?;
                    Ok(s.zip(status.as_deref().and_then(Status::from_key)))
                };
                Ok((row.try_get(0)?, side(1)?, side(3)?))
            })
            .collect()
    }
}
