//! The one tower layer in front of every service a server hosts: it
//! authenticates the bearer token, checks the roles table, admits the
//! request (a global bound on requests in progress and a smaller one on
//! imports, answering RESOURCE_EXHAUSTED rather than queueing, so a flood
//! cannot starve the server), hands the caller to the handler in the
//! request's extensions, and counts what is in flight so shutdown can
//! drain. Health checks pass straight through: a probe never waits behind
//! the limit.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status, body::Body, codegen::http};
use tower::{Layer, Service};

use super::{
    access::{self, Rule},
    tokens::{TokenError, Verifier},
};
use crate::status::{reason, refused};

/// Requests in progress, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// How many requests are in progress.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves when no request is in progress, or after `limit`; true when
    /// idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.count() == 0;
            }
        }
    }

    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What the gate needs: the verifier and the admission limits.
#[derive(Clone, Debug)]
pub struct Gate {
    verifier: Arc<Verifier>,
    /// Requests of people and other clients.
    admission: Arc<Semaphore>,
    /// Calls from Purple services, which requests already admitted make
    /// (in the all-in-one process, to this same server): their own bound,
    /// so a full server still completes what it admitted.
    internal: Arc<Semaphore>,
    imports: Arc<Semaphore>,
    in_flight: Arc<InFlight>,
}

impl Gate {
    /// A gate admitting at most `concurrency` requests, `imports` of them
    /// uploads, at once.
    pub fn new(verifier: Verifier, concurrency: usize, imports: usize) -> Self {
        Self {
            verifier: Arc::new(verifier),
            admission: Arc::new(Semaphore::new(concurrency.max(1))),
            internal: Arc::new(Semaphore::new(concurrency.max(1))),
            imports: Arc::new(Semaphore::new(imports.max(1))),
            in_flight: Arc::new(InFlight::default()),
        }
    }

    /// The in-flight counter shutdown drains.
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// Everything the gate decides before the handler runs: the caller and
    /// the admission permits, or the refusal.
    fn admit<B>(
        &self,
        request: &http::Request<B>,
        roles: &'static [purple_api::common::v1::Role],
    ) -> Result<Admitted, Status> {
        let token = bearer(request.headers());
        let caller = self.verifier.verify(token).map_err(|err| {
            let message = match err {
                TokenError::NoRole => err.to_string(),
                other => other.to_string(),
            };
            refused(Code::Unauthenticated, reason::UNAUTHENTICATED, message, &[])
        })?;
        if !caller.has_any(roles) {
            let needed: Vec<&str> = roles.iter().filter_map(|r| r.key()).collect();
            return Err(crate::status::permission_denied(format!(
                "{} needs the role {}",
                request.uri().path().trim_start_matches('/'),
                needed.join(" or ")
            )));
        }
        let exhausted = |what: &str| {
            refused(
                Code::ResourceExhausted,
                reason::RESOURCE_EXHAUSTED,
                format!("{what}; retry later"),
                &[],
            )
        };
        let import = if request.uri().path().ends_with("/Import") {
            Some(
                self.imports
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| exhausted("too many uploads in progress"))?,
            )
        } else {
            None
        };
        let pool = if caller.is_service() {
            &self.internal
        } else {
            &self.admission
        };
        let permit = pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| exhausted("the server is at its limit of requests in progress"))?;
        Ok(Admitted {
            caller,
            permits: (permit, import),
        })
    }
}

struct Admitted {
    caller: super::Caller,
    permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// The token of `authorization: Bearer <token>` ("" when absent).
fn bearer(headers: &http::HeaderMap) -> &str {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map_or("", str::trim)
}

/// The layer of [`Gate`].
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: Gate,
}

impl GateLayer {
    /// The layer over a gate.
    pub fn new(gate: Gate) -> Self {
        Self { gate }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// A service behind the gate.
#[derive(Clone, Debug)]
pub struct GateService<S> {
    inner: S,
    gate: Gate,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for GateService<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let roles = match access::rule(request.uri().path()) {
            Rule::Open => return Box::pin(inner.call(request)),
            Rule::Roles(roles) => roles,
            // Not a method Purple serves: authenticated callers learn that
            // from the router (UNIMPLEMENTED); others learn nothing.
            Rule::Unknown => &purple_api::common::v1::Role::ALL,
        };
        match self.gate.admit(&request, roles) {
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
            Ok(Admitted { caller, permits }) => {
                request.extensions_mut().insert(caller);
                let guard = self.gate.in_flight.enter();
                let response = inner.call(request);
                Box::pin(async move {
                    let response = response.await;
                    drop((permits, guard));
                    response
                })
            }
        }
    }
}
