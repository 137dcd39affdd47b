//! The `purple` binary as an operator runs it: a real process, with an
//! OTLP collector that does not exist, ended by SIGTERM.

use std::time::{Duration, Instant};

use purple_api::ingest::v1::{ListTacticsRequest, ingest_service_client::IngestServiceClient};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn a_dead_collector_slows_nothing_and_sigterm_exits_zero_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let log = dir.path().join("server.log");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_purple"))
        .arg("serve")
        .env("PURPLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("PURPLE_DATA_DIR", dir.path())
        .env_remove("PURPLE_DATABASE_URL")
        // Nothing listens there: export fails, requests must not notice.
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(status, Ok(ref r) if r.get_ref().status == ServingStatus::Serving as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "the server never became SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The embedded default made its own signing key and an admin token,
    // readable by its owner only.
    let token_file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file).expect("admin.token was created");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bearer: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {}", token.trim()).parse().unwrap();
    let mut ingest =
        IngestServiceClient::with_interceptor(channel.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", bearer.clone());
            Ok(r)
        });
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let start = Instant::now();
        ingest.list_tactics(ListTacticsRequest {}).await.unwrap();
        slowest = slowest.max(start.elapsed());
    }
    // Generous for a shared machine; an exporter on the request path would
    // wait out connection attempts to the dead collector.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );

    let pid = server.id().unwrap().to_string();
    let stopped = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("exited within 5 s")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The last line says how the process ended.
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["fields"]["message"], "stopped: drained 0 in-flight requests, exit status 0",
        "{text}"
    );
}
