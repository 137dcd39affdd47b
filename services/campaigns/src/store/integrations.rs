//! The SQL of the work-tracking integrations: the integration outbox
//! (written in the transaction of the change, read in order per receiver,
//! each attempt recorded before it is made), the Jira issue of each
//! remediation and the Tempo worklog of each worklog. What a batch of rows
//! needs to know is read for the whole batch, one statement per set.

use std::collections::{BTreeMap, BTreeSet};

use purple_runtime::{WriteTx, time::Micros};
use serde::Serialize;
use sqlx::Row;

use super::CampaignStore;

const ENQUEUE: &str = "
    INSERT INTO integration_outbox (receiver, subject_id, action, payload, created_at, attempts,
                                    next_attempt_at, progress, last_error)
    SELECT json_extract(value, '$.receiver'), json_extract(value, '$.subject_id'),
           json_extract(value, '$.action'), json_extract(value, '$.payload'), $2, 0, $2, '', ''
    FROM json_each($1)";
const PENDING: &str = "
    SELECT seq, subject_id, action, payload, attempts, next_attempt_at, progress
    FROM integration_outbox
    WHERE receiver = $1 AND delivered_at IS NULL AND dead_at IS NULL
    ORDER BY seq LIMIT $2";
const ATTEMPT: &str = "UPDATE integration_outbox SET attempts = attempts + 1 WHERE seq = $1";
const PROGRESS: &str = "UPDATE integration_outbox SET progress = $2 WHERE seq = $1";
const RETRY: &str =
    "UPDATE integration_outbox SET next_attempt_at = $2, last_error = $3 WHERE seq = $1";
const DELIVERED: &str =
    "UPDATE integration_outbox SET delivered_at = $2, last_error = '' WHERE seq = $1";
const DEAD: &str = "UPDATE integration_outbox SET dead_at = $2, last_error = $3 WHERE seq = $1";
/// A refusal is a dead letter too, listed with the outbox's.
const DEAD_LETTER: &str = "
    INSERT INTO dead_letters (event_id, receiver, reason, dead_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (event_id, receiver) DO NOTHING";
/// The remediations among `$1` whose issue is still to be created.
const PENDING_OPENS: &str = "
    SELECT subject_id FROM integration_outbox
    WHERE receiver = 'jira' AND action = 'open' AND delivered_at IS NULL AND dead_at IS NULL
      AND subject_id IN (SELECT value FROM json_each($1))";
const SAVE_JIRA_ISSUE: &str = "
    INSERT INTO jira_issues (remediation_id, issue_id, issue_key, status, synced_at) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (remediation_id) DO UPDATE SET issue_id = excluded.issue_id, issue_key = excluded.issue_key";
/// The remediations of tests `$1`, latest opened first, each with its
/// Jira issue id (null when none) and 1 when its issue is still to be
/// created.
const ISSUES_OF_TESTS: &str = "
    SELECT r.test_id, j.issue_id,
           CAST(CASE WHEN EXISTS (
               SELECT 1 FROM integration_outbox o
               WHERE o.receiver = 'jira' AND o.action = 'open' AND o.subject_id = r.remediation_id
                 AND o.delivered_at IS NULL AND o.dead_at IS NULL) THEN 1 ELSE 0 END AS BIGINT)
    FROM remediations r LEFT JOIN jira_issues j ON j.remediation_id = r.remediation_id
    WHERE r.test_id IN (SELECT value FROM json_each($1))
    ORDER BY r.test_id, r.opened_at DESC, r.remediation_id DESC";
const ISSUES_TO_SYNC: &str = "
    SELECT issue_key FROM jira_issues ORDER BY synced_at, issue_key LIMIT $1";
const SAVE_STATUSES: &str = "
    UPDATE jira_issues SET status = COALESCE((SELECT json_extract(value, '$.status') FROM json_each($1)
                                              WHERE json_extract(value, '$.key') = jira_issues.issue_key), status),
                           synced_at = $2
    WHERE issue_key IN (SELECT json_extract(value, '$.key') FROM json_each($1))";
const ISSUES_OF_REMEDIATIONS: &str = "
    SELECT remediation_id, issue_id, issue_key, status FROM jira_issues
    WHERE remediation_id IN (SELECT value FROM json_each($1))";

const TEMPO_WORKLOGS: &str = "
    SELECT worklog_id FROM tempo_worklogs WHERE worklog_id IN (SELECT value FROM json_each($1))";
const SAVE_TEMPO_WORKLOG: &str = "
    INSERT INTO tempo_worklogs (worklog_id, tempo_worklog_id, delivered_at) VALUES ($1, $2, $3)
    ON CONFLICT (worklog_id) DO UPDATE SET tempo_worklog_id = excluded.tempo_worklog_id";

/// Something to tell a receiver, as enqueued.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outgoing {
    pub receiver: &'static str,
    pub subject_id: String,
    pub action: &'static str,
    /// JSON.
    pub payload: String,
}

/// An undelivered row.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub seq: i64,
    pub subject_id: String,
    pub action: String,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: Micros,
    pub progress: String,
}

/// A remediation's Jira issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JiraIssue {
    pub issue_id: String,
    pub key: String,
    pub status: String,
}

/// Where a test's worklogs go: the issue of its latest remediation that
/// has one, and whether one of its remediations' issues is still to be
/// created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestIssue {
    pub issue_id: Option<String>,
    pub pending: bool,
}

#[derive(Serialize)]
struct StatusRow<'a> {
    key: &'a str,
    status: &'a str,
}

impl CampaignStore {
    /// Enqueues in the caller's transaction (one statement).
    pub async fn enqueue_integrations(
        &self,
        tx: &mut WriteTx,
        rows: &[Outgoing],
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        self.db
            .stmt(ENQUEUE)
            .bind_rows(rows)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// The first `limit` undelivered rows of a receiver, in order.
    pub async fn pending_integrations(
        &self,
        receiver: &str,
        limit: i64,
    ) -> Result<Vec<Pending>, sqlx::Error> {
        self.db
            .stmt(PENDING)
            .bind(receiver.to_owned())
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(Pending {
                    seq: row.try_get(0)?,
                    subject_id: row.try_get(1)?,
                    action: row.try_get(2)?,
                    payload: row.try_get(3)?,
                    attempts: row.try_get(4)?,
                    next_attempt_at: row.try_get(5)?,
                    progress: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Records that an attempt starts, before it is made: after a crash,
    /// the next attempt knows an earlier one may have reached the receiver.
    pub async fn integration_attempt(&self, seq: i64) -> Result<(), sqlx::Error> {
        self.db.stmt(ATTEMPT).bind(seq).write(&self.db).await?;
        Ok(())
    }

    /// Records the calls of a row already made.
    pub async fn integration_progress(&self, seq: i64, progress: &str) -> Result<(), sqlx::Error> {
        self.db
            .stmt(PROGRESS)
            .bind(seq)
            .bind(progress.to_owned())
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Puts a row off until `at`, with why.
    pub async fn integration_retry(
        &self,
        seq: i64,
        at: Micros,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(RETRY)
            .bind(seq)
            .bind(at)
            .bind(error.to_owned())
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Marks a row delivered.
    pub async fn integration_delivered(&self, seq: i64, at: Micros) -> Result<(), sqlx::Error> {
        self.db
            .stmt(DELIVERED)
            .bind(seq)
            .bind(at)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Sets a refused row aside, as a dead letter too (one transaction).
    pub async fn integration_dead(
        &self,
        seq: i64,
        receiver: &str,
        reason: &str,
        at: Micros,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .stmt(DEAD)
            .bind(seq)
            .bind(at)
            .bind(reason.to_owned())
            .execute(&mut tx)
            .await?;
        self.db
            .stmt(DEAD_LETTER)
            .bind(format!("{receiver}:{seq}"))
            .bind(receiver.to_owned())
            .bind(reason.to_owned())
            .bind(at)
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    /// Stores a remediation's Jira issue.
    pub async fn save_jira_issue(
        &self,
        remediation_id: &str,
        issue_id: &str,
        issue_key: &str,
        status: &str,
        at: Micros,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(SAVE_JIRA_ISSUE)
            .bind(remediation_id.to_owned())
            .bind(issue_id.to_owned())
            .bind(issue_key.to_owned())
            .bind(status.to_owned())
            .bind(at)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// The issue keys read back least recently.
    pub async fn jira_keys_to_sync(&self, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        self.db
            .stmt(ISSUES_TO_SYNC)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Stores statuses read back (keys not answered keep theirs).
    pub async fn save_jira_statuses(
        &self,
        statuses: &[(String, String)],
        at: Micros,
    ) -> Result<(), sqlx::Error> {
        if statuses.is_empty() {
            return Ok(());
        }
        let rows: Vec<StatusRow> = statuses
            .iter()
            .map(|(key, status)| StatusRow { key, status })
            .collect();
        self.db
            .stmt(SAVE_STATUSES)
            .bind_rows(&rows)
            .bind(at)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// The Jira issue of each remediation that has one (one statement).
    pub async fn jira_issues_of(
        &self,
        remediation_ids: &[String],
    ) -> Result<BTreeMap<String, JiraIssue>, sqlx::Error> {
        self.db
            .stmt(ISSUES_OF_REMEDIATIONS)
            .bind_ids(remediation_ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    JiraIssue {
                        issue_id: row.try_get(1)?,
                        key: row.try_get(2)?,
                        status: row.try_get(3)?,
                    },
                ))
            })
            .collect()
    }

    /// The remediations among these whose issue is still to be created
    /// (one statement).
    pub async fn jira_opens_pending(
        &self,
        remediation_ids: &[String],
    ) -> Result<BTreeSet<String>, sqlx::Error> {
        self.db
            .stmt(PENDING_OPENS)
            .bind_ids(remediation_ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Where each test's worklogs go (one statement).
    pub async fn issues_of_tests(
        &self,
        test_ids: &[String],
    ) -> Result<BTreeMap<String, TestIssue>, sqlx::Error> {
        let mut out: BTreeMap<String, TestIssue> = BTreeMap::new();
        for row in self
            .db
            .stmt(ISSUES_OF_TESTS)
            .bind_ids(test_ids)
            .fetch_all(self.db.pool())
            .await?
        {
            let entry = out.entry(row.try_get(0)?).or_default();
            let issue: Option<String> = row.try_get(1)?;
            if entry.issue_id.is_none() {
                entry.issue_id = issue;
            }
            entry.pending |= row.try_get::<i64, _>(2)? != 0;
        }
        Ok(out)
    }

    /// The worklogs among these already at Tempo (one statement).
    pub async fn tempo_worklogs_of(
        &self,
        worklog_ids: &[String],
    ) -> Result<BTreeSet<String>, sqlx::Error> {
        self.db
            .stmt(TEMPO_WORKLOGS)
            .bind_ids(worklog_ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Stores a worklog's Tempo id.
    pub async fn save_tempo_worklog(
        &self,
        worklog_id: &str,
        tempo_id: &str,
        at: Micros,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(SAVE_TEMPO_WORKLOG)
            .bind(worklog_id.to_owned())
            .bind(tempo_id.to_owned())
            .bind(at)
            .write(&self.db)
            .await?;
        Ok(())
    }
}
