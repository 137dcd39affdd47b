//! The command line ([`Cli`]): `purple` and `purple serve` serve, `migrate`
//! and `db` prepare the databases, `token` signs tokens, and the client
//! subcommands reach a running server named by `--server` /
//! `PURPLE_SERVER` and print what it answers.

pub mod db;
pub mod history;
pub mod import;
pub mod layer;
pub mod metrics;
pub mod plan;
pub mod rules;
pub mod token;

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};
use purple_runtime::{ServiceName, Settings, auth::bootstrap, tracecontext::TraceInjector};
use tonic::{
    metadata::AsciiMetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// The command line: `purple` alone serves (with `purple serve`'s flags),
/// subcommands do the rest.
#[derive(Parser, Debug)]
#[command(
    name = "purple",
    version,
    about = "Purple: purple-team coverage, scores and operational metrics over gRPC."
)]
pub struct Cli {
    /// What to do; serving when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The flags of `purple serve`, for `purple` without a subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The server client subcommands talk to, before or after their name.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serves the services (all four by default) with health and reflection.
    Serve(ServeArgs),
    /// Imports catalogue files (a file or a directory) into a running
    /// server, streaming them in chunks, and prints the report.
    Import(import::ImportArgs),
    /// Exports data (the program's history) from a running server.
    Export(history::ExportArgs),
    /// Writes the ATT&CK Navigator layer of the current coverage to a file.
    Layer(layer::LayerArgs),
    /// Prints the operational summary of a window (MTTD, MTTR, rejection
    /// rates, weekly trend) from a running server.
    Metrics(metrics::MetricsArgs),
    /// Lists the detection rules a running server holds (the ids detection
    /// results name).
    Rules(rules::RulesArgs),
    /// Prints what to test next and why: techniques ranked by recent
    /// intel, exploited vulnerabilities, actors, weakness and staleness.
    Plan(plan::PlanArgs),
    /// Follows score changes and regressions as they happen (resumable
    /// with --cursor).
    Watch(plan::WatchArgs),
    /// Signs bearer tokens with the deployment's key.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Database administration: the schemas and roles of a least-privilege
    /// PostgreSQL deployment.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Applies pending migrations and exits.
    Migrate(ServeArgs),
}

/// What `serve` (and `migrate`) take: the service and every setting.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve (or migrate) only this service; the others are reached at
    /// their configured addresses.
    #[arg(long, env = "PURPLE_SERVICE", value_enum)]
    pub service: Option<ServiceName>,
    #[command(flatten)]
    pub settings: Box<Settings>,
}

impl Cli {
    /// Parses the command line; a serve flag given before a subcommand
    /// (`purple --data-dir x import ...`) is refused rather than ignored.
    pub fn parse_checked() -> Self {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let mut command = Self::command();
        let matches = command.get_matches_mut();
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Some((name, _)) = matches.subcommand() {
            let misplaced: Vec<String> = command
                .get_arguments()
                .filter(|a| !a.is_global_set())
                .filter(|a| {
                    matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
                })
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect();
            if !misplaced.is_empty() {
                command
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "{} before `{name}` set(s) what `purple` serves with; put it after `{name}`",
                            misplaced.join(", ")
                        ),
                    )
                    .exit();
            }
        }
        cli
    }
}

impl ServeArgs {
    /// The services selected: one, or all four.
    pub fn services(&self) -> Vec<ServiceName> {
        self.service
            .map_or_else(|| ServiceName::ALL.to_vec(), |s| vec![s])
    }
}

/// Where a client subcommand's server is and who is asking. Global: given
/// before or after the subcommand's name.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The server a client subcommand talks to (https:// for TLS).
    #[arg(
        long,
        env = "PURPLE_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,

    /// The bearer token a client subcommand sends. Default: --token-file,
    /// else the admin token the embedded server created in its data
    /// directory.
    #[arg(long, env = "PURPLE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// A file holding the bearer token a client subcommand sends.
    #[arg(long, env = "PURPLE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

/// A client subcommand's local files: the embedded server's data directory
/// (its admin token) and the CA of an https:// server.
#[derive(Args, Clone, Debug)]
pub struct ServerArg {
    /// The embedded server's data directory, where it wrote admin.token.
    #[arg(long, env = "PURPLE_DATA_DIR", default_value = "./purple-data")]
    pub data_dir: PathBuf,

    /// PEM CA bundle that signs the server's certificate (https only).
    #[arg(long, env = "PURPLE_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
}

/// What a client subcommand's calls carry: the trace context and the
/// bearer token.
#[derive(Clone, Debug)]
pub struct ClientInterceptor {
    token: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for ClientInterceptor {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut request = TraceInjector.call(request)?;
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

impl ServerArg {
    /// The token to present: --token, --token-file, or the data
    /// directory's admin token; None when there is none.
    fn token(&self, client: &ClientArgs) -> anyhow::Result<Option<String>> {
        if let Some(token) = &client.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let path = match &client.token_file {
            Some(path) => path.clone(),
            None => {
                let embedded = bootstrap::admin_token_path(&self.data_dir);
                if !embedded.exists() {
                    return Ok(None);
                }
                embedded
            }
        };
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the token {}", path.display()))?;
        Ok(Some(token.trim().to_owned()))
    }

    /// A traced, authenticated channel to the server.
    pub async fn connect(
        &self,
        client: &ClientArgs,
    ) -> anyhow::Result<InterceptedService<Channel, ClientInterceptor>> {
        let mut endpoint = Channel::from_shared(client.server.clone())?;
        if client.server.starts_with("https://") {
            let mut tls = client_tls(self.tls_ca_file.as_deref())?;
            if let Some(host) = endpoint.uri().host() {
                tls = tls.domain_name(host);
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", client.server))?;
        let token = self
            .token(client)?
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .context("the token is not valid header text")?;
        Ok(InterceptedService::new(
            channel,
            ClientInterceptor { token },
        ))
    }
}

/// TLS for the client: the CA bundle that signed the server's certificate.
fn client_tls(ca: Option<&std::path::Path>) -> anyhow::Result<ClientTlsConfig> {
    let ca =
        ca.context("an https:// server needs --tls-ca-file, the CA that signed its certificate")?;
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
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
