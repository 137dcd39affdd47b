//! Purple end to end: the all-in-one server started in-process on port 0
//! with fresh databases (SQLite files by default, a fresh PostgreSQL schema
//! per test when `PURPLE_TEST_DATABASE_URL` is set), exercised over real
//! gRPC.

mod architecture;
mod atlassian;
mod campaigns;
mod collector;
mod database_health;
mod deploy;
mod helpers;
mod history;
mod hostile;
mod ingest;
mod integrations;
mod intel;
mod metrics;
mod migrations;
mod observability;
mod pg_cluster;
mod pg_tls;
mod plan;
mod portability;
mod process;
mod readme;
mod scoring;
mod security;
mod server;
pub mod split;
mod tls;
mod writer_turn;
