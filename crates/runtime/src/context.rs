//! What the server assembly hands each service it builds.

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Database, clients::Peers, settings::Settings, upload::UploadLimits};

/// A service's database, its peers, the settings, and the shutdown token
/// that its background tasks (outbox relay, scheduler) watch.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    /// The service's own database, migrated.
    pub db: Database,
    /// Clients of the other services.
    pub peers: Peers,
    /// Every setting.
    pub settings: Settings,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// Background tasks to await before the process exits.
    pub tasks: TaskTracker,
    /// The process's upload limits: one buffer shared by every upload in
    /// progress, whichever service receives it.
    pub uploads: UploadLimits,
}
