//! Client subcommands: they reach a running server named by `--server` /
//! `PURPLE_SERVER` and print what it answers.

pub mod db;
pub mod import;
pub mod layer;
pub mod metrics;
pub mod token;

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use purple_runtime::{auth::bootstrap, tracecontext::TraceInjector};
use tonic::{
    metadata::AsciiMetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// Where the server is and who is asking.
#[derive(Args, Clone, Debug)]
pub struct ServerArg {
    /// The server to talk to (https:// for TLS).
    #[arg(long, env = "PURPLE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// The bearer token to send. Default: --token-file, else the admin
    /// token the embedded server created in --data-dir.
    #[arg(long, env = "PURPLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A file holding the bearer token.
    #[arg(long, env = "PURPLE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

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
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let path = match &self.token_file {
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
    pub async fn connect(&self) -> anyhow::Result<InterceptedService<Channel, ClientInterceptor>> {
        let mut endpoint = Channel::from_shared(self.server.clone())?;
        if self.server.starts_with("https://") {
            let mut tls = client_tls(self.tls_ca_file.as_deref())?;
            if let Some(host) = endpoint.uri().host() {
                tls = tls.domain_name(host);
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.server))?;
        let token = self
            .token()?
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
