//! `purple layer`: writes the ATT&CK Navigator layer of the current
//! coverage (or of one threat actor's techniques, or the test priorities)
//! to a file.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Args;
use purple_api::scoring::v1::{
    ExportNavigatorLayerRequest, scoring_service_client::ScoringServiceClient,
};
use purple_runtime::time::{Micros, timestamp};

use super::{ServerArg, parse_instant, status_error};

/// Exports a Navigator layer (format 4.5).
#[derive(Args, Debug)]
pub struct LayerArgs {
    /// Where to write the layer JSON ("-" for standard output).
    #[arg(short, long, default_value = "purple-layer.json")]
    output: PathBuf,
    /// Layer name.
    #[arg(long)]
    name: Option<String>,
    /// Enable only this threat actor's techniques (e.g. G0016).
    #[arg(long)]
    actor: Option<String>,
    /// Only techniques on this platform.
    #[arg(long)]
    platform: Option<String>,
    /// Score as of this instant (RFC 3339 or YYYY-MM-DD) instead of now.
    #[arg(long, value_parser = parse_instant)]
    as_of: Option<DateTime<Utc>>,
    /// Colour techniques by their test priority (the plan of `purple
    /// plan`, default weights) instead of their score.
    #[arg(long, conflicts_with = "as_of")]
    priority: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs the command.
pub async fn run(args: LayerArgs, client: &super::ClientArgs) -> anyhow::Result<()> {
    let mut client = ScoringServiceClient::new(args.server.connect(client).await?)
        .max_decoding_message_size(64 << 20);
    let layer = client
        .export_navigator_layer(ExportNavigatorLayerRequest {
            name: args.name.unwrap_or_default(),
            threat_actor_id: args.actor.unwrap_or_default(),
            platform: args.platform.unwrap_or_default(),
            as_of: args.as_of.map(|at| timestamp(Micros::from_datetime(at))),
            priority: args.priority,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .layer_json;
    if args.output.as_os_str() == "-" {
        println!("{layer}");
    } else {
        std::fs::write(&args.output, &layer)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.output.display()))?;
        eprintln!("wrote {} ({} bytes)", args.output.display(), layer.len());
    }
    Ok(())
}
