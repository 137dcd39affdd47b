//! Ingest end to end on the real public data in `tests/fixtures/data`:
//! every corpus imports with counts computed independently from the files,
//! re-imports write nothing, bad input changes nothing, and an import's
//! statement count does not grow with its size.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use purple_api::ingest::v1::{
    GetActorTechniquesRequest, GetCatalogInputsRequest, GetTechniquesByIdsRequest, ImportKind,
    ImportReport, ImportRequest, ImportStatus, ListImportRunsRequest, ListTacticsRequest,
    ListTechniquesRequest, ListThreatActorsRequest, SubtechniqueFilter, Technique,
    ingest_service_client::IngestServiceClient,
};
use purple_ingest::domain::Kind;
use tonic::{Code, Status};

use crate::helpers::{AuthChannel, Cost, TestApp, Trace, spawn_app, spawn_app_with};

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(path)
}

pub const ATTACK_18: &str = "attack/v18.1/stix21/enterprise-attack-18.1.json.gz";
const ATTACK_18_STIX20: &str = "attack/v18.1/stix20/enterprise-attack.json.gz";
const ATTACK_17: &str = "attack/v17.1/stix21/enterprise-attack-17.1.json.gz";

fn client(app: &TestApp) -> IngestServiceClient<AuthChannel> {
    IngestServiceClient::new(app.channel.clone())
}

/// The chunks `purple import` would send for `path`.
async fn chunks_of(kind: Kind, path: &Path) -> Vec<ImportRequest> {
    let files = purple::cli::import::collect_files(kind, path).unwrap();
    purple::cli::import::chunks(kind, path, files, indicatif::ProgressBar::hidden())
        .collect::<Vec<_>>()
        .await
}

/// Every live technique's id, in id order (one page: a fixture catalogue
/// holds fewer than 1,000).
pub async fn live_technique_ids(app: &TestApp) -> Vec<String> {
    client(app)
        .list_techniques(ListTechniquesRequest {
            page_size: 1_000,
            brief: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .techniques
        .into_iter()
        .map(|t| t.technique_id)
        .collect()
}

/// Imports a fixture file or directory as `purple import` does.
pub async fn import(app: &TestApp, kind: Kind, path: &str) -> Result<ImportReport, Status> {
    let chunks = chunks_of(kind, &fixture(path)).await;
    client(app)
        .import(futures::stream::iter(chunks))
        .await
        .map(|r| {
            r.into_inner()
                .report
                .expect("an import answers with its report")
        })
}

/// The whole ATT&CK v18.1 catalogue (691 live techniques), imported.
pub async fn import_attack_18(app: &TestApp) {
    import(app, Kind::Attack, ATTACK_18).await.unwrap();
}

fn counts(report: &ImportReport, entity: &str) -> (u64, u64, u64, u64, u64) {
    let c = report.counts.get(entity).copied().unwrap_or_default();
    (c.created, c.updated, c.unchanged, c.revoked, c.deprecated)
}

async fn count_techniques(
    app: &TestApp,
    subtechniques: SubtechniqueFilter,
    include_revoked: bool,
) -> usize {
    let mut ingest = client(app);
    let (mut total, mut token) = (0, String::new());
    loop {
        let page = ingest
            .list_techniques(ListTechniquesRequest {
                subtechniques: subtechniques as i32,
                include_revoked,
                page_size: 200,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        total += page.techniques.len();
        if page.next_page_token.is_empty() {
            return total;
        }
        token = page.next_page_token;
    }
}

async fn live_counts(app: &TestApp) -> (usize, usize, usize, usize, usize) {
    let mut ingest = client(app);
    let tactics = ingest
        .list_tactics(ListTacticsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tactics
        .len();
    let actors = ingest
        .list_threat_actors(ListThreatActorsRequest {
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .actors;
    let ids: Vec<String> = actors.iter().map(|a| a.actor_id.clone()).collect();
    let uses: usize = ingest
        .get_actor_techniques(GetActorTechniquesRequest { actor_ids: ids })
        .await
        .unwrap()
        .into_inner()
        .actors
        .iter()
        .map(|a| a.technique_ids.len())
        .sum();
    (
        count_techniques(app, SubtechniqueFilter::Exclude, false).await,
        count_techniques(app, SubtechniqueFilter::Only, false).await,
        tactics,
        actors.len(),
        uses,
    )
}

#[tokio::test]
async fn attack_v18_1_stix21_imports_the_live_catalogue_and_reimports_as_no_change() {
    let app = spawn_app().await;
    let first = import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    assert_eq!(first.status, ImportStatus::Succeeded as i32);
    assert_eq!(first.attack_version, "18.1");
    assert_eq!(counts(&first, "technique"), (835, 0, 0, 132, 12));
    assert_eq!(counts(&first, "tactic").0, 14);
    assert_eq!(counts(&first, "actor_technique").0, 4_362);
    assert_eq!(live_counts(&app).await, (216, 475, 14, 172, 4_362));
    assert_eq!(
        count_techniques(&app, SubtechniqueFilter::Unspecified, true).await,
        835
    );
    // Filters, with counts computed from the bundle: live techniques in
    // execution, on Linux (any case), and Linux sub-techniques in execution.
    let mut ingest = client(&app);
    let listed = |tactic: &str, platform: &str, subtechniques: SubtechniqueFilter| {
        let request = ListTechniquesRequest {
            tactic: tactic.into(),
            platform: platform.into(),
            subtechniques: subtechniques as i32,
            page_size: 1_000,
            ..Default::default()
        };
        let mut ingest = ingest.clone();
        async move {
            ingest
                .list_techniques(request)
                .await
                .unwrap()
                .into_inner()
                .techniques
                .len()
        }
    };
    assert_eq!(
        listed("execution", "", SubtechniqueFilter::Unspecified).await,
        46
    );
    assert_eq!(
        listed("", "linux", SubtechniqueFilter::Unspecified).await,
        354
    );
    assert_eq!(
        listed("execution", "Linux", SubtechniqueFilter::Only).await,
        13
    );
    let tactics = ingest
        .list_tactics(ListTacticsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tactics;
    assert_eq!(
        tactics
            .iter()
            .find(|t| t.short_name == "execution")
            .unwrap()
            .technique_count,
        46
    );
    assert_eq!(tactics[0].ordinal, 1, "kill-chain order");

    // Brief: the same techniques and fields, the descriptions left out.
    let page = |brief| ListTechniquesRequest {
        tactic: "execution".into(),
        page_size: 1_000,
        brief,
        ..Default::default()
    };
    let full = ingest
        .list_techniques(page(false))
        .await
        .unwrap()
        .into_inner();
    let brief = ingest
        .list_techniques(page(true))
        .await
        .unwrap()
        .into_inner();
    assert!(full.techniques.iter().all(|t| !t.description.is_empty()));
    assert!(brief.techniques.iter().all(|t| t.description.is_empty()));
    let described: Vec<_> = full
        .techniques
        .into_iter()
        .map(|t| Technique {
            description: String::new(),
            ..t
        })
        .collect();
    assert_eq!(brief.techniques, described);

    let again = import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    assert_eq!((again.created, again.updated), (0, 0));
    assert_eq!(counts(&again, "technique"), (0, 0, 835, 0, 0));

    // The same release as STIX 2.0 is the same catalogue.
    let stix20 = import(&app, Kind::Attack, ATTACK_18_STIX20).await.unwrap();
    assert_eq!((stix20.created, stix20.updated), (0, 0));
}

#[tokio::test]
async fn attack_stix20_bundle_yields_the_same_counts() {
    let app = spawn_app().await;
    let report = import(&app, Kind::Attack, ATTACK_18_STIX20).await.unwrap();
    assert_eq!(counts(&report, "technique"), (835, 0, 0, 132, 12));
    assert_eq!(live_counts(&app).await, (216, 475, 14, 172, 4_362));
}

#[tokio::test]
async fn upgrading_v17_1_to_v18_1_reports_what_changed() {
    let app = spawn_app().await;
    let old = import(&app, Kind::Attack, ATTACK_17).await.unwrap();
    assert_eq!(old.attack_version, "17.1");
    assert_eq!(live_counts(&app).await, (211, 468, 14, 166, 4_046));
    let upgrade = import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    // Computed from the two bundles: 12 new techniques, 181 changed.
    assert_eq!(counts(&upgrade, "technique"), (12, 181, 642, 0, 0));
    assert_eq!(live_counts(&app).await, (216, 475, 14, 172, 4_362));
    let techniques = client(&app)
        .get_techniques_by_ids(GetTechniquesByIdsRequest {
            technique_ids: vec!["T1059.001".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .techniques;
    assert_eq!(techniques[0].parent_id, "T1059");
}

#[tokio::test]
async fn every_corpus_imports_with_its_counts_and_the_catalog_inputs_follow() {
    let app = spawn_app().await;
    import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    let d3fend = import(
        &app,
        Kind::D3fend,
        "d3fend/derived/d3fend-0.17.0-attack-to-d3fend-pairs.csv",
    )
    .await
    .unwrap();
    assert_eq!(
        (
            counts(&d3fend, "technique_defense").0,
            counts(&d3fend, "defense").0
        ),
        (4_079, 127)
    );
    let catalogue = import(
        &app,
        Kind::D3fend,
        "d3fend/website-next/ontologies/d3fend/0.17.0/d3fend.csv",
    )
    .await
    .unwrap();
    let (created, _, unchanged, _, _) = counts(&catalogue, "defense");
    assert_eq!(created + unchanged, 190);
    let api = import(
        &app,
        Kind::D3fend,
        "d3fend/website-next/api/offensive-technique",
    )
    .await
    .unwrap();
    assert_eq!(
        api.created, 0,
        "the API answers repeat pairs the CSV already had"
    );

    let sigma = import(&app, Kind::Sigma, "sigma").await.unwrap();
    // Counted independently from the files (a Python reading of the Sigma
    // specification, collections merged): 157 files, 157 rules, 244
    // technique tags, 7 CVE tags; 9 name v19 ids or techniques revoked in
    // v18.1.
    assert_eq!(sigma.files.len(), 157);
    assert_eq!(
        (
            counts(&sigma, "rule").0,
            counts(&sigma, "rule_technique").0,
            counts(&sigma, "rule_cve").0
        ),
        (157, 244, 7)
    );
    assert_eq!(
        sigma.unresolved_references, 9,
        "v19 ids and techniques revoked in v18.1"
    );
    let elastic = import(&app, Kind::Elastic, "elastic-detection-rules")
        .await
        .unwrap();
    assert_eq!(
        (
            counts(&elastic, "rule").0,
            counts(&elastic, "rule_technique").0
        ),
        (66, 192)
    );
    assert_eq!(
        elastic.unresolved_references, 1,
        "T1547.011 is revoked in v18.1"
    );
    assert!(
        elastic
            .skipped
            .iter()
            .any(|s| s.reason.contains("T1547.011 is revoked"))
    );

    assert_eq!(
        counts(
            &import(&app, Kind::Atomic, "atomic-red-team").await.unwrap(),
            "template"
        )
        .0,
        512
    );
    assert_eq!(
        counts(
            &import(&app, Kind::Caldera, "caldera-stockpile")
                .await
                .unwrap(),
            "template"
        )
        .0,
        60
    );
    assert_eq!(
        counts(
            &import(&app, Kind::Lolbas, "lolbas").await.unwrap(),
            "template"
        )
        .0,
        482
    );
    let nist = import(
        &app,
        Kind::Nist,
        "nist-800-53/mappings-explorer/mappings/nist_800_53/attack-16.1",
    )
    .await
    .unwrap();
    assert_eq!(
        (
            counts(&nist, "control").0,
            counts(&nist, "control_technique").0
        ),
        (109, 5_264)
    );
    let legacy = import(
        &app,
        Kind::Nist,
        "nist-800-53/attack-control-framework-mappings",
    )
    .await
    .unwrap();
    assert_eq!(legacy.files.len(), 1);
    assert_eq!(
        counts(&import(&app, Kind::Cve, "nvd-cve").await.unwrap(), "cve").0,
        41
    );

    // Expected values computed from the files: distinct D3FEND techniques of
    // the technique or its parent, live actors using it, enabled rules.
    let inputs = client(&app)
        .get_catalog_inputs(GetCatalogInputsRequest {
            technique_ids: vec![
                "T1059.001".into(),
                "T1003.001".into(),
                "T9999".into(),
                "T1105".into(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, i32, i32, usize)> = inputs
        .inputs
        .iter()
        .map(|i| {
            (
                i.technique_id.as_str(),
                i.countermeasure_count,
                i.actor_count,
                i.enabled_rules.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("T1059.001", 11, 83, 7),
            ("T1003.001", 36, 42, 5),
            ("T1105", 10, 85, 7)
        ]
    );
    assert_eq!(inputs.missing_ids, ["T9999"]);
}

#[tokio::test]
async fn malformed_files_are_refused_with_file_and_place_and_change_nothing() {
    let app = spawn_app().await;
    import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    let mut ingest = client(&app);
    let send = |kind: ImportKind, name: &str, data: &[u8]| {
        let chunk = ImportRequest {
            kind: kind as i32,
            file_name: name.into(),
            data: data.to_vec(),
            last: true,
        };
        let mut ingest = ingest.clone();
        async move { ingest.import(futures::stream::iter([chunk])).await }
    };

    let err = send(
        ImportKind::Attack,
        "broken.json",
        b"{\"type\": \"bundle\", \"objects\": [\n  {\"type\": ",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("file broken.json: line 2, column"),
        "{}",
        err.message()
    );

    let sigma_rule = std::fs::read(fixture(
        "sigma/rules/linux/builtin/lnx_apt_equationgroup_lnx.yml",
    ))
    .unwrap();
    let err = send(ImportKind::Attack, "rule.yml", &sigma_rule)
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "file rule.yml: line 1, column 1: not JSON: an ATT&CK import takes a STIX bundle"
    );

    let empty = br#"{"type": "bundle", "id": "bundle--1", "objects": [{"type": "identity", "id": "identity--1"}]}"#;
    let err = send(ImportKind::Attack, "empty.json", empty)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("no ATT&CK techniques or tactics"),
        "{}",
        err.message()
    );

    let err = send(
        ImportKind::Elastic,
        "bad.toml",
        b"[rule]\nname = \"x\"\nrule_id = ",
    )
    .await
    .unwrap_err();
    assert!(
        err.message().starts_with("file bad.toml: line 3"),
        "{}",
        err.message()
    );

    // One bad rule among good ones rejects the whole directory.
    let mut chunks = chunks_of(Kind::Sigma, &fixture("sigma/rules/linux")).await;
    chunks.insert(
        chunks.len() - 1,
        ImportRequest {
            file_name: "bad.yml".into(),
            data: b"title: [unclosed".to_vec(),
            ..Default::default()
        },
    );
    let err = ingest
        .import(futures::stream::iter(chunks))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("file bad.yml"),
        "{}",
        err.message()
    );

    assert_eq!(live_counts(&app).await, (216, 475, 14, 172, 4_362));
    let rules = ingest
        .get_catalog_inputs(GetCatalogInputsRequest {
            technique_ids: vec!["T1059.004".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        rules.inputs[0].enabled_rules.is_empty(),
        "the refused sigma import wrote no rule"
    );

    let runs = ingest
        .list_import_runs(ListImportRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 6);
    assert_eq!(
        runs.iter()
            .filter(|r| r.status == ImportStatus::Failed as i32)
            .count(),
        5
    );
    let newest = &runs[0];
    assert_eq!(newest.status, ImportStatus::Failed as i32);
    assert!(newest.error.contains("bad.yml"), "{}", newest.error);
}

#[tokio::test]
async fn oversized_uploads_and_cut_streams_are_refused() {
    let app = spawn_app_with(|s| s.limits.max_import_bytes = 64 * 1024).await;
    let mut ingest = client(&app);
    let err = import(&app, Kind::Sigma, "sigma").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("exceeds the limit of 65536 bytes"),
        "{}",
        err.message()
    );

    // A client that sends one chunk and then vanishes.
    let first = ImportRequest {
        kind: ImportKind::Sigma as i32,
        file_name: "a.yml".into(),
        data: b"title: x\n".to_vec(),
        last: false,
    };
    let stream = futures::stream::iter([first]).chain(futures::stream::pending());
    let call =
        tokio::time::timeout(std::time::Duration::from_millis(300), ingest.import(stream)).await;
    assert!(call.is_err(), "the call was abandoned");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let runs = ingest
            .list_import_runs(ListImportRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs;
        if let Some(cut) = runs.iter().find(|r| r.error.contains("cut short")) {
            assert_eq!(cut.status, ImportStatus::Failed as i32);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed run for the cut stream: {runs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn batch_reads_refuse_more_than_the_limit() {
    let app = spawn_app().await;
    let ids: Vec<String> = (0..1_001).map(|i| format!("T{i:04}")).collect();
    let err = client(&app)
        .get_techniques_by_ids(GetTechniquesByIdsRequest { technique_ids: ids })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("technique_ids") && err.message().contains("1000"),
        "{}",
        err.message()
    );
    assert_eq!(crate::helpers::reason(&err), "BATCH_LIMIT_EXCEEDED");
}

const MINI_BUNDLE: &str = r#"{"type": "bundle", "id": "bundle--mini", "objects": [
  {"type": "x-mitre-tactic", "id": "x-mitre-tactic--1", "name": "Execution", "x_mitre_shortname": "execution",
   "external_references": [{"source_name": "mitre-attack", "external_id": "TA0002"}]},
  {"type": "attack-pattern", "id": "attack-pattern--1", "name": "Command and Scripting Interpreter",
   "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": "execution"}],
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1059"}]},
  {"type": "intrusion-set", "id": "intrusion-set--1", "name": "APT0",
   "external_references": [{"source_name": "mitre-attack", "external_id": "G0000"}]},
  {"type": "course-of-action", "id": "course-of-action--1", "name": "Audit",
   "external_references": [{"source_name": "mitre-attack", "external_id": "M1047"}]},
  {"type": "relationship", "id": "relationship--1", "relationship_type": "uses",
   "source_ref": "intrusion-set--1", "target_ref": "attack-pattern--1"},
  {"type": "attack-pattern", "id": "attack-pattern--2", "name": "Old", "revoked": true,
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1058"}]},
  {"type": "relationship", "id": "relationship--2", "relationship_type": "revoked-by",
   "source_ref": "attack-pattern--2", "target_ref": "attack-pattern--1"},
  {"type": "campaign", "id": "campaign--1", "name": "Op", "first_seen": "2024-01-01T00:00:00Z",
   "external_references": [{"source_name": "mitre-attack", "external_id": "C0001",
                            "url": "https://attack.mitre.org/campaigns/C0001"}]},
  {"type": "relationship", "id": "relationship--3", "relationship_type": "uses",
   "source_ref": "campaign--1", "target_ref": "attack-pattern--1"},
  {"type": "relationship", "id": "relationship--4", "relationship_type": "attributed-to",
   "source_ref": "campaign--1", "target_ref": "intrusion-set--1"}
]}"#;

async fn import_cost(app: &TestApp, chunks: Vec<ImportRequest>) -> Cost {
    let trace = Trace::new("purple.ingest.v1.IngestService/Import");
    client(app)
        .import(trace.request(futures::stream::iter(chunks)))
        .await
        .unwrap();
    Cost::of(&app.trace(&trace).await)
}

#[tokio::test]
async fn import_statements_do_not_grow_with_the_number_of_items() {
    // Five objects, then the whole of ATT&CK v18.1 (24,772 objects), each
    // into an empty catalogue.
    let small_app = spawn_app().await;
    let mini = ImportRequest {
        kind: ImportKind::Attack as i32,
        file_name: "mini.json".into(),
        data: MINI_BUNDLE.as_bytes().to_vec(),
        last: true,
    };
    let small = import_cost(&small_app, vec![mini]).await;
    let large_app = spawn_app().await;
    let large = import_cost(
        &large_app,
        chunks_of(Kind::Attack, &fixture(ATTACK_18)).await,
    )
    .await;
    assert_eq!(
        small.statements.get("ingest"),
        large.statements.get("ingest"),
        "{small:?} vs {large:?}"
    );
    // Four tables preloaded and upserted, the uses and the revocations
    // preloaded and inserted; for the campaigns, the known techniques and
    // revocations read, the reports preloaded and upserted, their
    // technique and actor links preloaded and inserted; scoring's inputs
    // cleared and rebuilt (migration 0005); and the run record.
    assert_eq!(large.statements.get("ingest"), Some(&23));

    // Rules: one Linux file, then all 152 Sigma files, over the catalogue.
    let one = import_cost(
        &small_app,
        chunks_of(Kind::Sigma, &fixture("sigma/rules-emerging-threats/2025")).await,
    )
    .await;
    let all = import_cost(&large_app, chunks_of(Kind::Sigma, &fixture("sigma")).await).await;
    assert_eq!(
        one.statements.get("ingest"),
        all.statements.get("ingest"),
        "{one:?} vs {all:?}"
    );
}

#[tokio::test]
async fn an_import_and_the_scoring_call_it_makes_share_one_trace() {
    let app = spawn_app().await;
    let trace = Trace::new("purple.ingest.v1.IngestService/Import");
    let mini = ImportRequest {
        kind: ImportKind::Attack as i32,
        file_name: "mini.json".into(),
        data: MINI_BUNDLE.as_bytes().to_vec(),
        last: true,
    };
    client(&app)
        .import(trace.request(futures::stream::iter([mini])))
        .await
        .unwrap();
    let spans = app.trace(&trace).await;
    let services: std::collections::BTreeSet<&str> =
        spans.iter().filter_map(|s| s.attr("rpc.service")).collect();
    assert!(
        services.contains("purple.ingest.v1.IngestService"),
        "{services:?}"
    );
    assert!(
        services.contains("purple.scoring.v1.ScoringService"),
        "the invalidation continued the trace: {services:?}"
    );
    assert!(
        spans.iter().any(|s| s.attr("db.system").is_some()),
        "statements are in the trace too"
    );
}

#[tokio::test]
async fn shutdown_waits_for_an_import_in_flight() {
    let mut app = spawn_app().await;
    let mut ingest = client(&app);
    let (tx, rx) = tokio::sync::mpsc::channel::<ImportRequest>(4);
    let call = tokio::spawn(async move {
        ingest
            .import(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let bytes = MINI_BUNDLE.as_bytes();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    tx.send(ImportRequest {
        kind: ImportKind::Attack as i32,
        file_name: "mini.json".into(),
        data: head.to_vec(),
        last: false,
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let not_serving = app.not_serving_waiter();
    let server = app.begin_shutdown();
    not_serving.await;
    assert!(
        !server.is_finished(),
        "the server waits for the import in flight"
    );
    tx.send(ImportRequest {
        kind: 0,
        file_name: String::new(),
        data: tail.to_vec(),
        last: true,
    })
    .await
    .unwrap();
    drop(tx);
    let report = call
        .await
        .unwrap()
        .expect("the import in flight completes")
        .into_inner()
        .report
        .unwrap();
    assert_eq!(
        counts(&report, "technique").0,
        2,
        "T1059 and the revoked T1058"
    );
    let stopped = server.await.unwrap().unwrap();
    assert_eq!(
        (stopped.drained, stopped.abandoned),
        (1, 0),
        "the import was drained, not abandoned"
    );
}

/// Every stored rule, listed page by page.
async fn all_rules(app: &TestApp) -> Vec<purple_api::ingest::v1::DetectionRule> {
    let mut ingest = client(app);
    let (mut rules, mut token) = (Vec::new(), String::new());
    loop {
        let page = ingest
            .list_detection_rules(purple_api::ingest::v1::ListDetectionRulesRequest {
                page_size: 37,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        rules.extend(page.rules);
        if page.next_page_token.is_empty() {
            return rules;
        }
        token = page.next_page_token;
    }
}

/// The three upstream ids that are both a Sigma and an Elastic rule.
const SHARED_IDS: [&str; 3] = [
    "2f0bae2d-bf20-4465-be86-1311addebaa3",
    "b45ab1d2-712f-4f01-a751-df3826969807",
    "ee39a9f7-5a79-4b0a-9815-d36b3cf28d3e",
];

#[tokio::test]
async fn sigma_and_elastic_rules_are_keyed_by_source_in_either_order_and_settle() {
    let mut stored = Vec::new();
    for order in [[Kind::Sigma, Kind::Elastic], [Kind::Elastic, Kind::Sigma]] {
        let app = spawn_app().await;
        for kind in order {
            let path = if kind == Kind::Sigma {
                "sigma"
            } else {
                "elastic-detection-rules"
            };
            import(&app, kind, path).await.unwrap();
        }
        // Each import again: nothing created, nothing updated.
        for kind in order {
            let path = if kind == Kind::Sigma {
                "sigma"
            } else {
                "elastic-detection-rules"
            };
            let again = import(&app, kind, path).await.unwrap();
            for entity in ["rule", "rule_technique", "rule_cve"] {
                let (created, updated, ..) = counts(&again, entity);
                assert_eq!((created, updated), (0, 0), "{kind:?} {entity} again");
            }
        }
        stored.push(all_rules(&app).await);

        // The listing's filters, and lookups by a shared id.
        let mut ingest = client(&app);
        let listed = |source: &str, enabled: Option<bool>, technique: &str| {
            purple_api::ingest::v1::ListDetectionRulesRequest {
                source: source.into(),
                enabled,
                technique_id: technique.into(),
                page_size: 1000,
                ..Default::default()
            }
        };
        let sigma = ingest
            .list_detection_rules(listed("sigma", None, ""))
            .await
            .unwrap()
            .into_inner()
            .rules;
        assert_eq!(sigma.len(), 157);
        assert!(sigma.iter().all(|r| r.source == "sigma"));
        let disabled = ingest
            .list_detection_rules(listed("", Some(false), ""))
            .await
            .unwrap()
            .into_inner()
            .rules;
        assert!(!disabled.is_empty() && disabled.iter().all(|r| !r.enabled));
        let mapped = ingest
            .list_detection_rules(listed("", None, "T1003.001"))
            .await
            .unwrap()
            .into_inner()
            .rules;
        assert!(!mapped.is_empty());
        assert!(
            mapped
                .iter()
                .all(|r| r.technique_ids.contains(&"T1003.001".to_owned()))
        );
        let bad = ingest
            .list_detection_rules(listed("splunk", None, ""))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let both = ingest
            .get_detection_rules_by_ids(purple_api::ingest::v1::GetDetectionRulesByIdsRequest {
                rule_ids: vec![SHARED_IDS[0].into()],
            })
            .await
            .unwrap()
            .into_inner()
            .rules;
        let sources: Vec<&str> = both.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["elastic", "sigma"]);
        assert_ne!(both[0].title, both[1].title);
    }
    assert_eq!(stored[0], stored[1], "the same rules whichever came first");
    assert_eq!(stored[0].len(), 157 + 66, "every rule of both sources");
    for id in SHARED_IDS {
        assert_eq!(
            stored[0].iter().filter(|r| r.rule_id == id).count(),
            2,
            "{id} is a Sigma and an Elastic rule"
        );
    }
}

#[tokio::test]
async fn a_directory_of_releases_and_domains_imports_the_newest_enterprise_objects() {
    // v17.1 (STIX 2.1), v18.1 (2.0 and 2.1) and ATT&CK for ICS 18.1, in one
    // import: ICS objects (which share tactic short names with Enterprise)
    // are left out and reported, and each object is kept as last modified.
    let app = spawn_app().await;
    let report = import(&app, Kind::Attack, "attack").await.unwrap();
    assert_eq!(report.files.len(), 4, "{:?}", report.files);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.file_name.contains("ics-attack") && s.reason.contains("ATT&CK for ICS")),
        "{:?}",
        report.skipped
    );
    let everything = (
        count_techniques(&app, SubtechniqueFilter::Unspecified, false).await,
        count_techniques(&app, SubtechniqueFilter::Unspecified, true).await,
    );
    let single = spawn_app().await;
    import(
        &single,
        Kind::Attack,
        "attack/v18.1/stix21/enterprise-attack-18.1.json.gz",
    )
    .await
    .unwrap();
    assert_eq!(
        everything,
        (
            count_techniques(&single, SubtechniqueFilter::Unspecified, false).await,
            count_techniques(&single, SubtechniqueFilter::Unspecified, true).await,
        ),
        "the directory's catalogue is v18.1's"
    );
    let tactics = client(&app)
        .list_tactics(ListTacticsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tactics;
    assert_eq!(tactics.len(), 14, "Enterprise's tactics only");
}
