//! The people side of campaigns: who acts ([`Directory`]: the users a
//! token names, made on first use), users an admin creates ahead of their
//! first token, notifications, worklogs, and the remediation list.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use purple_api::{
    batch::{check_batch_len, check_ids},
    common::v1::Role,
};
use purple_runtime::{auth::Caller, paging::Page, time::now_micros};

use crate::{
    domain::{self, Remediation, RemediationState},
    error::CampaignError,
    store::{
        CampaignStore,
        people::{NotificationRow, RegressionNotice, UserRow, WorklogRow},
    },
    workflow::new_id,
};

/// The Jira issue of remediations, by remediation id.
pub type JiraIssues = std::collections::BTreeMap<String, crate::store::integrations::JiraIssue>;

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The id its tokens will carry as subject; a new one when empty.
    pub user_id: String,
    pub display_name: String,
    /// None when the request named no role.
    pub role: Option<Role>,
}

/// A technique whose status went down, as scoring reports it: statuses
/// by their vocabulary key.
#[derive(Clone, Debug, PartialEq)]
pub struct Regression {
    pub key: String,
    pub technique_id: String,
    pub old_status: &'static str,
    pub new_status: &'static str,
    pub old_score: f64,
    pub new_score: f64,
}

/// The most users the directory remembers as already stored; past it, it
/// forgets and checks again (one upsert per mutation), so memory stays
/// bounded.
const KNOWN_USERS: usize = 100_000;

/// Who acts. A caller is the subject of a verified token; the first time a
/// subject acts, it becomes a user (id = subject, role = the token's), and
/// a role changed at the identity provider is carried over. Remembering
/// whom it has stored saves that statement on every later mutation.
#[derive(Clone, Debug)]
pub struct Directory {
    store: CampaignStore,
    known: Arc<Mutex<HashMap<String, Role>>>,
}

impl Directory {
    /// The directory over the campaigns store.
    pub fn new(store: CampaignStore) -> Self {
        Self {
            store,
            known: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Requires the caller to hold one of `roles` for `what`, and makes
    /// sure it is a user.
    pub async fn acting(
        &self,
        caller: &Caller,
        roles: &[Role],
        what: &str,
    ) -> Result<(), CampaignError> {
        domain::require_role(&caller.roles, roles, what)?;
        self.ensure(caller).await
    }

    /// Makes sure a person calling is a user (services are not).
    pub async fn ensure(&self, caller: &Caller) -> Result<(), CampaignError> {
        if caller.is_service() {
            return Ok(());
        }
        let role = caller.primary_role();
        if self.known().get(&caller.subject) == Some(&role) {
            return Ok(());
        }
        self.store
            .upsert_user(&caller.subject, &caller.name, role, now_micros())
            .await?;
        self.remember([(caller.subject.clone(), role)]);
        Ok(())
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Role>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, users: impl IntoIterator<Item = (String, Role)>) {
        let mut known = self.known();
        for (id, role) in users {
            if known.len() >= KNOWN_USERS {
                known.clear();
            }
            known.insert(id, role);
        }
    }
}

/// The sort key of the user list: (display name, id).
pub const USER_KEY_LEN: usize = 2;
/// The sort key of the time-ordered lists (remediations, notifications,
/// worklogs): (instant, id), newest first.
pub const TIMED_KEY_LEN: usize = 2;

/// The longest display name, in bytes (the history import holds to it too).
pub const MAX_DISPLAY_NAME_BYTES: usize = 200;
/// The longest worklog note, in bytes (the history import holds to it too).
pub const MAX_WORKLOG_NOTE_BYTES: usize = 10_000;

/// Users, notifications, worklogs and the remediation list.
#[derive(Clone, Debug)]
pub struct People {
    pub(crate) store: CampaignStore,
    pub(crate) directory: Directory,
    /// Tempo, when on: told in the worklog's transaction.
    pub(crate) integrations: crate::integrations::Integrations,
}

/// A user id or subject: what an identity provider may issue.
fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.chars().any(char::is_control)
}

impl People {
    /// Creates users in one statement (an admin's, as the roles table
    /// says): each with the id its tokens will carry, or a new one.
    pub async fn create_users(
        &self,
        caller: &Caller,
        users: Vec<NewUser>,
    ) -> Result<Vec<UserRow>, CampaignError> {
        check_batch_len("users", users.len())?;
        if users.is_empty() {
            return Err(CampaignError::invalid("users", "at least one user"));
        }
        self.directory
            .acting(caller, &[Role::Admin], "creating users")
            .await?;
        let now = now_micros();
        let rows = users
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let role = u.role.ok_or_else(|| {
                    CampaignError::invalid(format!("users[{i}].role"), "required")
                })?;
                let name = u.display_name.trim();
                if name.is_empty() || name.len() > MAX_DISPLAY_NAME_BYTES || name.contains('\0') {
                    return Err(CampaignError::invalid(
                        format!("users[{i}].display_name"),
                        "required, at most 200 characters, without NUL",
                    ));
                }
                let user_id = if u.user_id.is_empty() {
                    new_id()
                } else if valid_user_id(&u.user_id) {
                    u.user_id
                } else {
                    return Err(CampaignError::invalid(
                        format!("users[{i}].user_id"),
                        "at most 256 characters, without control characters",
                    ));
                };
                Ok(UserRow {
                    user_id,
                    display_name: name.to_owned(),
                    role,
                    created_at: now,
                })
            })
            .collect::<Result<Vec<_>, CampaignError>>()?;
        let mut ids: Vec<&str> = rows.iter().map(|u| u.user_id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(CampaignError::invalid("users", "a user id appears twice"));
        }
        self.store.insert_users(&rows).await.map_err(|e| {
            crate::workflow::unique(e, "users", "a user with that id already exists")
        })?;
        self.directory
            .remember(rows.iter().map(|u| (u.user_id.clone(), u.role)));
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
    ) -> Result<(Vec<Remediation>, JiraIssues, String), CampaignError> {
        let mut rows = self
            .store
            .list_remediations(state, technique_id, page)
            .await?;
        let next = page.finish(&mut rows, |r| {
            vec![r.opened_at.into(), (&r.remediation_id).into()]
        });
        // Their Jira issues: one more statement, only with Jira on.
        let issues = if self.integrations.jira.is_some() && !rows.is_empty() {
            let ids: Vec<String> = rows.iter().map(|r| r.remediation_id.clone()).collect();
            self.store.jira_issues_of(&ids).await?
        } else {
            JiraIssues::new()
        };
        Ok((rows, issues, next))
    }

    /// A page of a user's notifications (the caller's own; an admin may
    /// read anyone's), newest first, and the next token.
    pub async fn list_notifications(
        &self,
        caller: &Caller,
        user_id: &str,
        unread_only: bool,
        page: &Page,
    ) -> Result<(Vec<NotificationRow>, String), CampaignError> {
        let user_id = if user_id.is_empty() {
            caller.subject.as_str()
        } else if user_id == caller.subject || caller.has(Role::Admin) {
            user_id
        } else {
            return Err(CampaignError::Forbidden(
                "a user reads only their own notifications".into(),
            ));
        };
        let mut rows = self
            .store
            .list_notifications(user_id, unread_only, page)
            .await?;
        let next = page.finish(&mut rows, |n| {
            vec![n.created_at.into(), (&n.notification_id).into()]
        });
        Ok((rows, next))
    }

    /// Marks the caller's notifications read; how many changed.
    pub async fn mark_read(&self, caller: &Caller, ids: &[String]) -> Result<u64, CampaignError> {
        check_ids("notification_ids", ids)?;
        Ok(self.store.mark_read(&caller.subject, ids).await?)
    }

    /// Tells every purple lead of each regression, once per regression key
    /// however often scoring delivers it.
    pub async fn notify_regressions(
        &self,
        regressions: &[Regression],
    ) -> Result<u64, CampaignError> {
        check_batch_len("regressions", regressions.len())?;
        let mut notices = Vec::with_capacity(regressions.len());
        for (i, r) in regressions.iter().enumerate() {
            let key = r.key.trim();
            let key_ok = !key.is_empty()
                && key.len() <= 100
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !key_ok {
                return Err(CampaignError::invalid(
                    format!("regressions[{i}].regression_key"),
                    "1 to 100 characters of letters, digits and -_.:",
                ));
            }
            let technique = r.technique_id.trim();
            if technique.is_empty() || technique.len() > 20 {
                return Err(CampaignError::invalid(
                    format!("regressions[{i}].technique_id"),
                    "an ATT&CK technique id",
                ));
            }
            if !(r.old_score.is_finite() && r.new_score.is_finite()) {
                return Err(CampaignError::invalid(
                    format!("regressions[{i}].new_score"),
                    "scores must be finite",
                ));
            }
            notices.push(RegressionNotice {
                key: key.to_owned(),
                message: format!(
                    "{technique} regressed from {} ({:.1}) to {} ({:.1})",
                    r.old_status, r.old_score, r.new_status, r.new_score
                ),
            });
        }
        Ok(self
            .store
            .notify_regressions(&notices, now_micros())
            .await?)
    }

    /// Logs the caller's time on a test.
    pub async fn add_worklog(
        &self,
        caller: &Caller,
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
        if note.len() > MAX_WORKLOG_NOTE_BYTES {
            return Err(CampaignError::invalid(
                "worklog.note",
                "longer than 10,000 bytes",
            ));
        }
        if minutes > 24 * 60 {
            return Err(CampaignError::invalid(
                "worklog.minutes",
                "at most a day (1,440) per entry",
            ));
        }
        self.directory.ensure(caller).await?;
        let row = WorklogRow {
            worklog_id: new_id(),
            test_id: test_id.to_owned(),
            user_id: caller.subject.clone(),
            minutes,
            note,
            logged_at: now_micros(),
        };
        let mut tx = self.store.db().begin().await?;
        if !self.store.insert_worklog(&mut tx, &row).await? {
            return Err(CampaignError::NotFound(format!(
                "test {test_id} does not exist"
            )));
        }
        self.store
            .enqueue_integrations(&mut tx, &self.integrations.logged(&row), row.logged_at)
            .await?;
        tx.commit().await?;
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
