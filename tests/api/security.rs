//! Identity end to end (SECURITY.md): every RPC the server lists through
//! reflection refuses a caller without a token, and lets each role do
//! exactly what the roles table says; tokens signed by another key, for
//! another audience, or not tokens at all are refused; the acting user
//! comes from the token.

use std::time::Duration;

use prost::Message;
use purple_api::{
    campaigns::v1::{self as cpb, campaigns_service_client::CampaignsServiceClient},
    common::v1::Role,
};
use purple_runtime::{
    auth::{
        access::{self, Rule},
        tokens::Minter,
    },
    settings::{AuthSettings, Toggle},
};
use tokio_stream::StreamExt;
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{TestApp, spawn_app_with};

/// A message with no fields: every request message decodes from it.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

/// Every method of every service reflection lists, as `pkg.Service/Method`
/// and whether the server streams its answer.
async fn methods_from_reflection(app: &TestApp) -> Vec<(String, bool)> {
    let mut reflection = ServerReflectionClient::new(app.bare.clone());
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let services: Vec<String> = {
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter([ask(MessageRequest::ListServices(
                String::new(),
            ))]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else {
            panic!("no answer")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a list")
        };
        list.service.into_iter().map(|s| s.name).collect()
    };
    let mut methods = Vec::new();
    for service in services {
        if service.starts_with("grpc.reflection.") {
            continue;
        }
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter([ask(
                MessageRequest::FileContainingSymbol(service.clone()),
            )]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(answer)) = answers.next().await else {
            panic!("no answer")
        };
        let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
            panic!("no file for {service}")
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for s in &file.service {
                let full = format!("{}.{}", file.package(), s.name());
                if full != service {
                    continue;
                }
                for m in &s.method {
                    methods.push((format!("{full}/{}", m.name()), m.server_streaming()));
                }
            }
        }
    }
    methods.sort();
    methods.dedup();
    methods
}

/// Calls a method with an empty request (every request message accepts
/// one) and returns the status code it ends with (for a streamed answer,
/// the code of its start).
async fn call(channel: Channel, token: Option<&str>, method: &str, streamed: bool) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Empty {});
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = PathAndQuery::try_from(format!("/{method}")).unwrap();
    let codec = tonic_prost::ProstCodec::<Empty, Empty>::default();
    let answer = if streamed {
        grpc.server_streaming(request, path, codec).await.map(drop)
    } else {
        grpc.unary(request, path, codec).await.map(drop)
    };
    answer.err().map_or(Code::Ok, |status| status.code())
}

#[tokio::test]
async fn every_rpc_refuses_no_token_and_admits_exactly_the_roles_of_the_table() {
    let app = spawn_app_with(|s| s.auth.reflection = Toggle::On).await;
    let methods = methods_from_reflection(&app).await;
    let purple: Vec<&String> = methods
        .iter()
        .map(|(m, _)| m)
        .filter(|m| m.starts_with("purple."))
        .collect();
    assert!(
        purple.len() >= 55,
        "reflection listed {} methods",
        purple.len()
    );

    // The table names every served method, and only those.
    let table: Vec<&str> = access::TABLE.iter().map(|(m, _)| *m).collect();
    for method in &purple {
        assert!(table.contains(&method.as_str()), "{method} has no roles");
    }
    for method in &table {
        assert!(
            purple.iter().any(|m| m == method),
            "{method} is in the table but not served"
        );
    }

    for (method, streamed) in &methods {
        let code = call(app.bare.clone(), None, method, *streamed).await;
        if method.starts_with("grpc.health.v1.Health/") {
            assert_ne!(code, Code::Unauthenticated, "{method} is open");
            continue;
        }
        assert_eq!(code, Code::Unauthenticated, "{method} without a token");
        let Rule::Roles(allowed) = access::rule(&format!("/{method}")) else {
            panic!("{method} has no rule")
        };
        for role in Role::ALL {
            let token = app.token(&format!("someone-{}", role.key().unwrap()), role);
            let code = call(app.bare.clone(), Some(&token), method, *streamed).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{method} refused {role:?}: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{method} admitted {role:?}");
            }
        }
    }
}

#[tokio::test]
async fn foreign_misaddressed_and_garbage_tokens_are_refused_without_echoing_them() {
    let app = spawn_app_with(|_| {}).await;
    let method = "purple.ingest.v1.IngestService/ListTactics";
    let good = app.token("viewer-1", Role::Viewer);
    assert_eq!(
        call(app.bare.clone(), Some(&good), method, false).await,
        Code::Ok
    );

    let dir = tempfile::tempdir().unwrap();
    let other_secret = dir.path().join("other");
    std::fs::write(&other_secret, "another-secret-of-at-least-32-bytes!!").unwrap();
    let foreign = Minter::new(
        &AuthSettings {
            jwt_secret_file: Some(other_secret.clone()),
            ..AuthSettings::default()
        },
        None,
    )
    .unwrap()
    .unwrap()
    .mint("viewer-1", Role::Viewer, "", Duration::from_secs(60));
    let wrong_audience = Minter::new(
        &AuthSettings {
            jwt_secret_file: Some(app_secret(&app).expect("the test server's secret file")),
            jwt_audience: "someone-else".into(),
            ..AuthSettings::default()
        },
        None,
    )
    .unwrap()
    .unwrap()
    .mint("viewer-1", Role::Viewer, "", Duration::from_secs(60));
    let expired = Minter::new(
        &AuthSettings {
            jwt_secret_file: app_secret(&app),
            ..AuthSettings::default()
        },
        None,
    )
    .unwrap()
    .unwrap()
    .mint("viewer-1", Role::Viewer, "", Duration::ZERO);
    for (what, token) in [
        ("foreign", foreign),
        ("wrong audience", wrong_audience),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let mut grpc = tonic::client::Grpc::new(app.bare.clone());
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(Empty {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let err = grpc
            .unary(
                request,
                PathAndQuery::from_static("/purple.ingest.v1.IngestService/ListTactics"),
                tonic_prost::ProstCodec::<Empty, Empty>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}");
        assert!(
            !err.message().contains(&token),
            "{what}: the token is echoed"
        );
    }
    // Just expired, but within the 60 s clock-skew leeway: accepted (expiry
    // beyond the leeway is refused: see the unit tests of auth::tokens).
    assert_eq!(
        call(app.bare.clone(), Some(&expired), method, false).await,
        Code::Ok
    );
}

fn app_secret(app: &TestApp) -> Option<std::path::PathBuf> {
    app.secret_file.clone()
}

#[tokio::test]
async fn the_acting_user_is_the_token_subject_and_becomes_a_user_on_first_use() {
    let app = spawn_app_with(|_| {}).await;
    crate::campaigns::import_bundle(&app, crate::campaigns::CATALOG).await;
    let lead = app.with_token(&app.minter.mint(
        "oidc|lee",
        Role::PurpleLead,
        "Lee from the IdP",
        Duration::from_secs(60),
    ));
    let created = CampaignsServiceClient::new(lead.clone())
        .create_tests(cpb::CreateTestsRequest {
            tests: vec![cpb::NewTest {
                technique_id: "T1003".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.tests.len(), 1);
    let users = CampaignsServiceClient::new(lead.clone())
        .list_users(cpb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .users;
    let lee = users
        .iter()
        .find(|u| u.user_id == "oidc|lee")
        .expect("made on first use");
    assert_eq!(
        (lee.display_name.as_str(), lee.role),
        ("Lee from the IdP", Role::PurpleLead as i32)
    );
    // Nobody but an admin creates users: not a lead, not a caller without a
    // token (the first-user loophole is gone).
    for channel in [
        lead.clone(),
        crate::helpers::AuthChannel::new(app.bare.clone(), crate::helpers::Bearer::none()),
    ] {
        let err = CampaignsServiceClient::new(channel)
            .create_users(cpb::CreateUsersRequest {
                users: vec![cpb::User {
                    display_name: "Mallory".into(),
                    role: Role::Admin as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{err:?}"
        );
    }
    // An admin creates a user ahead of its first token, with the id the
    // identity provider will issue.
    let made = CampaignsServiceClient::new(app.as_role("root", Role::Admin))
        .create_users(cpb::CreateUsersRequest {
            users: vec![cpb::User {
                user_id: "oidc|rex".into(),
                display_name: "Rex".into(),
                role: Role::RedTech as i32,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(made[0].user_id, "oidc|rex");
}

#[test]
fn security_md_shows_the_roles_table_the_gate_enforces() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("SECURITY.md"),
    )
    .unwrap();
    let table = access::markdown();
    assert!(
        doc.contains(&table),
        "SECURITY.md's roles table differs from crates/runtime/src/auth/access.rs; it should read:\n{table}"
    );
}
