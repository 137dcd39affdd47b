//! Scoring (docs/design.md section 4) on data built through the public RPCs, with
//! every component checked against hand-computed values, and the
//! organization score's budget at two data sizes.

use purple_api::{
    campaigns::v1 as cpb,
    common::v1::{Outcome, TechniqueStatus},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
    scoring::v1::{self as pb, scoring_service_client::ScoringServiceClient},
};

use crate::{
    campaigns::{
        CATALOG, Team, client as campaigns, create_test, import_bundle, step, team, validate,
    },
    helpers::{AuthChannel, Cost, TestApp, Trace, spawn_app, spawn_app_with, ts},
};

const DAY: i64 = 86_400;

/// G0003 uses only a revoked technique: an actor with no live technique.
const MORE: &str = r#"{"type": "bundle", "id": "bundle--m", "objects": [
  {"type": "attack-pattern", "id": "attack-pattern--9", "name": "Old", "revoked": true,
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1999"}]},
  {"type": "intrusion-set", "id": "intrusion-set--3", "name": "APT-C",
   "external_references": [{"source_name": "mitre-attack", "external_id": "G0003"}]},
  {"type": "relationship", "id": "relationship--9", "relationship_type": "uses", "source_ref": "intrusion-set--3", "target_ref": "attack-pattern--9"}
]}"#;

/// T1059: D3-A, D3-B, D3-C. T1059.001: D3-C, D3-D (with its parent's: 4
/// distinct). T1003: six.
const DEFENSES: &str =
    "off_tech_id,off_tech_label,def_tech_id,def_tech_label,def_tactic_label,paths,via_artifacts
T1059,x,D3-A,A,Detect,1,x
T1059,x,D3-B,B,Detect,1,x
T1059,x,D3-C,C,Harden,1,x
T1059.001,x,D3-C,C,Harden,1,x
T1059.001,x,D3-D,D,Isolate,1,x
T1003,x,D3-E1,E1,Detect,1,x
T1003,x,D3-E2,E2,Detect,1,x
T1003,x,D3-E3,E3,Detect,1,x
T1003,x,D3-E4,E4,Detect,1,x
T1003,x,D3-E5,E5,Detect,1,x
T1003,x,D3-E6,E6,Detect,1,x
";

fn sigma(id: &str, status: &str, tag: &str) -> ImportRequest {
    let text = format!(
        "title: rule {id}\nid: {id}\nstatus: {status}\nlevel: high\ntags:\n  - attack.execution\n  - {tag}\n"
    );
    ImportRequest {
        kind: ImportKind::Sigma as i32,
        file_name: format!("{id}.yml"),
        data: text.into_bytes(),
        last: false,
    }
}

pub async fn catalogue(app: &TestApp) {
    import_bundle(app, CATALOG).await;
    import_bundle(app, MORE).await;
    let mut ingest = IngestServiceClient::new(app.channel.clone());
    let defenses = ImportRequest {
        kind: ImportKind::D3fend as i32,
        file_name: "pairs.csv".into(),
        data: DEFENSES.as_bytes().to_vec(),
        last: true,
    };
    ingest
        .import(futures::stream::iter([defenses]))
        .await
        .unwrap();
    let mut rules = vec![
        sigma("r1", "stable", "attack.t1059.001"),
        sigma("r2", "test", "attack.t1059.001"),
        sigma("r3", "deprecated", "attack.t1059.001"),
        sigma("r4", "stable", "attack.t1003"),
    ];
    rules.push(ImportRequest {
        last: true,
        ..Default::default()
    });
    ingest.import(futures::stream::iter(rules)).await.unwrap();
}

/// T1059.001: chain 1 detected (r1 fired) then retested not detected;
/// chain 2 blocked (r2 fired). T1003: one cancelled test. T1105: one
/// planned test. Returns the latest validation instant, in seconds.
pub async fn tests(app: &TestApp, team: &Team) -> i64 {
    let first = validate(
        app,
        team,
        create_test(app, team, "T1059.001").await,
        Outcome::Detected,
        &[("r1", true), ("r2", false)],
    )
    .await
    .test
    .unwrap();
    let retest = step(app, &first, &team.lead, cpb::TestAction::Retest, |_| {})
        .await
        .unwrap()
        .retest
        .unwrap();
    validate(app, team, retest, Outcome::NotDetected, &[]).await;
    let last = validate(
        app,
        team,
        create_test(app, team, "T1059.001").await,
        Outcome::Blocked,
        &[("r2", true)],
    )
    .await
    .test
    .unwrap();
    let cancelled = create_test(app, team, "T1003").await;
    step(app, &cancelled, &team.lead, cpb::TestAction::Cancel, |_| {})
        .await
        .unwrap();
    create_test(app, team, "T1105").await;
    last.validated_at.unwrap().seconds
}

fn client(app: &TestApp) -> ScoringServiceClient<AuthChannel> {
    ScoringServiceClient::new(app.channel.clone())
}

fn close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-6, "{actual} != {expected}");
}

fn at(secs: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: secs,
        nanos,
    })
}

#[tokio::test]
async fn technique_scores_follow_the_model_component_by_component() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let team = team(&app).await;
    let latest = tests(&app, &team).await;
    let validated = campaigns(&app)
        .list_tests(cpb::ListTestsRequest {
            state: cpb::TestState::Validated as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tests;
    let latest_exact = validated
        .iter()
        .filter_map(|t| t.validated_at)
        .max_by_key(|t| (t.seconds, t.nanos))
        .unwrap();
    assert_eq!(latest_exact.seconds, latest);

    // 45 days after the latest effective validation: R = 0.5^(1/2).
    let as_of = at(latest_exact.seconds + 45 * DAY, latest_exact.nanos);
    let ids = ["T1059.001", "T1003", "T1105", "T1059", "T0000"]
        .map(String::from)
        .to_vec();
    let scored = client(&app)
        .score_techniques(pb::ScoreTechniquesRequest {
            technique_ids: ids,
            as_of,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scored.missing_ids, ["T0000"]);
    let by_id = |id: &str| {
        scored
            .scores
            .iter()
            .find(|s| s.technique_id == id)
            .unwrap()
            .clone()
    };

    let ps = by_id("T1059.001");
    let c = ps.components.unwrap();
    close(c.detection, 0.5); // effective: the retest (not detected) and chain 2 (blocked)
    close(c.rule_coverage, 0.5); // r2 of {r1, r2}; r1 fired only on the overridden test; r3 is disabled
    close(c.countermeasures, 0.8); // D3-A, B, C (parent) and D (own): 4 of 5
    close(c.recency, 0.5_f64.powf(0.5));
    close(c.days_since_validation, 45.0);
    assert_eq!(
        (
            c.effective_tests,
            c.mapped_rules,
            c.triggered_rules,
            c.countermeasure_count,
            c.total_tests
        ),
        (2, 2, 1, 4, 3)
    );
    let expected = 100.0 * (0.5 * 0.5 + 0.2 * 0.5 + 0.1 * 0.8 + 0.2 * 0.5_f64.powf(0.5));
    assert_eq!(ps.score, (expected * 10.0).round() / 10.0);
    assert_eq!(ps.status, TechniqueStatus::Partial as i32);
    assert_eq!(ps.actor_count, 2);

    let dumping = by_id("T1003");
    assert_eq!(
        (dumping.score, dumping.status),
        (10.0, TechniqueStatus::Untested as i32),
        "only cancelled tests: untested, M = min(6, 5) / 5"
    );
    assert_eq!(dumping.components.unwrap().mapped_rules, 1);
    let transfer = by_id("T1105");
    assert_eq!(
        (transfer.score, transfer.status),
        (0.0, TechniqueStatus::InProgress as i32),
        "no rule mapped: C = 0"
    );
    let parent = by_id("T1059");
    assert_eq!(
        (parent.score, parent.status),
        (6.0, TechniqueStatus::Untested as i32)
    );

    // Exactly one half-life later.
    let half = at(latest_exact.seconds + 90 * DAY, latest_exact.nanos);
    let later = client(&app)
        .score_techniques(pb::ScoreTechniquesRequest {
            technique_ids: vec!["T1059.001".into()],
            as_of: half,
        })
        .await
        .unwrap()
        .into_inner();
    close(later.scores[0].components.as_ref().unwrap().recency, 0.5);

    // Before the retest was validated, chain 1's detection counted.
    let first_validated = validated
        .iter()
        .filter_map(|t| t.validated_at)
        .min_by_key(|t| (t.seconds, t.nanos))
        .unwrap();
    let then = client(&app)
        .score_techniques(pb::ScoreTechniquesRequest {
            technique_ids: vec!["T1059.001".into()],
            as_of: Some(first_validated),
        })
        .await
        .unwrap()
        .into_inner();
    let c = then.scores[0].components.unwrap();
    close(c.detection, 0.75);
    close(c.rule_coverage, 0.5);
    close(c.recency, 1.0);
}

#[tokio::test]
async fn tactic_actor_and_organization_scores_aggregate_exactly() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let team = team(&app).await;
    let latest = tests(&app, &team).await;
    let as_of = at(latest + 45 * DAY, 999_999_000);
    let sub = 100.0
        * (0.5 * 0.5
            + 0.2 * 0.5
            + 0.1 * 0.8
            + 0.2
                * 0.5_f64.powf(
                    (45.0 * DAY as f64 + 0.999_999 - fraction(&app).await) / DAY as f64 / 90.0,
                ));
    let mut scoring = client(&app);

    let org = scoring
        .get_organization_score(pb::GetOrganizationScoreRequest {
            as_of,
            critical_actor_threshold: 2,
            gap_limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mean_all = (6.0 + sub + 10.0 + 0.0) / 4.0;
    assert_eq!(org.technique_count, 4);
    assert_eq!(
        org.critical_count, 1,
        "only T1059.001 is used by two actors"
    );
    close(org.mean_all, (mean_all * 10.0).round() / 10.0);
    close(
        org.score,
        ((0.5 * mean_all + 0.5 * sub) * 10.0).round() / 10.0,
    );
    let counts = org.status_counts.unwrap();
    assert_eq!(
        (
            counts.untested,
            counts.in_progress,
            counts.gap,
            counts.partial,
            counts.covered
        ),
        (2, 1, 0, 1, 0)
    );
    let gaps: Vec<&str> = org
        .top_gaps
        .iter()
        .map(|g| g.technique_id.as_str())
        .collect();
    assert_eq!(gaps, ["T1059", "T1003"], "lowest score first");
    let tactic = |name: &str| {
        org.tactics
            .iter()
            .find(|t| t.short_name == name)
            .unwrap()
            .clone()
    };
    close(
        tactic("execution").score,
        (((6.0 + sub + 0.0) / 3.0) * 10.0).round() / 10.0,
    );
    assert_eq!(
        (
            tactic("execution").technique_count,
            tactic("credential-access").score
        ),
        (3, 10.0)
    );

    let no_critical = scoring
        .get_organization_score(pb::GetOrganizationScoreRequest {
            as_of,
            critical_actor_threshold: 10,
            gap_limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(no_critical.critical_count, 0);
    close(no_critical.score, (mean_all * 10.0).round() / 10.0);
    assert_eq!(no_critical.top_gaps.len(), 1);

    let actors = scoring
        .score_threat_actors(pb::ScoreThreatActorsRequest {
            actor_ids: vec!["G0001".into(), "G0003".into(), "G9999".into()],
            as_of,
            gap_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(actors.missing_ids, ["G9999"]);
    let a = &actors.actors[0];
    assert_eq!((a.technique_count, a.covered_ratio), (3, 0.0));
    close(a.score, (((sub + 10.0 + 0.0) / 3.0) * 10.0).round() / 10.0);
    assert_eq!(
        a.gaps
            .iter()
            .map(|g| g.technique_id.as_str())
            .collect::<Vec<_>>(),
        ["T1003"]
    );
    let empty = &actors.actors[1];
    assert_eq!(
        (
            empty.actor_id.as_str(),
            empty.score,
            empty.technique_count,
            empty.gaps.len()
        ),
        ("G0003", 0.0, 0, 0)
    );
}

/// The sub-second part of the latest validation, which as_of keeps whole.
async fn fraction(app: &TestApp) -> f64 {
    let validated = campaigns(app)
        .list_tests(cpb::ListTestsRequest {
            state: cpb::TestState::Validated as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tests;
    let latest = validated
        .iter()
        .filter_map(|t| t.validated_at)
        .max_by_key(|t| (t.seconds, t.nanos))
        .unwrap();
    f64::from(latest.nanos) / 1e9
}

#[tokio::test]
async fn the_cache_serves_without_peers_until_a_transition_invalidates_it() {
    let app = spawn_app_with(|s| s.domain.relay_interval_ms = 20).await;
    catalogue(&app).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1105").await;
    let mut scoring = client(&app);
    let first = scoring
        .get_organization_score(pb::GetOrganizationScoreRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.cached);
    // Let the outbox deliver the test's creation (an invalidation) first.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut settled_as_of, mut stable_since) = (first.as_of, tokio::time::Instant::now());
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        scoring
            .get_organization_score(pb::GetOrganizationScoreRequest::default())
            .await
            .unwrap();
        let again = scoring
            .get_organization_score(pb::GetOrganizationScoreRequest::default())
            .await
            .unwrap()
            .into_inner();
        // Cached, and after the creation's invalidation: the board was
        // computed again since the first (the invalidation arrived after
        // it), or has stayed the same for a second (it arrived before).
        // T1105 counts as in progress either way, so that alone does not
        // tell (a late invalidation made a later cost check flaky).
        if again.as_of != settled_as_of {
            settled_as_of = again.as_of;
            stable_since = tokio::time::Instant::now();
        }
        if again.cached
            && again.status_counts.as_ref().unwrap().in_progress == 1
            && (again.as_of != first.as_of
                || stable_since.elapsed() >= std::time::Duration::from_secs(1))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache never settled"
        );
    }
    let trace = Trace::new("purple.scoring.v1.ScoringService/GetOrganizationScore");
    let cached = scoring
        .get_organization_score(trace.request(pb::GetOrganizationScoreRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(cached.cached);
    let cost = Cost::of(&app.trace(&trace).await);
    assert_eq!(
        (cost.rpcs, cost.statement_count()),
        (1, 0),
        "a cached score is served from memory: no statement, no peer"
    );
    // The board's techniques are cached with it: scoring them by id costs
    // nothing either.
    let trace = Trace::new("purple.scoring.v1.ScoringService/ScoreTechniques");
    let scored = scoring
        .score_techniques(trace.request(pb::ScoreTechniquesRequest {
            technique_ids: vec!["T1105".into(), "T1059.001".into()],
            as_of: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scored.scores.len(), 2);
    let cost = Cost::of(&app.trace(&trace).await);
    assert_eq!((cost.rpcs, cost.statement_count()), (1, 0));

    validate(&app, &team, test, Outcome::Blocked, &[]).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let trace = Trace::new("purple.scoring.v1.ScoringService/GetOrganizationScore");
        let now = scoring
            .get_organization_score(trace.request(pb::GetOrganizationScoreRequest::default()))
            .await
            .unwrap()
            .into_inner();
        // Blocked, no rule or defence, just validated: 50 + 20 = 70, partial.
        if !now.cached && now.status_counts.as_ref().unwrap().partial == 1 {
            // The catalogue comes from memory: the request and one
            // AggregateTestsByTechnique (for the techniques the change
            // dropped; the others' scores are still cached).
            let cost = Cost::of(&app.trace(&trace).await);
            assert_eq!(cost.rpcs, 2, "the request and AggregateTestsByTechnique");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never invalidated the cache: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn heatmap_layer_and_snapshots() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let team = team(&app).await;
    let mut scoring = client(&app);
    let before = scoring
        .create_snapshot(pb::CreateSnapshotRequest {
            label: "before".into(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    tests(&app, &team).await;
    let after = scoring
        .create_snapshot(pb::CreateSnapshotRequest {
            label: "after".into(),
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let diff = scoring
        .compare_snapshots(pb::CompareSnapshotsRequest {
            base_snapshot_id: before.snapshot_id.clone(),
            target_snapshot_id: after.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (diff.improved, diff.regressed, diff.unchanged),
        (1, 0, 3),
        "T1059.001 improved"
    );
    assert!(diff.organization_delta > 0.0);
    let moved = diff
        .techniques
        .iter()
        .find(|t| t.technique_id == "T1059.001")
        .unwrap();
    assert_eq!(
        (moved.change, moved.base_status, moved.target_status),
        (
            pb::Change::Improved as i32,
            TechniqueStatus::Untested as i32,
            TechniqueStatus::Partial as i32
        )
    );
    // Before any test only countermeasures counted: 100 × 0.1 × 4/5.
    assert!(moved.delta > 0.0 && moved.base_score == 8.0);
    let got = scoring
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: after.snapshot_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(got.techniques.len(), 4);
    let listed = scoring
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert_eq!(
        listed.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(),
        ["after", "before"]
    );

    let heat = scoring
        .get_heatmap(pb::GetHeatmapRequest {
            threat_actor_id: "G0002".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(heat.cells.len(), 1);
    assert_eq!(
        (
            heat.cells[0].technique_id.as_str(),
            heat.cells[0].test_count,
            heat.cells[0].rule_count
        ),
        ("T1059.001", 3, 2)
    );

    let layer = scoring
        .export_navigator_layer(pb::ExportNavigatorLayerRequest {
            threat_actor_id: "G0002".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let layer: serde_json::Value = serde_json::from_str(&layer.layer_json).unwrap();
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert_eq!(layer["domain"], "enterprise-attack");
    let techniques = layer["techniques"].as_array().unwrap();
    assert_eq!(techniques.len(), 4, "one entry per technique and tactic");
    let enabled: Vec<&str> = techniques
        .iter()
        .filter(|t| t["enabled"] == true)
        .map(|t| t["techniqueID"].as_str().unwrap())
        .collect();
    assert_eq!(enabled, ["T1059.001"]);
    assert!(
        techniques
            .iter()
            .all(|t| t["color"].as_str().unwrap().starts_with('#')
                && t["metadata"].as_array().unwrap().len() == 7)
    );
}

#[tokio::test]
async fn organization_score_costs_the_same_statements_and_calls_at_two_sizes() {
    let mut costs = Vec::new();
    for large in [false, true] {
        let app = spawn_app().await;
        if large {
            crate::ingest::import_attack_18(&app).await;
        } else {
            catalogue(&app).await;
        }
        let techniques: Vec<&str> = if large {
            vec!["T1059.001", "T1003", "T1105", "T1566.001", "T1021.001"]
        } else {
            vec!["T1059.001"]
        };
        let new: Vec<cpb::NewTest> = (0..if large { 300 } else { 3 })
            .map(|i| cpb::NewTest {
                technique_id: techniques[i % techniques.len()].into(),
                ..Default::default()
            })
            .collect();
        campaigns(&app)
            .create_tests(cpb::CreateTestsRequest {
                actor_id: String::new(),
                tests: new,
            })
            .await
            .unwrap();
        let trace = Trace::new("purple.scoring.v1.ScoringService/GetOrganizationScore");
        let org = client(&app)
            .get_organization_score(trace.request(pb::GetOrganizationScoreRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(org.technique_count, if large { 691 } else { 4 });
        costs.push(Cost::of(&app.trace(&trace).await));
    }
    assert_eq!(costs[0], costs[1], "small vs large");
    // The request; ListTactics, ListTechniques, GetCatalogInputs and
    // AggregateTestsByTechnique, one chunk each.
    assert_eq!(costs[1].rpcs, 5);
    // Scoring's own cache is in memory: no statement of its own.
    assert_eq!(costs[1].statements.get("scoring"), None);
}

#[tokio::test]
async fn a_catalogue_import_leaves_the_test_sides_held_a_test_change_does_not() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let tests: Vec<cpb::NewTest> = ["T1059.001", "T1003", "T1059.001"]
        .iter()
        .map(|t| cpb::NewTest {
            technique_id: (*t).into(),
            ..Default::default()
        })
        .collect();
    campaigns(&app)
        .create_tests(cpb::CreateTestsRequest {
            actor_id: String::new(),
            tests,
        })
        .await
        .unwrap();
    // The score and the calls it cost.
    let score = |app: &TestApp| {
        let mut c = client(app);
        async move {
            let trace = Trace::new("purple.scoring.v1.ScoringService/GetOrganizationScore");
            let org = c
                .get_organization_score(trace.request(pb::GetOrganizationScoreRequest::default()))
                .await
                .unwrap()
                .into_inner();
            (org, trace)
        }
    };
    let invalidate = |ids: Vec<String>, source: &str| {
        let mut c = client(&app);
        let source = source.to_owned();
        async move {
            c.invalidate_techniques(pb::InvalidateTechniquesRequest {
                technique_ids: ids,
                source,
            })
            .await
            .unwrap();
        }
    };
    let (first, trace) = score(&app).await;
    assert_eq!(Cost::of(&app.trace(&trace).await).rpcs, 5, "cold");
    let every = crate::ingest::live_technique_ids(&app).await;
    assert_eq!(every.len(), 4);
    // Ingest imported: every score and the catalogue go, the test sides
    // stay — the score asks ingest again and campaigns nothing.
    invalidate(every.clone(), "ingest").await;
    let (after_import, trace) = score(&app).await;
    assert!(!after_import.cached);
    assert_eq!(after_import.score, first.score);
    // The request, ListTactics, ListTechniques, GetCatalogInputs.
    assert_eq!(
        Cost::of(&app.trace(&trace).await).rpcs,
        4,
        "after an import"
    );
    // Campaigns changed one technique's tests: only its test side is asked.
    invalidate(vec!["T1003".into()], "campaigns").await;
    let (_, trace) = score(&app).await;
    assert_eq!(
        Cost::of(&app.trace(&trace).await).rpcs,
        2,
        "the request and AggregateTestsByTechnique"
    );
    // Anyone else (an operator forcing a recompute): both sides go.
    invalidate(every, "operator").await;
    let (_, trace) = score(&app).await;
    assert_eq!(
        Cost::of(&app.trace(&trace).await).rpcs,
        5,
        "after an operator"
    );
}

#[tokio::test]
async fn purple_layer_writes_a_navigator_layer_file() {
    let app = spawn_app().await;
    catalogue(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layer.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_purple"))
        .args(["layer", "--actor", "G0001", "--output"])
        .arg(&file)
        .args(["--server", &format!("http://{}", app.addr)])
        .env(
            "PURPLE_TOKEN",
            app.token("viewer-1", purple_api::common::v1::Role::Viewer),
        )
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let layer: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (
            layer["versions"]["layer"].as_str(),
            layer["domain"].as_str()
        ),
        (Some("4.5"), Some("enterprise-attack"))
    );
    let enabled = layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["enabled"] == true)
        .count();
    assert_eq!(enabled, 3, "G0001's three techniques");
}

/// Now, at the microsecond precision instants are stored with.
fn micros_now() -> prost_types::Timestamp {
    let mut now = prost_types::Timestamp::from(std::time::SystemTime::now());
    now.nanos -= now.nanos % 1_000;
    now
}

/// Walks `test` to blue's first submission (detected now, with `rule`
/// fired), has the lead reject it, and returns the test back in blue's hands
/// with the instant the rejected submission claimed.
async fn rejected_submission(
    app: &TestApp,
    team: &Team,
    test: cpb::Test,
    rule: &str,
) -> (cpb::Test, prost_types::Timestamp) {
    use cpb::TestAction::*;
    let executed = test.created_at;
    let mut t = test;
    for (actor, action) in [(&team.red, StartRed), (&team.red, CompleteRed)] {
        t = step(app, &t, actor, action, |r| r.executed_at = executed)
            .await
            .unwrap()
            .test
            .unwrap();
    }
    t = step(app, &t, &team.blue, StartBlue, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let claimed = micros_now();
    t = step(app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Detected as i32;
        r.detected_at = Some(claimed);
        r.detection_results = vec![cpb::DetectionResult {
            rule_id: rule.into(),
            triggered: true,
            ..Default::default()
        }];
    })
    .await
    .unwrap()
    .test
    .unwrap();
    t = step(app, &t, &team.lead, RejectBlue, |r| {
        r.reason = "that alert was another host".into();
    })
    .await
    .unwrap()
    .test
    .unwrap();
    assert_eq!(t.state, cpb::TestState::BlueInProgress as i32);
    (t, claimed)
}

/// Blue's second submission, then the lead's validation.
async fn resubmit(
    app: &TestApp,
    team: &Team,
    t: &cpb::Test,
    outcome: Outcome,
    rule: Option<&str>,
) -> (cpb::Test, Option<prost_types::Timestamp>) {
    use cpb::TestAction::*;
    let detected = outcome.is_detection().then(micros_now);
    let t = step(app, t, &team.blue, CompleteBlue, |r| {
        r.outcome = outcome as i32;
        r.detected_at = detected;
        r.detection_results = rule
            .map(|rule| cpb::DetectionResult {
                rule_id: rule.into(),
                triggered: true,
                ..Default::default()
            })
            .into_iter()
            .collect();
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let t = step(app, &t, &team.lead, Validate, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    (t, detected)
}

#[tokio::test]
async fn a_rejected_blue_submission_counts_for_neither_rules_nor_mttd() {
    use purple_api::{
        common::v1::TimeWindow,
        metrics::v1::{GetMttdRequest, MetricFilter, metrics_service_client::MetricsServiceClient},
    };
    let app = spawn_app().await;
    catalogue(&app).await;
    let team = team(&app).await;

    // T1059.001: r1 claimed, rejected; resubmitted detected by r2, later.
    let powershell = create_test(&app, &team, "T1059.001").await;
    let executed = powershell.created_at.unwrap();
    let (t, first_claim) = rejected_submission(&app, &team, powershell, "r1").await;
    let (accepted, second_claim) = resubmit(&app, &team, &t, Outcome::Detected, Some("r2")).await;
    let second_claim = second_claim.unwrap();
    assert!((second_claim.seconds, second_claim.nanos) > (first_claim.seconds, first_claim.nanos));
    assert_eq!(accepted.detected_at, Some(second_claim));
    // T1003: r4 claimed, rejected; resubmitted as only logged.
    let dumping = create_test(&app, &team, "T1003").await;
    let (t, _) = rejected_submission(&app, &team, dumping, "r4").await;
    let (logged, none) = resubmit(&app, &team, &t, Outcome::Logged, None).await;
    assert_eq!((none, logged.detected_at), (None, None));

    let results = campaigns(&app)
        .get_detection_results(cpb::GetDetectionResultsRequest {
            test_ids: vec![accepted.test_id.clone(), logged.test_id.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let kept: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r.test_id.as_str(), r.rule_id.as_str()))
        .collect();
    assert_eq!(kept, [(accepted.test_id.as_str(), "r2")]);

    let scored = client(&app)
        .score_techniques(pb::ScoreTechniquesRequest {
            technique_ids: vec!["T1059.001".into(), "T1003".into()],
            as_of: None,
        })
        .await
        .unwrap()
        .into_inner()
        .scores;
    let c = |id: &str| {
        scored
            .iter()
            .find(|s| s.technique_id == id)
            .unwrap()
            .components
            .unwrap()
    };
    assert_eq!(
        c("T1059.001").triggered_rules,
        1,
        "r2 only, not the rejected r1"
    );
    close(c("T1059.001").rule_coverage, 0.5);
    assert_eq!(
        c("T1003").triggered_rules,
        0,
        "the rejected r4 does not count"
    );
    close(c("T1003").rule_coverage, 0.0);

    // MTTD: the accepted detection minus the execution, once the relay has
    // delivered every event; the logged test has no detection to time.
    let expected = (second_claim.seconds - executed.seconds) as f64
        + f64::from(second_claim.nanos - executed.nanos) / 1e9;
    let window = TimeWindow {
        from: Some(ts(executed.seconds - 3_600)),
        to: Some(ts(executed.seconds + 3_600)),
    };
    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mttd = loop {
        let mttd = metrics
            .get_mttd(GetMttdRequest {
                filter: Some(MetricFilter {
                    window: Some(window),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .mttd
            .unwrap();
        // Events arrive in batches: wait for the accepted detection's.
        let settled = mttd
            .mean_seconds
            .is_some_and(|mean| (mean - expected).abs() < 1e-3);
        if settled || tokio::time::Instant::now() > deadline {
            break mttd;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(mttd.count, 1, "the logged test has no detection");
    let mean = mttd.mean_seconds.unwrap();
    assert!((mean - expected).abs() < 1e-3, "{mean} != {expected}");
}

#[tokio::test]
async fn an_import_refreshes_the_catalogue_scoring_holds_in_memory() {
    let app = spawn_app_with(|s| s.domain.relay_interval_ms = 20).await;
    catalogue(&app).await;
    let mapped = async || {
        client(&app)
            .score_techniques(pb::ScoreTechniquesRequest {
                technique_ids: vec!["T1059.001".into()],
                as_of: None,
            })
            .await
            .unwrap()
            .into_inner()
            .scores[0]
            .components
            .unwrap()
            .mapped_rules
    };
    // r1 and r2 (r3 is deprecated); the second answer comes from memory.
    assert_eq!(mapped().await, 2);
    assert_eq!(mapped().await, 2);
    IngestServiceClient::new(app.channel.clone())
        .import(futures::stream::iter([ImportRequest {
            last: true,
            ..sigma("r5", "stable", "attack.t1059.001")
        }]))
        .await
        .unwrap();
    // Ingest tells scoring the catalogue changed: the next score maps r5.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while mapped().await != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "scoring kept the catalogue it held before the import"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
