//! Work tracking (docs/design.md §3, "Work tracking"): remediations as
//! Jira issues and worklogs as Tempo worklogs, delivered from an outbox of
//! their own as two more receivers. Off unless configured: then nothing is
//! enqueued and no HTTP call is made. On, the change and what is to be
//! told are written in one transaction; each receiver delivers its rows in
//! order (so a remediation's issue exists before it moves), records an
//! attempt before making it (a retry after a crash looks for what an
//! earlier attempt may have created: the issue's label, the worklog's
//! marker), backs off while the peer fails or asks to wait (Retry-After),
//! and sets a refusal for good (a 4xx other than 408 and 429) aside as a
//! dead letter, with the response, and goes on.

pub mod http;
pub mod jira;
pub mod tempo;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use purple_runtime::{
    settings::IntegrationSettings,
    time::{Micros, now_micros},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    domain::{Remediation, RemediationState, TestRow},
    store::{
        CampaignStore,
        integrations::{JiraIssue, Outgoing, Pending, TestIssue},
        people::WorklogRow,
    },
};
use http::Failure;
use jira::{Jira, JiraAuth, OpenPayload, ResultLine};
use tempo::{Tempo, WorklogPayload};

/// Rows read per pass.
const BATCH: i64 = 100;
/// Issues per status search.
const STATUS_BATCH: i64 = 100;

/// The configured integrations (none by default).
#[derive(Clone, Debug, Default)]
pub struct Integrations {
    pub jira: Option<Arc<Jira>>,
    pub tempo: Option<Arc<Tempo>>,
    pub status_sync: Option<Duration>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Credentials {
    jira_email: Option<String>,
    jira_api_token: Option<String>,
    jira_pat: Option<String>,
    tempo_token: Option<String>,
}

impl Credentials {
    /// From the credentials file, else the environment.
    fn load(settings: &IntegrationSettings) -> anyhow::Result<Self> {
        if let Some(path) = &settings.integration_credentials_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            return toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()));
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            jira_email: var("PURPLE_JIRA_EMAIL"),
            jira_api_token: var("PURPLE_JIRA_API_TOKEN"),
            jira_pat: var("PURPLE_JIRA_PAT"),
            tempo_token: var("PURPLE_TEMPO_TOKEN"),
        })
    }
}

impl Integrations {
    /// The integrations the settings turn on; an integration turned on
    /// without its credentials or project is refused at start-up.
    pub fn from_settings(settings: &IntegrationSettings) -> anyhow::Result<Self> {
        if settings.jira_url.is_none() && settings.tempo_url.is_none() {
            return Ok(Self::default());
        }
        for (flag, url) in [
            ("--jira-url", &settings.jira_url),
            ("--tempo-url", &settings.tempo_url),
        ] {
            if let Some(url) = url {
                let parsed =
                    reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("{flag} {url:?}: {e}"))?;
                anyhow::ensure!(
                    matches!(parsed.scheme(), "https" | "http") && parsed.host().is_some(),
                    "{flag} {url:?}: an http(s) URL with a host is required"
                );
            }
        }
        let credentials = Credentials::load(settings)?;
        let http = http::client(Duration::from_secs(
            settings.integration_timeout_secs.max(1),
        ))?;
        let jira = match &settings.jira_url {
            None => None,
            Some(url) => {
                anyhow::ensure!(
                    !settings.jira_project.is_empty(),
                    "--jira-url needs --jira-project"
                );
                let auth = match (
                    &credentials.jira_pat,
                    &credentials.jira_email,
                    &credentials.jira_api_token,
                ) {
                    (Some(pat), _, _) => JiraAuth::Bearer(pat.clone()),
                    (None, Some(email), Some(token)) => JiraAuth::Basic {
                        email: email.clone(),
                        token: token.clone(),
                    },
                    _ => anyhow::bail!(
                        "--jira-url needs credentials: PURPLE_JIRA_EMAIL and PURPLE_JIRA_API_TOKEN, or PURPLE_JIRA_PAT (or the credentials file)"
                    ),
                };
                Some(Arc::new(Jira::new(
                    http.clone(),
                    url,
                    settings.jira_api_version,
                    auth,
                    settings.jira_project.clone(),
                    settings.jira_issue_type.clone(),
                    settings.jira_transition_start.clone(),
                    settings.jira_transition_done.clone(),
                )?))
            }
        };
        let tempo = match &settings.tempo_url {
            None => None,
            Some(url) => {
                let token = credentials.tempo_token.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--tempo-url needs PURPLE_TEMPO_TOKEN (or the credentials file)"
                    )
                })?;
                anyhow::ensure!(
                    !settings.tempo_account_id.is_empty(),
                    "--tempo-url needs --tempo-account-id"
                );
                let accounts = match &settings.tempo_accounts_file {
                    None => Default::default(),
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        toml::from_str(&text)
                            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?
                    }
                };
                Some(Arc::new(Tempo::new(
                    http,
                    url,
                    &token,
                    settings.tempo_account_id.clone(),
                    accounts,
                    settings.tempo_default_issue_id.clone(),
                )?))
            }
        };
        Ok(Self {
            jira,
            tempo,
            status_sync: (settings.jira_status_sync_secs > 0)
                .then(|| Duration::from_secs(settings.jira_status_sync_secs)),
        })
    }

    /// What a remediation opened by `test`'s validation tells Jira.
    pub fn opened(&self, r: &Remediation, test: &TestRow) -> Vec<Outgoing> {
        if self.jira.is_none() {
            return Vec::new();
        }
        let at = |m: Option<Micros>| m.map(|m| m.datetime().to_rfc3339()).unwrap_or_default();
        let payload = OpenPayload {
            remediation_id: r.remediation_id.clone(),
            test_id: test.test_id.clone(),
            technique_id: test.technique_id.clone(),
            title: test.title.clone(),
            campaign_id: test.campaign_id.clone().unwrap_or_default(),
            outcome: test
                .outcome
                .and_then(purple_api::common::v1::Outcome::key)
                .unwrap_or("")
                .to_owned(),
            executed_at: at(test.executed_at),
            detected_at: at(test.detected_at),
            validated_at: at(test.validated_at),
        };
        vec![Outgoing {
            receiver: "jira",
            subject_id: r.remediation_id.clone(),
            action: "open",
            payload: serde_json::to_string(&payload).expect("payloads serialize"),
        }]
    }

    /// What a remediation's move tells Jira.
    pub fn moved(&self, r: &Remediation) -> Vec<Outgoing> {
        if self.jira.is_none() {
            return Vec::new();
        }
        let action = match r.state {
            RemediationState::InProgress => "start",
            RemediationState::Completed => "complete",
            RemediationState::Open => return Vec::new(),
        };
        let payload = serde_json::json!({"notes": r.notes});
        vec![Outgoing {
            receiver: "jira",
            subject_id: r.remediation_id.clone(),
            action,
            payload: payload.to_string(),
        }]
    }

    /// What a worklog tells Tempo.
    pub fn logged(&self, w: &WorklogRow) -> Vec<Outgoing> {
        if self.tempo.is_none() {
            return Vec::new();
        }
        let payload = WorklogPayload {
            worklog_id: w.worklog_id.clone(),
            test_id: w.test_id.clone(),
            user_id: w.user_id.clone(),
            minutes: w.minutes,
            note: w.note.clone(),
            logged_at: w.logged_at.datetime().to_rfc3339(),
        };
        vec![Outgoing {
            receiver: "tempo",
            subject_id: w.worklog_id.clone(),
            action: "worklog",
            payload: serde_json::to_string(&payload).expect("payloads serialize"),
        }]
    }
}

/// What one row's delivery came to.
enum Step {
    Done,
    Wait(Failure),
    Refused(String),
}

impl From<Failure> for Step {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused { reason, .. } => Step::Refused(reason),
            retry => Step::Wait(retry),
        }
    }
}

/// What a batch of rows needs to know, read once per batch and kept up to
/// date as the batch creates issues.
#[derive(Debug, Default)]
struct Known {
    /// Jira: the detection results of the tests whose issues are created.
    results: BTreeMap<String, Vec<crate::domain::DetectionResult>>,
    /// Jira: the issues of the batch's remediations.
    issues: BTreeMap<String, JiraIssue>,
    /// Jira: the batch's remediations whose issue is still to be created.
    pending_opens: std::collections::BTreeSet<String>,
    /// Tempo: the batch's worklogs already there.
    at_tempo: std::collections::BTreeSet<String>,
    /// Tempo: where each test's worklogs go.
    test_issues: BTreeMap<String, TestIssue>,
}

/// Delivers one receiver's rows.
#[derive(Clone, Debug)]
pub struct Deliverer {
    pub store: CampaignStore,
    pub integrations: Integrations,
    pub interval: Duration,
}

impl Deliverer {
    /// One pass over a receiver: its rows in order until one must wait.
    /// Returns how many rows were settled (delivered or set aside).
    pub async fn pass(&self, receiver: &'static str) -> Result<usize, sqlx::Error> {
        let rows = self.store.pending_integrations(receiver, BATCH).await?;
        if rows.is_empty() || rows[0].next_attempt_at > now_micros() {
            return Ok(0);
        }
        let span = tracing::info_span!("integration.deliver", receiver, rows = rows.len());
        self.deliver(receiver, rows).instrument(span).await
    }

    async fn deliver(
        &self,
        receiver: &'static str,
        rows: Vec<Pending>,
    ) -> Result<usize, sqlx::Error> {
        let mut known = self.known(receiver, &rows).await?;
        let mut settled = 0;
        for row in rows {
            if row.next_attempt_at > now_micros() {
                break;
            }
            // Recorded before the call: after a crash, the next attempt
            // knows this one may have reached the receiver.
            self.store.integration_attempt(row.seq).await?;
            let step = match receiver {
                "jira" => self.jira(&row, &mut known).await?,
                _ => self.tempo(&row, &known).await?,
            };
            let now = now_micros();
            match step {
                Step::Done => {
                    self.store.integration_delivered(row.seq, now).await?;
                    settled += 1;
                }
                Step::Refused(reason) => {
                    tracing::warn!(receiver, seq = row.seq, subject = %row.subject_id, action = %row.action, %reason, "refused for good; set aside as a dead letter");
                    self.store
                        .integration_dead(row.seq, receiver, &reason, now)
                        .await?;
                    settled += 1;
                }
                Step::Wait(failure) => {
                    let after = match &failure {
                        Failure::Retry { after, .. } => *after,
                        Failure::Refused { .. } => None,
                    };
                    let wait = jira::backoff(self.interval, row.attempts, after);
                    tracing::warn!(receiver, seq = row.seq, reason = failure.reason(), retry_in = ?wait, "delivery failed; retrying");
                    let at = now + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
                    self.store
                        .integration_retry(row.seq, at, failure.reason())
                        .await?;
                    break;
                }
            }
        }
        Ok(settled)
    }

    /// What a batch of a receiver's rows needs to know, read for the whole
    /// batch: one statement per set, whatever its size.
    async fn known(&self, receiver: &str, rows: &[Pending]) -> Result<Known, sqlx::Error> {
        let subjects: Vec<String> = rows.iter().map(|r| r.subject_id.clone()).collect();
        let mut known = Known::default();
        if receiver == "jira" {
            let tests: Vec<String> = rows
                .iter()
                .filter(|r| r.action == "open")
                .filter_map(|r| serde_json::from_str::<OpenPayload>(&r.payload).ok())
                .map(|p| p.test_id)
                .collect();
            if !tests.is_empty() {
                known.results = self.store.results_of(&tests).await?;
            }
            known.issues = self.store.jira_issues_of(&subjects).await?;
            known.pending_opens = self.store.jira_opens_pending(&subjects).await?;
        } else {
            let tests: Vec<String> = rows
                .iter()
                .filter_map(|r| serde_json::from_str::<WorklogPayload>(&r.payload).ok())
                .map(|p| p.test_id)
                .collect();
            known.at_tempo = self.store.tempo_worklogs_of(&subjects).await?;
            known.test_issues = self.store.issues_of_tests(&tests).await?;
        }
        Ok(known)
    }

    async fn jira(&self, row: &Pending, known: &mut Known) -> Result<Step, sqlx::Error> {
        let Some(jira) = &self.integrations.jira else {
            return Ok(Step::Wait(Failure::Retry {
                after: Some(Duration::from_secs(60)),
                reason: "Jira is not configured on this process".to_owned(),
            }));
        };
        let remediation = row.subject_id.as_str();
        if row.action == "open" {
            if known.issues.contains_key(remediation) {
                return Ok(Step::Done);
            }
            let Ok(payload) = serde_json::from_str::<OpenPayload>(&row.payload) else {
                return Ok(Step::Refused("an unreadable payload".to_owned()));
            };
            // An earlier attempt may have created it and lost the answer.
            let found = if row.attempts > 0 {
                match jira.find(remediation).await {
                    Ok(found) => found,
                    Err(failure) => return Ok(failure.into()),
                }
            } else {
                None
            };
            let (id, key) = match found {
                Some(found) => found,
                None => {
                    let lines: Vec<ResultLine> = known
                        .results
                        .get(&payload.test_id)
                        .into_iter()
                        .flatten()
                        .map(|r| ResultLine {
                            source: r.source.clone(),
                            rule_id: r.rule_id.clone(),
                            triggered: r.triggered,
                        })
                        .collect();
                    match jira.create(&payload, &lines).await {
                        Ok(created) => {
                            tracing::info!(remediation, issue = %created.1, "Jira issue created");
                            created
                        }
                        Err(failure) => return Ok(failure.into()),
                    }
                }
            };
            self.store
                .save_jira_issue(remediation, &id, &key, "", now_micros())
                .await?;
            known.pending_opens.remove(remediation);
            known.issues.insert(
                remediation.to_owned(),
                JiraIssue {
                    issue_id: id,
                    key,
                    status: String::new(),
                },
            );
            return Ok(Step::Done);
        }
        let Some(key) = known.issues.get(remediation).map(|i| i.key.clone()) else {
            if known.pending_opens.contains(remediation) {
                return Ok(Step::Wait(Failure::Retry {
                    after: None,
                    reason: format!("remediation {remediation}: its issue is still to be created"),
                }));
            }
            return Ok(Step::Refused(format!(
                "remediation {remediation} has no Jira issue (its creation was refused)"
            )));
        };
        let retried = row.attempts > 0;
        if row.action == "complete" && !row.progress.contains("commented") {
            let notes: serde_json::Value = serde_json::from_str(&row.payload).unwrap_or_default();
            let mut lines = vec![format!("Purple: remediation {remediation} completed.")];
            if let Some(n) = notes["notes"].as_str().filter(|n| !n.is_empty()) {
                lines.push(format!("Notes: {n}"));
            }
            if let Err(failure) = jira.comment(&key, &lines).await {
                return Ok(failure.into());
            }
            self.store
                .integration_progress(row.seq, "commented")
                .await?;
        }
        let transition = if row.action == "start" {
            &jira.transition_start
        } else {
            &jira.transition_done
        };
        if transition.is_empty() {
            return Ok(Step::Done);
        }
        Ok(match jira.transition(&key, transition).await {
            Ok(()) => Step::Done,
            // A retried transition Jira no longer offers was applied by
            // the attempt whose answer was lost.
            Err(Failure::Refused { status: 400, .. }) if retried => Step::Done,
            Err(failure) => failure.into(),
        })
    }

    async fn tempo(&self, row: &Pending, known: &Known) -> Result<Step, sqlx::Error> {
        let Some(tempo) = &self.integrations.tempo else {
            return Ok(Step::Wait(Failure::Retry {
                after: Some(Duration::from_secs(60)),
                reason: "Tempo is not configured on this process".to_owned(),
            }));
        };
        if known.at_tempo.contains(&row.subject_id) {
            return Ok(Step::Done);
        }
        let Ok(payload) = serde_json::from_str::<WorklogPayload>(&row.payload) else {
            return Ok(Step::Refused("an unreadable payload".to_owned()));
        };
        let target = known
            .test_issues
            .get(&payload.test_id)
            .cloned()
            .unwrap_or_default();
        let issue = match target.issue_id {
            Some(issue) => issue,
            None if target.pending => {
                return Ok(Step::Wait(Failure::Retry {
                    after: None,
                    reason: format!(
                        "test {}: its remediation's issue is still to be created",
                        payload.test_id
                    ),
                }));
            }
            None if tempo.default_issue_id.is_empty() => {
                return Ok(Step::Refused(format!(
                    "test {} has no remediation with a Jira issue, and no --tempo-default-issue-id is set",
                    payload.test_id
                )));
            }
            None => tempo.default_issue_id.clone(),
        };
        let found = if row.attempts > 0 {
            match tempo.find(&issue, &payload.worklog_id).await {
                Ok(found) => found,
                Err(failure) => return Ok(failure.into()),
            }
        } else {
            None
        };
        let id = match found {
            Some(id) => id,
            None => match tempo.create(&issue, &payload).await {
                Ok(id) => id,
                Err(failure) => return Ok(failure.into()),
            },
        };
        self.store
            .save_tempo_worklog(&payload.worklog_id, &id, now_micros())
            .await?;
        Ok(Step::Done)
    }

    /// Reads back the Jira status of the issues read least recently: one
    /// search per batch.
    pub async fn sync_statuses(&self) -> Result<usize, sqlx::Error> {
        let Some(jira) = &self.integrations.jira else {
            return Ok(0);
        };
        let keys = self.store.jira_keys_to_sync(STATUS_BATCH).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        match jira.statuses(&keys).await {
            Ok(statuses) => {
                self.store
                    .save_jira_statuses(&statuses, now_micros())
                    .await?;
                Ok(statuses.len())
            }
            Err(failure) => {
                tracing::warn!(
                    reason = failure.reason(),
                    "reading Jira statuses back failed"
                );
                Ok(0)
            }
        }
    }
}

/// Delivers both receivers' rows each interval until shutdown, and reads
/// Jira statuses back on their own schedule.
pub async fn run(deliverer: Deliverer, shutdown: CancellationToken) {
    let mut synced = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(deliverer.interval) => {}
        }
        for receiver in ["jira", "tempo"] {
            let on = match receiver {
                "jira" => deliverer.integrations.jira.is_some(),
                _ => deliverer.integrations.tempo.is_some(),
            };
            if !on {
                continue;
            }
            // Drain while rows keep settling.
            loop {
                match deliverer.pass(receiver).await {
                    Ok(0) => break,
                    Ok(_) if shutdown.is_cancelled() => return,
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(receiver, %err, "integration delivery failed");
                        break;
                    }
                }
            }
        }
        if let Some(every) = deliverer.integrations.status_sync
            && synced.elapsed() >= every
        {
            synced = tokio::time::Instant::now();
            if let Err(err) = deliverer.sync_statuses().await {
                tracing::warn!(%err, "storing Jira statuses failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integration_turned_on_without_what_it_needs_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "jira_email = \"a@b\"\njira_api_token = \"t\"\n").unwrap();
        let base = IntegrationSettings {
            jira_url: Some("https://jira.example".into()),
            jira_project: "SEC".into(),
            jira_api_version: 3,
            integration_credentials_file: Some(file.clone()),
            integration_timeout_secs: 1,
            ..Default::default()
        };
        assert!(Integrations::from_settings(&base).unwrap().jira.is_some());
        let refused =
            |s: IntegrationSettings| Integrations::from_settings(&s).unwrap_err().to_string();
        assert!(
            refused(IntegrationSettings {
                jira_url: Some("ftp://x".into()),
                ..base.clone()
            })
            .contains("http(s)")
        );
        assert!(
            refused(IntegrationSettings {
                jira_project: String::new(),
                ..base.clone()
            })
            .contains("--jira-project")
        );
        assert!(
            refused(IntegrationSettings {
                jira_api_version: 4,
                ..base.clone()
            })
            .contains("2 or 3")
        );
        std::fs::write(&file, "jira_email = \"a@b\"\n").unwrap();
        assert!(refused(base.clone()).contains("credentials"));
        std::fs::write(&file, "jira_pasword = \"typo\"\n").unwrap();
        assert!(refused(base.clone()).contains("c.toml"));
        // Off by default: nothing to check, nothing on.
        let off = Integrations::from_settings(&IntegrationSettings::default()).unwrap();
        assert!(off.jira.is_none() && off.tempo.is_none());
    }
}
