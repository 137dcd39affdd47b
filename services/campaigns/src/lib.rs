//! The campaigns service.

pub mod api;

use purple_api::campaigns::v1::campaigns_service_server::CampaignsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The campaigns schema, per backend.
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
pub fn build(ctx: ServiceContext) -> anyhow::Result<CampaignsServiceServer<api::CampaignsApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(CampaignsServiceServer::new(api::CampaignsApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
