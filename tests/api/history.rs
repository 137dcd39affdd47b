//! A program's history in and out (docs/formats/history.md), on both
//! backends: a history driven through the live workflow, written out by
//! hand from what the API shows and imported into an empty server, gives
//! the same scores (now and as of an instant), snapshot and metrics; so
//! does the server's own export; a re-import changes nothing; an
//! impossible history is refused by line and changes nothing.

use std::time::Duration;

use purple_api::{
    campaigns::v1::{self as pb, campaigns_service_client::CampaignsServiceClient},
    common::v1::{EventKind, Outcome, TimeWindow},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
    metrics::v1::{
        GetOperationalSummaryRequest, ListAuditEventsRequest, MetricFilter,
        metrics_service_client::MetricsServiceClient,
    },
    scoring::v1::{
        CreateSnapshotRequest, GetHeatmapRequest, GetOrganizationScoreRequest, GetSnapshotRequest,
        ScoreTechniquesRequest, scoring_service_client::ScoringServiceClient,
    },
};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    campaigns::{CATALOG, Team, as_user, client, create_test, import_bundle, step, team},
    helpers::{TestApp, spawn_app, ts},
};

/// Two Sigma rules on the catalogue's techniques, so rule coverage counts.
const RULES: &str = "title: PowerShell encoded
id: 11111111-1111-4111-8111-111111111111
status: stable
level: high
tags:
    - attack.t1059.001
---
title: LSASS access
id: 22222222-2222-4222-8222-222222222222
status: stable
level: high
tags:
    - attack.t1003
";

async fn catalogue(app: &TestApp) {
    import_bundle(app, CATALOG).await;
    IngestServiceClient::new(app.channel.clone())
        .import(futures::stream::iter([ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name: "rules.yml".into(),
            data: RULES.as_bytes().to_vec(),
            last: true,
        }]))
        .await
        .unwrap();
}

fn rfc(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().map(|t| {
        chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    })
}

/// What a rejection voided, noted while driving the test.
struct Voided {
    test_id: String,
    side: &'static str,
    executed_at: Option<String>,
    completed_at: Option<String>,
    outcome: Option<&'static str>,
}

async fn next(app: &TestApp, test: &pb::Test, who: &str, action: pb::TestAction) -> pb::Test {
    step(app, test, who, action, |r| {
        if action == pb::TestAction::RejectRed || action == pb::TestAction::RejectBlue {
            r.reason = "not convincing".into();
        }
    })
    .await
    .unwrap()
    .test
    .unwrap()
}

async fn complete_red(app: &TestApp, team: &Team, t: &pb::Test) -> pb::Test {
    step(app, t, &team.red, pb::TestAction::CompleteRed, |r| {
        r.executed_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap()
}

async fn complete_blue(
    app: &TestApp,
    team: &Team,
    t: &pb::Test,
    outcome: Outcome,
    rule: &str,
) -> pb::Test {
    step(app, t, &team.blue, pb::TestAction::CompleteBlue, |r| {
        r.outcome = outcome as i32;
        r.detected_at = outcome
            .is_detection()
            .then(|| prost_types::Timestamp::from(std::time::SystemTime::now()));
        if !rule.is_empty() {
            r.detection_results = vec![pb::DetectionResult {
                source: "sigma".into(),
                rule_id: rule.into(),
                triggered: true,
                ..Default::default()
            }];
        }
    })
    .await
    .unwrap()
    .test
    .unwrap()
}

/// Drives a small program through the live workflow: a validated
/// detection, a test rejected on both sides then validated, its retest
/// validated undetected with its remediation done, a cancelled test, a
/// planned one and a worklog. Returns the test ids and what each
/// rejection voided.
async fn drive(app: &TestApp, team: &Team) -> (Vec<String>, Vec<Voided>) {
    use pb::TestAction::*;
    let mut voided = Vec::new();
    // t1: detected, its rule fired.
    let t1 = create_test(app, team, "T1059.001").await;
    let t = next(app, &t1, &team.red, StartRed).await;
    let t = complete_red(app, team, &t).await;
    let t = next(app, &t, &team.blue, StartBlue).await;
    let t = complete_blue(
        app,
        team,
        &t,
        Outcome::Detected,
        "11111111-1111-4111-8111-111111111111",
    )
    .await;
    next(app, &t, &team.lead, Validate).await;

    // t2: red rejected after executing, blue rejected after a "logged".
    let t2 = create_test(app, team, "T1003").await;
    let t = next(app, &t2, &team.red, StartRed).await;
    let t = complete_red(app, team, &t).await;
    voided.push(Voided {
        test_id: t.test_id.clone(),
        side: "red",
        executed_at: rfc(&t.executed_at),
        completed_at: None,
        outcome: None,
    });
    let t = next(app, &t, &team.lead, RejectRed).await;
    let t = complete_red(app, team, &t).await;
    let t = next(app, &t, &team.blue, StartBlue).await;
    let t = complete_blue(app, team, &t, Outcome::Logged, "").await;
    voided.push(Voided {
        test_id: t.test_id.clone(),
        side: "blue",
        executed_at: None,
        completed_at: rfc(&t.blue_completed_at),
        outcome: Some("logged"),
    });
    let t = next(app, &t, &team.lead, RejectBlue).await;
    let t = complete_blue(
        app,
        team,
        &t,
        Outcome::Detected,
        "22222222-2222-4222-8222-222222222222",
    )
    .await;
    let t2v = next(app, &t, &team.lead, Validate).await;

    // t3: t2's retest, not detected; its remediation done.
    let retest = step(app, &t2v, &team.lead, Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let t = next(app, &retest, &team.red, StartRed).await;
    let t = complete_red(app, team, &t).await;
    let t = next(app, &t, &team.blue, StartBlue).await;
    let t = complete_blue(app, team, &t, Outcome::NotDetected, "").await;
    let validated = step(app, &t, &team.lead, Validate, |_| {}).await.unwrap();
    let remediation = validated.remediation.unwrap();
    let moved = as_user(app, &team.blue)
        .transition_remediation(pb::TransitionRemediationRequest {
            remediation_id: remediation.remediation_id.clone(),
            to: pb::RemediationState::InProgress as i32,
            expected_version: remediation.version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .remediation
        .unwrap();
    as_user(app, &team.blue)
        .transition_remediation(pb::TransitionRemediationRequest {
            remediation_id: remediation.remediation_id.clone(),
            to: pb::RemediationState::Completed as i32,
            expected_version: moved.version,
            ..Default::default()
        })
        .await
        .unwrap();

    // t4 cancelled while red worked; t5 planned.
    let t4 = create_test(app, team, "T1105").await;
    let t = next(app, &t4, &team.red, StartRed).await;
    next(app, &t, &team.lead, Cancel).await;
    let t5 = create_test(app, team, "T1059").await;

    as_user(app, &team.red)
        .add_worklog(pb::AddWorklogRequest {
            worklog: Some(pb::Worklog {
                test_id: t1.test_id.clone(),
                user_id: team.red.clone(),
                minutes: 45,
                note: "setup".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let ids = vec![
        t1.test_id,
        t2.test_id,
        retest.test_id,
        t4.test_id,
        t5.test_id,
    ];
    (ids, voided)
}

/// The history of what `drive` did, written from what the API shows (the
/// tests' instants, the audit trail's rejection instants, the results,
/// remediations and worklogs) — not from the export.
async fn by_hand(app: &TestApp, team: &Team, ids: &[String], voided: &[Voided]) -> String {
    let mut lines = Vec::new();
    for (user, role) in [
        (&team.admin, "admin"),
        (&team.lead, "purple_lead"),
        (&team.red, "red_tech"),
        (&team.blue, "blue_tech"),
    ] {
        lines.push(json!({"kind": "user", "user_id": user, "role": role}));
    }
    let tests = client(app)
        .get_tests_by_ids(pb::GetTestsByIdsRequest {
            test_ids: ids.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .tests;
    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    for t in &tests {
        let rejected = metrics
            .list_audit_events(ListAuditEventsRequest {
                test_id: t.test_id.clone(),
                event_kind: EventKind::TestRejected as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let mut rejections: Vec<serde_json::Value> = Vec::new();
        let mine: Vec<&Voided> = voided.iter().filter(|v| v.test_id == t.test_id).collect();
        // The audit trail lists newest first; the notes are oldest first.
        for (event, v) in rejected.iter().rev().zip(mine) {
            rejections.push(json!({
                "side": v.side, "at": rfc(&event.occurred_at), "reason": "not convincing",
                "actor_id": team.lead, "voided_executed_at": v.executed_at,
                "voided_completed_at": v.completed_at, "voided_outcome": v.outcome,
            }));
        }
        let state = pb::TestState::try_from(t.state).unwrap().as_str_name()["TEST_STATE_".len()..]
            .to_ascii_lowercase();
        let outcome = Outcome::try_from(t.outcome).unwrap();
        lines.push(json!({
            "kind": "test", "test_id": t.test_id, "technique_id": t.technique_id,
            "title": t.title, "state": state,
            "outcome": (outcome != Outcome::Unspecified)
                .then(|| outcome.as_str_name()["OUTCOME_".len()..].to_ascii_lowercase()),
            "retest_of": (!t.retest_of.is_empty()).then_some(&t.retest_of),
            "red_assignee_id": t.red_assignee_id, "blue_assignee_id": t.blue_assignee_id,
            "created_at": rfc(&t.created_at), "red_started_at": rfc(&t.red_started_at),
            "executed_at": rfc(&t.executed_at), "blue_started_at": rfc(&t.blue_started_at),
            "detected_at": rfc(&t.detected_at), "blue_completed_at": rfc(&t.blue_completed_at),
            "validated_at": rfc(&t.validated_at), "cancelled_at": rfc(&t.cancelled_at),
            "rejections": rejections,
        }));
    }
    let results = client(app)
        .get_detection_results(pb::GetDetectionResultsRequest {
            test_ids: ids.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    for r in results {
        lines.push(json!({
            "kind": "detection_result", "test_id": r.test_id, "source": r.source,
            "rule_id": r.rule_id, "triggered": r.triggered, "triggered_at": rfc(&r.triggered_at),
        }));
    }
    let remediations = client(app)
        .list_remediations(pb::ListRemediationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .remediations;
    for r in remediations {
        let state = pb::RemediationState::try_from(r.state)
            .unwrap()
            .as_str_name()["REMEDIATION_STATE_".len()..]
            .to_ascii_lowercase();
        lines.push(json!({
            "kind": "remediation", "remediation_id": r.remediation_id, "test_id": r.test_id,
            "state": state, "opened_at": rfc(&r.opened_at), "started_at": rfc(&r.started_at),
            "completed_at": rfc(&r.completed_at),
        }));
    }
    let worklogs = client(app)
        .list_worklogs(pb::ListWorklogsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .worklogs;
    for w in worklogs {
        lines.push(json!({
            "kind": "worklog", "worklog_id": w.worklog_id, "test_id": w.test_id,
            "user_id": w.user_id, "minutes": w.minutes, "logged_at": rfc(&w.logged_at),
        }));
    }
    lines
        .into_iter()
        .map(|mut l| {
            // Absent values are left out, as a hand-written file would.
            if let Some(map) = l.as_object_mut() {
                map.retain(|_, v| !v.is_null() && v != &json!([]));
            }
            l.to_string() + "\n"
        })
        .collect()
}

async fn import(app: &TestApp, text: &str) -> Result<pb::ImportHistoryResponse, tonic::Status> {
    // In three chunks, as a client streams a file.
    let bytes = text.as_bytes();
    let third = bytes.len() / 3;
    let chunks = vec![
        pb::ImportHistoryRequest {
            file_name: "history.ndjson".into(),
            data: bytes[..third].to_vec(),
            last: false,
        },
        pb::ImportHistoryRequest {
            file_name: String::new(),
            data: bytes[third..].to_vec(),
            last: false,
        },
        pb::ImportHistoryRequest {
            last: true,
            ..Default::default()
        },
    ];
    client(app)
        .import_history(futures::stream::iter(chunks))
        .await
        .map(tonic::Response::into_inner)
}

async fn export(app: &TestApp) -> String {
    use futures::StreamExt;
    let mut stream = client(app)
        .export_history(pb::ExportHistoryRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap().data);
    }
    String::from_utf8(out).unwrap()
}

/// Everything the two servers must agree on.
#[derive(Debug, PartialEq)]
struct Figures {
    scores_as_of: Vec<purple_api::scoring::v1::TechniqueScore>,
    /// Now: the exact components (recency drifts between two reads).
    now: Vec<(String, i32, i32, String, String, i32)>,
    organization_as_of: String,
    snapshot: Vec<String>,
    summary: String,
}

async fn figures(app: &TestApp, as_of: prost_types::Timestamp, window: TimeWindow) -> Figures {
    let ids: Vec<String> = ["T1059", "T1059.001", "T1003", "T1105"]
        .map(String::from)
        .to_vec();
    let mut scoring = ScoringServiceClient::new(app.channel.clone());
    let scores_as_of = scoring
        .score_techniques(ScoreTechniquesRequest {
            technique_ids: ids.clone(),
            as_of: Some(as_of),
        })
        .await
        .unwrap()
        .into_inner()
        .scores;
    let now = scoring
        .score_techniques(ScoreTechniquesRequest {
            technique_ids: ids,
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .scores
        .into_iter()
        .map(|s| {
            let c = s.components.unwrap_or_default();
            (
                s.technique_id,
                c.total_tests,
                c.effective_tests,
                format!("{:.6}", c.detection),
                format!("{:.6}", c.rule_coverage),
                c.triggered_rules,
            )
        })
        .collect();
    let organization_as_of = format!(
        "{:?}",
        scoring
            .get_organization_score(GetOrganizationScoreRequest {
                as_of: Some(as_of),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    );
    let created = scoring
        .create_snapshot(CreateSnapshotRequest {
            label: "compare".into(),
            as_of: Some(as_of),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let stored = scoring
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: created.snapshot_id,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let mut snapshot: Vec<String> = stored.techniques.iter().map(|t| format!("{t:?}")).collect();
    snapshot.push(format!(
        "{:.6} {} {:?}",
        stored.organization_score, stored.technique_count, stored.status_counts
    ));
    let summary = format!(
        "{:?}",
        MetricsServiceClient::new(app.channel.clone())
            .get_operational_summary(GetOperationalSummaryRequest {
                filter: Some(MetricFilter {
                    window: Some(window),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
    );
    Figures {
        scores_as_of,
        now,
        organization_as_of,
        snapshot,
        summary,
    }
}

/// Waits until metrics holds `events` events (the relay delivers after
/// the import commits).
async fn delivered(app: &TestApp, events: usize) {
    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    for _ in 0..200 {
        let page = metrics
            .list_audit_events(ListAuditEventsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if page.len() >= events {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = client(app)
        .list_dead_letters(pb::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    panic!(
        "metrics never received {events} events (it has {}); dead letters: {dead:?}",
        audit_count(app).await
    );
}

async fn audit_count(app: &TestApp) -> usize {
    MetricsServiceClient::new(app.channel.clone())
        .list_audit_events(ListAuditEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .len()
}

#[tokio::test]
async fn an_imported_history_scores_and_measures_like_the_live_one_and_round_trips() {
    let live = spawn_app().await;
    catalogue(&live).await;
    let people = team(&live).await;
    let (ids, voided) = drive(&live, &people).await;
    // The live audit trail settles (the relay delivers every 500 ms).
    let mut settled = 0;
    while settled < 100 {
        let rejected = MetricsServiceClient::new(live.channel.clone())
            .list_audit_events(ListAuditEventsRequest {
                event_kind: EventKind::TestRejected as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if rejected.len() == voided.len() {
            break;
        }
        settled += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let hand = by_hand(&live, &people, &ids, &voided).await;
    let exported = export(&live).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let as_of = ts(now + 60);
    let window = TimeWindow {
        from: Some(ts(now - 86_400)),
        to: Some(ts(now + 86_400)),
    };
    let expected = figures(&live, as_of, window).await;
    assert!(
        expected.summary.contains("rejected"),
        "{}",
        expected.summary
    );

    for (what, text) in [("by hand", &hand), ("exported", &exported)] {
        let app = spawn_app().await;
        catalogue(&app).await;
        let report = import(&app, text)
            .await
            .unwrap_or_else(|s| panic!("{what}: {s:?}"));
        let tests = report.counts.iter().find(|c| c.kind == "test").unwrap();
        assert_eq!((tests.created, tests.updated), (5, 0), "{what}");
        delivered(&app, report.events as usize).await;
        let got = figures(&app, as_of, window).await;
        assert_eq!(
            got, expected,
            "{what}: scores and metrics differ from the live ones"
        );

        // A re-import changes nothing and emits nothing.
        let again = import(&app, text).await.unwrap();
        assert!(
            again
                .counts
                .iter()
                .all(|c| c.created == 0 && c.updated == 0),
            "{what}: {:?}",
            again.counts
        );
        assert_eq!(again.events, 0);
    }
}

#[tokio::test]
async fn an_impossible_history_is_refused_by_line_and_changes_nothing() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let good = [
        json!({"kind": "user", "user_id": "ada", "role": "purple_lead"}),
        json!({"kind": "test", "test_id": "h1", "technique_id": "t1003", "state": "validated",
               "outcome": "blocked", "created_at": "2025-03-01T10:00:00Z",
               "executed_at": "2025-03-01T11:00:00Z", "detected_at": "2025-03-01T11:05:00Z",
               "validated_at": "2025-03-02T09:00:00Z"}),
    ];
    let text: String = good.iter().map(|l| l.to_string() + "\n").collect();
    let report = import(&app, &text).await.unwrap();
    assert_eq!(report.records, 2);
    let events_before = {
        delivered(&app, report.events as usize).await;
        audit_count(&app).await
    };

    let bad = [
        // 1: instants out of order.
        json!({"kind": "test", "test_id": "b1", "technique_id": "T1003", "state": "validated",
               "outcome": "detected", "created_at": "2025-03-05T10:00:00Z",
               "executed_at": "2025-03-04T11:00:00Z", "detected_at": "2025-03-05T11:05:00Z",
               "validated_at": "2025-03-06T09:00:00Z"}),
        // 2: validated without an outcome.
        json!({"kind": "test", "test_id": "b2", "technique_id": "T1003", "state": "validated",
               "created_at": "2025-03-05T10:00:00Z", "executed_at": "2025-03-05T11:00:00Z",
               "validated_at": "2025-03-06T09:00:00Z"}),
        // 3: a retest of an unknown test.
        json!({"kind": "test", "test_id": "b3", "technique_id": "T1003", "state": "planned",
               "retest_of": "ghost", "created_at": "2025-03-05T10:00:00Z"}),
        // 4: an unknown user.
        json!({"kind": "test", "test_id": "b4", "technique_id": "T1003", "state": "planned",
               "red_assignee_id": "zed", "created_at": "2025-03-05T10:00:00Z"}),
        // 5: a technique the catalogue does not know.
        json!({"kind": "test", "test_id": "b5", "technique_id": "T9999", "state": "planned",
               "created_at": "2025-03-05T10:00:00Z"}),
        // 6: a valid record; nothing of the upload is kept.
        json!({"kind": "test", "test_id": "b6", "technique_id": "T1105", "state": "planned",
               "created_at": "2025-03-05T10:00:00Z"}),
        // 7: cancelled after blue completed, without the completion's
        // outcome (its audit event could not be recorded).
        json!({"kind": "test", "test_id": "b7", "technique_id": "T1003", "state": "cancelled",
               "created_at": "2025-03-05T10:00:00Z", "executed_at": "2025-03-05T11:00:00Z",
               "blue_completed_at": "2025-03-05T12:00:00Z", "cancelled_at": "2025-03-06T10:00:00Z"}),
        // 8: text over the limits the API holds the same fields to.
        json!({"kind": "test", "test_id": "b8", "technique_id": "T1003", "state": "red_in_progress",
               "created_at": "2025-03-05T10:00:00Z", "red_started_at": "2025-03-05T10:30:00Z",
               "title": "t".repeat(1_025), "red_notes": "n".repeat(64 * 1024 + 1),
               "rejections": [{"side": "red", "reason": "r".repeat(64 * 1024 + 1),
                               "actor_id": "ada", "at": "2025-03-05T10:10:00Z"}]}),
        // 9: a worklog note over 10,000 bytes.
        json!({"kind": "worklog", "worklog_id": "w9", "test_id": "h1", "user_id": "ada",
               "minutes": 5, "note": "w".repeat(10_001), "logged_at": "2025-03-05T10:00:00Z"}),
        // 10: a display name over 200 bytes (not its id, as an export
        // writes a user named by default: line 11).
        json!({"kind": "user", "user_id": "bo", "role": "red_tech", "display_name": "é".repeat(101)}),
        json!({"kind": "user", "user_id": "u".repeat(256), "role": "viewer",
               "display_name": "u".repeat(256)}),
    ];
    let text: String = bad.iter().map(|l| l.to_string() + "\n").collect::<String>() + "not json\n";
    let refused = import(&app, &text).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations: Vec<(String, String)> = refused
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    // An unreadable line is refused before anything else is checked.
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].0.starts_with("line 12"), "{violations:?}");

    let text: String = bad.iter().map(|l| l.to_string() + "\n").collect();
    let refused = import(&app, &text).await.unwrap_err();
    let violations: Vec<(String, String)> = refused
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| (v.field.clone(), v.description.clone()))
        .collect();
    let has = |line: usize, field: &str, why: &str| {
        violations
            .iter()
            .any(|(f, d)| f == &format!("line {line}: {field}") && d.contains(why))
    };
    assert!(has(1, "executed_at", "before created_at"), "{violations:?}");
    assert!(has(2, "outcome", "required"), "{violations:?}");
    assert!(has(3, "retest_of", "unknown test"), "{violations:?}");
    assert!(has(4, "red_assignee_id", "unknown user"), "{violations:?}");
    assert!(
        has(5, "technique_id", "not in the ATT&CK catalogue"),
        "{violations:?}"
    );
    assert!(!violations.iter().any(|(f, _)| f.starts_with("line 6")));
    assert!(!violations.iter().any(|(f, _)| f.starts_with("line 11")));
    assert!(
        has(7, "outcome", "a completion has an outcome"),
        "{violations:?}"
    );
    for (line, field, limit) in [
        (8, "title", 1_024),
        (8, "red_notes", 65_536),
        (8, "rejections[0].reason", 65_536),
        (9, "note", 10_000),
        (10, "display_name", 200),
    ] {
        assert!(
            has(line, field, &format!("exceed the limit of {limit}")),
            "line {line} {field}: {violations:?}"
        );
    }

    // Nothing of it was written, and no event left.
    let found = client(&app)
        .get_tests_by_ids(pb::GetTestsByIdsRequest {
            test_ids: vec!["b6".into(), "h1".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.missing_ids, ["b6"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit_count(&app).await, events_before);

    // Only an admin imports.
    let lead = app.as_role("lead", purple_api::common::v1::Role::PurpleLead);
    let err = CampaignsServiceClient::new(lead)
        .import_history(futures::stream::iter([pb::ImportHistoryRequest {
            file_name: "h.ndjson".into(),
            last: true,
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// A history of `n` validated tests, each with two detection results.
fn generated(n: usize) -> String {
    let mut lines = vec![json!({"kind": "user", "user_id": "lee", "role": "purple_lead"})];
    for i in 0..n {
        let id = format!("g{i}");
        let of = if i % 4 == 3 { i - 1 } else { i };
        let technique = ["T1003", "T1059.001", "T1105"][of % 3];
        let outcome = ["blocked", "logged"][i % 2];
        lines.push(json!({
            "kind": "test", "test_id": id, "technique_id": technique,
            "retest_of": (i % 4 == 3).then(|| format!("g{}", i - 1)),
            "state": "validated", "outcome": outcome,
            "created_at": "2025-01-01T00:00:00Z", "executed_at": "2025-01-02T00:00:00Z",
            "detected_at": (i % 2 == 0).then_some("2025-01-02T01:00:00Z"),
            "validated_at": format!("2025-02-{:02}T00:00:00Z", 1 + i % 27),
        }));
        for rule in [
            "11111111-1111-4111-8111-111111111111",
            "22222222-2222-4222-8222-222222222222",
        ] {
            lines.push(
                json!({"kind": "detection_result", "test_id": id, "source": "sigma",
                              "rule_id": rule, "triggered": i % 3 == 0}),
            );
        }
    }
    lines
        .into_iter()
        .map(|mut l| {
            l.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            l.to_string() + "\n"
        })
        .collect()
}

async fn import_cost(app: &TestApp, text: &str) -> crate::helpers::Cost {
    let trace = crate::helpers::Trace::new("purple.campaigns.v1.CampaignsService/ImportHistory");
    let chunks = [
        pb::ImportHistoryRequest {
            file_name: "h.ndjson".into(),
            data: text.as_bytes().to_vec(),
            last: false,
        },
        pb::ImportHistoryRequest {
            last: true,
            ..Default::default()
        },
    ];
    client(app)
        .import_history(trace.request(futures::stream::iter(chunks)))
        .await
        .unwrap();
    crate::helpers::Cost::of(&app.trace(&trace).await)
}

#[tokio::test]
async fn an_import_costs_the_same_statements_and_calls_at_two_sizes() {
    let mut costs = Vec::new();
    for n in [4, 400] {
        let app = spawn_app().await;
        catalogue(&app).await;
        costs.push(import_cost(&app, &generated(n)).await);
    }
    assert_eq!(costs[0], costs[1], "4 tests vs 400");
    // The request and one GetTechniquesByIds.
    assert_eq!(costs[1].rpcs, 2);
}

/// One imported test, as the oracle below ranks it.
struct Ranked {
    chain: usize,
    technique: &'static str,
    test_id: String,
    created: i64,
    /// Micros; None unless validated.
    validated: Option<i64>,
    outcome: &'static str,
    triggered: Vec<(String, String)>,
}

const MINUTE: i64 = 60_000_000;
/// 2025-01-01T00:00:00Z in micros.
const BASE: i64 = 1_735_689_600_000_000;

fn instant(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}

/// A technique's effective tests: id, count, outcomes (blocked, detected,
/// logged, not detected), latest validation, triggered rules.
type Effective = (String, i32, [i32; 4], Option<i64>, Vec<(String, String)>);

/// The test side of each technique at `at`, ranked as docs/design.md §4
/// says: per chain, the validated test with the latest validation by
/// then (ties: created last, then the greatest id).
fn ranked_at(tests: &[Ranked], at: i64) -> Vec<Effective> {
    let mut best: std::collections::BTreeMap<usize, &Ranked> = Default::default();
    for t in tests
        .iter()
        .filter(|t| t.validated.is_some_and(|v| v <= at))
    {
        let key = |t: &Ranked| (t.validated, t.created, t.test_id.clone());
        let slot = best.entry(t.chain).or_insert(t);
        if key(t) > key(slot) {
            *slot = t;
        }
    }
    ["T1003", "T1059.001", "T1105"]
        .iter()
        .map(|technique| {
            let eff: Vec<&&Ranked> = best
                .values()
                .filter(|t| t.technique == *technique)
                .collect();
            let count = |o: &str| eff.iter().filter(|t| t.outcome == o).count() as i32;
            let mut rules: Vec<(String, String)> =
                eff.iter().flat_map(|t| t.triggered.clone()).collect();
            rules.sort();
            rules.dedup();
            (
                technique.to_string(),
                eff.len() as i32,
                [
                    count("blocked"),
                    count("detected"),
                    count("logged"),
                    count("not_detected"),
                ],
                eff.iter().filter_map(|t| t.validated).max(),
                rules,
            )
        })
        .collect()
}

/// A past `as_of` reads the chains' history kept on write (migration
/// 0012). Against an independent ranking of what was imported and then
/// validated live, at every validation instant and a microsecond either
/// side: retest chains validated out of creation order, ties on the
/// validation and the creation instants, cancelled and unvalidated tests,
/// rules triggered with and without a source.
#[tokio::test]
async fn a_past_as_of_ranks_every_chain_like_the_model_at_every_instant() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let people = team(&app).await;
    let rules = [
        ("sigma", "11111111-1111-4111-8111-111111111111"),
        ("sigma", "22222222-2222-4222-8222-222222222222"),
        ("", "22222222-2222-4222-8222-222222222222"),
        ("elastic", "e-1"),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut roll = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n) as usize
    };
    let mut tests = Vec::new();
    let mut lines = Vec::new();
    for chain in 0..30 {
        let technique = ["T1003", "T1059.001", "T1105"][chain % 3];
        for j in 0..1 + roll(4) {
            let test_id = format!("h{chain:03}-{j}");
            let created = BASE + [0, 10, 20][roll(3)] * MINUTE;
            // The root of chain 0 is validated for sure: it is retested live.
            let state = if chain == 0 && j == 0 {
                "validated"
            } else {
                [
                    "validated",
                    "validated",
                    "validated",
                    "cancelled",
                    "blue_complete",
                ][roll(5)]
            };
            let outcome = ["blocked", "detected", "logged", "not_detected"][roll(4)];
            let detection = matches!(outcome, "blocked" | "detected");
            let validated = (state == "validated")
                .then(|| BASE + [1_000, 1_500, 2_000, 2_500][roll(4)] * MINUTE);
            let triggered: Vec<(String, String)> = rules
                .iter()
                .filter(|_| roll(3) == 0)
                .map(|(s, r)| (s.to_string(), r.to_string()))
                .collect();
            let mut record = json!({
                "kind": "test", "test_id": test_id, "technique_id": technique, "state": state,
                "created_at": instant(created),
                "red_assignee_id": people.red, "blue_assignee_id": people.blue,
                "retest_of": (j > 0).then(|| format!("h{chain:03}-0")),
            });
            if state == "cancelled" {
                record["cancelled_at"] = json!(instant(created + 100 * MINUTE));
            } else {
                record["executed_at"] = json!(instant(created + 30 * MINUTE));
                record["outcome"] = json!(outcome);
                if detection {
                    record["detected_at"] = json!(instant(created + 60 * MINUTE));
                }
                if let Some(v) = validated {
                    record["validated_at"] = json!(instant(v));
                }
            }
            lines.push(record);
            for (source, rule) in &rules {
                let fired = triggered.iter().any(|(s, r)| s == source && r == rule);
                if state != "cancelled" && (fired || roll(2) == 0) {
                    lines.push(json!({"kind": "detection_result", "test_id": test_id,
                                      "source": source, "rule_id": rule, "triggered": fired}));
                }
            }
            tests.push(Ranked {
                chain,
                technique,
                test_id,
                created,
                validated,
                outcome,
                triggered: if state == "cancelled" {
                    vec![]
                } else {
                    triggered
                },
            });
        }
    }
    let text: String = lines
        .into_iter()
        .map(|mut l| {
            l.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            l.to_string() + "\n"
        })
        .collect();
    import(&app, &text).await.unwrap();

    // Chain 0's root retested and validated live: the trigger's path.
    let root = client(&app)
        .get_tests_by_ids(pb::GetTestsByIdsRequest {
            test_ids: vec!["h000-0".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .tests
        .remove(0);
    let retest = step(&app, &root, &people.lead, pb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let t = next(&app, &retest, &people.red, pb::TestAction::StartRed).await;
    let t = complete_red(&app, &people, &t).await;
    let t = next(&app, &t, &people.blue, pb::TestAction::StartBlue).await;
    let t = complete_blue(&app, &people, &t, Outcome::Blocked, rules[3].1).await;
    let t = next(&app, &t, &people.lead, pb::TestAction::Validate).await;
    let live = micros(t.validated_at.as_ref().unwrap());
    tests.push(Ranked {
        chain: 0,
        technique: "T1003",
        test_id: t.test_id.clone(),
        created: micros(t.created_at.as_ref().unwrap()),
        validated: Some(live),
        outcome: "blocked",
        triggered: vec![("sigma".into(), rules[3].1.into())],
    });

    agrees_at_every_instant(&app, &tests).await;

    // Results re-imported alone, their tests unchanged: one rule no longer
    // triggered on any imported validated test (so no technique's union
    // keeps it). Their chains' history moves with them.
    let cleared = ("elastic".to_string(), "e-1".to_string());
    assert!(tests.iter().any(|t| t.triggered.contains(&cleared)));
    let mut lines = Vec::new();
    for t in tests
        .iter_mut()
        .filter(|t| t.validated.is_some() && t.test_id.starts_with('h'))
    {
        t.triggered.retain(|k| *k != cleared);
        lines.push(
            json!({"kind": "detection_result", "test_id": t.test_id, "source": cleared.0,
                   "rule_id": cleared.1, "triggered": false})
            .to_string()
                + "\n",
        );
    }
    import(&app, &lines.concat()).await.unwrap();
    agrees_at_every_instant(&app, &tests).await;
}

/// The answer of `AggregateTestsByTechnique` at every validation instant of
/// `tests` and a microsecond either side equals [`ranked_at`]'s.
async fn agrees_at_every_instant(app: &TestApp, tests: &[Ranked]) {
    let mut instants: Vec<i64> = tests.iter().filter_map(|t| t.validated).collect();
    instants.sort_unstable();
    instants.dedup();
    let mut checked = 0;
    for at in instants.iter().flat_map(|v| [v - 1, *v, v + 1]) {
        let answer = client(app)
            .aggregate_tests_by_technique(pb::AggregateTestsByTechniqueRequest {
                technique_ids: vec!["T1003".into(), "T1059.001".into(), "T1105".into()],
                as_of: Some(prost_types::Timestamp {
                    seconds: at.div_euclid(1_000_000),
                    nanos: (at.rem_euclid(1_000_000) * 1_000) as i32,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let got: Vec<Effective> = answer
            .aggregates
            .iter()
            .map(|a| {
                let mut rules: Vec<(String, String)> = a
                    .triggered_rules
                    .iter()
                    .map(|r| (r.source.clone(), r.rule_id.clone()))
                    .collect();
                rules.sort();
                (
                    a.technique_id.clone(),
                    a.effective_tests,
                    [a.blocked, a.detected, a.logged, a.not_detected],
                    a.latest_validated_at.as_ref().map(micros),
                    rules,
                )
            })
            .collect();
        assert_eq!(got, ranked_at(tests, at), "as of {}", instant(at));
        checked += 1;
    }
    assert!(checked >= 9, "{checked} instants");
}

/// A past organization score over the whole ATT&CK catalogue asks
/// campaigns in chunks of 256 techniques at once (three calls for 691
/// live techniques) and loses none of them: it counts what the score for
/// now counts.
#[tokio::test]
async fn a_past_organization_score_asks_in_chunks_and_loses_no_technique() {
    let app = spawn_app().await;
    crate::ingest::import_attack_18(&app).await;
    // One rule of its own for a technique of each chunk, so each chunk's
    // answer carries a rule table of its own, each rule at place 0.
    let chunked = ["T1003", "T1486", "T1659"];
    let rules: String = chunked
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "title: rule {i}\nid: {i}{i}{i}{i}{i}{i}{i}{i}-0000-4000-8000-000000000000\n\
                 status: stable\nlevel: high\ntags:\n    - attack.{}\n",
                t.to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    IngestServiceClient::new(app.channel.clone())
        .import(futures::stream::iter([ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name: "rules.yml".into(),
            data: rules.into_bytes(),
            last: true,
        }]))
        .await
        .unwrap();
    // Validated tests spread over the catalogue's order, and one planned.
    let mut lines = Vec::new();
    for (i, technique) in ["T1003", "T1110", "T1486", "T1659"].iter().enumerate() {
        lines.push(json!({
            "kind": "test", "test_id": format!("c{i}"), "technique_id": technique,
            "state": "validated", "outcome": "blocked",
            "created_at": "2025-06-01T00:00:00Z", "executed_at": "2025-06-01T01:00:00Z",
            "detected_at": "2025-06-01T02:00:00Z", "validated_at": "2025-06-02T00:00:00Z",
        }));
        if let Some(rule) = chunked.iter().position(|t| t == technique) {
            lines.push(json!({
                "kind": "detection_result", "test_id": format!("c{i}"), "source": "sigma",
                "rule_id": format!("{rule}{rule}{rule}{rule}{rule}{rule}{rule}{rule}-0000-4000-8000-000000000000"),
                "triggered": true,
            }));
        }
    }
    lines.push(
        json!({"kind": "test", "test_id": "c-planned", "technique_id": "T1566",
                      "state": "planned", "created_at": "2025-06-01T00:00:00Z"}),
    );
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    import(&app, &text).await.unwrap();

    let mut scoring = ScoringServiceClient::new(app.channel.clone());
    let now = scoring
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap()
        .into_inner();
    let trace = crate::helpers::Trace::new("purple.scoring.v1.ScoringService/GetOrganizationScore");
    let past = scoring
        .get_organization_score(trace.request(GetOrganizationScoreRequest {
            as_of: now.as_of,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let counts = past.status_counts.unwrap();
    assert_eq!(past.technique_count, 691);
    assert_eq!((counts.partial, counts.in_progress), (4, 1), "{counts:?}");
    assert_eq!(Some(counts), now.status_counts);
    assert!(
        (past.score - now.score).abs() < 0.05,
        "{} vs {}",
        past.score,
        now.score
    );
    app.trace(&trace).await;
    let asked = app
        .spans
        .trace(&trace.trace_id)
        .iter()
        .filter(|s| s.kind == "server")
        .filter(|s| s.attr("rpc.method") == Some("AggregateTestsByTechnique"))
        .count();
    assert_eq!(asked, 3, "ceil(691 / 256) chunks");

    // Technique by technique: the past board is the board for now, the
    // rule each chunk's technique triggered counted in each chunk.
    let heatmap = |as_of| {
        let mut scoring = scoring.clone();
        async move {
            scoring
                .get_heatmap(GetHeatmapRequest {
                    as_of,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .cells
        }
    };
    let (cells_now, cells_past) = (heatmap(None).await, heatmap(now.as_of).await);
    let chunk_of = |t: &str| cells_now.iter().position(|c| c.technique_id == t).unwrap() / 256;
    assert_eq!(chunked.map(chunk_of), [0, 1, 2], "one technique per chunk");
    assert_eq!(cells_past, cells_now);
    let scored = scoring
        .score_techniques(ScoreTechniquesRequest {
            technique_ids: chunked.map(String::from).to_vec(),
            as_of: now.as_of,
        })
        .await
        .unwrap()
        .into_inner()
        .scores;
    for s in &scored {
        let c = s.components.as_ref().unwrap();
        assert_eq!(
            (c.mapped_rules, c.triggered_rules),
            (1, 1),
            "{}",
            s.technique_id
        );
    }
}
