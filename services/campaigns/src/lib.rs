//! The campaigns service: purple tests and their red/blue workflow,
//! detection results, retest chains, campaigns (generated from threat
//! actors, cloned, recurring), remediations, notifications, worklogs and
//! reports, with a transactional outbox that feeds metrics and scoring.

pub mod api;
pub mod convert;
pub mod domain;
pub mod error;
pub mod planner;
pub mod relay;
pub mod report;
pub mod store;
pub mod workflow;

use std::time::Duration;

use purple_api::campaigns::v1::campaigns_service_server::CampaignsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The campaigns schema, per backend.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        MigrationFile {
            version: 1,
            description: "json functions",
            sql: include_str!("../migrations/sqlite/0001_json_functions.sql"),
        },
        MigrationFile {
            version: 2,
            description: "campaigns",
            sql: include_str!("../migrations/sqlite/0002_campaigns.sql"),
        },
        MigrationFile {
            version: 3,
            description: "technique tallies",
            sql: include_str!("../migrations/0003_tallies.sql"),
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
            description: "campaigns",
            sql: include_str!("../migrations/postgres/0002_campaigns.sql"),
        },
        MigrationFile {
            version: 3,
            description: "technique tallies",
            sql: include_str!("../migrations/0003_tallies.sql"),
        },
    ],
};

/// Builds the gRPC service on a migrated database and starts its outbox
/// relay and scheduler, which stop with the process.
pub fn build(ctx: ServiceContext) -> anyhow::Result<CampaignsServiceServer<api::CampaignsApi>> {
    let workflow = workflow::Workflow {
        store: store::CampaignStore::new(ctx.db.clone()),
        peers: ctx.peers.clone(),
    };
    let interval = Duration::from_millis(ctx.settings.domain.relay_interval_ms.max(10));
    ctx.tasks.spawn(relay::run_relay(
        workflow.clone(),
        interval,
        ctx.shutdown.clone(),
    ));
    ctx.tasks.spawn(relay::run_scheduler(
        workflow.clone(),
        interval,
        ctx.shutdown.clone(),
    ));
    let max = ctx.settings.limits.max_message_bytes;
    Ok(
        CampaignsServiceServer::new(api::CampaignsApi::new(&ctx, workflow))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    )
}
