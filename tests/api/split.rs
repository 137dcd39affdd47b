//! Split mode as deployed (deploy/README.md): one `purple serve --service
//! X` process per service, calling each other over mutual TLS with
//! service identities minted from a shared signing key, exporting traces
//! to an OTLP collector. A test driven through its workflow shows up in
//! scores (scoring → ingest, campaigns) and in the audit trail
//! (campaigns' relay → metrics).
//!
//! On PostgreSQL it runs the least-privilege layout: `purple db bootstrap`
//! creates each service's schema, owner and runtime roles; `purple
//! migrate` runs as the owners; the services run as the runtime roles with
//! `--auto-migrate false`, and a runtime role cannot create anything nor
//! read another service's tables. A second scoring replica joins behind
//! one name (`scoring.purple.test`, resolved from a hosts file that the
//! callers see in their own mount namespace): calls reach both replicas,
//! the new one within seconds of appearing in DNS. One request's trace
//! spans the processes, each hop a client span in the caller and a server
//! span in the callee.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use purple_api::{
    campaigns::v1::{self as cpb, campaigns_service_client::CampaignsServiceClient},
    common::v1::{Outcome, Role},
    ingest::v1::{ImportKind, ImportRequest, ingest_service_client::IngestServiceClient},
    metrics::v1::{ListAuditEventsRequest, metrics_service_client::MetricsServiceClient},
    scoring::v1::{ScoreTechniquesRequest, scoring_service_client::ScoringServiceClient},
};
use purple_runtime::{
    auth::tokens::Minter,
    roles::ServiceRoles,
    settings::{AuthSettings, ServiceName},
};
use sqlx::Connection;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{campaigns::CATALOG, collector::Collector, helpers::free_port, tls::pki};

/// The name the second scoring replica joins behind.
const SCORING_NAME: &str = "scoring.purple.test";

/// One `purple serve --service X` process, killed when dropped.
struct Process {
    child: tokio::process::Child,
    /// Where it serves gRPC.
    addr: String,
    /// Its Prometheus endpoint.
    metrics: u16,
}

/// The PostgreSQL side: the admin URL the test was given and the prefix
/// of this deployment's schemas and roles.
struct Pg {
    admin_url: String,
    prefix: String,
}

impl Pg {
    fn roles(&self, service: ServiceName) -> ServiceRoles {
        ServiceRoles::new(&self.prefix, service).unwrap()
    }

    /// The admin URL with another user (trust authentication here; a real
    /// deployment puts each role's password in its Secret).
    fn url_as(&self, role: &str) -> String {
        let (scheme, rest) = self.admin_url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{role}@{host}")
    }

    async fn admin(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.admin_url).await.unwrap()
    }

    /// Drops the schemas and roles (they are cluster-wide).
    async fn drop_all(&self) {
        let mut admin = self.admin().await;
        for service in ServiceName::ALL {
            let r = self.roles(service);
            for sql in [
                format!("DROP SCHEMA IF EXISTS {} CASCADE", r.schema),
                format!("DROP OWNED BY {}, {}", r.owner, r.runtime),
                format!("DROP ROLE IF EXISTS {}", r.owner),
                format!("DROP ROLE IF EXISTS {}", r.runtime),
            ] {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

/// Whether this machine lets a process see its own /etc/hosts (root, a
/// mount namespace): how callers resolve one name to both replicas.
fn namespaces_work() -> bool {
    std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The split deployment's shared settings, as flags.
struct Deployment {
    dir: tempfile::TempDir,
    ports: [(ServiceName, u16); 4],
    secret: PathBuf,
    pg: Option<Pg>,
    /// The hosts file the callers of scoring see (PostgreSQL mode, where
    /// replicas share a database, and where namespaces work).
    hosts: Option<PathBuf>,
    collector: Collector,
}

impl Deployment {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("jwt-secret");
        std::fs::write(&secret, "split-mode-shared-secret-0123456789abcdef").unwrap();
        let pg = std::env::var("PURPLE_TEST_DATABASE_URL")
            .ok()
            .map(|admin_url| Pg {
                admin_url,
                prefix: format!("s{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            });
        let hosts = (pg.is_some() && namespaces_work()).then(|| {
            let path = dir.path().join("hosts");
            write_hosts(&path, &["127.0.0.1"]);
            path
        });
        if pg.is_some() && hosts.is_none() {
            eprintln!("no mount namespaces here: the second scoring replica is not started");
        }
        Self {
            ports: ServiceName::ALL.map(|s| (s, free_port())),
            secret,
            pg,
            hosts,
            collector: Collector::start().await,
            dir,
        }
    }

    fn port(&self, service: ServiceName) -> u16 {
        self.ports.iter().find(|(s, _)| *s == service).unwrap().1
    }

    fn url(&self, service: ServiceName) -> String {
        let host = if service == ServiceName::Scoring && self.hosts.is_some() {
            SCORING_NAME
        } else {
            "localhost"
        };
        format!("https://{host}:{}", self.port(service))
    }

    /// PostgreSQL: the schemas and roles, then each service's migrations
    /// as its owner role — the deploy pipeline's steps.
    fn prepare(&self) {
        let Some(pg) = &self.pg else { return };
        let bin = env!("CARGO_BIN_EXE_purple");
        let run = |command: &mut std::process::Command| {
            let output = command.env("RUST_LOG", "warn").output().unwrap();
            assert!(
                output.status.success(),
                "{command:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(std::process::Command::new(bin).args([
            "db",
            "bootstrap",
            "--schema-prefix",
            &pg.prefix,
            "--apply",
            &pg.admin_url,
        ]));
        for service in ServiceName::ALL {
            run(std::process::Command::new(bin)
                .args(["migrate", "--service", service.as_str()])
                .args(["--schema-prefix", &pg.prefix])
                .arg(format!("--{}-database-url", service.as_str()))
                .arg(pg.url_as(&pg.roles(service).owner))
                .arg("--data-dir")
                .arg(self.dir.path().join("migrate"))
                .env_remove("PURPLE_DATABASE_URL"));
        }
    }

    /// Starts `service` on `ip`; `pod` names it in its telemetry.
    fn start(&self, service: ServiceName, ip: &str, pod: &str) -> Process {
        let port = self.port(service);
        let metrics = free_port();
        let bin = env!("CARGO_BIN_EXE_purple");
        let calls_scoring = matches!(service, ServiceName::Ingest | ServiceName::Campaigns);
        let mut command = match &self.hosts {
            Some(hosts) if calls_scoring => {
                let mut c = tokio::process::Command::new("unshare");
                c.args([
                    "--mount",
                    "sh",
                    "-c",
                    r#"mount --bind "$0" /etc/hosts && exec "$@""#,
                ])
                .arg(hosts)
                .arg(bin);
                c
            }
            _ => tokio::process::Command::new(bin),
        };
        command
            .args(["serve", "--service", service.as_str()])
            .arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--metrics-listen")
            .arg(format!("{ip}:{metrics}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(pod))
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
            .args(["--relay-interval-ms", "50", "--peer-dns-refresh-secs", "1"])
            .env_remove("PURPLE_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", self.collector.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_SERVICE_NAME", format!("purple-{}", service.as_str()))
            .env("OTEL_RESOURCE_ATTRIBUTES", format!("k8s.pod.name={pod}"))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        for peer in ServiceName::ALL {
            if peer != service {
                command
                    .arg(format!("--{}-addr", peer.as_str()))
                    .arg(self.url(peer));
            }
        }
        if let Some(pg) = &self.pg {
            command
                .arg(format!("--{}-database-url", service.as_str()))
                .arg(pg.url_as(&pg.roles(service).runtime))
                .args(["--schema-prefix", &pg.prefix])
                .args(["--auto-migrate", "false", "--db-max-connections", "3"]);
        }
        Process {
            child: command.spawn().unwrap(),
            addr: format!("https://{ip}:{port}"),
            metrics,
        }
    }

    /// A client channel to an address: TLS with the CA, the shared client
    /// certificate (mutual TLS).
    fn channel_to(addr: &str) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pki("ca.pem")).unwrap()))
            .identity(Identity::from_pem(
                std::fs::read(pki("server.pem")).unwrap(),
                std::fs::read(pki("server.key")).unwrap(),
            ))
            .domain_name("localhost");
        Endpoint::from_shared(addr.to_owned())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }

    fn channel(&self, service: ServiceName) -> Channel {
        Self::channel_to(&format!("https://127.0.0.1:{}", self.port(service)))
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

fn write_hosts(path: &Path, addresses: &[&str]) {
    let mut text = String::from("127.0.0.1 localhost\n");
    for address in addresses {
        text.push_str(&format!("{address} {SCORING_NAME}\n"));
    }
    // In place: the callers see this file through a bind mount.
    std::fs::write(path, text).unwrap();
}

async fn wait_serving(process: &mut Process) {
    let channel = Deployment::channel_to(&process.addr);
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
            panic!("the process at {} exited: {exit}", process.addr);
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

/// `GET /metrics` of a process, over plain HTTP/1.1.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: purple\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The calls of one method a process served, from its scrape.
pub fn served(metrics: &str, method: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("rpc_server_call_duration_seconds_count{")
                && l.contains(&format!("rpc_method=\"{method}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn served_by(process: &Process, method: &str) -> u64 {
    let ip = process
        .addr
        .trim_start_matches("https://")
        .rsplit_once(':')
        .unwrap()
        .0;
    let addr = format!("{ip}:{}", process.metrics).parse().unwrap();
    served(&scrape(addr).await, method)
}

#[tokio::test]
async fn split_mode_as_deployed() {
    let deployment = Deployment::new().await;
    deployment.prepare();
    let mut processes: BTreeMap<&str, Process> = BTreeMap::new();
    for service in ServiceName::ALL {
        processes.insert(
            service.as_str(),
            deployment.start(service, "127.0.0.1", service.as_str()),
        );
    }
    for process in processes.values_mut() {
        wait_serving(process).await;
    }
    let minter = deployment.minter();
    let token =
        |subject: &str, role: Role| minter.mint(subject, role, subject, Duration::from_secs(600));
    let test_id = workflow(&deployment, &token).await;
    audit_trail(&deployment, &token, &test_id).await;

    if let Some(pg) = &deployment.pg {
        least_privilege(pg).await;
    }
    if let Some(hosts) = &deployment.hosts {
        let mut replica = deployment.start(ServiceName::Scoring, "127.0.0.2", "scoring-b");
        wait_serving(&mut replica).await;
        balancing(&deployment, &token, hosts, &processes["scoring"], &replica).await;
        coherence(&deployment, &token).await;
        regression_once(&deployment, &token).await;
        processes.insert("scoring-b", replica);
    }
    one_trace(&deployment, &token).await;
    drop(processes);
    if let Some(pg) = &deployment.pg {
        pg.drop_all().await;
    }
}

/// Imports the catalogue and drives one test from planned to validated;
/// scoring sees it. Returns the test's id.
async fn workflow(deployment: &Deployment, token: &impl Fn(&str, Role) -> String) -> String {
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

    let test = drive(deployment, token, "T1003", Outcome::Detected).await;

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
    test.test_id
}

/// Creates a test of `technique` and drives it to validated with
/// `outcome`.
async fn drive(
    deployment: &Deployment,
    token: &impl Fn(&str, Role) -> String,
    technique: &str,
    outcome: Outcome,
) -> cpb::Test {
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
                technique_id: technique.into(),
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
    let t = step("blu", Role::BlueTech, &t, CompleteBlue, Some(outcome)).await;
    step("lee", Role::PurpleLead, &t, Validate, None).await
}

/// Both scoring replicas cache a score; a transition delivered to one of
/// them reaches the other through the generation it polls, within a relay
/// interval or two (50 ms each here), not at the end of the cache's TTL.
async fn coherence(deployment: &Deployment, token: &impl Fn(&str, Role) -> String) {
    let port = deployment.port(ServiceName::Scoring);
    let replicas = [
        Deployment::channel_to(&format!("https://127.0.0.1:{port}")),
        Deployment::channel_to(&format!("https://127.0.0.2:{port}")),
    ];
    let effective = async |channel: &Channel| {
        let scores =
            ScoringServiceClient::new(with_token(channel.clone(), token("viewer", Role::Viewer)))
                .score_techniques(ScoreTechniquesRequest {
                    technique_ids: vec!["T1105".into()],
                    as_of: None,
                })
                .await
                .unwrap()
                .into_inner()
                .scores;
        scores[0].components.as_ref().unwrap().effective_tests
    };
    // Twice each: the second answer is the cached one.
    for replica in &replicas {
        effective(replica).await;
        assert_eq!(effective(replica).await, 0);
    }
    drive(deployment, token, "T1105", Outcome::Detected).await;
    let validated = Instant::now();
    let mut seen = [None, None];
    while seen.iter().any(Option::is_none) {
        for (i, replica) in replicas.iter().enumerate() {
            if seen[i].is_none() && effective(replica).await == 1 {
                seen[i] = Some(validated.elapsed());
            }
        }
        assert!(
            validated.elapsed() < Duration::from_secs(5),
            "a replica kept serving its cached score: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("after the validation, the replicas served the new score in {seen:?}");
}

/// With two scoring replicas: a regression (T1105 partial → gap, a second
/// chain not detected) reaches a watcher on each replica under the same
/// cursor, and the purple lead is told of it once, not once per replica.
async fn regression_once(deployment: &Deployment, token: &impl Fn(&str, Role) -> String) {
    use purple_api::scoring::v1::{ScoreChangeKind, WatchScoresRequest};
    let port = deployment.port(ServiceName::Scoring);
    let mut watchers = Vec::new();
    for host in ["127.0.0.1", "127.0.0.2"] {
        let channel = Deployment::channel_to(&format!("https://{host}:{port}"));
        let mut stream =
            ScoringServiceClient::new(with_token(channel, token("viewer", Role::Viewer)))
                .watch_scores(WatchScoresRequest::default())
                .await
                .unwrap()
                .into_inner();
        stream.message().await.unwrap().unwrap();
        watchers.push(stream);
    }
    drive(deployment, token, "T1105", Outcome::NotDetected).await;
    let validated = Instant::now();
    let mut cursors = Vec::new();
    for stream in &mut watchers {
        let cursor = poll("the regression reached the watcher", async || {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a change within ten seconds")
                .ok()??;
            message
                .changes
                .iter()
                .find(|c| c.kind == ScoreChangeKind::Regression as i32 && c.technique_id == "T1105")
                .map(|c| c.cursor.clone())
        })
        .await;
        cursors.push(cursor);
    }
    eprintln!(
        "both replicas' watchers saw the regression {:?} after the validation",
        validated.elapsed()
    );
    assert_eq!(cursors[0], cursors[1], "one change, numbered once");
    let told = async || {
        CampaignsServiceClient::new(with_token(
            deployment.channel(ServiceName::Campaigns),
            token("lee", Role::PurpleLead),
        ))
        .list_notifications(cpb::ListNotificationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notifications
        .into_iter()
        .filter(|n| n.kind == "technique.regressed")
        .count()
    };
    poll("the lead was told", async || {
        (told().await > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(told().await, 1, "once, not once per replica");
}

/// The relay delivered every event to the metrics process, and a user
/// cannot call an internal RPC there.
async fn audit_trail(
    deployment: &Deployment,
    token: &impl Fn(&str, Role) -> String,
    test_id: &str,
) {
    let mut metrics = MetricsServiceClient::new(with_token(
        deployment.channel(ServiceName::Metrics),
        token("viewer", Role::Viewer),
    ));
    let events = poll("the audit trail filled", async || {
        let events = metrics
            .list_audit_events(ListAuditEventsRequest {
                test_id: test_id.to_owned(),
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
    let err = MetricsServiceClient::new(with_token(
        deployment.channel(ServiceName::Metrics),
        token("lee", Role::PurpleLead),
    ))
    .record_events(purple_api::metrics::v1::RecordEventsRequest::default())
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

/// A runtime role reads and writes its own tables and nothing else.
async fn least_privilege(pg: &Pg) {
    let scoring = pg.roles(ServiceName::Scoring);
    let campaigns = pg.roles(ServiceName::Campaigns);
    let mut conn = sqlx::PgConnection::connect(&pg.url_as(&scoring.runtime))
        .await
        .unwrap();
    let own = format!("SELECT COUNT(*) FROM {}._sqlx_migrations", scoring.schema);
    sqlx::raw_sql(sqlx::AssertSqlSafe(own))
        .execute(&mut conn)
        .await
        .expect("its own schema is readable");
    for forbidden in [
        format!("SELECT * FROM {}.tests", campaigns.schema),
        format!("CREATE TABLE {}.intruder (id BIGINT)", scoring.schema),
        format!("CREATE SCHEMA {}intruder", pg.prefix),
        format!("DROP TABLE {}._sqlx_migrations", scoring.schema),
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(forbidden.clone()))
            .execute(&mut conn)
            .await
            .expect_err(&forbidden);
        let code = err
            .as_database_error()
            .and_then(sqlx::error::DatabaseError::code)
            .unwrap_or_default();
        assert!(code == "42501" || code == "42P01", "{forbidden}: {err}");
    }
}

/// Calls from campaigns to scoring: all on the one replica DNS names, then
/// on both within seconds of the second joining the name.
async fn balancing(
    deployment: &Deployment,
    token: &impl Fn(&str, Role) -> String,
    hosts: &Path,
    first: &Process,
    second: &Process,
) {
    let mut campaigns = CampaignsServiceClient::new(with_token(
        deployment.channel(ServiceName::Campaigns),
        token("lee", Role::PurpleLead),
    ));
    let mut generate = async || {
        // Campaigns scores the actor's techniques with scoring.
        campaigns
            .generate_campaign_from_threat_actor(cpb::GenerateCampaignFromThreatActorRequest {
                threat_actor_id: "G0001".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    };
    for _ in 0..4 {
        generate().await;
    }
    // The scrape endpoint renders every two seconds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        served_by(second, "ScoreTechniques").await,
        0,
        "not in DNS yet"
    );

    write_hosts(hosts, &["127.0.0.1", "127.0.0.2"]);
    let joined = Instant::now();
    loop {
        generate().await;
        if served_by(second, "ScoreTechniques").await > 0 {
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(15),
            "the new replica never got a call"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = joined.elapsed();
    for _ in 0..20 {
        generate().await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (a, b) = (
        served_by(first, "ScoreTechniques").await,
        served_by(second, "ScoreTechniques").await,
    );
    eprintln!("new replica called {seen:?} after joining DNS; ScoreTechniques served: {a} and {b}");
    assert!(
        a > 4 && b > 1,
        "calls spread over both replicas: {a} and {b}"
    );
}

/// One request's trace across processes: campaigns calls scoring, which
/// calls ingest and campaigns; every server span of a callee is the child
/// of a client span in its caller.
async fn one_trace(deployment: &Deployment, token: &impl Fn(&str, Role) -> String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let mut request = tonic::Request::new(cpb::GenerateCampaignFromThreatActorRequest {
        threat_actor_id: "G0001".into(),
        ..Default::default()
    });
    let root = "00f067aa0ba902b7";
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{root}-01").parse().unwrap(),
    );
    CampaignsServiceClient::new(with_token(
        deployment.channel(ServiceName::Campaigns),
        token("lee", Role::PurpleLead),
    ))
    .generate_campaign_from_threat_actor(request)
    .await
    .unwrap();
    poll("the trace reached the collector", async || {
        let spans = deployment.collector.trace(&trace_id);
        let services: std::collections::BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.kind == 2)
            .map(|s| s.service.as_str())
            .collect();
        (services.len() >= 3).then_some(())
    })
    .await;
    // Let the last batches arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = deployment.collector.trace(&trace_id);
    assert!(spans.len() >= 3);
    let servers: Vec<_> = spans.iter().filter(|s| s.kind == 2).collect();
    for server in &servers {
        if server.parent_span_id == root {
            assert_eq!(server.service, "purple-campaigns", "the root request");
            continue;
        }
        let caller = spans
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {server:?} is in the trace"));
        assert_eq!(
            caller.kind, 3,
            "a server span's parent is a client span: {caller:?}"
        );
        assert_ne!(caller.service, server.service, "in another process");
    }
    let services: std::collections::BTreeSet<&str> =
        servers.iter().map(|s| s.service.as_str()).collect();
    assert!(
        ["purple-campaigns", "purple-scoring", "purple-ingest"]
            .iter()
            .all(|s| services.contains(s)),
        "{services:?}"
    );
    assert!(
        spans[0].resource.iter().any(|(k, _)| k == "k8s.pod.name"),
        "OTEL_RESOURCE_ATTRIBUTES honoured: {:?}",
        spans[0].resource
    );
}
