//! What every Purple service runs on, so that a service crate holds only its
//! own API, rules and SQL: settings, storage (one code path for SQLite and
//! PostgreSQL, every statement a span), telemetry (OpenTelemetry with W3C
//! trace context across gRPC hops), typed peer clients, time conversions and
//! the gRPC server assembly with health, reflection, limits and graceful
//! shutdown.

pub mod auth;
pub mod clients;
pub mod context;
pub mod db;
pub mod discovery;
pub mod health;
pub mod instruments;
pub mod paging;
pub mod roles;
pub mod scrape;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod time;
pub mod tracecontext;
pub mod upload;

pub use context::ServiceContext;
pub use db::{Backend, Database, MigrationFile, Migrations, WriteTx};
pub use settings::{ServiceName, Settings};
