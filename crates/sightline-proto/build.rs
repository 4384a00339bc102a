//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building needs no `protoc`.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["sightline/events/v1/events.proto"];
    let fds = protox::compile(files, [&root])?;
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".sightline.events.v1")
        .compile_fds(fds)?;
    Ok(())
}
