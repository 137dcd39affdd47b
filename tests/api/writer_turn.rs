//! SQLite's one writer at a time, shared fairly: a lone write (the relay's
//! marks, a campaign's schedule, the directory's upserts) takes this
//! process's writer turn in line with the write transactions, as
//! `Database::begin` does. Before, it met their lock in SQLite's busy
//! handler, which sleeps 1, 2, 5 … 100 ms between tries: the transactions
//! queued after it went first, and under load the relay's marks waited
//! 27 ms on average and 532 ms at p99 (docs/BENCHMARKS.md).

use std::time::Duration;

use purple_runtime::{Database, ServiceName, db::Backend};
use sqlx::Row;

use crate::helpers::test_settings;

/// Each row records how many rows were there before it: arrival order.
const RECORD: &str = "INSERT INTO turn_log (who, place) SELECT $1, COUNT(*) FROM turn_log";

#[tokio::test]
async fn a_lone_write_waits_its_turn_between_the_transactions_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let db = Database::connect(ServiceName::Campaigns, &settings.storage)
        .await
        .unwrap();
    db.migrate(&purple_campaigns::MIGRATIONS).await.unwrap();
    sqlx::query("CREATE TABLE turn_log (who TEXT NOT NULL, place BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();

    // A transaction is writing; a lone write comes, then another
    // transaction.
    let mut first = db.begin().await.unwrap();
    db.stmt(RECORD)
        .bind("first")
        .execute(&mut first)
        .await
        .unwrap();
    let mut lone = tokio::spawn({
        let db = db.clone();
        async move { db.stmt(RECORD).bind("lone").write(&db).await }
    });
    let sqlite = db.backend() == Backend::Sqlite;
    if sqlite {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!lone.is_finished(), "the lone write waits for the turn");
    } else {
        // PostgreSQL locks rows, not the database: the lone write ends
        // while the first transaction is still open.
        tokio::time::timeout(Duration::from_secs(10), &mut lone)
            .await
            .expect("the lone write does not wait on PostgreSQL")
            .unwrap()
            .unwrap();
    }
    let second = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            db.stmt(RECORD).bind("second").execute(&mut tx).await?;
            tx.commit().await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.commit().await.unwrap();
    if sqlite {
        lone.await.unwrap().unwrap();
    }
    second.await.unwrap().unwrap();

    let order: Vec<String> = sqlx::query("SELECT who FROM turn_log ORDER BY place, who")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    if sqlite {
        assert_eq!(order, ["first", "lone", "second"], "in arrival order");
    } else {
        assert_eq!(order.len(), 3, "{order:?}");
    }
    db.close().await;
}
