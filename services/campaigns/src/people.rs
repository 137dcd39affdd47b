//! The people side of campaigns: users and their roles, their
//! notifications, worklogs, and the remediation list. Who may create users
//! is a rule of the domain ([`domain::may_create_users`]).

use purple_api::{batch::check_batch_len, common::v1::Role};
use purple_runtime::{paging::Page, time::now_micros};

use crate::{
    domain::{self, Remediation, RemediationState},
    error::CampaignError,
    store::{
        CampaignStore,
        people::{NotificationRow, UserRow, WorklogRow},
    },
    workflow::{new_id, role_of},
};

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub display_name: String,
    /// None when the request named no role.
    pub role: Option<Role>,
}

/// The sort key of the user list: (display name, id).
pub const USER_KEY_LEN: usize = 2;
/// The sort key of the time-ordered lists (remediations, notifications,
/// worklogs): (instant, id), newest first.
pub const TIMED_KEY_LEN: usize = 2;

/// The longest display name.
const MAX_NAME_LEN: usize = 200;
/// The longest worklog note.
const MAX_NOTE_LEN: usize = 10_000;

/// Users, notifications, worklogs and the remediation list.
#[derive(Clone, Debug)]
pub struct People {
    pub(crate) store: CampaignStore,
}

impl People {
    /// Creates users in one statement: anyone may create the first users,
    /// an admin afterwards.
    pub async fn create_users(
        &self,
        actor_id: &str,
        users: Vec<NewUser>,
    ) -> Result<Vec<UserRow>, CampaignError> {
        check_batch_len("users", users.len())?;
        let (count, role) = self.store.user_count_and_role(actor_id).await?;
        domain::may_create_users(count, role)?;
        let now = now_micros();
        let rows = users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let role = u.role.ok_or_else(|| {
                    CampaignError::invalid(format!("users[{i}].role"), "required")
                })?;
                let name = u.display_name.trim();
                if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
                    return Err(CampaignError::invalid(
                        format!("users[{i}].display_name"),
                        "required, at most 200 characters, without NUL",
                    ));
                }
                Ok(UserRow {
                    user_id: new_id(),
                    display_name: name.to_owned(),
                    role,
                    created_at: now,
                })
            })
            .collect::<Result<Vec<_>, CampaignError>>()?;
        self.store.insert_users(&rows).await?;
        Ok(rows)
    }

    /// A page of users (all, or with one role), by name, and the next
    /// token.
    pub async fn list_users(
        &self,
        role: Option<Role>,
        page: &Page,
    ) -> Result<(Vec<UserRow>, String), CampaignError> {
        let mut users = self.store.list_users(role, page).await?;
        let next = page.finish(&mut users, |u| {
            vec![(&u.display_name).into(), (&u.user_id).into()]
        });
        Ok((users, next))
    }

    /// A page of remediations, newest first, and the next token.
    pub async fn list_remediations(
        &self,
        state: Option<RemediationState>,
        technique_id: &str,
        page: &Page,
    ) -> Result<(Vec<Remediation>, String), CampaignError> {
        let mut rows = self
            .store
            .list_remediations(state, technique_id, page)
            .await?;
        let next = page.finish(&mut rows, |r| {
            vec![r.opened_at.into(), (&r.remediation_id).into()]
        });
        Ok((rows, next))
    }

    /// A page of a user's notifications, newest first, and the next token.
    pub async fn list_notifications(
        &self,
        user_id: &str,
        unread_only: bool,
        page: &Page,
    ) -> Result<(Vec<NotificationRow>, String), CampaignError> {
        if user_id.is_empty() {
            return Err(CampaignError::invalid("user_id", "required"));
        }
        let mut rows = self
            .store
            .list_notifications(user_id, unread_only, page)
            .await?;
        let next = page.finish(&mut rows, |n| {
            vec![n.created_at.into(), (&n.notification_id).into()]
        });
        Ok((rows, next))
    }

    /// Marks a user's notifications read; how many changed.
    pub async fn mark_read(&self, user_id: &str, ids: &[String]) -> Result<u64, CampaignError> {
        check_batch_len("notification_ids", ids.len())?;
        Ok(self.store.mark_read(user_id, ids).await?)
    }

    /// Logs time on a test.
    pub async fn add_worklog(
        &self,
        user_id: &str,
        test_id: &str,
        minutes: i64,
        note: String,
    ) -> Result<WorklogRow, CampaignError> {
        if minutes <= 0 {
            return Err(CampaignError::invalid(
                "worklog.minutes",
                "must be positive",
            ));
        }
        if note.len() > MAX_NOTE_LEN {
            return Err(CampaignError::invalid(
                "worklog.note",
                "longer than 10,000 bytes",
            ));
        }
        role_of(&self.store, user_id).await?;
        let row = WorklogRow {
            worklog_id: new_id(),
            test_id: test_id.to_owned(),
            user_id: user_id.to_owned(),
            minutes,
            note,
            logged_at: now_micros(),
        };
        if !self.store.insert_worklog(&row).await? {
            return Err(CampaignError::NotFound(format!(
                "test {test_id} does not exist"
            )));
        }
        Ok(row)
    }

    /// A page of worklogs, newest first, the total minutes of the whole
    /// filter, and the next token.
    pub async fn list_worklogs(
        &self,
        test_id: &str,
        user_id: &str,
        page: &Page,
    ) -> Result<(Vec<WorklogRow>, i64, String), CampaignError> {
        let (mut rows, total) = self.store.list_worklogs(test_id, user_id, page).await?;
        let next = page.finish(&mut rows, |w| {
            vec![w.logged_at.into(), (&w.worklog_id).into()]
        });
        Ok((rows, total, next))
    }
}
