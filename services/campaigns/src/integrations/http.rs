//! One call to Jira or Tempo and what its answer means for delivery:
//! success, a failure worth retrying (the peer unreachable or timing out,
//! a 5xx, a 408, a 429 with its Retry-After), or a refusal for good (any
//! other 4xx: the row becomes a dead letter with the response).

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};

/// The longest Retry-After honoured: a hostile or broken peer cannot park
/// delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);
/// How much of a refusal's body is kept and shown.
const BODY_EXCERPT: usize = 500;
/// The largest answer read: what Purple asks for is small, and a broken or
/// hostile peer cannot make the process hold gigabytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why a call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again later (no sooner than `after`, when the peer said).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Refused for good: set aside.
    Refused { status: u16, reason: String },
}

impl Failure {
    /// What is logged and kept.
    pub fn reason(&self) -> &str {
        match self {
            Failure::Retry { reason, .. } | Failure::Refused { reason, .. } => reason,
        }
    }
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(BODY_EXCERPT).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Retry-After as seconds (the HTTP-date form is read as "soon").
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let seconds: u64 = value.trim().parse().unwrap_or(1);
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Sends a request (`what` names it in errors: method and path, never
/// credentials) and returns the response body as JSON (Null when empty).
pub async fn send(request: RequestBuilder, what: &str) -> Result<serde_json::Value, Failure> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            return Err(Failure::Retry {
                after: None,
                reason: format!("{what}: {}", err.without_url()),
            });
        }
    };
    let status = response.status();
    let after = retry_after(&response);
    let body = match bounded_body(response).await {
        Ok(body) => body,
        Err(reason) => {
            return Err(Failure::Retry {
                after: None,
                reason: format!("{what}: {reason}"),
            });
        }
    };
    if status.is_success() {
        return Ok(if body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
        });
    }
    let reason = format!("{what}: HTTP {} {}", status.as_u16(), excerpt(&body));
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return Err(Failure::Retry { after, reason });
    }
    Err(Failure::Refused {
        status: status.as_u16(),
        reason,
    })
}

/// The body as text, refused past [`MAX_BODY`] bytes.
async fn bounded_body(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(format!("an answer larger than {MAX_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(err) => return Err(format!("reading the answer: {}", err.without_url())),
        }
    }
}

/// An HTTP client with connection reuse, the ring TLS provider and a
/// deadline per call.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // The workspace's one crypto provider; Err means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("purple/", env!("CARGO_PKG_VERSION")))
        .build()?)
}
