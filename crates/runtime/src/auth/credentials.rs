//! How a service proves to its peers that it is a Purple service
//! (docs/adr/0006): a bearer token with the `service` role, either read
//! from a file the deployment mounts (re-read as it rotates) or minted
//! here from the configured signing key and renewed before it expires.
//! The client interceptor puts it on every peer call, next to the trace
//! context.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use purple_api::common::v1::Role;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use super::tokens::Minter;

/// How long a minted service token lives; it is renewed at half-life.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3_600);
/// How often a mounted token file is read again.
const FILE_REREAD: Duration = Duration::from_secs(30);

/// Where the service token comes from.
enum Source {
    File(PathBuf),
    Minted {
        minter: Arc<Minter>,
        subject: String,
    },
    None,
}

/// The current service token, shared by every peer client of a process.
#[derive(Clone)]
pub struct ServiceCredentials {
    current: Arc<RwLock<Option<AsciiMetadataValue>>>,
    source: Arc<Source>,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source.as_ref() {
            Source::File(path) => format!("file {}", path.display()),
            Source::Minted { subject, .. } => format!("minted for {subject}"),
            Source::None => "none".into(),
        };
        f.debug_struct("ServiceCredentials")
            .field("source", &source)
            .finish()
    }
}

fn bearer(token: &str) -> Option<AsciiMetadataValue> {
    format!("Bearer {}", token.trim()).parse().ok()
}

impl ServiceCredentials {
    /// Credentials read from a mounted token file.
    pub fn from_file(path: PathBuf) -> std::io::Result<Self> {
        let token = std::fs::read_to_string(&path)?;
        Ok(Self {
            current: Arc::new(RwLock::new(bearer(&token))),
            source: Arc::new(Source::File(path)),
        })
    }

    /// Credentials minted for `subject` (e.g. `service:scoring`).
    pub fn minted(minter: Arc<Minter>, subject: String) -> Self {
        let token = minter.mint(&subject, Role::Service, &subject, SERVICE_TOKEN_TTL);
        Self {
            current: Arc::new(RwLock::new(bearer(&token))),
            source: Arc::new(Source::Minted { minter, subject }),
        }
    }

    /// No credentials: peer calls go out without a token (and are refused
    /// by a peer that requires one).
    pub fn none() -> Self {
        Self {
            current: Arc::new(RwLock::new(None)),
            source: Arc::new(Source::None),
        }
    }

    /// Whether calls carry a token.
    pub fn present(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Puts the token on an outgoing request.
    pub fn apply(&self, metadata: &mut MetadataMap) {
        if let Ok(current) = self.current.read()
            && let Some(value) = current.as_ref()
        {
            metadata.insert("authorization", value.clone());
        }
    }

    /// Keeps the token fresh until shutdown: re-reads a mounted file, or
    /// mints a new token at half-life.
    pub async fn refresh(self, shutdown: CancellationToken) {
        let period = match self.source.as_ref() {
            Source::File(_) => FILE_REREAD,
            Source::Minted { .. } => SERVICE_TOKEN_TTL / 2,
            Source::None => return,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            let next = match self.source.as_ref() {
                Source::File(path) => match std::fs::read_to_string(path) {
                    Ok(token) => bearer(&token),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "cannot re-read the service token; keeping the current one");
                        continue;
                    }
                },
                Source::Minted { minter, subject } => {
                    bearer(&minter.mint(subject, Role::Service, subject, SERVICE_TOKEN_TTL))
                }
                Source::None => return,
            };
            if let Ok(mut current) = self.current.write() {
                *current = next;
            }
        }
    }
}
