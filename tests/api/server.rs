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

/// The file descriptor that defines `symbol`, through reflection v1 or
/// v1alpha, decoded.
async fn file_defining(
    app: &crate::helpers::TestApp,
    symbol: &str,
    alpha: bool,
) -> prost_types::FileDescriptorProto {
    use prost::Message;
    let files = if alpha {
        use tonic_reflection::pb::v1alpha as r;
        let request = r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                r::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
            ),
        };
        let response = r::server_reflection_client::ServerReflectionClient::new(app.bare.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap();
        match response.message_response {
            Some(r::server_reflection_response::MessageResponse::FileDescriptorResponse(f)) => {
                f.file_descriptor_proto
            }
            other => panic!("v1alpha: {other:?}"),
        }
    } else {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let response = ServerReflectionClient::new(app.bare.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .next()
            .await
            .unwrap()
            .unwrap();
        match response.message_response {
            Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
            other => panic!("v1: {other:?}"),
        }
    };
    let (package, name) = symbol.rsplit_once('.').unwrap();
    files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .find(|f| f.package() == package && f.message_type.iter().any(|m| m.name() == name))
        .unwrap_or_else(|| panic!("no file defines {symbol}"))
}

#[tokio::test]
async fn a_refusals_error_details_resolve_through_reflection_v1_and_v1alpha() {
    use prost::Message;
    use purple_api::metrics::v1::{
        GetMttdRequest, MetricFilter, metrics_service_client::MetricsServiceClient,
    };
    use tonic_types::StatusExt;
    let app = spawn_app_with(|s| s.auth.reflection = Toggle::On).await;

    // A window that ends before it starts: INVALID_ARGUMENT with a BadRequest.
    let err = MetricsServiceClient::new(app.channel.clone())
        .get_mttd(GetMttdRequest {
            filter: Some(MetricFilter {
                window: Some(purple_api::common::v1::TimeWindow {
                    from: Some(crate::helpers::ts(2_000_000_000)),
                    to: Some(crate::helpers::ts(1_000_000_000)),
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let violations = err
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("a BadRequest detail")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].field.starts_with("filter.window"),
        "{violations:?}"
    );
    // What a client like grpcurl sees: Any messages named by type URL.
    let details = tonic_types::pb::Status::decode(err.details())
        .unwrap()
        .details;
    let types: Vec<&str> = details
        .iter()
        .filter_map(|any| any.type_url.strip_prefix("type.googleapis.com/"))
        .collect();
    assert!(types.contains(&"google.rpc.BadRequest"), "{types:?}");

    // Every type a refusal carries resolves through both reflection
    // versions, with the fields a client decodes it by.
    for alpha in [false, true] {
        for symbol in &types {
            let file = file_defining(&app, symbol, alpha).await;
            assert_eq!(file.package(), "google.rpc", "{symbol}");
        }
        let file = file_defining(&app, "google.rpc.BadRequest", alpha).await;
        let bad_request = file
            .message_type
            .iter()
            .find(|m| m.name() == "BadRequest")
            .unwrap();
        let violation = bad_request
            .nested_type
            .iter()
            .find(|m| m.name() == "FieldViolation")
            .expect("BadRequest.FieldViolation");
        let fields: Vec<(&str, i32)> = violation
            .field
            .iter()
            .map(|f| (f.name(), f.number()))
            .collect();
        assert!(
            fields.contains(&("field", 1)) && fields.contains(&("description", 2)),
            "{fields:?}"
        );
    }
    app.shutdown().await.unwrap();
}
