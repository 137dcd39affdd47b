//! The ingest service.

pub mod api;

use purple_api::ingest::v1::ingest_service_server::IngestServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The ingest schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[MigrationFile {
        version: 1,
        description: "json functions",
        sql: include_str!("../migrations/sqlite/0001_json_functions.sql"),
    }],
    postgres: &[MigrationFile {
        version: 1,
        description: "json functions",
        sql: include_str!("../migrations/postgres/0001_json_functions.sql"),
    }],
};

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<IngestServiceServer<api::IngestApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(IngestServiceServer::new(api::IngestApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
