//! Split mode as deployed: four `purple serve --service X` processes, each
//! with its own database, calling each other over TLS with service
//! identities minted from a shared signing key; a test driven through its
//! workflow shows up in scores (scoring → ingest, campaigns) and in the
//! audit trail (campaigns' relay → metrics).

use std::{path::PathBuf, process::Stdio, time::Duration};

use purple_api::{
    campaigns::v1::{self as cpb, campaigns_service_client::CampaignsServiceClient},
    common::v1::{Outcome, Role},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
    metrics::v1::{ListAuditEventsRequest, metrics_service_client::MetricsServiceClient},
    scoring::v1::{ScoreTechniquesRequest, scoring_service_client::ScoringServiceClient},
};
use purple_runtime::{
    auth::tokens::Minter,
    settings::{AuthSettings, ServiceName},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{campaigns::CATALOG, tls::pki};

/// A free port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `purple serve --service X` process, killed when dropped.
struct Process {
    child: tokio::process::Child,
    port: u16,
}

/// The split deployment's shared settings, as flags.
struct Deployment {
    dir: tempfile::TempDir,
    ports: [(ServiceName, u16); 4],
    secret: PathBuf,
    database_url: Option<String>,
    prefix: String,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt-secret");
        std::fs::write(&secret, "split-mode-shared-secret-0123456789abcdef").unwrap();
        Self {
            ports: ServiceName::ALL.map(|s| (s, free_port())),
            secret,
            database_url: std::env::var("PURPLE_TEST_DATABASE_URL").ok(),
            prefix: format!("s{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            dir,
        }
    }

    fn port(&self, service: ServiceName) -> u16 {
        self.ports.iter().find(|(s, _)| *s == service).unwrap().1
    }

    fn url(&self, service: ServiceName) -> String {
        format!("https://localhost:{}", self.port(service))
    }

    fn start(&self, service: ServiceName) -> Process {
        let port = self.port(service);
        let data = self.dir.path().join(service.as_str());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_purple"));
        command
            .args(["serve", "--service", service.as_str()])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--jwt-secret-file")
            .arg(&self.secret)
            .arg("--tls-cert-file")
            .arg(pki("server.pem"))
            .arg("--tls-key-file")
            .arg(pki("server.key"))
            .arg("--tls-ca-file")
            .arg(pki("ca.pem"))
            .arg("--tls-client-ca-file")
            .arg(pki("ca.pem"))
            .args(["--relay-interval-ms", "50"])
            .env_remove("PURPLE_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for peer in ServiceName::ALL {
            if peer != service {
                command
                    .arg(format!("--{}-addr", peer.as_str()))
                    .arg(self.url(peer));
            }
        }
        if let Some(url) = &self.database_url {
            command
                .arg("--database-url")
                .arg(url)
                .arg("--schema-prefix")
                .arg(&self.prefix);
        }
        Process {
            child: command.spawn().unwrap(),
            port,
        }
    }

    /// A client channel to a service: TLS with the CA, the shared client
    /// certificate (mutual TLS).
    fn channel(&self, service: ServiceName) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pki("ca.pem")).unwrap()))
            .identity(Identity::from_pem(
                std::fs::read(pki("server.pem")).unwrap(),
                std::fs::read(pki("server.key")).unwrap(),
            ))
            .domain_name("localhost");
        Endpoint::from_shared(self.url(service))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }

    fn minter(&self) -> Minter {
        Minter::new(
            &AuthSettings {
                jwt_secret_file: Some(self.secret.clone()),
                ..AuthSettings::default()
            },
            None,
        )
        .unwrap()
        .unwrap()
    }
}

async fn wait_serving(channel: Channel, process: &mut Process) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(&status, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32) {
            return;
        }
        if let Ok(Some(exit)) = process.child.try_wait() {
            panic!("the process on port {} exited: {exit}", process.port);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never SERVING: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Authed = tonic::service::interceptor::InterceptedService<
    Channel,
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>,
>;

fn with_token(channel: Channel, token: String) -> Authed {
    let bearer: tonic::metadata::AsciiMetadataValue = format!("Bearer {token}").parse().unwrap();
    tonic::service::interceptor::InterceptedService::new(
        channel,
        Box::new(move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        }),
    )
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn four_processes_over_mutual_tls_with_service_identities() {
    let deployment = Deployment::new();
    let mut processes: Vec<Process> = ServiceName::ALL
        .iter()
        .map(|s| deployment.start(*s))
        .collect();
    for (process, service) in processes.iter_mut().zip(ServiceName::ALL) {
        wait_serving(deployment.channel(service), process).await;
    }
    let minter = deployment.minter();
    let token =
        |subject: &str, role: Role| minter.mint(subject, role, subject, Duration::from_secs(600));

    IngestServiceClient::new(with_token(
        deployment.channel(ServiceName::Ingest),
        token("ops", Role::Admin),
    ))
    .import(tokio_stream::iter([ImportRequest {
        kind: ImportKind::Attack as i32,
        file_name: "catalog.json".into(),
        data: CATALOG.as_bytes().to_vec(),
        last: true,
    }]))
    .await
    .unwrap();

    let campaigns = |subject: &str, role: Role| {
        CampaignsServiceClient::new(with_token(
            deployment.channel(ServiceName::Campaigns),
            token(subject, role),
        ))
    };
    // Campaigns checks the technique with ingest: a service call across
    // processes.
    let test = campaigns("lee", Role::PurpleLead)
        .create_tests(cpb::CreateTestsRequest {
            tests: vec![cpb::NewTest {
                technique_id: "T1003".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tests
        .remove(0);
    let step = |who: &str,
                role: Role,
                test: &cpb::Test,
                action: cpb::TestAction,
                outcome: Option<Outcome>| {
        let mut request = cpb::TransitionTestRequest {
            test_id: test.test_id.clone(),
            action: action as i32,
            expected_version: test.version,
            ..Default::default()
        };
        if let Some(outcome) = outcome {
            request.outcome = outcome as i32;
            request.detected_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
        }
        let mut client = campaigns(who, role);
        async move {
            client
                .transition_test(request)
                .await
                .unwrap()
                .into_inner()
                .test
                .unwrap()
        }
    };
    use cpb::TestAction::*;
    let t = step("rex", Role::RedTech, &test, StartRed, None).await;
    let t = step("rex", Role::RedTech, &t, CompleteRed, None).await;
    let t = step("blu", Role::BlueTech, &t, StartBlue, None).await;
    let t = step(
        "blu",
        Role::BlueTech,
        &t,
        CompleteBlue,
        Some(Outcome::Detected),
    )
    .await;
    step("lee", Role::PurpleLead, &t, Validate, None).await;

    // Scoring reads ingest and campaigns; the relay invalidated its cache.
    let mut scoring = ScoringServiceClient::new(with_token(
        deployment.channel(ServiceName::Scoring),
        token("viewer", Role::Viewer),
    ));
    let score = poll("the validated test scored", async || {
        let scores = scoring
            .score_techniques(ScoreTechniquesRequest {
                technique_ids: vec!["T1003".into()],
                as_of: None,
            })
            .await
            .ok()?
            .into_inner()
            .scores;
        let s = scores.into_iter().next()?;
        (s.components.as_ref()?.effective_tests == 1).then_some(s)
    })
    .await;
    assert!(score.score > 50.0, "{score:?}");

    // The relay delivered every event to the metrics process.
    let mut metrics = MetricsServiceClient::new(with_token(
        deployment.channel(ServiceName::Metrics),
        token("viewer", Role::Viewer),
    ));
    let events = poll("the audit trail filled", async || {
        let events = metrics
            .list_audit_events(ListAuditEventsRequest {
                test_id: test.test_id.clone(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .events;
        (events.len() == 7).then_some(events)
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| ["lee", "rex", "blu"].contains(&e.actor_id.as_str()))
    );

    // A user's token cannot reach an internal RPC of another process.
    let err = MetricsServiceClient::new(with_token(
        deployment.channel(ServiceName::Metrics),
        token("lee", Role::PurpleLead),
    ))
    .record_events(purple_api::metrics::v1::RecordEventsRequest::default())
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    drop(processes);
}
