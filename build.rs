//! Generates the gRPC code for `proto/statestore/v1` with the protoc binary vendored by the
//! `protoc-bin-vendored` crate, so no system protoc is needed. The file descriptor set is kept
//! for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Event data and metadata become `bytes::Bytes`, shared with the log without copying.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("statestore_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/statestore/v1/statestore.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
