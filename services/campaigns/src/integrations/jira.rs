//! Jira Cloud (REST v3) and Data Center (REST v2): the calls remediations
//! make. Endpoints and shapes as the Jira REST API documentation gives them
//! (developer.atlassian.com/cloud/jira/platform/rest/v3, "Issues: Create
//! issue" POST /rest/api/3/issue → 201 {id, key, self}; "Issues: Transition
//! issue" POST /rest/api/3/issue/{issueIdOrKey}/transitions {transition:
//! {id}} → 204; "Issue comments: Add comment" POST
//! /rest/api/3/issue/{issueIdOrKey}/comment {body} → 201; "Issue search:
//! Search for issues using JQL enhanced search" POST
//! /rest/api/3/search/jql {jql, fields, maxResults} → {issues: [{id, key,
//! fields}]}; v2 takes the same paths under /rest/api/2 with plain-text
//! description and comment bodies, and searches with POST
//! /rest/api/2/search). Cloud authenticates with Basic email:API token,
//! Data Center with a Bearer personal access token.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::http::{Failure, send};

/// What an issue is made from: the remediation and the test that opened it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenPayload {
    pub remediation_id: String,
    pub test_id: String,
    pub technique_id: String,
    pub title: String,
    pub campaign_id: String,
    pub outcome: String,
    pub executed_at: String,
    pub detected_at: String,
    pub validated_at: String,
}

/// A detection result as the description lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultLine {
    pub source: String,
    pub rule_id: String,
    pub triggered: bool,
}

/// The Jira connection and what the settings chose.
#[derive(Clone)]
pub struct Jira {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) version: u8,
    authorization: reqwest::header::HeaderValue,
    pub(crate) project: String,
    pub(crate) issue_type: String,
    pub(crate) transition_start: String,
    pub(crate) transition_done: String,
}

impl std::fmt::Debug for Jira {
    // Never the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jira")
            .field("base", &self.base)
            .field("version", &self.version)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// Jira credentials: Cloud's email and API token, or a Data Center
/// personal access token.
#[derive(Clone)]
pub enum JiraAuth {
    Basic { email: String, token: String },
    Bearer(String),
}

impl Jira {
    /// A client for `base` (no trailing slash needed).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        base: &str,
        version: u8,
        auth: JiraAuth,
        project: String,
        issue_type: String,
        transition_start: String,
        transition_done: String,
    ) -> anyhow::Result<Self> {
        let value = match auth {
            JiraAuth::Basic { email, token } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"))
            ),
            JiraAuth::Bearer(token) => format!("Bearer {token}"),
        };
        let mut authorization = reqwest::header::HeaderValue::from_str(&value)
            .map_err(|_| anyhow::anyhow!("the Jira credentials hold characters a header cannot"))?;
        authorization.set_sensitive(true);
        anyhow::ensure!(version == 2 || version == 3, "--jira-api-version is 2 or 3");
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            version,
            authorization,
            project,
            issue_type,
            transition_start,
            transition_done,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/rest/api/{}/{path}", self.base, self.version)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        send(request, &format!("POST /rest/api/{}/{path}", self.version)).await
    }

    /// Text as the API version wants it: Atlassian Document Format
    /// paragraphs (v3) or plain text (v2).
    fn text(&self, lines: &[String]) -> Value {
        if self.version == 2 {
            return Value::String(lines.join("\n"));
        }
        json!({
            "type": "doc",
            "version": 1,
            "content": lines.iter().filter(|l| !l.is_empty()).map(|l| json!({
                "type": "paragraph",
                "content": [{"type": "text", "text": l}],
            })).collect::<Vec<_>>(),
        })
    }

    /// The label that finds a remediation's issue again.
    pub fn label(remediation_id: &str) -> String {
        format!("purple-{remediation_id}")
    }

    /// Creates the issue of a remediation: (id, key).
    pub async fn create(
        &self,
        p: &OpenPayload,
        results: &[ResultLine],
    ) -> Result<(String, String), Failure> {
        let mut lines = vec![
            format!(
                "Purple remediation {} for technique {}.",
                p.remediation_id, p.technique_id
            ),
            format!("Test: {} ({})", p.test_id, p.title),
            format!("Outcome: {}", p.outcome),
            format!("Executed at: {}", p.executed_at),
            format!(
                "Detected at: {}",
                if p.detected_at.is_empty() {
                    "-"
                } else {
                    &p.detected_at
                }
            ),
            format!("Validated at: {}", p.validated_at),
            format!(
                "Campaign: {}",
                if p.campaign_id.is_empty() {
                    "-"
                } else {
                    &p.campaign_id
                }
            ),
            format!(
                "ATT&CK: https://attack.mitre.org/techniques/{}/",
                p.technique_id.replace('.', "/")
            ),
        ];
        if results.is_empty() {
            lines.push("Detection results: none recorded.".to_owned());
        }
        for r in results {
            lines.push(format!(
                "Detection result: {}:{} {}",
                if r.source.is_empty() {
                    "any"
                } else {
                    &r.source
                },
                r.rule_id,
                if r.triggered {
                    "triggered"
                } else {
                    "did not trigger"
                }
            ));
        }
        let body = json!({"fields": {
            "project": {"key": self.project},
            "issuetype": {"name": self.issue_type},
            "summary": format!("[Purple] {} {}: remediate", p.technique_id, p.outcome.replace('_', " ")),
            "description": self.text(&lines),
            "labels": ["purple", Self::label(&p.remediation_id)],
        }});
        let created = self.post("issue", &body).await?;
        issue_ref(&created).ok_or_else(|| Failure::Retry {
            after: None,
            reason: "POST issue: the answer carries no id and key".to_owned(),
        })
    }

    /// The issue carrying a remediation's label, if an earlier attempt
    /// created it.
    pub async fn find(&self, remediation_id: &str) -> Result<Option<(String, String)>, Failure> {
        let jql = format!("labels = \"{}\"", Self::label(remediation_id));
        let found = self.search(&jql, 1).await?;
        Ok(found.first().and_then(issue_ref))
    }

    /// Issues of a JQL query (at most `max`).
    async fn search(&self, jql: &str, max: usize) -> Result<Vec<Value>, Failure> {
        let path = if self.version == 3 {
            "search/jql"
        } else {
            "search"
        };
        let body = json!({"jql": jql, "fields": ["status"], "maxResults": max});
        let answer = self.post(path, &body).await?;
        Ok(answer["issues"].as_array().cloned().unwrap_or_default())
    }

    /// The status name of each issue key (one search).
    pub async fn statuses(&self, keys: &[String]) -> Result<Vec<(String, String)>, Failure> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        let jql = format!("key in ({})", quoted.join(", "));
        Ok(self
            .search(&jql, keys.len())
            .await?
            .iter()
            .filter_map(|i| {
                Some((
                    i["key"].as_str()?.to_owned(),
                    i["fields"]["status"]["name"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    /// Applies a transition by id.
    pub async fn transition(&self, key: &str, transition: &str) -> Result<(), Failure> {
        let body = json!({"transition": {"id": transition}});
        self.post(&format!("issue/{key}/transitions"), &body)
            .await
            .map(drop)
    }

    /// Comments on an issue.
    pub async fn comment(&self, key: &str, lines: &[String]) -> Result<(), Failure> {
        let body = json!({"body": self.text(lines)});
        self.post(&format!("issue/{key}/comment"), &body)
            .await
            .map(drop)
    }
}

/// (id, key) of an issue in an answer: a numeric id and a `PROJECT-123`
/// key, or nothing (they go into paths of later calls, so an answer from a
/// broken or hostile peer cannot steer them elsewhere).
fn issue_ref(issue: &Value) -> Option<(String, String)> {
    let id = match &issue["id"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let key = issue["key"].as_str()?.to_owned();
    let key_ok = key.split_once('-').is_some_and(|(project, number)| {
        !project.is_empty()
            && project.len() <= 255
            && project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !number.is_empty()
            && number.len() <= 18
            && number.bytes().all(|b| b.is_ascii_digit())
    });
    let id_ok = !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit());
    (key_ok && id_ok).then_some((id, key))
}

/// How long to wait before the next attempt: the peer's Retry-After, or
/// the interval doubled per attempt, at most five minutes.
pub fn backoff(interval: Duration, attempts: i64, after: Option<Duration>) -> Duration {
    let doubled = interval.saturating_mul(1 << attempts.clamp(0, 16) as u32);
    after.unwrap_or(doubled.min(Duration::from_secs(300)))
}
