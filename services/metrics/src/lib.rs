//! The metrics service: the append-only event log (the audit trail of every
//! workflow state change, fed by campaigns' outbox) and the operational
//! metrics of docs/design.md section 5 — MTTD, MTTR, rejection rates and weekly
//! trends — each computed in one SQL statement over milestones kept on
//! write.

pub mod api;
pub mod coalesce;
pub mod convert;
pub mod domain;
pub mod error;
pub mod event_log;
pub mod store;

use purple_api::metrics::v1::metrics_service_server::MetricsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The metrics schema.
pub const MIGRATIONS: Migrations = Migrations(&[
    purple_runtime::db::JSON_FUNCTIONS,
    MigrationFile::per_backend(
        2,
        "events",
        include_str!("../migrations/0002_events.sqlite.sql"),
        include_str!("../migrations/0002_events.postgres.sql"),
    ),
    MigrationFile::same(
        3,
        "milestones",
        include_str!("../migrations/0003_milestones.sql"),
    ),
    MigrationFile::same(
        4,
        "test_marks",
        include_str!("../migrations/0004_test_marks.sql"),
    ),
    MigrationFile::same(
        5,
        "metric_indexes",
        include_str!("../migrations/0005_metric_indexes.sql"),
    ),
    MigrationFile::per_backend(
        6,
        "json_each estimate",
        include_str!("../migrations/0006_json_each_estimate.sqlite.sql"),
        include_str!("../migrations/0006_json_each_estimate.postgres.sql"),
    ),
    MigrationFile::per_backend(
        7,
        "mark_days",
        include_str!("../migrations/0007_mark_days.sqlite.sql"),
        include_str!("../migrations/0007_mark_days.postgres.sql"),
    ),
]);

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<MetricsServiceServer<api::MetricsApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(MetricsServiceServer::new(api::MetricsApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
