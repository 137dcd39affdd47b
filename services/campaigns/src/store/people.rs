//! The people side: users and their roles, remediations, notifications and
//! worklogs.

use purple_api::common::v1::Role;
use purple_runtime::{WriteTx, paging::Page, time::Micros};
use serde::Serialize;
use sqlx::{Row, any::AnyRow};

use super::CampaignStore;
use crate::domain::{Remediation, RemediationState};

const INSERT_USERS: &str = "
    INSERT INTO users (user_id, display_name, role, created_at)
    SELECT json_extract(value, '$.user_id'), json_extract(value, '$.display_name'),
           json_extract(value, '$.role'), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";
/// A user named by a token, on first use (and when its role changed at
/// the identity provider); a name given by an admin is kept.
const UPSERT_USER: &str = "
    INSERT INTO users (user_id, display_name, role, created_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (user_id) DO UPDATE SET role = excluded.role WHERE users.role <> excluded.role";
/// Keyset page: `$3` 1 when the page starts after (`$4` name, `$5` id).
const LIST_USERS: &str = "
    SELECT user_id, display_name, role, created_at FROM users WHERE ($1 = '' OR role = $1)
      AND ($3 = 0 OR display_name > $4 OR (display_name = $4 AND user_id > $5))
    ORDER BY display_name, user_id LIMIT $2";
const USERS_WITH_ROLE: &str = "SELECT user_id FROM users WHERE role = $1 ORDER BY user_id";

const INSERT_REMEDIATION: &str = "
    INSERT INTO remediations (remediation_id, test_id, technique_id, state, version, assignee_id, notes,
                              opened_at, completed_at)
    VALUES ($1, $2, $3, 'open', 1, $4, '', $5, NULL)";
macro_rules! remediation_select {
    ($($rest:literal),*) => {
        concat!(
            "SELECT remediation_id, test_id, technique_id, state, version, assignee_id, notes, opened_at, ",
            "completed_at, started_at FROM remediations ", $($rest),*
        )
    };
}
const REMEDIATION: &str = remediation_select!("WHERE remediation_id = $1");
/// Keyset page: `$4` 1 when the page starts after (`$5` opened_at, `$6`
/// id).
const LIST_REMEDIATIONS: &str = remediation_select!(
    "WHERE ($1 = '' OR state = $1) AND ($2 = '' OR technique_id = $2) ",
    "AND ($4 = 0 OR opened_at < $5 OR (opened_at = $5 AND remediation_id < $6)) ",
    "ORDER BY opened_at DESC, remediation_id DESC LIMIT $3"
);
const REMEDIATIONS_OF_TESTS: &str =
    remediation_select!("WHERE test_id IN (SELECT value FROM json_each($1))");
const UPDATE_REMEDIATION: &str = "
    UPDATE remediations SET state = $3, notes = $4, completed_at = $5, started_at = $6,
           version = version + 1
    WHERE remediation_id = $1 AND version = $2";

const INSERT_NOTIFICATIONS: &str = "
    INSERT INTO notifications (notification_id, user_id, kind, message, campaign_id, is_read, created_at)
    SELECT json_extract(value, '$.notification_id'), json_extract(value, '$.user_id'),
           json_extract(value, '$.kind'), json_extract(value, '$.message'),
           json_extract(value, '$.campaign_id'), 0, CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";
/// One notification per purple lead per regression; the id derives from
/// the regression's key, so a repeated delivery notifies no one twice.
const NOTIFY_REGRESSIONS: &str = "
    INSERT INTO notifications (notification_id, user_id, kind, message, campaign_id, is_read, created_at)
    SELECT 'regression:' || json_extract(r.value, '$.key') || ':' || u.user_id, u.user_id,
           'technique.regressed', json_extract(r.value, '$.message'), '', 0, $2
    FROM json_each($1) r CROSS JOIN users u
    WHERE u.role = 'purple_lead'
    ON CONFLICT (notification_id) DO NOTHING";
/// Keyset page: `$4` 1 when the page starts after (`$5` created_at, `$6`
/// id).
const LIST_NOTIFICATIONS: &str = "
    SELECT notification_id, user_id, kind, message, campaign_id, is_read, created_at FROM notifications
    WHERE user_id = $1 AND ($2 = 0 OR is_read = 0)
      AND ($4 = 0 OR created_at < $5 OR (created_at = $5 AND notification_id < $6))
    ORDER BY created_at DESC, notification_id DESC LIMIT $3";
const MARK_READ: &str = "
    UPDATE notifications SET is_read = 1
    WHERE user_id = $1 AND is_read = 0 AND notification_id IN (SELECT value FROM json_each($2))";

const INSERT_WORKLOG: &str = "
    INSERT INTO worklogs (worklog_id, test_id, user_id, minutes, note, logged_at)
    SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tests WHERE test_id = $2)";
/// Keyset page: `$4` 1 when the page starts after (`$5` logged_at, `$6`
/// id). The total covers the whole filter, not just the page.
const LIST_WORKLOGS: &str = "
    SELECT w.worklog_id, w.test_id, w.user_id, w.minutes, w.note, w.logged_at, tot.minutes
    FROM (SELECT CAST(COALESCE(SUM(minutes), 0) AS BIGINT) AS minutes FROM worklogs
          WHERE ($1 = '' OR test_id = $1) AND ($2 = '' OR user_id = $2)) tot
    LEFT JOIN worklogs w ON ($1 = '' OR w.test_id = $1) AND ($2 = '' OR w.user_id = $2)
      AND ($4 = 0 OR w.logged_at < $5 OR (w.logged_at = $5 AND w.worklog_id < $6))
    ORDER BY w.logged_at DESC, w.worklog_id DESC LIMIT $3";

/// A regression to tell the purple leads of: its stable key and the text.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegressionNotice {
    pub key: String,
    pub message: String,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserRow {
    pub user_id: String,
    pub display_name: String,
    #[serde(serialize_with = "role_key")]
    pub role: Role,
    pub created_at: Micros,
}

fn role_key<S: serde::Serializer>(role: &Role, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(role.key().unwrap_or(""))
}

/// A stored role name as the shared enum.
pub(crate) fn role_of(key: &str) -> Result<Role, sqlx::Error> {
    Role::from_key(key).ok_or_else(|| sqlx::Error::Decode(format!("unknown role {key:?}").into()))
}

pub(crate) fn remediation_row(row: &AnyRow) -> Result<Remediation, sqlx::Error> {
    let state: String = row.try_get(3)?;
    Ok(Remediation {
        remediation_id: row.try_get(0)?,
        test_id: row.try_get(1)?,
        technique_id: row.try_get(2)?,
        state: RemediationState::from_key(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown state {state:?}").into()))?,
        version: row.try_get(4)?,
        assignee_id: row.try_get(5)?,
        notes: row.try_get(6)?,
        opened_at: row.try_get(7)?,
        completed_at: row.try_get(8)?,
        started_at: row.try_get(9)?,
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
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorklogRow {
    pub worklog_id: String,
    pub test_id: String,
    pub user_id: String,
    pub minutes: i64,
    pub note: String,
    pub logged_at: Micros,
}

impl CampaignStore {
    /// Stores the user a token names, or updates its role.
    pub async fn upsert_user(
        &self,
        user_id: &str,
        name: &str,
        role: Role,
        now: Micros,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(UPSERT_USER)
            .bind(user_id.to_owned())
            .bind(name.to_owned())
            .bind(role.key().unwrap_or(""))
            .bind(now)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// Inserts users in one statement.
    pub async fn insert_users(&self, users: &[UserRow]) -> Result<(), sqlx::Error> {
        self.db
            .stmt(INSERT_USERS)
            .bind_rows(users)
            .write(&self.db)
            .await?;
        Ok(())
    }

    /// A page of users (all, or those with `role`), by name.
    pub async fn list_users(
        &self,
        role: Option<Role>,
        page: &Page,
    ) -> Result<Vec<UserRow>, sqlx::Error> {
        self.db
            .stmt(LIST_USERS)
            .bind(role.and_then(Role::key).unwrap_or(""))
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.text(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| {
                Ok(UserRow {
                    user_id: row.try_get(0)?,
                    display_name: row.try_get(1)?,
                    role: role_of(&row.try_get::<String, _>(2)?)?,
                    created_at: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Every user with a role.
    pub async fn users_with_role(&self, role: Role) -> Result<Vec<String>, sqlx::Error> {
        self.db
            .stmt(USERS_WITH_ROLE)
            .bind(role.key().unwrap_or(""))
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect()
    }

    /// Opens a remediation in the validating transaction.
    pub async fn insert_remediation(
        &self,
        tx: &mut WriteTx,
        r: &Remediation,
    ) -> Result<(), sqlx::Error> {
        self.db
            .stmt(INSERT_REMEDIATION)
            .bind(r.remediation_id.clone())
            .bind(r.test_id.clone())
            .bind(r.technique_id.clone())
            .bind(r.assignee_id.clone())
            .bind(r.opened_at)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// One remediation.
    pub async fn remediation(
        &self,
        tx: &mut WriteTx,
        id: &str,
    ) -> Result<Option<Remediation>, sqlx::Error> {
        self.db
            .stmt(REMEDIATION)
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(remediation_row)
            .transpose()
    }

    /// A filtered page of remediations, newest first.
    pub async fn list_remediations(
        &self,
        state: Option<RemediationState>,
        technique: &str,
        page: &Page,
    ) -> Result<Vec<Remediation>, sqlx::Error> {
        self.db
            .stmt(LIST_REMEDIATIONS)
            .bind(state.map_or("", RemediationState::key))
            .bind(technique.to_owned())
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
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
    ) -> Result<Vec<Remediation>, sqlx::Error> {
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
        tx: &mut WriteTx,
        r: &Remediation,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(UPDATE_REMEDIATION)
            .bind(r.remediation_id.clone())
            .bind(version)
            .bind(r.state.key())
            .bind(r.notes.clone())
            .bind(r.completed_at)
            .bind(r.started_at)
            .execute(&mut *tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts notifications in one statement.
    pub async fn insert_notifications(
        &self,
        tx: &mut WriteTx,
        rows: &[NotificationRow],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        self.db
            .stmt(INSERT_NOTIFICATIONS)
            .bind_rows(rows)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Notifies every purple lead of each (key, message) regression once:
    /// one statement; how many notifications are new.
    pub async fn notify_regressions(
        &self,
        regressions: &[RegressionNotice],
        at: Micros,
    ) -> Result<u64, sqlx::Error> {
        if regressions.is_empty() {
            return Ok(0);
        }
        let done = self
            .db
            .stmt(NOTIFY_REGRESSIONS)
            .bind_rows(regressions)
            .bind(at)
            .write(&self.db)
            .await?;
        Ok(done.rows_affected())
    }

    /// A page of a user's notifications.
    pub async fn list_notifications(
        &self,
        user_id: &str,
        unread_only: bool,
        page: &Page,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        self.db
            .stmt(LIST_NOTIFICATIONS)
            .bind(user_id.to_owned())
            .bind(i64::from(unread_only))
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
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
            .write(&self.db)
            .await?;
        Ok(done.rows_affected())
    }

    /// Adds a worklog; false when the test does not exist.
    pub async fn insert_worklog(
        &self,
        tx: &mut WriteTx,
        w: &WorklogRow,
    ) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .stmt(INSERT_WORKLOG)
            .bind(w.worklog_id.clone())
            .bind(w.test_id.clone())
            .bind(w.user_id.clone())
            .bind(w.minutes)
            .bind(w.note.clone())
            .bind(w.logged_at)
            .execute(&mut *tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page of worklogs and the total minutes of the whole filter.
    pub async fn list_worklogs(
        &self,
        test_id: &str,
        user_id: &str,
        page: &Page,
    ) -> Result<(Vec<WorklogRow>, i64), sqlx::Error> {
        let rows = self
            .db
            .stmt(LIST_WORKLOGS)
            .bind(test_id.to_owned())
            .bind(user_id.to_owned())
            .bind(page.limit())
            .bind(page.has_cursor())
            .bind(page.instant(0))
            .bind(page.text(1))
            .fetch_all(self.db.pool())
            .await?;
        let total = match rows.first() {
            Some(row) => row.try_get(6)?,
            None => 0,
        };
        // The total's row alone (no worklog matched) has a NULL id.
        let logs = rows
            .iter()
            .filter(|row| matches!(row.try_get::<Option<String>, _>(0), Ok(Some(_))))
            .map(worklog_row)
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((logs, total))
    }
}

/// A worklog from its columns (worklog_id, test_id, user_id, minutes, note,
/// logged_at), starting at column 0.
pub(crate) fn worklog_row(row: &AnyRow) -> Result<WorklogRow, sqlx::Error> {
    Ok(WorklogRow {
        worklog_id: row.try_get(0)?,
        test_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        minutes: row.try_get(3)?,
        note: row.try_get(4)?,
        logged_at: row.try_get(5)?,
    })
}
