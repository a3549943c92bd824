//! Running external programs (the other clients' scenario scripts and their set-up) from the
//! tests: bounded in time, output captured.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `command` to completion (stdin closed, output captured), killing it if it takes longer
/// than `timeout`.
pub fn run(mut command: Command, timeout: Duration, what: &str) -> std::io::Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => {
            // Our own child, not yet reaped (the thread still waits on it): its pid is its own.
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            let partial = rx
                .recv_timeout(Duration::from_secs(10))
                .ok()
                .and_then(Result::ok)
                .map(|o| output_text(&o))
                .unwrap_or_default();
            panic!("{what} did not finish within {timeout:?}; killed it. Its output:\n{partial}");
        }
    }
}

/// A command's stdout, then its stderr (if any) under a separator.
pub fn output_text(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut text = stdout.trim_end().to_string();
    if !stderr.trim().is_empty() {
        text.push_str("\n--- stderr ---\n");
        text.push_str(stderr.trim_end());
    }
    text
}

pub fn remove_dir(dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
    }
}

/// Proxy variables, removed from the scripts' environment: gRPC libraries honour them, and the
/// server is local.
pub const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "grpc_proxy",
    "all_proxy",
    "ALL_PROXY",
];

/// Moves a set-up made at `building` (checked with `works`) to `place`, replacing whatever was
/// there. Building beside the final place and renaming means an interrupted set-up never leaves
/// a half-made one where the next run looks; another run may have moved its own there first,
/// which is as good.
pub fn move_into_place(building: &Path, place: &Path, works: impl Fn(&Path) -> bool, what: &str) {
    assert!(
        works(building),
        "{what} was set up in {} but does not work",
        building.display()
    );
    remove_dir(place);
    if let Err(e) = std::fs::rename(building, place) {
        remove_dir(building);
        assert!(
            works(place),
            "cannot move {what} to {}: {e}",
            place.display()
        );
    }
    assert!(
        works(place),
        "{what} at {} does not work after the move",
        place.display()
    );
}
