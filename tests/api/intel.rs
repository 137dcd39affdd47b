//! Threat intelligence end to end on the real public data: ATT&CK v18.1
//! campaigns as intel reports, the same campaigns re-expressed as a STIX
//! report bundle (the export format of threat-intel platforms), CISA's KEV
//! catalogue with the CTID KEV → ATT&CK mapping, and analysts' reports —
//! every count computed independently from the files, re-imports writing
//! nothing, bad input changing nothing.

use std::collections::{BTreeMap, BTreeSet};

use purple_api::{
    common::v1::Role,
    ingest::v1::{
        CreateIntelReportsRequest, GetCvesForTechniquesRequest, GetIntelForTechniquesRequest,
        GetThreatSignalsRequest, ImportKind, ImportRequest, IntelReport, IntelSource,
        IntelTechnique, ListIntelReportsRequest, ingest_service_client::IngestServiceClient,
    },
};
use purple_ingest::domain::Kind;
use serde_json::{Value, json};
use tonic::Code;

use crate::{
    helpers::{AuthChannel, TestApp, reason, spawn_app},
    ingest::{ATTACK_18, fixture, import},
};

const KEV: &str = "kev";
const KEV_CATALOGUE: &str = "kev/cisa-kev-data/known_exploited_vulnerabilities.json";
const KEV_MAPPING: &str = "kev/ctid-mappings-explorer/kev-07.28.2025_attack-16.1-enterprise.json";

fn client(app: &TestApp) -> IngestServiceClient<AuthChannel> {
    IngestServiceClient::new(app.channel.clone())
}

fn bundle_objects() -> Vec<Value> {
    let file = std::fs::File::open(fixture(ATTACK_18)).unwrap();
    let bundle: Value = serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    bundle["objects"].as_array().unwrap().clone()
}

fn attack_id(object: &Value) -> Option<String> {
    object["external_references"]
        .as_array()?
        .iter()
        .find(|r| r["source_name"] == "mitre-attack")
        .and_then(|r| r["external_id"].as_str())
        .map(str::to_owned)
}

fn live(object: &Value) -> bool {
    object["revoked"] != json!(true) && object["x_mitre_deprecated"] != json!(true)
}

/// Each active campaign of the bundle, counted from the file: its ATT&CK
/// id, the techniques its live `uses` name and the groups it is
/// attributed to.
fn campaigns_in_bundle(
    objects: &[Value],
) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let by_stix: BTreeMap<&str, &Value> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    let mut out: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = objects
        .iter()
        .filter(|o| o["type"] == "campaign" && live(o))
        .map(|o| (attack_id(o).unwrap(), Default::default()))
        .collect();
    for r in objects
        .iter()
        .filter(|o| o["type"] == "relationship" && live(o))
    {
        let (Some(source), Some(target)) = (
            by_stix.get(r["source_ref"].as_str().unwrap()),
            by_stix.get(r["target_ref"].as_str().unwrap()),
        ) else {
            continue;
        };
        if source["type"] != "campaign" {
            continue;
        }
        let Some(entry) = out.get_mut(&attack_id(source).unwrap()) else {
            continue;
        };
        match (r["relationship_type"].as_str(), target["type"].as_str()) {
            (Some("uses"), Some("attack-pattern")) => {
                entry.0.insert(attack_id(target).unwrap());
            }
            (Some("attributed-to"), Some("intrusion-set")) => {
                entry.1.insert(attack_id(target).unwrap());
            }
            _ => {}
        }
    }
    out
}

async fn all_reports(app: &TestApp, request: ListIntelReportsRequest) -> Vec<IntelReport> {
    let mut ingest = client(app);
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let page = ingest
            .list_intel_reports(ListIntelReportsRequest {
                page_size: 20,
                page_token: token,
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.reports);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn links(report: &IntelReport) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        report
            .techniques
            .iter()
            .map(|t| t.technique_id.clone())
            .collect(),
        report.actor_ids.iter().cloned().collect(),
    )
}

#[tokio::test]
async fn attack_campaigns_become_intel_reports_and_reimport_changes_nothing() {
    let app = spawn_app().await;
    let report = import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    let objects = bundle_objects();
    let expected = campaigns_in_bundle(&objects);
    assert_eq!(expected.len(), 52, "v18.1 has 52 active campaigns");
    assert_eq!(report.counts["intel_report"].created, 52);
    let uses: usize = expected.values().map(|(t, _)| t.len()).sum();
    assert_eq!(report.counts["intel_technique"].created as usize, uses);

    let reports = all_reports(&app, ListIntelReportsRequest::default()).await;
    assert_eq!(reports.len(), 52);
    for r in &reports {
        assert_eq!(r.source, IntelSource::AttackCampaign as i32);
        assert!(
            r.report_key
                .starts_with("https://attack.mitre.org/campaigns/C"),
            "{}",
            r.report_key
        );
        let (techniques, actors) = expected.get(&r.campaign_id).unwrap();
        assert_eq!(
            &links(r),
            &(techniques.clone(), actors.clone()),
            "{}",
            r.campaign_id
        );
        assert!(
            r.last_seen.is_some() && r.first_seen.is_some(),
            "{}",
            r.campaign_id
        );
    }
    // Most recently seen first.
    let seen: Vec<i64> = reports
        .iter()
        .map(|r| r.last_seen.as_ref().unwrap().seconds)
        .collect();
    assert!(seen.windows(2).all(|w| w[0] >= w[1]));

    // Filters: a technique, an actor, a window.
    let (campaign, (techniques, actors)) =
        expected.iter().find(|(_, (_, a))| !a.is_empty()).unwrap();
    let technique = techniques.iter().next().unwrap();
    let naming: usize = expected
        .values()
        .filter(|(t, _)| t.contains(technique))
        .count();
    let by_technique = all_reports(
        &app,
        ListIntelReportsRequest {
            technique_id: technique.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_technique.len(), naming);
    let actor = actors.iter().next().unwrap();
    let by_actor = all_reports(
        &app,
        ListIntelReportsRequest {
            actor_id: actor.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(by_actor.iter().any(|r| &r.campaign_id == campaign));
    assert!(by_actor.iter().all(|r| r.actor_ids.contains(actor)));
    let since = seen[9];
    let recent = all_reports(
        &app,
        ListIntelReportsRequest {
            since: Some(prost_types::Timestamp {
                seconds: since,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(recent.len(), seen.iter().filter(|s| **s >= since).count());

    let per_technique = client(&app)
        .get_intel_for_techniques(GetIntelForTechniquesRequest {
            technique_ids: vec![technique.clone(), "T9999".into()],
            limit_per_technique: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(per_technique.missing_ids, vec!["T9999".to_owned()]);
    assert_eq!(per_technique.techniques[0].report_count as usize, naming);
    assert_eq!(per_technique.techniques[0].reports.len(), naming.min(2));

    // Re-import: nothing created, updated or removed.
    let again = import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    for entity in ["intel_report", "intel_technique", "intel_actor"] {
        let c = again.counts[entity];
        assert_eq!((c.created, c.updated, c.removed), (0, 0, 0), "{entity}");
    }
    assert_eq!(again.counts["intel_report"].unchanged, 52);
}

/// The bundle's campaigns as STIX `report` objects, as a threat-intel
/// platform would export them: each report refers to its campaign's
/// relationships (carried in the bundle) and to the attack-patterns and
/// intrusion-sets by STIX id (not carried: the importer resolves them
/// against the catalogue), keyed by the first cited URL.
fn campaigns_as_reports(objects: &[Value]) -> Value {
    let mut out = Vec::new();
    for campaign in objects
        .iter()
        .filter(|o| o["type"] == "campaign" && live(o))
    {
        let id = campaign["id"].as_str().unwrap();
        let relations: Vec<&Value> = objects
            .iter()
            .filter(|o| o["type"] == "relationship" && o["source_ref"] == id && live(o))
            .filter(|o| {
                let target = o["target_ref"].as_str().unwrap();
                target.starts_with("attack-pattern--") || target.starts_with("intrusion-set--")
            })
            .collect();
        let mut refs: Vec<Value> = relations.iter().map(|r| r["id"].clone()).collect();
        // Half the techniques also named directly, by STIX id.
        refs.extend(relations.iter().step_by(2).map(|r| r["target_ref"].clone()));
        let url = campaign["external_references"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["source_name"] != "mitre-attack")
            .find_map(|r| r["url"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("https://example.org/{id}"));
        out.push(json!({
            "type": "report", "spec_version": "2.1",
            "id": format!("report--{}", &id["campaign--".len()..]),
            "name": format!("Report on {}", campaign["name"].as_str().unwrap()),
            "description": campaign["description"],
            "published": campaign["last_seen"].as_str().or(campaign["created"].as_str()),
            "created": campaign["created"], "modified": campaign["modified"],
            "report_types": ["campaign"],
            "object_refs": refs,
            "external_references": [{"source_name": "source", "url": url}],
        }));
        out.extend(relations.into_iter().cloned());
    }
    json!({"type": "bundle", "id": "bundle--reports", "objects": out})
}

#[tokio::test]
async fn a_stix_report_bundle_links_reports_to_techniques_through_the_catalogue() {
    let app = spawn_app().await;
    import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    let objects = bundle_objects();
    let expected = campaigns_in_bundle(&objects);
    let bundle = serde_json::to_vec(&campaigns_as_reports(&objects)).unwrap();
    let chunk = |data: Vec<u8>| ImportRequest {
        kind: ImportKind::StixReports as i32,
        file_name: "reports.json".into(),
        data,
        last: true,
    };
    let report = client(&app)
        .import(futures::stream::iter([chunk(bundle.clone())]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    // Two campaigns cite the same first URL: one report each way is a
    // deduplication by key, so count the distinct keys.
    let reports = all_reports(&app, ListIntelReportsRequest::default()).await;
    let stix: Vec<&IntelReport> = reports
        .iter()
        .filter(|r| r.source == IntelSource::StixReport as i32)
        .collect();
    assert_eq!(report.counts["intel_report"].created as usize, stix.len());
    assert!(stix.len() >= 50, "{}", stix.len());
    let by_title: BTreeMap<&str, &IntelReport> = reports
        .iter()
        .filter(|r| r.source == IntelSource::AttackCampaign as i32)
        .map(|r| (r.title.as_str(), r))
        .collect();
    for r in &stix {
        let campaign = by_title[r.title.trim_start_matches("Report on ")];
        let (techniques, actors) = &expected[&campaign.campaign_id];
        assert_eq!(
            links(r),
            (techniques.clone(), actors.clone()),
            "{}",
            r.title
        );
        assert!(
            r.techniques.iter().all(|t| !t.description.is_empty()),
            "each link carries its relationship's description"
        );
    }
    let again = client(&app)
        .import(futures::stream::iter([chunk(bundle)]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let c = again.counts["intel_report"];
    assert_eq!((c.created, c.updated), (0, 0));

    // A new report holding a NUL (a JSON \u0000 escape) is left out and
    // reported; the bundle's others stay as they were (PostgreSQL cannot
    // store it, and failed the whole import).
    let mut with_nul = campaigns_as_reports(&objects);
    let objects_mut = with_nul["objects"].as_array_mut().unwrap();
    let mut bad = objects_mut
        .iter()
        .find(|o| o["type"] == "report")
        .unwrap()
        .clone();
    bad["id"] = json!("report--00000000-0000-4000-8000-000000000000");
    bad["description"] = json!("a\u{0}b");
    bad["external_references"] =
        json!([{"source_name": "source", "url": "https://intel.example/nul"}]);
    objects_mut.push(bad);
    let with_nul = client(&app)
        .import(futures::stream::iter([chunk(
            serde_json::to_vec(&with_nul).unwrap(),
        )]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    let c = with_nul.counts["intel_report"];
    assert_eq!((c.created, c.updated), (0, 0), "{with_nul:?}");
    assert!(
        with_nul
            .skipped
            .iter()
            .any(|s| s.reason.contains("NUL") && s.location.contains("intel.example/nul")),
        "{:?}",
        with_nul.skipped
    );

    // A bundle without reports is refused, naming the file.
    let status = client(&app)
        .import(futures::stream::iter([chunk(
            br#"{"type":"bundle","id":"bundle--x","objects":[]}"#.to_vec(),
        )]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("reports.json"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn kev_imports_every_entry_and_mapping_counted_from_the_files() {
    let app = spawn_app().await;
    import(&app, Kind::Attack, ATTACK_18).await.unwrap();
    let report = import(&app, Kind::Kev, KEV).await.unwrap();

    let catalogue: Value =
        serde_json::from_slice(&std::fs::read(fixture(KEV_CATALOGUE)).unwrap()).unwrap();
    let entries = catalogue["vulnerabilities"].as_array().unwrap();
    let mapping: Value =
        serde_json::from_slice(&std::fs::read(fixture(KEV_MAPPING)).unwrap()).unwrap();
    let objects = mapping["mapping_objects"].as_array().unwrap();
    let triples: BTreeSet<(String, String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["capability_id"].as_str().unwrap().to_owned(),
                o["attack_object_id"].as_str().unwrap().to_owned(),
                o["mapping_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let cves: BTreeSet<&String> = triples.iter().map(|t| &t.0).collect();
    let techniques: BTreeSet<&String> = triples.iter().map(|t| &t.1).collect();
    assert_eq!(
        (entries.len(), triples.len(), cves.len(), techniques.len()),
        (1_404, 1_183, 419, 155)
    );
    assert_eq!(report.counts["kev_entry"].created, 1_404);
    assert_eq!(report.counts["kev_mapping"].created, 1_183);
    assert_eq!(report.unresolved_references, 0, "{:?}", report.skipped);

    // Every technique's CVEs, by mapping type, as the file has them.
    let ids: Vec<String> = techniques.iter().map(|t| (*t).clone()).collect();
    let answer = client(&app)
        .get_cves_for_techniques(GetCvesForTechniquesRequest {
            technique_ids: ids.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.missing_ids.is_empty());
    let mut stored = BTreeSet::new();
    let ransomware: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["knownRansomwareCampaignUse"] == "Known")
        .map(|e| e["cveID"].as_str().unwrap())
        .collect();
    for t in &answer.techniques {
        for cve in &t.cves {
            let kev = cve
                .kev
                .as_ref()
                .expect("every mapped CVE is in the catalogue");
            assert!(cve.known_exploited);
            assert_eq!(
                kev.known_ransomware_use,
                ransomware.contains(cve.cve_id.as_str())
            );
            assert!(kev.date_added.is_some() && kev.due_date.is_some());
            for link in &cve.links {
                stored.insert((cve.cve_id.clone(), t.technique_id.clone(), link.clone()));
            }
        }
    }
    assert_eq!(stored, triples);

    // The plan's signals count the same CVEs.
    let signals = client(&app)
        .get_threat_signals(GetThreatSignalsRequest {
            technique_ids: vec!["T1190".into()],
            intel_since: None,
        })
        .await
        .unwrap()
        .into_inner()
        .signals;
    let t1190: BTreeSet<&str> = triples
        .iter()
        .filter(|t| t.1 == "T1190")
        .map(|t| t.0.as_str())
        .collect();
    assert_eq!(signals[0].kev_cves as usize, t1190.len());
    assert_eq!(
        signals[0].ransomware_cves as usize,
        t1190.iter().filter(|c| ransomware.contains(*c)).count()
    );

    let again = import(&app, Kind::Kev, KEV).await.unwrap();
    for entity in ["kev_entry", "kev_mapping"] {
        let c = again.counts[entity];
        assert_eq!((c.created, c.updated, c.removed), (0, 0, 0), "{entity}");
    }
}

/// Imports a KEV→ATT&CK mapping document as one uploaded file.
async fn import_mapping(app: &TestApp, mapping: &Value) -> purple_api::ingest::v1::ImportReport {
    client(app)
        .import(futures::stream::iter([ImportRequest {
            kind: ImportKind::Kev as i32,
            file_name: "mapping.json".into(),
            data: serde_json::to_vec(mapping).unwrap(),
            last: true,
        }]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap()
}

#[tokio::test]
async fn kev_mappings_follow_revoked_techniques_and_report_unknown_ones() {
    let app = spawn_app().await;
    crate::campaigns::import_bundle(
        &app,
        r#"{"type": "bundle", "id": "bundle--r", "objects": [
  {"type": "attack-pattern", "id": "attack-pattern--old", "name": "Old", "revoked": true,
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1001"}]},
  {"type": "attack-pattern", "id": "attack-pattern--new", "name": "New",
   "external_references": [{"source_name": "mitre-attack", "external_id": "T1002"}]},
  {"type": "relationship", "id": "relationship--r", "relationship_type": "revoked-by",
   "source_ref": "attack-pattern--old", "target_ref": "attack-pattern--new"}
]}"#,
    )
    .await;
    let mapping = json!({"mapping_objects": [
        {"capability_id": "CVE-2024-0001", "mapping_type": "primary_impact", "attack_object_id": "T1001"},
        {"capability_id": "CVE-2024-0002", "mapping_type": "exploitation_technique", "attack_object_id": "T1777"},
        {"capability_id": "CVE-2024-0003", "mapping_type": "uncategorized", "attack_object_id": "T1002"},
    ]});
    let report = import_mapping(&app, &mapping).await;
    assert_eq!(report.counts["kev_mapping"].created, 2);
    assert_eq!(report.unresolved_references, 1);
    assert!(
        report.skipped.iter().any(|s| s.reason.contains("T1777")),
        "{:?}",
        report.skipped
    );
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.reason.contains("uncategorized"))
    );
    let cves = client(&app)
        .get_cves_for_techniques(GetCvesForTechniquesRequest {
            technique_ids: vec!["T1002".into(), "T1001".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .techniques;
    assert_eq!(cves[0].cves[0].cve_id, "CVE-2024-0001", "followed to T1002");
    assert!(cves[1].cves.is_empty());
    // A newer mapping file without the first mapping: it goes.
    let newer = json!({"mapping_objects": [
        {"capability_id": "CVE-2024-0002", "mapping_type": "exploitation_technique", "attack_object_id": "T1777"},
    ]});
    let report = import_mapping(&app, &newer).await;
    let c = report.counts["kev_mapping"];
    assert_eq!((c.created, c.unchanged, c.removed), (0, 1, 1));
    let cves = client(&app)
        .get_cves_for_techniques(GetCvesForTechniquesRequest {
            technique_ids: vec!["T1002".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .techniques;
    assert!(cves[0].cves.is_empty());
}

fn analyst_report(url: &str, techniques: &[&str]) -> IntelReport {
    IntelReport {
        url: url.into(),
        title: "Phishing wave".into(),
        description: "seen this week".into(),
        published_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() - 86_400,
            nanos: 0,
        }),
        techniques: techniques
            .iter()
            .map(|t| IntelTechnique {
                technique_id: (*t).into(),
                description: format!("uses {t}"),
            })
            .collect(),
        actor_ids: vec!["G0001".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn analysts_add_reports_deduplicated_by_url_and_bad_ones_change_nothing() {
    let app = spawn_app().await;
    crate::campaigns::import_bundle(&app, crate::campaigns::CATALOG).await;
    let mut ingest = client(&app);
    let created = ingest
        .create_intel_reports(CreateIntelReportsRequest {
            reports: vec![analyst_report("https://intel.example/1", &["T1059.001"])],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((created.created, created.updated), (1, 0));
    assert_eq!(created.reports[0].source, IntelSource::Analyst as i32);
    // The same URL again, with one more technique: an update, not a copy.
    let updated = ingest
        .create_intel_reports(CreateIntelReportsRequest {
            reports: vec![analyst_report(
                "https://intel.example/1",
                &["T1059.001", "t1003"],
            )],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((updated.created, updated.updated), (0, 1));
    assert_eq!(updated.reports[0].techniques.len(), 2);
    assert_eq!(all_reports(&app, Default::default()).await.len(), 1);

    // Refusals name the field; nothing is written.
    for (report, field) in [
        (analyst_report("ftp://x", &["T1059"]), "reports[0].url"),
        (
            analyst_report("https://intel.example/2", &[]),
            "reports[0].techniques",
        ),
        (
            analyst_report("https://intel.example/2", &["T1059.1"]),
            "reports[0].techniques[0].technique_id",
        ),
        (
            analyst_report("https://intel.example/2", &["T1777"]),
            "reports.techniques",
        ),
        (
            IntelReport {
                title: String::new(),
                ..analyst_report("https://intel.example/2", &["T1059"])
            },
            "reports[0].title",
        ),
        (
            IntelReport {
                title: "a\0b".into(),
                ..analyst_report("https://intel.example/2", &["T1059"])
            },
            "reports[0].title",
        ),
        (
            IntelReport {
                description: "a\0b".into(),
                ..analyst_report("https://intel.example/2", &["T1059"])
            },
            "reports[0].description",
        ),
        (
            analyst_report("https://intel.example/2\0", &["T1059"]),
            "reports[0].url",
        ),
    ] {
        let status = ingest
            .create_intel_reports(CreateIntelReportsRequest {
                reports: vec![report],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert_eq!(all_reports(&app, Default::default()).await.len(), 1);

    // A red tech reads intel but does not write it.
    let red = IngestServiceClient::new(app.as_role("rex", Role::RedTech));
    let status = red
        .clone()
        .create_intel_reports(CreateIntelReportsRequest {
            reports: vec![analyst_report("https://intel.example/3", &["T1059"])],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "ROLE_REQUIRED");
    red.clone()
        .list_intel_reports(ListIntelReportsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_intel_and_kev_files_are_refused_by_place_and_change_nothing() {
    let app = spawn_app().await;
    crate::campaigns::import_bundle(&app, crate::campaigns::CATALOG).await;
    let upload = |kind: ImportKind, name: &str, data: Vec<u8>| ImportRequest {
        kind: kind as i32,
        file_name: name.into(),
        data,
        last: true,
    };
    let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    for (request, place) in [
        (
            upload(ImportKind::Kev, "deep.json", deep.clone().into_bytes()),
            "line 1",
        ),
        (
            upload(ImportKind::StixReports, "deep.json", deep.into_bytes()),
            "line 1",
        ),
        (
            upload(
                ImportKind::Kev,
                "broken.json",
                b"{\"vulnerabilities\": [".to_vec(),
            ),
            "line 1, column 21",
        ),
        (
            upload(
                ImportKind::Kev,
                "other.json",
                b"{\"something\": 1}".to_vec(),
            ),
            "document",
        ),
        (
            upload(ImportKind::StixReports, "list.json", b"[1, 2]".to_vec()),
            "line 1, column 1",
        ),
    ] {
        let name = request.file_name.clone();
        let started = std::time::Instant::now();
        let status = client(&app)
            .import(futures::stream::iter([request]))
            .await
            .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(status.code(), Code::InvalidArgument, "{name}");
        assert!(
            status.message().contains(&name) && status.message().contains(place),
            "{name}: {}",
            status.message()
        );
    }
    // Items it cannot use are listed, the rest kept: a bad CVE id, a bad
    // date.
    let kev = json!({"vulnerabilities": [
        {"cveID": "CVE-2024-12345", "dateAdded": "2024-01-02"},
        {"cveID": "not-a-cve"},
        {"cveID": "CVE-2024-0002", "dateAdded": "yesterday"}
    ]});
    let report = client(&app)
        .import(futures::stream::iter([upload(
            ImportKind::Kev,
            "kev.json",
            serde_json::to_vec(&kev).unwrap(),
        )]))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    assert_eq!(report.counts["kev_entry"].created, 1);
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.location == "vulnerabilities[1]")
    );
    // Nothing of the refused uploads was written.
    assert!(
        all_reports(&app, ListIntelReportsRequest::default())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_replica_serves_a_bounded_number_of_watchers() {
    use purple_api::scoring::v1::{
        WatchScoresRequest, scoring_service_client::ScoringServiceClient,
    };
    let app = spawn_app().await;
    // Several connections (each carries at most 64 streams).
    let mut streams = Vec::new();
    for _ in 0..5 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect_lazy();
        let token = app.token("watcher", Role::Viewer);
        let mut scoring = ScoringServiceClient::new(crate::helpers::with_bearer(channel, &token));
        for _ in 0..60 {
            match scoring.watch_scores(WatchScoresRequest::default()).await {
                Ok(stream) => streams.push(stream.into_inner()),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    assert_eq!(streams.len(), purple_scoring::feed::MAX_WATCHERS);
                    // Health and other reads still answer.
                    app.wait_until_serving("").await;
                    client(&app)
                        .list_intel_reports(ListIntelReportsRequest::default())
                        .await
                        .unwrap();
                    // A watcher that leaves frees its place.
                    streams.pop();
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    scoring
                        .watch_scores(WatchScoresRequest::default())
                        .await
                        .unwrap();
                    return;
                }
            }
        }
    }
    panic!("{} watchers and never refused", streams.len());
}
