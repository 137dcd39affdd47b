//! The all-in-one server: health, reflection, trace context and shutdown.

use purple_api::SERVICE_NAMES;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use purple_runtime::settings::Toggle;

use purple_runtime::ServiceName;

use crate::helpers::{spawn_app, spawn_app_with, spawn_services};

#[tokio::test]
async fn health_is_serving_overall_and_per_service() {
    let app = spawn_app().await;
    // Health needs no token: probes and load balancers have none.
    let mut health = HealthClient::new(app.bare.clone());
    for service in ["", "liveness"].into_iter().chain(SERVICE_NAMES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "purple.nope.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.shutdown().await.unwrap();
}

/// The services a server's reflection lists (v1, which buf and tonic's
/// client use).
async fn listed(app: &crate::helpers::TestApp) -> Vec<String> {
    let mut reflection = ServerReflectionClient::new(app.bare.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = responses.next().await else {
        panic!("no reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_lists_the_four_services_and_health_without_a_token() {
    let app = spawn_app_with(|s| s.auth.reflection = Toggle::On).await;
    let names = listed(&app).await;
    for expected in SERVICE_NAMES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_only_the_services_a_process_hosts() {
    let app = spawn_services(&[ServiceName::Metrics], |s| {
        s.auth.reflection = Toggle::On;
    })
    .await;
    assert_eq!(
        listed(&app).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "purple.metrics.v1.MetricsService",
        ]
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_can_be_turned_off() {
    let app = spawn_app_with(|s| s.auth.reflection = Toggle::Off).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let err = ServerReflectionClient::new(app.bare.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn health_goes_not_serving_on_shutdown_and_the_server_exits_cleanly() {
    let mut app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "purple.metrics.v1.MetricsService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let handle = app.begin_shutdown();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_process_refuses_to_start_without_the_address_of_a_peer_it_calls() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::helpers::test_settings(dir.path());
    let refused = purple::Application::build(settings, &[ServiceName::Scoring])
        .await
        .err()
        .expect("scoring alone needs to know where ingest and campaigns are");
    let message = format!("{refused:#}");
    assert!(
        message.contains("scoring calls ingest") && message.contains("--ingest-addr"),
        "{message}"
    );
}
