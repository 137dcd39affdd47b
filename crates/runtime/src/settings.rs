//! Settings from flags and `PURPLE_*` environment variables, with defaults
//! that make the embedded mode (SQLite under `./purple-data`, all services on
//! 127.0.0.1:50051) need no configuration at all.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum ServiceName {
    /// The threat catalogue.
    Ingest,
    /// Tests, campaigns and their workflow.
    Campaigns,
    /// Coverage scores.
    Scoring,
    /// The event log and operational metrics.
    Metrics,
}

impl ServiceName {
    /// Every service, in dependency order.
    pub const ALL: [ServiceName; 4] = [
        ServiceName::Ingest,
        ServiceName::Campaigns,
        ServiceName::Scoring,
        ServiceName::Metrics,
    ];

    /// The lower-case name, used for database files, schemas and spans.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Ingest => "ingest",
            ServiceName::Campaigns => "campaigns",
            ServiceName::Scoring => "scoring",
            ServiceName::Metrics => "metrics",
        }
    }

    /// The fully qualified gRPC service name.
    pub fn grpc_name(self) -> &'static str {
        match self {
            ServiceName::Ingest => "purple.ingest.v1.IngestService",
            ServiceName::Campaigns => "purple.campaigns.v1.CampaignsService",
            ServiceName::Scoring => "purple.scoring.v1.ScoringService",
            ServiceName::Metrics => "purple.metrics.v1.MetricsService",
        }
    }
}

/// Everything `purple serve` and `purple migrate` need.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address to serve gRPC on.
    #[arg(long, env = "PURPLE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub storage: StorageSettings,

    #[command(flatten)]
    pub peers: PeerSettings,

    #[command(flatten)]
    pub limits: LimitSettings,

    #[command(flatten)]
    pub domain: DomainSettings,
}

/// Where each service keeps its tables.
#[derive(Args, Clone, Debug)]
pub struct StorageSettings {
    /// Directory of the embedded SQLite files (one per service), used when no
    /// database URL is set.
    #[arg(long, env = "PURPLE_DATA_DIR", default_value = "./purple-data")]
    pub data_dir: PathBuf,

    /// PostgreSQL URL shared by every service, each in its own schema.
    #[arg(long, env = "PURPLE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// PostgreSQL URL of ingest alone (its own database or role).
    #[arg(long, env = "PURPLE_INGEST_DATABASE_URL")]
    pub ingest_database_url: Option<String>,

    /// PostgreSQL URL of campaigns alone.
    #[arg(long, env = "PURPLE_CAMPAIGNS_DATABASE_URL")]
    pub campaigns_database_url: Option<String>,

    /// PostgreSQL URL of scoring alone.
    #[arg(long, env = "PURPLE_SCORING_DATABASE_URL")]
    pub scoring_database_url: Option<String>,

    /// PostgreSQL URL of metrics alone.
    #[arg(long, env = "PURPLE_METRICS_DATABASE_URL")]
    pub metrics_database_url: Option<String>,

    /// Prefix of the PostgreSQL schema names (schema = prefix + service).
    #[arg(long, env = "PURPLE_SCHEMA_PREFIX", default_value = "purple_")]
    pub schema_prefix: String,

    /// Connections per service pool.
    #[arg(long, env = "PURPLE_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub max_connections: u32,
}

impl StorageSettings {
    /// The PostgreSQL URL of one service, if it has one.
    pub fn postgres_url(&self, service: ServiceName) -> Option<&str> {
        let own = match service {
            ServiceName::Ingest => &self.ingest_database_url,
            ServiceName::Campaigns => &self.campaigns_database_url,
            ServiceName::Scoring => &self.scoring_database_url,
            ServiceName::Metrics => &self.metrics_database_url,
        };
        own.as_deref().or(self.database_url.as_deref())
    }
}

/// Where the other services are. Unset means "this process": in the
/// all-in-one mode every service calls the others through its own port, so
/// the calls are real gRPC either way.
#[derive(Args, Clone, Debug, Default)]
pub struct PeerSettings {
    /// Address of ingest, e.g. http://ingest:50051.
    #[arg(long, env = "PURPLE_INGEST_ADDR")]
    pub ingest_addr: Option<String>,
    /// Address of campaigns.
    #[arg(long, env = "PURPLE_CAMPAIGNS_ADDR")]
    pub campaigns_addr: Option<String>,
    /// Address of scoring.
    #[arg(long, env = "PURPLE_SCORING_ADDR")]
    pub scoring_addr: Option<String>,
    /// Address of metrics.
    #[arg(long, env = "PURPLE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl PeerSettings {
    /// The configured address of a peer.
    pub fn addr(&self, service: ServiceName) -> Option<&str> {
        match service {
            ServiceName::Ingest => self.ingest_addr.as_deref(),
            ServiceName::Campaigns => self.campaigns_addr.as_deref(),
            ServiceName::Scoring => self.scoring_addr.as_deref(),
            ServiceName::Metrics => self.metrics_addr.as_deref(),
        }
    }
}

/// Protection against slow, huge or too many requests.
#[derive(Args, Clone, Debug)]
pub struct LimitSettings {
    /// Deadline of one request, in seconds (streaming imports included).
    #[arg(long, env = "PURPLE_REQUEST_TIMEOUT_SECS", default_value_t = 120)]
    pub request_timeout_secs: u64,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "PURPLE_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Largest import upload (all files of one import, compressed and
    /// decompressed alike), in bytes.
    #[arg(long, env = "PURPLE_MAX_IMPORT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_import_bytes: usize,

    /// Requests handled at once by the whole server; more wait.
    #[arg(long, env = "PURPLE_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,

    /// Close each client connection gracefully after this many seconds (0:
    /// never), so long-lived HTTP/2 connections re-spread over the pods
    /// behind a Kubernetes Service.
    #[arg(long, env = "PURPLE_MAX_CONNECTION_AGE_SECS", default_value_t = 300)]
    pub max_connection_age_secs: u64,

    /// How long shutdown waits for in-flight requests, in seconds.
    #[arg(long, env = "PURPLE_SHUTDOWN_GRACE_SECS", default_value_t = 4)]
    pub shutdown_grace_secs: u64,

    /// Deadline of one call to a peer service, in seconds: a peer that
    /// hangs fails the call instead of holding its caller.
    #[arg(long, env = "PURPLE_PEER_TIMEOUT_SECS", default_value_t = 15)]
    pub peer_timeout_secs: u64,
}

impl LimitSettings {
    /// The request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The deadline of one peer call.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_secs(self.peer_timeout_secs.max(1))
    }
}

/// Knobs of the product rules.
#[derive(Args, Clone, Debug)]
pub struct DomainSettings {
    /// K: a technique used by at least this many threat actors is critical.
    #[arg(long, env = "PURPLE_CRITICAL_ACTOR_THRESHOLD", default_value_t = 10)]
    pub critical_actor_threshold: u32,

    /// How long a score computed for "now" is served from the cache, in
    /// seconds (recency drifts with time; invalidations drop entries
    /// sooner).
    #[arg(long, env = "PURPLE_SCORE_CACHE_TTL_SECS", default_value_t = 300)]
    pub score_cache_ttl_secs: u64,

    /// A validated test older than this many days is stale.
    #[arg(long, env = "PURPLE_STALE_TEST_DAYS", default_value_t = 90)]
    pub stale_test_days: u32,

    /// How often the campaigns outbox relay and scheduler wake, in
    /// milliseconds.
    #[arg(long, env = "PURPLE_RELAY_INTERVAL_MS", default_value_t = 500)]
    pub relay_interval_ms: u64,
}

impl Settings {
    /// The defaults, as if no flag or variable were given; for tests and
    /// embedding.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        // An empty command line yields the documented defaults (and any
        // PURPLE_* variables set in the environment); tests overwrite the
        // fields they depend on.
        <Wrapper as clap::Parser>::parse_from(["purple"]).settings
    }
}
