//! Answers of many rows packed by the database into one: a JSON array
//! holding each row's columns as an array, decoded in one pass.
//!
//! Why: sqlx hands SQLite rows over from its worker thread one at a time,
//! each copied value by value and converted, columns and all, into the
//! `Any` driver's row — ~14 µs a row where SQLite itself spends ~2 (the
//! 691 live techniques brief: 1.5-2 ms in SQLite, 10-13 ms through the
//! pool; docs/BENCHMARKS.md, "Under load"). A packed answer is one row
//! whatever its size. The aggregate and array constructor differ per
//! backend; the rest of a statement is the same text, written once as a
//! macro of the two names and instantiated by [`packed!`](crate::packed).

use serde::de::DeserializeOwned;
use sqlx::{Executor, Row, any::Any};

use super::{Backend, Database, Stmt};

/// A statement with one text per backend.
#[derive(Clone, Copy, Debug)]
pub struct PerBackend {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Instantiates a statement macro that takes the JSON aggregate and array
/// constructor as `($agg:literal, $array:literal)` once per backend: a
/// [`PerBackend`] for [`Database::stmt_for`] and [`Stmt::fetch_packed`].
/// The macro's select is `CAST($agg($array(columns…) [ORDER BY …]) AS
/// TEXT)`: NULL (PostgreSQL) or `[]` (SQLite) when no row matches.
#[macro_export]
macro_rules! packed {
    ($statement:ident) => {
        $crate::db::PerBackend {
            sqlite: $statement!("json_group_array", "json_array"),
            postgres: $statement!("json_agg", "json_build_array"),
        }
    };
}

impl Database {
    /// A statement whose text depends on the backend.
    pub fn stmt_for(&self, sql: PerBackend) -> Stmt {
        self.stmt(match self.backend {
            Backend::Sqlite => sql.sqlite,
            Backend::Postgres => sql.postgres,
        })
    }
}

impl Stmt {
    /// Runs a statement of [`packed!`] and decodes each packed row as `T`
    /// (a tuple decodes from the row's array of columns). Integers arrive
    /// as JSON numbers, text as strings, NULL as null.
    pub async fn fetch_packed<'c, T, E>(self, executor: E) -> Result<Vec<T>, sqlx::Error>
    where
        T: DeserializeOwned,
        E: Executor<'c, Database = Any>,
    {
        let packed: Option<String> = self.fetch_one(executor).await?.try_get(0)?;
        match packed {
            None => Ok(Vec::new()),
            Some(text) => serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into())),
        }
    }
}
