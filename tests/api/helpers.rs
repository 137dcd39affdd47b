//! `spawn_app()`: a fresh server per test, and what tests use to read the
//! trace of one request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use purple_api::common::v1::Role;
use purple_runtime::{
    ServiceName, Settings,
    auth::tokens::Minter,
    telemetry::{self, CollectedSpan, SpanCollector},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{
    Request,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

/// Puts a bearer token on every request of a channel.
#[derive(Clone, Debug)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Bearer {
    /// No token at all.
    pub fn none() -> Self {
        Self(None)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry one caller's token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// The subject of the test's all-roles token.
pub const TESTER: &str = "tester";
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// A connected channel whose calls carry a token with every role
    /// (admin, purple_lead, red_tech, blue_tech, service) for [`TESTER`]:
    /// what tests that are not about identity use.
    pub channel: AuthChannel,
    /// The channel without any token.
    pub bare: Channel,
    /// Signs tokens with the server's key.
    pub minter: Arc<Minter>,
    /// The server's HS256 secret file.
    pub secret_file: Option<std::path::PathBuf>,
    /// Where its services keep their data ([`TestApp::replica`] shares it).
    pub storage: purple_runtime::settings::StorageSettings,
    /// The role of each user a test created, for [`TestApp::as_user`].
    users: Arc<Mutex<HashMap<String, Role>>>,
    /// Every span of this process.
    pub spans: SpanCollector,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<purple_runtime::server::Stopped>>>,
    _data_dir: tempfile::TempDir,
}

/// Settings for an isolated server: port 0, a temporary data directory
/// (with the token signing secret), and on PostgreSQL a schema prefix of
/// its own.
pub fn test_settings(data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults();
    let secret = data_dir.join("test-jwt-secret");
    if !secret.exists() {
        std::fs::write(&secret, "purple-test-secret-0123456789abcdef").unwrap();
    }
    settings.auth.jwt_secret_file = Some(secret);
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.storage.data_dir = data_dir.to_path_buf();
    settings.storage.database_url = std::env::var("PURPLE_TEST_DATABASE_URL").ok();
    settings.storage.ingest_database_url = None;
    settings.storage.campaigns_database_url = None;
    settings.storage.scoring_database_url = None;
    settings.storage.metrics_database_url = None;
    settings.storage.schema_prefix =
        format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.storage.db_max_connections = 4;
    // Many servers start at once on a loaded machine; a test that needs
    // the production wait sets it back.
    settings.storage.db_acquire_timeout_secs = 30;
    settings.peers = Default::default();
    settings.limits.shutdown_grace_secs = 5;
    settings
}

/// A channel of its own with this bearer token on every call.
pub fn with_bearer(channel: Channel, token: &str) -> AuthChannel {
    InterceptedService::new(
        channel,
        Bearer(Some(format!("Bearer {token}").parse().unwrap())),
    )
}

/// Starts all four services in-process and waits until health says SERVING.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_services(&ServiceName::ALL, adjust).await
}

/// Some of the services in one process (split mode), the others reached at
/// their configured addresses.
pub async fn spawn_services(
    services: &[ServiceName],
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let spans = telemetry::init_for_tests();
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data_dir.path());
    adjust(&mut settings);
    let settings_auth = settings.auth.clone();
    let settings_tls = settings.tls.clone();
    let storage = settings.storage.clone();
    let app = purple::Application::build(settings, services)
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let bare = match &settings_tls.tls_cert_file {
        None => Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
        Some(cert) => {
            // The test client trusts the server's CA and, for mutual TLS,
            // presents the server's own certificate.
            let ca = std::fs::read(settings_tls.tls_ca_file.as_ref().unwrap()).unwrap();
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            if settings_tls.tls_client_ca_file.is_some() {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    std::fs::read(cert).unwrap(),
                    std::fs::read(settings_tls.tls_key_file.as_ref().unwrap()).unwrap(),
                ));
            }
            Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect_lazy()
        }
    };
    let minter = Arc::new(Minter::new(&settings_auth, None).unwrap().unwrap());
    let test_app = TestApp {
        addr,
        channel: InterceptedService::new(bare.clone(), Bearer(None)),
        bare,
        minter,
        secret_file: settings_auth.jwt_secret_file.clone(),
        storage,
        users: Arc::new(Mutex::new(HashMap::new())),
        spans,
        stop: Some(stop),
        handle: Some(handle),
        _data_dir: data_dir,
    };
    let mut test_app = test_app;
    test_app.channel = test_app.with_token(&test_app.omni_token());
    for service in services {
        test_app.wait_until_serving(service.grpc_name()).await;
    }
    test_app
}

impl TestApp {
    /// A second all-in-one process on this one's databases: another
    /// replica of every service, as a deployment scales them out.
    pub async fn replica(&self) -> TestApp {
        let storage = self.storage.clone();
        let mut replica = spawn_app_with(move |s| s.storage = storage).await;
        // The users a test created act through either replica.
        replica.users = self.users.clone();
        replica
    }

    /// A token for `subject` holding every role but viewer.
    fn omni_token(&self) -> String {
        // A multi-role token, as an identity provider issues one: the role
        // claim is a list.
        self.minter.mint_roles(
            TESTER,
            &[
                Role::Admin,
                Role::PurpleLead,
                Role::RedTech,
                Role::BlueTech,
                Role::Service,
            ],
            "Tester",
            Duration::from_secs(3_600),
        )
    }

    /// The channel with this token on every call.
    pub fn with_token(&self, token: &str) -> AuthChannel {
        InterceptedService::new(
            self.bare.clone(),
            Bearer(Some(format!("Bearer {token}").parse().unwrap())),
        )
    }

    /// A token for `subject` with `role`, valid for an hour.
    pub fn token(&self, subject: &str, role: Role) -> String {
        self.minter
            .mint(subject, role, subject, Duration::from_secs(3_600))
    }

    /// The channel of a caller with one role.
    pub fn as_role(&self, subject: &str, role: Role) -> AuthChannel {
        self.with_token(&self.token(subject, role))
    }

    /// Remembers a user's role, for [`TestApp::as_user`].
    pub fn register(&self, user_id: &str, role: Role) {
        self.users.lock().unwrap().insert(user_id.to_owned(), role);
    }

    /// The channel of a user a test created (its id and role in the
    /// token); an unknown id acts as a viewer.
    pub fn as_user(&self, user_id: &str) -> AuthChannel {
        let role = self
            .users
            .lock()
            .unwrap()
            .get(user_id)
            .copied()
            .unwrap_or(Role::Viewer);
        self.as_role(user_id, role)
    }

    /// Polls health until `service` is SERVING (no sleeping on a guess).
    pub async fn wait_until_serving(&self, service: &str) {
        let mut health = HealthClient::new(self.bare.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server never became SERVING: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A future that resolves once overall health reports NOT_SERVING (the
    /// first step of a shutdown), polling rather than guessing a delay.
    pub fn not_serving_waiter(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut health = HealthClient::new(self.bare.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if !matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "health never left SERVING"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Asks the server to shut down and waits for it to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<purple_runtime::server::Stopped> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().unwrap().await.unwrap()
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(
        &mut self,
    ) -> JoinHandle<anyhow::Result<purple_runtime::server::Stopped>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.take().unwrap()
    }

    /// The spans of one trace once its root RPC span has ended and the
    /// trace has stopped growing: a callee's server span can close just
    /// after its caller's, once the response's trailers are out.
    pub async fn trace(&self, trace: &Trace) -> Vec<CollectedSpan> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let spans = self.spans.trace(&trace.trace_id);
            if spans.iter().any(|s| s.name == trace.root_name) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let settled = self.spans.trace(&trace.trace_id);
                if settled.len() == spans.len() {
                    return settled;
                }
                continue;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {} never completed",
                trace.trace_id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A trace started by a test: put it on a request with [`Trace::request`].
pub struct Trace {
    /// 32 hex digits.
    pub trace_id: String,
    root_name: String,
}

impl Trace {
    /// A new trace whose root will be the RPC `path` ("pkg.Service/Method").
    pub fn new(path: &str) -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            root_name: path.to_owned(),
        }
    }

    /// Wraps a message in a request that carries this trace.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let parent = format!(
            "00-{}-{}-01",
            self.trace_id,
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        request
            .metadata_mut()
            .insert("traceparent", MetadataValue::try_from(parent).unwrap());
        request
    }
}

/// What one request cost.
#[derive(Debug, PartialEq, Eq)]
pub struct Cost {
    /// SQL statements, per service.
    pub statements: std::collections::BTreeMap<String, usize>,
    /// RPCs served (the request itself included).
    pub rpcs: usize,
}

impl Cost {
    /// Statements of every service together.
    pub fn statement_count(&self) -> usize {
        self.statements.values().sum()
    }

    /// Counts the statements and RPC server spans of a trace.
    pub fn of(spans: &[CollectedSpan]) -> Self {
        let mut statements = std::collections::BTreeMap::new();
        for span in spans.iter().filter(|s| s.attr("db.statement").is_some()) {
            *statements
                .entry(span.attr("service").unwrap_or("?").to_owned())
                .or_insert(0) += 1;
        }
        let rpcs = spans.iter().filter(|s| s.kind == "server").count();
        // Every call between services is traced on both sides.
        let calls = spans
            .iter()
            .filter(|s| s.kind == "client" && s.attr("rpc.system").is_some())
            .count();
        assert_eq!(calls + 1, rpcs, "a client span per peer call: {spans:#?}");
        Self { statements, rpcs }
    }
}

/// A free port on loopback, for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A protobuf timestamp at whole seconds since the epoch.
pub fn ts(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// The `google.rpc.ErrorInfo` reason of a refusal ("" when it has none).
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}
