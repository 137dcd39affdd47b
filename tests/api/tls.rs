//! Transport security: a server with a certificate speaks only TLS (its
//! in-process peer calls included), mutual TLS refuses clients without a
//! certificate from the configured CA, and tokens still decide roles.

use std::path::PathBuf;

use purple_api::ingest::v1::{ListTacticsRequest, ingest_service_client::IngestServiceClient};
use purple_api::scoring::v1::{
    GetOrganizationScoreRequest, scoring_service_client::ScoringServiceClient,
};
use purple_runtime::settings::Settings;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::helpers::spawn_app_with;

/// A file of the test PKI (tests/fixtures/tls, made by its gen.sh).
pub fn pki(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Server TLS with the test PKI; mutual when `mutual`.
pub fn with_tls(settings: &mut Settings, mutual: bool) {
    settings.tls.tls_cert_file = Some(pki("server.pem"));
    settings.tls.tls_key_file = Some(pki("server.key"));
    settings.tls.tls_ca_file = Some(pki("ca.pem"));
    if mutual {
        settings.tls.tls_client_ca_file = Some(pki("ca.pem"));
    }
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_tls_and_its_peer_calls_too() {
    let app = spawn_app_with(|s| with_tls(s, false)).await;
    // The organization score makes scoring call ingest and campaigns
    // through this same server: over TLS.
    ScoringServiceClient::new(app.channel.clone())
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap();
    // Plaintext is not served.
    let plain = Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect_lazy();
    let err = IngestServiceClient::new(plain)
        .list_tactics(ListTacticsRequest {})
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    let app = spawn_app_with(|s| with_tls(s, true)).await;
    ScoringServiceClient::new(app.channel.clone())
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .expect("the client with the CA's certificate, and the server's own peer calls");
    let token = app.token("viewer-1", purple_api::common::v1::Role::Viewer);
    for (what, identity) in [
        ("no certificate", None),
        (
            "another CA's certificate",
            Some(Identity::from_pem(
                std::fs::read(pki("rogue.pem")).unwrap(),
                std::fs::read(pki("rogue.key")).unwrap(),
            )),
        ),
    ] {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(pki("ca.pem")).unwrap()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let channel = Endpoint::from_shared(format!("https://{}", app.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy();
        let bearer: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {token}").parse().unwrap();
        let result =
            IngestServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            })
            .list_tactics(ListTacticsRequest {})
            .await;
        assert!(result.is_err(), "{what} was let in");
    }
}
