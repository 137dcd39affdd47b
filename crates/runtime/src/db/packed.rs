//! Answers of many rows packed by the database into one: a JSON array
//! holding each row's columns as an array, decoded in one pass.
//!
//! Why: sqlx hands SQLite rows over from its worker thread one at a time,
//! each copied value by value and converted, columns and all, into the
//! `Any` driver's row — ~14 µs a row where SQLite itself spends ~2 (the
//! 691 live techniques brief: 1.5-2 ms in SQLite, 10-13 ms through the
//! pool; docs/BENCHMARKS.md, "Under load"). A packed answer is one row
//! whatever its size. PostgreSQL's rows arrive over its own protocol at
//! no such cost, and packing them there cost more than it saved (JSON
//! escaping of large texts: test aggregates 22 → 33 ms), so there the
//! same statement answers plain rows. A statement is written once, as a
//! macro of the text that opens and closes its select list, and
//! instantiated for both by [`packed!`](crate::packed).

use serde::de::DeserializeOwned;
use sqlx::{
    Executor, FromRow, Row,
    any::{Any, AnyRow},
};

use super::{Backend, Database, Stmt};

/// A statement with one text per backend.
#[derive(Clone, Copy, Debug)]
pub struct PerBackend {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Instantiates a statement macro `($open:literal, $close:literal)`, whose
/// select list is `$open columns… $close`, once per backend: on SQLite
/// the columns packed into one row (`CAST(json_group_array(json_array(…))
/// AS TEXT)`), on PostgreSQL as they are. The order of packed rows is not
/// the query's: a caller that needs one sorts what it decoded.
#[macro_export]
macro_rules! packed {
    ($statement:ident) => {
        $crate::db::PerBackend {
            sqlite: $statement!("CAST(json_group_array(json_array(", ")) AS TEXT)"),
            postgres: $statement!("", ""),
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
    /// Runs a statement of [`packed!`] and decodes each row as `T`, a
    /// tuple of its columns: from the packed array on SQLite (integers
    /// arrive as JSON numbers, text as strings, NULL as null), from the
    /// rows on PostgreSQL.
    pub async fn fetch_packed<'c, T, E>(self, executor: E) -> Result<Vec<T>, sqlx::Error>
    where
        T: DeserializeOwned + for<'r> FromRow<'r, AnyRow>,
        E: Executor<'c, Database = Any>,
    {
        match self.backend {
            Backend::Sqlite => self.fetch_one_packed(executor).await,
            Backend::Postgres => self
                .fetch_all(executor)
                .await?
                .iter()
                .map(T::from_row)
                .collect(),
        }
    }

    /// Runs a statement answering one row whose first column is a JSON
    /// array (NULL for none) on either backend, and decodes its elements:
    /// what [`Self::fetch_packed`] does with SQLite's packed rows, and what
    /// a statement packed on both backends reads.
    pub async fn fetch_one_packed<'c, T, E>(self, executor: E) -> Result<Vec<T>, sqlx::Error>
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
