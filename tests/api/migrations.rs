//! Migrations as a gated step (docs/adr/0007): `serve` without
//! auto-migrate refuses a database that lacks a migration it needs, and a
//! database a newer release migrated (a rollback) is still migrated and
//! served by the older binary, on both backends.

use purple_api::ingest::v1::{ListTacticsRequest, ingest_service_client::IngestServiceClient};
use purple_runtime::{ServiceName, Settings};

use crate::helpers::{spawn_app_with, test_settings};

#[tokio::test]
async fn serve_without_auto_migrate_refuses_a_database_that_lacks_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.storage.auto_migrate = false;
    let refused = purple::Application::build(settings.clone(), &[ServiceName::Metrics])
        .await
        .err()
        .expect("an unmigrated database is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("lacks migrations [1, 2, 3, 4, 5, 6, 7]")
            && message.contains("purple migrate --service metrics"),
        "{message}"
    );

    // The gated step, then the same serve starts.
    purple::migrate(&settings, &[ServiceName::Metrics])
        .await
        .unwrap();
    purple::Application::build(settings, &[ServiceName::Metrics])
        .await
        .expect("a migrated database is served");
}

/// What a newer release's migration leaves behind: an added table (expand
/// only) and its row in the migrations table, which this binary does not
/// know.
async fn migrate_as_a_newer_release(settings: &Settings) {
    let databases = purple::migrate(settings, &ServiceName::ALL).await.unwrap();
    for db in &databases {
        sqlx::query("CREATE TABLE from_a_newer_release (id BIGINT PRIMARY KEY)")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer release', TRUE, $1, 0)",
        )
        .bind(vec![7u8; 48])
        .execute(db.pool())
        .await
        .unwrap();
        db.close().await;
    }
}

#[tokio::test]
async fn a_rollback_migrates_and_serves_a_database_a_newer_release_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    migrate_as_a_newer_release(&settings).await;

    // The older release's migration step: it succeeds and says why.
    let mut migrate = std::process::Command::new(env!("CARGO_BIN_EXE_purple"));
    migrate
        .arg("migrate")
        .env("PURPLE_DATA_DIR", dir.path())
        .env("PURPLE_SCHEMA_PREFIX", &settings.storage.schema_prefix)
        .env("PURPLE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env_remove("PURPLE_DATABASE_URL");
    if let Some(url) = &settings.storage.database_url {
        migrate.env("PURPLE_DATABASE_URL", url);
    }
    let output = migrate.output().unwrap();
    let log = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert_eq!(
        log.matches("newer than this binary").count(),
        4,
        "every service logs the rollback: {log}"
    );

    // Its pods: serve without migrating, and answer.
    let storage = settings.storage.clone();
    let app = spawn_app_with(|s| {
        s.storage = storage;
        s.storage.auto_migrate = false;
    })
    .await;
    let tactics = IngestServiceClient::new(app.channel.clone())
        .list_tactics(ListTacticsRequest {})
        .await
        .expect("the older binary serves the newer database");
    assert!(tactics.get_ref().tactics.is_empty());
    app.shutdown().await.unwrap();
}

/// Campaigns migration 0012 fills the chains' history (what a past
/// `as_of` reads) from the tests validated before it: each validated test
/// effective until the next one's validation in rank (a tie on the
/// instant goes to the test created last), with its triggered rules; 0014
/// the effective tests' rule counts.
#[tokio::test]
async fn the_chain_history_migration_fills_from_tests_validated_before_it() {
    use purple_runtime::{Database, Migrations};
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let db = Database::connect(ServiceName::Campaigns, &settings.storage)
        .await
        .unwrap();
    let all = purple_campaigns::MIGRATIONS.0;
    let before = all.iter().position(|m| m.version == 12).unwrap();
    db.migrate(&Migrations(&all[..before])).await.unwrap();
    // Chain c: a and b validated at the same instant (b created later),
    // then c; d only completed. Chain e: one validated test.
    for (id, chain, state, validated, created) in [
        ("a", "c", "validated", Some(100), 1),
        ("b", "c", "validated", Some(100), 2),
        ("c", "c", "validated", Some(300), 3),
        ("d", "c", "blue_complete", None, 4),
        ("e", "e", "validated", Some(200), 1),
    ] {
        sqlx::query(
            "INSERT INTO tests (test_id, technique_id, template_id, title, state, outcome, chain_id, version,
                                red_assignee_id, blue_assignee_id, validated_at, red_notes, blue_notes,
                                rejection_reason, created_at, updated_at)
             VALUES ($1, 'T1003', '', '', $2, 'detected', $3, 1, '', '', $4, '', '', '', $5, $5)",
        )
        .bind(id)
        .bind(state)
        .bind(chain)
        .bind(validated.map(i64::from))
        .bind(i64::from(created))
        .execute(db.pool())
        .await
        .unwrap();
    }
    for (test, rule, triggered) in [("a", "r1", 1), ("c", "r2", 1), ("c", "r3", 0)] {
        sqlx::query(
            "INSERT INTO detection_results (test_id, source, rule_id, triggered, notes, recorded_at)
             VALUES ($1, 'sigma', $2, $3, '', 0)",
        )
        .bind(test)
        .bind(rule)
        .bind(triggered)
        .execute(db.pool())
        .await
        .unwrap();
    }
    // The effective test of each chain, as the workflow kept it.
    for (chain, test) in [("c", "c"), ("e", "e")] {
        sqlx::query(
            "INSERT INTO chain_effective (chain_id, technique_id, test_id, validated_at)
             VALUES ($1, 'T1003', $2, 0)",
        )
        .bind(chain)
        .bind(test)
        .execute(db.pool())
        .await
        .unwrap();
    }
    db.migrate(&purple_campaigns::MIGRATIONS).await.unwrap();
    // Migration 0014 counts the effective tests' triggered rules: c's r2
    // (a's r1 is no longer effective, c's r3 did not fire).
    let counts: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT technique_id, rule_key, n FROM technique_rule_counts")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(counts, [("T1003".into(), "sigma:r2".into(), 1)]);
    let rows: Vec<(String, i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT test_id, valid_from, valid_to, rule_keys FROM chain_history ORDER BY test_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("a".into(), 100, Some(100), "sigma:r1".into()),
            ("b".into(), 100, Some(300), String::new()),
            ("c".into(), 300, None, "sigma:r2".into()),
            ("e".into(), 200, None, String::new()),
        ]
    );
    db.close().await;
}

/// Ingest migration 0005 fills the technique inputs from the catalogue
/// with the select an import rebuilds them by: a catalogue imported before
/// it reads the same inputs after it (own and parent countermeasures, live
/// actors, enabled rules).
#[tokio::test]
async fn the_technique_inputs_migration_fills_what_an_import_keeps() {
    use purple_api::ingest::v1::GetCatalogInputsRequest;
    use purple_ingest::domain::Kind;

    use crate::ingest::{ATTACK_18, import, live_technique_ids};
    let app = crate::helpers::spawn_app().await;
    import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    import(
        &app,
        Kind::D3fend,
        "d3fend/derived/d3fend-0.17.0-attack-to-d3fend-pairs.csv",
    )
    .await
    .unwrap();
    import(&app, Kind::Sigma, "sigma").await.unwrap();
    let ids = live_technique_ids(&app).await;
    let mut ingest = IngestServiceClient::new(app.channel.clone());
    let mut inputs = async || {
        ingest
            .get_catalog_inputs(GetCatalogInputsRequest {
                technique_ids: ids.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    let kept = inputs().await;
    assert_eq!(kept.inputs.len(), ids.len());
    let counted = |f: fn(&purple_api::ingest::v1::CatalogInput) -> usize| {
        kept.inputs.iter().map(f).sum::<usize>()
    };
    assert!(counted(|i| i.countermeasure_count as usize) > 0);
    assert!(counted(|i| i.actor_count as usize) > 0);
    assert!(counted(|i| i.enabled_rules.len()) > 0);

    // The migration again on the imported catalogue, its table dropped.
    let db = purple_runtime::Database::connect(ServiceName::Ingest, &app.storage)
        .await
        .unwrap();
    sqlx::query("DROP TABLE technique_inputs")
        .execute(db.pool())
        .await
        .unwrap();
    let migration = purple_ingest::MIGRATIONS
        .0
        .iter()
        .find(|m| m.version == 5)
        .unwrap();
    let ddl = match db.backend() {
        purple_runtime::Backend::Sqlite => migration.sqlite,
        purple_runtime::Backend::Postgres => migration.postgres,
    };
    sqlx::raw_sql(ddl).execute(db.pool()).await.unwrap();
    db.close().await;
    assert_eq!(inputs().await, kept);
}

/// Metrics migration 0007 counts the marks recorded before it per day, and
/// its trigger counts those recorded after it: the unfiltered rejection
/// rates (those counts, the window's partial ends and its repeats) equal
/// the filtered ones (the marks alone) over any window, before and after
/// more events, a duplicate among them.
#[tokio::test]
async fn the_mark_days_migration_counts_marks_recorded_before_it() {
    use purple_metrics::{
        domain::{Filter, NewEvent, Rejections},
        store::EventStore,
    };
    use purple_runtime::{
        Database, Migrations,
        time::{MICROS_PER_DAY, Micros},
    };
    const B: i64 = 1_772_409_600 * 1_000_000; // 2026-03-02T00:00:00Z
    const H: i64 = MICROS_PER_DAY / 24;
    let event = |id: &str, kind: &'static str, test: &str, side, at: i64| NewEvent {
        event_id: id.into(),
        kind,
        occurred_at: Micros::from_micros(at),
        test_id: Some(test.into()),
        technique_id: Some("T1003".into()),
        campaign_id: Some("c".into()),
        remediation_id: None,
        outcome: None,
        side,
        actor_id: None,
        attributes: "{}".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let db = Database::connect(ServiceName::Metrics, &settings.storage)
        .await
        .unwrap();
    let all = purple_metrics::MIGRATIONS.0;
    let before = all.iter().position(|m| m.version == 7).unwrap();
    db.migrate(&Migrations(&all[..before])).await.unwrap();
    let store = EventStore::new(db.clone());
    let now = Micros::from_micros(B + 30 * MICROS_PER_DAY);
    let early = [
        event("a1", "test.red_executed", "a", None, B + H),
        event("a2", "test.rejected", "a", Some("red"), B + 2 * H),
        event("a3", "test.red_executed", "a", None, B + MICROS_PER_DAY + H),
        event("b1", "test.red_executed", "b", None, B + 3 * MICROS_PER_DAY),
        event(
            "b2",
            "test.rejected",
            "b",
            Some("blue"),
            B + 3 * MICROS_PER_DAY,
        ),
        event(
            "c1",
            "test.validated",
            "c",
            None,
            B + 5 * MICROS_PER_DAY - 1,
        ),
    ];
    assert_eq!(store.append(&early, now).await.unwrap(), 6);
    db.migrate(&purple_metrics::MIGRATIONS).await.unwrap();

    let windows = [
        (B, B + 7 * MICROS_PER_DAY),
        (B + H, B + MICROS_PER_DAY + H),
        (B + 2 * H, B + 3 * MICROS_PER_DAY + 1),
        (B + MICROS_PER_DAY, B + 5 * MICROS_PER_DAY - 1),
    ];
    let agree = async |expected: &[i64]| {
        for ((from, to), red_executed) in windows.iter().zip(expected) {
            let filter = |campaign: &str| Filter {
                from: Micros::from_micros(*from),
                to: Micros::from_micros(*to),
                technique_ids: vec![],
                campaign_id: campaign.into(),
            };
            let counted: Rejections = store.rejections(&filter("")).await.unwrap();
            assert_eq!(counted, store.rejections(&filter("c")).await.unwrap());
            assert_eq!(counted.red_executed, *red_executed, "[{from}, {to})");
        }
    };
    agree(&[2, 1, 2, 2]).await;

    let late = [
        event("a1", "test.red_executed", "a", None, B + H),
        event("d1", "test.red_executed", "d", None, B + 2 * H),
        event(
            "d2",
            "test.rejected",
            "d",
            Some("red"),
            B + 6 * MICROS_PER_DAY,
        ),
        event("b3", "test.red_executed", "b", None, B + 2 * MICROS_PER_DAY),
    ];
    assert_eq!(store.append(&late, now).await.unwrap(), 3);
    agree(&[3, 2, 3, 2]).await;
    db.close().await;
}
