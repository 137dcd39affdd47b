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

    /// Address of the Prometheus scrape endpoint (`GET /metrics`, plain
    /// HTTP); unset: no endpoint (metrics still go over OTLP when an
    /// endpoint is configured).
    #[arg(long, env = "PURPLE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub storage: StorageSettings,

    #[command(flatten)]
    pub peers: PeerSettings,

    #[command(flatten)]
    pub limits: LimitSettings,

    #[command(flatten)]
    pub domain: DomainSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub tls: TlsSettings,

    #[command(flatten)]
    pub integrations: IntegrationSettings,
}

/// The work-tracking integrations of campaigns (docs/design.md §3, "Work
/// tracking"): off unless a URL is set. Credentials never come from flags:
/// from `PURPLE_JIRA_EMAIL` + `PURPLE_JIRA_API_TOKEN` (Jira Cloud),
/// `PURPLE_JIRA_PAT` (Data Center) and `PURPLE_TEMPO_TOKEN`, or from the
/// credentials file.
#[derive(Args, Clone, Debug, Default)]
pub struct IntegrationSettings {
    /// Jira base URL (https://example.atlassian.net); unset: no Jira.
    #[arg(long, env = "PURPLE_JIRA_URL")]
    pub jira_url: Option<String>,

    /// Jira REST API version: 3 (Cloud) or 2 (Data Center).
    #[arg(long, env = "PURPLE_JIRA_API_VERSION", default_value_t = 3)]
    pub jira_api_version: u8,

    /// Key of the Jira project remediations are created in.
    #[arg(long, env = "PURPLE_JIRA_PROJECT", default_value = "")]
    pub jira_project: String,

    /// Issue type of the created issues.
    #[arg(long, env = "PURPLE_JIRA_ISSUE_TYPE", default_value = "Task")]
    pub jira_issue_type: String,

    /// Id of the Jira transition applied when a remediation starts (empty:
    /// none).
    #[arg(long, env = "PURPLE_JIRA_TRANSITION_START", default_value = "")]
    pub jira_transition_start: String,

    /// Id of the Jira transition applied when a remediation completes
    /// (empty: a comment only).
    #[arg(long, env = "PURPLE_JIRA_TRANSITION_DONE", default_value = "")]
    pub jira_transition_done: String,

    /// How often the Jira status of open issues is read back, in seconds
    /// (one search per 100 issues); 0: never.
    #[arg(long, env = "PURPLE_JIRA_STATUS_SYNC_SECS", default_value_t = 0)]
    pub jira_status_sync_secs: u64,

    /// Tempo API base URL (https://api.tempo.io); unset: no Tempo.
    #[arg(long, env = "PURPLE_TEMPO_URL")]
    pub tempo_url: Option<String>,

    /// Atlassian account id Tempo worklogs are logged under.
    #[arg(long, env = "PURPLE_TEMPO_ACCOUNT_ID", default_value = "")]
    pub tempo_account_id: String,

    /// TOML file mapping Purple user ids to Atlassian account ids
    /// (`"oidc|rex" = "557058:…"`): whose worklog a Tempo worklog is; users
    /// not in it log under --tempo-account-id.
    #[arg(long, env = "PURPLE_TEMPO_ACCOUNTS_FILE")]
    pub tempo_accounts_file: Option<PathBuf>,

    /// Jira issue id a worklog goes to when its test has no remediation
    /// with a Jira issue (empty: such a worklog is set aside).
    #[arg(long, env = "PURPLE_TEMPO_DEFAULT_ISSUE_ID", default_value = "")]
    pub tempo_default_issue_id: String,

    /// TOML file of credentials (`jira_email`, `jira_api_token`,
    /// `jira_pat`, `tempo_token`), read instead of the environment.
    #[arg(long, env = "PURPLE_INTEGRATION_CREDENTIALS_FILE")]
    pub integration_credentials_file: Option<PathBuf>,

    /// Deadline of each call to Jira or Tempo, in seconds.
    #[arg(long, env = "PURPLE_INTEGRATION_TIMEOUT_SECS", default_value_t = 10)]
    pub integration_timeout_secs: u64,
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

    /// Connections per service pool (deploy/README.md: replicas × pool
    /// must stay under PostgreSQL's max_connections).
    #[arg(long, env = "PURPLE_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// How long a request waits for a free connection (or for the database
    /// to accept one) before it fails UNAVAILABLE, in seconds.
    #[arg(long, env = "PURPLE_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    pub db_acquire_timeout_secs: u64,

    /// Apply pending migrations at start-up. Off (Kubernetes), `serve`
    /// checks instead that the database has every migration it needs and
    /// refuses to start otherwise; `purple migrate` applies them.
    #[arg(long, env = "PURPLE_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_migrate: bool,
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
    /// Resolve each peer's host name every this many seconds and spread
    /// calls over every address it returns (a Kubernetes headless
    /// Service: one address per ready pod); 0: one connection to the name
    /// as given (docs/adr/0008).
    #[arg(long, env = "PURPLE_PEER_DNS_REFRESH_SECS", default_value_t = 0)]
    pub peer_dns_refresh_secs: u64,
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

    /// Requests handled at once by the whole server; more are refused with
    /// RESOURCE_EXHAUSTED (health checks are never limited).
    #[arg(long, env = "PURPLE_CONCURRENCY_LIMIT", default_value_t = 256)]
    pub concurrency_limit: usize,

    /// Concurrent requests (HTTP/2 streams) on one client connection.
    #[arg(long, env = "PURPLE_MAX_CONCURRENT_STREAMS", default_value_t = 64)]
    pub max_concurrent_streams: u32,

    /// Imports (uploads) in progress at once, whole server.
    #[arg(long, env = "PURPLE_MAX_CONCURRENT_IMPORTS", default_value_t = 4)]
    pub max_concurrent_imports: usize,

    /// Bytes that all uploads in progress may hold in memory together.
    #[arg(long, env = "PURPLE_MAX_UPLOAD_BUFFER_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_upload_buffer_bytes: usize,

    /// An upload that sends nothing for this many seconds is abandoned.
    #[arg(long, env = "PURPLE_UPLOAD_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub upload_idle_timeout_secs: u64,

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

    /// How often the campaigns outbox relay and scheduler wake, and scoring
    /// replicas check for invalidations, in milliseconds.
    #[arg(long, env = "PURPLE_RELAY_INTERVAL_MS", default_value_t = 500)]
    pub relay_interval_ms: u64,
}

/// Who may call (SECURITY.md): the keys that verify bearer tokens, the
/// claims they carry, the token this process presents to its peers, and
/// whether reflection is served.
#[derive(Args, Clone, Debug)]
pub struct AuthSettings {
    /// File holding a shared HS256 secret (at least 32 bytes) that signs and
    /// verifies tokens. With no key setting at all, the data directory's
    /// own secret is used (created on first start).
    #[arg(long, env = "PURPLE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// PEM public key (RSA: RS256/384/512, EC: ES256/384) that verifies
    /// tokens issued elsewhere.
    #[arg(long, env = "PURPLE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWKS file (an OIDC provider's keys, chosen by `kid`) that verifies
    /// tokens.
    #[arg(long, env = "PURPLE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// PEM private key (RSA or EC) that signs the tokens this deployment
    /// mints (`purple token mint`, service identities).
    #[arg(long, env = "PURPLE_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// The `iss` every token must carry.
    #[arg(long, env = "PURPLE_JWT_ISSUER", default_value = "purple")]
    pub jwt_issuer: String,

    /// The `aud` every token must carry.
    #[arg(long, env = "PURPLE_JWT_AUDIENCE", default_value = "purple")]
    pub jwt_audience: String,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "PURPLE_JWT_LEEWAY_SECS", default_value_t = 60)]
    pub jwt_leeway_secs: u64,

    /// The claim naming the user (a dotted path for nested claims).
    #[arg(long, env = "PURPLE_JWT_SUBJECT_CLAIM", default_value = "sub")]
    pub jwt_subject_claim: String,

    /// The claim holding the role or roles (a string, space-separated
    /// string or array; a dotted path such as `realm_access.roles`).
    #[arg(long, env = "PURPLE_JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,

    /// The claim holding a display name.
    #[arg(long, env = "PURPLE_JWT_NAME_CLAIM", default_value = "name")]
    pub jwt_name_claim: String,

    /// A prefix role values carry (e.g. `purple-` for `purple-admin`).
    #[arg(long, env = "PURPLE_JWT_ROLE_PREFIX", default_value = "")]
    pub jwt_role_prefix: String,

    /// File holding the token this process presents to its peers (a
    /// `service` role token, mounted from a Secret). Without it, a process
    /// that can sign mints its own.
    #[arg(long, env = "PURPLE_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,

    /// Serve gRPC reflection: `auto` serves it on the embedded default
    /// (SQLite) only.
    #[arg(long, env = "PURPLE_REFLECTION", value_enum, default_value = "auto")]
    pub reflection: Toggle,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_private_key_file: None,
            jwt_issuer: "purple".into(),
            jwt_audience: "purple".into(),
            jwt_leeway_secs: 60,
            jwt_subject_claim: "sub".into(),
            jwt_role_claim: "role".into(),
            jwt_name_claim: "name".into(),
            jwt_role_prefix: String::new(),
            service_token_file: None,
            reflection: Toggle::Auto,
        }
    }
}

impl AuthSettings {
    /// Whether a verification key is configured (otherwise the data
    /// directory's secret is).
    pub fn has_verification_key(&self) -> bool {
        self.jwt_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_file.is_some()
    }
}

/// On, off, or decided by the deployment's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// On for the embedded default, off otherwise.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Transport security: the server's certificate, client certificates
/// (mutual TLS), and the CA that signs the peers' certificates.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsSettings {
    /// PEM certificate chain this server presents (TLS on when set, with
    /// --tls-key-file); also the client certificate for peers that
    /// require mutual TLS.
    #[arg(long, env = "PURPLE_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "PURPLE_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA bundle: clients must present a certificate it signed (mutual
    /// TLS).
    #[arg(long, env = "PURPLE_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// PEM CA bundle that signs the peers' server certificates (for
    /// https:// peer addresses).
    #[arg(long, env = "PURPLE_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
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
