//! Work tracking over local servers that speak the Jira and Tempo APIs
//! (`atlassian.rs`): remediations become issues that follow their moves,
//! worklogs become Tempo worklogs, through an outbox — a Jira that is down,
//! answers 500 or 429, or refuses, never blocks a transition, loses
//! nothing and doubles nothing; with the integrations off nothing is
//! enqueued and no call is made.

use std::time::Duration;

use purple_api::{campaigns::v1 as pb, common::v1::Outcome};
use purple_runtime::Settings;

use crate::{
    atlassian::{API_TOKEN, Atlassian, DONE, EMAIL, PAT, START, TEMPO_TOKEN},
    campaigns::{CATALOG, Team, client, create_test, import_bundle, team, validate},
    helpers::{Cost, TestApp, Trace, spawn_app_with},
};

/// Jira (and Tempo when `tempo`) on, pointed at the fake, credentials from
/// a file.
fn configure(s: &mut Settings, fake: &Atlassian, tempo: bool, dir: &std::path::Path) {
    let credentials = dir.join("credentials.toml");
    std::fs::write(
        &credentials,
        format!("jira_email = \"{EMAIL}\"\njira_api_token = \"{API_TOKEN}\"\ntempo_token = \"{TEMPO_TOKEN}\"\n"),
    )
    .unwrap();
    let i = &mut s.integrations;
    i.jira_url = Some(fake.url());
    i.jira_project = "SEC".into();
    i.jira_transition_start = START.into();
    i.jira_transition_done = DONE.into();
    i.integration_credentials_file = Some(credentials);
    i.integration_timeout_secs = 1;
    if tempo {
        i.tempo_url = Some(fake.url());
        i.tempo_account_id = "557058:purple-bot".into();
    }
    s.domain.relay_interval_ms = 50;
}

/// A validated not-detected test: it opens a remediation.
async fn remediation(app: &TestApp, team: &Team, technique: &str) -> (pb::Test, pb::Remediation) {
    let done = validate(
        app,
        team,
        create_test(app, team, technique).await,
        Outcome::NotDetected,
        &[],
    )
    .await;
    (
        done.test.unwrap(),
        done.remediation.expect("not detected opens a remediation"),
    )
}

async fn move_to(app: &TestApp, r: &pb::Remediation, to: pb::RemediationState) -> pb::Remediation {
    client(app)
        .transition_remediation(pb::TransitionRemediationRequest {
            remediation_id: r.remediation_id.clone(),
            to: to as i32,
            expected_version: r.version,
            notes: "patched".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .remediation
        .unwrap()
}

async fn worklog(app: &TestApp, test: &pb::Test, minutes: i32) -> pb::Worklog {
    client(app)
        .add_worklog(pb::AddWorklogRequest {
            worklog: Some(pb::Worklog {
                test_id: test.test_id.clone(),
                minutes,
                note: format!("{minutes} minutes of triage"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .worklog
        .unwrap()
}

async fn until(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters(app: &TestApp) -> Vec<pb::DeadLetter> {
    client(app)
        .list_dead_letters(pb::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

#[tokio::test]
async fn with_the_integrations_off_nothing_is_enqueued_and_nothing_is_called() {
    let fake = Atlassian::start().await;
    let mut costs = Vec::new();
    for on in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let app = spawn_app_with(|s| {
            if on {
                configure(s, &fake, true, dir.path());
            }
        })
        .await;
        import_bundle(&app, CATALOG).await;
        let team = team(&app).await;
        let (test, r) = remediation(&app, &team, "T1003").await;
        let trace = Trace::new("purple.campaigns.v1.CampaignsService/TransitionRemediation");
        client(&app)
            .transition_remediation(trace.request(pb::TransitionRemediationRequest {
                remediation_id: r.remediation_id.clone(),
                to: pb::RemediationState::InProgress as i32,
                expected_version: r.version,
                ..Default::default()
            }))
            .await
            .unwrap();
        let moved = Cost::of(&app.trace(&trace).await);
        let trace = Trace::new("purple.campaigns.v1.CampaignsService/AddWorklog");
        client(&app)
            .add_worklog(trace.request(pb::AddWorklogRequest {
                worklog: Some(pb::Worklog {
                    test_id: test.test_id.clone(),
                    minutes: 5,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
        let logged = Cost::of(&app.trace(&trace).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        costs.push((
            moved.statements.get("campaigns").copied(),
            logged.statements.get("campaigns").copied(),
            fake.requests().len(),
        ));
    }
    let (off, on) = (costs[0], costs[1]);
    assert_eq!(off.2, 0, "off: no HTTP call");
    assert!(on.2 > 0, "on: the fake was called");
    // On, the move and the worklog each enqueue in their transaction: one
    // statement more than off, where nothing is written.
    assert_eq!(on.0.unwrap(), off.0.unwrap() + 1, "{costs:?}");
    assert_eq!(on.1.unwrap(), off.1.unwrap() + 1, "{costs:?}");
}

#[tokio::test]
async fn with_jira_down_fifty_remediations_open_and_move_and_all_arrive_once() {
    let fake = Atlassian::start().await;
    fake.stop();
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|s| configure(s, &fake, false, dir.path())).await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let techniques = ["T1003", "T1059", "T1059.001", "T1105"];
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..50 {
        let (_, r) = remediation(&app, &team, techniques[i % 4]).await;
        // Every other one moves to in progress, every fourth to completed.
        let status = if i % 2 == 0 {
            let r = move_to(&app, &r, pb::RemediationState::InProgress).await;
            if i % 4 == 0 {
                move_to(&app, &r, pb::RemediationState::Completed).await;
                "Done"
            } else {
                "In Progress"
            }
        } else {
            "To Do"
        };
        expected.insert(format!("purple-{}", r.remediation_id), status);
    }
    assert!(fake.issues().is_empty());
    // Back up, with a 500 and then a 429 asking for two seconds first.
    fake.state
        .lock()
        .unwrap()
        .inject
        .extend([(500, None), (429, Some(2))]);
    fake.resume().await;
    until("every issue in its final status", 60, || {
        let issues = fake.issues();
        issues.len() == 50
            && issues.iter().all(|i| {
                expected.get(i.labels.iter().find(|l| l.starts_with("purple-")).unwrap())
                    == Some(&i.status.as_str())
            })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let issues = fake.issues();
    assert_eq!(issues.len(), 50, "once each");
    let labels: std::collections::BTreeSet<&String> = issues
        .iter()
        .flat_map(|i| i.labels.iter().filter(|l| l.starts_with("purple-")))
        .collect();
    assert_eq!(labels.len(), 50);
    for issue in &issues {
        let done = issue.status == "Done";
        assert_eq!(issue.comments.len(), usize::from(done), "{issue:?}");
        assert!(issue.summary.starts_with("[Purple] T"), "{}", issue.summary);
        // v3: the description is an Atlassian Document.
        assert_eq!(issue.description["type"], "doc");
    }
    let requests = fake.requests();
    assert!(requests.len() >= 50 + 2, "{}", requests.len());
    assert!(dead_letters(&app).await.is_empty());
    // The call after the 429 waited for its Retry-After.
    let arrivals = fake.state.lock().unwrap().arrivals.clone();
    let at = arrivals.iter().position(|(_, s)| *s == Some(429)).unwrap();
    let waited = arrivals[at + 1].0 - arrivals[at].0;
    assert!(waited >= Duration::from_millis(1_900), "{waited:?}");
}

#[tokio::test]
async fn refusals_are_set_aside_with_the_response_and_delivery_goes_on() {
    let fake = Atlassian::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|s| configure(s, &fake, false, dir.path())).await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    // 401 for the first creation: refused for good, listed as a dead letter.
    fake.state.lock().unwrap().inject.push_back((401, None));
    let (_, refused) = remediation(&app, &team, "T1003").await;
    let (_, kept) = remediation(&app, &team, "T1059").await;
    until("the second issue", 10, || fake.issues().len() == 1).await;
    let letters = dead_letters(&app).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].receiver, "jira");
    assert!(
        letters[0].reason.contains("HTTP 401"),
        "{}",
        letters[0].reason
    );
    // Its move has no issue to move: set aside too, the rest goes on.
    move_to(&app, &refused, pb::RemediationState::InProgress).await;
    // An issue deleted in Jira: the transition answers 404, set aside.
    fake.state.lock().unwrap().issues.clear();
    move_to(&app, &kept, pb::RemediationState::InProgress).await;
    remediation(&app, &team, "T1105").await;
    until("the third issue", 10, || fake.issues().len() == 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let letters = dead_letters(&app).await;
        if letters.len() == 3 {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "{letters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("has no Jira issue")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("HTTP 404") && r.contains("/transitions")),
        "{reasons:?}"
    );
    // The credentials never appear in what is kept.
    assert!(reasons.iter().all(|r| !r.contains(API_TOKEN)));
}

#[tokio::test]
async fn worklogs_reach_tempo_once_each_across_a_restart_mid_delivery() {
    let fake = Atlassian::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // The worklogs' author (the test's omni user) has an account of their own.
    let accounts = dir.path().join("accounts.toml");
    std::fs::write(&accounts, "tester = \"557058:tester\"\n").unwrap();
    let settings = |s: &mut Settings| {
        configure(s, &fake, true, dir.path());
        s.integrations.tempo_accounts_file = Some(accounts.clone());
        s.storage.data_dir = data.path().to_path_buf();
        s.storage.schema_prefix = prefix.clone();
    };
    let app = spawn_app_with(settings).await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let (test, _) = remediation(&app, &team, "T1003").await;
    until("the issue", 10, || fake.issues().len() == 1).await;
    let issue_id = fake.issues()[0].id;
    // The fifth worklog's answer is held back past the deadline: Tempo has
    // it, Purple does not know; the process stops before it learns.
    let mut logged = Vec::new();
    for minutes in 1..=4 {
        logged.push(worklog(&app, &test, minutes).await);
    }
    until("four worklogs", 10, || fake.worklogs().len() == 4).await;
    fake.state.lock().unwrap().hold_next_worklog = Some(Duration::from_secs(3));
    logged.push(worklog(&app, &test, 5).await);
    until("the fifth worklog at Tempo", 10, || {
        fake.worklogs().len() == 5
    })
    .await;
    app.shutdown().await.unwrap();

    // Restarted on the same databases, with more worklogs to deliver.
    let app = spawn_app_with(settings).await;
    for minutes in 6..=10 {
        logged.push(worklog(&app, &test, minutes).await);
    }
    until("ten worklogs", 20, || fake.worklogs().len() >= 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worklogs = fake.worklogs();
    assert_eq!(worklogs.len(), 10, "once each: {worklogs:?}");
    for w in &logged {
        let marker = format!("[purple:{}]", w.worklog_id);
        let at_tempo: Vec<_> = worklogs
            .iter()
            .filter(|t| t.description.contains(&marker))
            .collect();
        assert_eq!(at_tempo.len(), 1, "{marker}");
        assert_eq!(at_tempo[0].seconds, i64::from(w.minutes) * 60);
        assert_eq!(at_tempo[0].issue_id, issue_id, "on the remediation's issue");
        assert_eq!(at_tempo[0].author, "557058:tester");
    }
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("GET /4/worklogs/issue/")),
        "the retry looked for what the lost attempt made"
    );
}

#[tokio::test]
async fn data_center_v2_with_a_token_and_statuses_read_back_in_one_search() {
    let fake = Atlassian::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(|s| {
        configure(s, &fake, false, dir.path());
        std::fs::write(
            dir.path().join("credentials.toml"),
            format!("jira_pat = \"{PAT}\"\n"),
        )
        .unwrap();
        s.integrations.jira_api_version = 2;
        s.integrations.jira_status_sync_secs = 1;
    })
    .await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    for technique in ["T1003", "T1059"] {
        remediation(&app, &team, technique).await;
    }
    until("two issues", 10, || fake.issues().len() == 2).await;
    // v2: a plain-text description.
    assert!(fake.issues()[0].description.is_string());
    for issue in &mut fake.state.lock().unwrap().issues {
        issue.status = "Blocked".into();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client(&app)
            .list_remediations(pb::ListRemediationsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .remediations;
        if listed.iter().all(|r| r.jira_status == "Blocked") {
            let keys: std::collections::BTreeSet<&str> =
                listed.iter().map(|r| r.jira_issue_key.as_str()).collect();
            assert_eq!(keys, ["SEC-1", "SEC-2"].into());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = fake.requests();
    assert!(
        requests.iter().all(|r| !r.contains("/rest/api/3/")),
        "{requests:?}"
    );
    // Both issues' statuses in one search per read-back.
    assert!(requests.iter().any(|r| r == "POST /rest/api/2/search"));
}
