//! The ingest service: the threat catalogue (ATT&CK, D3FEND, detection
//! rules, test templates, NIST 800-53 controls, CVEs) imported from the
//! public formats security teams use, and served to the other services
//! through batch reads.

pub mod api;
pub mod catalog;
pub mod convert;
pub mod domain;
pub mod error;
pub mod import;
pub mod intel;
pub mod parse;
pub mod store;

use purple_api::ingest::v1::ingest_service_server::IngestServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The ingest schema.
pub const MIGRATIONS: Migrations = Migrations(&[
    purple_runtime::db::JSON_FUNCTIONS,
    MigrationFile::same(2, "catalog", include_str!("../migrations/0002_catalog.sql")),
    MigrationFile::same(
        3,
        "rule keys",
        include_str!("../migrations/0003_rule_keys.sql"),
    ),
    MigrationFile::same(4, "intel", include_str!("../migrations/0004_intel.sql")),
    MigrationFile::same(
        5,
        "technique inputs",
        include_str!("../migrations/0005_technique_inputs.sql"),
    ),
]);

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<IngestServiceServer<api::IngestApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(IngestServiceServer::new(api::IngestApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
