//! The threat-informed plan and the change feed (docs/design.md §4, "Plan"
//! and "Change feed") over the public RPCs: the plan's ranking and reasons
//! against a hand computation on a known data set, its cost at two data
//! sizes, its Navigator layer; a watcher seeing a regression as it
//! happens and one that reconnects with its cursor missing nothing; the
//! purple leads told of each regression once.

use std::{collections::BTreeMap, time::Duration};

use purple_api::{
    campaigns::v1 as cpb,
    common::v1::{Outcome, TechniqueStatus},
    ingest::v1::{
        CreateIntelReportsRequest, ImportKind, ImportRequest, IntelReport, IntelTechnique,
        ingest_service_client::IngestServiceClient,
    },
    scoring::v1::{self as pb, scoring_service_client::ScoringServiceClient},
};
use tonic::Code;

use crate::{
    campaigns::{Team, as_user, create_test, step, team, validate},
    helpers::{AuthChannel, Cost, TestApp, Trace, spawn_app, spawn_app_with},
    scoring::catalogue,
};

fn scoring(app: &TestApp) -> ScoringServiceClient<AuthChannel> {
    ScoringServiceClient::new(app.channel.clone())
}

fn ingest(app: &TestApp) -> IngestServiceClient<AuthChannel> {
    IngestServiceClient::new(app.channel.clone())
}

fn days_ago(days: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - days * 86_400,
        nanos: 0,
    })
}

/// Intel: T1003 and T1105 named by a report of yesterday, T1003 also by
/// one of two years ago (outside the default window). KEV: two CVEs on
/// T1003 (one used by ransomware), one on T1105.
async fn threats(app: &TestApp) {
    let report = |url: &str, title: &str, days: i64, techniques: &[&str]| IntelReport {
        url: url.into(),
        title: title.into(),
        published_at: days_ago(days),
        techniques: techniques
            .iter()
            .map(|t| IntelTechnique {
                technique_id: (*t).into(),
                description: String::new(),
            })
            .collect(),
        ..Default::default()
    };
    ingest(app)
        .create_intel_reports(CreateIntelReportsRequest {
            reports: vec![
                report(
                    "https://intel.example/new",
                    "New wave",
                    1,
                    &["T1003", "T1105"],
                ),
                report("https://intel.example/old", "Old wave", 730, &["T1003"]),
            ],
        })
        .await
        .unwrap();
    let catalogue = serde_json::json!({"vulnerabilities": [
        {"cveID": "CVE-2025-0001", "vendorProject": "V", "product": "P", "vulnerabilityName": "n",
         "dateAdded": "2025-01-01", "dueDate": "2025-01-22", "knownRansomwareCampaignUse": "Known",
         "requiredAction": "patch", "shortDescription": "d"},
        {"cveID": "CVE-2025-0002", "dateAdded": "2025-01-01", "knownRansomwareCampaignUse": "Unknown"},
        {"cveID": "CVE-2025-0003", "dateAdded": "2025-01-01", "knownRansomwareCampaignUse": "Unknown"}
    ]});
    let mapping = serde_json::json!({"mapping_objects": [
        {"capability_id": "CVE-2025-0001", "mapping_type": "exploitation_technique", "attack_object_id": "T1003"},
        {"capability_id": "CVE-2025-0001", "mapping_type": "primary_impact", "attack_object_id": "T1003"},
        {"capability_id": "CVE-2025-0002", "mapping_type": "secondary_impact", "attack_object_id": "T1003"},
        {"capability_id": "CVE-2025-0003", "mapping_type": "primary_impact", "attack_object_id": "T1105"}
    ]});
    let file = |name: &str, value: &serde_json::Value, last: bool| ImportRequest {
        kind: ImportKind::Kev as i32,
        file_name: name.into(),
        data: serde_json::to_vec(value).unwrap(),
        last,
    };
    ingest(app)
        .import(futures::stream::iter([
            file("kev.json", &catalogue, false),
            file("mapping.json", &mapping, true),
        ]))
        .await
        .unwrap();
}

/// T1059.001 validated (partial); T1105 validated blocked (partial), then
/// a snapshot, then retested not detected (gap): a regression since the
/// snapshot.
async fn history(app: &TestApp, team: &Team) {
    validate(
        app,
        team,
        create_test(app, team, "T1059.001").await,
        Outcome::Blocked,
        &[("r1", true)],
    )
    .await;
    let t1105 = validate(
        app,
        team,
        create_test(app, team, "T1105").await,
        Outcome::Blocked,
        &[],
    )
    .await
    .test
    .unwrap();
    scoring(app)
        .create_snapshot(pb::CreateSnapshotRequest {
            label: "last week".into(),
            as_of: None,
        })
        .await
        .unwrap();
    let retest = step(app, &t1105, &team.lead, cpb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    validate(app, team, retest, Outcome::NotDetected, &[]).await;
}

/// Waits for the outbox to bring the history's last change to scoring.
async fn settled(app: &TestApp, technique: &str, status: TechniqueStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let scores = scoring(app)
            .score_techniques(pb::ScoreTechniquesRequest {
                technique_ids: vec![technique.into()],
                as_of: None,
            })
            .await
            .unwrap()
            .into_inner()
            .scores;
        if scores[0].status == status as i32 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{scores:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The signals the data above gives each live technique, by hand:
/// (recent reports, KEV CVEs, ransomware CVEs, actors, regressed).
fn hand_signals() -> BTreeMap<&'static str, (i64, i64, i64, usize, bool)> {
    BTreeMap::from([
        ("T1059", (0, 0, 0, 0, false)),
        ("T1059.001", (0, 0, 0, 2, false)),
        ("T1003", (1, 2, 1, 1, false)),
        ("T1105", (1, 1, 0, 1, true)),
    ])
}

/// The documented default weights.
const WEIGHTS: [(&str, f64); 9] = [
    ("intel", 20.0),
    ("kev", 15.0),
    ("ransomware", 10.0),
    ("actors", 15.0),
    ("weakness", 25.0),
    ("staleness", 10.0),
    ("rules", 5.0),
    ("countermeasures", 5.0),
    ("regression", 20.0),
];

/// Each reason's factor for a technique, from its score's components and
/// the hand signals, as docs/design.md §4 defines them.
fn factors(
    score: &pb::TechniqueScore,
    signals: (i64, i64, i64, usize, bool),
) -> BTreeMap<&'static str, f64> {
    let c = score.components.as_ref().unwrap();
    let (reports, kev, ransomware, actors, regressed) = signals;
    BTreeMap::from([
        ("intel", reports as f64 / (reports as f64 + 2.0)),
        ("kev", kev as f64 / (kev as f64 + 5.0)),
        ("ransomware", ransomware as f64 / (ransomware as f64 + 2.0)),
        ("actors", actors as f64 / (actors as f64 + 10.0)),
        ("weakness", 1.0 - unrounded(score) / 100.0),
        (
            "staleness",
            if c.effective_tests == 0 {
                1.0
            } else {
                c.days_since_validation.min(365.0) / 365.0
            },
        ),
        (
            "rules",
            if c.mapped_rules == 0 {
                1.0
            } else {
                1.0 - c.rule_coverage
            },
        ),
        ("countermeasures", c.countermeasures),
        ("regression", if regressed { 1.0 } else { 0.0 }),
    ])
}

/// The exact score from its components (the wire rounds it).
fn unrounded(score: &pb::TechniqueScore) -> f64 {
    let c = score.components.as_ref().unwrap();
    100.0 * (0.5 * c.detection + 0.2 * c.rule_coverage + 0.1 * c.countermeasures + 0.2 * c.recency)
}

#[tokio::test]
async fn the_plan_ranks_as_a_hand_computation_does_with_its_reasons() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let team = team(&app).await;
    threats(&app).await;
    history(&app, &team).await;
    settled(&app, "T1105", TechniqueStatus::Gap).await;

    let plan = scoring(&app)
        .plan_next_tests(pb::PlanNextTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.considered, 4);
    let ids: Vec<String> = hand_signals().keys().map(|s| (*s).to_owned()).collect();
    let scores = scoring(&app)
        .score_techniques(pb::ScoreTechniquesRequest {
            technique_ids: ids,
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .scores;
    let mut expected: Vec<(String, f64, BTreeMap<&str, f64>)> = scores
        .iter()
        .map(|s| {
            let f = factors(s, hand_signals()[s.technique_id.as_str()]);
            let priority = WEIGHTS.iter().map(|(r, w)| w * f[r]).sum();
            (s.technique_id.clone(), priority, f)
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let order: Vec<&str> = plan
        .techniques
        .iter()
        .map(|t| t.technique_id.as_str())
        .collect();
    let wanted: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(order, wanted);
    // By hand: T1003 (untested, recent intel, a ransomware CVE: 58.1)
    // before T1105 (regressed, recent intel: 55.5).
    assert_eq!(order[..2], ["T1003", "T1105"]);
    for (t, (id, priority, f)) in plan.techniques.iter().zip(&expected) {
        assert_eq!(&t.technique_id, id);
        assert!(
            (t.priority - priority).abs() < 1e-6,
            "{id}: {} vs {priority}",
            t.priority
        );
        let got: BTreeMap<&str, f64> = t
            .reasons
            .iter()
            .map(|r| (r.reason.as_str(), r.factor))
            .collect();
        let want: BTreeMap<&str, f64> = f
            .iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, v)| (*k, *v))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{id}"
        );
        for (reason, factor) in &want {
            assert!((got[reason] - factor).abs() < 1e-6, "{id} {reason}");
        }
        // Largest contribution first.
        assert!(
            t.reasons
                .windows(2)
                .all(|w| w[0].contribution >= w[1].contribution)
        );
    }
    let t1105 = &plan.techniques[1];
    let regression = t1105
        .reasons
        .iter()
        .find(|r| r.reason == "regression")
        .unwrap();
    assert!(
        regression.detail.contains("partial to gap"),
        "{}",
        regression.detail
    );
    let intel = t1105.reasons.iter().find(|r| r.reason == "intel").unwrap();
    assert!(intel.detail.contains("New wave"), "{}", intel.detail);
    assert_eq!(t1105.status, TechniqueStatus::Gap as i32);

    // Weights per request: intel alone decides.
    let only_intel = pb::PlanWeights {
        intel: Some(100.0),
        kev: Some(0.0),
        ransomware: Some(0.0),
        actors: Some(0.0),
        weakness: Some(0.0),
        staleness: Some(0.0),
        rules: Some(0.0),
        countermeasures: Some(0.0),
        regression: Some(0.0),
    };
    let plan = scoring(&app)
        .plan_next_tests(pb::PlanNextTestsRequest {
            limit: 2,
            weights: Some(only_intel),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let top: Vec<&str> = plan
        .techniques
        .iter()
        .map(|t| t.technique_id.as_str())
        .collect();
    assert_eq!(top, ["T1003", "T1105"]);
    // A window of three years counts the old report too.
    let plan = scoring(&app)
        .plan_next_tests(pb::PlanNextTestsRequest {
            limit: 1,
            intel_window_days: 3 * 365,
            weights: Some(only_intel),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!((plan.techniques[0].priority - 100.0 * 2.0 / 4.0).abs() < 1e-6);

    // Filters.
    let only = |request: pb::PlanNextTestsRequest| {
        let mut client = scoring(&app);
        async move {
            client
                .plan_next_tests(request)
                .await
                .unwrap()
                .into_inner()
                .techniques
                .into_iter()
                .map(|t| t.technique_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        only(pb::PlanNextTestsRequest {
            threat_actor_id: "G0002".into(),
            ..Default::default()
        })
        .await,
        ["T1059.001"]
    );
    assert_eq!(
        only(pb::PlanNextTestsRequest {
            tactic: "TA0006".into(),
            ..Default::default()
        })
        .await,
        ["T1003"]
    );
    // Refusals name the field.
    for (request, field) in [
        (
            pb::PlanNextTestsRequest {
                weights: Some(pb::PlanWeights {
                    kev: Some(-1.0),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "weights.kev",
        ),
        (
            pb::PlanNextTestsRequest {
                limit: 5_000,
                ..Default::default()
            },
            "limit",
        ),
    ] {
        let status = scoring(&app).plan_next_tests(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // The plan's Navigator layer: scored by priority.
    let layer = scoring(&app)
        .export_navigator_layer(pb::ExportNavigatorLayerRequest {
            priority: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .layer_json;
    let layer: serde_json::Value = serde_json::from_str(&layer).unwrap();
    let entry = layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["techniqueID"] == "T1105")
        .unwrap();
    let t1105 = expected.iter().find(|e| e.0 == "T1105").unwrap().1;
    assert!((entry["score"].as_f64().unwrap() - (t1105 * 10.0).round() / 10.0).abs() < 1e-9);
    assert!(entry["comment"].as_str().unwrap().starts_with("priority"));
    let status = scoring(&app)
        .export_navigator_layer(pb::ExportNavigatorLayerRequest {
            priority: true,
            as_of: days_ago(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_plan_costs_the_same_statements_and_calls_at_two_sizes() {
    let mut costs = Vec::new();
    for large in [false, true] {
        let app = spawn_app().await;
        if large {
            crate::ingest::import_attack_18(&app).await;
            crate::ingest::import(&app, purple_ingest::domain::Kind::Kev, "kev")
                .await
                .unwrap();
        } else {
            catalogue(&app).await;
            threats(&app).await;
        }
        // The board computed once (and cached, as any read of it is); the
        // plan then costs its own inputs only.
        scoring(&app)
            .get_organization_score(pb::GetOrganizationScoreRequest::default())
            .await
            .unwrap();
        let trace = Trace::new("purple.scoring.v1.ScoringService/PlanNextTests");
        let plan = scoring(&app)
            .plan_next_tests(trace.request(pb::PlanNextTestsRequest {
                limit: 1_000,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(plan.considered, if large { 691 } else { 4 });
        costs.push(Cost::of(&app.trace(&trace).await));
    }
    assert_eq!(costs[0], costs[1], "small vs large");
    // The request and GetThreatSignals, one chunk whatever the size.
    assert_eq!(costs[1].rpcs, 2, "{:?}", costs[1]);
    // Scoring reads the latest snapshot in one statement; ingest answers
    // the signals in two.
    assert_eq!(costs[1].statements.get("scoring"), Some(&1));
    assert_eq!(costs[1].statements.get("ingest"), Some(&2));
}

async fn next_changes(
    stream: &mut tonic::Streaming<pb::WatchScoresResponse>,
    until: impl Fn(&pb::ScoreChange) -> bool,
) -> (Vec<pb::ScoreChange>, String) {
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a change within ten seconds")
            .unwrap()
            .unwrap();
        let done = message.changes.iter().any(&until);
        seen.extend(message.changes);
        if done {
            return (seen, message.cursor);
        }
    }
}

fn regression_of(technique: &'static str) -> impl Fn(&pb::ScoreChange) -> bool {
    move |c| c.kind == pb::ScoreChangeKind::Regression as i32 && c.technique_id == technique
}

async fn regressed_notifications(app: &TestApp, team: &Team) -> Vec<cpb::Notification> {
    as_user(app, &team.lead)
        .list_notifications(cpb::ListNotificationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notifications
        .into_iter()
        .filter(|n| n.kind == "technique.regressed")
        .collect()
}

#[tokio::test]
async fn watchers_see_regressions_as_they_happen_and_resume_from_their_cursor() {
    let app = spawn_app_with(|s| s.domain.relay_interval_ms = 50).await;
    catalogue(&app).await;
    let team = team(&app).await;
    let mut watch = scoring(&app)
        .watch_scores(pb::WatchScoresRequest::default())
        .await
        .unwrap()
        .into_inner();
    let hello = watch.message().await.unwrap().unwrap();
    assert!(hello.changes.is_empty());

    // Validated blocked: in progress, then partial — technique changes.
    let created = create_test(&app, &team, "T1105").await;
    let test = validate(&app, &team, created, Outcome::Blocked, &[])
        .await
        .test
        .unwrap();
    let (changes, cursor) = next_changes(&mut watch, |c| {
        c.technique_id == "T1105" && c.new_status == TechniqueStatus::Partial as i32
    })
    .await;
    assert!(
        changes
            .iter()
            .all(|c| c.kind != pb::ScoreChangeKind::Regression as i32)
    );
    assert!(
        changes
            .iter()
            .any(|c| c.kind == pb::ScoreChangeKind::Organization as i32),
        "{changes:?}"
    );

    // Not detected on a retest: partial to gap, a regression, seen within
    // a few relay intervals of the validation.
    let retest = step(&app, &test, &team.lead, cpb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let failed = validate(&app, &team, retest, Outcome::NotDetected, &[])
        .await
        .test
        .unwrap();
    let validated = std::time::Instant::now();
    let (changes, _) = next_changes(&mut watch, regression_of("T1105")).await;
    let elapsed = validated.elapsed();
    eprintln!("the regression reached the watcher {elapsed:?} after the validation");
    let regression = changes.iter().find(|c| regression_of("T1105")(c)).unwrap();
    assert_eq!(regression.old_status, TechniqueStatus::Partial as i32);
    assert_eq!(regression.new_status, TechniqueStatus::Gap as i32);
    assert!(regression.new_score < regression.old_score);
    drop(watch);

    // While nobody watches: T1105 is validated blocked again (gap to
    // partial) and regresses once more. A watcher resuming from its
    // cursor receives both in order, and nothing before them.
    let again = step(&app, &failed, &team.lead, cpb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let back = validate(&app, &team, again, Outcome::Blocked, &[])
        .await
        .test
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = step(&app, &back, &team.lead, cpb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    validate(&app, &team, last, Outcome::NotDetected, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = scoring(&app)
        .watch_scores(pb::WatchScoresRequest {
            cursor: cursor.clone(),
            regressions_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let hello = resumed.message().await.unwrap().unwrap();
    assert_eq!(hello.cursor, cursor);
    let mut all = Vec::new();
    while all.iter().filter(|c| regression_of("T1105")(c)).count() < 2 {
        let (changes, _) = next_changes(&mut resumed, regression_of("T1105")).await;
        all.extend(changes);
    }
    let cursors: Vec<i64> = all.iter().map(|c| c.cursor.parse().unwrap()).collect();
    assert!(
        cursors.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous: {cursors:?}"
    );
    assert_eq!(
        cursors[0],
        cursor.parse::<i64>().unwrap() + 1,
        "nothing missed"
    );
    let statuses: Vec<(i32, i32)> = all
        .iter()
        .filter(|c| c.technique_id == "T1105")
        .map(|c| (c.old_status, c.new_status))
        .collect();
    use TechniqueStatus::{Gap, Partial};
    assert_eq!(
        statuses,
        [
            (Partial as i32, Gap as i32),
            (Gap as i32, Partial as i32),
            (Partial as i32, Gap as i32)
        ]
    );

    // Each regression told to the purple lead once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while regressed_notifications(&app, &team).await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lead was never told"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let told = regressed_notifications(&app, &team).await;
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        told[0].message.contains("T1105 regressed from partial"),
        "{}",
        told[0].message
    );

    // A bad cursor is refused.
    let status = scoring(&app)
        .watch_scores(pb::WatchScoresRequest {
            cursor: "yesterday".into(),
            regressions_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_regression_delivered_twice_notifies_once() {
    let app = spawn_app().await;
    let team = team(&app).await;
    let regression = cpb::Regression {
        regression_key: "score-change-7".into(),
        technique_id: "T1105".into(),
        old_status: TechniqueStatus::Covered as i32,
        new_status: TechniqueStatus::Partial as i32,
        old_score: 80.0,
        new_score: 60.0,
    };
    let mut campaigns = crate::campaigns::client(&app);
    let first = campaigns
        .notify_regressions(cpb::NotifyRegressionsRequest {
            regressions: vec![regression.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.notified, 1, "one purple lead");
    let second = campaigns
        .notify_regressions(cpb::NotifyRegressionsRequest {
            regressions: vec![regression.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.notified, 0);
    assert_eq!(regressed_notifications(&app, &team).await.len(), 1);
    let status = campaigns
        .notify_regressions(cpb::NotifyRegressionsRequest {
            regressions: vec![cpb::Regression {
                new_status: 42,
                ..regression
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
