//! An attacker with the port: each hostile input found by probing earlier
//! builds, refused with a clear code and leaving the server SERVING and the
//! audit trail flowing (docs/design.md §7, SECURITY.md).

use std::{convert::Infallible, time::Duration};

use purple_api::{
    campaigns::v1::{self as cpb, campaigns_service_client::CampaignsServiceClient},
    common::v1::{Event, EventKind, Outcome},
    ingest::v1::{
        GetTemplatesForTechniquesRequest, ImportKind, ImportRequest, ListImportRunsRequest,
        ingest_service_client::IngestServiceClient,
    },
    metrics::v1::{
        GetMttdRequest, GetMttdResponse, GetMttrRequest, GetMttrResponse,
        GetOperationalSummaryRequest, GetOperationalSummaryResponse, GetOperationalTrendRequest,
        GetOperationalTrendResponse, GetRejectionRatesRequest, GetRejectionRatesResponse,
        ListAuditEventsRequest, ListAuditEventsResponse, RecordEventsRequest, RecordEventsResponse,
        metrics_service_client::MetricsServiceClient,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    scoring::v1::{
        GetOrganizationScoreRequest, ScoreTacticsRequest,
        scoring_service_client::ScoringServiceClient,
    },
};
use purple_runtime::ServiceName;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, codegen::http, server::NamedService};

use crate::{
    campaigns::{CATALOG, as_user, create_test, import_bundle, step, team},
    helpers::{reason, spawn_app, spawn_app_with, spawn_services, ts},
};

fn at(t: &cpb::Test) -> prost_types::Timestamp {
    t.created_at.unwrap()
}

/// Seconds since the epoch of a timestamp, with its fraction.
fn plus(t: prost_types::Timestamp, seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds + seconds,
        nanos: t.nanos,
    }
}

#[tokio::test]
async fn absurd_instants_are_refused_and_the_audit_trail_keeps_flowing() {
    use cpb::TestAction::*;
    let app = spawn_app_with(|s| s.domain.relay_interval_ms = 20).await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1003").await;
    let t = step(&app, &test, &team.red, StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let created = at(&t);
    for (what, instant) in [
        ("year 1", ts(-62_135_596_800)),
        ("before 2000", ts(915_148_800)),
        ("far future", ts(4_102_444_800)),
        ("before the test existed", plus(created, -3_600)),
    ] {
        let err = step(&app, &t, &team.red, CompleteRed, |r| {
            r.executed_at = Some(instant);
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert!(err.message().starts_with("executed_at"), "{what}: {err:?}");
    }
    // A valid execution, a red rejection, and a re-execution backdated
    // before the first one.
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    let t = step(&app, &t, &team.red, CompleteRed, |r| {
        r.executed_at = Some(now);
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let t = step(&app, &t, &team.lead, RejectRed, |r| {
        r.reason = "wrong host".into();
    })
    .await
    .unwrap()
    .test
    .unwrap();
    let err = step(&app, &t, &team.red, CompleteRed, |r| {
        r.executed_at = Some(created);
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("previous execution"), "{err:?}");
    let t = step(&app, &t, &team.red, CompleteRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let t = step(&app, &t, &team.blue, StartBlue, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let err = step(&app, &t, &team.blue, CompleteBlue, |r| {
        r.outcome = Outcome::Detected as i32;
        r.detected_at = Some(ts(4_102_444_800));
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Every accepted event still reaches the audit trail.
    let mut audit = MetricsServiceClient::new(app.channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = audit
            .list_audit_events(ListAuditEventsRequest {
                test_id: test.test_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        // created, red started, red executed, rejected, red executed,
        // blue started.
        if events.len() == 6 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A metrics service that refuses, for good, any batch holding a
/// `test.cancelled` event (naming it, as the real one names what it
/// refuses), and keeps the rest.
#[derive(Clone, Default)]
struct PickyMetrics {
    kept: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
}

#[tonic::async_trait]
impl MetricsService for PickyMetrics {
    async fn record_events(
        &self,
        request: Request<RecordEventsRequest>,
    ) -> Result<Response<RecordEventsResponse>, Status> {
        let events = request.into_inner().events;
        if let Some(i) = events
            .iter()
            .position(|e| e.event_kind == EventKind::TestCancelled as i32)
        {
            return Err(Status::invalid_argument(format!(
                "events[{i}].event_kind: not accepted here"
            )));
        }
        let n = events.len() as i32;
        self.kept.lock().unwrap().extend(events);
        Ok(Response::new(RecordEventsResponse {
            recorded: n,
            duplicates: 0,
        }))
    }
    async fn get_mttd(
        &self,
        _: Request<GetMttdRequest>,
    ) -> Result<Response<GetMttdResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_mttr(
        &self,
        _: Request<GetMttrRequest>,
    ) -> Result<Response<GetMttrResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_rejection_rates(
        &self,
        _: Request<GetRejectionRatesRequest>,
    ) -> Result<Response<GetRejectionRatesResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_operational_trend(
        &self,
        _: Request<GetOperationalTrendRequest>,
    ) -> Result<Response<GetOperationalTrendResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_operational_summary(
        &self,
        _: Request<GetOperationalSummaryRequest>,
    ) -> Result<Response<GetOperationalSummaryResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn list_audit_events(
        &self,
        _: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// Serves `service` on a fresh port; returns its `http://` address.
async fn serve<S>(service: S) -> String
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn an_event_a_receiver_refuses_for_good_is_set_aside_and_the_rest_keep_flowing() {
    use cpb::TestAction::*;
    let picky = PickyMetrics::default();
    let metrics_addr = serve(MetricsServiceServer::new(picky.clone())).await;
    let app = spawn_services(
        &[
            ServiceName::Ingest,
            ServiceName::Campaigns,
            ServiceName::Scoring,
        ],
        |s| {
            s.peers.metrics_addr = Some(metrics_addr);
            s.domain.relay_interval_ms = 20;
        },
    )
    .await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let doomed = create_test(&app, &team, "T1003").await;
    step(&app, &doomed, &team.lead, Cancel, |_| {})
        .await
        .unwrap();
    let later = create_test(&app, &team, "T1105").await;
    step(&app, &later, &team.red, StartRed, |_| {})
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kept = picky.kept.lock().unwrap().clone();
        let later_events = kept.iter().filter(|e| e.test_id == later.test_id).count();
        if later_events == 2 {
            assert!(
                kept.iter()
                    .all(|e| e.event_kind != EventKind::TestCancelled as i32),
                "the refused event was never kept"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "events after the refused one never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = CampaignsServiceClient::new(app.channel.clone())
        .list_dead_letters(cpb::ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].receiver.as_str(),
            dead[0].event_kind,
            dead[0].test_id.as_str()
        ),
        (
            "metrics",
            EventKind::TestCancelled as i32,
            doomed.test_id.as_str()
        )
    );
    assert!(dead[0].reason.contains("not accepted here"));
    // Only an admin reads them.
    let err = as_user(&app, &team.lead)
        .list_dead_letters(cpb::ListDeadLettersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_full_server_refuses_with_resource_exhausted_and_health_still_answers() {
    let app = spawn_app_with(|s| {
        s.limits.concurrency_limit = 1;
        s.limits.upload_idle_timeout_secs = 30;
    })
    .await;
    // An upload that sends one chunk and then nothing holds the only slot.
    // (If a probe happens to take the slot first, the upload is the one
    // refused: start it again.)
    let mut reader =
        IngestServiceClient::new(app.as_role("viewer-1", purple_api::common::v1::Role::Viewer));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (err, tx, upload) = 'attempt: loop {
        let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(1);
        let mut ingest =
            IngestServiceClient::new(app.as_role("root", purple_api::common::v1::Role::Admin));
        let mut upload = tokio::spawn(async move {
            ingest
                .import(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        tx.send(ImportRequest {
            kind: ImportKind::Attack as i32,
            file_name: "slow.json".into(),
            data: b"{".to_vec(),
            last: false,
        })
        .await
        .unwrap();
        loop {
            assert!(tokio::time::Instant::now() < deadline, "never refused");
            match reader
                .list_tactics(purple_api::ingest::v1::ListTacticsRequest {})
                .await
            {
                Err(err) if err.code() == Code::ResourceExhausted => {
                    break 'attempt (err, tx, upload);
                }
                _ if upload.is_finished() => {
                    let refused = (&mut upload).await.unwrap().unwrap_err();
                    assert_eq!(refused.code(), Code::ResourceExhausted);
                    continue 'attempt;
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    assert_eq!(reason(&err), "RESOURCE_EXHAUSTED");
    // The probe answers at once, whatever the load.
    let started = tokio::time::Instant::now();
    app.wait_until_serving("").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(tx);
    let _ = upload.await;
}

#[tokio::test]
async fn uploads_share_a_bounded_buffer_and_a_silent_upload_is_abandoned() {
    let app = spawn_app_with(|s| {
        s.limits.max_upload_buffer_bytes = 64 * 1024;
        s.limits.upload_idle_timeout_secs = 1;
    })
    .await;
    let mut ingest = IngestServiceClient::new(app.channel.clone());
    let big = ImportRequest {
        kind: ImportKind::Sigma as i32,
        file_name: "big.yml".into(),
        data: vec![b'#'; 100 * 1024],
        last: true,
    };
    let err = ingest.import(tokio_stream::iter([big])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(1);
    tx.send(ImportRequest {
        kind: ImportKind::Sigma as i32,
        file_name: "quiet.yml".into(),
        data: b"title: x\n".to_vec(),
        last: false,
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let err = ingest
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(tx);
    // Both failures freed what they held: a small upload goes through.
    let report = ingest
        .import(tokio_stream::iter([ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name: "ok.yml".into(),
            data: b"title: ok\nid: 6f1b8f0e-0000-4000-8000-000000000001\nstatus: stable\ntags:\n  - attack.t1003\n"
                .to_vec(),
            last: true,
        }]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.created, 2, "{report:?}");
}

#[tokio::test]
async fn deep_nesting_huge_strings_and_multi_member_gzip() {
    let app = spawn_app().await;
    let mut ingest = IngestServiceClient::new(app.channel.clone());
    import_bundle(&app, CATALOG).await;

    // 100,000 nested flow mappings: refused at once, not parsed for
    // minutes.
    let deep = "{a: ".repeat(100_000) + "x" + &"}".repeat(100_000);
    let started = tokio::time::Instant::now();
    let err = ingest
        .import(tokio_stream::iter([ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name: "deep.yml".into(),
            data: deep.into_bytes(),
            last: true,
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nested more than 64"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A 20 MB command: the template is left out (and reported), and the
    // reads that would have returned it keep working.
    let huge = format!(
        "attack_technique: T1003\ndisplay_name: x\natomic_tests:\n- name: huge\n  auto_generated_guid: 11111111-2222-4333-8444-555555555555\n  description: big\n  supported_platforms: [windows]\n  executor:\n    name: command_prompt\n    command: {}\n- name: small\n  auto_generated_guid: 11111111-2222-4333-8444-666666666666\n  description: small\n  supported_platforms: [windows]\n  executor:\n    name: command_prompt\n    command: whoami\n",
        "x".repeat(20 * 1024 * 1024)
    );
    let chunks: Vec<ImportRequest> = huge
        .as_bytes()
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, data)| ImportRequest {
            kind: ImportKind::Atomic as i32,
            file_name: if i == 0 {
                "T1003.yaml".into()
            } else {
                String::new()
            },
            data: data.to_vec(),
            last: false,
        })
        .chain([ImportRequest {
            last: true,
            ..Default::default()
        }])
        .collect();
    let report = ingest
        .import(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.counts["template"].created, 1, "{:?}", report.counts);
    assert!(
        report.skipped.iter().any(|s| s.reason.contains("KiB")),
        "{:?}",
        report.skipped
    );
    let runs = ingest
        .list_import_runs(ListImportRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.len() >= 2);
    let templates = ingest
        .get_templates_for_techniques(GetTemplatesForTechniquesRequest {
            technique_ids: vec!["T1003".into()],
            platform: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .techniques;
    assert_eq!(templates[0].templates.len(), 1);

    // A gzip file of two members holds the whole bundle, not its first
    // half.
    use std::io::Write;
    let (head, tail) = CATALOG.as_bytes().split_at(CATALOG.len() / 2);
    let mut two = Vec::new();
    for part in [head, tail] {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(part).unwrap();
        two.extend(gz.finish().unwrap());
    }
    let report = ingest
        .import(tokio_stream::iter([ImportRequest {
            kind: ImportKind::Attack as i32,
            file_name: "two-members.json.gz".into(),
            data: two,
            last: true,
        }]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(
        (report.created, report.updated),
        (0, 0),
        "the same bundle again: {report:?}"
    );
    app.wait_until_serving("").await;
}

#[tokio::test]
async fn undecodable_requests_nul_bytes_and_unbounded_ids_are_the_callers_mistake() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1003").await;

    // Bytes that are not protobuf.
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(
            Request::new(Raw(vec![0xff, 0xff, 0xff, 0xff, 0x0f])),
            http::uri::PathAndQuery::from_static(
                "/purple.campaigns.v1.CampaignsService/GetTestsByIds",
            ),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut c = CampaignsServiceClient::new(app.channel.clone());
    let err = c
        .get_tests_by_ids(cpb::GetTestsByIdsRequest {
            test_ids: vec![test.test_id.clone(), "a\0b".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("test_ids[1]"), "{err:?}");
    let long = "x".repeat(100_000);
    let err = c
        .get_tests_by_ids(cpb::GetTestsByIdsRequest {
            test_ids: vec![long.clone()],
        })
        .await
        .unwrap_err();
    assert!(err.message().len() < 300, "the id is not echoed");
    // A NUL byte in a single id reaches the database on PostgreSQL, which
    // refuses it: still the caller's mistake.
    let err = as_user(&app, &team.red)
        .transition_test(cpb::TransitionTestRequest {
            test_id: "a\0b".into(),
            action: cpb::TestAction::StartRed as i32,
            expected_version: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::NotFound),
        "{err:?}"
    );
    let err = as_user(&app, &team.red)
        .transition_test(cpb::TransitionTestRequest {
            test_id: long,
            action: cpb::TestAction::StartRed as i32,
            expected_version: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 300, "{}", err.message().len());

    // Batch limits everywhere, ScoreTactics included.
    let err = ScoringServiceClient::new(app.channel.clone())
        .score_tactics(ScoreTacticsRequest {
            tactics: (0..1_001).map(|i| format!("t{i}")).collect(),
            as_of: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::InvalidArgument, "BATCH_LIMIT_EXCEEDED")
    );
    app.wait_until_serving("").await;
}

/// Free text is bounded and NUL-free wherever a caller writes it: notes and
/// reasons (64 KiB), names and titles (1 KiB), a detection result's rule
/// id (an id): refused with the field, and the test left as it was.
#[tokio::test]
async fn oversized_or_nul_free_text_is_refused_with_its_field_and_changes_nothing() {
    let app = spawn_app().await;
    import_bundle(&app, CATALOG).await;
    let team = team(&app).await;
    let test = create_test(&app, &team, "T1003").await;
    let huge = "n".repeat(64 * 1024 + 1);
    let transition = |notes: &str, reason: &str| cpb::TransitionTestRequest {
        test_id: test.test_id.clone(),
        action: cpb::TestAction::StartRed as i32,
        expected_version: test.version,
        notes: notes.into(),
        reason: reason.into(),
        ..Default::default()
    };
    for (request, field) in [
        (transition(&huge, ""), "notes"),
        (transition("a\0b", ""), "notes"),
        (transition("", &huge), "reason"),
    ] {
        let err = as_user(&app, &team.red)
            .transition_test(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{}", err.message());
        assert!(err.message().len() < 300, "the text is not echoed");
    }
    let err = as_user(&app, &team.lead)
        .create_campaign(cpb::CreateCampaignRequest {
            name: "c".repeat(1_025),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("name"), "{}", err.message());
    let err = as_user(&app, &team.lead)
        .create_tests(cpb::CreateTestsRequest {
            tests: vec![cpb::NewTest {
                technique_id: "T1003".into(),
                title: "t".repeat(1_025),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("tests[0].title"),
        "{}",
        err.message()
    );
    let err = as_user(&app, &team.blue)
        .record_detection_results(cpb::RecordDetectionResultsRequest {
            results: vec![cpb::DetectionResult {
                test_id: test.test_id.clone(),
                rule_id: "r".repeat(257),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("results[0].rule_id"),
        "{}",
        err.message()
    );
    // Nothing moved: the test is where it was, at its version.
    let after = as_user(&app, &team.red)
        .get_tests_by_ids(cpb::GetTestsByIdsRequest {
            test_ids: vec![test.test_id.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .tests
        .remove(0);
    assert_eq!(after, test);
    // At the limit, accepted.
    let started = step(&app, &test, &team.red, cpb::TestAction::StartRed, |_| {})
        .await
        .unwrap()
        .test
        .unwrap();
    let completed = step(
        &app,
        &started,
        &team.red,
        cpb::TestAction::CompleteRed,
        |r| {
            r.executed_at = test.created_at;
            r.notes = huge[1..].to_owned();
        },
    )
    .await
    .unwrap()
    .test
    .unwrap();
    assert_eq!(completed.red_notes.len(), 64 * 1024);
}

/// A NUL character in an imported item (a YAML `\0` escape here): the
/// item is left out and reported, the rest imported, on both backends
/// (PostgreSQL cannot store one; the whole import used to fail there).
#[tokio::test]
async fn an_imported_item_with_a_nul_byte_is_reported_and_the_rest_imported() {
    let app = spawn_app().await;
    let mut ingest = IngestServiceClient::new(app.channel.clone());
    import_bundle(&app, CATALOG).await;
    let rule = |id: &str, title: &str| {
        format!(
            "title: \"{title}\"\nid: {id}\nstatus: test\nlogsource:\n  product: windows\ndetection:\n  sel:\n    x: a\n  condition: sel\ntags:\n  - attack.t1003\nlevel: high\n"
        )
    };
    let text = format!(
        "{}---\n{}",
        rule("11111111-2222-4333-8444-555555555555", "bad\\0title"),
        rule("11111111-2222-4333-8444-666666666666", "good title")
    );
    let report = ingest
        .import(tokio_stream::iter([ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name: "rules.yml".into(),
            data: text.into_bytes(),
            last: true,
        }]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let skipped: Vec<(String, String)> = report
        .skipped
        .iter()
        .map(|s| (s.location.clone(), s.reason.clone()))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0.contains("555555555555"), "{skipped:?}");
    assert!(skipped[0].1.contains("NUL"), "{skipped:?}");
    assert_eq!(report.counts["rule"].created, 1, "the good rule");
}

/// Raw bytes, for sending what is not protobuf.
#[derive(Debug)]
struct Raw(Vec<u8>);

#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Raw;
    type Error = Status;
    fn encode(&mut self, item: Raw, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use bytes_put::BufMut;
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Raw;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Raw>, Status> {
        use bytes_put::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(Raw(bytes.to_vec())))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Raw;
    type Decode = Raw;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

mod bytes_put {
    pub use prost::bytes::{Buf, BufMut};
}

/// A peer that accepts calls and never answers them.
#[derive(Clone)]
struct BlackHole;

impl NamedService for BlackHole {
    const NAME: &'static str = "purple.ingest.v1.IngestService";
}

impl tower::Service<http::Request<tonic::body::Body>> for BlackHole {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Pending<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::pending()
    }
}

#[tokio::test]
async fn a_peer_that_hangs_fails_the_call_at_its_deadline() {
    let hole = serve(BlackHole).await;
    let app = spawn_services(&[ServiceName::Scoring], |s| {
        s.peers.ingest_addr = Some(hole.clone());
        s.peers.campaigns_addr = Some(hole);
        s.limits.peer_timeout_secs = 1;
    })
    .await;
    let started = tokio::time::Instant::now();
    let err = ScoringServiceClient::new(app.channel.clone())
        .get_organization_score(GetOrganizationScoreRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(reason(&err), "PEER_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn requests_in_flight_at_shutdown_finish_their_calls_to_this_process() {
    let mut app = spawn_app_with(|s| {
        s.domain.score_cache_ttl_secs = 0;
        s.limits.shutdown_grace_secs = 10;
    })
    .await;
    import_bundle(&app, CATALOG).await;
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut scoring = ScoringServiceClient::new(app.channel.clone());
        calls.push(tokio::spawn(async move {
            scoring
                .get_organization_score(GetOrganizationScoreRequest::default())
                .await
        }));
    }
    // Shut down while they run: each needs ingest and campaigns, served by
    // this same process through its own port.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let server = app.begin_shutdown();
    for call in calls {
        call.await.unwrap().expect("a request in flight completes");
    }
    server.await.unwrap().unwrap();
}
