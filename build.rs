//! Generates the gRPC code with the protoc binary vendored by the `protoc-bin-vendored` crate,
//! so no system protoc is needed:
//! - `proto/statestore/v1`: the native API (its file descriptor set is kept for reflection);
//! - `proto/kurrentdb`: the KurrentDB (EventStoreDB) client protocol, served by the adapter.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let config = || {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        // Event data and metadata become `bytes::Bytes`, shared with the log without copying.
        config.bytes(["."]);
        config
    };
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("statestore_descriptor.bin"))
        .compile_with_config(
            config(),
            &[PathBuf::from("proto/statestore/v1/statestore.proto")],
            &[PathBuf::from("proto"), include.clone()],
        )?;
    // The protocol's string maps (event metadata) as BTreeMaps: three small entries per event
    // are cheaper to build and encode without a hasher.
    let mut kurrent = config();
    kurrent.btree_map(["."]);
    tonic_prost_build::configure()
        .build_client(false)
        .compile_with_config(
            kurrent,
            &[
                "shared",
                "status",
                "streams",
                "gossip",
                "serverfeatures",
                "persistent",
            ]
            .map(|name| PathBuf::from(format!("proto/kurrentdb/{name}.proto"))),
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
