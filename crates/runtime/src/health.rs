//! What `grpc.health.v1.Health` answers, decided in one place: a hosted
//! service is SERVING while its database answers and the process is not
//! draining; the overall status (`""`, what readiness probes ask) is
//! SERVING when every hosted service is; [`LIVENESS`] stays SERVING until
//! the process exits, so a database outage makes pods unready — traffic
//! goes elsewhere — without getting them restarted.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::db::Database;

/// The health entry liveness probes ask for.
pub const LIVENESS: &str = "liveness";

/// How often a service's database is probed, and how long a probe may
/// take before it counts as down.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    open: bool,
    draining: bool,
    database_up: BTreeMap<&'static str, bool>,
}

/// The process's health, shared by the server (open, drain) and the
/// database watchers.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    state: Arc<Mutex<State>>,
}

impl Health {
    /// Health over a reporter; everything NOT_SERVING until [`Health::open`].
    pub fn new(reporter: HealthReporter) -> Self {
        Self {
            reporter,
            state: Arc::default(),
        }
    }

    /// Registers a hosted service, its database taken as up.
    pub async fn host(&self, service: &'static str) {
        let mut state = self.state.lock().await;
        state.database_up.insert(service, true);
        self.publish(&state).await;
    }

    /// The server accepts requests.
    pub async fn open(&self) {
        let mut state = self.state.lock().await;
        state.open = true;
        self.publish(&state).await;
    }

    /// Shutdown began: every service NOT_SERVING, whatever its database.
    pub async fn drain(&self) {
        let mut state = self.state.lock().await;
        state.draining = true;
        self.publish(&state).await;
    }

    /// A database probe's result; logs the transitions.
    pub async fn database(&self, service: &'static str, up: bool) {
        let mut state = self.state.lock().await;
        let before = state.database_up.insert(service, up);
        // Log transitions only: not the first probe of a database that is up.
        if before.unwrap_or(true) != up {
            if up {
                tracing::info!(service, "database reachable again: SERVING");
            } else {
                tracing::error!(service, "database unreachable: NOT_SERVING");
            }
        }
        self.publish(&state).await;
    }

    async fn publish(&self, state: &State) {
        let serving = state.open && !state.draining;
        let status = |up: bool| {
            if serving && up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        for (service, up) in &state.database_up {
            self.reporter
                .set_service_status(*service, status(*up))
                .await;
        }
        let all_up = state.database_up.values().all(|up| *up);
        self.reporter.set_service_status("", status(all_up)).await;
        let alive = if state.open {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(LIVENESS, alive).await;
    }

    /// Probes `db` until `shutdown`, reporting each result for `service`.
    /// The probes run outside any span: an idle process exports no traces.
    pub async fn watch_database(
        self,
        service: &'static str,
        db: Database,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let up = db.ping(PROBE_TIMEOUT).await;
            self.database(service, up).await;
        }
    }
}
