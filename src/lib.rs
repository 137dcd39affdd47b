//! Purple's process assembly: which services a process hosts, their
//! databases and migrations, and the one gRPC server that serves them.
//! `main.rs` is the command line over this; the integration tests start an
//! [`Application`] in-process on port 0.

pub mod cli;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use purple_runtime::{
    Database, ServiceContext, ServiceName, Settings,
    auth::{
        bootstrap,
        credentials::ServiceCredentials,
        gate::Gate,
        tokens::{Minter, Verifier},
    },
    clients::{PeerTls, Peers},
    instruments, scrape,
    server::{Exposure, GrpcServer},
    settings::Toggle,
    upload::UploadLimits,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The migrations of a service.
pub fn migrations(service: ServiceName) -> &'static purple_runtime::Migrations {
    match service {
        ServiceName::Ingest => &purple_ingest::MIGRATIONS,
        ServiceName::Campaigns => &purple_campaigns::MIGRATIONS,
        ServiceName::Scoring => &purple_scoring::MIGRATIONS,
        ServiceName::Metrics => &purple_metrics::MIGRATIONS,
    }
}

/// Connects the databases of `services` and applies their pending
/// migrations (`purple migrate`, and `serve` with --auto-migrate).
pub async fn migrate(
    settings: &Settings,
    services: &[ServiceName],
) -> anyhow::Result<Vec<Database>> {
    prepare(settings, services, true).await
}

/// Connects the databases of `services`, then migrates them or, with
/// `apply` off, checks that they carry every migration this binary needs.
/// Either way a database that a newer binary migrated is served as it is
/// (a rollback; migrations are expand-only, docs/adr/0007).
async fn prepare(
    settings: &Settings,
    services: &[ServiceName],
    apply: bool,
) -> anyhow::Result<Vec<Database>> {
    let mut databases = Vec::with_capacity(services.len());
    for &service in services {
        let name = service.as_str();
        let db = Database::connect(service, &settings.storage)
            .await
            .with_context(|| format!("connecting the {name} database"))?;
        if apply {
            db.migrate(migrations(service))
                .await
                .with_context(|| format!("migrating the {name} database"))?;
        }
        let version = db
            .schema_version(migrations(service))
            .await
            .with_context(|| format!("reading the {name} database's migrations"))?;
        let missing = version.missing();
        if !missing.is_empty() {
            anyhow::bail!(
                "the {name} database lacks migrations {missing:?} that this binary needs: \
                 run `purple migrate --service {name}` (with the migration role) first"
            );
        }
        let newer = version.newer();
        if !newer.is_empty() {
            tracing::warn!(
                service = name,
                newer = ?newer,
                "the database carries migrations newer than this binary (a rollback): serving it as it is"
            );
        }
        tracing::info!(
            service = name,
            backend = db.backend().system(),
            migration = version.applied.last().copied().unwrap_or(0),
            "database ready"
        );
        databases.push(db);
    }
    Ok(databases)
}

/// The peers a service calls (docs/design.md §1).
pub fn peers_of(service: ServiceName) -> &'static [ServiceName] {
    match service {
        ServiceName::Ingest => &[ServiceName::Scoring],
        ServiceName::Campaigns => &[
            ServiceName::Ingest,
            ServiceName::Scoring,
            ServiceName::Metrics,
        ],
        ServiceName::Scoring => &[ServiceName::Ingest, ServiceName::Campaigns],
        ServiceName::Metrics => &[],
    }
}

/// Refuses a process whose services call a peer it neither hosts nor
/// knows the address of (rather than dialling itself and answering
/// UNAVAILABLE at the first call).
fn check_peers(settings: &Settings, services: &[ServiceName]) -> anyhow::Result<()> {
    for service in services {
        for peer in peers_of(*service) {
            if !services.contains(peer) && settings.peers.addr(*peer).is_none() {
                anyhow::bail!(
                    "{} calls {}, which this process does not serve: set --{}-addr",
                    service.as_str(),
                    peer.as_str(),
                    peer.as_str()
                );
            }
        }
    }
    Ok(())
}

/// The server's TLS, when a certificate is configured.
fn server_tls(settings: &Settings) -> anyhow::Result<Option<ServerTlsConfig>> {
    let tls = &settings.tls;
    let (Some(cert), Some(key)) = (&tls.tls_cert_file, &tls.tls_key_file) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &tls.tls_client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(config))
}

/// Who this process is to its peers: a mounted service token, one minted
/// from the signing key, or none (with a warning when peers are remote).
fn service_credentials(
    settings: &Settings,
    minter: Option<Minter>,
    services: &[ServiceName],
) -> anyhow::Result<ServiceCredentials> {
    if let Some(path) = &settings.auth.service_token_file {
        return ServiceCredentials::from_file(path.clone())
            .with_context(|| format!("reading the service token {}", path.display()));
    }
    let names: Vec<&str> = services.iter().map(|s| s.as_str()).collect();
    Ok(match minter {
        Some(minter) => {
            ServiceCredentials::minted(Arc::new(minter), format!("service:{}", names.join("+")))
        }
        None => {
            tracing::warn!(
                "no --service-token-file and no signing key: calls to peers carry no credentials"
            );
            ServiceCredentials::none()
        }
    })
}

/// The most files one upload may hold.
const MAX_UPLOAD_FILES: usize = 100_000;

/// A bound, migrated server, ready to run.
pub struct Application {
    server: GrpcServer,
    databases: Vec<Database>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    metrics_addr: Option<SocketAddr>,
    _pool_watches: Vec<instruments::PoolWatch>,
}

impl Application {
    /// Binds the listener, migrates each hosted service's database and
    /// builds the services.
    pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Self> {
        check_peers(&settings, services)?;
        let embedded = bootstrap::ensure(&settings.auth, &settings.storage.data_dir)
            .context("preparing the data directory's signing key")?;
        let verifier = Verifier::new(&settings.auth, embedded.as_deref())?;
        let minter = Minter::new(&settings.auth, embedded.as_deref())?;
        let credentials = service_credentials(&settings, minter, services)?;
        let tls = server_tls(&settings)?;
        let tls_on = tls.is_some();
        if tls_on && settings.tls.tls_ca_file.is_none() {
            anyhow::bail!(
                "TLS is on: set --tls-ca-file to the CA that signed --tls-cert-file, so this process can call the services it hosts"
            );
        }
        let embedded_storage = services
            .iter()
            .all(|s| settings.storage.postgres_url(*s).is_none());
        let reflection = match settings.auth.reflection {
            Toggle::On => true,
            Toggle::Off => false,
            Toggle::Auto => embedded_storage,
        };
        let exposure = Exposure {
            gate: Gate::new(
                verifier,
                settings.limits.concurrency_limit,
                settings.limits.max_concurrent_imports,
            ),
            tls,
            reflection,
        };
        let mut server = GrpcServer::bind(settings.listen, settings.limits.clone(), exposure)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let local = server.local_addr()?;
        let peer_tls =
            PeerTls::from_settings(&settings.tls).context("reading the TLS CA bundle")?;
        let peers = Peers::new(
            &settings.peers,
            (local, tls_on),
            &peer_tls,
            credentials.clone(),
            settings.limits.max_message_bytes,
            settings.limits.peer_timeout(),
        )?;
        let databases = prepare(&settings, services, settings.storage.auto_migrate).await?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut pool_watches = Vec::with_capacity(databases.len());
        let metrics_addr = match settings.metrics_listen {
            Some(addr) => {
                let listener = scrape::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics endpoint {addr}"))?;
                let bound = listener.local_addr()?;
                tasks.spawn(scrape::serve(
                    listener,
                    scrape::snapshot(),
                    shutdown.clone(),
                ));
                Some(bound)
            }
            None => None,
        };
        tasks.spawn(credentials.refresh(shutdown.clone()));
        let limits = &settings.limits;
        let uploads = UploadLimits::new(
            limits.max_import_bytes,
            limits.max_upload_buffer_bytes,
            std::time::Duration::from_secs(limits.upload_idle_timeout_secs.max(1)),
            MAX_UPLOAD_FILES,
        );
        for (service, db) in services.iter().zip(&databases) {
            pool_watches.push(instruments::watch_pool(db));
            tasks.spawn(server.health().watch_database(
                service.grpc_name(),
                db.clone(),
                shutdown.clone(),
            ));
            let ctx = ServiceContext {
                db: db.clone(),
                peers: peers.clone(),
                settings: settings.clone(),
                shutdown: shutdown.clone(),
                tasks: tasks.clone(),
                uploads: uploads.clone(),
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
            metrics_addr,
            _pool_watches: pool_watches,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the Prometheus endpoint, when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until `signal` resolves; then health goes NOT_SERVING, the
    /// server drains, background tasks stop and the databases close.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<purple_runtime::server::Stopped> {
        let Self {
            server,
            databases,
            shutdown,
            tasks,
            metrics_addr: _,
            _pool_watches,
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
