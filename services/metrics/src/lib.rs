//! The metrics service: the append-only event log (the audit trail of every
//! workflow state change, fed by campaigns' outbox) and the operational
//! metrics of DESIGN section 5 — MTTD, MTTR, rejection rates and weekly
//! trends — each computed in one SQL statement.

pub mod api;
pub mod domain;
pub mod error;
pub mod store;

use purple_api::metrics::v1::metrics_service_server::MetricsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The metrics schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        MigrationFile {
            version: 1,
            description: "json functions",
            sql: include_str!("../migrations/sqlite/0001_json_functions.sql"),
        },
        MigrationFile {
            version: 2,
            description: "events",
            sql: include_str!("../migrations/sqlite/0002_events.sql"),
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
            description: "events",
            sql: include_str!("../migrations/postgres/0002_events.sql"),
        },
    ],
};

/// Builds the gRPC service on a migrated database.
pub fn build(ctx: ServiceContext) -> anyhow::Result<MetricsServiceServer<api::MetricsApi>> {
    let max = ctx.settings.limits.max_message_bytes;
    Ok(MetricsServiceServer::new(api::MetricsApi::new(ctx))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
