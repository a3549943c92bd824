//! A projection with exactly-once output, over the native gRPC API: running order totals per
//! customer.
//!
//! ```text
//! cargo run --release --example projection -- --target http://127.0.0.1:2113
//! cargo run --release --example projection -- --once --batch 10 --source my-totals
//! ```
//!
//! Input: the `OrderPlaced` events of the `order` category (`order-17`, ...), with JSON data
//! `{"customer": "c3", "amount": 12}`. Output: for each input, exactly one `OrderTotalUpdated`
//! event in `totals-{customer}`, with data `{"order", "order_position", "amount", "total"}`,
//! `total` being the customer's running total including this order.
//!
//! How exactly-once works here:
//!
//! - **One commit.** The outputs of a batch of inputs and the tracking entry
//!   `{source, position = the last input's global position}` go in one `AppendMulti`: the server
//!   makes them durable together or not at all. There is no moment at which the outputs are
//!   stored but the position is not, or the other way round.
//! - **Resume after the stored position.** At start, and after any refusal, the projection asks
//!   `GetTracking` for its source and subscribes to `$all` *after* that position. A crash at any
//!   point (before, during or after a commit, before its answer arrived) loses nothing and
//!   repeats nothing: a commit that landed is covered by the stored position, one that did not
//!   left no output behind.
//! - **State from the outputs.** The running totals are read back from the newest event of each
//!   `totals-*` stream, which was committed together with the tracking entry, so state and
//!   position always agree. The in-memory copy is only a cache, dropped on every restart.
//! - **Checked expectations.** Each commit expects the tracking position it resumed from
//!   (`no_entry` the first time) and the exact revision of every output stream. A second
//!   instance of the same projection, or a stale one, gets `TRACKING_CONFLICT`,
//!   `TRACKING_NOT_INCREASING` or `WRONG_EXPECTED_REVISION` and writes nothing; it then
//!   re-reads the stored position and state and carries on from there.
//! - **Deterministic ids.** An output's id is derived from its input's id (a fixed XOR, so
//!   distinct inputs give distinct ids): a commit sent again after a lost answer is recognised
//!   as a retry and answered with the original result, and an output written a second time by
//!   mistake is refused (`IDEMPOTENCY_CONFLICT`) rather than stored twice.
//!
//! Filtered subscriptions also send checkpoints (positions scanned past non-matching events);
//! this projection does not store them, so a restart rescans those events and outputs nothing
//! for them. A server that is down or restarting (`UNAVAILABLE`, or `UNKNOWN` for a connection
//! that broke) is retried every 200 ms. `--once` stops when the subscription has caught up with
//! the log, instead of following it live.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use statestore::server::proto::{
    self, AppendRequest, EventData, EventFilter, ExpectedRevision, RecordedEvent,
    event_store_client::EventStoreClient, expected_revision::Kind, subscribe_response,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

type Client = EventStoreClient<Channel>;

/// The output event type.
const OUTPUT_TYPE: &str = "OrderTotalUpdated";
/// XOR-ed into an input's id to give its output's id: a bijection, so distinct inputs always
/// give distinct outputs. The UUID version and variant bits are left as they are.
const ID_MASK: u128 = 0x7072_6f6a_6563_0000_0000_0074_6f74_616c;

#[derive(Parser, Debug)]
#[command(about = "Running order totals per customer, exactly once")]
struct Args {
    /// The server's native API.
    #[arg(long, default_value = "http://127.0.0.1:2113")]
    target: String,
    /// The tracking source: the projection's name.
    #[arg(long, default_value = "projection-order-totals")]
    source: String,
    /// The input category.
    #[arg(long, default_value = "order")]
    category: String,
    /// Most input events per commit.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Stop once caught up with the log.
    #[arg(long)]
    once: bool,
}

/// The data of an input event.
#[derive(Deserialize)]
struct OrderPlaced {
    customer: String,
    amount: u64,
}

/// The data of an output event.
#[derive(Serialize, Deserialize)]
struct OrderTotalUpdated {
    order: String,
    order_position: u64,
    amount: u64,
    total: u64,
}

/// A customer's output stream as last committed: its revision (`None`: no events yet) and the
/// running total.
#[derive(Clone, Copy, Default)]
struct Totals {
    revision: Option<u64>,
    total: u64,
}

/// Why a run of the projection ended.
enum Stop {
    /// Another writer, a stale position or a server restart: start again from the store.
    Restart(String),
    /// Anything else: give up.
    Fatal(Box<dyn std::error::Error>),
}

impl From<Status> for Stop {
    fn from(s: Status) -> Stop {
        let reason = s.get_error_details().error_info().map(|i| i.reason.clone());
        match (s.code(), reason.as_deref()) {
            (
                Code::FailedPrecondition,
                Some("TRACKING_CONFLICT" | "TRACKING_NOT_INCREASING" | "WRONG_EXPECTED_REVISION"),
            )
            // The server is down or restarting; tonic reports a connection that broke
            // mid-call as UNKNOWN.
            | (Code::Unavailable | Code::Unknown, _) => {
                Stop::Restart(format!("{:?}: {}", s.code(), s.message()))
            }
            _ => Stop::Fatal(s.into()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // A lazy channel reconnects by itself: a server that went away is retried on the next call.
    let channel = Endpoint::from_shared(args.target.clone())?.connect_lazy();
    let mut client = EventStoreClient::new(channel);
    loop {
        match run(&mut client, &args).await {
            Ok(()) => return Ok(()),
            Err(Stop::Restart(why)) => {
                eprintln!("projection: {why}; resuming from the stored position");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(Stop::Fatal(e)) => return Err(e),
        }
    }
}

/// One run: from the stored position to the end of the subscription (or, with `--once`, to
/// the point where it caught up).
async fn run(client: &mut Client, args: &Args) -> Result<(), Stop> {
    let mut stored = stored_position(client, &args.source).await?;
    let mut totals: HashMap<String, Totals> = HashMap::new();
    let filter = EventFilter {
        stream: Some(proto::event_filter::Stream::Category(args.category.clone())),
        event_types: vec!["OrderPlaced".into()],
    };
    let request = proto::SubscribeRequest {
        target: Some(proto::subscribe_request::Target::All(proto::SubscribeAll {
            after_position: stored.unwrap_or(0),
            filter: Some(filter),
            checkpoint_interval: 0,
        })),
    };
    let mut subscription = client.subscribe(request).await?.into_inner();
    while let Some(message) = subscription.message().await? {
        match message.kind {
            Some(subscribe_response::Kind::Events(batch)) => {
                for inputs in batch.events.chunks(args.batch.max(1)) {
                    let position = project(client, args, stored, inputs, &mut totals).await?;
                    stored = Some(position);
                }
            }
            Some(subscribe_response::Kind::CaughtUp(_)) if args.once => return Ok(()),
            _ => {}
        }
    }
    Err(Stop::Restart("the subscription ended".into()))
}

/// The stored tracking position of `source`, `None` when it has none.
async fn stored_position(client: &mut Client, source: &str) -> Result<Option<u64>, Stop> {
    let request = proto::GetTrackingRequest {
        source: source.into(),
    };
    let response = client.get_tracking(request).await?.into_inner();
    Ok(response
        .entry
        .filter(|_| response.found)
        .map(|e| e.position))
}

/// Commits the outputs of `inputs` with the position of the last one, expecting `stored`;
/// returns the new stored position.
async fn project(
    client: &mut Client,
    args: &Args,
    stored: Option<u64>,
    inputs: &[RecordedEvent],
    totals: &mut HashMap<String, Totals>,
) -> Result<u64, Stop> {
    let Some(last) = inputs.last() else {
        return Err(Stop::Fatal("an empty batch of inputs".into()));
    };
    // One part per output stream, in order of first use, each expecting the stream's revision
    // as last committed. `totals` runs ahead of the store here; if the commit fails the run
    // ends and the cache goes with it.
    let mut parts: Vec<AppendRequest> = Vec::new();
    let mut part_of: HashMap<String, usize> = HashMap::new();
    for input in inputs {
        let order: OrderPlaced = serde_json::from_slice(&input.data).map_err(|e| {
            Stop::Fatal(format!("input at position {}: {e}", input.position).into())
        })?;
        let stream = format!("totals-{}", order.customer);
        let state = match totals.get(&stream) {
            Some(state) => *state,
            None => load_totals(client, &stream).await?,
        };
        let i = *part_of.entry(stream.clone()).or_insert_with(|| {
            parts.push(AppendRequest {
                stream: stream.clone(),
                expected: Some(expected(state.revision)),
                events: Vec::new(),
                tracking: None,
            });
            parts.len() - 1
        });
        let next = Totals {
            revision: Some(state.revision.map_or(0, |r| r + 1)),
            total: state.total + order.amount,
        };
        let data = OrderTotalUpdated {
            order: input.stream.clone(),
            order_position: input.position,
            amount: order.amount,
            total: next.total,
        };
        parts[i].events.push(EventData {
            id: derived_id(&input.id)?,
            event_type: OUTPUT_TYPE.into(),
            content_type: proto::ContentType::Json.into(),
            data: serde_json::to_vec(&data)
                .map_err(|e| Stop::Fatal(e.into()))?
                .into(),
            metadata: Default::default(),
        });
        totals.insert(stream, next);
    }
    let tracking = proto::Tracking {
        source: args.source.clone(),
        position: last.position,
        expected: Some(match stored {
            None => proto::tracking::Expected::NoEntry(proto::Empty {}),
            Some(p) => proto::tracking::Expected::ExpectedPosition(p),
        }),
    };
    let request = proto::AppendMultiRequest {
        streams: parts,
        tracking: Some(tracking),
    };
    client.append_multi(request).await?;
    Ok(last.position)
}

/// A customer's totals as last committed: the newest event of its output stream.
async fn load_totals(client: &mut Client, stream: &str) -> Result<Totals, Stop> {
    let request = proto::ReadStreamRequest {
        stream: stream.into(),
        from_revision: None,
        direction: proto::Direction::Backwards.into(),
        max_count: 1,
        from_snapshot: false,
    };
    let mut pages = match client.read_stream(request).await {
        Ok(response) => response.into_inner(),
        Err(s) if s.code() == Code::NotFound => return Ok(Totals::default()),
        Err(s) => return Err(s.into()),
    };
    while let Some(page) = pages.message().await? {
        if let Some(e) = page.events.first() {
            let last: OrderTotalUpdated = serde_json::from_slice(&e.data)
                .map_err(|err| Stop::Fatal(format!("{stream}: {err}").into()))?;
            return Ok(Totals {
                revision: Some(e.revision),
                total: last.total,
            });
        }
    }
    Ok(Totals::default())
}

fn expected(revision: Option<u64>) -> ExpectedRevision {
    ExpectedRevision {
        kind: Some(match revision {
            None => Kind::NoStream(proto::Empty {}),
            Some(r) => Kind::Exact(r),
        }),
    }
}

/// The output's id: the input's id XOR [`ID_MASK`].
fn derived_id(input: &[u8]) -> Result<bytes::Bytes, Stop> {
    let id: [u8; 16] = input
        .try_into()
        .map_err(|_| Stop::Fatal("an input id is not 16 bytes".into()))?;
    let derived = u128::from_be_bytes(id) ^ ID_MASK;
    Ok(bytes::Bytes::copy_from_slice(&derived.to_be_bytes()))
}
