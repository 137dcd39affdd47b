//! Client subcommands: they reach a running server named by `--server` /
//! `PURPLE_SERVER` and print what it answers.

pub mod import;
pub mod layer;
pub mod metrics;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use purple_runtime::tracecontext::TraceInjector;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// Where the server is.
#[derive(Args, Clone, Debug)]
pub struct ServerArg {
    /// The server to talk to.
    #[arg(long, env = "PURPLE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
}

impl ServerArg {
    /// A traced channel to the server.
    pub async fn connect(&self) -> anyhow::Result<InterceptedService<Channel, TraceInjector>> {
        let channel = Channel::from_shared(self.server.clone())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.server))?;
        Ok(InterceptedService::new(channel, TraceInjector))
    }
}

/// An instant from the command line: RFC 3339, or a date (midnight UTC).
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        .map_err(|_| format!("{text:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

/// A Status as a one-line error for the terminal.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
