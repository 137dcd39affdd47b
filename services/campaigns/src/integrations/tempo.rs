//! Tempo Cloud (REST API v4, apidocs.tempo.io): a Purple worklog becomes a
//! Tempo worklog on the Jira issue of its test's remediation ("Worklogs:
//! Create worklog" POST /4/worklogs {issueId, timeSpentSeconds, startDate,
//! startTime, description, authorAccountId} → 200 {tempoWorklogId, …};
//! "Worklogs: Retrieve worklogs associated to an issue" GET
//! /4/worklogs/issue/{issueId} → {results: [{tempoWorklogId, description,
//! …}]}), authenticated with a Bearer token. Each worklog's description
//! carries its Purple id, so a retry after an attempt whose answer was lost
//! finds the worklog instead of logging the time twice.

use serde_json::{Value, json};

use super::http::{Failure, send};

/// A worklog to log.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorklogPayload {
    pub worklog_id: String,
    pub test_id: String,
    pub user_id: String,
    pub minutes: i64,
    pub note: String,
    /// RFC 3339, UTC.
    pub logged_at: String,
}

/// The Tempo connection.
#[derive(Clone)]
pub struct Tempo {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    authorization: reqwest::header::HeaderValue,
    pub(crate) account_id: String,
    /// Purple user id → Atlassian account id.
    pub(crate) accounts: std::collections::BTreeMap<String, String>,
    pub(crate) default_issue_id: String,
}

impl std::fmt::Debug for Tempo {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tempo")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The marker a worklog's description carries.
pub fn marker(worklog_id: &str) -> String {
    format!("[purple:{worklog_id}]")
}

impl Tempo {
    /// A client for `base` (https://api.tempo.io).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: &str,
        account_id: String,
        accounts: std::collections::BTreeMap<String, String>,
        default_issue_id: String,
    ) -> anyhow::Result<Self> {
        let mut authorization = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the Tempo token holds characters a header cannot"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            authorization,
            account_id,
            accounts,
            default_issue_id,
        })
    }

    /// The Tempo worklog already carrying this worklog's marker, if any.
    pub async fn find(&self, issue_id: &str, worklog_id: &str) -> Result<Option<String>, Failure> {
        let request = self
            .http
            .get(format!(
                "{}/4/worklogs/issue/{issue_id}?limit=1000",
                self.base
            ))
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone());
        let answer = send(request, "GET /4/worklogs/issue/{issueId}").await?;
        let marker = marker(worklog_id);
        Ok(answer["results"].as_array().and_then(|results| {
            results
                .iter()
                .find(|w| {
                    w["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&marker))
                })
                .and_then(|w| tempo_id(&w["tempoWorklogId"]))
        }))
    }

    /// Logs a worklog on an issue; its Tempo id.
    pub async fn create(&self, issue_id: &str, w: &WorklogPayload) -> Result<String, Failure> {
        let logged = chrono::DateTime::parse_from_rfc3339(&w.logged_at)
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let started = logged - chrono::Duration::minutes(w.minutes);
        let issue: Value = issue_id
            .parse::<i64>()
            .map_or_else(|_| Value::String(issue_id.to_owned()), Value::from);
        let body = json!({
            "issueId": issue,
            "timeSpentSeconds": w.minutes * 60,
            "startDate": started.format("%Y-%m-%d").to_string(),
            "startTime": started.format("%H:%M:%S").to_string(),
            "description": format!("{} {}", w.note, marker(&w.worklog_id)).trim().to_owned(),
            "authorAccountId": self.accounts.get(&w.user_id).unwrap_or(&self.account_id),
        });
        let request = self
            .http
            .post(format!("{}/4/worklogs", self.base))
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .json(&body);
        let created = send(request, "POST /4/worklogs").await?;
        tempo_id(&created["tempoWorklogId"]).ok_or_else(|| Failure::Retry {
            after: None,
            reason: "POST /4/worklogs: the answer carries no tempoWorklogId".to_owned(),
        })
    }
}

fn tempo_id(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}
