//! PostgreSQL over TLS: a private PostgreSQL with the test PKI's server
//! certificate, and Purple connecting with `sslmode=verify-full` — which
//! works with the CA that signed it and fails with another. Runs in the
//! PostgreSQL pass of `.ci/run`, where the server binaries are installed
//! and the test may start a cluster as the `postgres` user.

use std::time::Duration;

use purple_runtime::{Database, ServiceName, settings::StorageSettings};

use crate::{pg_cluster::Cluster, tls::pki};

async fn connect(url: String) -> Result<Database, sqlx::Error> {
    let storage = StorageSettings {
        data_dir: std::env::temp_dir(),
        database_url: Some(url),
        ingest_database_url: None,
        campaigns_database_url: None,
        scoring_database_url: None,
        metrics_database_url: None,
        schema_prefix: "tls_".into(),
        db_max_connections: 1,
        db_acquire_timeout_secs: 5,
        auto_migrate: true,
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        Database::connect(ServiceName::Metrics, &storage),
    )
    .await
    .expect("connecting does not hang")
}

#[tokio::test]
async fn postgres_over_tls_with_verify_full() {
    if std::env::var("PURPLE_TEST_DATABASE_URL").is_err() {
        eprintln!("PostgreSQL pass only");
        return;
    }
    let Some(cluster) = Cluster::start(true) else {
        eprintln!("needs root and PostgreSQL 15's server binaries: skipped");
        return;
    };
    let url = |ca: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            cluster.port,
            pki(ca).display()
        )
    };
    let db = connect(url("ca.pem"))
        .await
        .expect("verify-full with the right CA");
    db.migrate(&purple_metrics::MIGRATIONS).await.unwrap();
    let row = db
        .stmt(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
    use sqlx::Row;
    assert_eq!(row.get::<i64, _>(0), 1, "the connection is encrypted");
    db.close().await;
    let err = connect(url("rogue-ca.pem")).await;
    assert!(
        err.is_err(),
        "a server certificate from another CA is refused"
    );
}
