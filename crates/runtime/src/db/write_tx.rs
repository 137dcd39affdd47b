//! The write transaction every store writes through: sqlx's own on
//! PostgreSQL; on SQLite one that spends fewer hops to the connection's
//! worker thread while it holds the writer turn.
//!
//! sqlx runs a SQLite connection's statements on a thread of its own, and
//! each command it sends there is a hop there and back (~0.17 ms under
//! load on this 2-core machine). With one writer at a time those hops were
//! much of a transition's turn: BEGIN, two or three statements, COMMIT,
//! each its own command. Here BEGIN IMMEDIATE travels
//! with the first statement and COMMIT with the last one a store hands to
//! [`WriteTx::commit_with`]: SQLite runs a text of several statements in
//! one command, each `$N` naming its own argument, so neither adds a hop
//! (docs/BENCHMARKS.md). sqlx does not know of such a transaction, so this
//! type ends it itself: one dropped open (an error, a cancelled request) is
//! rolled back on its connection before the connection and the turn are
//! given back.

use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::{
    Any, AssertSqlSafe, Either, Execute, Executor, SqlStr, Transaction,
    any::{AnyArguments, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo},
    pool::PoolConnection,
    query::Query,
};
use tokio::sync::OwnedMutexGuard;

use super::Stmt;

/// A write transaction and, on SQLite, this process's writer turn, given
/// back when the transaction ends (committed, rolled back or dropped).
/// Statements run on it as on any executor: `stmt.execute(&mut *tx)`.
pub struct WriteTx {
    inner: Inner,
}

enum Inner {
    Postgres(Transaction<'static, Any>),
    Sqlite(SqliteTx),
}

/// A SQLite transaction sqlx does not track.
struct SqliteTx {
    /// Until the transaction ends (taken by a rollback on drop).
    conn: Option<PoolConnection<Any>>,
    /// BEGIN has been sent (and may have failed): ending the transaction
    /// takes a COMMIT or a ROLLBACK.
    begun: bool,
    turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(super) fn postgres(tx: Transaction<'static, Any>) -> Self {
        WriteTx {
            inner: Inner::Postgres(tx),
        }
    }

    /// A SQLite transaction on `conn`, begun by its first statement.
    pub(super) fn sqlite(conn: PoolConnection<Any>, turn: OwnedMutexGuard<()>) -> Self {
        WriteTx {
            inner: Inner::Sqlite(SqliteTx {
                conn: Some(conn),
                begun: false,
                turn: Some(turn),
            }),
        }
    }

    /// Commits, then gives the turn back.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Postgres(tx) => tx.commit().await,
            Inner::Sqlite(mut tx) => {
                if tx.begun {
                    tx.conn().execute("COMMIT").await?;
                    tx.begun = false;
                }
                Ok(())
            }
        }
    }

    /// Runs `writes`, statements whose results the store does not need,
    /// in order, and commits: on SQLite the last of them and COMMIT are one
    /// command. An error of any is the commit's, and nothing is committed.
    pub async fn commit_with(
        mut self,
        writes: impl IntoIterator<Item = Stmt>,
    ) -> Result<(), sqlx::Error> {
        let mut writes = writes.into_iter().peekable();
        while let Some(write) = writes.next() {
            let last = writes.peek().is_none();
            match &mut self.inner {
                Inner::Sqlite(tx) if last => {
                    let span = write.span();
                    let begin = !std::mem::replace(&mut tx.begun, true);
                    let query = wrapped(write.query, begin, true)?;
                    tracing::Instrument::instrument(tx.conn().execute(query), span).await?;
                    tx.begun = false;
                    return Ok(());
                }
                _ => {
                    write.execute(&mut self).await?;
                }
            }
        }
        self.commit().await
    }

    /// Rolls back, then gives the turn back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.inner {
            Inner::Postgres(tx) => tx.rollback().await,
            Inner::Sqlite(mut tx) => {
                if tx.begun {
                    tx.begun = false;
                    rollback(tx.conn()).await;
                }
                Ok(())
            }
        }
    }

    /// Whether statements run inside the transaction as they are: always on
    /// PostgreSQL, on SQLite once BEGIN has been sent.
    fn begun(&self) -> bool {
        match &self.inner {
            Inner::Postgres(_) => true,
            Inner::Sqlite(tx) => tx.begun,
        }
    }
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.inner {
            Inner::Postgres(_) => "WriteTx(PostgreSQL)",
            Inner::Sqlite(_) => "WriteTx(SQLite)",
        })
    }
}

impl SqliteTx {
    fn conn(&mut self) -> &mut sqlx::AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("the connection stays until the transaction ends")
    }
}

/// A ROLLBACK whose failure leaves nothing to do: it fails when no
/// transaction is open (BEGIN itself failed, or SQLite already rolled
/// back after an I/O or full-disk error).
async fn rollback(conn: &mut sqlx::AnyConnection) {
    if let Err(err) = conn.execute("ROLLBACK").await {
        tracing::debug!(%err, "rollback of a write transaction");
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if !self.begun {
            return;
        }
        let (Some(mut conn), turn) = (self.conn.take(), self.turn.take()) else {
            return;
        };
        // The rollback needs an await: it runs on its own task, holding the
        // connection and the turn until it is done, so the next writer
        // never meets this transaction's lock.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    rollback(&mut conn).await;
                    drop(turn);
                });
            }
            // No runtime (a process shutting down): closing the connection
            // rolls back whatever it had open.
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// `query` with BEGIN IMMEDIATE before it and/or COMMIT after it, in one
/// text: the arguments stay those of `query` (`$N` names them whatever
/// precedes it). COMMIT goes on a line of its own, so that a statement
/// ending in a `--` comment cannot swallow it.
fn wrapped<'q, E: Execute<'q, Any>>(
    mut query: E,
    begin: bool,
    commit: bool,
) -> Result<Query<'q, Any, AnyArguments>, sqlx::Error> {
    let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
    let persistent = query.persistent();
    let sql = query.sql();
    let text = format!(
        "{}{}{}",
        if begin { "BEGIN IMMEDIATE;\n" } else { "" },
        sql.as_str().trim_end().trim_end_matches(';'),
        if commit { "\n;\nCOMMIT" } else { "" },
    );
    Ok(sqlx::query_with(AssertSqlSafe(text), arguments.unwrap_or_default()).persistent(persistent))
}

impl<'c> Executor<'c> for &'c mut WriteTx {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match &mut self.inner {
            Inner::Postgres(tx) => tx.fetch_many(query),
            Inner::Sqlite(tx) => {
                if std::mem::replace(&mut tx.begun, true) {
                    return tx.conn().fetch_many(query);
                }
                match wrapped(query, true, false) {
                    // BEGIN's own result (it has no rows) comes first, and
                    // would add the connection's last change count.
                    Ok(query) => tx.conn().fetch_many(query).skip(1).boxed(),
                    Err(err) => futures::stream::once(async { Err(err) }).boxed(),
                }
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        if !self.begun() {
            // The first statement carries BEGIN (see fetch_many): its rows,
            // of which the first is the answer.
            return Box::pin(async move {
                let rows: Vec<AnyRow> = self.fetch(query).try_collect().await?;
                Ok(rows.into_iter().next())
            });
        }
        match &mut self.inner {
            Inner::Postgres(tx) => tx.fetch_optional(query),
            Inner::Sqlite(tx) => tx.conn().fetch_optional(query),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        match &mut self.inner {
            Inner::Postgres(tx) => tx.prepare_with(sql, parameters),
            Inner::Sqlite(tx) => tx.conn().prepare_with(sql, parameters),
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor, Row, any::AnyPoolOptions};

    use super::super::Database;
    use crate::settings::ServiceName;

    /// A SQLite database of one connection, so that each transaction runs
    /// on the connection the one before it used, and a table of rows.
    async fn sqlite() -> (Database, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        sqlx::any::install_default_drivers();
        let db = Database::connect_sqlite(
            ServiceName::Metrics,
            &url,
            AnyPoolOptions::new().max_connections(1),
        )
        .await
        .unwrap();
        db.pool()
            .execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
            .await
            .unwrap();
        (db, dir)
    }

    async fn count(db: &Database) -> i64 {
        db.stmt("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0)
    }

    /// Whether another connection can take the write lock now: not while
    /// a transaction begun with BEGIN IMMEDIATE is open.
    async fn lock_is_free(dir: &tempfile::TempDir) -> bool {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
        other.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let free = other.execute("BEGIN IMMEDIATE").await.is_ok();
        if free {
            other.execute("ROLLBACK").await.unwrap();
        }
        free
    }

    async fn insert(tx: &mut super::WriteTx, id: i64) -> Result<u64, sqlx::Error> {
        let db_stmt = "INSERT INTO t (id, v) SELECT value, 0 FROM json_each($1)";
        let ids = serde_json::to_string(&[id]).unwrap();
        Ok(sqlx::query(db_stmt)
            .bind(ids)
            .execute(&mut *tx)
            .await?
            .rows_affected())
    }

    #[tokio::test]
    async fn the_first_statement_begins_and_reports_its_own_changes_alone() {
        let (db, dir) = sqlite().await;
        let mut tx = db.begin().await.unwrap();
        assert!(lock_is_free(&dir).await, "nothing sent yet, nothing locked");
        let five = db
            .stmt("INSERT INTO t (id, v) SELECT value, 0 FROM json_each($1)")
            .bind_ids(["1", "2", "3", "4", "5"])
            .execute(&mut tx)
            .await
            .unwrap();
        assert_eq!(five.rows_affected(), 5);
        assert!(!lock_is_free(&dir).await, "BEGIN IMMEDIATE went with it");
        tx.commit().await.unwrap();
        assert!(lock_is_free(&dir).await);

        // The same connection: BEGIN's result would repeat the 5 above.
        let mut tx = db.begin().await.unwrap();
        let one = db
            .stmt("UPDATE t SET v = 1 WHERE id = $1")
            .bind(1_i64)
            .execute(&mut tx)
            .await
            .unwrap();
        assert_eq!(one.rows_affected(), 1);
        tx.rollback().await.unwrap();
        let v: i64 = db
            .stmt("SELECT v FROM t WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, 0, "rolled back");
    }

    #[tokio::test]
    async fn a_first_fetch_begins_and_answers() {
        let (db, dir) = sqlite().await;
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 7).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        let row = db
            .stmt("SELECT v + 1 FROM t WHERE id = $1")
            .bind(7_i64)
            .fetch_optional(&mut tx)
            .await
            .unwrap()
            .expect("the row");
        assert_eq!(row.get::<i64, _>(0), 1);
        assert!(!lock_is_free(&dir).await);
        let none = db
            .stmt("SELECT v FROM t WHERE id = $1")
            .bind(8_i64)
            .fetch_optional(&mut tx)
            .await
            .unwrap();
        assert!(none.is_none());
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_before_the_next_writer_runs() {
        let (db, dir) = sqlite().await;
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 1).await.unwrap();
        drop(tx);
        // The next transaction waits for the connection and the turn, both
        // held until the rollback is done.
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 2).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&db).await, 1);
        assert!(lock_is_free(&dir).await);

        // A failed first statement: BEGIN ran, the insert did not.
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 2).await.expect_err("a duplicate key");
        insert(&mut tx, 3).await.unwrap();
        drop(tx);
        let tx = db.begin().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&db).await, 1);
        assert!(lock_is_free(&dir).await);
    }

    #[tokio::test]
    async fn commit_with_runs_the_writes_and_commits_or_neither() {
        let (db, dir) = sqlite().await;
        let last = |id: i64| {
            db.stmt("INSERT INTO t (id, v) VALUES ($1, $2)")
                .bind(id)
                .bind(id * 10)
        };
        // Alone: BEGIN, it and COMMIT in one.
        let tx = db.begin().await.unwrap();
        tx.commit_with([last(1)]).await.unwrap();
        // After other statements, and after another write.
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 2).await.unwrap();
        tx.commit_with([last(3), last(4)]).await.unwrap();
        // A statement ending in a semicolon and a comment still commits.
        let tx = db.begin().await.unwrap();
        tx.commit_with([db
            .stmt("INSERT INTO t (id, v) VALUES ($1, 0); -- the last")
            .bind(8_i64)])
            .await
            .unwrap();
        assert!(lock_is_free(&dir).await, "committed, not left open");
        sqlx::query("DELETE FROM t WHERE id = 8")
            .execute(db.pool())
            .await
            .unwrap();
        // None: a plain commit.
        let mut tx = db.begin().await.unwrap();
        insert(&mut tx, 5).await.unwrap();
        tx.commit_with([]).await.unwrap();
        assert_eq!(count(&db).await, 5);
        assert!(lock_is_free(&dir).await);

        // The last fails, or one before it: nothing of the transaction stays.
        for writes in [vec![last(6), last(1)], vec![last(1), last(6)]] {
            let mut tx = db.begin().await.unwrap();
            insert(&mut tx, 7).await.unwrap();
            tx.commit_with(writes).await.expect_err("a duplicate key");
            let tx = db.begin().await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(count(&db).await, 5);
            assert!(lock_is_free(&dir).await);
        }
    }
}
