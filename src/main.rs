//! `purple`: the server and its command-line clients.

use clap::{Parser, Subcommand};
use purple_runtime::{ServiceName, Settings, shutdown, telemetry};

/// Purple: purple-team coverage, scores and operational metrics over gRPC.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the services (all four by default) with health and reflection.
    Serve {
        /// Serve only this service; the others are reached at their
        /// configured addresses.
        #[arg(long, env = "PURPLE_SERVICE", value_enum)]
        service: Option<ServiceName>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Imports catalogue files (a file or a directory) into a running
    /// server, streaming them in chunks, and prints the report.
    Import(purple::cli::import::ImportArgs),
    /// Writes the ATT&CK Navigator layer of the current coverage to a file.
    Layer(purple::cli::layer::LayerArgs),
    /// Prints the operational summary of a window (MTTD, MTTR, rejection
    /// rates, weekly trend) from a running server.
    Metrics(purple::cli::metrics::MetricsArgs),
    /// Signs bearer tokens with the deployment's key.
    #[command(subcommand)]
    Token(purple::cli::token::TokenCommand),
    /// Database administration: the schemas and roles of a least-privilege
    /// PostgreSQL deployment.
    #[command(subcommand)]
    Db(purple::cli::db::DbCommand),
    /// Applies pending migrations and exits.
    Migrate {
        /// Migrate only this service.
        #[arg(long, env = "PURPLE_SERVICE", value_enum)]
        service: Option<ServiceName>,
        #[command(flatten)]
        settings: Box<Settings>,
    },
}

fn selected(service: Option<ServiceName>) -> Vec<ServiceName> {
    service.map_or_else(|| ServiceName::ALL.to_vec(), |s| vec![s])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| Command::Serve {
        service: None,
        settings: Box::new(Settings::defaults()),
    });
    match command {
        Command::Serve { service, settings } => {
            let name = service.map_or("purple", ServiceName::as_str);
            let telemetry = telemetry::init(name, telemetry::LogFormat::from_env())?;
            let app = purple::Application::build(*settings, &selected(service)).await?;
            tracing::info!(addr = %app.local_addr(), "serving");
            let result = app.run_until(shutdown::signal()).await;
            telemetry.shutdown().await;
            result
        }
        Command::Import(args) => purple::cli::import::run(args).await,
        Command::Layer(args) => purple::cli::layer::run(args).await,
        Command::Metrics(args) => purple::cli::metrics::run(args).await,
        Command::Token(command) => purple::cli::token::run(command),
        Command::Db(command) => purple::cli::db::run(command).await,
        Command::Migrate { service, settings } => {
            let telemetry = telemetry::init("purple-migrate", telemetry::LogFormat::from_env())?;
            let result = purple::migrate(&settings, &selected(service))
                .await
                .map(drop);
            telemetry.shutdown().await;
            result
        }
    }
}
