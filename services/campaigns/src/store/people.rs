//! The people side: users and their roles, remediations, notifications and
//! worklogs.

use purple_runtime::{paging::Page, time::Micros};
use serde::Serialize;
use sqlx::{Any, Row, Transaction, any::AnyRow};

use super::CampaignStore;

const INSERT_USERS: &str = "
    INSERT INTO users (user_id, display_name, role, created_at)
    SELECT json_extract(value, '$.user_id'), json_extract(value, '$.display_name'),
           json_extract(value, '$.role'), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";
const USER_COUNT_AND_ROLE: &str =
    "SELECT (SELECT COUNT(*) FROM users), (SELECT role FROM users WHERE user_id = $1)";
const LIST_USERS: &str = "
    SELECT user_id, display_name, role, created_at FROM users WHERE ($1 = '' OR role = $1)
    ORDER BY display_name, user_id LIMIT $2 OFFSET $3";
const USERS_WITH_ROLE: &str = "SELECT user_id FROM users WHERE role = $1 ORDER BY user_id";

const INSERT_REMEDIATION: &str = "
    INSERT INTO remediations (remediation_id, test_id, technique_id, state, version, assignee_id, notes,
                              opened_at, completed_at)
    VALUES ($1, $2, $3, 'open', 1, $4, '', $5, NULL)";
macro_rules! remediation_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT remediation_id, test_id, technique_id, state, version, assignee_id, notes, opened_at, ",
            "completed_at FROM remediations ", $($rest),*
        )
    };
}
const REMEDIATION: &str = remediation_select!("WHERE remediation_id = $1");
const LIST_REMEDIATIONS: &str = remediation_select!(
    "WHERE ($1 = '' OR state = $1) AND ($2 = '' OR technique_id = $2) ",
    "ORDER BY opened_at DESC, remediation_id DESC LIMIT $3 OFFSET $4"
);
const REMEDIATIONS_OF_TESTS: &str =
    remediation_select!("WHERE test_id IN (SELECT value FROM json_each($1))");
const UPDATE_REMEDIATION: &str = "
    UPDATE remediations SET state = $3, notes = $4, completed_at = $5, version = version + 1
    WHERE remediation_id = $1 AND version = $2";

const INSERT_NOTIFICATIONS: &str = "
    INSERT INTO notifications (notification_id, user_id, kind, message, campaign_id, is_read, created_at)
    SELECT json_extract(value, '$.notification_id'), json_extract(value, '$.user_id'),
           json_extract(value, '$.kind'), json_extract(value, '$.message'),
           json_extract(value, '$.campaign_id'), 0, CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";
const LIST_NOTIFICATIONS: &str = "
    SELECT notification_id, user_id, kind, message, campaign_id, is_read, created_at FROM notifications
    WHERE user_id = $1 AND ($2 = 0 OR is_read = 0)
    ORDER BY created_at DESC, notification_id DESC LIMIT $3 OFFSET $4";
const MARK_READ: &str = "
    UPDATE notifications SET is_read = 1
    WHERE user_id = $1 AND is_read = 0 AND notification_id IN (SELECT value FROM json_each($2))";

const INSERT_WORKLOG: &str = "
    INSERT INTO worklogs (worklog_id, test_id, user_id, minutes, note, logged_at)
    SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tests WHERE test_id = $2)";
const LIST_WORKLOGS: &str = "
    SELECT worklog_id, test_id, user_id, minutes, note, logged_at,
           CAST(SUM(minutes) OVER () AS BIGINT)
    FROM worklogs WHERE ($1 = '' OR test_id = $1) AND ($2 = '' OR user_id = $2)
    ORDER BY logged_at DESC, worklog_id DESC LIMIT $3 OFFSET $4";

/// A user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserRow {
    pub user_id: String,
    pub display_name: String,
    pub role: String,
    pub created_at: Micros,
}

/// A remediation.
#[derive(Clone, Debug, PartialEq)]
pub struct RemediationRow {
    pub remediation_id: String,
    pub test_id: String,
    pub technique_id: String,
    pub state: String,
    pub version: i64,
    pub assignee_id: String,
    pub notes: String,
    pub opened_at: Micros,
    pub completed_at: Option<Micros>,
}

fn remediation_row(row: &AnyRow) -> Result<RemediationRow, sqlx::Error> {
    Ok(RemediationRow {
        remediation_id: row.try_get(0)?,
        test_id: row.try_get(1)?,
        technique_id: row.try_get(2)?,
        state: row.try_get(3)?,
        version: row.try_get(4)?,
        assignee_id: row.try_get(5)?,
        notes: row.try_get(6)?,
        opened_at: row.try_get(7)?,
        completed_at: row.try_get(8)?,
    })
}

/// A notification.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotificationRow {
    pub notification_id: String,
    pub user_id: String,
    pub kind: String,
    pub message: String,
    pub campaign_id: String,
    #[serde(skip)]
    pub read: bool,
    pub created_at: Micros,
}

/// A worklog.
#[derive(Clone, Debug, PartialEq)]
pub struct WorklogRow {
    pub worklog_id: String,
    pub test_id: String,
    pub user_id: String,
    pub minutes: i64,
    pub note: String,
    pub logged_at: Micros,
}

impl CampaignStore {
    /// How many users exist, and the role of `user_id` if it is one.
    pub async fn user_count_and_role(
        &self,
        user_id: &str,
    ) -> Result<(i64, Option<String>), sqlx::Error> {
        let row = self
            .db
            .stmt(USER_COUNT_AND_ROLE)
            .bind(user_id.to_owned())
            .fetch_one(self.db.pool())
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// The role of a user, if the user exists.
    pub async fn role_of(&self, user_id: &str) -> Result<Option<String>, sqlx::Error> {
        Ok(self.user_count_and_role(user_id).await?.1)
    }

    /// Inserts users in one statement.
    pub async fn insert_users(&self, users: &[UserRow]) -> Result<(), sqlx::Error> {
        self.db
            .stmt(INSERT_USERS)
            .bind_rows(users)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// A page of users.
    pub async fn list_users(&self, role: &str, page: Page) -> Result<Vec<UserRow>, sqlx::Error> {
        self.db
            .stmt(LIST_USERS)
            .bind(role.to_owned())
            .bind(page.limit())
            .bind(page.offset)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(UserRow {
                    user_id: row.try_get(0)?,
                    display_name: row.try_get(1)?,
                    role: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every user with a role.
    pub async fn users_with_role(&self, role: &str) -> Result<Vec<String>, sqlx::Error> {
        self.db
            .stmt(USERS_WITH_ROLE)
            .bind(role.to_owned())
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Opens a remediation in the validating transaction.
    pub async fn insert_remediation(
        &self,
        tx: &mut Transaction<'static, Any>,
        r: &RemediationRow,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(INSERT_REMEDIATION)
            .bind(r.remediation_id.clone())
            .bind(r.test_id.clone())
            .bind(r.technique_id.clone())
            .bind(r.assignee_id.clone())
            .bind(r.opened_at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// One remediation.
    pub async fn remediation(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
    ) -> Result<Option<RemediationRow>, sqlx::Error> {
        self.db
            .stmt(REMEDIATION)
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await?
            .as_ref()
            .map(remediation_row)
            .transpose()
    }

    /// A filtered page of remediations, newest first.
    pub async fn list_remediations(
        &self,
        state: &str,
        technique: &str,
        page: Page,
    ) -> Result<Vec<RemediationRow>, sqlx::Error> {
        self.db
            .stmt(LIST_REMEDIATIONS)
            .bind(state.to_owned())
            .bind(technique.to_owned())
            .bind(page.limit())
            .bind(page.offset)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(remediation_row)
            .collect()
    }

    /// The remediations of tests.
    pub async fn remediations_of_tests(
        &self,
        test_ids: &[String],
    ) -> Result<Vec<RemediationRow>, sqlx::Error> {
        self.db
            .stmt(REMEDIATIONS_OF_TESTS)
            .bind_ids(test_ids)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(remediation_row)
            .collect()
    }

    /// Writes a remediation's new state if its version is still `version`.
    pub async fn update_remediation(
        &self,
        tx: &mut Transaction<'static, Any>,
        r: &RemediationRow,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(UPDATE_REMEDIATION)
            .bind(r.remediation_id.clone())
            .bind(version)
            .bind(r.state.clone())
            .bind(r.notes.clone())
            .bind(r.completed_at)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts notifications in one statement.
    pub async fn insert_notifications(
        &self,
        tx: &mut Transaction<'static, Any>,
        rows: &[NotificationRow],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        self.db
            .stmt(INSERT_NOTIFICATIONS)
            .bind_rows(rows)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A page of a user's notifications.
    pub async fn list_notifications(
        &self,
        user_id: &str,
        unread_only: bool,
        page: Page,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        self.db
            .stmt(LIST_NOTIFICATIONS)
            .bind(user_id.to_owned())
            .bind(i64::from(unread_only))
            .bind(page.limit())
            .bind(page.offset)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(NotificationRow {
                    notification_id: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    message: row.try_get(3)?,
                    campaign_id: row.try_get(4)?,
                    read: row.try_get::<i64, _>(5)? != 0,
                    created_at: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Marks a user's notifications read; returns how many changed.
    pub async fn mark_read(&self, user_id: &str, ids: &[String]) -> Result<u64, sqlx::Error> {
        let done = self
            .db
            .stmt(MARK_READ)
            .bind(user_id.to_owned())
            .bind_ids(ids)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Adds a worklog; false when the test does not exist.
    pub async fn insert_worklog(&self, w: &WorklogRow) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(INSERT_WORKLOG)
            .bind(w.worklog_id.clone())
            .bind(w.test_id.clone())
            .bind(w.user_id.clone())
            .bind(w.minutes)
            .bind(w.note.clone())
            .bind(w.logged_at)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page of worklogs and the total minutes of the whole filter.
    pub async fn list_worklogs(
        &self,
        test_id: &str,
        user_id: &str,
        page: Page,
    ) -> Result<(Vec<WorklogRow>, i64), sqlx::Error> {
        let rows = self
            .db
            .stmt(LIST_WORKLOGS)
            .bind(test_id.to_owned())
            .bind(user_id.to_owned())
            .bind(page.limit())
            .bind(page.offset)
            .fetch_all(self.db.pool())
            .await?;
        let total = match rows.first() {
            Some(row) => row.try_get(6)?,
            None => 0,
        };
        let logs = rows
            .iter()
            .map(|row| {
                Ok(WorklogRow {
                    worklog_id: row.try_get(0)?,
                    test_id: row.try_get(1)?,
                    user_id: row.try_get(2)?,
                    minutes: row.try_get(3)?,
                    note: row.try_get(4)?,
                    logged_at: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((logs, total))
    }
}
