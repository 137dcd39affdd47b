//! Health that means something: with the database gone, every hosted
//! service and the overall status turn NOT_SERVING within seconds (so
//! readiness takes the pod out of its Service) while liveness stays
//! SERVING (so the pod is not restarted for another system's outage);
//! requests fail UNAVAILABLE instead of hanging; when the database is
//! back, so is SERVING, and requests succeed. PostgreSQL pass only: the
//! test owns a private cluster it can kill.

use std::time::{Duration, Instant};

use purple_api::ingest::v1::{ListTacticsRequest, ingest_service_client::IngestServiceClient};
use purple_runtime::ServiceName;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{helpers::spawn_app_with, pg_cluster::Cluster};

async fn status(channel: &tonic::transport::Channel, service: &str) -> ServingStatus {
    let answer = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers whatever the database");
    ServingStatus::try_from(answer.get_ref().status).unwrap()
}

/// Waits until `service`'s status ("" for overall) is `wanted`; how long
/// it took.
async fn until(
    channel: &tonic::transport::Channel,
    service: &str,
    wanted: ServingStatus,
) -> Duration {
    let started = Instant::now();
    while status(channel, service).await != wanted {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "health never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// A private PostgreSQL cluster the test may kill, in the PostgreSQL pass
/// only and where the server binaries and root are at hand.
fn private_cluster() -> Option<Cluster> {
    if std::env::var("PURPLE_TEST_DATABASE_URL").is_err() {
        eprintln!("PostgreSQL pass only");
        return None;
    }
    let cluster = Cluster::start(false);
    if cluster.is_none() {
        eprintln!("needs root and PostgreSQL 15's server binaries: skipped");
    }
    cluster
}

#[tokio::test]
async fn health_follows_the_database_down_and_back() {
    let Some(cluster) = private_cluster() else {
        return;
    };
    let url = cluster.url();
    let app = spawn_app_with(|s| {
        s.storage.database_url = Some(url);
        s.storage.db_acquire_timeout_secs = 5;
    })
    .await;
    let ingest = || IngestServiceClient::new(app.channel.clone());
    assert_eq!(status(&app.bare, "").await, ServingStatus::Serving);

    cluster.kill();
    let killed = Instant::now();
    let down = until(&app.bare, "", ServingStatus::NotServing).await;
    eprintln!("NOT_SERVING {down:?} after the database died");
    assert!(down < Duration::from_secs(5), "{down:?}");
    // Each service pings its own database on its own clock: the overall
    // status turns with the first, the others follow within their round.
    for service in ServiceName::ALL {
        until(&app.bare, service.grpc_name(), ServingStatus::NotServing).await;
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "{} still SERVING {:?} after the database died",
            service.grpc_name(),
            killed.elapsed()
        );
    }
    assert_eq!(status(&app.bare, "liveness").await, ServingStatus::Serving);
    let started = Instant::now();
    let refused = ingest()
        .list_tactics(ListTacticsRequest {})
        .await
        .expect_err("no database, no answer");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a request waits {:?} for a dead database",
        started.elapsed()
    );

    cluster.resume();
    let back = until(&app.bare, "", ServingStatus::Serving).await;
    eprintln!("SERVING {back:?} after the database returned");
    assert!(back < Duration::from_secs(5), "{back:?}");
    ingest()
        .list_tactics(ListTacticsRequest {})
        .await
        .expect("served again");
    app.shutdown().await.unwrap();
}

/// Connections the database dropped while they sat idle (a failover, an
/// idle-session timeout, an administrator) are found dead when next taken
/// from the pool and replaced: no request meets one. The pool pings only a
/// connection idle for a second or more (`db.rs`, pool_options), so this
/// is what that ping is for. PostgreSQL pass only, on a private cluster
/// whose connections the test may end.
#[tokio::test]
async fn connections_the_database_dropped_are_replaced_before_a_request_meets_them() {
    let Some(cluster) = private_cluster() else {
        return;
    };
    let url = cluster.url();
    let app = spawn_app_with(|s| s.storage.database_url = Some(url.clone())).await;
    let ingest = || IngestServiceClient::new(app.channel.clone());
    let burst = || async {
        let calls = (0..16).map(|_| async { ingest().list_tactics(ListTacticsRequest {}).await });
        futures::future::join_all(calls).await
    };
    // Several connections open and idle in the pool.
    for answer in burst().await {
        answer.expect("served");
    }

    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(ended.len() >= 2, "the app had connections open: {ended:?}");
    admin.close().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for (i, answer) in burst().await.into_iter().enumerate() {
        answer.unwrap_or_else(|e| panic!("request {i} met a dropped connection: {e:?}"));
    }
    app.shutdown().await.unwrap();
}
