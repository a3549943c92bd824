//! KurrentDB persistent subscriptions through the official Node.js client,
//! `@kurrent/kurrentdb-client`, a third client implementation beside the Rust
//! (tests/kurrent_persistent.rs) and Python (tests/kurrent_python.rs) ones.
//!
//! The test installs the pinned client (tests/kurrent/node/package.json and its
//! package-lock.json, with `npm ci`) under `CARGO_TARGET_TMPDIR` once, reusing the install
//! while it works, serves a fresh store in process on 127.0.0.1:0, and runs
//! `tests/kurrent/node/scenarios.mjs` against it: create (and already exists), read with ack,
//! every kind of nack (retry, skip, park, stop), replay parked (all, and with `stopAt`),
//! message timeouts with buffer sizes 1 and 10, max retry count then parking, info with its
//! settings and statistics, list (to a stream, to `$all`, all), update and delete (consumers
//! dropped), maximum subscribers, not found, invalid settings, `$all` groups with a
//! stream-name prefix filter and an event-type regex filter (and an update keeping it), and
//! restarting the subsystem. Info, list and replay parked go over gRPC only because the server's
//! ServerFeatures say so (the client would otherwise use KurrentDB's HTTP API, which this
//! server does not speak). The script asserts exact values and exits non-zero on the first
//! failure; its output is shown then.
//!
//! It needs `node` and `npm`, and the npm registry the first time. Without them it fails,
//! unless `STATESTORE_SKIP_NODE_CLIENT=1` is set: then it says why and passes.
//!
//! To iterate on the script, run it by hand against a server with this test's install:
//! `STATESTORE_NODE_CLIENT_DIR=target/tmp/kurrentdb-node-client node
//! tests/kurrent/node/scenarios.mjs 'kurrentdb://127.0.0.1:2113?tls=false' [scenario ...]`.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::external::{PROXY_VARS, move_into_place, output_text, remove_dir, run};
use common::server::TestServer;
use statestore::server::ServerConfig;

/// The `@kurrent/kurrentdb-client` release the scenarios are written against (its newest,
/// 1.3.1), as tests/kurrent/node/package.json pins it.
const CLIENT_VERSION: &str = "1.3.1";
const CLIENT_PACKAGE: &str = "@kurrent/kurrentdb-client";
/// Set to 1 to pass (with a message) where node or npm is not available.
const SKIP_VAR: &str = "STATESTORE_SKIP_NODE_CLIENT";
const INSTALL_DIR: &str = "kurrentdb-node-client";
/// The files of tests/kurrent/node that define the install.
const MANIFESTS: [&str; 2] = ["package.json", "package-lock.json"];
/// Bounds on the child processes. The script's own watchdog (90 s) fires first.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn node_client_persistent_subscriptions() {
    let started = Instant::now();
    let Some(client_dir) = installed_client() else {
        return;
    };
    let setup = started.elapsed();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = common::tempdir();
    let server = runtime.block_on(TestServer::start(
        dir.path(),
        common::config(),
        ServerConfig::default(),
    ));
    let uri = format!("kurrentdb://{}?tls=false", server.addr);
    let script = source_dir().join("scenarios.mjs");

    let mut command = Command::new("node");
    command
        .arg(&script)
        .arg(&uri)
        .env("STATESTORE_NODE_CLIENT_DIR", &client_dir);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    let ran = Instant::now();
    let output = run(command, SCRIPT_TIMEOUT, "the Node.js scenario script")
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}", script.display()));
    let took = ran.elapsed();
    let text = output_text(&output);
    println!("{text}");
    println!(
        "{CLIENT_PACKAGE} {CLIENT_VERSION}: scenarios took {took:.1?} (client ready in \
         {setup:.1?})"
    );
    assert!(
        output.status.success(),
        "the Node.js client scenarios failed ({}) against {uri}:\n{text}",
        output.status
    );
    runtime.block_on(server.stop());
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kurrent/node")
}

/// The directory of a working install of the pinned client, made if need be. `None` when it
/// cannot be made and the skip variable is set.
fn installed_client() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let install = root.join(INSTALL_DIR);
    if install_works(&install) {
        return Some(install);
    }

    for (program, what) in [("node", "node --version"), ("npm", "npm --version")] {
        let mut probe = Command::new(program);
        probe.arg("--version");
        match run(probe, PROBE_TIMEOUT, what) {
            Ok(o) if o.status.success() => {
                // The client's engines field asks for node 20 or later.
                let version = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let major = version
                    .trim_start_matches('v')
                    .split('.')
                    .next()
                    .and_then(|m| m.parse::<u32>().ok());
                if program == "node" && major.is_none_or(|m| m < 20) {
                    return unavailable(format!(
                        "node is {version}; the client needs v20 or later"
                    ));
                }
            }
            Ok(o) => return unavailable(format!("`{what}` failed:\n{}", output_text(&o))),
            Err(e) => return unavailable(format!("{program} is not available: {e}")),
        }
    }

    // Built beside the final place and renamed into it, so that an interrupted install never
    // leaves a half-made one where the next run looks.
    let building = root.join(format!("{INSTALL_DIR}.building-{}", std::process::id()));
    remove_dir(&building);
    std::fs::create_dir_all(&building)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", building.display()));
    for file in MANIFESTS {
        let from = source_dir().join(file);
        std::fs::copy(&from, building.join(file))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&building);
    let failure = match run(npm, SETUP_TIMEOUT, "npm ci") {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "npm ci failed ({}):\n{}",
            o.status,
            output_text(&o)
        )),
        Err(e) => Some(format!("npm ci could not run: {e}")),
    };
    if let Some(failure) = failure {
        remove_dir(&building);
        return unavailable(failure);
    }
    move_into_place(
        &building,
        &install,
        install_works,
        &format!("{CLIENT_PACKAGE} {CLIENT_VERSION}"),
    );
    Some(install)
}

/// True when `dir` was installed from the current manifests and node loads the pinned client
/// from it.
fn install_works(dir: &Path) -> bool {
    let same_manifests = MANIFESTS.iter().all(|file| {
        match (
            std::fs::read(dir.join(file)),
            std::fs::read(source_dir().join(file)),
        ) {
            (Ok(installed), Ok(source)) => installed == source,
            _ => false,
        }
    });
    if !same_manifests {
        return false;
    }
    let check = format!(
        "const c = require('{CLIENT_PACKAGE}'); \
         const v = require('{CLIENT_PACKAGE}/package.json').version; \
         if (v !== '{CLIENT_VERSION}' || typeof c.KurrentDBClient !== 'function') {{ \
           console.error('found', v); process.exit(1); }}"
    );
    let mut node = Command::new("node");
    node.args([OsStr::new("-e"), OsStr::new(&check)])
        .current_dir(dir);
    matches!(
        run(node, PROBE_TIMEOUT, "the install check"),
        Ok(o) if o.status.success()
    )
}

/// Fails with `why`, or, with the skip variable set, prints it and gives up quietly.
fn unavailable(why: String) -> Option<PathBuf> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!(
            "SKIPPED: the Node.js client scenarios did not run: {why}\n({SKIP_VAR}=1 is set)"
        );
        return None;
    }
    panic!(
        "the Node.js client scenarios need node (v20 or later) and npm, and the npm registry \
         to install {CLIENT_PACKAGE}@{CLIENT_VERSION} the first time: {why}\n\
         Install them (for example `apt-get install nodejs npm`, or from nodejs.org), or set \
         {SKIP_VAR}=1 to skip this test."
    );
}
