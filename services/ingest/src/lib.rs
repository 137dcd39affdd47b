//! The ingest service: the threat catalogue (ATT&CK, D3FEND, detection
//! rules, test templates, NIST 800-53 controls, CVEs) imported from the
//! public formats security teams use, and served to the other services
//! through batch reads.

pub mod api;
pub mod domain;
pub mod error;
pub mod import;
pub mod parse;
pub mod store;

use purple_api::ingest::v1::ingest_service_server::IngestServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The ingest schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        MigrationFile {
            version: 1,
            description: "json functions",
            sql: include_str!("../migrations/sqlite/0001_json_functions.sql"),
        },
        MigrationFile {
            version: 2,
            description: "catalog",
            sql: include_str!("../migrations/0002_catalog.sql"),
        },
    ],
    postgres: &[
        MigrationFile {
            version: 1,
            description: "json functions",
            sql: include_str!("../migrations/postgres/0001_json_functions.sql"),
        },
        MigrationFile {
            version: 2,
            description: "catalog",
            sql: include_str!("../migrations/0002_catalog.sql"),
        },
    ],
};

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<IngestServiceServer<api::IngestApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(IngestServiceServer::new(api::IngestApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
