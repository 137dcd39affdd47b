//! Purple's process assembly: which services a process hosts, their
//! databases and migrations, and the one gRPC server that serves them.
//! `main.rs` is the command line over this; the integration tests start an
//! [`Application`] in-process on port 0.

pub mod cli;

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use purple_runtime::{
    Database, ServiceContext, ServiceName, Settings, clients::Peers, server::GrpcServer,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The migrations of a service.
pub fn migrations(service: ServiceName) -> &'static purple_runtime::Migrations {
    match service {
        ServiceName::Ingest => &purple_ingest::MIGRATIONS,
        ServiceName::Campaigns => &purple_campaigns::MIGRATIONS,
        ServiceName::Scoring => &purple_scoring::MIGRATIONS,
        ServiceName::Metrics => &purple_metrics::MIGRATIONS,
    }
}

/// Connects and migrates the databases of `services`.
pub async fn migrate(
    settings: &Settings,
    services: &[ServiceName],
) -> anyhow::Result<Vec<Database>> {
    let mut databases = Vec::with_capacity(services.len());
    for &service in services {
        let db = Database::connect(service, &settings.storage)
            .await
            .with_context(|| format!("connecting the {} database", service.as_str()))?;
        db.migrate(migrations(service))
            .await
            .with_context(|| format!("migrating the {} database", service.as_str()))?;
        tracing::info!(
            service = service.as_str(),
            backend = db.backend().system(),
            "database ready"
        );
        databases.push(db);
    }
    Ok(databases)
}

/// A bound, migrated server, ready to run.
pub struct Application {
    server: GrpcServer,
    databases: Vec<Database>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Application {
    /// Binds the listener, migrates each hosted service's database and
    /// builds the services.
    pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Self> {
        let mut server = GrpcServer::bind(settings.listen, settings.limits.clone())
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local = server.local_addr()?;
        let peers = Peers::new(
            &settings.peers,
            local,
            settings.limits.max_message_bytes,
            settings.limits.peer_timeout(),
        )?;
        let databases = migrate(&settings, services).await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        for (service, db) in services.iter().zip(&databases) {
            let ctx = ServiceContext {
                db: db.clone(),
                peers: peers.clone(),
                settings: settings.clone(),
                shutdown: shutdown.clone(),
                tasks: tasks.clone(),
            };
            match service {
                ServiceName::Ingest => server.add_service(purple_ingest::build(ctx)?),
                ServiceName::Campaigns => server.add_service(purple_campaigns::build(ctx)?),
                ServiceName::Scoring => server.add_service(purple_scoring::build(ctx)?),
                ServiceName::Metrics => server.add_service(purple_metrics::build(ctx)?),
            }
        }
        Ok(Self {
            server,
            databases,
            shutdown,
            tasks,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `signal` resolves; then health goes NOT_SERVING, the
    /// server drains, background tasks stop and the databases close.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            server,
            databases,
            shutdown,
            tasks,
        } = self;
        let stop_tasks = shutdown.clone();
        let result = server
            .run(async move {
                signal.await;
                stop_tasks.cancel();
            })
            .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        for db in databases {
            db.close().await;
        }
        result
    }
}
