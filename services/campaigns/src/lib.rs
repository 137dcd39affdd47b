//! The campaigns service: purple tests and their red/blue workflow,
//! detection results, retest chains, campaigns (generated from threat
//! actors, cloned, recurring), remediations, notifications, worklogs and
//! reports, with a transactional outbox that feeds metrics and scoring.

pub mod api;
pub mod campaign;
pub mod clients;
pub mod convert;
pub mod domain;
pub mod error;
pub mod history;
pub mod integrations;
pub mod people;
pub mod relay;
pub mod report;
pub mod schedule;
pub mod store;
pub mod test_cache;
pub mod workflow;

use std::time::Duration;

use purple_api::campaigns::v1::campaigns_service_server::CampaignsServiceServer;
use purple_runtime::{MigrationFile, Migrations, ServiceContext};

/// The campaigns schema.
pub const MIGRATIONS: Migrations = Migrations(&[
    purple_runtime::db::JSON_FUNCTIONS,
    MigrationFile::per_backend(
        2,
        "campaigns",
        include_str!("../migrations/0002_campaigns.sqlite.sql"),
        include_str!("../migrations/0002_campaigns.postgres.sql"),
    ),
    MigrationFile::same(
        3,
        "technique tallies",
        include_str!("../migrations/0003_tallies.sql"),
    ),
    MigrationFile::same(
        4,
        "last execution",
        include_str!("../migrations/0004_last_execution.sql"),
    ),
    MigrationFile::same(
        5,
        "dead letters",
        include_str!("../migrations/0005_dead_letters.sql"),
    ),
    MigrationFile::same(6, "history", include_str!("../migrations/0006_history.sql")),
    MigrationFile::same(
        7,
        "detection result sources",
        include_str!("../migrations/0007_result_sources.sql"),
    ),
    MigrationFile::per_backend(
        8,
        "integrations",
        include_str!("../migrations/0008_integrations.sqlite.sql"),
        include_str!("../migrations/0008_integrations.postgres.sql"),
    ),
    MigrationFile::same(
        9,
        "test versions",
        include_str!("../migrations/0009_test_versions.sql"),
    ),
    MigrationFile::per_backend(
        10,
        "json_each estimate",
        include_str!("../migrations/0010_json_each_estimate.sqlite.sql"),
        include_str!("../migrations/0010_json_each_estimate.postgres.sql"),
    ),
    MigrationFile::per_backend(
        11,
        "test changes",
        include_str!("../migrations/0011_test_changes.sqlite.sql"),
        include_str!("../migrations/0011_test_changes.postgres.sql"),
    ),
    MigrationFile::per_backend(
        12,
        "chain history",
        include_str!("../migrations/0012_chain_history.sqlite.sql"),
        include_str!("../migrations/0012_chain_history.postgres.sql"),
    ),
    MigrationFile::per_backend(
        13,
        "chain history lock",
        include_str!("../migrations/0013_chain_history_lock.sqlite.sql"),
        include_str!("../migrations/0013_chain_history_lock.postgres.sql"),
    ),
    MigrationFile::per_backend(
        14,
        "tally increments",
        include_str!("../migrations/0014_tally_increments.sqlite.sql"),
        include_str!("../migrations/0014_tally_increments.postgres.sql"),
    ),
    MigrationFile::per_backend(
        15,
        "campaign progress index",
        include_str!("../migrations/0015_campaign_progress_index.sqlite.sql"),
        include_str!("../migrations/0015_campaign_progress_index.postgres.sql"),
    ),
]);

/// Builds the gRPC service on a migrated database and starts its outbox
/// relay and scheduler, which stop with the process.
pub fn build(ctx: ServiceContext) -> anyhow::Result<CampaignsServiceServer<api::CampaignsApi>> {
    let store = store::CampaignStore::new(ctx.db.clone());
    let integrations = integrations::Integrations::from_settings(&ctx.settings.integrations)?;
    let peers = clients::PeerClients::new(&ctx.peers);
    let directory = people::Directory::new(store.clone());
    let campaigns = campaign::Campaigns {
        store: store.clone(),
        peers: peers.clone(),
        directory: directory.clone(),
    };
    let scheduler = schedule::Scheduler {
        store: store.clone(),
        directory: directory.clone(),
    };
    let api = api::CampaignsApi {
        workflow: workflow::Workflow {
            store: store.clone(),
            peers: peers.clone(),
            directory: directory.clone(),
            stale_after_days: ctx.settings.domain.stale_test_days,
            integrations: integrations.clone(),
            tests: test_cache::TestCache::default(),
        },
        reports: report::Reports {
            store: store.clone(),
            peers: peers.clone(),
            campaigns: campaigns.clone(),
        },
        people: people::People {
            store: store.clone(),
            directory,
            integrations: integrations.clone(),
        },
        scheduler: scheduler.clone(),
        campaigns,
        relay: relay::Relay {
            store: store.clone(),
            peers: peers.clone(),
        },
        history: history::History {
            store: store.clone(),
            peers: peers.clone(),
            uploads: ctx.uploads.clone(),
        },
    };
    let interval = Duration::from_millis(ctx.settings.domain.relay_interval_ms.max(10));
    if integrations.jira.is_some() || integrations.tempo.is_some() {
        ctx.tasks.spawn(integrations::run(
            integrations::Deliverer {
                store: store.clone(),
                integrations,
                interval,
            },
            ctx.shutdown.clone(),
        ));
    }
    ctx.tasks.spawn(relay::run_relay(
        relay::Relay { store, peers },
        interval,
        ctx.shutdown.clone(),
    ));
    ctx.tasks.spawn(relay::run_scheduler(
        scheduler,
        interval,
        ctx.shutdown.clone(),
    ));
    let max = ctx.settings.limits.max_message_bytes;
    Ok(CampaignsServiceServer::new(api)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}
