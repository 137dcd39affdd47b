//! Scoring on the enterprise-size data set: ATT&CK v18.1 (691 live
//! techniques), 4,000 detection rules and 50,000 tests. Measures the
//! organization score cold (after invalidating every technique), cached,
//! and for an explicit past as_of (read-time ranking), ScoreTechniques of
//! 50 ids, a snapshot and a layer export.
//! Run: `cargo bench --bench scoring` (SQLite) or
//! `PURPLE_BENCH_DATABASE_URL=postgres://... cargo bench --bench scoring`.
//!
//! Rules are imported through the real importer and the 50,000 tests
//! through the history import (docs/formats/history.md), whose own figures
//! (records per second, statements per upload, peak memory) come first.

mod support;

use std::time::Instant;

use purple_api::scoring::v1::{
    CreateSnapshotRequest, ExportNavigatorLayerRequest, GetOrganizationScoreRequest,
    InvalidateTechniquesRequest, ScoreTechniquesRequest,
    scoring_service_client::ScoringServiceClient,
};
use purple_api::{
    campaigns::v1::{
        AggregateTestsByTechniqueRequest, campaigns_service_client::CampaignsServiceClient,
    },
    common::v1::TimeWindow,
    metrics::v1::{
        GetRejectionRatesRequest, MetricFilter, metrics_service_client::MetricsServiceClient,
    },
};
use purple_runtime::time::{now_micros, timestamp};
use support::{
    BenchApp,
    history::{Shape, generate},
    ms, peak_rss_mib, time,
};

const TESTS: usize = 50_000;
const DAY: i64 = 86_400_000_000;

#[tokio::main]
async fn main() {
    // Spans in memory: how the import's statements are counted.
    let spans = purple_runtime::telemetry::init_for_tests();
    let app = BenchApp::start().await;
    let mut scoring =
        ScoringServiceClient::new(app.channel.clone()).max_decoding_message_size(64 << 20);

    let (techniques, rule_ids) = support::catalogue::enterprise(&app.channel).await;

    // The tests come in through the history import: 50,000 tests, five
    // detection results per validated test, 5,000 remediations.
    let now = now_micros();
    let history = generate(
        &Shape {
            tests: TESTS,
            results_per_validated: 5,
            remediations: 5_000,
        },
        &techniques,
        &rule_ids,
        now,
    );
    let rss_before = peak_rss_mib();
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let (report, took) = support::history::import(&app.channel, &history.ndjson, &trace_id).await;
    let statements: Vec<String> = spans
        .trace(&trace_id)
        .iter()
        .filter(|s| s.attr("db.statement").is_some())
        .map(|s| s.attr("service").unwrap_or("?").to_owned())
        .collect();
    let records = report.records;
    println!("# history import — {}", app.backend);
    println!(
        "{} records ({} tests, {} validated, {} detection results, {} remediations; {:.1} MB NDJSON)",
        records,
        history.tests,
        history.validated,
        history.results,
        history.remediations,
        history.ndjson.len() as f64 / 1e6
    );
    println!(
        "import: {:.1} s, {:.0} records/s, {} events written, {} SQL statements ({} campaigns, {} ingest), peak RSS {:.0} MiB (before: {:.0} MiB)",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64(),
        report.events,
        statements.len(),
        statements.iter().filter(|s| *s == "campaigns").count(),
        statements.iter().filter(|s| *s == "ingest").count(),
        peak_rss_mib(),
        rss_before
    );
    let again_trace = uuid::Uuid::new_v4().simple().to_string();
    let (again, took_again) =
        support::history::import(&app.channel, &history.ndjson, &again_trace).await;
    assert!(
        again
            .counts
            .iter()
            .all(|c| c.created == 0 && c.updated == 0)
            && again.events == 0,
        "a re-import changes nothing: {:?}",
        again.counts
    );
    println!(
        "re-import: {:.1} s, nothing created or updated, no event, {} SQL statements\n",
        took_again.as_secs_f64(),
        spans
            .trace(&again_trace)
            .iter()
            .filter(|s| s.attr("db.statement").is_some())
            .count()
    );
    // The audit events reach metrics through the outbox: measured after it
    // drains, so the relay does not share the machine with the figures.
    let drained = Instant::now();
    let mut metrics = MetricsServiceClient::new(app.channel.clone());
    loop {
        let summary = metrics
            .get_rejection_rates(GetRejectionRatesRequest {
                filter: Some(MetricFilter {
                    window: Some(TimeWindow {
                        from: Some(timestamp(now - 400 * DAY)),
                        to: Some(timestamp(now + DAY)),
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        if summary.validated as usize == history.validated {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!(
        "outbox drained into metrics {:.1} s after the import",
        drained.elapsed().as_secs_f64()
    );
    // And into scoring (its invalidations drop the cache): the relay's
    // backlog gauge, measured every 5 s.
    loop {
        let backlog = purple_runtime::instruments::outbox();
        if !backlog.is_empty() && backlog.iter().all(|(_, (n, _))| *n == 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    println!(
        "outbox drained into scoring {:.1} s after the import\n",
        drained.elapsed().as_secs_f64()
    );
    // PostgreSQL: statistics and visibility after a bulk load, as
    // autovacuum would leave them (the other PostgreSQL benchmarks do too).
    support::analyze(
        app.settings.storage.database_url.as_deref(),
        &app.settings.storage.schema_prefix,
    )
    .await;

    println!("# scoring benchmark — {}", app.backend);
    println!(
        "{} live techniques, {} rules, {TESTS} tests ({} validated, {} detection results)\n",
        techniques.len(),
        rule_ids.len(),
        history.validated,
        history.results
    );
    println!("| request | median ms | min ms |\n|---|---|---|");
    let internal = ScoringServiceClient::new(app.service.clone());
    let invalidate_all = || {
        let (mut s, ids) = (internal.clone(), techniques.clone());
        async move {
            s.invalidate_techniques(InvalidateTechniquesRequest {
                technique_ids: ids,
                source: "bench".into(),
            })
            .await
            .unwrap();
        }
    };
    let (mid, min) = time(5, || {
        let (mut s, inv) = (scoring.clone(), invalidate_all());
        async move {
            inv.await;
            let start = Instant::now();
            let org = s
                .get_organization_score(GetOrganizationScoreRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert!(!org.cached);
            let _ = start;
        }
    })
    .await;
    println!(
        "| GetOrganizationScore, cold (after InvalidateTechniques of all; both timed) | {} | {} |",
        ms(mid),
        ms(min)
    );
    let (mid, min) = time(20, || {
        let mut s = scoring.clone();
        async move {
            assert!(
                s.get_organization_score(GetOrganizationScoreRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .cached
            );
        }
    })
    .await;
    println!(
        "| GetOrganizationScore, cached | {} | {} |",
        ms(mid),
        ms(min)
    );
    let past = Some(timestamp(now - 30 * DAY));
    let (mid, min) = time(5, || {
        let mut s = scoring.clone();
        async move {
            s.get_organization_score(GetOrganizationScoreRequest {
                as_of: past,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| GetOrganizationScore, as_of 30 days ago (chain history) | {} | {} |",
        ms(mid),
        ms(min)
    );
    // Its test side alone, asked as scoring asks it (one call here, three
    // chunks there): campaigns' part of the request above.
    let campaigns =
        CampaignsServiceClient::new(app.service.clone()).max_decoding_message_size(64 << 20);
    let (mid, min) = time(5, || {
        let (mut c, ids) = (campaigns.clone(), techniques.clone());
        async move {
            c.aggregate_tests_by_technique(AggregateTestsByTechniqueRequest {
                technique_ids: ids,
                as_of: past,
                rule_table: true,
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| AggregateTestsByTechnique, {} ids, as_of 30 days ago | {} | {} |",
        techniques.len(),
        ms(mid),
        ms(min)
    );
    let fifty: Vec<String> = techniques.iter().step_by(13).take(50).cloned().collect();
    let (mid, min) = time(10, || {
        let (mut s, ids) = (scoring.clone(), fifty.clone());
        async move {
            s.score_techniques(ScoreTechniquesRequest {
                technique_ids: ids,
                as_of: past,
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| ScoreTechniques, 50 ids, as_of (uncached) | {} | {} |",
        ms(mid),
        ms(min)
    );
    let (mid, min) = time(10, || {
        let (mut s, ids) = (scoring.clone(), fifty.clone());
        async move {
            s.score_techniques(ScoreTechniquesRequest {
                technique_ids: ids,
                as_of: None,
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| ScoreTechniques, 50 ids, now (cache warm) | {} | {} |",
        ms(mid),
        ms(min)
    );
    let (mid, min) = time(5, || {
        let mut s = scoring.clone();
        async move {
            s.create_snapshot(CreateSnapshotRequest {
                label: "bench".into(),
                as_of: None,
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| CreateSnapshot (computed afresh, 691 rows) | {} | {} |",
        ms(mid),
        ms(min)
    );
    let (mid, min) = time(10, || {
        let mut s = scoring.clone();
        async move {
            s.export_navigator_layer(ExportNavigatorLayerRequest::default())
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "| ExportNavigatorLayer (cache warm) | {} | {} |",
        ms(mid),
        ms(min)
    );
    let org = scoring
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        org.status_counts.as_ref().unwrap().untested < 100,
        "the seeded tests count: {org:?}"
    );
    println!(
        "\norganization score {} ({} techniques, {:?})",
        org.score,
        org.technique_count,
        org.status_counts.unwrap()
    );
    println!(
        "peak RSS (server and client in one process): {:.0} MiB",
        peak_rss_mib()
    );
    app.finish().await;
}
