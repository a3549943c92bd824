//! The `statestore` binary: parses flags and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use statestore::server::ServerConfig;
use statestore::service::ServiceConfig;
use statestore::{Config, FsyncPolicy, Store};

#[derive(Parser)]
#[command(name = "statestore", version, about = "An append-only event store")]
struct Cli {
    /// Log format: `text` for people, `json` (one object per line) for machines.
    #[arg(
        long,
        global = true,
        env = "STATESTORE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Open (or create) a store and serve the gRPC API until SIGINT or SIGTERM. On a signal the
    /// server stops accepting calls, ends subscriptions, finishes appends in flight, syncs the
    /// log, releases the data directory and exits 0.
    Serve(Box<ServeArgs>),
    /// Open a store, check it as `serve` does, print its figures as one JSON line, and close it.
    Stats(StoreArgs),
    /// Drive a running server over gRPC and report throughput and latency. The last line printed
    /// is one JSON object with `events_per_s`, `p50_us`, `p99_us` and `p999_us`.
    Bench(statestore::bench::BenchArgs),
    /// Print the stored events of a closed data directory as JSON lines: data and metadata
    /// verbatim when they are JSON, base64 (`data_base64`) otherwise. Shows the log as stored:
    /// events hidden by stream metadata, deletes and tombstones appear until `compact`.
    Dump(DumpArgs),
    /// Point-in-time restore: copy the events of a closed data directory from a position on,
    /// up to a position or a commit time, into a fresh store that keeps their positions,
    /// revisions, ids and timestamps (`--into -`: JSON lines on standard output).
    Replay(ReplayArgs),
    /// Rewrite the segments of a closed data directory without the events that stream
    /// metadata, deletes and tombstones hide; kept events keep their positions. Crash-safe:
    /// killed at any moment, the directory holds the old store or the new one.
    Compact(CompactArgs),
    /// Manage the users of a closed data directory (a running server has the admin-only
    /// `statestore.v1.Users` service instead). Passwords are read from `--password-file`, the
    /// environment variable STATESTORE_USER_PASSWORD, or the first line of standard input.
    User(UserArgs),
    /// Check a closed data directory offline: every segment and frame, every index run against
    /// the log, the snapshot log. Prints a report (`--json`: one JSON object) and exits 0 when
    /// the store is sound, 1 on damage, 2 when it cannot verify (no such directory, or a
    /// server holds it).
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct DumpArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// First position (inclusive).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last position (inclusive).
    #[arg(long)]
    until: Option<u64>,
    /// Only the events of this stream (exact name).
    #[arg(long)]
    stream: Option<String>,
    /// Only events of this type.
    #[arg(long = "type")]
    event_type: Option<String>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A new (missing or empty) data directory for the restored store, or `-` for JSON lines
    /// on standard output.
    #[arg(long)]
    into: PathBuf,
    /// First position (inclusive).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last position (inclusive).
    #[arg(long, conflicts_with = "until_time")]
    until: Option<u64>,
    /// Last commit time (inclusive), RFC 3339, e.g. 2026-11-23T10:00:00Z.
    #[arg(long)]
    until_time: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CompactArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Data directory to check.
    #[arg(long, env = "STATESTORE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Data directory; created if missing.
    #[arg(long, env = "STATESTORE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Durability: `always` (acknowledge after fdatasync), `interval:MS` or `never` (both may
    /// lose acknowledged appends on power loss, not on a process crash).
    #[arg(long, env = "STATESTORE_FSYNC", default_value = "always")]
    fsync: FsyncPolicy,
    /// Segment file size in bytes.
    #[arg(long, env = "STATESTORE_SEGMENT_BYTES", default_value_t = Config::default().segment_bytes)]
    segment_bytes: u64,
    /// Largest event (data + metadata) in bytes.
    #[arg(long, env = "STATESTORE_EVENT_BYTES_MAX", default_value_t = Config::default().event_bytes_max)]
    event_bytes_max: u64,
    /// Most events in one append.
    #[arg(long, env = "STATESTORE_APPEND_EVENTS_MAX", default_value_t = Config::default().append_events_max)]
    append_events_max: u64,
    /// Most bytes (stored size) in one append.
    #[arg(long, env = "STATESTORE_APPEND_BYTES_MAX", default_value_t = Config::default().append_bytes_max)]
    append_bytes_max: u64,
    /// Write an index checkpoint every this many events (and at shutdown), so that a restart
    /// replays only the log after it; 0 turns checkpoints off (every start rebuilds the index
    /// from the whole log and holds it in memory).
    #[arg(long, env = "STATESTORE_INDEX_CHECKPOINT_EVENTS", default_value_t = Config::default().checkpoint_events)]
    index_checkpoint_events: u64,
    /// Also write an index checkpoint after this many seconds with new events; 0 disables the
    /// time trigger.
    #[arg(long, env = "STATESTORE_INDEX_CHECKPOINT_SECS", default_value_t = Config::default().checkpoint_interval.as_secs())]
    index_checkpoint_secs: u64,
    /// Aggregate snapshots kept per stream; saving another prunes the oldest.
    #[arg(long, env = "STATESTORE_SNAPSHOT_KEEP", default_value_t = Config::default().snapshot_keep)]
    snapshot_keep: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on for gRPC: the native API, the KurrentDB client protocol, health
    /// and reflection.
    #[arg(long, env = "STATESTORE_LISTEN", default_value = "127.0.0.1:2113")]
    listen: SocketAddr,
    /// The HOST:PORT KurrentDB clients are told to connect to (gossip's leader endpoint).
    /// Default: the listening address (`localhost` when it is a wildcard).
    #[arg(long, env = "STATESTORE_ADVERTISE")]
    advertise: Option<String>,
    /// Largest gRPC message in either direction, in bytes; larger requests are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "STATESTORE_MESSAGE_BYTES_MAX", default_value_t = ServerConfig::default().message_bytes_max)]
    message_bytes_max: usize,
    /// Concurrent calls per client connection (HTTP/2 streams).
    #[arg(long, env = "STATESTORE_CONCURRENT_STREAMS_MAX", default_value_t = ServerConfig::default().concurrent_streams_max)]
    concurrent_streams_max: u32,
    /// Events per page of reads and subscription catch-up.
    #[arg(long, env = "STATESTORE_READ_PAGE_EVENTS", default_value_t = ServiceConfig::default().read_page_events)]
    read_page_events: u64,
    /// Commit batches the live ring holds; a subscriber further behind re-reads from disk.
    #[arg(long, env = "STATESTORE_LIVE_RING_BATCHES", default_value_t = ServiceConfig::default().live_ring_batches)]
    live_ring_batches: usize,
    /// Default checkpoint interval (scanned events) of filtered subscriptions.
    #[arg(long, env = "STATESTORE_CHECKPOINT_INTERVAL", default_value_t = ServiceConfig::default().checkpoint_interval)]
    checkpoint_interval: u64,
    /// Most connections held at once; more are closed at accept.
    #[arg(long, env = "STATESTORE_CONNECTIONS_MAX", default_value_t = ServerConfig::default().connections_max)]
    connections_max: usize,
    /// Most subscriptions open at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "STATESTORE_SUBSCRIPTIONS_MAX", default_value_t = ServiceConfig::default().subscriptions_max)]
    subscriptions_max: usize,
    /// Bytes buffered for all slow readers and subscribers together; a subscriber over its
    /// share falls back to reading from disk.
    #[arg(long, env = "STATESTORE_BUFFERED_BYTES_MAX", default_value_t = ServiceConfig::default().buffered_bytes_max)]
    buffered_bytes_max: u32,
    /// TLS certificate chain (PEM). With --tls-key, the server speaks only TLS.
    #[arg(long, env = "STATESTORE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "STATESTORE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, env = "STATESTORE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// On a store with no users yet, create `admin` (group $admins) with this password.
    #[arg(long, env = "STATESTORE_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// The same, with the password read from a file (its first line).
    #[arg(
        long,
        env = "STATESTORE_ADMIN_PASSWORD_FILE",
        conflicts_with = "admin_password"
    )]
    admin_password_file: Option<PathBuf>,
    /// Accept bearer tokens (JWTs) signed by a key of this JWKS file; the token's `sub` is the
    /// principal, its roles claim the groups.
    #[arg(long, env = "STATESTORE_JWKS_FILE")]
    jwks_file: Option<PathBuf>,
    /// With --jwks-file: a token's `iss` must be this.
    #[arg(long, env = "STATESTORE_JWT_ISSUER", requires = "jwks_file")]
    jwt_issuer: Option<String>,
    /// With --jwks-file: a token's `aud` must hold this.
    #[arg(long, env = "STATESTORE_JWT_AUDIENCE", requires = "jwks_file")]
    jwt_audience: Option<String>,
    /// With --jwks-file: the claim listing the caller's groups (a list, or names separated by
    /// spaces).
    #[arg(long, env = "STATESTORE_JWT_ROLES_CLAIM", default_value = "roles")]
    jwt_roles_claim: String,
    /// Allow listening on a non-loopback address without TLS and authentication. Anyone who
    /// reaches the port can then read, write and delete everything.
    #[arg(long, env = "STATESTORE_INSECURE")]
    insecure: bool,
    /// Threads running network work (0: one per CPU core).
    #[arg(long, env = "STATESTORE_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// On shutdown, how long to wait for open calls before closing their connections.
    #[arg(long, env = "STATESTORE_DRAIN_MS", default_value_t = 5000)]
    drain_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Verify(args) => return verify(&args),
        Command::Serve(args) => serve(*args),
        Command::Stats(args) => stats(args),
        Command::Bench(args) => statestore::bench::run(args).map_err(|e| e.to_string()),
        Command::Dump(args) => dump(args),
        Command::Replay(args) => replay(args),
        Command::Compact(args) => compact(args),
        Command::User(args) => user(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Standard error that never fails: a log line that cannot be written (the reading end of a
/// pipe went away) is dropped. tracing-subscriber reports a failed write with `eprintln!`, which
/// panics when stderr is gone; a server must not die because its log reader did.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn open(args: &StoreArgs) -> statestore::Result<Store> {
    Store::open(&args.data_dir, config_of(args))
}

fn config_of(args: &StoreArgs) -> Config {
    Config {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        event_bytes_max: args.event_bytes_max,
        append_events_max: args.append_events_max,
        append_bytes_max: args.append_bytes_max,
        checkpoint_events: args.index_checkpoint_events,
        checkpoint_interval: Duration::from_secs(args.index_checkpoint_secs),
        snapshot_keep: args.snapshot_keep,
        ..Config::default()
    }
}

/// Opens an existing data directory for an offline tool: never creates one, and says what to
/// do when a server holds it.
fn open_existing(tool: &str, args: &StoreArgs) -> Result<Store, String> {
    if !args.data_dir.is_dir() {
        return Err(format!(
            "{tool}: {} is not a data directory",
            args.data_dir.display()
        ));
    }
    open(args).map_err(|e| tool_error(tool, &e))
}

fn tool_error(tool: &str, e: &statestore::Error) -> String {
    match e {
        statestore::Error::Locked { .. } => {
            format!("{tool}: {e}; stop the server (or the other tool) first")
        }
        _ => format!("{tool}: {e}"),
    }
}

fn dump(args: DumpArgs) -> Result<(), String> {
    use statestore::tools::dump::{DumpOptions, dump};
    let store = open_existing("dump", &args.store)?;
    let options = DumpOptions {
        from: args.from,
        until: args.until,
        stream: args.stream,
        event_type: args.event_type,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut progress = statestore::tools::StderrProgress::new("dump");
    dump(&store, &options, &mut out, &mut progress).map_err(|e| tool_error("dump", &e))?;
    store.close().map_err(|e| tool_error("dump", &e))
}

fn replay(args: ReplayArgs) -> Result<(), String> {
    use statestore::tools::replay::{ReplayOptions, replay_into_dir, replay_to_lines};
    let until_time_us = args
        .until_time
        .as_deref()
        .map(statestore::tools::event_json::parse_rfc3339_us)
        .transpose()
        .map_err(|e| tool_error("replay", &e))?;
    let options = ReplayOptions {
        from: args.from,
        until: args.until,
        until_time_us,
    };
    let store = open_existing("replay", &args.store)?;
    let mut progress = statestore::tools::StderrProgress::new("replay");
    let summary = if args.into.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        replay_to_lines(&store, &mut out, &options, &mut progress)
    } else {
        if args.into == args.store.data_dir {
            return Err("replay: --into must be a new directory, not the source".into());
        }
        replay_into_dir(
            &store,
            &args.into,
            &options,
            &config_of(&args.store),
            &mut progress,
        )
    }
    .map_err(|e| tool_error("replay", &e))?;
    store.close().map_err(|e| tool_error("replay", &e))?;
    if let Some((first, last)) = summary.split_commit {
        eprintln!(
            "replay: the cut falls inside the commit of positions {first}..={last}; the copy \
             holds only its part up to the cut"
        );
    }
    let line = if args.json {
        serde_json::to_string(&summary).unwrap_or_default()
    } else {
        format!(
            "replay: {} events copied (positions {}..={}), {} bytes of segments",
            summary.events,
            summary.first_position.unwrap_or(0),
            summary.last_position.unwrap_or(0),
            summary.bytes
        )
    };
    // With `--into -` standard output carries the events: the summary goes to standard error.
    if args.into.as_os_str() == "-" {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

fn compact(args: CompactArgs) -> Result<(), String> {
    if !args.store.data_dir.is_dir() {
        return Err(format!(
            "compact: {} is not a data directory",
            args.store.data_dir.display()
        ));
    }
    let mut progress = statestore::tools::StderrProgress::new("compact");
    let report = statestore::tools::compact::compact(
        &args.store.data_dir,
        &config_of(&args.store),
        &mut progress,
    )
    .map_err(|e| tool_error("compact", &e))?;
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "compact: {} events -> {} ({} removed, {} kept without data); segment data {} -> {} \
             bytes; files {} -> {} bytes in {} -> {} segments; {:.1} s",
            report.events_before,
            report.events_after,
            report.removed,
            report.emptied,
            report.data_bytes_before,
            report.data_bytes_after,
            report.bytes_before,
            report.bytes_after,
            report.segments_before,
            report.segments_after,
            report.seconds
        );
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let started = Instant::now();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(statestore::server::TlsConfig {
            cert_pem: read_file(cert)?,
            key_pem: read_file(key)?,
            client_ca_pem: args.tls_client_ca.as_deref().map(read_file).transpose()?,
        }),
        _ => None,
    };
    let admin_password = match (&args.admin_password, &args.admin_password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => Some(first_line(path)?),
        (None, None) => None,
    };
    let exposed = !args.listen.ip().is_loopback();
    let refuse = || {
        format!(
            "refusing to listen on {} (not a loopback address) without TLS and authentication: \
             give --tls-cert and --tls-key and create a user (STATESTORE_ADMIN_PASSWORD), or \
             pass --insecure to serve anyone who reaches the port",
            args.listen
        )
    };
    // Refused before the store is opened, so a refused start changes nothing.
    if exposed && tls.is_none() && !args.insecure {
        return Err(refuse());
    }
    let store = Arc::new(open(&args.store).map_err(|e| e.to_string())?);
    if let Some(password) = admin_password
        && statestore::users::bootstrap_admin(&store, &password).map_err(|e| e.to_string())?
    {
        tracing::info!("created user 'admin' in group $admins");
    }
    let users = statestore::users::Users::load(&store).map_err(|e| e.to_string())?;
    let jwt = match &args.jwks_file {
        Some(path) => Some(statestore::service::jwt::JwtConfig {
            jwks: String::from_utf8(read_file(path)?)
                .map_err(|_| format!("{} is not UTF-8 text", path.display()))?,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            roles_claim: args.jwt_roles_claim.clone(),
        }),
        None => None,
    };
    let secure = tls.is_some() && (!users.is_empty() || jwt.is_some());
    if exposed && !secure && !args.insecure {
        return Err(refuse());
    }
    let config = ServerConfig {
        message_bytes_max: args.message_bytes_max,
        concurrent_streams_max: args.concurrent_streams_max,
        connections_max: args.connections_max,
        advertise: args.advertise.clone(),
        tls,
        service: ServiceConfig {
            read_page_events: args.read_page_events,
            live_ring_batches: args.live_ring_batches,
            checkpoint_interval: args.checkpoint_interval,
            subscriptions_max: args.subscriptions_max,
            buffered_bytes_max: args.buffered_bytes_max,
            jwt,
            ..ServiceConfig::default()
        },
        ..ServerConfig::default()
    };
    config.validate(&store).map_err(|e| e.to_string())?;
    let insecure_warning = exposed && !secure;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("statestore-rt")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let served = runtime.block_on(async {
        let listener = statestore::server::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(
            listen = %args.listen,
            data_dir = %args.store.data_dir.display(),
            fsync = %args.store.fsync,
            startup_ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        if insecure_warning {
            tokio::spawn(async move {
                loop {
                    tracing::warn!(listen = %args.listen,
                        "serving without TLS and authentication on a non-loopback address \
                         (--insecure): anyone who reaches the port can read, write and delete \
                         every stream");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
        statestore::server::serve(
            Arc::clone(&store),
            config,
            listener,
            shutdown_signal(),
            Duration::from_millis(args.drain_ms),
        )
        .await
        .map_err(|e| e.to_string())
    });
    // Ends every task still holding the store (subscriptions, blocking reads) before closing it.
    runtime.shutdown_timeout(Duration::from_secs(5));
    served?;
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().map_err(|e| e.to_string())?,
        // Dropping the last reference closes it the same way, without a report.
        Err(store) => {
            tracing::warn!("store still referenced at shutdown; closing on drop");
            drop(store);
        }
    }
    tracing::info!("stopped: log synced, data directory released");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn first_line(path: &std::path::Path) -> Result<String, String> {
    let text = String::from_utf8(read_file(path)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[derive(clap::Args)]
struct UserArgs {
    #[command(subcommand)]
    action: UserAction,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user.
    Add {
        name: String,
        /// A group to put the user in ($admins: every right; $ops: read the whole log).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Change a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users and their groups, one JSON object per line.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl UserAction {
    fn store(&self) -> &StoreArgs {
        match self {
            UserAction::Add { store, .. }
            | UserAction::Passwd { store, .. }
            | UserAction::Remove { store, .. }
            | UserAction::List { store } => store,
        }
    }
}

fn user(args: UserArgs) -> Result<(), String> {
    let password = |file: &Option<PathBuf>| -> Result<String, String> {
        if let Some(path) = file {
            return first_line(path);
        }
        if let Ok(p) = std::env::var("STATESTORE_USER_PASSWORD") {
            return Ok(p);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let store = open(args.action.store()).map_err(|e| e.to_string())?;
    let done = match &args.action {
        UserAction::Add {
            name,
            groups,
            password_file,
            ..
        } => statestore::users::add_user(&store, name, &password(password_file)?, groups),
        UserAction::Passwd {
            name,
            password_file,
            ..
        } => statestore::users::set_password(&store, name, &password(password_file)?),
        UserAction::Remove { name, .. } => statestore::users::remove_user(&store, name),
        UserAction::List { .. } => statestore::users::Users::load(&store).map(|users| {
            for u in users.iter() {
                println!(
                    "{}",
                    serde_json::json!({"name": u.name, "groups": u.groups})
                );
            }
        }),
    };
    let closed = store.close();
    done.map_err(|e| e.to_string())?;
    closed.map_err(|e| e.to_string())
}

fn stats(args: StoreArgs) -> Result<(), String> {
    let started = Instant::now();
    let store = open(&args).map_err(|e| e.to_string())?;
    let open_us = started.elapsed().as_micros();
    let rss = resident_bytes();
    let s = store.stats();
    println!(
        "{{\"last_position\":{},\"streams\":{},\"event_types\":{},\"segments\":{},\
         \"checkpoint_position\":{},\"index_runs\":{},\"memtable_events\":{},\
         \"open_ms\":{:.1},\"rss_bytes_after_open\":{}}}",
        s.last_position.0,
        s.streams,
        s.event_types,
        s.segments,
        s.checkpoint_position.0,
        s.index_runs,
        s.memtable_events,
        open_us as f64 / 1000.0,
        rss.map_or("null".to_string(), |r| r.to_string()),
    );
    store.close().map_err(|e| e.to_string())
}

/// Resident memory of this process (VmRSS), where /proc reports it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `verify`: exit 0 when sound, 1 on damage, 2 when verification could not be done.
fn verify(args: &VerifyArgs) -> ExitCode {
    use std::io::Write;
    let mut progress = statestore::tools::StderrProgress::new("verify");
    let report = match statestore::tools::verify(&args.data_dir, &mut progress) {
        Ok(report) => report,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "statestore verify: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if args.json {
        serde_json::to_string(&report)
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    } else {
        report.to_string()
    };
    // A closed pipe on standard output must not turn a verdict into a panic.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    if report.is_sound() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
