//! What a `purple` process tells its operators, checked on the real binary
//! with an OTLP collector in the test: an idle process — relay and
//! scheduler polling every 50 ms, health probed — exports no spans; one
//! request exports its trace; RPC, pool and outbox metrics reach both the
//! Prometheus endpoint (its own port, nothing but `/metrics`) and OTLP;
//! unknown methods cannot add series.

use std::time::Duration;

use purple_api::ingest::v1::{ListTacticsRequest, ingest_service_client::IngestServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    collector::Collector,
    helpers::free_port,
    split::{scrape, served},
};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn idle_is_silent_requests_are_traced_and_metrics_are_exported() {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_purple"))
        .arg("serve")
        .env("PURPLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PURPLE_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .env("PURPLE_DATA_DIR", dir.path())
        .env("PURPLE_RELAY_INTERVAL_MS", "50")
        .env_remove("PURPLE_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("OTEL_SERVICE_NAME", "purple-observed")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    // Probed like a kubelet would, for two seconds of idling.
    let mut health = HealthClient::new(channel.clone());
    let mut probes = 0;
    for _ in 0..200 {
        if health
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.get_ref().status == 1)
        {
            probes += 1;
            if probes == 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(probes, 20, "the server came up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = collector.spans();
    assert!(idle.is_empty(), "an idle process exported {idle:#?}");

    // One request: its trace arrives, under the configured service name.
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let bearer: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {}", token.trim()).parse().unwrap();
    let mut ingest =
        IngestServiceClient::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
    ingest.list_tactics(ListTacticsRequest {}).await.unwrap();
    // A method nobody serves, sent by an authenticated caller: counted,
    // under `_OTHER`, never under its own name.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(ListTacticsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    let unknown = grpc
        .unary(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/purple.ingest.v1.IngestService/NoSuchMethod1234",
            ),
            tonic_prost::ProstCodec::<ListTacticsRequest, ListTacticsRequest>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !collector
        .spans()
        .iter()
        .any(|s| s.kind == 2 && s.service == "purple-observed")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request's trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The scrape endpoint: the call, the pools, the outbox.
    let metrics_addr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(metrics_addr).await;
        if served(&text, "ListTactics") == 1 && text.contains("purple_outbox_backlog{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the call: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("rpc_server_call_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("db_client_connection_count{db_client_connection_pool_name=\"campaigns\""),
        "{text}"
    );
    assert!(
        text.contains("purple_outbox_oldest_age_seconds{receiver=\"metrics\"} 0"),
        "{text}"
    );
    assert!(
        !text.contains("Health"),
        "health checks are not measured: {text}"
    );
    assert!(text.contains("rpc_method=\"_OTHER\""), "{text}");
    assert!(!text.contains("NoSuchMethod"), "{text}");
    assert!(
        http_get(metrics_addr, "/")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // And the same metrics over OTLP.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !collector
        .metric_names()
        .iter()
        .any(|n| n == "rpc.server.call.duration")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics over OTLP"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
