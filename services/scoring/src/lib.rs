//! The scoring service: docs/design.md §4 computed from batch inputs —
//! technique, tactic, threat-actor and organization scores, heatmaps and
//! ATT&CK Navigator layers, snapshots and their comparison — with a score
//! cache for "now" in each replica's memory, kept fresh by invalidations.

pub mod api;
pub mod cache;
pub mod clients;
pub mod convert;
pub mod coverage;
pub mod domain;
pub mod engine;
pub mod error;
pub mod feed;
pub mod layer;
pub mod plan;
pub mod store;

use purple_api::scoring::v1::scoring_service_server::ScoringServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The scoring schema.
pub const MIGRATIONS: Migrations = Migrations(&[
    purple_runtime::db::JSON_FUNCTIONS,
    MigrationFile::same(2, "scoring", include_str!("../migrations/0002_scoring.sql")),
    MigrationFile::same(
        3,
        "cache_generations",
        include_str!("../migrations/0003_cache_generations.sql"),
    ),
    MigrationFile::same(
        4,
        "catalogue_generation",
        include_str!("../migrations/0004_catalogue_generation.sql"),
    ),
    MigrationFile::same(5, "feed", include_str!("../migrations/0005_feed.sql")),
    MigrationFile::same(
        6,
        "test side generations",
        include_str!("../migrations/0006_test_side_generations.sql"),
    ),
]);

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<ScoringServiceServer<api::ScoringApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    let api = api::ScoringApi::new(ctx.clone());
    // Invalidations another replica received reach this one, and changes
    // reach the feed, within one relay interval.
    ctx.tasks.spawn(feed::run(
        api.feed(),
        std::time::Duration::from_millis(ctx.settings.domain.relay_interval_ms.max(50)),
        ctx.shutdown.clone(),
    ));
    Ok(ScoringServiceServer::new(api)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
