//! The SQL of history import and export. An import reads what exists for
//! the ids it names (one statement per table) and writes what changed in
//! one transaction (one statement per table, whatever the number of
//! records), then rebuilds the effective test of the chains it touched and
//! the tallies of their techniques. An export reads every table in keyset
//! pages.

use std::collections::BTreeMap;

use purple_api::common::v1::Outcome;
use purple_runtime::{WriteTx, time::Micros};
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::{CampaignStore, campaigns::CampaignRow, people::UserRow, test_columns, test_row};
use crate::domain::{DetectionResult, Rejection, Remediation, TestRow};
use crate::store::people::{WorklogRow, worklog_row};

const USERS_BY_IDS: &str = "
    SELECT user_id, display_name, role, created_at FROM users
    WHERE user_id IN (SELECT value FROM json_each($1))";

const REJECTIONS_OF: &str = "
    SELECT test_id, side, rejected_at, reason, actor_id, voided_executed_at, voided_completed_at,
           voided_outcome
    FROM test_rejections WHERE test_id IN (SELECT value FROM json_each($1))
    ORDER BY test_id, rejected_at, side";

const REMEDIATIONS_BY_IDS: &str = "
    SELECT remediation_id, test_id, technique_id, state, version, assignee_id, notes, opened_at,
           completed_at, started_at
    FROM remediations WHERE remediation_id IN (SELECT value FROM json_each($1))";

const WORKLOGS_BY_IDS: &str = "
    SELECT worklog_id, test_id, user_id, minutes, note, logged_at FROM worklogs
    WHERE worklog_id IN (SELECT value FROM json_each($1))";

const UPSERT_USERS: &str = "
    INSERT INTO users (user_id, display_name, role, created_at)
    SELECT json_extract(value, '$.user_id'), json_extract(value, '$.display_name'),
           json_extract(value, '$.role'), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role";

const UPSERT_CAMPAIGNS: &str = "
    INSERT INTO campaigns (campaign_id, name, description, threat_actor_id, cloned_from, created_by,
                           created_at, interval_seconds, cron, next_run_at)
    SELECT json_extract(value, '$.campaign_id'), json_extract(value, '$.name'),
           json_extract(value, '$.description'), json_extract(value, '$.threat_actor_id'), '',
           json_extract(value, '$.created_by'), CAST(json_extract(value, '$.created_at') AS BIGINT),
           CAST(json_extract(value, '$.interval_seconds') AS BIGINT), json_extract(value, '$.cron'),
           CAST(json_extract(value, '$.next_run_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ON CONFLICT (campaign_id) DO UPDATE SET name = excluded.name, description = excluded.description,
        threat_actor_id = excluded.threat_actor_id, created_by = excluded.created_by,
        created_at = excluded.created_at, interval_seconds = excluded.interval_seconds,
        cron = excluded.cron, next_run_at = excluded.next_run_at";

/// Tests with every column; an update bumps the version, so a client
/// holding the old one learns of the change (ABORTED on its next
/// transition).
const UPSERT_TESTS: &str = "
    INSERT INTO tests (test_id, technique_id, template_id, campaign_id, title, state, outcome, retest_of,
                       chain_id, version, red_assignee_id, blue_assignee_id, executed_at, detected_at,
                       validated_at, red_notes, blue_notes, rejection_reason, created_at, updated_at,
                       last_executed_at, red_started_at, blue_started_at, blue_completed_at, cancelled_at)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.technique_id'),
           json_extract(value, '$.template_id'), json_extract(value, '$.campaign_id'),
           json_extract(value, '$.title'), json_extract(value, '$.state'), json_extract(value, '$.outcome'),
           json_extract(value, '$.retest_of'), json_extract(value, '$.chain_id'), 1,
           json_extract(value, '$.red_assignee_id'), json_extract(value, '$.blue_assignee_id'),
           CAST(json_extract(value, '$.executed_at') AS BIGINT),
           CAST(json_extract(value, '$.detected_at') AS BIGINT),
           CAST(json_extract(value, '$.validated_at') AS BIGINT),
           json_extract(value, '$.red_notes'), json_extract(value, '$.blue_notes'),
           json_extract(value, '$.rejection_reason'),
           CAST(json_extract(value, '$.created_at') AS BIGINT),
           CAST(json_extract(value, '$.updated_at') AS BIGINT),
           CAST(json_extract(value, '$.last_executed_at') AS BIGINT),
           CAST(json_extract(value, '$.red_started_at') AS BIGINT),
           CAST(json_extract(value, '$.blue_started_at') AS BIGINT),
           CAST(json_extract(value, '$.blue_completed_at') AS BIGINT),
           CAST(json_extract(value, '$.cancelled_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ON CONFLICT (test_id) DO UPDATE SET technique_id = excluded.technique_id,
        template_id = excluded.template_id, campaign_id = excluded.campaign_id, title = excluded.title,
        state = excluded.state, outcome = excluded.outcome, retest_of = excluded.retest_of,
        chain_id = excluded.chain_id, version = tests.version + 1,
        red_assignee_id = excluded.red_assignee_id, blue_assignee_id = excluded.blue_assignee_id,
        executed_at = excluded.executed_at, detected_at = excluded.detected_at,
        validated_at = excluded.validated_at, red_notes = excluded.red_notes,
        blue_notes = excluded.blue_notes, rejection_reason = excluded.rejection_reason,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        last_executed_at = excluded.last_executed_at, red_started_at = excluded.red_started_at,
        blue_started_at = excluded.blue_started_at, blue_completed_at = excluded.blue_completed_at,
        cancelled_at = excluded.cancelled_at";

const DELETE_REJECTIONS: &str =
    "DELETE FROM test_rejections WHERE test_id IN (SELECT value FROM json_each($1))";

const INSERT_REJECTIONS: &str = "
    INSERT INTO test_rejections (test_id, side, rejected_at, reason, actor_id, voided_executed_at,
                                 voided_completed_at, voided_outcome)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.side'),
           CAST(json_extract(value, '$.rejected_at') AS BIGINT), json_extract(value, '$.reason'),
           json_extract(value, '$.actor_id'), CAST(json_extract(value, '$.voided_executed_at') AS BIGINT),
           CAST(json_extract(value, '$.voided_completed_at') AS BIGINT), json_extract(value, '$.voided_outcome')
    FROM json_each($1)";

const UPSERT_REMEDIATIONS: &str = "
    INSERT INTO remediations (remediation_id, test_id, technique_id, state, version, assignee_id, notes,
                              opened_at, completed_at, started_at)
    SELECT json_extract(value, '$.remediation_id'), json_extract(value, '$.test_id'),
           json_extract(value, '$.technique_id'), json_extract(value, '$.state'), 1,
           json_extract(value, '$.assignee_id'), json_extract(value, '$.notes'),
           CAST(json_extract(value, '$.opened_at') AS BIGINT),
           CAST(json_extract(value, '$.completed_at') AS BIGINT),
           CAST(json_extract(value, '$.started_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ON CONFLICT (remediation_id) DO UPDATE SET test_id = excluded.test_id,
        technique_id = excluded.technique_id, state = excluded.state,
        version = remediations.version + 1, assignee_id = excluded.assignee_id, notes = excluded.notes,
        opened_at = excluded.opened_at, completed_at = excluded.completed_at,
        started_at = excluded.started_at";

const UPSERT_WORKLOGS: &str = "
    INSERT INTO worklogs (worklog_id, test_id, user_id, minutes, note, logged_at)
    SELECT json_extract(value, '$.worklog_id'), json_extract(value, '$.test_id'),
           json_extract(value, '$.user_id'), CAST(json_extract(value, '$.minutes') AS BIGINT),
           json_extract(value, '$.note'), CAST(json_extract(value, '$.logged_at') AS BIGINT)
    FROM json_each($1) WHERE true
    ON CONFLICT (worklog_id) DO UPDATE SET test_id = excluded.test_id, user_id = excluded.user_id,
        minutes = excluded.minutes, note = excluded.note, logged_at = excluded.logged_at";

const CLEAR_EFFECTIVE: &str =
    "DELETE FROM chain_effective WHERE chain_id IN (SELECT value FROM json_each($1))";

/// The effective test of chains: each chain's validated test with the
/// latest validation (ties: created last, then the greatest id), as
/// docs/design.md §4 defines it and as the live workflow keeps it.
const REBUILD_EFFECTIVE: &str = "
    INSERT INTO chain_effective (chain_id, technique_id, test_id, validated_at)
    SELECT chain_id, technique_id, test_id, validated_at FROM (
        SELECT t.chain_id, t.technique_id, t.test_id, t.validated_at,
               ROW_NUMBER() OVER (PARTITION BY t.chain_id
                                  ORDER BY t.validated_at DESC, t.created_at DESC, t.test_id DESC) AS rn
        FROM tests t
        WHERE t.chain_id IN (SELECT value FROM json_each($1)) AND t.state = 'validated'
    ) ranked WHERE rn = 1";

const CLEAR_HISTORY: &str =
    "DELETE FROM chain_history WHERE chain_id IN (SELECT value FROM json_each($1))";

/// Chains' history (migration 0012, which the live workflow's trigger
/// keeps the same way): each validated test effective from its validation
/// until the next one's in rank, with its triggered rules.
const REBUILD_HISTORY: &str = "
    INSERT INTO chain_history (chain_id, test_id, technique_id, valid_from, valid_to, outcome, rule_keys)
    SELECT t.chain_id, t.test_id, t.technique_id, t.validated_at,
           LEAD(t.validated_at) OVER (PARTITION BY t.chain_id ORDER BY t.validated_at, t.created_at, t.test_id),
           t.outcome,
           COALESCE((SELECT string_agg(dr.source || ':' || dr.rule_id, ',') FROM detection_results dr
                     WHERE dr.test_id = t.test_id AND dr.triggered = 1), '')
    FROM tests t
    WHERE t.chain_id IN (SELECT value FROM json_each($1)) AND t.state = 'validated'
      AND t.validated_at IS NOT NULL";

/// Keyset pages of the export, by id: `$1` the last id of the previous
/// page ("" for the first), `$2` the page size.
const USERS_PAGE: &str = "
    SELECT user_id, display_name, role, created_at FROM users WHERE user_id > $1
    ORDER BY user_id LIMIT $2";
const CAMPAIGNS_PAGE: &str = "
    SELECT c.campaign_id, c.name, c.description, c.threat_actor_id, c.cloned_from, c.created_by,
           c.created_at, c.interval_seconds, c.cron, c.next_run_at, 0
    FROM campaigns c WHERE c.campaign_id > $1 ORDER BY c.campaign_id LIMIT $2";
const TESTS_PAGE: &str = concat!(
    "SELECT ",
    test_columns!(),
    " FROM tests t WHERE t.test_id > $1 ORDER BY t.test_id LIMIT $2"
);
const REMEDIATIONS_PAGE: &str = "
    SELECT remediation_id, test_id, technique_id, state, version, assignee_id, notes, opened_at,
           completed_at, started_at
    FROM remediations WHERE remediation_id > $1 ORDER BY remediation_id LIMIT $2";
const WORKLOGS_PAGE: &str = "
    SELECT worklog_id, test_id, user_id, minutes, note, logged_at FROM worklogs WHERE worklog_id > $1
    ORDER BY worklog_id LIMIT $2";

#[derive(Serialize)]
struct TestJson<'a> {
    test_id: &'a str,
    technique_id: &'a str,
    template_id: &'a str,
    campaign_id: Option<&'a str>,
    title: &'a str,
    state: &'static str,
    outcome: Option<&'static str>,
    retest_of: Option<&'a str>,
    chain_id: &'a str,
    red_assignee_id: &'a str,
    blue_assignee_id: &'a str,
    executed_at: Option<Micros>,
    detected_at: Option<Micros>,
    validated_at: Option<Micros>,
    red_notes: &'a str,
    blue_notes: &'a str,
    rejection_reason: &'a str,
    created_at: Micros,
    updated_at: Micros,
    last_executed_at: Option<Micros>,
    red_started_at: Option<Micros>,
    blue_started_at: Option<Micros>,
    blue_completed_at: Option<Micros>,
    cancelled_at: Option<Micros>,
}

impl<'a> From<&'a TestRow> for TestJson<'a> {
    fn from(t: &'a TestRow) -> Self {
        TestJson {
            test_id: &t.test_id,
            technique_id: &t.technique_id,
            template_id: &t.template_id,
            campaign_id: t.campaign_id.as_deref(),
            title: &t.title,
            state: t.state.key(),
            outcome: t.outcome.and_then(Outcome::key),
            retest_of: t.retest_of.as_deref(),
            chain_id: &t.chain_id,
            red_assignee_id: &t.red_assignee_id,
            blue_assignee_id: &t.blue_assignee_id,
            executed_at: t.executed_at,
            detected_at: t.detected_at,
            validated_at: t.validated_at,
            red_notes: &t.red_notes,
            blue_notes: &t.blue_notes,
            rejection_reason: &t.rejection_reason,
            created_at: t.created_at,
            updated_at: t.updated_at,
            last_executed_at: t.last_executed_at,
            red_started_at: t.milestones.red_started_at,
            blue_started_at: t.milestones.blue_started_at,
            blue_completed_at: t.milestones.blue_completed_at,
            cancelled_at: t.milestones.cancelled_at,
        }
    }
}

#[derive(Serialize)]
struct RejectionJson<'a> {
    test_id: &'a str,
    side: &'a str,
    rejected_at: Micros,
    reason: &'a str,
    actor_id: &'a str,
    voided_executed_at: Option<Micros>,
    voided_completed_at: Option<Micros>,
    voided_outcome: Option<&'static str>,
}

#[derive(Serialize)]
struct RemediationJson<'a> {
    remediation_id: &'a str,
    test_id: &'a str,
    technique_id: &'a str,
    state: &'static str,
    assignee_id: &'a str,
    notes: &'a str,
    opened_at: Micros,
    started_at: Option<Micros>,
    completed_at: Option<Micros>,
}

#[derive(Serialize)]
struct CampaignJson<'a> {
    campaign_id: &'a str,
    name: &'a str,
    description: &'a str,
    threat_actor_id: &'a str,
    created_by: &'a str,
    created_at: Micros,
    interval_seconds: Option<i64>,
    cron: Option<&'a str>,
    next_run_at: Option<Micros>,
}

fn rejection_row(row: &AnyRow) -> Result<Rejection, sqlx::Error> {
    let outcome: Option<String> = row.try_get(7)?;
    Ok(Rejection {
        test_id: row.try_get(0)?,
        side: row.try_get(1)?,
        rejected_at: row.try_get(2)?,
        reason: row.try_get(3)?,
        actor_id: row.try_get(4)?,
        voided_executed_at: row.try_get(5)?,
        voided_completed_at: row.try_get(6)?,
        voided_outcome: outcome.as_deref().and_then(Outcome::from_key),
    })
}

fn user_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    let role: String = row.try_get(2)?;
    Ok(UserRow {
        user_id: row.try_get(0)?,
        display_name: row.try_get(1)?,
        role: super::people::role_of(&role)?,
        created_at: row.try_get(3)?,
    })
}

/// What an import writes, already checked.
pub struct HistoryWrite<'a> {
    pub users: Vec<&'a UserRow>,
    pub campaigns: Vec<&'a CampaignRow>,
    pub tests: Vec<&'a TestRow>,
    /// The rejections of `tests` (replacing theirs).
    pub rejections: Vec<&'a Rejection>,
    pub results: Vec<DetectionResult>,
    pub remediations: Vec<&'a Remediation>,
    pub worklogs: Vec<&'a WorklogRow>,
    /// Chains whose effective test may have changed.
    pub chains: Vec<String>,
    /// Techniques whose tallies may have changed.
    pub techniques: Vec<String>,
}

impl CampaignStore {
    /// Users by id.
    pub async fn users_by_ids(&self, ids: &[String]) -> Result<Vec<UserRow>, sqlx::Error> {
        self.db
            .stmt(USERS_BY_IDS)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    /// The rejections of tests, by test.
    pub async fn rejections_of(
        &self,
        test_ids: &[String],
    ) -> Result<BTreeMap<String, Vec<Rejection>>, sqlx::Error> {
        let mut out: BTreeMap<String, Vec<Rejection>> = BTreeMap::new();
        for row in self
            .db
            .stmt(REJECTIONS_OF)
            .bind_ids(test_ids)
            .fetch_all(self.db.pool())
            .await?
        {
            let r = rejection_row(&row)?;
            out.entry(r.test_id.clone()).or_default().push(r);
        }
        Ok(out)
    }

    /// Remediations by id.
    pub async fn remediations_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<Remediation>, sqlx::Error> {
        self.db
            .stmt(REMEDIATIONS_BY_IDS)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(super::people::remediation_row)
            .collect()
    }

    /// Worklogs by id.
    pub async fn worklogs_by_ids(&self, ids: &[String]) -> Result<Vec<WorklogRow>, sqlx::Error> {
        self.db
            .stmt(WORKLOGS_BY_IDS)
            .bind_ids(ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(worklog_row)
            .collect()
    }

    /// Writes an import: one statement per table, then the effective tests
    /// and tallies of what it touched.
    pub async fn write_history(
        &self,
        tx: &mut WriteTx,
        w: &HistoryWrite<'_>,
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        if !w.users.is_empty() {
            self.db
                .stmt(UPSERT_USERS)
                .bind_rows(&w.users)
                .execute(&mut *tx)
                .await?;
        }
        if !w.campaigns.is_empty() {
            let rows: Vec<CampaignJson> = w
                .campaigns
                .iter()
                .map(|c| CampaignJson {
                    campaign_id: &c.campaign_id,
                    name: &c.name,
                    description: &c.description,
                    threat_actor_id: &c.threat_actor_id,
                    created_by: &c.created_by,
                    created_at: c.created_at,
                    interval_seconds: c.interval_seconds,
                    cron: c.cron.as_deref(),
                    next_run_at: c.next_run_at,
                })
                .collect();
            self.db
                .stmt(UPSERT_CAMPAIGNS)
                .bind_rows(&rows)
                .execute(&mut *tx)
                .await?;
        }
        if !w.tests.is_empty() {
            let rows: Vec<TestJson> = w.tests.iter().map(|t| TestJson::from(*t)).collect();
            self.db
                .stmt(UPSERT_TESTS)
                .bind_rows(&rows)
                .execute(&mut *tx)
                .await?;
            let ids: Vec<&str> = w.tests.iter().map(|t| t.test_id.as_str()).collect();
            self.db
                .stmt(DELETE_REJECTIONS)
                .bind_ids(ids)
                .execute(&mut *tx)
                .await?;
        }
        if !w.rejections.is_empty() {
            let rows: Vec<RejectionJson> = w
                .rejections
                .iter()
                .map(|r| RejectionJson {
                    test_id: &r.test_id,
                    side: &r.side,
                    rejected_at: r.rejected_at,
                    reason: &r.reason,
                    actor_id: &r.actor_id,
                    voided_executed_at: r.voided_executed_at,
                    voided_completed_at: r.voided_completed_at,
                    voided_outcome: r.voided_outcome.and_then(Outcome::key),
                })
                .collect();
            self.db
                .stmt(INSERT_REJECTIONS)
                .bind_rows(&rows)
                .execute(&mut *tx)
                .await?;
        }
        self.upsert_results(tx, &w.results, now).await?;
        if !w.remediations.is_empty() {
            let rows: Vec<RemediationJson> = w
                .remediations
                .iter()
                .map(|r| RemediationJson {
                    remediation_id: &r.remediation_id,
                    test_id: &r.test_id,
                    technique_id: &r.technique_id,
                    state: r.state.key(),
                    assignee_id: &r.assignee_id,
                    notes: &r.notes,
                    opened_at: r.opened_at,
                    started_at: r.started_at,
                    completed_at: r.completed_at,
                })
                .collect();
            self.db
                .stmt(UPSERT_REMEDIATIONS)
                .bind_rows(&rows)
                .execute(&mut *tx)
                .await?;
        }
        if !w.worklogs.is_empty() {
            self.db
                .stmt(UPSERT_WORKLOGS)
                .bind_rows(&w.worklogs)
                .execute(&mut *tx)
                .await?;
        }
        if !w.chains.is_empty() {
            self.db
                .stmt(CLEAR_EFFECTIVE)
                .bind_ids(&w.chains)
                .execute(&mut *tx)
                .await?;
            self.db
                .stmt(REBUILD_EFFECTIVE)
                .bind_ids(&w.chains)
                .execute(&mut *tx)
                .await?;
            self.db
                .stmt(CLEAR_HISTORY)
                .bind_ids(&w.chains)
                .execute(&mut *tx)
                .await?;
            self.db
                .stmt(REBUILD_HISTORY)
                .bind_ids(&w.chains)
                .execute(&mut *tx)
                .await?;
        }
        self.refresh_tallies(tx, &w.techniques).await
    }

    /// A page of users after `after`, by id.
    pub async fn users_page(&self, after: &str, limit: i64) -> Result<Vec<UserRow>, sqlx::Error> {
        self.page(USERS_PAGE, after, limit, user_row).await
    }

    /// A page of campaigns after `after`, by id.
    pub async fn campaigns_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<CampaignRow>, sqlx::Error> {
        self.page(CAMPAIGNS_PAGE, after, limit, super::campaigns::campaign_row)
            .await
    }

    /// A page of tests after `after`, by id.
    pub async fn tests_page(&self, after: &str, limit: i64) -> Result<Vec<TestRow>, sqlx::Error> {
        self.page(TESTS_PAGE, after, limit, test_row).await
    }

    /// A page of remediations after `after`, by id.
    pub async fn remediations_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Remediation>, sqlx::Error> {
        self.page(
            REMEDIATIONS_PAGE,
            after,
            limit,
            super::people::remediation_row,
        )
        .await
    }

    /// A page of worklogs after `after`, by id.
    pub async fn worklogs_page(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<WorklogRow>, sqlx::Error> {
        self.page(WORKLOGS_PAGE, after, limit, worklog_row).await
    }

    async fn page<T>(
        &self,
        sql: &'static str,
        after: &str,
        limit: i64,
        row: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error> {
        self.db
            .stmt(sql)
            .bind(after.to_owned())
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(row)
            .collect()
    }
}
