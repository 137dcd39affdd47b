//! Campaigns end to end: the red/blue workflow with every refusal, retests,
//! remediations, score inputs, campaigns, the outbox with metrics down, and
//! the statement and call budgets at two data sizes.

use purple_api::{
    campaigns::v1::{self as pb, campaigns_service_client::CampaignsServiceClient},
    common::v1::{Outcome, Role},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
};
use tonic::Code;

use crate::helpers::{AuthChannel, Cost, TestApp, Trace, reason, spawn_app, ts};
use tonic_types::StatusExt;

/// Techniques T1059 (with sub-technique T1059.001), T1003 and T1105, used
/// by two actors.
pub const CATALOG: &str = r#"{"type": "bundle", "id": "bundle--c", "objects": [
  {"type": "x-mitre-tactic", "id": "x-mitre-tactic--1", "name": "Execution", "x_mitre_shortname": "execution",
   "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]},
  {"type": "x-mitre-tactic", "id": "x-mitre-tactic--2", "name": "Credential Access", "x_mitre_shortname": "credential-access",
   "external_references": [{"source_name": "mitre-attack", "external_id": "TA0006"}]},
  {"type": "attack-pattern", "id": "attack-pattern--1", "name": "Command and Scripting Interpreter",
   "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1059"}]},
  {"type": "attack-pattern", "id": "attack-pattern--2", "name": "PowerShell", "x_mitre_is_subtechnique": true,
   "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1059.001"}]},
  {"type": "attack-pattern", "id": "attack-pattern--3", "name": "OS Credential Dumping",
   "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "credential-access"}],
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1003"}]},
  {"type": "attack-pattern", "id": "attack-pattern--4", "name": "Ingress Tool Transfer",
   "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1105"}]},
  {"type": "intrusion-set", "id": "intrusion-set--1", "name": "APT-A",
   "external_references": [{"source_name": "mitre-attack", "external_id": "G0001"}]},
  {"type": "intrusion-set", "id": "intrusion-set--2", "name": "APT-B",
   "external_references": [{"source_name": "mitre-attack", "external_id": "G0002"}]},
  {"type": "relationship", "id": "relationship--1", "relationship_type": "uses", "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--2"},
  {"type": "relationship", "id": "relationship--2", "relationship_type": "uses", "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--3"},
  {"type": "relationship", "id": "relationship--3", "relationship_type": "uses", "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--4"},
  {"type": "relationship", "id": "relationship--4", "relationship_type": "uses", "source_ref": "intrusion-set--2", "target_ref": "attack-pattern--2"}
]}"#;

pub async fn import_bundle(app: &TestApp, bundle: &str) {
    let chunk = ImportRequest {
        kind: ImportKind::Attack as i32,
        file_name: "bundle.json".into(),
        data: bundle.as_bytes().to_vec(),
        last: true,
    };
    IngestServiceClient::new(app.channel.clone())
        .import(futures::stream::iter([chunk]))
        .await
        .unwrap();
}

/// A client with the test's all-roles token.
pub fn client(app: &TestApp) -> CampaignsServiceClient<AuthChannel> {
    CampaignsServiceClient::new(app.channel.clone())
}

/// A client acting as one of the team (its token: that user's id and
/// role).
pub fn as_user(app: &TestApp, user_id: &str) -> CampaignsServiceClient<AuthChannel> {
    CampaignsServiceClient::new(app.as_user(user_id))
}

/// The people of a purple team.
pub struct Team {
    pub admin: String,
    pub lead: String,
    pub red: String,
    pub blue: String,
}

pub async fn team(app: &TestApp) -> Team {
    let user = |name: &str, role: Role| pb::User {
        display_name: name.into(),
        role: role as i32,
        ..Default::default()
    };
    let users = client(app)
        .create_users(pb::CreateUsersRequest {
            actor_id: String::new(),
            users: vec![
                user("Ada", Role::Admin),
                user("Lee", Role::PurpleLead),
                user("Rex", Role::RedTech),
                user("Blu", Role::BlueTech),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    for u in &users {
        app.register(&u.user_id, Role::try_from(u.role).unwrap());
    }
    Team {
        admin: users[0].user_id.clone(),
        lead: users[1].user_id.clone(),
        red: users[2].user_id.clone(),
        blue: users[3].user_id.clone(),
    }
}

pub async fn create_test(app: &TestApp, team: &Team, technique: &str) -> pb::Test {
    as_user(app, &team.lead)
        .create_tests(pb::CreateTestsRequest {
            actor_id: team.lead.clone(),
            tests: vec![pb::NewTest {
                technique_id: technique.into(),
                red_assignee_id: team.red.clone(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .tests
        .remove(0)
}

/// One transition, returning the test after it.
pub async fn step(
    app: &TestApp,
    test: &pb::Test,
    actor: &str,
    action: pb::TestAction,
    adjust: impl FnOnce(&mut pb::TransitionTestRequest),
) -> Result<pb::TransitionTestResponse, tonic::Status> {
    let mut request = pb::TransitionTestRequest {
        test_id: test.test_id.clone(),
        action: action as i32,
        actor_id: actor.into(),
        expected_version: test.version,
        ..Default::default()
    };
    adjust(&mut request);
    as_user(app, actor)
        .transition_test(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Walks a test to validated with `outcome` (see [`complete_blue`]).
pub async fn validate(
    app: &TestApp,
    team: &Team,
    test: pb::Test,
    outcome: Outcome,
    rules: &[(&str, bool)],
) -> pb::TransitionTestResponse {
    let t = complete_blue(app, team, test, outcome, rules).await;
    step(app, &t, &team.lead, pb::TestAction::Validate, |_| {})
        .await
        .unwrap()
}

/// Walks a test to blue_complete with `outcome`: executed at the test's
/// creation instant (the only past instant a fresh test can plausibly
/// claim) and, for blocked or detected, detected at the moment blue
/// completes.
pub async fn complete_blue(
    app: &TestApp,
    team: &Team,
    test: pb::Test,
    outcome: Outcome,
    rules: &[(&str, bool)],
) -> pb::Test {
    use pb::TestAction::*;
    let executed = test.created_at;
    let t = step(app, &test, &team.red, StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let t = step(app, &t, &team.red, CompleteRed, |r| {
        r.executed_at = executed;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let t = step(app, &t, &team.blue, StartBlue, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let results: Vec<pb::DetectionResult> = rules
        .iter()
        .map(|(rule, fired)| pb::DetectionResult {
            rule_id: (*rule).into(),
            triggered: *fired,
            ..Default::default()
        })
        .collect();
    step(app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = outcome as i32;
        r.detected_at = outcome
            .is_detection()
            .then(|| prost_types::Timestamp::from(std::time::SystemTime::now()));
        r.detection_results = results;
    })
    .await
    .unwrap()
    .test
    .unwrap()
}

#[tokio::test]
async fn a_test_walks_the_workflow_and_every_refusal_has_its_code() {
    use pb::TestAction::*;
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "t1059.001").await;
    assert_eq!(
        (test.state, test.version, test.title.as_str()),
        (pb::TestState::Planned as i32, 1, "PowerShell")
    );

    let err = step(&app, &test, &team.blue, StartRed, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = step(&app, &test, &team.red, StartBlue, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // A viewer may not act; a red tech may not act as someone else.
    let err = step(&app, &test, "nobody", StartRed, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = as_user(&app, &team.red)
        .transition_test(pb::TransitionTestRequest {
            test_id: test.test_id.clone(),
            action: StartRed as i32,
            actor_id: team.lead.clone(),
            expected_version: test.version,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a forged actor_id");
    let err = CampaignsServiceClient::new(app.bare.clone())
        .transition_test(pb::TransitionTestRequest {
            test_id: test.test_id.clone(),
            action: StartRed as i32,
            expected_version: test.version,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no token");
    let err = step(
        &app,
        &pb::Test {
            test_id: "missing".into(),
            ..test.clone()
        },
        &team.red,
        StartRed,
        |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = step(&app, &test, &team.lead, Validate, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "WRONG_STATE");

    let t = step(&app, &test, &team.red, StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    assert_eq!(t.version, 2);
    let err = step(&app, &test, &team.red, CompleteRed, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "version 1 is stale");
    assert_eq!(reason(&err), "STALE_VERSION");
    let info = err.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["current_version"], "2",
        "the client learns what to reload"
    );
    let t = step(&app, &t, &team.red, CompleteRed, |r| {
        r.executed_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let t = step(&app, &t, &team.blue, StartBlue, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let err = step(&app, &t, &team.blue, CompleteBlue, |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "outcome: required")
    );
    let err = step(&app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Detected as i32;
    })
    .await
    .unwrap_err();
    assert!(
        err.message().starts_with("detected_at"),
        "{}",
        err.message()
    );
    let refused = client(&app)
        .get_tests_by_ids(pb::GetTestsByIdsRequest {
            test_ids: vec![t.test_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refused.tests[0].version, t.version,
        "refusals change nothing"
    );

    let t = step(&app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Detected as i32;
        r.detected_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let t = step(&app, &t, &team.lead, RejectBlue, |r| {
        r.reason = "wrong alert".into();
    })
    .await
    .unwrap()
    .test
    .unwrap();
    assert_eq!(
        (t.state, t.outcome, t.rejection_reason.as_str()),
        (pb::TestState::BlueInProgress as i32, 0, "wrong alert")
    );
    let t = step(&app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Blocked as i32;
        r.detected_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let validated = step(&app, &t, &team.lead, Validate, |_| {}).await.unwrap();
    assert!(
        validated.remediation.is_none(),
        "blocked opens no remediation"
    );
    let v = validated.test.unwrap();
    assert_eq!(
        (v.state, v.outcome),
        (pb::TestState::Validated as i32, Outcome::Blocked as i32)
    );
    let err = step(&app, &v, &team.admin, Cancel, |_| {})
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a validated test cannot be cancelled"
    );

    let retest = step(&app, &v, &team.lead, Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    assert_eq!(
        (retest.retest_of.as_str(), retest.state),
        (v.test_id.as_str(), pb::TestState::Planned as i32)
    );
    let retest2 = {
        let r = validate(&app, &team, retest, Outcome::NotDetected, &[]).await;
        step(&app, &r.test.unwrap(), &team.lead, Retest, |_| {})
            .await
            .unwrap()
            .retest
            .unwrap()
    };
    assert_eq!(
        retest2.retest_of, v.test_id,
        "retest_of is the chain's root"
    );
    let chain = client(&app)
        .get_retest_chain(pb::GetRetestChainRequest {
            test_id: retest2.test_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chain.tests.len(), 3);
    assert_eq!(chain.tests[0].test_id, v.test_id);
    assert_eq!(
        chain.effective_test_id, chain.tests[1].test_id,
        "the latest validated test is effective"
    );
}

#[tokio::test]
async fn validating_an_undetected_test_opens_a_remediation_that_moves_to_completed() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1003").await;
    let done = validate(&app, &team, test, Outcome::Logged, &[]).await;
    let r = done.remediation.unwrap();
    assert_eq!((r.state, r.version), (pb::RemediationState::Open as i32, 1));
    let mut c = as_user(&app, &team.blue);
    let move_to = |to: pb::RemediationState, version: i64| pb::TransitionRemediationRequest {
        remediation_id: r.remediation_id.clone(),
        actor_id: team.blue.clone(),
        to: to as i32,
        expected_version: version,
        notes: String::new(),
    };
    let err = c
        .transition_remediation(move_to(pb::RemediationState::Completed, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let r2 = c
        .transition_remediation(move_to(pb::RemediationState::InProgress, 1))
        .await
        .unwrap()
        .into_inner()
        .remediation
        .unwrap();
    let err = c
        .transition_remediation(move_to(pb::RemediationState::Completed, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let r3 = c
        .transition_remediation(move_to(pb::RemediationState::Completed, r2.version))
        .await
        .unwrap()
        .into_inner()
        .remediation
        .unwrap();
    assert_eq!(r3.state, pb::RemediationState::Completed as i32);
    assert!(r3.completed_at.is_some());
    let listed = c
        .list_remediations(pb::ListRemediationsRequest {
            state: pb::RemediationState::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.remediations.len(), 1);
}

#[tokio::test]
async fn aggregates_count_effective_tests_per_chain_now_and_as_of_the_past() {
    use pb::TestAction::*;
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    // Chain 1: detected, then a retest not detected (overrides it).
    let first = validate(
        &app,
        &team,
        create_test(&app, &team, "T1059.001").await,
        Outcome::Detected,
        &[("rule-a", true), ("rule-b", false)],
    )
    .await
    .test
    .unwrap();
    let before_retest = first.validated_at.unwrap();
    let retest = step(&app, &first, &team.lead, Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    validate(
        &app,
        &team,
        retest,
        Outcome::NotDetected,
        &[("rule-c", true)],
    )
    .await;
    // Chain 2: blocked. A third test cancelled, a fourth only planned.
    validate(
        &app,
        &team,
        create_test(&app, &team, "T1059.001").await,
        Outcome::Blocked,
        &[("rule-a", true)],
    )
    .await;
    let cancelled = create_test(&app, &team, "T1059.001").await;
    step(&app, &cancelled, &team.lead, Cancel, |_| {})
        .await
        .unwrap();
    create_test(&app, &team, "T1059.001").await;

    let mut c = client(&app);
    let aggregate = |as_of: Option<prost_types::Timestamp>| pb::AggregateTestsByTechniqueRequest {
        technique_ids: vec!["T1059.001".into(), "T1003".into()],
        as_of,
        ..Default::default()
    };
    let now = c
        .aggregate_tests_by_technique(aggregate(None))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    let a = &now[0];
    assert_eq!(
        (
            a.total_tests,
            a.validated_tests,
            a.cancelled_tests,
            a.effective_tests,
            a.blocked,
            a.detected,
            a.logged,
            a.not_detected
        ),
        (4, 3, 1, 2, 1, 0, 0, 1)
    );
    assert_eq!(
        rule_ids(&a.triggered_rules),
        ["rule-a", "rule-c"],
        "rules fired on effective tests only"
    );
    assert_eq!(
        (
            now[1].technique_id.as_str(),
            now[1].total_tests,
            now[1].effective_tests
        ),
        ("T1003", 0, 0)
    );

    // The same inputs computed by ranking at read time, for an explicit now.
    let far = c
        .aggregate_tests_by_technique(aggregate(Some(ts(4_000_000_000))))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    assert_eq!(far, now);
    // Before the retest was validated, the first test was effective.
    let past = c
        .aggregate_tests_by_technique(aggregate(Some(before_retest)))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    assert_eq!(
        (
            past[0].effective_tests,
            past[0].detected,
            past[0].not_detected
        ),
        (1, 1, 0)
    );
    assert_eq!(rule_ids(&past[0].triggered_rules), ["rule-a"]);
    // Then only the first test existed: the retest, the second chain and
    // the cancelled and planned tests came later.
    assert_eq!(
        (
            past[0].total_tests,
            past[0].validated_tests,
            past[0].cancelled_tests
        ),
        (1, 1, 0)
    );
}

/// With `rule_table` each triggered rule is sent once and every aggregate
/// names its rules by place: resolved, they are the rules the strings name,
/// now and as of an instant, in request order.
#[tokio::test]
async fn a_rule_table_sends_each_rule_once_and_names_what_the_strings_name() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    for (technique, rules) in [
        ("T1059.001", &[("rule-a", true), ("rule-b", true)][..]),
        (
            "T1003",
            &[("rule-b", true), ("rule-c", false), ("rule-d", true)],
        ),
        ("T1105", &[("rule-a", true)]),
    ] {
        let test = create_test(&app, &team, technique).await;
        validate(&app, &team, test, Outcome::Detected, rules).await;
    }
    let mut c = client(&app);
    let ids: Vec<String> = ["T1105", "T1003", "T1059.001", "T1046"]
        .iter()
        .map(|id| (*id).to_string())
        .collect();
    for as_of in [None, Some(ts(4_000_000_000))] {
        let ask = |rule_table| pb::AggregateTestsByTechniqueRequest {
            technique_ids: ids.clone(),
            as_of,
            rule_table,
        };
        let strings = c
            .aggregate_tests_by_technique(ask(false))
            .await
            .unwrap()
            .into_inner();
        let table = c
            .aggregate_tests_by_technique(ask(true))
            .await
            .unwrap()
            .into_inner();
        assert!(strings.rules.is_empty(), "no table unless asked");
        let mut sent = rule_ids(&table.rules);
        sent.sort();
        assert_eq!(
            sent,
            ["rule-a", "rule-b", "rule-d"],
            "{as_of:?}: each rule once"
        );
        let resolved: Vec<(String, Vec<String>)> = table
            .aggregates
            .iter()
            .map(|a| {
                #[allow(deprecated)]
                let no_strings = a.triggered_rules.is_empty() && a.triggered_rule_ids.is_empty();
                assert!(no_strings, "{}: strings left in", a.technique_id);
                let rules = a
                    .triggered_rule_indexes
                    .iter()
                    .map(|&i| table.rules[i as usize].rule_id.clone())
                    .collect();
                (a.technique_id.clone(), rules)
            })
            .collect();
        let named: Vec<(String, Vec<String>)> = strings
            .aggregates
            .iter()
            .map(|a| (a.technique_id.clone(), rule_ids(&a.triggered_rules)))
            .collect();
        assert_eq!(resolved, named, "{as_of:?}");
        assert_eq!(
            named.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ids,
            "request order"
        );
        assert_eq!(named[0].1, ["rule-a"]);
        assert_eq!(named[3].1, Vec::<String>::new(), "untested");
    }
}

#[tokio::test]
async fn campaigns_group_tests_clone_recur_and_report() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let mut c = client(&app);
    let created = as_user(&app, &team.lead)
        .create_campaign(pb::CreateCampaignRequest {
            actor_id: team.lead.clone(),
            name: "Q3".into(),
            description: "quarterly".into(),
            tests: ["T1059.001", "T1003", "T1105"]
                .iter()
                .map(|t| pb::NewTest {
                    technique_id: (*t).into(),
                    red_assignee_id: team.red.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let campaign = created.campaign.unwrap();
    assert_eq!(campaign.test_count, 3);
    let detected = validate(
        &app,
        &team,
        created.tests[0].clone(),
        Outcome::Detected,
        &[("rule-a", true)],
    )
    .await
    .test
    .unwrap();
    let seconds = |t: Option<prost_types::Timestamp>| {
        let t = t.unwrap();
        t.seconds as f64 + f64::from(t.nanos) / 1e9
    };
    let time_to_detect = seconds(detected.detected_at) - seconds(detected.executed_at);
    assert!(time_to_detect > 0.0);
    validate(
        &app,
        &team,
        created.tests[1].clone(),
        Outcome::NotDetected,
        &[],
    )
    .await;

    let empty = as_user(&app, &team.lead)
        .create_campaign(pb::CreateCampaignRequest {
            actor_id: team.lead.clone(),
            name: "empty".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .campaign
        .unwrap();
    let progress = c
        .get_campaign_progress(pb::GetCampaignProgressRequest {
            campaign_ids: vec![
                campaign.campaign_id.clone(),
                "nope".into(),
                empty.campaign_id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let p = &progress.progress[0];
    assert_eq!(
        (
            p.total,
            p.by_state.get("validated"),
            p.by_state.get("planned")
        ),
        (3, Some(&2), Some(&1))
    );
    let mut outcomes: Vec<(&str, i32)> =
        p.by_outcome.iter().map(|(o, n)| (o.as_str(), *n)).collect();
    outcomes.sort();
    assert_eq!(outcomes, [("detected", 1), ("not_detected", 1)]);
    assert!((p.percent_complete - 200.0 / 3.0).abs() < 1e-9);
    let e = &progress.progress[1];
    assert_eq!(
        (
            e.campaign_id.as_str(),
            e.total,
            e.by_state.len(),
            e.percent_complete
        ),
        (empty.campaign_id.as_str(), 0, 0, 0.0)
    );
    assert_eq!(progress.missing_ids, ["nope"]);

    let report = c
        .get_campaign_report(pb::GetCampaignReportRequest {
            campaign_id: campaign.campaign_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.rows.len(), 3);
    let row = &report.rows[0];
    assert_eq!(
        (row.technique_name.as_str(), row.triggered_rule_ids.len()),
        ("PowerShell", 1)
    );
    assert!((row.time_to_detect_seconds - time_to_detect).abs() < 1e-6);
    assert!(report.rows[1].remediation.is_some());
    let execution = report
        .summary
        .iter()
        .find(|s| s.tactic == "execution")
        .unwrap();
    assert_eq!(execution.tests, 2);
    assert!(
        report.markdown.contains(
            &format!(
                "| T1059.001 | PowerShell | execution | validated | detected | {time_to_detect:.0} | 1 | — |"
            )
        ),
        "{}",
        report.markdown
    );

    let clone = as_user(&app, &team.lead)
        .clone_campaign(pb::CloneCampaignRequest {
            actor_id: team.lead.clone(),
            campaign_id: campaign.campaign_id.clone(),
            name: "Q4".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            clone.tests.len(),
            clone.campaign.as_ref().unwrap().cloned_from.as_str()
        ),
        (3, campaign.campaign_id.as_str())
    );
    assert!(
        clone
            .tests
            .iter()
            .all(|t| t.state == pb::TestState::Planned as i32)
    );

    let err = as_user(&app, &team.lead)
        .set_campaign_schedule(pb::SetCampaignScheduleRequest {
            actor_id: team.lead.clone(),
            campaign_id: campaign.campaign_id.clone(),
            schedule: Some(pb::Schedule {
                cron: "every day".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let scheduled = as_user(&app, &team.lead)
        .set_campaign_schedule(pb::SetCampaignScheduleRequest {
            actor_id: team.lead.clone(),
            campaign_id: campaign.campaign_id.clone(),
            schedule: Some(pb::Schedule {
                interval_seconds: 86_400,
                next_run_at: Some(ts(1_780_000_000)),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .campaign
        .unwrap();
    assert_eq!(scheduled.schedule.unwrap().interval_seconds, 86_400);
    let ran = c
        .run_due_campaigns(pb::RunDueCampaignsRequest {
            now: Some(ts(1_780_000_001)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ran.created.len(), ran.notifications), (1, 1));
    let again = c
        .run_due_campaigns(pb::RunDueCampaignsRequest {
            now: Some(ts(1_780_000_002)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.created.is_empty(), "the next run moved a day on");
    // The red tech reads their own inbox; nobody else may (but an admin).
    let inbox = as_user(&app, &team.red)
        .list_notifications(pb::ListNotificationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].campaign_id, ran.created[0].campaign_id);
    let err = as_user(&app, &team.blue)
        .list_notifications(pb::ListNotificationsRequest {
            user_id: team.red.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = as_user(&app, &team.blue)
        .mark_notifications_read(pb::MarkNotificationsReadRequest {
            user_id: team.red.clone(),
            notification_ids: vec![inbox[0].notification_id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "a forged owner");
    let marked = as_user(&app, &team.red)
        .mark_notifications_read(pb::MarkNotificationsReadRequest {
            user_id: String::new(),
            notification_ids: vec![inbox[0].notification_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.marked, 1);

    as_user(&app, &team.red)
        .add_worklog(pb::AddWorklogRequest {
            worklog: Some(pb::Worklog {
                test_id: created.tests[0].test_id.clone(),
                user_id: team.red.clone(),
                minutes: 30,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    as_user(&app, &team.blue)
        .add_worklog(pb::AddWorklogRequest {
            worklog: Some(pb::Worklog {
                test_id: created.tests[0].test_id.clone(),
                minutes: 45,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let err = as_user(&app, &team.blue)
        .add_worklog(pb::AddWorklogRequest {
            worklog: Some(pb::Worklog {
                test_id: created.tests[0].test_id.clone(),
                user_id: team.red.clone(),
                minutes: 5,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "time logged as someone else"
    );
    let logs = c
        .list_worklogs(pb::ListWorklogsRequest {
            test_id: created.tests[0].test_id.clone(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((logs.worklogs.len(), logs.total_minutes), (1, 75));
}

#[tokio::test]
async fn creating_tests_checks_techniques_in_one_batch_and_refuses_unknown_ones() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let trace = Trace::new("purple.campaigns.v1.CampaignsService/CreateTests");
    let tests: Vec<pb::NewTest> = (0..50)
        .map(|i| pb::NewTest {
            technique_id: ["T1059", "T1003", "T1105"][i % 3].into(),
            ..Default::default()
        })
        .collect();
    as_user(&app, &team.lead)
        .create_tests(trace.request(pb::CreateTestsRequest {
            actor_id: team.lead.clone(),
            tests,
        }))
        .await
        .unwrap();
    let cost = Cost::of(&app.trace(&trace).await);
    assert_eq!(cost.rpcs, 2, "the request and one GetTechniquesByIds");
    let err = as_user(&app, &team.lead)
        .create_tests(pb::CreateTestsRequest {
            actor_id: team.lead.clone(),
            tests: vec![pb::NewTest {
                technique_id: "T9999".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("T9999"), "{}", err.message());
}

#[tokio::test]
async fn with_metrics_down_transitions_succeed_and_every_event_arrives_once_when_it_returns() {
    use purple_api::metrics::v1::{
        ListAuditEventsRequest, metrics_service_client::MetricsServiceClient,
    };
    use purple_runtime::ServiceName;

    // Reserve a port for metrics, then leave it closed.
    let port = crate::helpers::free_port();
    let metrics_addr = format!("http://127.0.0.1:{port}");
    let app = crate::helpers::spawn_services(
        &[
            ServiceName::Ingest,
            ServiceName::Campaigns,
            ServiceName::Scoring,
        ],
        |s| {
            s.peers.metrics_addr = Some(metrics_addr.clone());
            s.domain.relay_interval_ms = 20;
        },
    )
    .await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    for technique in ["T1059.001", "T1003"] {
        let test = create_test(&app, &team, technique).await;
        validate(&app, &team, test, Outcome::NotDetected, &[]).await;
    }
    // Two tests: created, red started, red executed, blue started, blue
    // completed, validated, remediation opened: 7 events each. The relay
    // (every 20 ms) has been failing against the absent metrics all along.

    let metrics = crate::helpers::spawn_services(&[ServiceName::Metrics], |s| {
        s.listen = format!("127.0.0.1:{port}").parse().unwrap();
    })
    .await;
    let mut audit = MetricsServiceClient::new(metrics.channel.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let events = audit
            .list_audit_events(ListAuditEventsRequest {
                page_size: 1_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if events.len() >= 14 {
            // A negative check needs time to pass: let the relay run a few
            // more rounds, then nothing may have arrived twice.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let again = audit
                .list_audit_events(ListAuditEventsRequest {
                    page_size: 1_000,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .events;
            assert_eq!(again.len(), 14);
            let ids: std::collections::BTreeSet<&str> =
                again.iter().map(|e| e.event_id.as_str()).collect();
            assert_eq!(ids.len(), 14);
            let mut kinds: Vec<&str> = again
                .iter()
                .filter(|e| e.technique_id == "T1003")
                .map(|e| {
                    purple_api::common::v1::EventKind::try_from(e.event_kind)
                        .ok()
                        .and_then(purple_api::common::v1::EventKind::key)
                        .unwrap()
                })
                .collect();
            kinds.sort();
            assert_eq!(
                kinds,
                [
                    "remediation.opened",
                    "test.blue_completed",
                    "test.blue_started",
                    "test.created",
                    "test.red_executed",
                    "test.red_started",
                    "test.validated"
                ]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} events arrived",
            events.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn generating_a_campaign_from_a_threat_actor_takes_its_untested_and_gap_techniques() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    // T1059.001 becomes covered-ish (partial), T1105 in progress; T1003 stays untested.
    validate(
        &app,
        &team,
        create_test(&app, &team, "T1059.001").await,
        Outcome::Blocked,
        &[],
    )
    .await;
    create_test(&app, &team, "T1105").await;
    let trace = Trace::new("purple.campaigns.v1.CampaignsService/GenerateCampaignFromThreatActor");
    let generated = as_user(&app, &team.lead)
        .generate_campaign_from_threat_actor(trace.request(
            pb::GenerateCampaignFromThreatActorRequest {
                actor_id: team.lead.clone(),
                threat_actor_id: "G0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        generated
            .tests
            .iter()
            .map(|t| t.technique_id.as_str())
            .collect::<Vec<_>>(),
        ["T1003"]
    );
    assert_eq!(generated.skipped_technique_ids, ["T1059.001", "T1105"]);
    assert_eq!(generated.campaign.unwrap().threat_actor_id, "G0001");
    let cost = Cost::of(&app.trace(&trace).await);
    let methods: Vec<String> = app
        .spans
        .trace(&trace.trace_id)
        .iter()
        .filter(|s| s.kind == "server")
        .filter_map(|s| s.attr("rpc.method").map(str::to_owned))
        .collect();
    for method in [
        "GetActorTechniques",
        "ScoreTechniques",
        "GetTemplatesForTechniques",
    ] {
        assert_eq!(
            methods.iter().filter(|m| *m == method).count(),
            1,
            "one {method} call: {methods:?}"
        );
    }
    // The request; GetActorTechniques, ScoreTechniques (which makes three
    // of its own: GetTechniquesByIds, GetCatalogInputs,
    // AggregateTestsByTechnique) and GetTemplatesForTechniques.
    assert_eq!(cost.rpcs, 7, "{cost:?}");
    // The role check; the aggregate campaigns serves to scoring; then the
    // campaign, its tests, their events and the technique tallies (one
    // increment of their counts) in one transaction.
    assert_eq!(cost.statements.get("campaigns"), Some(&5), "{cost:?}");
    let err = as_user(&app, &team.lead)
        .generate_campaign_from_threat_actor(pb::GenerateCampaignFromThreatActorRequest {
            actor_id: team.lead.clone(),
            threat_actor_id: "G9999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// A campaign of `n` tests, some validated with results and remediations,
/// retested into one long chain; returns the campaign and a test of the chain.
pub async fn workload(app: &TestApp, team: &Team, n: usize) -> (pb::Campaign, String) {
    let techniques = ["T1059.001", "T1003", "T1105", "T1059"];
    let created = as_user(app, &team.lead)
        .create_campaign(pb::CreateCampaignRequest {
            actor_id: team.lead.clone(),
            name: format!("load {n}"),
            description: String::new(),
            tests: (0..n)
                .map(|i| pb::NewTest {
                    technique_id: techniques[i % 4].into(),
                    red_assignee_id: team.red.clone(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut chain_member = String::new();
    for (i, test) in created.tests.iter().take(n / 3).enumerate() {
        let outcome = if i % 2 == 0 {
            Outcome::Detected
        } else {
            Outcome::NotDetected
        };
        let v = validate(
            app,
            team,
            test.clone(),
            outcome,
            &[("rule-a", true), ("rule-b", i % 3 == 0)],
        )
        .await;
        if i == 0 {
            let mut last = v.test.unwrap();
            for _ in 0..(n / 4) {
                let r = step(app, &last, &team.lead, pb::TestAction::Retest, |_| {})
                    .await
                    .unwrap()
                    .retest
                    .unwrap();
                last = validate(app, team, r, Outcome::Blocked, &[])
                    .await
                    .test
                    .unwrap();
            }
            chain_member = last.test_id;
        }
    }
    (created.campaign.unwrap(), chain_member)
}

#[tokio::test]
async fn campaign_reads_and_writes_cost_the_same_at_two_sizes() {
    let mut all = Vec::new();
    for n in [4, 40] {
        let app = spawn_app().await;
        import_bundle(&app, CATALOG).await;
        let team = team(&app).await;
        let (campaign, chain_member) = workload(&app, &team, n).await;
        let mut c = client(&app);
        let mut costs = Vec::new();
        macro_rules! cost {
            ($call:ident, $path:literal, $request:expr) => {{
                let trace = Trace::new(concat!("purple.campaigns.v1.CampaignsService/", $path));
                c.$call(trace.request($request)).await.unwrap();
                let cost = Cost::of(&app.trace(&trace).await);
                costs.push((
                    $path,
                    cost.statements.get("campaigns").copied().unwrap_or(0),
                    cost.rpcs,
                ));
            }};
        }
        let id = campaign.campaign_id.clone();
        cost!(
            aggregate_tests_by_technique,
            "AggregateTestsByTechnique",
            pb::AggregateTestsByTechniqueRequest {
                technique_ids: vec!["T1059.001".into(), "T1003".into(), "T1105".into()],
                as_of: None,
                ..Default::default()
            }
        );
        cost!(
            aggregate_tests_by_technique,
            "AggregateTestsByTechnique",
            pb::AggregateTestsByTechniqueRequest {
                technique_ids: vec!["T1059.001".into(), "T1003".into()],
                as_of: Some(ts(4_000_000_000)),
                ..Default::default()
            }
        );
        cost!(
            get_campaign_progress,
            "GetCampaignProgress",
            pb::GetCampaignProgressRequest {
                campaign_ids: vec![id.clone()]
            }
        );
        cost!(
            get_campaign_report,
            "GetCampaignReport",
            pb::GetCampaignReportRequest {
                campaign_id: id.clone()
            }
        );
        cost!(
            get_retest_chain,
            "GetRetestChain",
            pb::GetRetestChainRequest {
                test_id: chain_member.clone()
            }
        );
        cost!(
            clone_campaign,
            "CloneCampaign",
            pb::CloneCampaignRequest {
                actor_id: String::new(),
                campaign_id: id.clone(),
                name: String::new()
            }
        );
        as_user(&app, &team.lead)
            .set_campaign_schedule(pb::SetCampaignScheduleRequest {
                actor_id: team.lead.clone(),
                campaign_id: id.clone(),
                schedule: Some(pb::Schedule {
                    interval_seconds: 3_600,
                    next_run_at: Some(ts(1_780_000_000)),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        cost!(
            run_due_campaigns,
            "RunDueCampaigns",
            pb::RunDueCampaignsRequest {
                now: Some(ts(1_780_000_001))
            }
        );
        all.push(costs);
    }
    assert_eq!(all[0], all[1], "4 tests vs 40 tests");
}

#[tokio::test]
async fn generating_from_a_large_actor_costs_what_a_small_one_does() {
    let mut costs = Vec::new();
    for (large, actor) in [(false, "G0001"), (true, "G0016")] {
        let app = spawn_app().await;
        if large {
            crate::ingest::import_attack_18(&app).await;
            crate::ingest::import(&app, purple_ingest::domain::Kind::Atomic, "atomic-red-team")
                .await
                .unwrap();
        } else {
            import_bundle(&app, CATALOG).await;
        }
        let team = team(&app).await;
        let trace =
            Trace::new("purple.campaigns.v1.CampaignsService/GenerateCampaignFromThreatActor");
        let generated = as_user(&app, &team.lead)
            .generate_campaign_from_threat_actor(trace.request(
                pb::GenerateCampaignFromThreatActorRequest {
                    actor_id: team.lead.clone(),
                    threat_actor_id: actor.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let tests = generated.tests.len();
        assert!(
            if large { tests > 30 } else { tests == 3 },
            "{actor}: {tests} tests"
        );
        if large {
            assert!(
                generated
                    .tests
                    .iter()
                    .any(|t| t.template_id.starts_with("atomic:")),
                "best templates were picked"
            );
        }
        costs.push(Cost::of(&app.trace(&trace).await));
    }
    assert_eq!(costs[0], costs[1], "3 techniques vs APT29's");
}

/// A transition reads its test before it takes the write turn, so many at
/// once at one version all read that version: the versioned update lets
/// exactly one through, and the others are refused as stale (not applied
/// twice), on both backends.
#[tokio::test]
async fn concurrent_transitions_of_one_test_at_one_version_move_it_once() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1059.001").await;
    let tries = (0..8).map(|_| step(&app, &test, &team.red, pb::TestAction::StartRed, |_| {}));
    let results = futures::future::join_all(tries).await;
    let moved = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(moved, 1, "{results:?}");
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code(), Code::Aborted, "{err:?}");
        assert_eq!(reason(err), "STALE_VERSION");
    }
    let now = client(&app)
        .get_tests_by_ids(pb::GetTestsByIdsRequest {
            test_ids: vec![test.test_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(now.tests[0].version, test.version + 1, "moved once");
    assert_eq!(now.tests[0].state, pb::TestState::RedInProgress as i32);
}

#[tokio::test]
async fn tallies_kept_on_write_survive_concurrent_transitions_of_one_technique() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let mut tests = Vec::new();
    for _ in 0..12 {
        tests.push(create_test(&app, &team, "T1059.001").await);
    }
    let outcomes = [
        Outcome::Blocked,
        Outcome::Detected,
        Outcome::Logged,
        Outcome::NotDetected,
    ];
    let walks = tests.into_iter().enumerate().map(|(i, test)| {
        let (app, team) = (&app, &team);
        async move {
            validate(
                app,
                team,
                test,
                outcomes[i % 4],
                &[(["r1", "r2", "r3"][i % 3], true)],
            )
            .await
        }
    });
    futures::future::join_all(walks).await;
    let mut c = client(&app);
    let request = |as_of| pb::AggregateTestsByTechniqueRequest {
        technique_ids: vec!["T1059.001".into()],
        as_of,
        ..Default::default()
    };
    let now = c
        .aggregate_tests_by_technique(request(None))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    let ranked = c
        .aggregate_tests_by_technique(request(Some(ts(4_000_000_000))))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    assert_eq!(
        now, ranked,
        "the tallies kept on write match ranking at read time"
    );
    let a = &now[0];
    assert_eq!(
        (
            a.total_tests,
            a.validated_tests,
            a.effective_tests,
            a.blocked,
            a.detected,
            a.logged,
            a.not_detected
        ),
        (12, 12, 12, 3, 3, 3, 3)
    );
    assert_eq!(rule_ids(&a.triggered_rules), ["r1", "r2", "r3"]);

    // Twelve retests of one chain validated at once: the chain's history
    // (what a past as_of reads) still has one effective test at a time.
    let root = validate(
        &app,
        &team,
        create_test(&app, &team, "T1003").await,
        Outcome::Logged,
        &[],
    )
    .await
    .test
    .unwrap();
    let mut retests = Vec::new();
    for _ in 0..12 {
        retests.push(
            step(&app, &root, &team.lead, pb::TestAction::Retest, |_| {})
                .await
                .unwrap()
                .retest
                .unwrap(),
        );
    }
    let walks = retests.into_iter().map(|test| {
        let (app, team) = (&app, &team);
        async move { validate(app, team, test, Outcome::Blocked, &[]).await }
    });
    let validated = futures::future::join_all(walks).await;
    let latest = validated
        .iter()
        .filter_map(|v| v.test.as_ref().unwrap().validated_at)
        .max_by_key(|t| (t.seconds, t.nanos));
    let chain = c
        .aggregate_tests_by_technique(pb::AggregateTestsByTechniqueRequest {
            technique_ids: vec!["T1003".into()],
            as_of: Some(ts(4_000_000_000)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .aggregates
        .remove(0);
    assert_eq!(
        (
            chain.effective_tests,
            chain.blocked,
            chain.latest_validated_at
        ),
        (1, 1, latest),
        "{chain:?}"
    );
    // And the tally kept by increments: the chain's one effective test,
    // blocked, the root's logged outcome moved out.
    let now = c
        .aggregate_tests_by_technique(pb::AggregateTestsByTechniqueRequest {
            technique_ids: vec!["T1003".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .aggregates
        .remove(0);
    assert_eq!(
        (
            now.total_tests,
            now.validated_tests,
            now.effective_tests,
            now.blocked,
            now.logged,
            now.latest_validated_at
        ),
        (13, 13, 1, 1, 0, latest),
        "{now:?}"
    );
}

/// The tallies move by increments (migration 0014): a validation by the
/// difference between the chain's effective test it replaces and the new
/// one, in its update's trigger; a rule leaves the tally when the last
/// effective test that triggered it is replaced, and stays while another
/// still counts it. After creations, retests, replacements and a
/// cancellation the tally equals ranking at read time, and a validation
/// spends no statement of its own on the tally.
#[tokio::test]
async fn tallies_move_by_increments_and_rules_leave_with_their_last_effective_test() {
    use pb::TestAction::*;
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let technique = "T1105";
    let first = validate(
        &app,
        &team,
        create_test(&app, &team, technique).await,
        Outcome::Blocked,
        &[("only-first", true), ("shared", true), ("quiet", false)],
    )
    .await
    .test
    .unwrap();
    validate(
        &app,
        &team,
        create_test(&app, &team, technique).await,
        Outcome::Logged,
        &[("shared", true)],
    )
    .await;
    let cancelled = create_test(&app, &team, technique).await;
    let trace = Trace::new("purple.campaigns.v1.CampaignsService/TransitionTest");
    as_user(&app, &team.lead)
        .transition_test(trace.request(pb::TransitionTestRequest {
            test_id: cancelled.test_id.clone(),
            action: Cancel as i32,
            actor_id: team.lead.clone(),
            expected_version: cancelled.version,
            ..Default::default()
        }))
        .await
        .unwrap();
    let cancel_cost = Cost::of(&app.trace(&trace).await);

    // The first test's retest replaces it in its chain, without its rule.
    let retest = step(&app, &first, &team.lead, Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let t = complete_blue(
        &app,
        &team,
        retest,
        Outcome::Detected,
        &[("only-retest", true)],
    )
    .await;
    let trace = Trace::new("purple.campaigns.v1.CampaignsService/TransitionTest");
    as_user(&app, &team.lead)
        .transition_test(trace.request(pb::TransitionTestRequest {
            test_id: t.test_id.clone(),
            action: Validate as i32,
            actor_id: team.lead.clone(),
            expected_version: t.version,
            ..Default::default()
        }))
        .await
        .unwrap();
    let validate_spans = app.trace(&trace).await;
    let tally_statements: Vec<&str> = validate_spans
        .iter()
        .filter_map(|s| s.attr("db.statement"))
        .filter(|sql| sql.contains("technique_tallies"))
        .collect();
    assert!(
        tally_statements.is_empty(),
        "a validation moves its tally in its update's trigger: {tally_statements:?}"
    );
    // The test read, the versioned update, the chain's effective test and
    // the outbox; and a cancellation one increment more.
    assert_eq!(
        Cost::of(&validate_spans).statements.get("campaigns"),
        Some(&4)
    );
    assert_eq!(cancel_cost.statements.get("campaigns"), Some(&4));

    let mut c = client(&app);
    let request = |as_of| pb::AggregateTestsByTechniqueRequest {
        technique_ids: vec![technique.into()],
        as_of,
        ..Default::default()
    };
    let now = c
        .aggregate_tests_by_technique(request(None))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    let ranked = c
        .aggregate_tests_by_technique(request(Some(ts(4_000_000_000))))
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    assert_eq!(now, ranked, "increments match ranking at read time");
    let a = &now[0];
    assert_eq!(
        (
            a.total_tests,
            a.validated_tests,
            a.cancelled_tests,
            a.effective_tests,
            a.blocked,
            a.detected,
            a.logged,
            a.not_detected
        ),
        (3, 3, 1, 2, 0, 1, 1, 0),
        "{a:?}"
    );
    assert_eq!(
        rule_ids(&a.triggered_rules),
        ["only-retest", "shared"],
        "the first test's own rule left with it, the shared one stays"
    );
}

#[tokio::test]
async fn detection_results_stale_tests_and_list_filters() {
    use pb::TestAction::*;
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let mut c = client(&app);

    // Results recorded on their own while blue works the test.
    let test = create_test(&app, &team, "T1003").await;
    let t = step(&app, &test, &team.red, StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let t = step(&app, &t, &team.red, CompleteRed, |r| {
        r.executed_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let result = |test_id: &str, rule: &str, triggered: bool| pb::DetectionResult {
        test_id: test_id.into(),
        rule_id: rule.into(),
        triggered,
        ..Default::default()
    };
    let err = as_user(&app, &team.blue)
        .record_detection_results(pb::RecordDetectionResultsRequest {
            actor_id: team.blue.clone(),
            results: vec![result(&t.test_id, "rule-x", true)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "blue has not started");
    let t = step(&app, &t, &team.blue, StartBlue, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let err = as_user(&app, &team.red)
        .record_detection_results(pb::RecordDetectionResultsRequest {
            actor_id: team.red.clone(),
            results: vec![result(&t.test_id, "rule-x", true)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = as_user(&app, &team.blue)
        .record_detection_results(pb::RecordDetectionResultsRequest {
            actor_id: team.blue.clone(),
            results: vec![result("missing", "rule-x", true)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let recorded = as_user(&app, &team.blue)
        .record_detection_results(pb::RecordDetectionResultsRequest {
            actor_id: team.blue.clone(),
            results: vec![
                result(&t.test_id, "rule-x", false),
                result(&t.test_id, "rule-y", true),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.recorded, 2);
    // A later result for the same rule replaces the earlier one.
    as_user(&app, &team.blue)
        .record_detection_results(pb::RecordDetectionResultsRequest {
            actor_id: team.blue.clone(),
            results: vec![result(&t.test_id, "rule-x", true)],
        })
        .await
        .unwrap();
    let t = step(&app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Detected as i32;
        r.detected_at = t.created_at;
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let validated = step(&app, &t, &team.lead, Validate, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let aggregate = c
        .aggregate_tests_by_technique(pb::AggregateTestsByTechniqueRequest {
            technique_ids: vec!["T1003".into()],
            as_of: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .aggregates;
    assert_eq!(
        rule_ids(&aggregate[0].triggered_rules),
        ["rule-x", "rule-y"]
    );

    // Stale: effective tests validated before the cut-off.
    let validated_at = validated.validated_at.unwrap();
    let stale = |older_than: prost_types::Timestamp| pb::ListStaleTestsRequest {
        older_than: Some(older_than),
        ..Default::default()
    };
    let after = c
        .list_stale_tests(stale(ts(validated_at.seconds + 1)))
        .await
        .unwrap()
        .into_inner()
        .tests;
    assert_eq!(
        after.iter().map(|t| t.test_id.as_str()).collect::<Vec<_>>(),
        [validated.test_id.as_str()]
    );
    let before = c
        .list_stale_tests(stale(ts(validated_at.seconds - 1)))
        .await
        .unwrap()
        .into_inner()
        .tests;
    assert!(before.is_empty());
    // Once retested and validated again, the chain's stale test is the new one.
    let retest = step(&app, &validated, &team.lead, Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let again = validate(&app, &team, retest.clone(), Outcome::Blocked, &[])
        .await
        .test
        .unwrap();
    let now_stale = c
        .list_stale_tests(stale(ts(again.validated_at.unwrap().seconds + 1)))
        .await
        .unwrap()
        .into_inner()
        .tests;
    assert_eq!(
        now_stale
            .iter()
            .map(|t| t.test_id.as_str())
            .collect::<Vec<_>>(),
        [again.test_id.as_str()]
    );

    // List filters.
    let other = create_test(&app, &team, "T1105").await;
    let list = |r: pb::ListTestsRequest| {
        let mut c = c.clone();
        async move {
            c.list_tests(r)
                .await
                .unwrap()
                .into_inner()
                .tests
                .into_iter()
                .map(|t| t.test_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(pb::ListTestsRequest {
            technique_id: "T1105".into(),
            ..Default::default()
        })
        .await,
        [other.test_id.as_str()]
    );
    assert_eq!(
        list(pb::ListTestsRequest {
            state: pb::TestState::Planned as i32,
            ..Default::default()
        })
        .await,
        [other.test_id.as_str()]
    );
    assert_eq!(
        list(pb::ListTestsRequest {
            assignee_id: team.red.clone(),
            technique_id: "T1003".into(),
            ..Default::default()
        })
        .await
        .len(),
        2,
        "the retest keeps its assignees"
    );
    let page = c
        .list_tests(pb::ListTestsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tests.len(), 2);
    assert_eq!(page.tests[0].test_id, other.test_id, "newest first");
    assert!(!page.next_page_token.is_empty());

    let reds = c
        .list_users(pb::ListUsersRequest {
            role: Role::RedTech as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        reds.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(),
        [team.red.as_str()]
    );
    let err = as_user(&app, &team.lead)
        .create_users(pb::CreateUsersRequest {
            actor_id: team.lead.clone(),
            users: vec![pb::User {
                display_name: "Eve".into(),
                role: Role::Admin as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "only an admin adds users once there are some"
    );
}

#[tokio::test]
async fn the_scheduler_inside_the_service_runs_due_campaigns_by_itself() {
    let app = crate::helpers::spawn_app_with(|s| s.domain.relay_interval_ms = 20).await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let mut c = client(&app);
    let campaign = as_user(&app, &team.lead)
        .create_campaign(pb::CreateCampaignRequest {
            actor_id: team.lead.clone(),
            name: "weekly".into(),
            description: String::new(),
            tests: vec![pb::NewTest {
                technique_id: "T1003".into(),
                red_assignee_id: team.red.clone(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .campaign
        .unwrap();
    // Due a minute ago, weekly; nobody calls RunDueCampaigns.
    let due = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 60,
        nanos: 0,
    };
    as_user(&app, &team.lead)
        .set_campaign_schedule(pb::SetCampaignScheduleRequest {
            actor_id: team.lead.clone(),
            campaign_id: campaign.campaign_id.clone(),
            schedule: Some(pb::Schedule {
                interval_seconds: 7 * 86_400,
                next_run_at: Some(due),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let campaigns = c
            .list_campaigns(pb::ListCampaignsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .campaigns;
        if let Some(clone) = campaigns
            .iter()
            .find(|k| k.cloned_from == campaign.campaign_id)
        {
            assert_eq!(clone.test_count, 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler never ran the due campaign"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let inbox = c
        .list_notifications(pb::ListNotificationsRequest {
            user_id: team.red.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(inbox.len(), 1);
    let scheduled = c
        .get_campaigns_by_ids(pb::GetCampaignsByIdsRequest {
            campaign_ids: vec![campaign.campaign_id.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .campaigns;
    let next = scheduled[0]
        .schedule
        .as_ref()
        .unwrap()
        .next_run_at
        .unwrap()
        .seconds;
    assert!(
        next > chrono::Utc::now().timestamp(),
        "the next run moved into the future"
    );
    // One run only, however many times the loop wakes (a negative check:
    // it needs time to pass).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let clones = c
        .list_campaigns(pb::ListCampaignsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .campaigns
        .iter()
        .filter(|k| k.cloned_from == campaign.campaign_id)
        .count();
    assert_eq!(clones, 1);
}

#[tokio::test]
async fn list_pages_do_not_shift_when_tests_are_created_between_them() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(create_test(&app, &team, "T1003").await.test_id);
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let request = |token: String| pb::ListTestsRequest {
        technique_id: "T1003".into(),
        page_size: 2,
        page_token: token,
        ..Default::default()
    };
    let first = client(&app)
        .list_tests(request(String::new()))
        .await
        .unwrap()
        .into_inner();
    let ids = |r: &pb::ListTestsResponse| -> Vec<String> {
        r.tests.iter().map(|t| t.test_id.clone()).collect()
    };
    assert_eq!(ids(&first), newest_first[..2]);
    // Three newer tests arrive: an offset token would now repeat rows.
    for _ in 0..3 {
        create_test(&app, &team, "T1003").await;
    }
    let second = client(&app)
        .list_tests(request(first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&second), newest_first[2..4]);
    let third = client(&app)
        .list_tests(request(second.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&third), newest_first[4..]);
    assert!(third.next_page_token.is_empty());

    // A token only serves the filters that issued it, and a forged one is
    // refused.
    for (technique, token) in [
        ("T1105", first.next_page_token.clone()),
        ("T1003", "eyJrIjpbXSwiZiI6IiJ9".to_owned()),
    ] {
        let err = client(&app)
            .list_tests(pb::ListTestsRequest {
                technique_id: technique.into(),
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{technique}");
    }
    // An enum value this build does not know is refused, not ignored.
    let err = client(&app)
        .list_tests(pb::ListTestsRequest {
            state: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The ids of rule references, in order.
pub fn rule_ids(refs: &[purple_api::common::v1::RuleRef]) -> Vec<String> {
    refs.iter().map(|r| r.rule_id.clone()).collect()
}

/// `GetTestsByIds` reads its tests packed in one JSON row and holds them
/// in the replica's memory, checked on every read; it answers exactly what
/// the row-by-row read of `ListTests` does, for tests in every state with
/// every field set, before and after another replica changes one.
#[tokio::test]
async fn tests_by_ids_answer_what_the_list_answers_field_for_field() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let validated = validate(
        &app,
        &team,
        create_test(&app, &team, "T1059.001").await,
        Outcome::Detected,
        &[("r1", true)],
    )
    .await
    .test
    .unwrap();
    let retest = step(&app, &validated, &team.lead, pb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    let started = step(&app, &retest, &team.red, pb::TestAction::StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let executed = retest.created_at;
    let started = step(
        &app,
        &started,
        &team.red,
        pb::TestAction::CompleteRed,
        |r| {
            r.executed_at = executed;
            r.notes = "quoted \"notes\", unicode é ✓ and a\nnewline".into();
        },
    )
    .await
    .unwrap()
    .test
    .unwrap();
    let cancelled = create_test(&app, &team, "T1003").await;
    step(&app, &cancelled, &team.lead, pb::TestAction::Cancel, |_| {})
        .await
        .unwrap();
    // Every test as the row-by-row list reads it, and by id.
    let list = || {
        let mut c = client(&app);
        async move {
            c.list_tests(pb::ListTestsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .tests
        }
    };
    // A read and the statements it cost.
    async fn read(app: &TestApp, ids: Vec<String>) -> (pb::GetTestsByIdsResponse, usize) {
        let trace = Trace::new("purple.campaigns.v1.CampaignsService/GetTestsByIds");
        let answer = client(app)
            .get_tests_by_ids(trace.request(pb::GetTestsByIdsRequest { test_ids: ids }))
            .await
            .unwrap()
            .into_inner();
        (answer, Cost::of(&app.trace(&trace).await).statement_count())
    }
    let listed = list().await;
    assert_eq!(listed.len(), 3);
    let mut ids: Vec<String> = listed.iter().map(|t| t.test_id.clone()).collect();
    let (by_ids, statements) = read(&app, ids.clone()).await;
    assert_eq!(by_ids.tests, listed);
    // Not held yet: the check of the changes, then the tests in full.
    assert_eq!(statements, 2);
    let by_ids = by_ids.tests;
    assert!(
        by_ids
            .iter()
            .any(|t| t.test_id == started.test_id && t.red_notes.contains('é'))
    );

    // Read again: the replica now holds these tests and answers the same.
    // On PostgreSQL a transaction still open elsewhere in the database
    // (another test's, when the suite runs in parallel) holds the horizon
    // of the check back, and tests changed since are read again until it
    // ends (docs/design.md §3): a bounded wait for that.
    let mut statements = 0;
    for _ in 0..100 {
        let (again, cost) = read(&app, ids.clone()).await;
        assert_eq!(again.tests, listed);
        statements = cost;
        if statements == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(statements, 1, "held: the check of the changes only");
    ids.push("no-such-test".into());
    let (again, _) = read(&app, ids.clone()).await;
    assert_eq!(again.tests, listed);
    assert_eq!(again.missing_ids, ["no-such-test"]);

    // Another replica on the same database moves a held test on: the
    // next read here answers the new version and fields, not the copy.
    let other = app.replica().await;
    let moved = step(
        &other,
        &started,
        &team.blue,
        pb::TestAction::StartBlue,
        |_| {},
    )
    .await
    .unwrap()
    .test
    .unwrap();
    assert_eq!(moved.version, started.version + 1);
    // The moved test read again among held ones, in another order and
    // with every id twice: each answered once, in request order, and
    // the unknown id named once.
    let twice: Vec<String> = ids.iter().rev().chain(ids.iter()).cloned().collect();
    let (mixed, _) = read(&app, twice).await;
    let mut newest_last = list().await;
    newest_last.reverse();
    assert_eq!(mixed.tests, newest_last);
    assert_eq!(mixed.missing_ids, ["no-such-test"]);
    let (after, _) = read(&app, ids).await;
    assert_eq!(after.tests, list().await);
    assert!(after.tests.contains(&moved), "{:?}", after.tests);
}
