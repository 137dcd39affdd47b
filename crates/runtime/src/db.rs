//! Storage shared by every service: one [`Database`] per service, SQLite in
//! its own file by default or PostgreSQL in its own schema, behind sqlx's
//! `Any` driver so that each store has a single code path for both.
//!
//! Conventions that keep the SQL portable (and that every migration follows):
//! instants are BIGINT microseconds since the Unix epoch (SQLite would
//! otherwise compare text and keep nanoseconds), flags are BIGINT 0/1, and
//! sets travel as one bound JSON array text — ids read with
//! `IN (SELECT value FROM json_each($1))`, rows with
//! `SELECT json_extract(value, '$.f') ... FROM json_each($1)` — so one
//! statement serves a set of any size. SQLite has both functions natively;
//! each service's first PostgreSQL migration defines text overloads of them.
//! Every statement runs through [`Stmt`], which makes it a span carrying the
//! service, `db.system` and the statement text.

use std::{str::FromStr, time::Duration};

use sqlx::{
    Any, AnyPool, Encode, Executor, SqlSafeStr, Type,
    any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyQueryResult, AnyRow},
    migrate::{Migration, MigrationType, Migrator},
    query::Query,
};
use tracing::Instrument;

use crate::settings::{ServiceName, StorageSettings};

mod packed;
mod write_tx;

pub use packed::PerBackend;
pub use write_tx::WriteTx;

/// Which database engine a service uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite, one file per service.
    Sqlite,
    /// PostgreSQL, one schema (or database) per service.
    Postgres,
}

impl Backend {
    /// The OpenTelemetry `db.system` value.
    pub fn system(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// One migration, embedded in the binary with `include_str!` so a deployed
/// binary needs no migration folder. Most DDL is the same on both
/// backends; where it differs (identity columns, trigger functions) the
/// migration carries one text per backend.
pub struct MigrationFile {
    /// Version, increasing; one number for both backends.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// The DDL applied on SQLite.
    pub sqlite: &'static str,
    /// The DDL applied on PostgreSQL.
    pub postgres: &'static str,
}

impl MigrationFile {
    /// A migration whose DDL is the same on both backends.
    pub const fn same(version: i64, description: &'static str, sql: &'static str) -> Self {
        Self {
            version,
            description,
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A migration with one DDL text per backend.
    pub const fn per_backend(
        version: i64,
        description: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Self {
            version,
            description,
            sqlite,
            postgres,
        }
    }

    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// Migration 1 of every service: the `json_each`/`json_extract` text
/// overloads that make one set-based statement portable (see the module
/// documentation). SQLite has both natively, so its text is a no-op that
/// keeps the versions aligned.
pub const JSON_FUNCTIONS: MigrationFile = MigrationFile::per_backend(
    1,
    "json functions",
    include_str!("../migrations/0001_json_functions.sqlite.sql"),
    include_str!("../migrations/0001_json_functions.postgres.sql"),
);

/// The migrations of one service, in version order: the one list both
/// backends apply.
pub struct Migrations(pub &'static [MigrationFile]);

impl Migrations {
    fn migrator(&self, backend: Backend) -> Migrator {
        Migrator::with_migrations(
            self.0
                .iter()
                .map(|f| {
                    Migration::new(
                        f.version,
                        f.description.into(),
                        MigrationType::Simple,
                        f.sql(backend).into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }
}

/// A service's connection pool and what its spans say about it.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    service: ServiceName,
    /// The PostgreSQL schema; None on SQLite.
    schema: Option<String>,
    /// SQLite's one writer at a time, taken in arrival order by this
    /// process's write transactions (see [`Database::begin`]).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A database's migrations against a binary's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaVersion {
    /// Versions applied successfully, ascending.
    pub applied: Vec<i64>,
    /// Versions this binary carries, ascending.
    pub known: Vec<i64>,
}

impl SchemaVersion {
    /// Versions this binary needs that the database lacks: it must be
    /// migrated before this binary serves it.
    pub fn missing(&self) -> Vec<i64> {
        self.known
            .iter()
            .filter(|v| !self.applied.contains(v))
            .copied()
            .collect()
    }

    /// Versions a newer binary applied (a rollback is running).
    pub fn newer(&self) -> Vec<i64> {
        self.applied
            .iter()
            .filter(|v| !self.known.contains(v))
            .copied()
            .collect()
    }
}

/// "No such table" on either backend.
fn is_missing_table(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("42P01") || db.message().contains("no such table")
        }
        _ => false,
    }
}

impl Database {
    /// Connects the service's database: its SQLite file under the data
    /// directory, or its PostgreSQL schema (which [`Database::migrate`]
    /// creates; connecting runs no DDL).
    pub async fn connect(
        service: ServiceName,
        storage: &StorageSettings,
    ) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        match storage.postgres_url(service) {
            Some(url) => {
                let schema = format!("{}{}", storage.schema_prefix, service.as_str());
                Self::connect_postgres(service, url, &schema, pool_options(storage)).await
            }
            None => {
                std::fs::create_dir_all(&storage.data_dir).map_err(sqlx::Error::Io)?;
                let path = storage.data_dir.join(format!("{}.db", service.as_str()));
                let url = format!("sqlite://{}?mode=rwc", path.display());
                Self::connect_sqlite(service, &url, pool_options(storage)).await
            }
        }
    }

    async fn connect_sqlite(
        service: ServiceName,
        url: &str,
        pool: AnyPoolOptions,
    ) -> Result<Self, sqlx::Error> {
        let options = AnyConnectOptions::from_str(url)?;
        let pool = pool
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the single writer; the busy
                    // timeout makes a second writer wait instead of failing.
                    // Reads through a memory map (up to 256 MiB of the file)
                    // skip a pread and a copy per page missing from the
                    // connection's page cache: GetTestsByIds under load,
                    // 1,989 → 2,589-2,700 req/s (docs/BENCHMARKS.md).
                    // A WAL that a large import grew (152 MB after the load
                    // driver's) is cut back to 64 MiB when it starts again.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA mmap_size = 268435456; \
                         PRAGMA journal_size_limit = 67108864;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            service,
            schema: None,
            writer: Default::default(),
        })
    }

    async fn connect_postgres(
        service: ServiceName,
        url: &str,
        schema: &str,
        pool: AnyPoolOptions,
    ) -> Result<Self, sqlx::Error> {
        if !is_identifier(schema) {
            return Err(sqlx::Error::Configuration(
                format!("schema name {schema:?} must be lower-case letters, digits and _").into(),
            ));
        }
        let options = AnyConnectOptions::from_str(url)?;
        // No DDL here: a runtime role may only read and write its schema's
        // tables. The schema name is checked above and comes from settings,
        // never from a request: safe to splice into SET.
        let search_path = format!("SET search_path TO {schema}");
        let pool = pool
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(search_path)).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            service,
            schema: Some(schema.to_owned()),
            writer: Default::default(),
        })
    }

    /// Applies the service's pending migrations for this backend, creating
    /// its PostgreSQL schema first when it is missing (which needs CREATE on
    /// the database: `purple db bootstrap` creates it ahead for a migration
    /// role that has no such right). Migrations applied by a newer binary
    /// are left alone (a rollback): they are expand-only, so this binary's
    /// statements still work against them.
    pub async fn migrate(
        &self,
        migrations: &Migrations,
    ) -> Result<(), sqlx::migrate::MigrateError> {
        if let Some(schema) = &self.schema {
            self.ensure_schema(schema).await?;
        }
        let mut migrator = migrations.migrator(self.backend);
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await
    }

    async fn ensure_schema(&self, schema: &str) -> Result<(), sqlx::Error> {
        let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
            .bind(schema)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if exists {
            return Ok(());
        }
        // Checked identifier, from settings (see connect_postgres).
        let create = format!("CREATE SCHEMA {schema}");
        match self.pool.execute(sqlx::AssertSqlSafe(create)).await {
            Ok(_) => Ok(()),
            // Two migrators racing: the loser sees the schema exist.
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("42P06" | "23505")) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Where the database stands against `migrations`: the versions it has
    /// applied (successfully) and the ones this binary knows.
    pub async fn schema_version(
        &self,
        migrations: &Migrations,
    ) -> Result<SchemaVersion, sqlx::Error> {
        let known: Vec<i64> = migrations.0.iter().map(|m| m.version).collect();
        let applied = match sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows
                .iter()
                .map(|row| sqlx::Row::try_get::<i64, _>(row, 0))
                .collect::<Result<Vec<i64>, _>>()?,
            Err(err) if is_missing_table(&err) => Vec::new(),
            Err(err) => return Err(err),
        };
        Ok(SchemaVersion { applied, known })
    }

    /// Whether the database answers a trivial statement within `timeout`:
    /// what the service's health follows.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let probe = async {
            let mut conn = self.pool.acquire().await?;
            conn.execute("SELECT 1").await
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(_)))
    }

    /// Connections open and idle, for the pool metrics.
    pub fn pool_usage(&self) -> (u32, u32) {
        (
            self.pool.size(),
            u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        )
    }

    /// The service this database belongs to.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The pool, as an executor for single statements.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock at
    /// once (BEGIN IMMEDIATE): a deferred transaction that reads and then
    /// writes fails with SQLITE_BUSY, which no busy timeout retries, when
    /// another connection committed in between. And it first waits its
    /// turn among this process's writers, in arrival order, holding it
    /// until the transaction ends: SQLite's busy handler otherwise retries
    /// a contended lock by sleeping (1, 2, 5 … 100 ms), which put
    /// `TransitionTest`'s p99 at 157 ms with 32 clients (69 ms with the
    /// turn, docs/BENCHMARKS.md). The busy timeout still covers another
    /// process. The BEGIN itself goes with the transaction's first
    /// statement ([`WriteTx`]).
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                // The connection first: waiting for the turn with one in
                // hand keeps the pool's wait out of the writers' queue
                // (926/s, p99 69 ms, against 867/s, p99 93 ms the other
                // way round).
                let conn = self.pool.acquire().await?;
                let turn = self.writer.clone().lock_owned().await;
                Ok(WriteTx::sqlite(conn, turn))
            }
            Backend::Postgres => Ok(WriteTx::postgres(self.pool.begin().await?)),
        }
    }

    /// A statement to bind and run; its execution is a span.
    pub fn stmt(&self, sql: &'static str) -> Stmt {
        Stmt {
            sql,
            query: sqlx::query(sql),
            backend: self.backend,
            service: self.service,
        }
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A connection back in the pool for less than this is handed out again
/// without a liveness ping.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool's size and how long a request waits for a connection: a dead
/// database fails requests within the wait, never holds them.
///
/// sqlx pings every connection it takes from the idle queue, by default: a
/// round trip per acquire, and a read through the pool acquires once per
/// statement, so under load every statement paid two round trips (on
/// SQLite, two hops to the connection's worker thread). A connection used
/// within the last second is known alive, so only one idle for longer is
/// pinged (HikariCP's "alive bypass window" makes the same trade): one
/// that fails is closed and the acquire takes another, as before.
fn pool_options(storage: &StorageSettings) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(storage.db_max_connections)
        .acquire_timeout(Duration::from_secs(storage.db_acquire_timeout_secs.max(1)))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One SQL statement with its arguments. Running it opens a `db.statement`
/// span, so the statements a request costs show in its trace.
pub struct Stmt {
    sql: &'static str,
    query: Query<'static, Any, AnyArguments>,
    backend: Backend,
    service: ServiceName,
}

impl Stmt {
    /// Binds the next `$N` argument.
    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: Encode<'static, Any> + Type<Any> + 'static,
    {
        self.query = self.query.bind(value);
        self
    }

    /// Binds a set of ids as one JSON array, for `json_each($N)`.
    pub fn bind_ids<I, S>(self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let json = serde_json::Value::Array(
            ids.into_iter()
                .map(|s| serde_json::Value::String(s.as_ref().to_owned()))
                .collect(),
        );
        self.bind(json.to_string())
    }

    /// Binds a set of rows as one JSON array of objects, for
    /// `json_extract(value, '$.field') ... FROM json_each($N)`.
    pub fn bind_rows<R: serde::Serialize>(self, rows: &[R]) -> Self {
        let json = serde_json::to_string(rows).expect("rows serialize to JSON");
        self.bind(json)
    }

    fn span(&self) -> tracing::Span {
        crate::instruments::count_statement(self.service.as_str());
        // A statement outside any span is background polling (the relay,
        // the scheduler, health probes): not traced, so an idle process
        // exports nothing. Work worth a trace opens a span first.
        if tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "db.statement",
            otel.name = %first_words(self.sql),
            otel.kind = "client",
            db.system = self.backend.system(),
            db.statement = self.sql,
            service = self.service.as_str(),
        )
    }

    /// Runs it and returns every row.
    pub async fn fetch_all<'c, E>(self, executor: E) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let span = self.span();
        let rows = self.query.fetch_all(executor).instrument(span).await?;
        type_audit::record(self.backend, self.sql, &rows);
        Ok(rows)
    }

    /// Runs it and returns the one row it must produce.
    pub async fn fetch_one<'c, E>(self, executor: E) -> Result<AnyRow, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let span = self.span();
        let row = self.query.fetch_one(executor).instrument(span).await?;
        type_audit::record(self.backend, self.sql, std::slice::from_ref(&row));
        Ok(row)
    }

    /// Runs it and returns the row it may produce.
    pub async fn fetch_optional<'c, E>(self, executor: E) -> Result<Option<AnyRow>, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let span = self.span();
        let row = self.query.fetch_optional(executor).instrument(span).await?;
        if let Some(row) = &row {
            type_audit::record(self.backend, self.sql, std::slice::from_ref(row));
        }
        Ok(row)
    }

    /// Runs it for its effect.
    pub async fn execute<'c, E>(self, executor: E) -> Result<AnyQueryResult, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let span = self.span();
        self.query.execute(executor).instrument(span).await
    }

    /// Runs a write on its own (a transaction of one statement), taking
    /// this process's SQLite writer turn as [`Database::begin`] does. On
    /// the pool it would meet the writers' lock through SQLite's busy
    /// handler, which sleeps 1, 2, 5 … 100 ms between tries: under a steady
    /// stream of transitions the relay's marks waited 27 ms on average
    /// (p99 532 ms), and each time one won the lock the writer next in
    /// line slept the same way with the turn in hand, the CPU idle
    /// (docs/BENCHMARKS.md).
    pub async fn write(self, db: &Database) -> Result<AnyQueryResult, sqlx::Error> {
        match db.backend {
            Backend::Sqlite => {
                let mut conn = db.pool.acquire().await?;
                let _turn = db.writer.lock().await;
                self.execute(&mut *conn).await
            }
            Backend::Postgres => self.execute(&db.pool).await,
        }
    }
}

/// "SELECT metrics.events" style span names stay short; the full text is in
/// `db.statement`.
fn first_words(sql: &str) -> String {
    let mut words = sql.split_whitespace();
    let verb = words.next().unwrap_or("SQL").to_ascii_uppercase();
    format!("db {verb}")
}

/// The portable-SQL contract, checkable: every statement must return the
/// same kind of value in each column on both backends (an integer stays an
/// integer, text stays text), or a store that decodes it works on one
/// backend and fails on the other. When enabled (by a test), every row a
/// statement returns is recorded per backend, and [`type_audit::mismatches`]
/// lists the statements whose columns differ.
pub mod type_audit {
    use std::{
        collections::{BTreeMap, BTreeSet},
        sync::{
            Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use sqlx::{Row, TypeInfo, ValueRef, any::AnyRow};

    use super::Backend;

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// Column value classes per (statement, backend): one set per column.
    type Seen = BTreeMap<(&'static str, &'static str), Vec<BTreeSet<&'static str>>>;
    static SEEN: Mutex<Seen> = Mutex::new(BTreeMap::new());

    /// Starts recording, for the rest of the process.
    pub fn enable() {
        ENABLED.store(true, Ordering::SeqCst);
    }

    /// The class of a value's type: integer widths are one class (both
    /// backends decode any of them as i64), as are float widths.
    fn class(type_name: &str) -> Option<&'static str> {
        let name = type_name.to_ascii_uppercase();
        Some(match name.as_str() {
            "NULL" => return None,
            "SMALLINT" | "INT2" | "INTEGER" | "INT" | "INT4" | "BIGINT" | "INT8" => "integer",
            "REAL" | "FLOAT4" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" => "real",
            "TEXT" | "VARCHAR" => "text",
            "BOOLEAN" | "BOOL" => "boolean",
            "BLOB" | "BYTEA" => "blob",
            _ => "other",
        })
    }

    pub(super) fn record(backend: Backend, sql: &'static str, rows: &[AnyRow]) {
        if !ENABLED.load(Ordering::Relaxed) || rows.is_empty() {
            return;
        }
        let mut seen = SEEN.lock().expect("type audit poisoned");
        let columns = seen.entry((sql, backend.system())).or_default();
        for row in rows {
            for i in 0..row.len() {
                let Ok(value) = row.try_get_raw(i) else {
                    continue;
                };
                if columns.len() <= i {
                    columns.resize(i + 1, BTreeSet::new());
                }
                if let Some(class) = class(value.type_info().name()) {
                    columns[i].insert(class);
                }
            }
        }
    }

    /// Statements seen on both backends whose column classes differ, with
    /// a description of each difference.
    pub fn mismatches() -> Vec<String> {
        let seen = SEEN.lock().expect("type audit poisoned");
        let mut out = Vec::new();
        for ((sql, backend), sqlite) in seen.iter() {
            if *backend != "sqlite" {
                continue;
            }
            let Some(postgres) = seen.get(&(*sql, "postgresql")) else {
                continue;
            };
            for (i, (a, b)) in sqlite.iter().zip(postgres).enumerate() {
                if !a.is_empty() && !b.is_empty() && a != b {
                    out.push(format!(
                        "column {i}: sqlite {a:?}, postgresql {b:?} in {}",
                        sql.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
        }
        out
    }

    /// How many statements were seen on both backends.
    pub fn compared() -> usize {
        let seen = SEEN.lock().expect("type audit poisoned");
        seen.keys()
            .filter(|(sql, b)| *b == "sqlite" && seen.contains_key(&(*sql, "postgresql")))
            .count()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn integer_widths_are_one_class_and_bool_is_not_an_integer() {
            assert_eq!(super::class("INT4"), super::class("BIGINT"));
            assert_ne!(super::class("BOOL"), super::class("INT8"));
            assert_eq!(super::class("NULL"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(is_identifier("purple_ingest"));
        assert!(!is_identifier("purple-ingest"));
        assert!(!is_identifier("x; DROP TABLE y"));
        assert!(!is_identifier(""));
    }
}
