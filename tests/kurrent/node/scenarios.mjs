// Persistent subscriptions through the official Node.js client, @kurrent/kurrentdb-client,
// against a running statestore (tests/kurrent_node.rs runs it against a fresh one).
//
// Usage: node scenarios.mjs 'kurrentdb://127.0.0.1:PORT?tls=false' [scenario ...]
// with the client installed beside this script (`npm ci` in this directory) or in the
// directory STATESTORE_NODE_CLIENT_DIR names (target/tmp/kurrentdb-node-client after a run
// of tests/kurrent_node.rs).
//
// Prints one line per scenario and exits 1 on the first failure, with the reason. Every
// scenario uses streams and groups named after this run, so the script can run again
// against the same server (one run at a time: restart_subsystem drops every consumer). A
// watchdog ends the script if it hangs.

import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// The client is installed where STATESTORE_NODE_CLIENT_DIR says (the Rust test's install
// under its target directory), else beside this script (`npm ci` here).
const clientDir = process.env.STATESTORE_NODE_CLIENT_DIR ?? dirname(fileURLToPath(import.meta.url));
const {
  KurrentDBClient,
  jsonEvent,
  START,
  END,
  PARK,
  RETRY,
  SKIP,
  STOP,
  ROUND_ROBIN,
  DISPATCH_TO_SINGLE,
  PINNED,
  PINNED_BY_CORRELATION,
  UNBOUNDED,
  ErrorType,
  streamNameFilter,
  eventTypeFilter,
  persistentSubscriptionToStreamSettingsFromDefaults,
  persistentSubscriptionToAllSettingsFromDefaults,
} = createRequire(join(clientDir, "package.json"))("@kurrent/kurrentdb-client");

for (const [k, v] of Object.entries({ START, END, PARK, RETRY, SKIP, STOP, ROUND_ROBIN, DISPATCH_TO_SINGLE, PINNED, PINNED_BY_CORRELATION, UNBOUNDED, ErrorType })) {
  if (v === undefined) {
    console.log(`FAIL setup: the client exports no ${k}`);
    process.exit(1);
  }
}

/** The whole script's bound; the Rust test's own timeout is longer. */
const WATCHDOG_MS = 90_000;
/** Any single wait (a call, an event) fails after this long. */
const STEP_MS = 10_000;

const [uri, ...wanted] = process.argv.slice(2);
if (!uri) {
  console.error("usage: node scenarios.mjs CONNECTION_STRING [scenario ...]");
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.log(`FAIL watchdog: the scenarios did not finish within ${WATCHDOG_MS} ms`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

const run = Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
const name = (what) => `node-${run}-${what}`;
const client = KurrentDBClient.connectionString([uri]);

class Failure extends Error {}

function check(ok, message) {
  if (!ok) throw new Failure(message);
}

function eq(actual, expected, what) {
  const a = show(actual);
  const e = show(expected);
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

function show(v) {
  return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a failure after STEP_MS. */
async function within(what, promise, ms = STEP_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The error `promise` rejects with, checked to be of `type` (the client's ErrorType). */
async function rejects(what, promise, type) {
  let error;
  try {
    await within(what, promise);
  } catch (e) {
    error = e;
  }
  check(error !== undefined, `${what}: expected a ${type} error, it succeeded`);
  if (error instanceof Failure) throw error;
  check(
    error.type === type,
    `${what}: expected a ${type} error, got ${error.type ?? error.constructor?.name}: ${error.message}`,
  );
  return error;
}

/** Waits until `probe()` returns a truthy value; returns it. */
async function eventually(what, probe) {
  const deadline = Date.now() + STEP_MS;
  let last;
  for (;;) {
    last = await within(what, probe());
    if (last.ok) return last.value;
    check(Date.now() < deadline, `${what}: never happened; last: ${show(last.value)}`);
    await sleep(50);
  }
}

/** Appends `{n}` for each n in `ns` to `stream`; returns the events' ids, by n. */
async function append(stream, ns, type = "Thing") {
  const ids = new Map();
  const events = ns.map((n) => {
    const id = randomUUID();
    ids.set(n, id);
    return jsonEvent({ id, type, data: { n } });
  });
  await within(`append to ${stream}`, client.appendToStream(stream, events));
  return ids;
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

/**
 * A connected consumer of a group: its events (and its error or end) queued as they arrive.
 */
class Consumer {
  constructor(sub) {
    this.sub = sub;
    this.items = [];
    this.waiting = null;
    this.confirmation = new Promise((resolve) => sub.once("confirmation", resolve));
    sub.on("data", (event) => this.push({ event }));
    sub.on("error", (error) => this.push({ error }));
    sub.on("end", () => this.push({ end: true }));
  }

  push(item) {
    this.items.push(item);
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = null;
      wake();
    }
  }

  async take(what, ms = STEP_MS) {
    const deadline = Date.now() + ms;
    while (this.items.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiting = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.items.shift();
  }

  async confirmed() {
    await within("the subscription's confirmation", this.confirmation);
    return this.sub.id;
  }

  /** The next event: { n, id, revision, stream, type, retryCount, resolved }. */
  async next(what = "the next event") {
    const item = await this.take(what);
    check(item !== undefined, `timed out after ${STEP_MS} ms: ${what}`);
    check(item.event, `${what}: got ${item.error ? `error ${item.error.type}: ${item.error.message}` : "the end"}`);
    const e = item.event.event;
    return {
      n: e.data.n,
      id: e.id,
      revision: e.revision,
      stream: e.streamId,
      type: e.type,
      retryCount: item.event.retryCount,
      resolved: item.event,
    };
  }

  /** Fails if an event arrives within `ms`. */
  async nothingFor(ms) {
    const item = await this.take("nothing", ms);
    check(item === undefined, `expected nothing for ${ms} ms, got ${show(item?.event?.event?.data ?? item?.error?.message ?? item)}`);
  }

  /** The error (or end) that ends the subscription. */
  async ended(what) {
    for (;;) {
      const item = await this.take(what);
      check(item !== undefined, `timed out after ${STEP_MS} ms: ${what}`);
      if (item.event) continue;
      return item;
    }
  }

  async close() {
    await this.sub.unsubscribe().catch(() => {});
  }
}

function subscribe(stream, group, bufferSize = 10) {
  return new Consumer(
    client.subscribeToPersistentSubscriptionToStream(stream, group, { bufferSize }),
  );
}

function subscribeToAll(group, bufferSize = 10) {
  return new Consumer(client.subscribeToPersistentSubscriptionToAll(group, { bufferSize }));
}

const fromStart = (changes = {}) =>
  persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START, ...changes });

async function create(stream, group, settings = fromStart()) {
  await within(
    `create ${stream}::${group}`,
    client.createPersistentSubscriptionToStream(stream, group, settings),
  );
}

const info = (stream, group) =>
  within(`info ${stream}::${group}`, client.getPersistentSubscriptionToStreamInfo(stream, group));

async function parkedCount(stream, group, want) {
  await eventually(`parked count ${want}`, async () => {
    const i = await info(stream, group);
    return { ok: i.stats.parkedMessageCount === BigInt(want), value: i.stats };
  });
}

const scenarios = {
  /** Create (and AlreadyExists again), then every event in order with its id, data and revision. */
  async create_read_ack() {
    const stream = name("orders");
    const ids = await append(stream, range(0, 10));
    await create(stream, "g");
    await rejects(
      "create the same group again",
      client.createPersistentSubscriptionToStream(stream, "g", fromStart()),
      ErrorType.PERSISTENT_SUBSCRIPTION_EXISTS,
    );
    const c = subscribe(stream, "g");
    eq(await c.confirmed(), `${stream}::g`, "subscription id");
    for (const n of range(0, 10)) {
      const e = await c.next();
      eq([e.n, e.id, e.revision, e.stream, e.type, e.retryCount], [n, ids.get(n), BigInt(n), stream, "Thing", 0], `event ${n}`);
      await c.sub.ack(e.resolved);
    }
    const live = await append(stream, [10, 11]);
    for (const n of [10, 11]) {
      const e = await c.next("a live event");
      eq([e.n, e.id, e.revision], [n, live.get(n), BigInt(n)], `live event ${n}`);
      await c.sub.ack(e.resolved);
    }
    await c.nothingFor(200);
    await c.close();
  },

  /** Settings echoed, statistics, and the checkpoint reaching the last acked revision. */
  async info_fields() {
    const stream = name("info");
    await append(stream, range(0, 6));
    const settings = fromStart({
      maxRetryCount: 7,
      readBatchSize: 5,
      historyBufferSize: 50,
      liveBufferSize: 60,
      checkPointLowerBound: 1,
      checkPointUpperBound: 3,
      checkPointAfter: 100,
      messageTimeout: 20_000,
      maxSubscriberCount: 5,
      consumerStrategyName: DISPATCH_TO_SINGLE,
    });
    await create(stream, "g", settings);
    const c = subscribe(stream, "g");
    for (let i = 0; i < 6; i++) await c.sub.ack((await c.next()).resolved);
    const got = await eventually("the checkpoint at revision 5", async () => {
      const i = await info(stream, "g");
      return { ok: i.stats.lastCheckpointedEventRevision === 5n, value: i };
    });
    eq(got.eventSource, stream, "eventSource");
    eq(got.groupName, "g", "groupName");
    eq(got.status, "Live", "status");
    eq(got.stats.lastKnownEventRevision, 5n, "lastKnownEventRevision");
    eq(got.stats.parkedMessageCount, 0n, "parkedMessageCount");
    eq(got.connections.length, 1, "connections");
    const conn = got.connections[0];
    eq(
      [conn.connectionName, conn.availableSlots, conn.inFlightMessages, conn.totalItems],
      [client.connectionName, 10, 0, 6n],
      "the connection's name (this client's connection-name), slots, in flight, items",
    );
    eq([got.stats.totalItems, got.stats.totalInFlightMessages], [6n, 0], "the group's items and in flight");
    const s = got.settings;
    eq(
      [s.startFrom, s.maxRetryCount, s.readBatchSize, s.historyBufferSize, s.liveBufferSize],
      [START, 7, 5, 50, 60],
      "startFrom, maxRetryCount, readBatchSize, historyBufferSize, liveBufferSize",
    );
    eq(
      [s.checkPointLowerBound, s.checkPointUpperBound, s.checkPointAfter, s.messageTimeout],
      [1, 3, 100, 20_000],
      "checkpoint bounds, checkPointAfter, messageTimeout",
    );
    eq([s.maxSubscriberCount, s.consumerStrategyName], [5, DISPATCH_TO_SINGLE], "maxSubscriberCount, consumerStrategyName");
    await c.close();

    // Defaults: from the end, unbounded subscribers, round robin; other strategies are kept.
    await create(stream, "defaults", persistentSubscriptionToStreamSettingsFromDefaults());
    const d = (await info(stream, "defaults")).settings;
    eq([d.startFrom, d.maxSubscriberCount, d.consumerStrategyName], [END, UNBOUNDED, ROUND_ROBIN], "defaults");
    await create(stream, "pinned", fromStart({ consumerStrategyName: PINNED }));
    eq((await info(stream, "pinned")).settings.consumerStrategyName, PINNED, "pinned strategy");
    // (The client refuses PinnedByCorrelation in updates, not in creates.)
    await create(stream, "by-correlation", fromStart({ consumerStrategyName: PINNED_BY_CORRELATION }));
    eq((await info(stream, "by-correlation")).settings.consumerStrategyName, PINNED_BY_CORRELATION, "pinned by correlation");
    await create(stream, "at-3", persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: 3n }));
    eq((await info(stream, "at-3")).settings.startFrom, 3n, "startFrom a revision");
    const a = subscribe(stream, "at-3");
    eq((await a.next("from revision 3")).n, 3, "the first event of a group from revision 3");
    await a.close();
  },

  /** Nack retry: the event comes back with retryCount 1. */
  async nack_retry() {
    const stream = name("retry");
    await append(stream, [0, 1]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    const first = await c.next();
    eq([first.n, first.retryCount], [0, 0], "first delivery");
    await c.sub.nack(RETRY, "again", first.resolved);
    // Event 1 and the retried event 0, in either order.
    const two = [await c.next(), await c.next()].sort((a, b) => a.n - b.n);
    eq(two.map((e) => [e.n, e.id, e.retryCount]), [[0, first.id, 1], [1, two[1].id, 0]], "the retried event and the next");
    await c.sub.ack(...two.map((e) => e.resolved));
    await c.nothingFor(300);
    await c.close();
  },

  /** Nack skip: never delivered again, the next event follows. */
  async nack_skip() {
    const stream = name("skip");
    await append(stream, [0, 1]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    const e = await c.next();
    eq(e.n, 0, "first");
    await c.sub.nack(SKIP, "not for us", e.resolved);
    const next = await c.next();
    eq([next.n, next.retryCount], [1, 0], "after the skipped one");
    await c.sub.ack(next.resolved);
    await c.nothingFor(300);
    const i = await info(stream, "g");
    eq(i.stats.parkedMessageCount, 0n, "a skipped event is not parked");
    await c.close();
  },

  /** Nack park: counted as parked; replayParkedMessages delivers it again. */
  async nack_park_replay() {
    const stream = name("park");
    await append(stream, [0, 1]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    const e = await c.next();
    await c.sub.nack(PARK, "poison", e.resolved);
    await c.sub.ack((await c.next()).resolved);
    await c.nothingFor(200);
    await parkedCount(stream, "g", 1);
    await within("replay parked", client.replayParkedMessagesToStream(stream, "g"));
    const back = await c.next("the replayed event");
    eq([back.n, back.id], [0, e.id], "replayed event");
    await c.sub.ack(back.resolved);
    await parkedCount(stream, "g", 0);
    await c.nothingFor(200);
    await c.close();
  },

  /** Nack stop: this consumer is dropped; its event goes to the next consumer. */
  async nack_stop() {
    const stream = name("stop");
    await append(stream, [0]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    const e = await c.next();
    await c.sub.nack(STOP, "stop me", e.resolved);
    const stopped = await c.ended("the consumer that nacked with stop");
    check(stopped.error, "nack stop ended the consumer's stream without an error");
    eq(stopped.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DROPPED, "the client's error after nack stop");
    const next = subscribe(stream, "g");
    const again = await next.next("the event of the stopped consumer");
    eq([again.n, again.id, again.retryCount], [0, e.id, 1], "redelivered to the next consumer, as a retry");
    await next.sub.ack(again.resolved);
    await next.close();
  },

  /** Replay parked with stopAt 2: the oldest two parked come back, the third stays parked. */
  async replay_parked_stop_at() {
    const stream = name("stopat");
    const ids = await append(stream, [0, 1, 2]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    // One park at a time: parks in flight together may be written in any order (the
    // server appends each on its own), and stopAt counts from the oldest written.
    for (let i = 0; i < 3; i++) {
      await c.sub.nack(PARK, "later", (await c.next()).resolved);
      await parkedCount(stream, "g", i + 1);
    }
    await within("replay parked, stop at 2", client.replayParkedMessagesToStream(stream, "g", { stopAt: 2 }));
    const back = [await c.next("replayed"), await c.next("replayed")];
    eq(back.map((e) => [e.n, e.id]), [[0, ids.get(0)], [1, ids.get(1)]], "the oldest two parked");
    await c.sub.ack(...back.map((e) => e.resolved));
    await c.nothingFor(300);
    await parkedCount(stream, "g", 1);
    await within("replay the rest", client.replayParkedMessagesToStream(stream, "g"));
    const last = await c.next("the last parked");
    eq([last.n, last.id], [2, ids.get(2)], "the last parked");
    await c.sub.ack(last.resolved);
    await parkedCount(stream, "g", 0);
    await c.close();
  },

  /** Message timeout, buffer size 1: event 0 retried up to maxRetryCount 3, then parked. */
  async timeout_buffer_1() {
    const stream = name("slow1");
    await append(stream, [0, 1]);
    await create(stream, "g", fromStart({ messageTimeout: 300, maxRetryCount: 3 }));
    const c = subscribe(stream, "g", 1);
    for (const want of [0, 1, 2, 3]) {
      const e = await c.next(`event 0, try ${want}`);
      eq([e.n, e.retryCount], [0, want], `event 0, try ${want}`);
    }
    const e = await c.next("event 1 after event 0 is parked");
    eq([e.n, e.retryCount], [1, 0], "after parking event 0");
    await c.sub.ack(e.resolved);
    await parkedCount(stream, "g", 1);
    await c.close();
  },

  /** Message timeout, buffer size 10: all arrive; the unacked ones come back once. */
  async timeout_buffer_10() {
    const stream = name("slow10");
    await append(stream, range(0, 10));
    await create(stream, "g", fromStart({ messageTimeout: 300, maxRetryCount: 3 }));
    const c = subscribe(stream, "g", 10);
    const got = [];
    for (let i = 0; i < 10; i++) got.push(await c.next());
    eq(got.map((e) => [e.n, e.retryCount]), range(0, 10).map((n) => [n, 0]), "first deliveries");
    await c.sub.ack(...got.filter((e) => e.n % 2 === 0).map((e) => e.resolved));
    const again = [];
    for (let i = 0; i < 5; i++) {
      const e = await c.next("a timed-out event");
      eq(e.retryCount, 1, `retry count of event ${e.n}`);
      again.push(e.n);
      await c.sub.ack(e.resolved);
    }
    eq(again.sort((a, b) => a - b), [1, 3, 5, 7, 9], "the unacked events, again");
    await c.nothingFor(600);
    await c.close();
  },

  /** Nack retry past maxRetryCount 3: parked, and counted in the info. */
  async max_retry_parks() {
    const stream = name("maxretry");
    await append(stream, [0]);
    await create(stream, "g", fromStart({ maxRetryCount: 3 }));
    const c = subscribe(stream, "g");
    for (const want of [0, 1, 2, 3]) {
      const e = await c.next(`try ${want}`);
      eq([e.n, e.retryCount], [0, want], `try ${want}`);
      await c.sub.nack(RETRY, "fail", e.resolved);
    }
    await c.nothingFor(300);
    await parkedCount(stream, "g", 1);
    await c.close();
  },

  /** List to a stream, to $all, and all groups. */
  async list() {
    const stream = name("list");
    await create(stream, "a");
    await create(stream, "b");
    const allGroup = name("list-all");
    await within(
      "create to all",
      client.createPersistentSubscriptionToAll(allGroup, persistentSubscriptionToAllSettingsFromDefaults()),
    );
    const onStream = await within("list to stream", client.listPersistentSubscriptionsToStream(stream));
    eq(onStream.map((i) => [i.eventSource, i.groupName]).sort(), [[stream, "a"], [stream, "b"]], "list to stream");
    const onAll = await within("list to all", client.listPersistentSubscriptionsToAll());
    const mine = onAll.filter((i) => i.groupName === allGroup);
    eq(mine.map((i) => i.eventSource), ["$all"], "list to all");
    check(onAll.every((i) => i.eventSource === "$all"), `list to all: ${show(onAll.map((i) => i.eventSource))}`);
    const everything = await within("list all", client.listAllPersistentSubscriptions());
    const found = everything
      .filter((i) => i.eventSource === stream || i.groupName === allGroup)
      .map((i) => `${i.eventSource}::${i.groupName}`)
      .sort();
    eq(found, [`$all::${allGroup}`, `${stream}::a`, `${stream}::b`].sort(), "list all");
    await rejects(
      "list to a stream without groups",
      client.listPersistentSubscriptionsToStream(name("no-groups")),
      ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST,
    );
    await within("delete to all", client.deletePersistentSubscriptionToAll(allGroup));
  },

  /** Update: settings changed, the connected consumer dropped, the checkpoint kept. */
  async update() {
    const stream = name("update");
    await append(stream, range(0, 5));
    const settings = fromStart({ checkPointLowerBound: 1, checkPointUpperBound: 1, checkPointAfter: 50 });
    await create(stream, "g", settings);
    const c = subscribe(stream, "g");
    for (const n of range(0, 5)) {
      const e = await c.next();
      eq(e.n, n, "event");
      if (n < 3) await c.sub.ack(e.resolved);
    }
    await eventually("the checkpoint at 2", async () => {
      const i = await info(stream, "g");
      return { ok: i.stats.lastCheckpointedEventRevision === 2n, value: i.stats };
    });
    await within(
      "update",
      client.updatePersistentSubscriptionToStream(stream, "g", { ...settings, maxRetryCount: 4 }),
    );
    const dropped = await c.ended("the consumer dropped by the update");
    check(dropped.error, "the update ended the consumer's stream without an error");
    eq(dropped.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DROPPED, "the client's error for a dropped consumer");
    eq((await info(stream, "g")).settings.maxRetryCount, 4, "updated maxRetryCount");
    // Reconnected: resumes after the checkpoint (3 and 4 were never acked), not from 0.
    const again = subscribe(stream, "g");
    const e3 = await again.next();
    const e4 = await again.next();
    eq([e3.n, e4.n], [3, 4], "after the checkpoint");
    await again.sub.ack(e3.resolved, e4.resolved);
    await again.close();
    await rejects(
      "update a missing group",
      client.updatePersistentSubscriptionToStream(stream, "missing", settings),
      ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST,
    );
  },

  /** Delete: the consumer ends, then info, delete and subscribe are not found. */
  async delete() {
    const stream = name("delete");
    await append(stream, [0]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    await c.sub.ack((await c.next()).resolved);
    await within("delete", client.deletePersistentSubscriptionToStream(stream, "g"));
    const ended = await c.ended("the consumer of a deleted group");
    check(ended.error, "the delete ended the consumer's stream without an error");
    eq(ended.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DROPPED, "the client's error for a deleted group's consumer");
    await rejects("info after delete", client.getPersistentSubscriptionToStreamInfo(stream, "g"), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
    await rejects("delete again", client.deletePersistentSubscriptionToStream(stream, "g"), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
    await rejects("replay parked of a deleted group", client.replayParkedMessagesToStream(stream, "g"), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
    const missing = subscribe(stream, "g");
    const refused = await missing.ended("subscribing to a deleted group");
    check(refused.error, "subscribing to a deleted group ended without an error");
    eq(refused.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST, "subscribing to a deleted group");
  },

  /** maxSubscriberCount 1: a second consumer is refused. */
  async maximum_subscribers() {
    const stream = name("one");
    await create(stream, "g", fromStart({ maxSubscriberCount: 1 }));
    const first = subscribe(stream, "g");
    await first.confirmed();
    const second = subscribe(stream, "g");
    const refused = await second.ended("the second consumer");
    check(refused.error, "the second consumer ended without an error");
    eq(refused.error.type, ErrorType.MAXIMUM_SUBSCRIBERS_REACHED, "the second consumer's error");
    await first.nothingFor(100);
    await first.close();
  },

  /** A group on $all with a stream-name prefix filter, info to all, replay to all, delete. */
  async all_prefix_filter() {
    const prefix = name("shop-");
    await append(name("other"), [100, 101]);
    const a = await append(`${prefix}1`, range(0, 3));
    const b = await append(`${prefix}2`, range(3, 6));
    const group = name("all-prefix");
    const settings = persistentSubscriptionToAllSettingsFromDefaults({ startFrom: START });
    const filter = streamNameFilter({ prefixes: [prefix] });
    await within("create to all", client.createPersistentSubscriptionToAll(group, settings, { filter }));
    await rejects(
      "create to all again",
      client.createPersistentSubscriptionToAll(group, settings, { filter }),
      ErrorType.PERSISTENT_SUBSCRIPTION_EXISTS,
    );
    const c = subscribeToAll(group);
    eq(await c.confirmed(), `$all::${group}`, "subscription id");
    const got = [];
    for (let i = 0; i < 6; i++) {
      const e = await c.next();
      got.push([e.stream, e.n, e.id]);
      await c.sub.ack(e.resolved);
    }
    const want = [
      ...range(0, 3).map((n) => [`${prefix}1`, n, a.get(n)]),
      ...range(3, 6).map((n) => [`${prefix}2`, n, b.get(n)]),
    ];
    eq(got, want, "the matching events, in order");
    await c.nothingFor(200);
    const i = await within("info to all", client.getPersistentSubscriptionToAllInfo(group));
    eq([i.eventSource, i.groupName, i.connections.length], ["$all", group, 1], "info to all");
    eq(i.settings.startFrom, START, "startFrom of the $all group");
    check(i.stats.lastKnownEventPosition !== undefined, `lastKnownEventPosition: ${show(i.stats)}`);
    await within("replay parked to all", client.replayParkedMessagesToAll(group));
    // Update to $all drops the consumer and keeps the filter.
    await within(
      "update to all",
      client.updatePersistentSubscriptionToAll(group, { ...settings, maxRetryCount: 2, consumerStrategyName: DISPATCH_TO_SINGLE }),
    );
    const dropped = await c.ended("the consumer dropped by the update to all");
    eq(dropped.error?.type, ErrorType.PERSISTENT_SUBSCRIPTION_DROPPED, "the client's error after an update to all");
    const u = await within("info to all after update", client.getPersistentSubscriptionToAllInfo(group));
    eq([u.settings.maxRetryCount, u.settings.consumerStrategyName], [2, DISPATCH_TO_SINGLE], "updated $all settings");
    await append(`${prefix}1`, [6]);
    await append(name("other"), [102]);
    await append(`${prefix}3`, [7]);
    const again = subscribeToAll(group);
    const live = [await again.next("a live event after the update"), await again.next("a live event after the update")];
    eq(live.map((e) => [e.stream, e.n]), [[`${prefix}1`, 6], [`${prefix}3`, 7]], "the filter after the update");
    await again.sub.ack(...live.map((e) => e.resolved));
    await again.close();
    await within("delete to all", client.deletePersistentSubscriptionToAll(group));
    await rejects("info to all after delete", client.getPersistentSubscriptionToAllInfo(group), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
  },

  /** A group on $all with an event-type regex filter; live events too. */
  async all_regex_filter() {
    const wantedType = `Wanted${run}`;
    const stream = name("mixed");
    await append(stream, [0], wantedType);
    await append(stream, [1], `Unwanted${run}`);
    await append(stream, [2], `${wantedType}Too`);
    const group = name("all-regex");
    await within(
      "create to all",
      client.createPersistentSubscriptionToAll(
        group,
        persistentSubscriptionToAllSettingsFromDefaults({ startFrom: START }),
        { filter: eventTypeFilter({ regex: `^${wantedType}` }) },
      ),
    );
    const c = subscribeToAll(group);
    const got = [];
    for (let i = 0; i < 2; i++) {
      const e = await c.next();
      got.push([e.n, e.type]);
      await c.sub.ack(e.resolved);
    }
    await append(stream, [3], `Unwanted${run}`);
    await append(stream, [4], wantedType);
    const live = await c.next("a live matching event");
    got.push([live.n, live.type]);
    await c.sub.ack(live.resolved);
    eq(got, [[0, wantedType], [2, `${wantedType}Too`], [4, wantedType]], "events matching the regex");
    await c.nothingFor(200);
    await c.close();
    await within("delete to all", client.deletePersistentSubscriptionToAll(group));
  },

  /** Restart the subsystem: the groups survive and serve again. */
  async restart_subsystem() {
    const stream = name("restart");
    await append(stream, [0, 1]);
    await create(stream, "g");
    const c = subscribe(stream, "g");
    await c.sub.ack((await c.next()).resolved);
    await within("restart subsystem", client.restartPersistentSubscriptionSubsystem());
    const dropped = await c.ended("the consumer dropped by the restart");
    check(dropped.error, "the restart ended the consumer's stream without an error");
    eq(dropped.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DROPPED, "the client's error for a consumer dropped by a restart");
    const listed = await within("list after restart", client.listPersistentSubscriptionsToStream(stream));
    eq(listed.map((i) => i.groupName), ["g"], "groups after a restart");
    const again = subscribe(stream, "g");
    const e = await again.next("an event after the restart");
    check(e.n === 1 || e.n === 0, `after the restart: ${show([e.n, e.retryCount])}`);
    await again.close();
  },

  /** Inconsistent settings are refused with INVALID_ARGUMENT (the client has no type for it). */
  async invalid_settings() {
    const stream = name("invalid");
    for (const [what, changes] of [
      ["readBatchSize not below historyBufferSize", { readBatchSize: 50, historyBufferSize: 50 }],
      ["checkPointLowerBound above checkPointUpperBound", { checkPointLowerBound: 10, checkPointUpperBound: 5 }],
      ["a negative maxRetryCount", { maxRetryCount: -1 }],
    ]) {
      const e = await rejects(what, client.createPersistentSubscriptionToStream(stream, "g", fromStart(changes)), ErrorType.UNKNOWN);
      eq(e.code, 3, `${what}: the gRPC status (INVALID_ARGUMENT)`);
    }
    await rejects("info after refused creates", client.getPersistentSubscriptionToStreamInfo(stream, "g"), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
  },

  /** A missing group: subscribe and info are not found. */
  async not_found() {
    const stream = name("nowhere");
    const c = subscribe(stream, "g");
    const refused = await c.ended("subscribing to a missing group");
    check(refused.error, "subscribing to a missing group ended without an error");
    eq(refused.error.type, ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST, "subscribing to a missing group");
    await rejects("info of a missing group", client.getPersistentSubscriptionToStreamInfo(stream, "g"), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
    await rejects("info of a missing $all group", client.getPersistentSubscriptionToAllInfo(name("none")), ErrorType.PERSISTENT_SUBSCRIPTION_DOES_NOT_EXIST);
  },
};

const names = wanted.length ? wanted : Object.keys(scenarios);
for (const n of names) {
  if (!scenarios[n]) {
    console.log(`FAIL ${n}: no such scenario (have: ${Object.keys(scenarios).join(", ")})`);
    process.exit(1);
  }
}

const started = Date.now();
for (const n of names) {
  const t = Date.now();
  try {
    await scenarios[n]();
  } catch (e) {
    const why = e instanceof Failure ? e.message : `${e?.type ?? e?.constructor?.name}: ${e?.stack ?? e}`;
    console.log(`FAIL ${n}: ${why}`);
    process.exit(1);
  }
  console.log(`ok ${n} (${Date.now() - t} ms)`);
}
console.log(`all ${names.length} scenarios passed in ${Date.now() - started} ms`);
await client.dispose();
process.exit(0);
