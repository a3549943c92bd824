//! Architecture invariant: the engine is synchronous and knows nothing of the network. Only
//! `src/server/` (the network layer), `src/bench/` (the load tool, a gRPC client) and the binary
//! may name tokio, tonic or prost.

use std::path::Path;

const NETWORK_CRATES: [&str; 3] = ["tokio", "tonic", "prost"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn engine_modules_do_not_use_network_crates() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 5, "found the engine sources");
    let mut offenders = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel.starts_with("server") || rel.starts_with("bench") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for krate in NETWORK_CRATES {
            if text.contains(&format!("{krate}::")) || text.contains(&format!("use {krate}")) {
                offenders.push(format!("{} names {krate}", rel.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "engine code uses network crates: {offenders:?}"
    );
}
