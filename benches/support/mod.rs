//! What the benchmarks share: an in-process server on a fresh database
//! (SQLite, or PostgreSQL when `PURPLE_BENCH_DATABASE_URL` is set), timing
//! of repeated calls, and the process's peak memory.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use purple_runtime::{ServiceName, Settings};
use tokio::sync::oneshot;
use tonic::{
    metadata::AsciiMetadataValue,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

pub mod catalogue;
pub mod history;

/// Puts the embedded server's admin token on every call.
#[derive(Clone, Debug)]
pub struct Bearer(pub AsciiMetadataValue);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry the admin token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A running server for a benchmark.
pub struct BenchApp {
    pub channel: Authed,
    /// A channel with a `service` token, for internal RPCs.
    pub service: Authed,
    pub settings: Settings,
    pub backend: &'static str,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl BenchApp {
    pub async fn start() -> Self {
        let mut dir = tempfile::tempdir().unwrap();
        // PURPLE_BENCH_KEEP: the data directory (SQLite files, tokens)
        // outlives the run, for a look at its statements' plans (and the
        // PostgreSQL schemas: `finish`).
        if std::env::var_os("PURPLE_BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("data directory kept: {}", dir.path().display());
        }
        let mut settings = Settings::defaults();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.storage.data_dir = dir.path().to_path_buf();
        settings.storage.database_url = bench_database_url();
        settings.storage.schema_prefix =
            format!("b{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        settings.peers = Default::default();
        settings.limits.request_timeout_secs = 600;
        let backend = if settings.storage.database_url.is_some() {
            "postgresql"
        } else {
            "sqlite"
        };
        let app = purple::Application::build(settings.clone(), &ServiceName::ALL)
            .await
            .unwrap();
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // The embedded default wrote an admin token into its data directory.
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let minter = purple_runtime::auth::tokens::Minter::new(
            &settings.auth,
            Some(&purple_runtime::auth::bootstrap::secret_path(dir.path())),
        )
        .unwrap()
        .unwrap();
        let service_token = minter.mint(
            "service:bench",
            purple_api::common::v1::Role::Service,
            "bench",
            Duration::from_secs(86_400),
        );
        let service = InterceptedService::new(
            channel.clone(),
            Bearer(format!("Bearer {service_token}").parse().unwrap()),
        );
        let channel = InterceptedService::new(
            channel,
            Bearer(format!("Bearer {}", token.trim()).parse().unwrap()),
        );
        Self {
            channel,
            service,
            settings,
            backend,
            stop: Some(stop),
            _dir: dir,
        }
    }
}

impl BenchApp {
    /// Stops the server and drops the PostgreSQL schemas it made, so
    /// repeated runs do not pile them up in the database.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // PURPLE_BENCH_KEEP keeps the PostgreSQL schemas too, for a look
        // at their statements' plans (drop them by hand afterwards).
        if std::env::var_os("PURPLE_BENCH_KEEP").is_some() {
            eprintln!("schemas kept: {}*", self.settings.storage.schema_prefix);
            return;
        }
        drop_schemas(
            self.settings.storage.database_url.as_deref(),
            &self.settings.storage.schema_prefix,
        )
        .await;
    }
}

/// `PURPLE_BENCH_DATABASE_URL`, empty meaning unset (SQLite), as a shell
/// that clears it with `VAR=` leaves it.
pub fn bench_database_url() -> Option<String> {
    std::env::var("PURPLE_BENCH_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Drops every PostgreSQL schema whose name starts with a run's prefix.
pub async fn drop_schemas(database_url: Option<&str>, prefix: &str) {
    use sqlx::{Connection, Executor, Row};
    let Some(url) = database_url else { return };
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let schemas =
        sqlx::query("SELECT quote_ident(nspname) FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(prefix)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for schema in schemas {
        let name: String = schema.get(0);
        conn.execute(sqlx::AssertSqlSafe(format!("DROP SCHEMA {name} CASCADE")))
            .await
            .unwrap();
    }
}

impl Drop for BenchApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs `f` `runs` times and returns (median, min).
pub async fn time<F, Fut>(runs: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[0])
}

/// Peak resident memory of this process (server and client together), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Vacuums and collects PostgreSQL's planner statistics for every table of
/// the schemas named `<prefix>*`, as autovacuum does within its naptime (a
/// minute) after a bulk load: a benchmark that queries straight after
/// loading would otherwise measure plans made for empty tables, and heap
/// reads an index-only scan skips once the visibility map is set. SQLite
/// plans without statistics; nothing to do there.
pub async fn analyze(database_url: Option<&str>, prefix: &str) {
    use sqlx::{Connection, Executor, Row};
    let Some(url) = database_url else { return };
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables = sqlx::query(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename)
         FROM pg_tables WHERE starts_with(schemaname, $1)",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for table in tables {
        let name: String = table.get(0);
        conn.execute(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {name}")))
            .await
            .unwrap();
    }
}
