//! The KurrentDB (EventStoreDB) protocol adapter through the official Python client
//! `esdbclient`, a second client implementation beside the Rust one (tests/kurrent_rust.rs).
//!
//! The test makes a Python virtual environment under `CARGO_TARGET_TMPDIR` (once; it is reused
//! while it works) with a pinned `esdbclient` from PyPI, serves a fresh store in process on
//! 127.0.0.1:0, and runs `tests/kurrent/esdbclient_scenarios.py` against it: appends with
//! every expected version, idempotent retries, stream and `$all` reads with filters, catch-up
//! subscriptions (also under concurrent appends), metadata, delete and tombstone; then, over TLS
//! with users, `tests/kurrent/esdbclient_tls.py` (credentials, refusals). The script
//! asserts exact values and exits non-zero on the first failure; its output is shown then.
//!
//! It needs `python3` with `venv` and `pip`, and PyPI the first time. Without them it fails,
//! unless `STATESTORE_SKIP_PYTHON_CLIENT=1` is set: then it says why and passes.
//!
//! To iterate on the script, run it by hand with the venv's python against a server:
//! `target/tmp/esdbclient-venv/bin/python tests/kurrent/esdbclient_scenarios.py
//! 'esdb://127.0.0.1:2113?Tls=false' [scenario ...]`.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::external::{PROXY_VARS, move_into_place, output_text, remove_dir, run};
use common::server::TestServer;
use statestore::server::ServerConfig;
use statestore::service::ServiceConfig;

/// The `esdbclient` release the scenarios are written against (its newest, 1.1.7).
const ESDBCLIENT_VERSION: &str = "1.1.7";
/// Set to 1 to pass (with a message) where python3, venv or pip is not available.
const SKIP_VAR: &str = "STATESTORE_SKIP_PYTHON_CLIENT";
const VENV_DIR: &str = "esdbclient-venv";
/// Bounds on the child processes. The script's own watchdog (150 s) fires first.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn esdbclient_scenarios() {
    let started = Instant::now();
    let Some(python) = venv_python() else {
        return;
    };
    let setup = started.elapsed();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = common::tempdir();
    // Small read pages, live ring and subscriber buffers, so that the scenarios' reads span
    // pages and their subscriptions fall back to disk and catch up again.
    let server_config = ServerConfig {
        service: ServiceConfig {
            read_page_events: 7,
            live_ring_batches: 4,
            subscriber_buffer_bytes: 4096,
            ..ServiceConfig::default()
        },
        ..ServerConfig::default()
    };
    // One event's limit below one append's, so that batch appends meet both
    // (EVENT_BYTES_MAX and APPEND_BYTES_MAX in the script).
    let store_config = statestore::Config {
        event_bytes_max: 200 << 10,
        ..common::config()
    };
    let server = runtime.block_on(TestServer::start(dir.path(), store_config, server_config));
    let uri = format!("esdb://{}?Tls=false", server.addr);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kurrent/esdbclient_scenarios.py");

    let command = script_command(&python, [script.as_os_str(), OsStr::new(&uri)]);
    let ran = Instant::now();
    let output = run(command, SCRIPT_TIMEOUT, "the esdbclient scenario script")
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let took = ran.elapsed();
    let text = output_text(&output);
    println!("{text}");
    println!(
        "esdbclient {ESDBCLIENT_VERSION}: scenarios took {took:.1?} (environment ready in \
         {setup:.1?})"
    );
    assert!(
        output.status.success(),
        "the esdbclient scenarios failed ({}) against {uri}:\n{text}",
        output.status
    );

    runtime.block_on(server.stop());

    tls_with_users(&runtime, &python);
}

/// The client over TLS with credentials: a self-signed certificate for `localhost` as its
/// root, `admin` and `ada` as users (tests/kurrent/esdbclient_tls.py).
fn tls_with_users(runtime: &tokio::runtime::Runtime, python: &Path) {
    let dir = common::tempdir();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let cert_pem = certified.cert.pem();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert_pem).expect("write the CA file");
    let store = statestore::Store::open(dir.path().join("data"), common::config()).expect("open");
    statestore::users::bootstrap_admin(&store, "changeit").expect("admin");
    statestore::users::add_user(&store, "ada", "ada-pw", &[]).expect("ada");
    let config = ServerConfig {
        tls: Some(statestore::server::TlsConfig {
            cert_pem: cert_pem.into_bytes(),
            key_pem: certified.signing_key.serialize_pem().into_bytes(),
            client_ca_pem: None,
        }),
        ..ServerConfig::default()
    };
    let server = runtime.block_on(TestServer::serve(std::sync::Arc::new(store), config));
    let uri = format!(
        "esdb://{{user}}:{{password}}@localhost:{}",
        server.addr.port()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kurrent/esdbclient_tls.py");
    let command = script_command(
        python,
        [script.as_os_str(), OsStr::new(&uri), ca_file.as_os_str()],
    );
    let output = run(command, SCRIPT_TIMEOUT, "the esdbclient TLS script")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let text = output_text(&output);
    println!("{text}");
    assert!(
        output.status.success(),
        "esdbclient over TLS failed ({}):\n{text}",
        output.status
    );
    runtime.block_on(server.stop());
}

/// A scenario script run by `python`, unbuffered, and with no proxy: gRPC's Python library
/// honours proxy variables, and the server is local.
fn script_command<'a>(python: &Path, args: impl IntoIterator<Item = &'a OsStr>) -> Command {
    let mut command = command(python, args);
    command.env("PYTHONUNBUFFERED", "1");
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
}

/// The python of a working virtual environment with the pinned `esdbclient`, made if need be.
/// `None` when it cannot be made and the skip variable is set.
fn venv_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join(VENV_DIR);
    let python = venv.join("bin").join("python");
    if venv_works(&python) {
        return Some(python);
    }

    match run(
        command("python3", ["--version"]),
        PROBE_TIMEOUT,
        "python3 --version",
    ) {
        Ok(o) if o.status.success() => {}
        Ok(o) => return unavailable(format!("`python3 --version` failed:\n{}", output_text(&o))),
        Err(e) => return unavailable(format!("python3 is not available: {e}")),
    }

    // Built beside the final place and renamed into it, so that an interrupted set-up never
    // leaves a half-made environment where the next run looks.
    let building = root.join(format!("{VENV_DIR}.building-{}", std::process::id()));
    remove_dir(&building);
    let building_python = building.join("bin").join("python");
    let pin = format!("esdbclient=={ESDBCLIENT_VERSION}");
    let steps: [(&str, Command); 3] = [
        (
            "python3 -m venv",
            command(
                "python3",
                [OsStr::new("-m"), OsStr::new("venv"), building.as_os_str()],
            ),
        ),
        (
            "pip (python -m pip --version, in the new environment)",
            command(&building_python, ["-m", "pip", "--version"]),
        ),
        (
            "pip install",
            command(
                &building_python,
                ["-m", "pip", "install", "--no-input", "--quiet", &pin],
            ),
        ),
    ];
    for (what, command) in steps {
        let failure = match run(command, SETUP_TIMEOUT, what) {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!("{what} failed ({}):\n{}", o.status, output_text(&o)),
            Err(e) => format!("{what} could not run: {e}"),
        };
        remove_dir(&building);
        return unavailable(failure);
    }
    move_into_place(
        &building,
        &venv,
        |dir| venv_works(&dir.join("bin").join("python")),
        &format!("the esdbclient {ESDBCLIENT_VERSION} environment"),
    );
    Some(python)
}

/// True when `python` runs and imports the pinned `esdbclient`.
fn venv_works(python: &Path) -> bool {
    if !python.exists() {
        return false;
    }
    let check = format!(
        "import importlib.metadata as m, esdbclient, grpc; \
         assert m.version('esdbclient') == '{ESDBCLIENT_VERSION}', m.version('esdbclient')"
    );
    matches!(
        run(command(python, ["-c", &check]), PROBE_TIMEOUT, "the venv check"),
        Ok(o) if o.status.success()
    )
}

/// Fails with `why`, or, with the skip variable set, prints it and gives up quietly.
fn unavailable(why: String) -> Option<PathBuf> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the esdbclient scenarios did not run: {why}\n({SKIP_VAR}=1 is set)");
        return None;
    }
    panic!(
        "the esdbclient scenarios need python3 with venv and pip, and PyPI to install \
         esdbclient=={ESDBCLIENT_VERSION} the first time: {why}\n\
         Install them (for example `apt-get install python3-venv python3-pip`), or set \
         {SKIP_VAR}=1 to skip this test."
    );
}

/// A set-up command: no bytecode files, no pip version check.
fn command<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = S>,
) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    c
}
