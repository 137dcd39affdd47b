//! Ingest: the ATT&CK v18.1 bundle cold and again unchanged, every shared
//! Sigma and Elastic rule, and GetCatalogInputs for every live technique.
//! Run: `cargo bench --bench ingest` (SQLite) or
//! `PURPLE_BENCH_DATABASE_URL=postgres://... cargo bench --bench ingest`.

mod support;

use std::{path::Path, time::Instant};

use futures::StreamExt;
use purple_api::{
    batch::{DEFAULT_FANOUT, MAX_BATCH_IDS, chunked},
    ingest::v1::{
        GetCatalogInputsRequest, ImportRequest, ListTechniquesRequest, SubtechniqueFilter,
        ingest_service_client::IngestServiceClient,
    },
};
use purple_ingest::domain::Kind;
use support::{BenchApp, ms, peak_rss_mib, time};

async fn chunks(kind: Kind, path: &str) -> Vec<ImportRequest> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(path);
    let files = purple::cli::import::collect_files(kind, &path).unwrap();
    purple::cli::import::chunks(kind, &path, files, indicatif::ProgressBar::hidden())
        .collect()
        .await
}

async fn timed_import(
    client: &mut IngestServiceClient<support::Authed>,
    label: &str,
    kind: Kind,
    path: &str,
) {
    let chunks = chunks(kind, path).await;
    let start = Instant::now();
    let report = client
        .import(futures::stream::iter(chunks))
        .await
        .unwrap()
        .into_inner()
        .report
        .unwrap();
    println!(
        "| {label} | {} | {} created, {} updated |",
        ms(start.elapsed()),
        report.created,
        report.updated
    );
}

#[tokio::main]
async fn main() {
    let app = BenchApp::start().await;
    let mut ingest =
        IngestServiceClient::new(app.channel.clone()).max_encoding_message_size(64 << 20);
    println!("# ingest benchmark — {}\n", app.backend);
    println!("| step | ms | result |\n|---|---|---|");
    let attack = "attack/v18.1/stix21/enterprise-attack-18.1.json.gz";
    timed_import(
        &mut ingest,
        "import ATT&CK v18.1 (cold)",
        Kind::Attack,
        attack,
    )
    .await;
    timed_import(
        &mut ingest,
        "import ATT&CK v18.1 (unchanged)",
        Kind::Attack,
        attack,
    )
    .await;
    timed_import(
        &mut ingest,
        "import Sigma (152 files)",
        Kind::Sigma,
        "sigma",
    )
    .await;
    timed_import(
        &mut ingest,
        "import Elastic (63 files)",
        Kind::Elastic,
        "elastic-detection-rules",
    )
    .await;
    timed_import(
        &mut ingest,
        "import D3FEND pairs (4,079)",
        Kind::D3fend,
        "d3fend/derived",
    )
    .await;

    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = ingest
            .list_techniques(ListTechniquesRequest {
                subtechniques: SubtechniqueFilter::Unspecified as i32,
                page_size: 1_000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.techniques.into_iter().map(|t| t.technique_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // GetCatalogInputs is scoring's call: a service token's.
    let service = IngestServiceClient::new(app.service.clone());
    let (mid, min) = time(10, || {
        let (client, ids) = (service.clone(), ids.clone());
        async move {
            chunked(&ids, MAX_BATCH_IDS, DEFAULT_FANOUT, |chunk| {
                let mut client = client.clone();
                async move {
                    client
                        .get_catalog_inputs(GetCatalogInputsRequest {
                            technique_ids: chunk,
                        })
                        .await
                }
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "| GetCatalogInputs, {} live techniques (median of 10; min {}) | {} | |",
        ids.len(),
        ms(min),
        ms(mid)
    );
    println!(
        "\npeak RSS (server and client in one process): {:.0} MiB",
        peak_rss_mib()
    );
    app.finish().await;
}
