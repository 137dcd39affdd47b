//! `purple`: the server and its command-line clients (`purple::cli::Cli`).

use purple::cli::{Cli, Command, ServeArgs};

/// `--features mimalloc`: the allocator the performance issue asked to
/// measure against the system's.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use purple_runtime::{ServiceName, shutdown, telemetry};

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let name = args.service.map_or("purple", ServiceName::as_str);
    let telemetry = telemetry::init(name, telemetry::LogFormat::from_env())?;
    let services = args.services();
    let result = async {
        let app = purple::Application::build(*args.settings, &services).await?;
        tracing::info!(addr = %app.local_addr(), "serving");
        app.run_until(shutdown::signal()).await
    }
    .await;
    match &result {
        // The last line a process writes says how it ended.
        Ok(stopped) if stopped.abandoned == 0 => tracing::info!(
            drained = stopped.drained,
            "stopped: drained {} in-flight requests, exit status 0",
            stopped.drained
        ),
        Ok(stopped) => tracing::warn!(
            drained = stopped.drained,
            abandoned = stopped.abandoned,
            "stopped: drained {}, abandoned {} at the end of the grace period, exit status 0",
            stopped.drained,
            stopped.abandoned
        ),
        Err(err) => tracing::error!("{err:#}; exit status 1"),
    }
    telemetry.shutdown().await;
    result.map(drop)
}

async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init("purple-migrate", telemetry::LogFormat::from_env())?;
    let result = purple::migrate(&args.settings, &args.services())
        .await
        .map(drop);
    telemetry.shutdown().await;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_checked();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Migrate(args)) => migrate(args).await,
        Some(Command::Import(args)) => purple::cli::import::run(args, &cli.client).await,
        Some(Command::Export(args)) => purple::cli::history::export(args, &cli.client).await,
        Some(Command::Layer(args)) => purple::cli::layer::run(args, &cli.client).await,
        Some(Command::Metrics(args)) => purple::cli::metrics::run(args, &cli.client).await,
        Some(Command::Rules(args)) => purple::cli::rules::run(args, &cli.client).await,
        Some(Command::Plan(args)) => purple::cli::plan::run_plan(args, &cli.client).await,
        Some(Command::Watch(args)) => purple::cli::plan::run_watch(args, &cli.client).await,
        Some(Command::Token(command)) => purple::cli::token::run(command),
        Some(Command::Db(command)) => purple::cli::db::run(command).await,
    }
}
