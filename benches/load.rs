//! The load driver: the `purple` binary as a separate process, loaded with
//! the enterprise-size data set through the supported imports (ATT&CK
//! v18.1, 4,000 Sigma rules, 50,000 tests by the history import), then
//! each scenario run by N concurrent clients for a fixed time over real
//! gRPC. Reports requests per second, p50/p90/p99 latency, the server's
//! CPU and peak RSS, and the statements and RPCs per request (from the
//! server's own Prometheus counters), as a table and as JSON.
//!
//! Run: `cargo bench --bench load` (SQLite) or
//! `PURPLE_BENCH_DATABASE_URL=postgres://... cargo bench --bench load`.
//! `PURPLE_LOAD_CLIENTS` (32) and `PURPLE_LOAD_SECS` (10) size a run;
//! `PURPLE_LOAD_JSON` names the JSON file (target/load-<backend>.json);
//! `PURPLE_LOAD_ONLY=<text>` runs only the scenarios whose name has it;
//! `PURPLE_LOAD_COLD_RUNS` (20) how many cold organization scores are
//! timed (more to profile them); `PURPLE_LOAD_SERVER_LOG=<filter>` runs
//! the server with that log filter (`sqlx::query=debug` times every
//! statement) into target/load-server.log; `PURPLE_LOAD_SERVER_BIN` runs
//! another build of the server (an A/B against an older commit's).

mod support;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use purple_api::{
    campaigns::v1::{
        GetCampaignProgressRequest, GetTestsByIdsRequest, NewTest, Test, TestAction,
        TransitionTestRequest, campaigns_service_client::CampaignsServiceClient,
    },
    common::v1::{Outcome, Role, TimeWindow},
    ingest::v1::{GetThreatSignalsRequest, ingest_service_client::IngestServiceClient},
    metrics::v1::{
        GetOperationalSummaryRequest, MetricFilter, metrics_service_client::MetricsServiceClient,
    },
    scoring::v1::{
        GetOrganizationScoreRequest, InvalidateTechniquesRequest, PlanNextTestsRequest,
        ScoreTechniquesRequest, scoring_service_client::ScoringServiceClient,
    },
};
use purple_runtime::{
    auth::tokens::Minter,
    settings::AuthSettings,
    time::{Micros, now_micros, timestamp},
};
use serde_json::json;
use support::{
    Authed, Bearer,
    history::{Lcg, Shape, TESTS_PER_CAMPAIGN, generate},
};
use tonic::{service::interceptor::InterceptedService, transport::Endpoint};

const TESTS: usize = 50_000;
const DAY: i64 = 86_400_000_000;

/// The server under load: a child process on its own data directory.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    addr: String,
    metrics: String,
    dir: tempfile::TempDir,
    backend: &'static str,
    /// PostgreSQL's URL and the server's schema prefix.
    postgres: Option<(String, String)>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        // Another build of the server (an A/B against an older commit's
        // binary on the same data and driver).
        let binary = std::env::var("PURPLE_LOAD_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_purple").to_owned());
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--request-timeout-secs", "600"])
            .env_remove("PURPLE_DATABASE_URL")
            .kill_on_drop(true);
        match std::env::var("PURPLE_LOAD_SERVER_LOG") {
            Ok(filter) => {
                let log = std::fs::File::create(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/load-server.log"),
                )
                .unwrap();
                command
                    .env("RUST_LOG", filter)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
            }
            Err(_) => {
                command
                    .env("RUST_LOG", "warn")
                    .stdout(std::process::Stdio::null());
            }
        }
        let postgres = support::bench_database_url().map(|url| {
            let prefix = format!("l{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
            command
                .args(["--database-url", &url])
                .args(["--schema-prefix", &prefix]);
            (url, prefix)
        });
        let backend = if postgres.is_some() {
            "postgresql"
        } else {
            "sqlite"
        };
        let child = command.spawn().unwrap();
        let pid = child.id().unwrap();
        let server = Self {
            child,
            pid,
            addr: format!("http://127.0.0.1:{port}"),
            metrics: format!("127.0.0.1:{metrics_port}"),
            dir,
            backend,
            postgres,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.dir.path().join("admin.token").exists()
            || scrape(&server.metrics).await.is_none()
        {
            assert!(Instant::now() < deadline, "the server never started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn minter(&self) -> Minter {
        Minter::new(
            &AuthSettings::default(),
            Some(&purple_runtime::auth::bootstrap::secret_path(
                self.dir.path(),
            )),
        )
        .unwrap()
        .unwrap()
    }

    /// A channel of its own (one HTTP/2 connection) carrying `role`'s token.
    async fn channel(&self, subject: &str, role: Role) -> Authed {
        let token = self
            .minter()
            .mint(subject, role, subject, Duration::from_secs(86_400));
        let channel = Endpoint::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        InterceptedService::new(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
    }

    /// CPU seconds (user + system) the server has used.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks()
    }

    /// The server's peak resident memory, MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Prometheus text of the server's metrics endpoint.
async fn scrape(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.contains("200").then_some(text)
}

/// Statements run and RPCs served so far, from the server's counters.
async fn counters(server: &Server) -> (f64, f64) {
    // The endpoint renders every 2 s: wait for a rendering after the last
    // request.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let text = scrape(&server.metrics).await.unwrap();
    let sum = |prefix: &str, suffix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                let name = name.split('{').next()?;
                name.ends_with(suffix).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    };
    (
        sum("purple_db_statements", "_total"),
        sum("rpc_server_call_duration", "_count"),
    )
}

/// Server time (seconds) and count of each RPC method so far, from the
/// duration histograms' sums and counts (every service's server side).
async fn rpc_times(server: &Server) -> std::collections::BTreeMap<String, (f64, f64)> {
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let text = scrape(&server.metrics).await.unwrap_or_default();
    let mut times = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("rpc_server_call_duration"))
    {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(method) = name
            .split("rpc_method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let entry = times.entry(method.to_owned()).or_default();
        if name.split('{').next().is_some_and(|n| n.ends_with("_sum")) {
            entry.0 += value;
        } else if name
            .split('{')
            .next()
            .is_some_and(|n| n.ends_with("_count"))
        {
            entry.1 += value;
        }
    }
    times
}

/// What one scenario measured.
struct Figures {
    name: String,
    clients: usize,
    requests: usize,
    seconds: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    cpu: f64,
    rss: f64,
    statements: f64,
    rpcs: f64,
}

impl Figures {
    fn json(&self) -> serde_json::Value {
        json!({
            "scenario": self.name, "clients": self.clients, "requests": self.requests,
            "req_per_s": self.requests as f64 / self.seconds,
            "p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99,
            "server_cpu_percent": self.cpu, "server_peak_rss_mib": self.rss,
            "statements_per_request": self.statements, "rpcs_per_request": self.rpcs,
        })
    }
}

/// Runs `clients` copies of `call` for `secs` seconds (each client its own
/// connection and state) and measures the server meanwhile.
async fn scenario<S, F, Fut>(
    server: &Server,
    name: &str,
    clients: usize,
    secs: f64,
    make: impl Fn(usize) -> S,
    call: F,
) -> Option<Figures>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = S> + Send,
{
    // PURPLE_LOAD_ONLY=<text>: only the scenarios whose name contains it
    // (to profile one).
    if std::env::var("PURPLE_LOAD_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return None;
    }
    let (statements_before, rpcs_before) = counters(server).await;
    let cpu_before = server.cpu_seconds();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let call = call.clone();
        let mut state = make(i);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                state = call(state).await;
                latencies.push(t.elapsed().as_secs_f64() * 1_000.0);
            }
            latencies
        }));
    }
    let mut latencies: Vec<f64> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = (server.cpu_seconds() - cpu_before) / seconds * 100.0;
    let (statements_after, rpcs_after) = counters(server).await;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let requests = latencies.len();
    Some(Figures {
        name: name.to_owned(),
        clients,
        requests,
        seconds,
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        cpu,
        rss: server.peak_rss_mib(),
        statements: (statements_after - statements_before) / requests as f64,
        rpcs: (rpcs_after - rpcs_before) / requests as f64,
    })
}

/// The catalogue and the history, through the imports. Returns the live
/// technique ids.
async fn load(server: &Server, admin: &Authed, now: Micros) -> Vec<String> {
    let (techniques, rule_ids) = support::catalogue::enterprise(admin).await;
    let history = generate(
        &Shape {
            tests: TESTS,
            results_per_validated: 5,
            remediations: 5_000,
        },
        &techniques,
        &rule_ids,
        now,
    );
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let (report, took) = support::history::import(admin, &history.ndjson, &trace).await;
    println!(
        "loaded {} history records in {:.1} s ({} on {})",
        report.records,
        took.as_secs_f64(),
        server.backend,
        std::env::consts::ARCH
    );
    // Let the outbox drain into metrics and scoring before measuring: the
    // backlog gauge is measured every 5 s and rendered every 2 s, so two
    // zero readings 6 s apart (a stale zero would let the relay's
    // invalidations of the import drop the cache under the first
    // scenarios).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut zeros = 0;
    loop {
        let text = scrape(&server.metrics).await.unwrap_or_default();
        let backlog: f64 = text
            .lines()
            .filter(|l| l.starts_with("purple_outbox_backlog"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if text.contains("purple_outbox_backlog") && backlog == 0.0 {
            zeros += 1;
            if zeros == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(6)).await;
            continue;
        }
        zeros = 0;
        assert!(Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some((url, prefix)) = &server.postgres {
        support::analyze(Some(url), prefix).await;
    }
    techniques
}

#[tokio::main]
async fn main() {
    let clients: usize = env_or("PURPLE_LOAD_CLIENTS", 32);
    let secs: f64 = env_or("PURPLE_LOAD_SECS", 10.0);
    let cold_runs: usize = env_or("PURPLE_LOAD_COLD_RUNS", 20).max(1);
    let server = Server::start().await;
    let admin = server.channel("admin", Role::Admin).await;
    let now = now_micros();
    let techniques = Arc::new(load(&server, &admin, now).await);
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# load — {} — {clients} clients, {secs} s per scenario, load average before: {}",
        server.backend,
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // One connection per client, as separate callers would have.
    let mut viewers = Vec::new();
    for _ in 0..clients {
        viewers.push(server.channel("viewer", Role::Viewer).await);
    }
    let viewers = Arc::new(viewers);
    let mut all = Vec::new();

    // Warm: the board (and every technique's score) in the cache.
    ScoringServiceClient::new(viewers[0].clone())
        .max_decoding_message_size(64 << 20)
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap();

    let (v, t) = (viewers.clone(), techniques.clone());
    all.push(
        scenario(
            &server,
            "ScoreTechniques (50 ids, now, warm)",
            clients,
            secs,
            move |i| (ScoringServiceClient::new(v[i].clone()), i * 50, t.clone()),
            |(mut client, at, t): (ScoringServiceClient<Authed>, usize, Arc<Vec<String>>)| async move {
                let ids: Vec<String> = (0..50).map(|k| t[(at + k) % t.len()].clone()).collect();
                client
                    .score_techniques(ScoreTechniquesRequest { technique_ids: ids, as_of: None })
                    .await
                    .unwrap();
                (client, at + 50, t)
            },
        )
        .await,
    );

    let v = viewers.clone();
    all.push(
        scenario(
            &server,
            "GetOrganizationScore (cached)",
            clients,
            secs,
            move |i| ScoringServiceClient::new(v[i].clone()),
            |mut client: ScoringServiceClient<Authed>| async move {
                client
                    .get_organization_score(GetOrganizationScoreRequest::default())
                    .await
                    .unwrap();
                client
            },
        )
        .await,
    );

    let v = viewers.clone();
    all.push(
        scenario(
            &server,
            "PlanNextTests (20, all techniques)",
            clients,
            secs,
            move |i| ScoringServiceClient::new(v[i].clone()),
            |mut client: ScoringServiceClient<Authed>| async move {
                let plan = client
                    .plan_next_tests(PlanNextTestsRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(plan.techniques.len(), 20);
                client
            },
        )
        .await,
    );

    let (v, t) = (viewers.clone(), techniques.clone());
    all.push(
        scenario(
            &server,
            "GetThreatSignals (all techniques)",
            clients,
            secs,
            move |i| (IngestServiceClient::new(v[i].clone()), t.clone()),
            |(mut client, t): (IngestServiceClient<Authed>, Arc<Vec<String>>)| async move {
                client
                    .get_threat_signals(GetThreatSignalsRequest {
                        technique_ids: t.to_vec(),
                        intel_since: Some(timestamp(Micros::now() - 365 * DAY)),
                    })
                    .await
                    .unwrap();
                (client, t)
            },
        )
        .await,
    );

    // Cold: one client, every technique invalidated before each request
    // (not timed: it is the state the request finds).
    let mut invalidate =
        ScoringServiceClient::new(server.channel("service:load", Role::Service).await);
    let mut scoring =
        ScoringServiceClient::new(viewers[0].clone()).max_decoding_message_size(64 << 20);
    // As ingest invalidates after an import (every technique, and the
    // catalogue goes too), and as campaigns' relay does after a round of
    // transitions (five techniques; the others' scores stay cached).
    for (source, what, touched) in [
        (
            "ingest",
            "an import invalidated every technique",
            techniques.len(),
        ),
        ("campaigns", "transitions invalidated five techniques", 5),
        // Nothing held: the catalogue and both sides of every technique
        // asked again (an operator forcing a recompute).
        (
            "operator",
            "every technique and its tests invalidated",
            techniques.len(),
        ),
    ] {
        let mut cold = Vec::new();
        let before = rpc_times(&server).await;
        for _ in 0..cold_runs {
            for chunk in techniques[..touched].chunks(1_000) {
                invalidate
                    .invalidate_techniques(InvalidateTechniquesRequest {
                        technique_ids: chunk.to_vec(),
                        source: source.into(),
                    })
                    .await
                    .unwrap();
            }
            let start = Instant::now();
            let score = scoring
                .get_organization_score(GetOrganizationScoreRequest::default())
                .await
                .unwrap()
                .into_inner();
            cold.push(start.elapsed().as_secs_f64() * 1_000.0);
            assert!(!score.cached);
        }
        cold.sort_by(f64::total_cmp);
        println!(
            "GetOrganizationScore cold after {what} (1 client, {cold_runs} runs): p50 {:.1} ms, min {:.1} ms",
            cold[cold.len() / 2],
            cold[0]
        );
        // Where the time went: server time per call of each RPC the runs
        // made (the invalidations included).
        let after = rpc_times(&server).await;
        let spent: Vec<String> = after
            .iter()
            .filter_map(|(method, (sum, count))| {
                let (s0, c0) = before.get(method).copied().unwrap_or_default();
                (count > &c0).then(|| {
                    format!(
                        "{method} {:.1} ms × {}",
                        (sum - s0) / (count - c0) * 1_000.0,
                        count - c0
                    )
                })
            })
            .collect();
        println!("  server time per call: {}", spent.join(", "));
    }

    let v = viewers.clone();
    all.push(
        scenario(
            &server,
            "GetTestsByIds (100 ids)",
            clients,
            secs,
            move |i| (CampaignsServiceClient::new(v[i].clone()), Lcg(i as u64 + 1)),
            |(mut client, mut rng): (CampaignsServiceClient<Authed>, Lcg)| async move {
                let ids: Vec<String> = (0..100)
                    .map(|_| format!("bench-{}", rng.next(TESTS as u64)))
                    .collect();
                client
                    .get_tests_by_ids(GetTestsByIdsRequest { test_ids: ids })
                    .await
                    .unwrap();
                (client, rng)
            },
        )
        .await,
    );

    let v = viewers.clone();
    all.push(
        scenario(
            &server,
            "GetCampaignProgress (100 campaigns)",
            clients,
            secs,
            move |i| (CampaignsServiceClient::new(v[i].clone()), Lcg(i as u64 + 1)),
            |(mut client, mut rng): (CampaignsServiceClient<Authed>, Lcg)| async move {
                let campaigns = TESTS.div_ceil(TESTS_PER_CAMPAIGN) as u64;
                let ids: Vec<String> = (0..100)
                    .map(|_| format!("bench-c{}", rng.next(campaigns)))
                    .collect();
                let progress = client
                    .get_campaign_progress(GetCampaignProgressRequest { campaign_ids: ids })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(progress.missing_ids.is_empty());
                // Counted, not just answered: every campaign holds its tests.
                assert!(
                    progress
                        .progress
                        .iter()
                        .all(|p| p.total as usize == TESTS_PER_CAMPAIGN),
                    "{:?}",
                    progress.progress.first()
                );
                (client, rng)
            },
        )
        .await,
    );

    let v = viewers.clone();
    let window = TimeWindow {
        from: Some(timestamp(now - 365 * DAY)),
        to: Some(timestamp(now + DAY)),
    };
    all.push(
        scenario(
            &server,
            "GetOperationalSummary (one year)",
            clients,
            secs,
            move |i| MetricsServiceClient::new(v[i].clone()),
            move |mut client: MetricsServiceClient<Authed>| async move {
                client
                    .get_operational_summary(GetOperationalSummaryRequest {
                        filter: Some(MetricFilter {
                            window: Some(window),
                            ..Default::default()
                        }),
                    })
                    .await
                    .unwrap();
                client
            },
        )
        .await,
    );
    // The same with a window of its own per client (shifted by a second),
    // which no request shares: the summaries' own cost under load.
    let v = viewers.clone();
    all.push(
        scenario(
            &server,
            "GetOperationalSummary (one year, a window per client)",
            clients,
            secs,
            move |i| (MetricsServiceClient::new(v[i].clone()), i as i64),
            move |(mut client, i): (MetricsServiceClient<Authed>, i64)| async move {
                client
                    .get_operational_summary(GetOperationalSummaryRequest {
                        filter: Some(MetricFilter {
                            window: Some(TimeWindow {
                                from: Some(timestamp(now - 365 * DAY + i * 1_000_000)),
                                to: Some(timestamp(now + DAY)),
                            }),
                            ..Default::default()
                        }),
                    })
                    .await
                    .unwrap();
                (client, i)
            },
        )
        .await,
    );

    // Transitions: each client walks its own tests through the workflow,
    // one TransitionTest per request, as the lead, red and blue of a test.
    let mut walkers = Vec::new();
    for i in 0..clients {
        let lead = server.channel("lead", Role::PurpleLead).await;
        let red = server.channel("red", Role::RedTech).await;
        let blue = server.channel("blue", Role::BlueTech).await;
        let created = CampaignsServiceClient::new(lead.clone())
            .create_tests(purple_api::campaigns::v1::CreateTestsRequest {
                actor_id: String::new(),
                tests: (0..200)
                    .map(|k| NewTest {
                        technique_id: techniques[(i * 200 + k) % techniques.len()].clone(),
                        red_assignee_id: "red".into(),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .tests;
        walkers.push(Walker {
            lead: CampaignsServiceClient::new(lead),
            red: CampaignsServiceClient::new(red),
            blue: CampaignsServiceClient::new(blue),
            tests: created,
            at: 0,
            step: 0,
        });
    }
    let walkers = Arc::new(std::sync::Mutex::new(
        walkers.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    all.push(
        scenario(
            &server,
            "TransitionTest (workflow mix)",
            clients,
            secs,
            move |i| walkers.lock().unwrap()[i].take().unwrap(),
            Walker::next,
        )
        .await,
    );

    println!(
        "| scenario | clients | req/s | p50 ms | p90 ms | p99 ms | server CPU % | server peak RSS MiB | statements/req | RPCs/req |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all.iter().flatten() {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} |",
            f.name,
            f.clients,
            f.requests as f64 / f.seconds,
            f.p50,
            f.p90,
            f.p99,
            f.cpu,
            f.rss,
            f.statements,
            f.rpcs
        );
    }
    let path = std::env::var("PURPLE_LOAD_JSON").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/load-{}.json", server.backend))
        },
        PathBuf::from,
    );
    let report = json!({
        "backend": server.backend, "clients": clients, "seconds_per_scenario": secs,
        "load_average_before": load_avg.trim(),
        "scenarios": all.iter().flatten().map(Figures::json).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("JSON: {}", path.display());
    let mut child = server.child;
    let _ = child.kill().await;
    if let Some((url, prefix)) = &server.postgres {
        support::drop_schemas(Some(url), prefix).await;
    }
}

/// One client of the transition scenario: its tests and where it is.
struct Walker {
    lead: CampaignsServiceClient<Authed>,
    red: CampaignsServiceClient<Authed>,
    blue: CampaignsServiceClient<Authed>,
    tests: Vec<Test>,
    at: usize,
    step: usize,
}

impl Walker {
    /// The next transition of the current test; a validated test hands
    /// over to the next one. A client that has walked all its tests
    /// creates as many again, of the same techniques (one `CreateTests`,
    /// counted as a request: 1 in 1,000), rather than idle in the figures.
    async fn next(mut self) -> Self {
        use TestAction::*;
        if self.at >= self.tests.len() {
            let tests = self
                .tests
                .iter()
                .map(|t| NewTest {
                    technique_id: t.technique_id.clone(),
                    red_assignee_id: "red".into(),
                    ..Default::default()
                })
                .collect();
            self.tests = self
                .lead
                .create_tests(purple_api::campaigns::v1::CreateTestsRequest {
                    actor_id: String::new(),
                    tests,
                })
                .await
                .unwrap()
                .into_inner()
                .tests;
            self.at = 0;
            return self;
        }
        let test = &self.tests[self.at];
        let (client, action) = match self.step {
            0 => (&mut self.red, StartRed),
            1 => (&mut self.red, CompleteRed),
            2 => (&mut self.blue, StartBlue),
            3 => (&mut self.blue, CompleteBlue),
            _ => (&mut self.lead, Validate),
        };
        let mut request = TransitionTestRequest {
            test_id: test.test_id.clone(),
            action: action as i32,
            expected_version: test.version,
            ..Default::default()
        };
        if action == CompleteBlue {
            request.outcome = Outcome::Detected as i32;
            request.detected_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
        }
        let after = client
            .transition_test(request)
            .await
            .unwrap()
            .into_inner()
            .test
            .unwrap();
        self.tests[self.at] = after;
        self.step += 1;
        if self.step == 5 {
            self.step = 0;
            self.at += 1;
        }
        self
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
