//! The scoring service: docs/design.md §4 computed from batch inputs —
//! technique, tactic, threat-actor and organization scores, heatmaps and
//! ATT&CK Navigator layers, snapshots and their comparison — with a score
//! cache for "now" kept fresh by invalidations.

pub mod api;
pub mod clients;
pub mod convert;
pub mod coverage;
pub mod domain;
pub mod engine;
pub mod error;
pub mod layer;
pub mod store;

use purple_api::scoring::v1::scoring_service_server::ScoringServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The scoring schema.
pub const MIGRATIONS: Migrations = Migrations(&[
    purple_runtime::db::JSON_FUNCTIONS,
    MigrationFile::same(2, "scoring", include_str!("../migrations/0002_scoring.sql")),
]);

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<ScoringServiceServer<api::ScoringApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(ScoringServiceServer::new(api::ScoringApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
