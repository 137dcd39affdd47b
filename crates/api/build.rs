//! Compiles `proto/` with protox (no system `protoc`) and keeps the encoded
//! descriptor set for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "purple/common/v1/common.proto",
    "purple/ingest/v1/ingest.proto",
    "purple/campaigns/v1/campaigns.proto",
    "purple/scoring/v1/scoring.proto",
    "purple/metrics/v1/metrics.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    // compile_fds emits no rerun-if-changed of its own.
    println!("cargo:rerun-if-changed={}", root.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("purple_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Undecodable requests are the caller's mistake (INVALID_ARGUMENT).
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
