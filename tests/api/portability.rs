//! The portable-SQL contract (docs/adr/0001), checked: the same workload
//! runs on SQLite and on PostgreSQL in one process, every statement's
//! columns are recorded per backend, and a statement that returns an
//! integer on one and text (or a boolean, or a float) on the other fails
//! the test. Runs where PostgreSQL is configured (`.ci/run`'s second pass).

use purple_api::{
    campaigns::v1::{self as cpb, campaigns_service_client::CampaignsServiceClient},
    common::v1::TimeWindow,
    ingest::v1::{
        ListImportRunsRequest, ListTechniquesRequest, ingest_service_client::IngestServiceClient,
    },
    metrics::v1::{
        GetOperationalSummaryRequest, ListAuditEventsRequest, MetricFilter, RecordEventsRequest,
        metrics_service_client::MetricsServiceClient,
    },
    scoring::v1::{
        CompareSnapshotsRequest, CreateSnapshotRequest, GetHeatmapRequest,
        GetOrganizationScoreRequest, ListSnapshotsRequest, ScoreTechniquesRequest,
        ScoreThreatActorsRequest, scoring_service_client::ScoringServiceClient,
    },
};
use purple_runtime::db::type_audit;

use crate::helpers::{TestApp, spawn_app_with, ts};

async fn workload(app: &TestApp) {
    crate::scoring::catalogue(app).await;
    let team = crate::campaigns::team(app).await;
    let validated_at = crate::scoring::tests(app, &team).await;
    let (campaign, chain) = crate::campaigns::workload(app, &team, 8).await;

    let mut campaigns = CampaignsServiceClient::new(app.channel.clone());
    campaigns
        .list_tests(cpb::ListTestsRequest::default())
        .await
        .unwrap();
    campaigns
        .get_retest_chain(cpb::GetRetestChainRequest { test_id: chain })
        .await
        .unwrap();
    campaigns
        .get_campaign_report(cpb::GetCampaignReportRequest {
            campaign_id: campaign.campaign_id.clone(),
        })
        .await
        .unwrap();
    campaigns
        .get_campaign_progress(cpb::GetCampaignProgressRequest {
            campaign_ids: vec![campaign.campaign_id.clone()],
        })
        .await
        .unwrap();
    campaigns
        .list_remediations(cpb::ListRemediationsRequest::default())
        .await
        .unwrap();
    campaigns
        .list_users(cpb::ListUsersRequest::default())
        .await
        .unwrap();
    campaigns
        .list_stale_tests(cpb::ListStaleTestsRequest {
            older_than: Some(ts(2_000_000_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    campaigns
        .list_worklogs(cpb::ListWorklogsRequest::default())
        .await
        .unwrap();
    campaigns
        .aggregate_tests_by_technique(cpb::AggregateTestsByTechniqueRequest {
            technique_ids: vec!["T1059.001".into(), "T1003".into()],
            as_of: Some(ts(validated_at)),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut ingest = IngestServiceClient::new(app.channel.clone());
    ingest
        .list_techniques(ListTechniquesRequest::default())
        .await
        .unwrap();
    ingest
        .list_import_runs(ListImportRunsRequest::default())
        .await
        .unwrap();

    let mut scoring = ScoringServiceClient::new(app.channel.clone());
    let ids = vec!["T1059.001".to_owned(), "T1003".into(), "T1105".into()];
    scoring
        .score_techniques(ScoreTechniquesRequest {
            technique_ids: ids,
            as_of: None,
        })
        .await
        .unwrap();
    scoring
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap();
    scoring
        .score_threat_actors(ScoreThreatActorsRequest {
            actor_ids: vec!["G0001".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    scoring
        .get_heatmap(GetHeatmapRequest::default())
        .await
        .unwrap();
    let mut snapshots = Vec::new();
    for label in ["a", "b"] {
        snapshots.push(
            scoring
                .create_snapshot(CreateSnapshotRequest {
                    label: label.into(),
                    as_of: None,
                })
                .await
                .unwrap()
                .into_inner()
                .snapshot
                .unwrap()
                .snapshot_id,
        );
    }
    scoring
        .compare_snapshots(CompareSnapshotsRequest {
            base_snapshot_id: snapshots[0].clone(),
            target_snapshot_id: snapshots[1].clone(),
        })
        .await
        .unwrap();
    scoring
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap();

    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    metrics
        .record_events(RecordEventsRequest {
            events: crate::metrics::dataset(),
        })
        .await
        .unwrap();
    metrics
        .get_operational_summary(GetOperationalSummaryRequest {
            filter: Some(MetricFilter {
                window: Some(TimeWindow {
                    from: Some(ts(1_740_000_000)),
                    to: Some(ts(1_800_000_000)),
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    metrics
        .list_audit_events(ListAuditEventsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn every_statement_returns_the_same_column_types_on_both_backends() {
    let Ok(url) = std::env::var("PURPLE_TEST_DATABASE_URL") else {
        eprintln!("PostgreSQL not configured: the comparison runs in .ci/run's second pass");
        return;
    };
    type_audit::enable();
    let sqlite = spawn_app_with(|s| s.storage.database_url = None).await;
    let postgres = spawn_app_with(|s| s.storage.database_url = Some(url)).await;
    workload(&sqlite).await;
    workload(&postgres).await;
    eprintln!("compared {} statements", type_audit::compared());
    let mismatches = type_audit::mismatches();
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(
        type_audit::compared() >= 30,
        "only {} statements were seen on both backends",
        type_audit::compared()
    );
}
