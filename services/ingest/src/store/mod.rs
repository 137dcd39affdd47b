//! All SQL of the ingest service: [`write`] syncs an import into the
//! catalogue with a fixed number of set-based statements, [`read`] serves
//! the batch reads, one statement per chunk.

pub mod intel;
pub mod read;
pub mod write;

use purple_runtime::Database;

/// The catalogue's SQL.
#[derive(Clone, Debug)]
pub struct CatalogStore {
    db: Database,
}

impl CatalogStore {
    /// The store over the ingest database.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for transactions.
    pub fn db(&self) -> &Database {
        &self.db
    }
}
