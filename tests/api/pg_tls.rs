//! PostgreSQL over TLS: a private PostgreSQL with the test PKI's server
//! certificate, and Purple connecting with `sslmode=verify-full` — which
//! works with the CA that signed it and fails with another. Runs in the
//! PostgreSQL pass of `.ci/run`, where the server binaries are installed
//! and the test may start a cluster as the `postgres` user.

use std::{path::Path, process::Command, time::Duration};

use purple_runtime::{Database, ServiceName, settings::StorageSettings};

use crate::tls::pki;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap()
}

/// A private cluster with TLS on, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

fn chown_postgres(path: &Path) {
    assert!(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

fn start_cluster() -> Option<Cluster> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0"
        || !Path::new(BIN).join("initdb").exists()
    {
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("purple-pgtls")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chown_postgres(dir.path());
    let init = as_postgres(&[
        &format!("{BIN}/initdb"),
        "-D",
        data.to_str().unwrap(),
        "-A",
        "trust",
        "-U",
        "postgres",
    ]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    for name in ["server.pem", "server.key", "ca.pem"] {
        std::fs::copy(pki(name), data.join(name)).unwrap();
    }
    chown_postgres(&data);
    Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key"))
        .status()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key",
        data.display()
    );
    let started = as_postgres(&[
        &format!("{BIN}/pg_ctl"),
        "-D",
        data.to_str().unwrap(),
        "-o",
        &options,
        "-w",
        "-l",
        data.join("log").to_str().unwrap(),
        "start",
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    Some(Cluster { dir, port })
}

async fn connect(url: String) -> Result<Database, sqlx::Error> {
    let storage = StorageSettings {
        data_dir: std::env::temp_dir(),
        database_url: Some(url),
        ingest_database_url: None,
        campaigns_database_url: None,
        scoring_database_url: None,
        metrics_database_url: None,
        schema_prefix: "tls_".into(),
        max_connections: 1,
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
    let Some(cluster) = start_cluster() else {
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
