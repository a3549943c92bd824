//! Architecture invariants, checked on the sources:
//! - the engine is synchronous and knows nothing of the network: only `src/server/` (the
//!   network layer), `src/service/` (the layer every front-end calls, which knows tokio),
//!   `src/bench/` (the load tool, a gRPC client) and the binary may name tokio, tonic or prost;
//! - `src/service/` knows no wire format: it never names tonic, prost or http;
//! - no front-end reaches the store around the service layer: nothing in `src/server/` names
//!   `Store` except the entry point that hands it to the service (`server/mod.rs`).

use std::path::{Path, PathBuf};

const NETWORK_CRATES: [&str; 3] = ["tokio", "tonic", "prost"];
const WIRE_CRATES: [&str; 4] = ["tonic", "prost", "http", "axum"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under `src`, relative path and text.
fn sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found the sources");
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("readable source");
            (f.strip_prefix(&src).expect("under src").to_path_buf(), text)
        })
        .collect()
}

fn names_crate(text: &str, krate: &str) -> bool {
    text.contains(&format!("{krate}::")) || text.contains(&format!("use {krate}"))
}

#[test]
fn engine_modules_do_not_use_network_crates() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        if rel.starts_with("server")
            || rel.starts_with("service")
            || rel.starts_with("bench")
            || rel == Path::new("main.rs")
        {
            continue;
        }
        for krate in NETWORK_CRATES {
            if names_crate(&text, krate) {
                offenders.push(format!("{} names {krate}", rel.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "engine code uses network crates: {offenders:?}"
    );
}

#[test]
fn the_service_layer_knows_no_wire_format() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        if !rel.starts_with("service") {
            continue;
        }
        for krate in WIRE_CRATES {
            if names_crate(&text, krate) {
                offenders.push(format!("{} names {krate}", rel.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the service layer names wire crates: {offenders:?}"
    );
}

#[test]
fn front_ends_do_not_reach_the_store_around_the_service_layer() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        if !rel.starts_with("server") || rel == Path::new("server/mod.rs") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("Store") && !code.contains("EventStore") || code.contains(".store.") {
                offenders.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "front-ends call the store directly: {offenders:?}"
    );
}
