//! The binary as operators and the load tool see it: `serve` configured through environment
//! variables with JSON logs, flag errors, `--help`, and `statestore bench` in every mode against
//! a real server (its last line must be the JSON report, and its checks must pass).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statestore");

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` configured only through environment variables, with JSON logs on stderr (to
/// a file beside the data directory), and waits for its "ready" line. Returns the server and
/// the log lines written so far.
fn start_with_env(dir: &Path) -> (Server, Vec<String>) {
    let log = dir.with_extension("log");
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("address")
            .port();
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("STATESTORE_DATA_DIR", dir)
            .env("STATESTORE_LISTEN", format!("127.0.0.1:{port}"))
            .env("STATESTORE_LOG_FORMAT", "json")
            .env("STATESTORE_SEGMENT_BYTES", (4u64 << 20).to_string())
            .env("STATESTORE_APPEND_BYTES_MAX", (1u64 << 20).to_string())
            .env("STATESTORE_FSYNC", "never")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.iter().any(|l| l.contains("\"ready\"")) {
                let url = format!("http://127.0.0.1:{port}");
                return (Server { child, url }, lines);
            }
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The port was taken between the probe and the bind: try another.
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "the server did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Runs `statestore bench` and returns its last stdout line, which must be the JSON report.
fn bench(url: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["bench", "--target", url])
        .args(args)
        .output()
        .expect("run the load tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_string()
}

/// The value of a numeric field in the report's one-line JSON object.
fn field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is a number in {json}"))
}

#[test]
fn serve_is_configured_by_environment_and_logs_json() {
    let dir = common::tempdir();
    let (server, lines) = start_with_env(dir.path());
    // Every log line is one JSON object; the startup steps carry their timings.
    for line in &lines {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "not JSON: {line}"
        );
    }
    let opened = lines
        .iter()
        .find(|l| l.contains("opened store"))
        .expect("a line for opening the store");
    assert!(opened.contains("elapsed_ms"), "{opened}");
    let ready = lines
        .iter()
        .find(|l| l.contains("\"ready\""))
        .expect("the ready line");
    assert!(ready.contains("startup_ms"), "{ready}");
    assert!(ready.contains("\"fsync\":\"never\""), "{ready}");
    assert!(
        dir.path().join("LOCK").exists(),
        "the data directory is the one given"
    );
    let report = bench(&server.url, &["--duration-s", "0.3", "--batch", "3"]);
    assert!(field(&report, "events") >= 3.0, "{report}");
}

#[test]
fn a_server_whose_log_reader_goes_away_keeps_serving() {
    use std::io::{BufRead, BufReader};
    let dir = common::tempdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--fsync", "never"])
        .args([
            "--segment-bytes",
            "4194304",
            "--append-bytes-max",
            "1048576",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut ready = false;
    for line in BufReader::new(stderr).lines() {
        if line.expect("a log line").contains("ready") {
            ready = true;
            break;
        }
    }
    // The reader is gone; the next log lines hit a closed pipe.
    assert!(ready, "the server started");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    std::thread::sleep(Duration::from_millis(200));
    let report = bench(&server.url, &["--duration-s", "0.3", "--clients", "2"]);
    assert!(field(&report, "events") > 0.0, "{report}");
    let mut server = server;
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server is still running"
    );
}

#[test]
fn bad_flags_are_refused_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["serve", "--fsync", "sometimes"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'sometimes' is not always, never or interval:MS"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    let dir = common::tempdir();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--read-page-events", "0", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read_page_events"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_explains_every_serve_flag_and_its_default() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--data-dir", "STATESTORE_DATA_DIR"),
        ("--listen", "STATESTORE_LISTEN"),
        ("--fsync", "STATESTORE_FSYNC"),
        ("--segment-bytes", "STATESTORE_SEGMENT_BYTES"),
        ("--message-bytes-max", "STATESTORE_MESSAGE_BYTES_MAX"),
        (
            "--concurrent-streams-max",
            "STATESTORE_CONCURRENT_STREAMS_MAX",
        ),
        ("--read-page-events", "STATESTORE_READ_PAGE_EVENTS"),
        ("--log-format", "STATESTORE_LOG_FORMAT"),
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
    assert!(help.contains("[default: 127.0.0.1:2113]"), "{help}");
    assert!(help.contains("[default: ./data]"), "{help}");
}

#[test]
fn the_load_tool_runs_every_mode_and_checks_the_answers() {
    let dir = common::tempdir();
    let (server, _) = start_with_env(dir.path());
    let url = server.url.clone();
    let started = Instant::now();

    let append = bench(
        &url,
        &["--clients", "4", "--batch", "5", "--duration-s", "0.5"],
    );
    assert!(field(&append, "events") > 0.0, "{append}");
    assert_eq!(field(&append, "events") % 5.0, 0.0, "{append}");
    assert!(field(&append, "verified") > 0.0, "{append}");
    assert!(field(&append, "p50_us") > 0.0, "{append}");
    assert!(
        field(&append, "p99_us") >= field(&append, "p50_us"),
        "{append}"
    );
    assert!(
        field(&append, "p999_us") >= field(&append, "p99_us"),
        "{append}"
    );

    let read = bench(
        &url,
        &[
            "--mode",
            "read",
            "--clients",
            "2",
            "--batch",
            "7",
            "--streams",
            "20",
            "--duration-s",
            "0.5",
        ],
    );
    assert!(field(&read, "events") >= 7.0, "{read}");
    assert_eq!(field(&read, "events") % 7.0, 0.0, "{read}");
    assert_eq!(field(&read, "verified"), field(&read, "events"), "{read}");

    let subscribe = bench(
        &url,
        &[
            "--mode",
            "subscribe",
            "--clients",
            "2",
            "--batch",
            "2",
            "--rate",
            "400",
            "--duration-s",
            "0.5",
        ],
    );
    assert!(field(&subscribe, "events") > 0.0, "{subscribe}");
    assert_eq!(
        field(&subscribe, "verified"),
        field(&subscribe, "events"),
        "{subscribe}"
    );

    // Catch-up reads the whole log, every position once, in order.
    let catchup = bench(&url, &["--mode", "catchup", "--duration-s", "30"]);
    // The read mode wrote 20 streams of 7 events before reading them.
    let total = field(&append, "events") + 20.0 * 7.0 + field(&subscribe, "events");
    assert!(field(&catchup, "events") >= total, "{catchup} vs {total}");

    // A persistent-subscription group drains a backlog: every event delivered and acked.
    let persistent = bench(
        &url,
        &[
            "--mode",
            "persistent",
            "--clients",
            "2",
            "--backlog",
            "3000",
            "--backlog-batch",
            "250",
            "--buffer-size",
            "50",
        ],
    );
    assert_eq!(field(&persistent, "events"), 3000.0, "{persistent}");
    assert_eq!(
        field(&persistent, "verified"),
        3000.0 + field(&persistent, "duplicates"),
        "{persistent}"
    );
    let live = bench(
        &url,
        &[
            "--mode",
            "persistent-live",
            "--clients",
            "2",
            "--rate",
            "500",
            "--duration-s",
            "0.3",
        ],
    );
    assert!(field(&live, "events") > 0.0, "{live}");
    assert!(field(&live, "p50_us") > 0.0, "{live}");

    let get = bench(
        &url,
        &["--mode", "get", "--clients", "2", "--duration-s", "0.3"],
    );
    assert!(field(&get, "requests") > 0.0, "{get}");

    // A server that is not there is a clear failure, not a hang.
    let out = Command::new(BIN)
        .args([
            "bench",
            "--target",
            "http://127.0.0.1:1",
            "--duration-s",
            "0.2",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn serve_refuses_a_public_address_without_tls_and_users() {
    let dir = common::tempdir();
    let serve = |extra: &[&str]| {
        Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "0.0.0.0:0"])
            .args(extra)
            .env_remove("STATESTORE_INSECURE")
            .output()
            .expect("run")
    };
    let out = serve(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(err.contains("--insecure"), "{err}");

    // A user alone is not enough: credentials would cross the network in the clear.
    let out = serve(&["--admin-password", "changeit"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without TLS and authentication"), "{err}");
    // Refused before the store was touched: the admin was not created.
    let out = user_cmd(dir.path(), &["list"], "");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Runs `statestore user ARGS` on `dir` with `stdin` as its standard input.
fn user_cmd(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("STATESTORE_USER_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("wait")
}

#[test]
fn the_user_command_adds_changes_lists_and_removes_users() {
    let dir = common::tempdir();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(user_cmd(
        dir.path(),
        &["add", "ada", "--group", "$ops", "--group", "billing"],
        "first-pw\n",
    ));
    let pw_file = dir.path().with_extension("pw");
    std::fs::write(&pw_file, "bob-pw\nignored second line\n").expect("password file");
    ok(user_cmd(
        dir.path(),
        &[
            "add",
            "bob",
            "--password-file",
            pw_file.to_str().expect("utf-8"),
        ],
        "",
    ));
    let listed = ok(user_cmd(dir.path(), &["list"], ""));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            r#"{"groups":["$ops","billing"],"name":"ada"}"#,
            r#"{"groups":[],"name":"bob"}"#
        ],
        "{listed}"
    );

    ok(user_cmd(dir.path(), &["passwd", "ada"], "second-pw\r\n"));
    {
        let store =
            statestore::Store::open(dir.path(), statestore::Config::default()).expect("open");
        let users = statestore::users::Users::load(&store).expect("users");
        let ada = users.get("ada").expect("ada");
        assert!(ada.verify("second-pw"));
        assert!(!ada.verify("first-pw"));
        assert!(users.get("bob").expect("bob").verify("bob-pw"));
        store.close().expect("close");
    }

    // Bad input is refused with the reason, and changes nothing.
    let out = user_cmd(dir.path(), &["add", "$root"], "pw\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("starts with '$'"));
    let out = user_cmd(dir.path(), &["add", "carol"], "\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password is empty"));
    let out = user_cmd(dir.path(), &["passwd", "nobody"], "pw\n");
    assert!(
        !out.status.success(),
        "a missing user cannot get a password"
    );

    ok(user_cmd(dir.path(), &["remove", "ada"], ""));
    let listed = ok(user_cmd(dir.path(), &["list"], ""));
    assert_eq!(listed.trim(), r#"{"groups":[],"name":"bob"}"#);
}
