//! Scoring on the enterprise-size data set: ATT&CK v18.1 (691 live
//! techniques), 4,000 detection rules and 50,000 tests. Measures the
//! organization score cold (after invalidating every technique), cached,
//! and for an explicit past as_of (read-time ranking), ScoreTechniques of
//! 50 ids, a snapshot and a layer export.
//! Run: `cargo bench --bench scoring` (SQLite) or
//! `PURPLE_BENCH_DATABASE_URL=postgres://... cargo bench --bench scoring`.
//!
//! Rules are imported through the real importer; the 50,000 tests are
//! seeded with set-based SQL into the campaigns tables (walking each
//! through five RPC transitions would make the set-up the benchmark).

mod support;

use std::{path::Path, time::Instant};

use futures::StreamExt;
use purple_api::{
    ingest::v1::{
        ImportKind, ImportRequest, ListTechniquesRequest,
        ingest_service_client::IngestServiceClient,
    },
    scoring::v1::{
        CreateSnapshotRequest, ExportNavigatorLayerRequest, GetOrganizationScoreRequest,
        InvalidateTechniquesRequest, ScoreTechniquesRequest,
        scoring_service_client::ScoringServiceClient,
    },
};
use purple_ingest::domain::Kind;
use purple_runtime::{
    Database, ServiceName,
    time::{Micros, now_micros, timestamp},
};
use serde::Serialize;
use support::{BenchApp, ms, peak_rss_mib, time};

const TESTS: usize = 50_000;
const RULES: usize = 4_000;
const DAY: i64 = 86_400_000_000;

#[derive(Serialize)]
struct TestSeed {
    test_id: String,
    technique_id: String,
    state: &'static str,
    outcome: Option<&'static str>,
    retest_of: Option<String>,
    chain_id: String,
    validated_at: Option<Micros>,
    created_at: Micros,
}

#[derive(Serialize)]
struct ResultSeed {
    test_id: String,
    rule_id: String,
    triggered: i64,
}

#[derive(Serialize)]
struct EffectiveSeed {
    chain_id: String,
    technique_id: String,
    test_id: String,
    validated_at: Micros,
}

const SEED_TESTS: &str = "
    INSERT INTO tests (test_id, technique_id, template_id, campaign_id, title, state, outcome, retest_of, chain_id,
                       version, red_assignee_id, blue_assignee_id, executed_at, detected_at, validated_at,
                       red_notes, blue_notes, rejection_reason, created_at, updated_at)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.technique_id'), '', NULL, 'bench',
           json_extract(value, '$.state'), json_extract(value, '$.outcome'), json_extract(value, '$.retest_of'),
           json_extract(value, '$.chain_id'), 1, '', '', NULL, NULL, CAST(json_extract(value, '$.validated_at') AS BIGINT),
           '', '', '', CAST(json_extract(value, '$.created_at') AS BIGINT), CAST(json_extract(value, '$.created_at') AS BIGINT)
    FROM json_each($1)";
const SEED_RESULTS: &str = "
    INSERT INTO detection_results (test_id, rule_id, triggered, triggered_at, notes, recorded_at)
    SELECT json_extract(value, '$.test_id'), json_extract(value, '$.rule_id'), CAST(json_extract(value, '$.triggered') AS BIGINT), NULL, '', 0
    FROM json_each($1)";
const SEED_EFFECTIVE: &str = "
    INSERT INTO chain_effective (chain_id, technique_id, test_id, validated_at)
    SELECT json_extract(value, '$.chain_id'), json_extract(value, '$.technique_id'), json_extract(value, '$.test_id'),
           CAST(json_extract(value, '$.validated_at') AS BIGINT)
    FROM json_each($1)";

/// A deterministic pseudo-random stream (no dependency for a benchmark).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn rule_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

#[tokio::main]
async fn main() {
    let app = BenchApp::start().await;
    let mut ingest =
        IngestServiceClient::new(app.channel.clone()).max_encoding_message_size(64 << 20);
    let mut scoring =
        ScoringServiceClient::new(app.channel.clone()).max_decoding_message_size(64 << 20);

    let attack = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/attack/v18.1/stix21/enterprise-attack-18.1.json.gz");
    let files = purple::cli::import::collect_files(Kind::Attack, &attack).unwrap();
    let chunks: Vec<ImportRequest> = purple::cli::import::chunks(
        Kind::Attack,
        &attack,
        files,
        indicatif::ProgressBar::hidden(),
    )
    .collect()
    .await;
    ingest.import(futures::stream::iter(chunks)).await.unwrap();
    let techniques: Vec<String> = ingest
        .list_techniques(ListTechniquesRequest {
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .techniques
        .into_iter()
        .map(|t| t.technique_id)
        .collect();

    let mut rng = Lcg(7);
    let mut rule_techniques: Vec<String> = Vec::with_capacity(RULES);
    let mut rules: Vec<ImportRequest> = (0..RULES)
        .map(|i| {
            let technique = techniques[rng.next(techniques.len() as u64) as usize].clone();
            let text = format!("title: bench rule {i}\nid: {}\nstatus: stable\nlevel: medium\ntags:\n  - attack.{}\n", rule_id(i), technique.to_ascii_lowercase());
            rule_techniques.push(technique);
            ImportRequest { kind: ImportKind::Sigma as i32, file_name: format!("rule-{i}.yml"), data: text.into_bytes(), last: false }
        })
        .collect();
    rules.push(ImportRequest {
        last: true,
        ..Default::default()
    });
    ingest.import(futures::stream::iter(rules)).await.unwrap();

    let now = now_micros();
    let mut tests = Vec::with_capacity(TESTS);
    let mut results = Vec::new();
    let mut effective: std::collections::BTreeMap<String, EffectiveSeed> =
        std::collections::BTreeMap::new();
    let outcomes = ["blocked", "detected", "logged", "not_detected"];
    for i in 0..TESTS {
        // Every fifth test retests the one before it.
        let (technique, chain) = if i % 5 == 4 {
            let prev: &TestSeed = &tests[i - 1];
            (prev.technique_id.clone(), prev.chain_id.clone())
        } else {
            (
                techniques[rng.next(techniques.len() as u64) as usize].clone(),
                format!("bench-{i}"),
            )
        };
        let validated = rng.next(10) < 6;
        let validated_at = validated.then(|| now - (rng.next(365) as i64) * DAY - i as i64);
        let test_id = format!("bench-{i}");
        if let Some(at) = validated_at {
            let newer = effective.get(&chain).is_none_or(|e| e.validated_at < at);
            if newer {
                effective.insert(
                    chain.clone(),
                    EffectiveSeed {
                        chain_id: chain.clone(),
                        technique_id: technique.clone(),
                        test_id: test_id.clone(),
                        validated_at: at,
                    },
                );
            }
            for _ in 0..2 {
                let r = rng.next(RULES as u64) as usize;
                results.push(ResultSeed {
                    test_id: test_id.clone(),
                    rule_id: rule_id(r),
                    triggered: (rng.next(2)) as i64,
                });
            }
        }
        tests.push(TestSeed {
            retest_of: (i % 5 == 4).then(|| chain.clone()),
            test_id,
            technique_id: technique,
            state: if validated {
                "validated"
            } else if rng.next(10) == 0 {
                "cancelled"
            } else {
                "planned"
            },
            outcome: validated.then(|| outcomes[rng.next(4) as usize]),
            chain_id: chain,
            validated_at,
            created_at: now - 400 * DAY + i as i64,
        });
    }
    results.sort_by(|a, b| (&a.test_id, &a.rule_id).cmp(&(&b.test_id, &b.rule_id)));
    results.dedup_by(|a, b| a.test_id == b.test_id && a.rule_id == b.rule_id);
    let db = Database::connect(ServiceName::Campaigns, &app.settings.storage)
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    for chunk in tests.chunks(10_000) {
        db.stmt(SEED_TESTS)
            .bind_rows(chunk)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for chunk in results.chunks(10_000) {
        db.stmt(SEED_RESULTS)
            .bind_rows(chunk)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let effective: Vec<EffectiveSeed> = effective.into_values().collect();
    db.stmt(SEED_EFFECTIVE)
        .bind_rows(&effective)
        .execute(&mut *tx)
        .await
        .unwrap();
    // The per-technique tallies campaigns keeps on write.
    purple_campaigns::store::CampaignStore::new(db.clone())
        .refresh_tallies(&mut tx, &techniques)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    println!("# scoring benchmark — {}", app.backend);
    println!(
        "{} live techniques, {RULES} rules, {TESTS} tests ({} validated chains, {} detection results)\n",
        techniques.len(),
        effective.len(),
        results.len()
    );
    println!("| request | median ms | min ms |\n|---|---|---|");
    let invalidate_all = || {
        let (mut s, ids) = (scoring.clone(), techniques.clone());
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
        "| GetOrganizationScore, as_of 30 days ago (read-time ranking) | {} | {} |",
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
}
