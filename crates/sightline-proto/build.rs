//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building needs no `protoc`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "sightline/events/v1/events.proto",
        "sightline/query/v1/query.proto",
        "sightline/pipeline/v1/pipeline.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    // Every file's descriptors, for gRPC reflection (grpcurl and the like).
    let descriptors = PathBuf::from(env::var("OUT_DIR")?).join("sightline_descriptor.bin");
    std::fs::write(descriptors, protox::prost::Message::encode_to_vec(&fds))?;
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Clients take a channel built by their crate (`Client::new`), so this crate needs no
        // transport feature of tonic.
        .build_transport(false)
        .bytes(".sightline.events.v1")
        .compile_fds(fds)?;
    Ok(())
}
