//! The metrics service.

pub mod api;

use purple_api::metrics::v1::metrics_service_server::MetricsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The metrics schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[MigrationFile {
        version: 1,
        description: "json_each",
        sql: include_str!("../migrations/sqlite/0001_json_each.sql"),
    }],
    postgres: &[MigrationFile {
        version: 1,
        description: "json_each",
        sql: include_str!("../migrations/postgres/0001_json_each.sql"),
    }],
};

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<MetricsServiceServer<api::MetricsApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(MetricsServiceServer::new(api::MetricsApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
