//! The enterprise-size catalogue the benchmarks load through the real
//! importers: ATT&CK v18.1 and `RULES` Sigma rules spread over its live
//! techniques.

use std::path::Path;

use futures::StreamExt;
use purple_api::ingest::v1::{
    ImportKind, ImportRequest, ListTechniquesRequest, ingest_service_client::IngestServiceClient,
};
use purple_ingest::domain::Kind;

use super::{Authed, history::Lcg};

/// How many Sigma rules.
pub const RULES: usize = 4_000;

/// The id of bench rule `i`.
pub fn rule_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// One Sigma upload of `(file name, YAML)` documents, ended.
pub fn sigma_upload(files: Vec<(String, String)>) -> Vec<ImportRequest> {
    let mut chunks: Vec<ImportRequest> = files
        .into_iter()
        .map(|(file_name, yaml)| ImportRequest {
            kind: ImportKind::Sigma as i32,
            file_name,
            data: yaml.into_bytes(),
            last: false,
        })
        .collect();
    chunks.push(ImportRequest {
        last: true,
        ..Default::default()
    });
    chunks
}

/// Imports ATT&CK v18.1 (its campaigns as intel), CISA KEV with its ATT&CK
/// mapping and the bench rules; returns the live technique ids and the rule
/// ids.
pub async fn enterprise(channel: &Authed) -> (Vec<String>, Vec<String>) {
    let mut ingest = IngestServiceClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    let attack = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/attack/v18.1/stix21/enterprise-attack-18.1.json.gz");
    let files = purple::cli::import::collect_files(Kind::Attack, &attack).unwrap();
    let chunks: Vec<ImportRequest> = purple::cli::import::chunks(
        Kind::Attack,
        &attack,
        files,
        indicatif::ProgressBar::hidden(),
    )
    .collect()
    .await;
    ingest.import(futures::stream::iter(chunks)).await.unwrap();
    // CISA KEV and its ATT&CK mapping: what a plan weighs.
    let kev = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/kev");
    let files = purple::cli::import::collect_files(Kind::Kev, &kev).unwrap();
    let chunks: Vec<ImportRequest> =
        purple::cli::import::chunks(Kind::Kev, &kev, files, indicatif::ProgressBar::hidden())
            .collect()
            .await;
    ingest.import(futures::stream::iter(chunks)).await.unwrap();
    let techniques: Vec<String> = ingest
        .list_techniques(ListTechniquesRequest {
            page_size: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .techniques
        .into_iter()
        .map(|t| t.technique_id)
        .collect();
    let mut rng = Lcg(7);
    let rules: Vec<(String, String)> = (0..RULES)
        .map(|i| {
            let technique = &techniques[rng.next(techniques.len() as u64) as usize];
            let yaml = format!(
                "title: bench rule {i}\nid: {}\nstatus: stable\nlevel: medium\ntags:\n  - attack.{}\n",
                rule_id(i),
                technique.to_ascii_lowercase()
            );
            (format!("rule-{i}.yml"), yaml)
        })
        .collect();
    ingest
        .import(futures::stream::iter(sigma_upload(rules)))
        .await
        .unwrap();
    (techniques, (0..RULES).map(rule_id).collect())
}
