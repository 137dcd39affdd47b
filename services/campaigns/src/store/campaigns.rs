//! Campaigns: creation in batches, reads with their test counts, progress
//! of many campaigns in one statement, schedules and what is due.

use std::collections::BTreeMap;

use purple_runtime::{WriteTx, db::PerBackend, packed, paging::Page, time::Micros};
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{CampaignStore, test_columns, test_row};
use crate::domain::TestRow;

const INSERT: &str = "
    INSERT INTO campaigns (campaign_id, name, description, threat_actor_id, cloned_from, created_by,
                           created_at, interval_seconds, cron, next_run_at)
    SELECT json_extract(value, '$.campaign_id'), json_extract(value, '$.name'),
           json_extract(value, '$.description'), json_extract(value, '$.threat_actor_id'),
           json_extract(value, '$.cloned_from'), json_extract(value, '$.created_by'),
           CAST(json_extract(value, '$.created_at') AS BIGINT), NULL, NULL, NULL
    FROM json_each($1)";

macro_rules! campaign_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT c.campaign_id, c.name, c.description, c.threat_actor_id, c.cloned_from, c.created_by, ",
            "c.created_at, c.interval_seconds, c.cron, c.next_run_at, ",
            "(SELECT COUNT(*) FROM tests t WHERE t.campaign_id = c.campaign_id) FROM campaigns c ",
            $($rest),*
        )
    };
}

const BY_IDS: &str = campaign_select!("WHERE c.campaign_id IN (SELECT value FROM json_each($1))");
/// Keyset page: `$2` 1 when the page starts after (`$3` created_at, `$4`
/// id).
const LIST: &str = campaign_select!(
    "WHERE ($2 = 0 OR c.created_at < $3 OR (c.created_at = $3 AND c.campaign_id < $4)) ",
    "ORDER BY c.created_at DESC, c.campaign_id DESC LIMIT $1"
);
const DUE: &str = campaign_select!(
    "WHERE c.next_run_at IS NOT NULL AND c.next_run_at <= $1 ORDER BY c.next_run_at"
);

/// Test counts per campaign, state and outcome; a campaign without tests
/// has one row of NULL state. Counts `state` (never NULL on a test) so
/// the index of migration 0015 answers alone, in its order: no table read
/// and no sort. Packed ([`packed!`]): ~6 rows a campaign.
macro_rules! progress {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT ",
            $open,
            "campaign_id, state, outcome, n",
            $close,
            " FROM (
                SELECT c.campaign_id, t.state, t.outcome, COUNT(t.state) AS n
                FROM campaigns c LEFT JOIN tests t ON t.campaign_id = c.campaign_id
                WHERE c.campaign_id IN (SELECT value FROM json_each($1))
                GROUP BY c.campaign_id, t.state, t.outcome
             ) counted"
        )
    };
}
const PROGRESS: PerBackend = packed!(progress);

const TESTS_OF: &str = concat!(
    "SELECT ", test_columns!(), " FROM tests t
     WHERE t.campaign_id IN (SELECT value FROM json_each($1)) ORDER BY t.campaign_id, t.created_at, t.test_id"
);

const SET_SCHEDULE: &str = "
    UPDATE campaigns SET interval_seconds = $2, cron = $3, next_run_at = $4 WHERE campaign_id = $1";

/// Moves each due campaign's next run, in one statement.
const ADVANCE: &str = "
    UPDATE campaigns SET next_run_at = (
        SELECT CAST(json_extract(n.value, '$.next_run_at') AS BIGINT) FROM json_each($1) n
        WHERE json_extract(n.value, '$.campaign_id') = campaigns.campaign_id)
    WHERE campaign_id IN (SELECT json_extract(value, '$.campaign_id') FROM json_each($1))";

/// A campaign.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignRow {
    pub campaign_id: String,
    pub name: String,
    pub description: String,
    pub threat_actor_id: String,
    pub cloned_from: String,
    pub created_by: String,
    pub created_at: Micros,
    #[serde(skip)]
    pub interval_seconds: Option<i64>,
    #[serde(skip)]
    pub cron: Option<String>,
    #[serde(skip)]
    pub next_run_at: Option<Micros>,
    #[serde(skip)]
    pub test_count: i64,
}

pub(crate) fn campaign_row(row: &AnyRow) -> Result<CampaignRow, sqlx::Error> {
    Ok(CampaignRow {
        campaign_id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        threat_actor_id: row.try_get(3)?,
        cloned_from: row.try_get(4)?,
        created_by: row.try_get(5)?,
        created_at: row.try_get(6)?,
        interval_seconds: row.try_get(7)?,
        cron: row.try_get(8)?,
        next_run_at: row.try_get(9)?,
        test_count: row.try_get(10)?,
    })
}

/// Counts of one campaign by (state, outcome).
pub type ProgressCounts = BTreeMap<String, Vec<(String, Option<String>, i64)>>;

#[derive(Serialize)]
struct NextRun<'a> {
    campaign_id: &'a str,
    next_run_at: Micros,
}

impl CampaignStore {
    /// Inserts campaigns in one statement.
    pub async fn insert_campaigns(
        &self,
        tx: &mut WriteTx,
        campaigns: &[CampaignRow],
    ) -> Result<(), sqlx::Error> {
        if campaigns.is_empty() {
            return Ok(());
        }
        self.db
            .stmt(INSERT)
            .bind_rows(campaigns)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Campaigns by id.
    pub async fn campaigns_by_ids(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, CampaignRow>, sqlx::Error> {
        self.db
            .stmt(BY_IDS)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| campaign_row(row).map(|c| (c.campaign_id.clone(), c)))
            .collect()
    }

    /// A page of campaigns, newest first.
    pub async fn list_campaigns(&self, page: &Page) -> Result<Vec<CampaignRow>, sqlx::Error> {
        self.db
            .stmt(LIST)
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(campaign_row)
            .collect()
    }

    /// Test counts by (state, outcome) for many campaigns at once; a
    /// campaign that exists but has no test has an empty list.
    pub async fn progress(&self, ids: &[String]) -> Result<ProgressCounts, sqlx::Error> {
        let mut out: ProgressCounts = BTreeMap::new();
        let rows = self
            .db
            .stmt_for(PROGRESS)
            .bind_ids(ids)
            .fetch_packed::<(String, Option<String>, Option<String>, i64), _>(self.db.pool())
            .await?;
        for (campaign_id, state, outcome, n) in rows {
            let entry = out.entry(campaign_id).or_default();
            if let Some(state) = state {
                entry.push((state, outcome, n));
            }
        }
        Ok(out)
    }

    /// The tests of campaigns, in creation order.
    pub async fn tests_of_campaigns(&self, ids: &[String]) -> Result<Vec<TestRow>, sqlx::Error> {
        self.db
            .stmt(TESTS_OF)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(test_row)
            .collect()
    }

    /// Sets or clears a campaign's schedule; false when it does not exist.
    pub async fn set_schedule(
        &self,
        campaign_id: &str,
        interval: Option<i64>,
        cron: Option<String>,
        next: Option<Micros>,
    ) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(SET_SCHEDULE)
            .bind(campaign_id.to_owned())
            .bind(interval)
            .bind(cron)
            .bind(next)
            .write(&self.db)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Campaigns due at `now`.
    pub async fn due_campaigns(&self, now: Micros) -> Result<Vec<CampaignRow>, sqlx::Error> {
        self.db
            .stmt(DUE)
            .bind(now)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(campaign_row)
            .collect()
    }

    /// Sets the next run of each campaign, in one statement.
    pub async fn advance(
        &self,
        tx: &mut WriteTx,
        next: &[(String, Micros)],
    ) -> Result<(), sqlx::Error> {
        if next.is_empty() {
            return Ok(());
        }
        let rows: Vec<NextRun> = next
            .iter()
            .map(|(id, at)| NextRun {
                campaign_id: id,
                next_run_at: *at,
            })
            .collect();
        self.db
            .stmt(ADVANCE)
            .bind_rows(&rows)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}
