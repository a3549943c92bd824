//! The `statestore` binary: parses flags and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use statestore::{Config, FsyncPolicy, Store};

#[derive(Parser)]
#[command(name = "statestore", version, about = "An append-only event store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open (or create) a store and keep it open until interrupted. The log is checked, a torn
    /// tail truncated and the indexes rebuilt; the gRPC API is not served by this version yet.
    Serve(StoreArgs),
    /// Open a store, check it as `serve` does, print its figures as one JSON line, and close it.
    Stats(StoreArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Data directory; created if missing.
    #[arg(long, env = "STATESTORE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Durability: `always` (ack after fdatasync), `interval:MS` or `never` (both may lose
    /// acknowledged appends on power loss).
    #[arg(long, env = "STATESTORE_FSYNC", default_value = "always", value_parser = parse_fsync)]
    fsync: FsyncPolicy,
    /// Segment file size in bytes.
    #[arg(long, env = "STATESTORE_SEGMENT_BYTES", default_value_t = Config::default().segment_bytes)]
    segment_bytes: u64,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => s
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse().ok())
            .filter(|&ms| ms > 0)
            .map(FsyncPolicy::IntervalMs)
            .ok_or_else(|| format!("'{s}' is not always, never or interval:MS with MS > 0")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Stats(args) => stats(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("statestore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open(args: &StoreArgs) -> statestore::Result<Store> {
    let config = Config {
        fsync: args.fsync,
        segment_bytes: args.segment_bytes,
        ..Config::default()
    };
    Store::open(&args.data_dir, config)
}

fn serve(args: StoreArgs) -> statestore::Result<()> {
    let store = open(&args)?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        last_position = store.last_position().0,
        "store open; holding the data directory until interrupted (the network API is not served by this version)"
    );
    // Every acknowledged append is already durable and the kernel releases the directory lock
    // when the process ends, so an interrupt needs no shutdown work here.
    loop {
        std::thread::park();
    }
}

fn stats(args: StoreArgs) -> statestore::Result<()> {
    let store = open(&args)?;
    let s = store.stats();
    println!(
        "{{\"last_position\":{},\"streams\":{},\"event_types\":{},\"segments\":{}}}",
        s.last_position.0, s.streams, s.event_types, s.segments
    );
    store.close()
}
