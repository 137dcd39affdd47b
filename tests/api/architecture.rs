//! The layering ARCHITECTURE.md promises, checked on the source: wire types
//! stay at the API edge of each service, handlers convert errors once, peer
//! calls go through the runtime's typed clients, and the shared migration
//! is written once.

use std::path::{Path, PathBuf};

const SERVICES: [&str; 4] = ["ingest", "campaigns", "scoring", "metrics"];

/// The files of a service allowed to name wire types: the handlers, their
/// conversions, the peer clients' conversions, and the crate root that
/// builds the server.
const EDGE: [&str; 5] = ["api.rs", "convert.rs", "clients.rs", "lib.rs", "error.rs"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Code without comments (a doc comment may name a wire type).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_wire_type_below_the_api_layer() {
    let forbidden = [
        "pb::",
        "ingest::v1",
        "campaigns::v1",
        "scoring::v1",
        "metrics::v1",
        "prost_types",
        "tonic::Request",
        "tonic::Response",
    ];
    let mut offenders = Vec::new();
    for service in SERVICES {
        for file in rust_files(&root().join("services").join(service).join("src")) {
            if file.parent().unwrap().ends_with("src")
                && EDGE.contains(&file.file_name().unwrap().to_str().unwrap())
            {
                continue;
            }
            let text = code(&file);
            for word in forbidden {
                if text.contains(word) {
                    offenders.push(format!("{} names {word}", file.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn no_handler_converts_errors_more_than_once() {
    for service in SERVICES {
        let file = root()
            .join("services")
            .join(service)
            .join("src")
            .join("api.rs");
        let text = code(&file);
        for handler in text.split("async fn ").skip(1) {
            let name = handler.split('(').next().unwrap_or("?");
            let count = handler.matches(".map_err(").count();
            assert!(
                count <= 1,
                "{service} handler {name} calls map_err {count} times"
            );
        }
    }
}

#[test]
fn peers_are_called_only_through_the_typed_clients() {
    let mut offenders = Vec::new();
    for service in SERVICES {
        for file in rust_files(&root().join("services").join(service).join("src")) {
            let text = code(&file);
            for word in ["_service_client::", "batch::chunked", "chunked("] {
                if text.contains(word) {
                    offenders.push(format!("{} uses {word}", file.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn the_shared_migration_is_written_once() {
    let mut copies = Vec::new();
    for service in SERVICES {
        let dir = root().join("services").join(service).join("migrations");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.contains("json_functions") {
                copies.push(format!("{service}/{name}"));
            }
        }
        let lib = code(&root().join("services").join(service).join("src/lib.rs"));
        assert!(
            lib.contains("JSON_FUNCTIONS") && lib.matches("MigrationFile::").count() >= 1,
            "{service} lists its migrations once, starting with the shared one"
        );
    }
    assert!(copies.is_empty(), "{copies:?}");
}
