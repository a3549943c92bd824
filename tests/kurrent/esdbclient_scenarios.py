#!/usr/bin/env python3
"""Client scenarios of the KurrentDB (EventStoreDB) protocol adapter, through the official
Python client `esdbclient`.

Usage: esdbclient_scenarios.py URI [SCENARIO ...]
  URI       e.g. esdb://127.0.0.1:2113?Tls=false
  SCENARIO  run only these (by name); all of them by default.

Every scenario works on its own streams (names carry a random tag, so the script can run twice
against the same server) and asserts exact values: ids, types, data, metadata, content types,
stream positions and commit positions equal what was appended. Scenarios run one after the
other, and nothing else writes to the server meanwhile, so `$all` reads from a position taken
in a scenario see exactly what that scenario wrote.

It prints one line per scenario and exits 1 on the first failure, with the reason and the
traceback. Reads and subscriptions have deadlines; appends mostly use esdbclient's default (no
gRPC deadline, and a batch deadline of 10,000 years, which the server must not overflow); a
watchdog ends the whole run, with every thread's traceback, if anything hangs.

The contract is /work/shared/reference/kurrentdb-protocol.md. Two details of esdbclient shape
the expected errors below: `append_to_stream` with one `NewEvent` uses the unary `Append` RPC
and with a list uses `BatchAppend`; a unary append to a deleted stream (FAILED_PRECONDITION
"... is deleted.") surfaces as `FailedPrecondition`, a batch one as `StreamIsDeleted`.
"""

import datetime
import faulthandler
import json
import sys
import threading
import time
import traceback
import uuid

from esdbclient import (
    CaughtUp,
    Checkpoint,
    EventStoreDBClient,
    NewEvent,
    RecordedEvent,
    StreamState,
)
from esdbclient.exceptions import (
    AlreadyExists,
    MaximumSubscriptionsReached,
    FailedPrecondition,
    GrpcDeadlineExceeded,
    MaximumAppendSizeExceededError,
    NotFound,
    StreamIsDeleted,
    WrongCurrentVersion,
)

I64_MAX = 2**63 - 1
# The test server's limits (tests/kurrent_python.rs): one event, and one append.
EVENT_BYTES_MAX = 200 * 1024
APPEND_BYTES_MAX = 256 * 1024
# Deadline of each read (seconds) and of each subscription (its whole life).
CALL_TIMEOUT = 10.0
SUB_TIMEOUT = 15.0
# The whole run: a hang anywhere ends the process with every thread's traceback.
WATCHDOG_SECONDS = 150

ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
EXISTS = StreamState.EXISTS

RUN = uuid.uuid4().hex[:8]
STARTED = datetime.datetime.now(tz=datetime.timezone.utc)

client = None  # set in main()


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def name(what):
    """A stream name unique to this run."""
    return f"py-{RUN}-{what}"


_counter = 0


def ev(event_type, data=None, metadata=b"", content_type="application/json"):
    """A new event with a fresh id and, by default, JSON data naming it."""
    global _counter
    _counter += 1
    if data is None:
        data = json.dumps({"n": _counter, "type": event_type}).encode()
    return NewEvent(
        type=event_type,
        data=data,
        metadata=metadata,
        content_type=content_type,
        id=uuid.uuid4(),
    )


def binary_ev(event_type):
    """A binary event: every byte value, and binary custom metadata."""
    return ev(
        event_type,
        data=bytes(range(256)) + uuid.uuid4().bytes,
        metadata=b"\x00\x01meta\xff" + uuid.uuid4().bytes,
        content_type="application/octet-stream",
    )


def describe(item):
    if isinstance(item, Checkpoint):
        return f"Checkpoint({item.commit_position})"
    if isinstance(item, CaughtUp):
        return "CaughtUp"
    if isinstance(item, RecordedEvent):
        return (
            f"{item.stream_name}@{item.stream_position}:{item.type}"
            f"(pos {item.commit_position})"
        )
    return repr(item)


def describe_all(items):
    return "[" + ", ".join(describe(i) for i in items) + "]"


def eq(actual, expected, what):
    assert actual == expected, f"{what}: expected {expected!r}, got {actual!r}"


def raises(exc_type, fn, what, message=None, contains=None):
    """Calls fn and asserts it raises exc_type (exactly that class or a subclass), optionally
    with exactly `message` or a message containing `contains`."""
    try:
        result = fn()
    except exc_type as e:
        text = str(e)
        if message is not None:
            assert text == message, (
                f"{what}: {type(e).__name__} with message {text!r}, expected {message!r}"
            )
        if contains is not None:
            assert contains in text, (
                f"{what}: {type(e).__name__} with message {text!r}, expected it to contain"
                f" {contains!r}"
            )
        return e
    except Exception as e:  # noqa: BLE001 - the failure message names it
        raise AssertionError(
            f"{what}: expected {exc_type.__name__}, got {type(e).__name__}: {e}"
        ) from e
    if isinstance(result, (list, tuple)):
        result = describe_all(result)
    raise AssertionError(f"{what}: expected {exc_type.__name__}, got a result: {result!r}")


def append(stream, current_version, events, timeout=None):
    """Appends one NewEvent (unary Append) or a list (BatchAppend); returns the commit
    position of the last event."""
    return client.append_to_stream(
        stream, current_version=current_version, events=events, timeout=timeout
    )


def get(stream, **kwargs):
    kwargs.setdefault("timeout", CALL_TIMEOUT)
    return client.get_stream(stream, **kwargs)


def read_all(**kwargs):
    kwargs.setdefault("timeout", CALL_TIMEOUT)
    return list(client.read_all(**kwargs))


def last_position():
    """The commit position of the last record in the log (system records included)."""
    return client.get_commit_position(filter_exclude=(), timeout=CALL_TIMEOUT)


def check_event(rec, new, stream, stream_position, commit_position=None, what="event"):
    """Asserts that the recorded event is exactly `new`, at this place."""
    ctx = f"{what} ({describe(rec)})"
    assert isinstance(rec, RecordedEvent) and not isinstance(rec, (Checkpoint, CaughtUp)), (
        f"{what}: expected a recorded event, got {describe(rec)}"
    )
    eq(rec.id, new.id, f"{ctx}: id")
    eq(rec.type, new.type, f"{ctx}: type")
    eq(rec.data, new.data, f"{ctx}: data")
    eq(rec.metadata, new.metadata, f"{ctx}: metadata")
    eq(rec.content_type, new.content_type, f"{ctx}: content type")
    eq(rec.stream_name, stream, f"{ctx}: stream name")
    eq(rec.stream_position, stream_position, f"{ctx}: stream position")
    assert isinstance(rec.commit_position, int) and rec.commit_position > 0, (
        f"{ctx}: commit position {rec.commit_position!r} is not a positive integer"
    )
    if commit_position is not None:
        eq(rec.commit_position, commit_position, f"{ctx}: commit position")
    eq(rec.prepare_position, rec.commit_position, f"{ctx}: prepare position")
    assert rec.link is None, f"{ctx}: unexpected link {rec.link!r}"
    check_recorded_at(rec, ctx)


def check_recorded_at(rec, ctx):
    """`created` (100 ns ticks since the Unix epoch) is the time of the append."""
    assert rec.recorded_at is not None, f"{ctx}: no recorded_at (metadata 'created')"
    low = STARTED - datetime.timedelta(seconds=5)
    high = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=5)
    assert low <= rec.recorded_at <= high, (
        f"{ctx}: recorded_at {rec.recorded_at} is not the time of the append"
        f" (between {low} and {high})"
    )


def check_events(recs, expected, what):
    """`expected`: a list of (new_event, stream, stream_position, commit_position or None)."""
    assert len(recs) == len(expected), (
        f"{what}: expected {len(expected)} events, got {len(recs)}: {describe_all(recs)}"
    )
    for i, (rec, (new, stream, pos, commit)) in enumerate(zip(recs, expected)):
        check_event(rec, new, stream, pos, commit, what=f"{what}[{i}]")


def ids_of(recs):
    return [r.id for r in recs]


def increasing(recs, what):
    positions = [r.commit_position for r in recs]
    assert all(a < b for a, b in zip(positions, positions[1:])), (
        f"{what}: commit positions not strictly increasing: {positions}"
    )


class Sub:
    """A catch-up subscription read one item at a time; the subscription's own deadline
    bounds every wait."""

    def __init__(self, subscription, what):
        self.sub = subscription
        self.what = what
        self.seen = []

    def next(self):
        try:
            item = next(self.sub)
        except StopIteration:
            raise AssertionError(
                f"{self.what}: the subscription ended; received {describe_all(self.seen)}"
            ) from None
        except GrpcDeadlineExceeded:
            raise AssertionError(
                f"{self.what}: nothing more arrived before the subscription's deadline"
                f" ({SUB_TIMEOUT}s); received {describe_all(self.seen)}"
            ) from None
        self.seen.append(item)
        return item

    def next_event(self, skip_caught_up=False, skip_checkpoints=False):
        """The next item, skipping at most one CaughtUp (when asked) and any checkpoints
        (when asked)."""
        caught_up = 0
        while True:
            item = self.next()
            if isinstance(item, CaughtUp) and skip_caught_up and caught_up == 0:
                caught_up += 1
                continue
            if isinstance(item, Checkpoint) and skip_checkpoints:
                continue
            return item

    def expect_caught_up(self):
        item = self.next()
        assert isinstance(item, CaughtUp), (
            f"{self.what}: expected CaughtUp, got {describe(item)};"
            f" received {describe_all(self.seen)}"
        )

    def stop(self):
        self.sub.stop()


def subscribe_stream(stream, what, **kwargs):
    kwargs.setdefault("timeout", SUB_TIMEOUT)
    return Sub(client.subscribe_to_stream(stream, **kwargs), what)


def subscribe_all(what, **kwargs):
    kwargs.setdefault("timeout", SUB_TIMEOUT)
    return Sub(client.subscribe_to_all(**kwargs), what)


# ----------------------------------------------------------------------------------------------
# Scenarios
# ----------------------------------------------------------------------------------------------


def scenario_append_expected_versions():
    """Every expected-position mode, through the unary and the batch append, and the
    WrongCurrentVersion error on each mismatch (nothing written)."""
    s = name("append")
    written = []  # (new_event, returned commit position of its append or None)

    e0 = ev("Created")
    p0 = append(s, NO_STREAM, e0)
    assert isinstance(p0, int) and p0 > 0, f"first append returned position {p0!r}"
    written.append((e0, p0))

    # NO_STREAM on an existing stream: unary and batch.
    raises(
        WrongCurrentVersion,
        lambda: append(s, NO_STREAM, ev("Nope")),
        "unary append NO_STREAM to an existing stream",
        message="Stream position of last event is 0 not StreamState.NO_STREAM",
    )
    raises(
        WrongCurrentVersion,
        lambda: append(s, NO_STREAM, [ev("Nope"), ev("Nope")]),
        "batch append NO_STREAM to an existing stream",
        message="Stream position of last event is 0 not StreamState.NO_STREAM",
    )

    # EXISTS: unary, then batch.
    e1 = binary_ev("Updated")
    p1 = append(s, EXISTS, e1)
    written.append((e1, p1))
    e2, e3 = ev("Updated"), binary_ev("Updated")
    p3 = append(s, EXISTS, [e2, e3])
    written += [(e2, None), (e3, p3)]

    # Exact positions: unary, then batch (with a finite batch deadline).
    e4 = ev("Renamed", metadata=b'{"correlation":"c-4"}')
    p4 = append(s, 3, e4)
    written.append((e4, p4))
    e5, e6 = ev("Renamed"), ev("Renamed")
    p6 = append(s, 4, [e5, e6], timeout=CALL_TIMEOUT)
    written += [(e5, None), (e6, p6)]

    # Exact mismatch: unary and batch.
    raises(
        WrongCurrentVersion,
        lambda: append(s, 2, ev("Nope")),
        "unary append at stale position 2",
        message="Stream position of last event is 6 not 2",
    )
    raises(
        WrongCurrentVersion,
        lambda: append(s, 10, [ev("Nope")]),
        "batch append at future position 10",
        message="Stream position of last event is 6 not 10",
    )

    # ANY: unary, then batch.
    e7 = ev("Touched")
    p7 = append(s, ANY, e7)
    written.append((e7, p7))
    e8, e9 = ev("Touched"), ev("Touched", data=b"")
    p9 = append(s, ANY, [e8, e9])
    written += [(e8, None), (e9, p9)]

    # The stream holds exactly what was appended, positions as returned.
    recs = get(s)
    check_events(
        recs,
        [(e, s, i, p) for i, (e, p) in enumerate(written)],
        "stream after appends",
    )
    increasing(recs, "stream after appends")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), 9, "current version")

    # EXISTS and exact on a stream that does not exist: WrongCurrentVersion, nothing written.
    missing = name("append-missing")
    for label, version, events in [
        ("unary EXISTS", EXISTS, ev("Nope")),
        ("batch EXISTS", EXISTS, [ev("Nope"), ev("Nope")]),
        ("unary exact 0", 0, ev("Nope")),
        ("batch exact 0", 0, [ev("Nope")]),
    ]:
        raises(
            WrongCurrentVersion,
            lambda: append(missing, version, events),
            f"{label} append to a stream that does not exist",
            message=f"Stream '{missing}' does not exist",
        )
    raises(NotFound, lambda: get(missing), "read after refused appends")

    # ANY and NO_STREAM create streams (batch ANY, unary-free NO_STREAM batch).
    s_any = name("append-any")
    a0, a1 = ev("A"), ev("A")
    pa = append(s_any, ANY, [a0, a1])
    recs = get(s_any)
    check_events(recs, [(a0, s_any, 0, None), (a1, s_any, 1, pa)], "stream created with ANY")
    assert recs[0].commit_position > p9, "a later append has a greater commit position"

    s_new = name("append-new")
    n0, n1, n2 = binary_ev("B"), ev("B"), ev("B")
    pn = append(s_new, NO_STREAM, [n0, n1, n2])
    recs = get(s_new)
    check_events(
        recs,
        [(n0, s_new, 0, None), (n1, s_new, 1, None), (n2, s_new, 2, pn)],
        "stream created with NO_STREAM",
    )
    increasing(recs, "stream created with NO_STREAM")
    eq(last_position(), pn, "last position of the log")

    # Content types other than JSON read back as application/octet-stream.
    s_text = name("append-text")
    t = ev("Note", data=b"plain text", content_type="text/plain")
    pt = append(s_text, NO_STREAM, t)
    recs = get(s_text)
    eq(
        (len(recs), recs[0].id, recs[0].data, recs[0].content_type, recs[0].commit_position),
        (1, t.id, b"plain text", "application/octet-stream", pt),
        "a text/plain event",
    )


def scenario_idempotent_retry():
    """A retried append returns the original commit position and writes nothing."""
    s = name("idem")
    evs = [ev("Placed"), binary_ev("Paid"), ev("Shipped")]
    p = append(s, NO_STREAM, evs)
    end = last_position()
    eq(end, p, "log end after the first append")

    # The same batch again with NO_STREAM.
    eq(append(s, NO_STREAM, evs), p, "batch retry with NO_STREAM: commit position")
    eq(last_position(), end, "log end after the NO_STREAM retry (nothing written)")

    # Exact expected position: a unary append, retried unary and batched.
    e3 = ev("Delivered")
    p3 = append(s, 2, e3)
    end = last_position()
    eq(append(s, 2, e3), p3, "unary retry at exact position 2")
    eq(append(s, 2, [e3]), p3, "batch retry at exact position 2")
    # The first batch again, with NO_STREAM, after the stream has moved on.
    eq(append(s, NO_STREAM, evs), p, "retry of the first batch after the stream moved on")
    # The first batch expecting position 0 would put its ids at 1..3, but they are at 0..2:
    # not a retry, and the stream is not at 0.
    raises(
        WrongCurrentVersion,
        lambda: append(s, 0, evs),
        "retry of events 0..2 expecting position 0 (their ids are at 0..2, not 1..3)",
    )
    eq(last_position(), end, "log end after the exact retries (nothing written)")

    # ANY and EXISTS: the ids are found in the stream.
    eq(append(s, ANY, e3), p3, "unary retry with ANY")
    eq(append(s, ANY, evs), p, "batch retry of the first append with ANY")
    eq(append(s, EXISTS, [e3]), p3, "batch retry with EXISTS")
    eq(last_position(), end, "log end after the ANY/EXISTS retries (nothing written)")

    # A unary NO_STREAM append retried.
    s1 = name("idem-unary")
    u = ev("Only")
    pu = append(s1, NO_STREAM, u)
    eq(append(s1, NO_STREAM, u), pu, "unary retry with NO_STREAM")
    eq(last_position(), pu, "log end after the unary retry (nothing written)")

    # A partial match is not a retry: WrongCurrentVersion, nothing written.
    raises(
        WrongCurrentVersion,
        lambda: append(s, NO_STREAM, [evs[0], ev("Other")]),
        "partial retry (first id matches, second does not)",
    )
    eq(last_position(), pu, "log end after the refused partial retry")

    recs = get(s)
    check_events(
        recs,
        [(evs[0], s, 0, None), (evs[1], s, 1, None), (evs[2], s, 2, p), (e3, s, 3, p3)],
        "stream after retries",
    )

    # Ids are not globally unique: the same ids in another stream are a new append.
    s2 = name("idem-copy")
    p_copy = append(s2, NO_STREAM, evs)
    assert p_copy > pu, f"the copy was written after the rest ({p_copy} <= {pu})"
    recs = get(s2)
    check_events(
        recs,
        [(evs[0], s2, 0, None), (evs[1], s2, 1, None), (evs[2], s2, 2, p_copy)],
        "same ids in another stream",
    )
    eq(append(s2, NO_STREAM, evs), p_copy, "retry of the copy")


def scenario_get_stream():
    """Stream reads both directions, from positions, with limits."""
    s = name("read")
    evs = [ev(f"Step{i}") if i % 3 else binary_ev(f"Step{i}") for i in range(10)]
    p_last = append(s, NO_STREAM, evs)
    full = get(s)
    check_events(full, [(e, s, i, None) for i, e in enumerate(evs)], "forwards")
    increasing(full, "forwards")
    eq(full[-1].commit_position, p_last, "position of the last event")
    pos = [r.commit_position for r in full]

    def expect(recs, revisions, what):
        check_events(recs, [(evs[i], s, i, pos[i]) for i in revisions], what)

    expect(get(s, backwards=True), range(9, -1, -1), "backwards")
    expect(get(s, stream_position=3), range(3, 10), "forwards from 3 (inclusive)")
    expect(get(s, stream_position=6, backwards=True), range(6, -1, -1), "backwards from 6")
    expect(get(s, stream_position=0, backwards=True), [0], "backwards from 0")
    expect(get(s, stream_position=9), [9], "forwards from the last")
    expect(get(s, limit=4), range(0, 4), "forwards, limit 4")
    expect(get(s, backwards=True, limit=2), [9, 8], "backwards, limit 2")
    expect(get(s, stream_position=3, limit=2), [3, 4], "forwards from 3, limit 2")
    expect(get(s, stream_position=5, backwards=True, limit=3), [5, 4, 3], "backwards from 5")
    expect(get(s, limit=100), range(0, 10), "limit above the length")
    eq(get(s, stream_position=10), (), "forwards from just past the end")
    eq(get(s, stream_position=1000), (), "forwards from far past the end")
    expect(
        get(s, stream_position=1000, backwards=True), range(9, -1, -1), "backwards from past the end"
    )
    with client.read_stream(s, stream_position=7, timeout=CALL_TIMEOUT) as it:
        expect(list(it), [7, 8, 9], "read_stream iterator from 7")
    # No link events here: resolving links changes nothing.
    expect(get(s, resolve_links=True), range(0, 10), "forwards, resolve_links")


def scenario_read_all():
    """$all forwards (inclusive) and backwards (exclusive) from a commit position, limits,
    filters by event type and stream name (include, exclude, .NET search semantics), and the
    default exclusion of system events."""
    sa, sb = name("all-a"), name("all-b")
    ta, tb = f"T{RUN}A-", f"T{RUN}B-"
    ea0 = ev(ta + "Created")
    p_a0 = append(sa, NO_STREAM, ea0)
    eb0, eb1 = binary_ev(tb + "Added0"), ev(tb + "Added1")
    p_b1 = append(sb, NO_STREAM, [eb0, eb1])
    meta = {"purpose": "read_all", "n": 1}
    client.set_stream_metadata(sa, metadata=meta)
    ea1 = ev(ta + "Created2")
    p_a1 = append(sa, 0, ea1)
    eq(last_position(), p_a1, "log end")

    everything = read_all(commit_position=p_a0, filter_exclude=())
    assert len(everything) == 5, f"unfiltered $all from {p_a0}: {describe_all(everything)}"
    increasing(everything, "unfiltered $all")
    check_event(everything[0], ea0, sa, 0, p_a0, "$all[0] (inclusive start)")
    check_event(everything[1], eb0, sb, 0, None, "$all[1]")
    check_event(everything[2], eb1, sb, 1, p_b1, "$all[2]")
    m = everything[3]
    eq((m.stream_name, m.stream_position, m.type), (f"$${sa}", 0, "$metadata"), "$all[3]")
    eq(json.loads(m.data), meta, "$all[3]: metadata event data")
    eq(m.content_type, "application/json", "$all[3]: content type")
    check_recorded_at(m, "$all[3]")
    check_event(everything[4], ea1, sa, 1, p_a1, "$all[4]")
    pos = [r.commit_position for r in everything]
    ids = [r.id for r in everything]

    def expect(recs, indexes, what):
        eq([describe(r) for r in recs], [describe(everything[i]) for i in indexes], what)
        eq([r.id for r in recs], [ids[i] for i in indexes], f"{what}: ids")

    expect(read_all(commit_position=p_a0, filter_exclude=(), limit=2), [0, 1], "limit 2")
    expect(read_all(commit_position=pos[1], filter_exclude=()), [1, 2, 3, 4], "from $all[1]")
    # The default filter excludes system event types ($metadata).
    expect(read_all(commit_position=p_a0), [0, 1, 2, 4], "default filter")
    # Backwards from P excludes P.
    expect(
        read_all(commit_position=p_a1, backwards=True, filter_exclude=(), limit=2),
        [3, 2],
        "backwards from $all[4] (exclusive)",
    )
    expect(
        read_all(commit_position=pos[2], backwards=True, filter_exclude=(), limit=10)[:2],
        [1, 0],
        "backwards from $all[2] (exclusive)",
    )
    expect(read_all(backwards=True, filter_exclude=(), limit=1), [4], "backwards from the end")
    expect(read_all(backwards=True, limit=2), [4, 2], "backwards from the end, default filter")

    # Event-type filters.
    expect(read_all(commit_position=p_a0, filter_include=[tb + ".*"]), [1, 2], "type include")
    expect(
        read_all(commit_position=p_a0, filter_include=[tb + ".*"], limit=1),
        [1],
        "type include, limit 1",
    )
    # esdbclient builds "^X|Y$": the first alternative matches any type starting with X (a
    # .NET Regex.Match is a search, not a full match), so both Created and Created2 match.
    expect(
        read_all(commit_position=p_a0, filter_include=[ta + "Created", tb + "Added1"]),
        [0, 2, 4],
        "type include, two patterns (search semantics)",
    )
    expect(
        read_all(commit_position=p_a0, filter_exclude=[tb + ".*", r"\$.+"]),
        [0, 4],
        "type exclude (lookahead)",
    )
    expect(
        read_all(commit_position=p_a0, filter_exclude=[tb + "Added0"]),
        [0, 2, 3, 4],
        "type exclude of one type only (system events included)",
    )
    # Stream-name filters.
    expect(
        read_all(commit_position=p_a0, filter_include=[sa], filter_by_stream_name=True),
        [0, 4],
        "stream include",
    )
    expect(
        read_all(
            commit_position=p_a0, filter_include=[r"\$\$" + sa], filter_by_stream_name=True
        ),
        [3],
        "stream include of the metadata stream",
    )
    expect(
        read_all(commit_position=p_a0, filter_exclude=[sb + ".*"], filter_by_stream_name=True),
        [0, 3, 4],
        "stream exclude",
    )
    expect(
        read_all(
            commit_position=p_a1,
            backwards=True,
            filter_include=[sb],
            filter_by_stream_name=True,
            limit=5,
        ),
        [2, 1],
        "stream include, backwards (exclusive)",
    )
    eq(client.get_commit_position(timeout=CALL_TIMEOUT), p_a1, "get_commit_position")

    # Position 0 is "before everything"; past the end there is nothing.
    first_two = read_all(filter_exclude=(), limit=2)
    assert len(first_two) == 2 and 0 < first_two[0].commit_position, (
        f"the first events of the log: {describe_all(first_two)}"
    )
    eq(
        [(r.id, r.commit_position) for r in read_all(commit_position=0, filter_exclude=(), limit=2)],
        [(r.id, r.commit_position) for r in first_two],
        "forwards from position 0",
    )
    eq(read_all(commit_position=p_a1 + 1000, filter_exclude=()), [], "forwards past the end")
    eq(
        [r.id for r in read_all(commit_position=p_a1 + 1000, backwards=True, limit=1)],
        [ea1.id],
        "backwards from past the end",
    )
    eq(
        client.get_commit_position(
            filter_include=[sb], filter_by_stream_name=True, timeout=CALL_TIMEOUT
        ),
        p_b1,
        "get_commit_position of one stream",
    )


def scenario_paging_and_concurrency():
    """Reads and subscriptions over more events than a server page (the test server reads 7
    at a time), sparse and dense filter matches, and subscriptions catching up while another
    client appends: every event once, in order."""
    s, other = name("many"), name("many-other")
    dense, sparse = f"P{RUN}-", f"Q{RUN}-"
    before = last_position()
    evs, others = [], []
    for i in range(20):
        batch = [ev(dense + str(3 * i + k)) for k in range(3)]
        append(s, ANY, batch)
        evs += batch
        o = ev(sparse + str(i))
        append(other, ANY, o)
        others.append(o)
    full = get(s)
    check_events(full, [(e, s, i, None) for i, e in enumerate(evs)], "60 events")
    increasing(full, "60 events")
    pos = [r.commit_position for r in full]
    start = pos[0]

    def expect(recs, revisions, what):
        check_events(recs, [(evs[i], s, i, pos[i]) for i in revisions], what)

    expect(get(s, backwards=True), range(59, -1, -1), "60 events backwards")
    expect(get(s, stream_position=13, limit=20), range(13, 33), "from 13, limit 20")
    expect(get(s, stream_position=40, backwards=True, limit=15), range(40, 25, -1), "back 40")
    expect(get(s, stream_position=50, limit=7), range(50, 57), "from 50, limit 7")

    ids = ids_of
    eq(ids(read_all(commit_position=start, filter_include=[dense + ".*"])), ids(full), "dense")
    eq(
        ids(read_all(commit_position=start, filter_include=[sparse + ".*"])),
        [o.id for o in others],
        "sparse filter",
    )
    eq(
        ids(read_all(commit_position=start, filter_include=[sparse + ".*"], limit=9)),
        [o.id for o in others[:9]],
        "sparse filter, limit 9",
    )
    eq(
        ids(read_all(backwards=True, filter_include=[other], filter_by_stream_name=True, limit=12)),
        [o.id for o in reversed(others[-12:])],
        "sparse stream filter backwards, limit 12",
    )
    interleaved = [e.id for i in range(20) for e in evs[3 * i : 3 * i + 3] + [others[i]]]
    eq(ids(read_all(commit_position=start, filter_exclude=())), interleaved, "unfiltered")
    eq(
        ids(read_all(commit_position=start, filter_exclude=(), limit=50)),
        interleaved[:50],
        "unfiltered, limit 50",
    )
    eq(
        ids(read_all(backwards=True, filter_exclude=(), limit=30)),
        list(reversed(interleaved))[:30],
        "unfiltered backwards, limit 30",
    )

    # Subscriptions from the start of the stream, and to $all filtered on it, while another
    # client appends 100 more events one at a time.
    by_stream = subscribe_stream(s, "stream subscription under appends")
    by_all = subscribe_all(
        "$all subscription under appends",
        commit_position=before,
        filter_include=[s],
        filter_by_stream_name=True,
    )
    more = [ev(dense + f"live{i}") for i in range(100)]
    writer_errors = []

    def writer():
        try:
            with EventStoreDBClient(uri=client.connection_spec.uri) as c:
                for i, e in enumerate(more):
                    c.append_to_stream(s, current_version=59 + i, events=e)
        except Exception as e:  # noqa: BLE001 - reported below
            writer_errors.append(e)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    everything = evs + more
    for sub in (by_stream, by_all):
        for i, e in enumerate(everything):
            check_event(sub.next(), e, s, i, None, f"{sub.what}: event {i}")
        increasing(sub.seen, sub.what)
    thread.join(timeout=SUB_TIMEOUT)
    assert not thread.is_alive(), "the writer did not finish"
    assert not writer_errors, f"the writer failed: {writer_errors[0]!r}"
    # Nothing after the last event: a sentinel is the next item of both.
    sentinel = ev(dense + "sentinel")
    p = append(s, 159, sentinel)
    for sub in (by_stream, by_all):
        check_event(sub.next(), sentinel, s, 160, p, f"{sub.what}: sentinel")
        sub.stop()


def scenario_unicode_names():
    """Stream names and event types outside ASCII, through reads, errors and metadata."""
    s = name("ünïcödé-流")
    e = ev("Créé-事件", data="{\"ñ\": \"✓\"}".encode())
    p = append(s, NO_STREAM, e)
    check_events(get(s), [(e, s, 0, p)], "unicode stream")
    eq(ids_of(read_all(commit_position=p, filter_exclude=())), [e.id], "unicode stream in $all")
    eq(
        ids_of(read_all(commit_position=p, filter_include=[s], filter_by_stream_name=True)),
        [e.id],
        "unicode stream name filter",
    )
    client.set_stream_metadata(s, metadata={"名": "値"})
    eq(client.get_stream_metadata(s, timeout=CALL_TIMEOUT), ({"名": "値"}, 0), "metadata")
    raises(
        WrongCurrentVersion,
        lambda: client.delete_stream(s, current_version=3, timeout=CALL_TIMEOUT),
        "delete at a wrong version",
        message=(
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: 3,"
            " Actual version: 0"
        ),
    )
    client.tombstone_stream(s, current_version=0, timeout=CALL_TIMEOUT)
    raises(StreamIsDeleted, lambda: get(s), "read after tombstone")
    raises(
        FailedPrecondition,
        lambda: append(s, ANY, ev("X")),
        "unary append after tombstone",
        message=f"Event stream '{s}' is deleted.",
    )
    raises(StreamIsDeleted, lambda: append(s, ANY, [ev("X")]), "batch append after tombstone")


def scenario_not_found():
    """Reads of a stream that never existed: NotFound (a single stream_not_found reply)."""
    s = name("missing")
    raises(NotFound, lambda: get(s), "get_stream")
    raises(NotFound, lambda: get(s, backwards=True), "get_stream backwards")
    raises(NotFound, lambda: get(s, stream_position=5), "get_stream from 5")
    raises(NotFound, lambda: get(s, limit=1), "get_stream limit 1")

    def iterate():
        with client.read_stream(s, timeout=CALL_TIMEOUT) as it:
            return list(it)

    raises(NotFound, iterate, "read_stream iteration")
    raises(NotFound, lambda: get(f"$${s}"), "metadata stream of a stream without metadata")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), NO_STREAM, "get_current_version")
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        ({}, NO_STREAM),
        "get_stream_metadata",
    )


def scenario_subscribe_to_stream():
    """Catch-up stream subscriptions: history, CaughtUp, then live with no gap or duplicate;
    from a revision (exclusive); from the end; a stream that does not exist yet."""
    s = name("sub")
    evs = [ev("Opened"), binary_ev("Deposited"), ev("Withdrawn")]
    append(s, NO_STREAM, evs)
    history = get(s)
    pos = [r.commit_position for r in history]

    sub = subscribe_stream(s, "stream subscription from the start", include_caught_up=True)
    for i in range(3):
        check_event(sub.next(), evs[i], s, i, pos[i], f"catch-up event {i}")
    sub.expect_caught_up()
    live = [ev("Deposited"), ev("Deposited")]
    p4 = append(s, 2, live)
    check_event(sub.next(), live[0], s, 3, None, "live event 3")
    check_event(sub.next(), live[1], s, 4, p4, "live event 4")
    e5 = binary_ev("Closed")
    p5 = append(s, 4, e5)
    check_event(sub.next(), e5, s, 5, p5, "live event 5 (unary append)")
    # An append to another stream is not delivered: the next item is this stream's next event.
    append(name("sub-other"), ANY, ev("Noise"))
    e6 = ev("Reopened")
    p6 = append(s, 5, e6)
    check_event(sub.next(), e6, s, 6, p6, "live event 6 (after another stream's append)")
    sub.stop()
    evs = evs + live + [e5, e6]
    pos = [r.commit_position for r in get(s)]

    # From a revision: starts after it.
    sub = subscribe_stream(
        s, "stream subscription from revision 3", stream_position=3, include_caught_up=True
    )
    for i in (4, 5, 6):
        check_event(sub.next(), evs[i], s, i, pos[i], f"from revision 3: event {i}")
    sub.expect_caught_up()
    e7 = ev("Audited")
    p7 = append(s, ANY, e7)
    check_event(sub.next(), e7, s, 7, p7, "from revision 3: live event 7")
    sub.stop()

    # From the last revision: nothing in history.
    sub = subscribe_stream(
        s, "stream subscription from the last revision", stream_position=7, include_caught_up=True
    )
    sub.expect_caught_up()
    e8 = ev("Audited")
    p8 = append(s, 7, e8)
    check_event(sub.next(), e8, s, 8, p8, "from revision 7: live event 8")
    sub.stop()

    # From the end: only new events.
    sub = subscribe_stream(s, "stream subscription from the end", from_end=True, include_caught_up=True)
    e9 = ev("Audited")
    p9 = append(s, 8, e9)
    check_event(sub.next_event(skip_caught_up=True), e9, s, 9, p9, "from the end: event 9")
    sub.stop()

    # Without include_caught_up, the items are only events.
    sub = subscribe_stream(s, "stream subscription without caught-up", stream_position=8)
    check_event(sub.next(), e9, s, 9, p9, "without caught-up: event 9")
    e10 = ev("Audited")
    p10 = append(s, 9, e10)
    check_event(sub.next(), e10, s, 10, p10, "without caught-up: event 10")
    sub.stop()

    # A stream that does not exist yet: the subscription waits for it.
    later = name("sub-later")
    sub = subscribe_stream(later, "subscription to a stream not yet written", include_caught_up=True)
    first = ev("Born")
    p_first = append(later, NO_STREAM, first)
    check_event(sub.next_event(skip_caught_up=True), first, later, 0, p_first, "first event")
    second = ev("Grew")
    p_second = append(later, 0, second)
    check_event(sub.next(), second, later, 1, p_second, "second event")
    sub.stop()


def scenario_subscribe_to_all():
    """Catch-up subscriptions to $all: from a commit position (exclusive), unfiltered, with
    the default filter, with a stream-name filter and checkpoints, from the end."""
    s = name("suball")
    noise_stream = name("suball-noise")
    e0 = ev(f"S{RUN}-Zero")
    p0 = append(s, NO_STREAM, e0)
    e1, e2 = ev(f"S{RUN}-One"), binary_ev(f"S{RUN}-Two")
    p2 = append(s, 0, [e1, e2])
    noise = ev(f"N{RUN}-Noise")
    p_noise = append(noise_stream, NO_STREAM, noise)
    p1 = get(s)[1].commit_position

    unfiltered = subscribe_all(
        "unfiltered $all subscription",
        commit_position=p0,
        filter_exclude=(),
        include_caught_up=True,
    )
    default = subscribe_all(
        "$all subscription with the default filter", commit_position=p0, include_caught_up=True
    )
    named = subscribe_all(
        "$all subscription filtered by stream name",
        commit_position=p0,
        filter_include=[s],
        filter_by_stream_name=True,
        include_checkpoints=True,
        include_caught_up=True,
    )
    for sub in (unfiltered, default):
        check_event(sub.next(), e1, s, 1, p1, f"{sub.what}: first event (after p0)")
        check_event(sub.next(), e2, s, 2, p2, f"{sub.what}: second event")
        check_event(sub.next(), noise, noise_stream, 0, p_noise, f"{sub.what}: noise event")
        sub.expect_caught_up()
    check_event(named.next_event(skip_checkpoints=True), e1, s, 1, p1, "named: first event")
    check_event(named.next_event(skip_checkpoints=True), e2, s, 2, p2, "named: second event")
    item = named.next_event(skip_checkpoints=True)
    assert isinstance(item, CaughtUp), (
        f"named: expected CaughtUp after the history, got {describe(item)}"
    )

    # Live: an event, a metadata change (a system event), another event.
    e3 = ev(f"S{RUN}-Three")
    p3 = append(s, 2, e3)
    new_meta = {"live": True}
    client.set_stream_metadata(s, metadata=new_meta)
    p_meta = last_position()
    e4 = binary_ev(f"S{RUN}-Four")
    p4 = append(s, 3, e4)
    for sub in (unfiltered, default, named):
        check_event(sub.next_event(skip_checkpoints=True), e3, s, 3, p3, f"{sub.what}: live e3")
    m = unfiltered.next()
    eq(
        (m.stream_name, m.stream_position, m.type, m.commit_position),
        (f"$${s}", 0, "$metadata", p_meta),
        "unfiltered: live metadata event",
    )
    eq(json.loads(m.data), new_meta, "unfiltered: live metadata event data")
    for sub in (unfiltered, default, named):
        check_event(sub.next_event(skip_checkpoints=True), e4, s, 4, p4, f"{sub.what}: live e4")

    # Checkpoints of the filtered subscription: increasing, never past the end of the log.
    end = last_position()
    checkpoints = [c.commit_position for c in named.seen if isinstance(c, Checkpoint)]
    assert all(a < b for a, b in zip(checkpoints, checkpoints[1:])), (
        f"named: checkpoints not increasing: {checkpoints}"
    )
    assert all(p0 <= c <= end for c in checkpoints), (
        f"named: checkpoints {checkpoints} outside [{p0}, {end}]"
    )
    for sub in (unfiltered, default, named):
        sub.stop()

    # From the end: only new events.
    sub = subscribe_all(
        "$all subscription from the end", from_end=True, filter_exclude=(), include_caught_up=True
    )
    e5 = ev(f"S{RUN}-Five")
    p5 = append(s, 4, e5)
    check_event(sub.next_event(skip_caught_up=True), e5, s, 5, p5, "from the end: e5")
    sub.stop()

    # From the last position: nothing in history, then live.
    sub = subscribe_all(
        "$all subscription from the last position",
        commit_position=p5,
        filter_exclude=(),
        include_caught_up=True,
    )
    sub.expect_caught_up()
    e6 = ev(f"S{RUN}-Six")
    p6 = append(s, 5, e6)
    check_event(sub.next(), e6, s, 6, p6, "from the last position: e6")
    sub.stop()

    # Without include_caught_up: only events.
    sub = subscribe_all(
        "$all subscription without caught-up", commit_position=p5, filter_exclude=()
    )
    check_event(sub.next(), e6, s, 6, p6, "without caught-up: e6")
    sub.stop()

    # From position 0: the first event of the log comes first.
    first = read_all(filter_exclude=(), limit=1)[0]
    sub = subscribe_all("$all subscription from position 0", commit_position=0, filter_exclude=())
    item = sub.next()
    eq((item.id, item.commit_position), (first.id, first.commit_position), "from 0: first event")
    sub.stop()


def scenario_checkpoints():
    """A filter that excludes everything (window 1, multiplier 1): checkpoints during
    catch-up, one when it reaches the end, and during live; never past the end of the log."""
    s = name("ckpt")
    start = last_position()
    for i in range(3):
        append(s, ANY, ev(f"C{RUN}-{i}"))
    end = last_position()
    sub = subscribe_all(
        "checkpoints-only subscription",
        commit_position=start,
        filter_exclude=[".*"],
        window_size=1,
        checkpoint_interval_multiplier=1,
        include_checkpoints=True,
        include_caught_up=True,
    )
    # Until CaughtUp and a checkpoint at the end of the log have both arrived.
    caught_up = False
    at_end = False
    while not (caught_up and at_end):
        item = sub.next()
        if isinstance(item, CaughtUp):
            caught_up = True
        elif isinstance(item, Checkpoint):
            assert item.commit_position <= end, (
                f"checkpoint {item.commit_position} past the end of the log {end};"
                f" received {describe_all(sub.seen)}"
            )
            at_end = at_end or item.commit_position == end
        else:
            raise AssertionError(f"an event passed the exclude-all filter: {describe(item)}")

    # Live: each considered event is a checkpoint (interval 1).
    live = [append(s, ANY, ev(f"C{RUN}-live{i}")) for i in range(2)]
    while True:
        item = sub.next()
        assert isinstance(item, Checkpoint), (
            f"live: expected only checkpoints, got {describe(item)}"
        )
        assert item.commit_position <= live[-1], (
            f"live checkpoint {item.commit_position} past the end of the log {live[-1]}"
        )
        if item.commit_position == live[-1]:
            break
    checkpoints = [c.commit_position for c in sub.seen if isinstance(c, Checkpoint)]
    assert all(a < b for a, b in zip(checkpoints, checkpoints[1:])), (
        f"checkpoints not strictly increasing: {checkpoints}"
    )
    assert all(c > start for c in checkpoints), (
        f"a checkpoint at or before the start {start}: {checkpoints}"
    )
    sub.stop()


def scenario_stream_metadata():
    """Set and get metadata ($maxCount, $maxAge, $tb, custom keys) with expected versions, and
    the reads they limit."""
    s = name("meta")
    evs = [ev("M") for _ in range(5)]
    append(s, NO_STREAM, evs)
    pos = [r.commit_position for r in get(s)]

    def expect(recs, revisions, what):
        check_events(recs, [(evs[i], s, i, pos[i]) for i in revisions], what)

    md1 = {"$maxCount": 2, "app": "x"}
    client.set_stream_metadata(s, metadata=md1)
    eq(client.get_stream_metadata(s, timeout=CALL_TIMEOUT), (md1, 0), "metadata v0")
    expect(get(s), [3, 4], "$maxCount 2: forwards")
    expect(get(s, backwards=True), [4, 3], "$maxCount 2: backwards")
    expect(get(s, stream_position=0), [3, 4], "$maxCount 2: forwards from 0")
    expect(get(s, backwards=True, limit=10), [4, 3], "$maxCount 2: backwards, limit 10")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), 4, "current version")

    md2 = {
        "$maxAge": 3600,
        "$tb": 1,
        "$acl": {"$r": "$all", "$w": ["admin"]},
        "custom": {"nested": [1, "two", None, True, 2.5]},
    }
    client.set_stream_metadata(s, metadata=md2, current_version=0)
    eq(client.get_stream_metadata(s, timeout=CALL_TIMEOUT), (md2, 1), "metadata v1")
    expect(get(s), [1, 2, 3, 4], "$tb 1 and $maxAge 3600")

    raises(
        WrongCurrentVersion,
        lambda: client.set_stream_metadata(s, metadata={"stale": 1}, current_version=0),
        "set metadata at a stale version",
        message="Stream position of last event is 1 not 0",
    )
    raises(
        WrongCurrentVersion,
        lambda: client.set_stream_metadata(s, metadata={"stale": 1}, current_version=NO_STREAM),
        "set metadata with NO_STREAM when there is some",
    )
    md3 = {"$maxCount": 3}
    client.set_stream_metadata(s, metadata=md3, current_version=EXISTS)
    eq(client.get_stream_metadata(s, timeout=CALL_TIMEOUT), (md3, 2), "metadata v2")
    expect(get(s), [2, 3, 4], "$maxCount 3")

    # $maxCount follows new appends.
    more = [ev("M"), ev("M")]
    append(s, 4, more)
    evs += more
    pos += [r.commit_position for r in get(s, stream_position=5)]
    expect(get(s), [4, 5, 6], "$maxCount 3 after two appends")
    expect(get(s, backwards=True, limit=2), [6, 5], "$maxCount 3 backwards, limit 2")

    # The metadata stream itself has a max count of 1 (as in KurrentDB): only the current
    # version reads, both ways; every version is in $all.
    for label, kwargs in [("forwards", {}), ("backwards", {"backwards": True})]:
        versions = get(f"$${s}", **kwargs)
        eq(
            [(r.stream_name, r.stream_position, r.type) for r in versions],
            [(f"$${s}", 2, "$metadata")],
            f"metadata stream {label}",
        )
        eq(json.loads(versions[0].data), md3, f"metadata stream {label}: data")
    eq(
        [
            json.loads(r.data)
            for r in read_all(
                commit_position=pos[0], filter_include=[rf"\$\${s}"], filter_by_stream_name=True
            )
        ],
        [md1, md2, md3],
        "every metadata version in $all",
    )

    # Metadata of a stream with no events.
    s2 = name("meta-only")
    client.set_stream_metadata(s2, metadata={"k": 1}, current_version=NO_STREAM)
    eq(client.get_stream_metadata(s2, timeout=CALL_TIMEOUT), ({"k": 1}, 0), "metadata only")
    raises(NotFound, lambda: get(s2), "read of a stream with metadata and no events")
    # The stream itself still has no events: NO_STREAM holds.
    e = ev("First")
    p = append(s2, NO_STREAM, e)
    check_events(get(s2), [(e, s2, 0, p)], "first event after metadata")
    eq(client.get_stream_metadata(s2, timeout=CALL_TIMEOUT), ({"k": 1}, 0), "metadata kept")
    # A stream with metadata counts as existing for EXISTS.
    for label, events in [("unary", ev("First")), ("batch", [ev("First")])]:
        s_exists = name(f"meta-exists-{label}")
        client.set_stream_metadata(s_exists, metadata={"k": 2})
        append(s_exists, EXISTS, events)
        eq(
            [r.id for r in get(s_exists)],
            [events.id if label == "unary" else events[0].id],
            f"{label} EXISTS append to a stream with only metadata",
        )

    # $tb past the last event: the stream exists and reads empty.
    s4 = name("meta-tb")
    append(s4, NO_STREAM, [ev("T"), ev("T")])
    client.set_stream_metadata(s4, metadata={"$tb": 100})
    eq(get(s4), (), "$tb past the end: forwards")
    eq(get(s4, backwards=True), (), "$tb past the end: backwards")

    # $maxAge hides events once they are older: polled (the condition is the passing of
    # time), never before the age is reached, and within a bounded wait.
    s3 = name("meta-age")
    append(s3, NO_STREAM, [ev("Old"), ev("Old")])
    client.set_stream_metadata(s3, metadata={"$maxAge": 1})
    deadline = time.monotonic() + 10
    while True:
        try:
            recs = get(s3)
        except NotFound:
            recs = ()
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        for r in recs:
            age = (now - r.recorded_at).total_seconds()
            assert age < 1.5, f"$maxAge 1: an event {age:.2f} s old is still visible"
        if not recs:
            break
        assert time.monotonic() < deadline, "$maxAge 1: the events never expired"
        time.sleep(0.05)


def scenario_delete_stream():
    """Soft delete: NotFound, repeatable, $tb = i64::MAX; an append revives the stream with
    its positions continuing and only the new events visible."""
    s = name("del")
    evs = [ev("D"), ev("D"), ev("D")]
    append(s, NO_STREAM, evs)
    raises(
        WrongCurrentVersion,
        lambda: client.delete_stream(s, current_version=5, timeout=CALL_TIMEOUT),
        "delete at a wrong version",
        message=(
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: 5,"
            " Actual version: 2"
        ),
    )
    raises(
        WrongCurrentVersion,
        lambda: client.delete_stream(s, current_version=NO_STREAM, timeout=CALL_TIMEOUT),
        "delete with NO_STREAM of an existing stream",
        message=(
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: -1,"
            " Actual version: 2"
        ),
    )
    check_events(get(s), [(e, s, i, None) for i, e in enumerate(evs)], "after refused delete")
    client.delete_stream(s, current_version=2, timeout=CALL_TIMEOUT)
    raises(NotFound, lambda: get(s), "read after delete")
    raises(NotFound, lambda: get(s, backwards=True), "read backwards after delete")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), NO_STREAM, "version after delete")
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        ({"$tb": I64_MAX}, 0),
        "metadata after delete",
    )
    # Repeating the delete with the same expected version succeeds.
    client.delete_stream(s, current_version=2, timeout=CALL_TIMEOUT)
    raises(NotFound, lambda: get(s), "read after the repeated delete")
    # Expecting the stream to exist: it is deleted.
    raises(
        StreamIsDeleted,
        lambda: append(s, EXISTS, [ev("D")]),
        "batch append with EXISTS to a soft-deleted stream",
    )
    raises(
        FailedPrecondition,
        lambda: append(s, EXISTS, ev("D")),
        "unary append with EXISTS to a soft-deleted stream",
        contains="is deleted",
    )
    raises(NotFound, lambda: get(s), "read after refused appends")

    # NO_STREAM revives it; positions continue; only the new events are visible.
    new = [ev("D2"), binary_ev("D2")]
    p = append(s, NO_STREAM, new)
    recs = get(s)
    check_events(recs, [(new[0], s, 3, None), (new[1], s, 4, p)], "after revival")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), 4, "version after revival")
    # (Each soft delete writes a metadata record, so the version is the metadata stream's.)
    meta_version = get(f"$${s}", backwards=True, limit=1)[0].stream_position
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        ({"$tb": 3}, meta_version),
        "metadata after revival",
    )
    e5 = ev("D3")
    p5 = append(s, 4, e5)
    check_events(
        get(s, backwards=True),
        [(e5, s, 5, p5), (new[1], s, 4, p), (new[0], s, 3, None)],
        "backwards after revival",
    )

    # A unary ANY append revives too.
    s2 = name("del-any")
    append(s2, NO_STREAM, [ev("D"), ev("D")])
    client.delete_stream(s2, current_version=ANY, timeout=CALL_TIMEOUT)
    raises(NotFound, lambda: get(s2), "read after delete with ANY")
    e = ev("Back")
    pe = append(s2, ANY, e)
    check_events(get(s2), [(e, s2, 2, pe)], "after revival with ANY")

    # Deleting a soft-deleted stream expecting it to exist: StreamIsDeleted.
    s3 = name("del-exists")
    append(s3, NO_STREAM, ev("D"))
    client.delete_stream(s3, current_version=EXISTS, timeout=CALL_TIMEOUT)
    raises(
        StreamIsDeleted,
        lambda: client.delete_stream(s3, current_version=EXISTS, timeout=CALL_TIMEOUT),
        "delete with EXISTS of a soft-deleted stream",
    )

    # Metadata written to a soft-deleted stream keeps the old events hidden.
    s4 = name("del-meta")
    append(s4, NO_STREAM, [ev("D"), ev("D")])
    client.delete_stream(s4, current_version=1, timeout=CALL_TIMEOUT)
    client.set_stream_metadata(s4, metadata={"app": "v"})
    md, version = client.get_stream_metadata(s4, timeout=CALL_TIMEOUT)
    eq(version, 1, "metadata version after delete and set")
    eq(md.get("app"), "v", "custom key after delete and set")
    assert md.get("$tb") in (2, I64_MAX), f"$tb after delete and set: {md!r}"
    try:
        hidden = get(s4)
    except NotFound:
        hidden = ()
    eq(hidden, (), "old events after delete and set metadata")
    e = ev("Back")
    pe = append(s4, ANY, e)
    check_events(get(s4), [(e, s4, 2, pe)], "after delete, set metadata, append")


def scenario_tombstone_stream():
    """Tombstone: StreamIsDeleted for reads, appends, deletes and metadata reads; metadata can
    still be set; the $streamDeleted event is in $all; subscriptions end with StreamIsDeleted."""
    s = name("tomb")
    append(s, NO_STREAM, [ev("T"), ev("T")])
    start = last_position()
    raises(
        WrongCurrentVersion,
        lambda: client.tombstone_stream(s, current_version=5, timeout=CALL_TIMEOUT),
        "tombstone at a wrong version",
        message=(
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: 5,"
            " Actual version: 1"
        ),
    )
    client.tombstone_stream(s, current_version=1, timeout=CALL_TIMEOUT)
    p_tomb = last_position()
    assert p_tomb > start, "the tombstone is a record in the log"

    raises(StreamIsDeleted, lambda: get(s), "read")
    raises(StreamIsDeleted, lambda: get(s, backwards=True, limit=1), "read backwards")
    raises(StreamIsDeleted, lambda: get(s, stream_position=1), "read from 1")
    raises(
        StreamIsDeleted,
        lambda: client.get_current_version(s, timeout=CALL_TIMEOUT),
        "get_current_version",
    )
    for label, version in [("ANY", ANY), ("NO_STREAM", NO_STREAM), ("EXISTS", EXISTS), ("1", 1)]:
        raises(
            StreamIsDeleted,
            lambda: append(s, version, [ev("T")]),
            f"batch append {label}",
        )
        raises(
            FailedPrecondition,
            lambda: append(s, version, ev("T")),
            f"unary append {label}",
            message=f"Event stream '{s}' is deleted.",
        )
    raises(
        StreamIsDeleted,
        lambda: client.delete_stream(s, current_version=ANY, timeout=CALL_TIMEOUT),
        "delete",
    )
    raises(
        StreamIsDeleted,
        lambda: client.tombstone_stream(s, current_version=ANY, timeout=CALL_TIMEOUT),
        "tombstone again",
    )
    raises(
        StreamIsDeleted,
        lambda: client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        "get_stream_metadata",
    )
    eq(last_position(), p_tomb, "nothing written by the refused calls")

    # Metadata can still be set, with ANY and with the metadata stream's exact version.
    client.set_stream_metadata(s, metadata={"x": 1})
    client.set_stream_metadata(s, metadata={"x": 2}, current_version=0)
    raises(StreamIsDeleted, lambda: get(s), "read after setting metadata")

    # $all holds the tombstone.
    recs = read_all(commit_position=p_tomb, filter_exclude=())
    eq(
        [(r.stream_name, r.stream_position, r.type) for r in recs],
        [
            (s, I64_MAX, "$streamDeleted"),
            (f"$${s}", 0, "$metadata"),
            (f"$${s}", 1, "$metadata"),
        ],
        "$all after the tombstone",
    )
    eq(recs[0].commit_position, p_tomb, "tombstone position")
    eq([json.loads(r.data) for r in recs[1:]], [{"x": 1}, {"x": 2}], "metadata after tombstone")
    eq(
        read_all(commit_position=p_tomb),
        [],
        "default filter hides the tombstone and metadata events",
    )

    # A subscription to the tombstoned stream ends with StreamIsDeleted (the tombstone itself
    # may come first).
    def drain():
        sub = subscribe_stream(s, "subscription to a tombstoned stream")
        while True:
            item = sub.next()
            assert isinstance(item, RecordedEvent) and item.type == "$streamDeleted", (
                f"subscription to a tombstoned stream delivered {describe(item)}"
            )

    raises(StreamIsDeleted, drain, "subscription to a tombstoned stream")

    # A live subscription sees the tombstone, then StreamIsDeleted.
    s2 = name("tomb-live")
    e = ev("T")
    pe = append(s2, NO_STREAM, e)
    sub = subscribe_stream(s2, "live subscription to a stream being tombstoned", include_caught_up=True)
    check_event(sub.next(), e, s2, 0, pe, "live tombstone: history")
    sub.expect_caught_up()
    client.tombstone_stream(s2, current_version=ANY, timeout=CALL_TIMEOUT)
    t = sub.next()
    eq(
        (type(t), t.stream_name, t.stream_position, t.type, t.commit_position),
        (RecordedEvent, s2, I64_MAX, "$streamDeleted", last_position()),
        "live tombstone event",
    )
    raises(StreamIsDeleted, sub.next, "live subscription after the tombstone")


def scenario_delete_never_existing():
    """Delete and tombstone of a stream that never existed: NotFound ("Actual version: -1");
    tombstone with ANY succeeds."""
    s = name("never")

    def msg(expected):
        return (
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version:"
            f" {expected}, Actual version: -1"
        )

    cases = [
        ("delete ANY", client.delete_stream, ANY, -2),
        ("delete NO_STREAM", client.delete_stream, NO_STREAM, -1),
        ("delete exact 0", client.delete_stream, 0, 0),
        ("delete EXISTS", client.delete_stream, EXISTS, -4),
        ("tombstone exact 0", client.tombstone_stream, 0, 0),
        ("tombstone EXISTS", client.tombstone_stream, EXISTS, -4),
    ]
    for label, call, version, number in cases:
        raises(
            NotFound,
            lambda: call(s, current_version=version, timeout=CALL_TIMEOUT),
            label,
            message=msg(number),
        )
    raises(NotFound, lambda: get(s), "read after refused deletes")

    s2 = name("never-tomb")
    client.tombstone_stream(s2, current_version=ANY, timeout=CALL_TIMEOUT)
    raises(StreamIsDeleted, lambda: get(s2), "read after tombstone with ANY")
    raises(StreamIsDeleted, lambda: append(s2, ANY, [ev("X")]), "append after tombstone")
    client.set_stream_metadata(s2, metadata={"after": "tombstone"})


def scenario_delete_metadata_only():
    """A stream with metadata and no events exists implicitly (as in KurrentDB): a soft delete
    with NO_STREAM or ANY succeeds, and an append brings it back from position 0."""
    s = name("meta-only-del")
    client.set_stream_metadata(s, metadata={"k": 1}, current_version=NO_STREAM)
    raises(
        NotFound,
        lambda: client.delete_stream(s, current_version=0, timeout=CALL_TIMEOUT),
        "delete at position 0 of a stream with no events",
        message=(
            f"Delete failed due to WrongExpectedVersion. Stream: {s}, Expected version: 0,"
            " Actual version: -1"
        ),
    )
    before = last_position()
    client.delete_stream(s, current_version=NO_STREAM, timeout=CALL_TIMEOUT)
    assert last_position() > before, "the delete is a record in the log"
    raises(NotFound, lambda: get(s), "read after delete")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), NO_STREAM, "version after delete")
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        ({"$tb": I64_MAX}, 1),
        "metadata after delete",
    )
    # Repeatable, with NO_STREAM and ANY.
    client.delete_stream(s, current_version=NO_STREAM, timeout=CALL_TIMEOUT)
    client.delete_stream(s, current_version=ANY, timeout=CALL_TIMEOUT)
    raises(NotFound, lambda: get(s), "read after the repeated deletes")
    e = ev("First")
    p = append(s, NO_STREAM, e)
    check_events(get(s), [(e, s, 0, p)], "first event after the delete")
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT)[0],
        {"$tb": 0},
        "metadata after the revival",
    )

    # ANY, then a batch append with ANY.
    s2 = name("meta-only-del-any")
    client.set_stream_metadata(s2, metadata={"k": 2})
    client.delete_stream(s2, current_version=ANY, timeout=CALL_TIMEOUT)
    raises(NotFound, lambda: get(s2), "read after delete with ANY")
    evs = [ev("A"), ev("B")]
    p = append(s2, ANY, evs)
    check_events(get(s2), [(evs[0], s2, 0, None), (evs[1], s2, 1, p)], "after revival")


def scenario_delete_by_metadata():
    """Metadata with $tb = i64::MAX is a soft delete (as in KurrentDB): the stream reads as
    not found, and an append brings it back with its positions continuing."""
    s = name("tb-max")
    evs = [ev("T"), ev("T")]
    append(s, NO_STREAM, evs)
    md = {"$tb": I64_MAX, "why": "gdpr"}
    client.set_stream_metadata(s, metadata=md, current_version=NO_STREAM)
    raises(NotFound, lambda: get(s), "read after $tb = i64::MAX")
    raises(NotFound, lambda: get(s, backwards=True), "read backwards after $tb = i64::MAX")
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), NO_STREAM, "version after")
    eq(client.get_stream_metadata(s, timeout=CALL_TIMEOUT), (md, 0), "metadata as set")
    raises(
        StreamIsDeleted,
        lambda: append(s, EXISTS, [ev("T")]),
        "batch append with EXISTS to the deleted stream",
    )
    # A second such write keeps it deleted.
    client.set_stream_metadata(s, metadata=md, current_version=0)
    raises(NotFound, lambda: get(s), "read after the second $tb = i64::MAX")
    new = [ev("Back"), ev("Back")]
    p = append(s, NO_STREAM, new)
    check_events(get(s), [(new[0], s, 2, None), (new[1], s, 3, p)], "after revival")
    eq(
        client.get_stream_metadata(s, timeout=CALL_TIMEOUT),
        ({"$tb": 2, "why": "gdpr"}, 2),
        "metadata after revival",
    )
    eq(client.get_current_version(s, timeout=CALL_TIMEOUT), 3, "version after revival")


def scenario_batch_append_limits_and_empty():
    """BatchAppend: an event or a batch over the size limits is MaximumAppendSizeExceeded with
    the limit; an empty batch is a successful append of nothing when the expected version
    holds, and WrongCurrentVersion when it does not."""
    s = name("batch-limits")
    first = ev("Small")
    append(s, NO_STREAM, [first])
    end = last_position()
    cases = [
        ("one event over the event limit", [ev("Big", data=b"x" * (EVENT_BYTES_MAX + 1))],
         EVENT_BYTES_MAX),
        ("one event over the append limit", [ev("Big", data=b"x" * (APPEND_BYTES_MAX + 1))],
         APPEND_BYTES_MAX),
        ("events over the append limit together",
         [ev("Big", data=b"x" * (100 * 1024)) for _ in range(3)], APPEND_BYTES_MAX),
    ]
    for what, events, limit in cases:
        raises(
            MaximumAppendSizeExceededError,
            lambda: append(s, ANY, events),
            what,
            message=f"Max size is {limit}",
        )
    eq(last_position(), end, "nothing written by the refused batches")

    # Empty batches.
    missing = name("batch-empty")
    append(missing, NO_STREAM, [])
    append(missing, ANY, [])
    raises(NotFound, lambda: get(missing), "an empty batch creates nothing")
    append(s, 0, [])
    append(s, EXISTS, [])
    append(s, ANY, [])
    raises(
        WrongCurrentVersion,
        lambda: append(s, NO_STREAM, []),
        "empty batch with NO_STREAM on an existing stream",
        message="Stream position of last event is 0 not StreamState.NO_STREAM",
    )
    raises(
        WrongCurrentVersion,
        lambda: append(s, 3, []),
        "empty batch at a wrong position",
        message="Stream position of last event is 0 not 3",
    )
    raises(
        WrongCurrentVersion,
        lambda: append(missing, EXISTS, []),
        "empty batch with EXISTS on a missing stream",
        message=f"Stream {missing!r} does not exist",
    )
    eq(last_position(), end, "nothing written by the empty batches")
    check_events(get(s), [(first, s, 0, None)], "the stream is unchanged")


def scenario_list_subscriptions():
    """Persistent subscriptions on a stream with none: NOT_FOUND reads as an empty list."""
    eq(
        client.list_subscriptions_to_stream(name("any"), timeout=CALL_TIMEOUT),
        [],
        "list_subscriptions_to_stream",
    )


def next_events(sub, n, what):
    """The next n events of a persistent subscription (each has a retry count)."""
    got = []
    for event in sub:
        got.append(event)
        if len(got) == n:
            return got
    raise AssertionError(f"{what}: the subscription ended after {describe_all(got)}")


def wait_info(group, stream, check, what):
    """Polls the group's info until check(info) holds (checkpoints and parking are async)."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:
        info = client.get_subscription_info(group, stream, timeout=CALL_TIMEOUT)
        if check(info):
            return info
        assert time.monotonic() < deadline, f"{what}: never held; last info {info}"
        time.sleep(0.05)


def scenario_persistent_stream():
    """A persistent subscription on a stream: create (twice: AlreadyExists), read with ack,
    nack retry (retry count 1), unknown (= retry), skip and park, replay parked, info echoing the
    settings and counting parked events, update (drops the consumer, keeps the checkpoint),
    delete (NotFound after)."""
    s = name("ps-stream")
    written = [ev("Job") for _ in range(5)]
    client.append_to_stream(s, current_version=NO_STREAM, events=written)
    group = f"g-{RUN}"
    client.create_subscription_to_stream(
        group,
        s,
        consumer_strategy="RoundRobin",
        max_retry_count=4,
        min_checkpoint_count=1,
        max_checkpoint_count=1,
        checkpoint_after=0.1,
        read_batch_size=5,
        history_buffer_size=50,
        message_timeout=20.0,
        timeout=CALL_TIMEOUT,
    )
    raises(
        AlreadyExists,
        lambda: client.create_subscription_to_stream(group, s, timeout=CALL_TIMEOUT),
        "create twice",
    )
    info = client.get_subscription_info(group, s, timeout=CALL_TIMEOUT)
    eq(info.group_name, group, "group_name")
    eq(info.event_source, s, "event_source")
    eq(info.consumer_strategy, "RoundRobin", "consumer_strategy")
    eq(info.max_retry_count, 4, "max_retry_count")
    eq(info.read_batch_size, 5, "read_batch_size")
    eq(info.history_buffer_size, 50, "history_buffer_size")
    eq(info.message_timeout, 20.0, "message_timeout")
    eq(info.start_from, "0", "start_from")
    eq(info.last_known_event_position, "4", "last_known_event_position")

    sub = client.read_subscription_to_stream(group, s, max_ack_delay=0.01, timeout=SUB_TIMEOUT)
    got = next_events(sub, 5, "history")
    eq([e.id for e in got], [w.id for w in written], "ids in order")
    eq([e.data for e in got], [w.data for w in written], "data")
    eq([e.stream_position for e in got], list(range(5)), "revisions")
    eq([e.retry_count for e in got], [0] * 5, "first deliveries")
    sub.ack(got[0])
    sub.ack(got[1])
    sub.nack(got[2], action="retry")
    sub.nack(got[3], action="skip")
    sub.nack(got[4], action="park")
    again = next_events(sub, 1, "retried")[0]
    eq((again.id, again.retry_count), (got[2].id, 1), "a retried event and its retry count")
    sub.nack(again, action="unknown")
    again = next_events(sub, 1, "retried again")[0]
    eq((again.id, again.retry_count), (got[2].id, 2), "unknown is a retry")
    sub.ack(again)
    info = wait_info(group, s, lambda i: i.parked_message_count == 1, "one parked event")
    client.replay_parked_events(group, s, timeout=CALL_TIMEOUT)
    replayed = next_events(sub, 1, "replayed")[0]
    eq(replayed.id, got[4].id, "the parked event comes back")
    sub.ack(replayed)
    info = wait_info(
        group, s, lambda i: i.last_checkpointed_event_position == "4", "checkpoint at 4"
    )

    # Update: the consumer is dropped; a new one resumes after the checkpoint.
    client.update_subscription_to_stream(group, s, max_retry_count=6, timeout=CALL_TIMEOUT)
    try:
        for e in sub:
            raise AssertionError(f"an event after the update: {describe(e)}")
    except AssertionError:
        raise
    except Exception:
        pass  # dropped, as KurrentDB drops consumers on update
    eq(
        client.get_subscription_info(group, s, timeout=CALL_TIMEOUT).max_retry_count,
        6,
        "updated setting",
    )
    more = ev("Job")
    client.append_to_stream(s, current_version=4, events=[more])
    sub = client.read_subscription_to_stream(group, s, timeout=SUB_TIMEOUT)
    first = next_events(sub, 1, "after update")[0]
    eq(first.id, more.id, "resumes strictly after the checkpoint, not from 0")
    sub.ack(first)
    sub.stop()

    listed = client.list_subscriptions_to_stream(s, timeout=CALL_TIMEOUT)
    eq([i.group_name for i in listed], [group], "list for the stream")
    assert group in [i.group_name for i in client.list_subscriptions(timeout=CALL_TIMEOUT)]
    client.delete_subscription(group, s, timeout=CALL_TIMEOUT)
    raises(
        NotFound,
        lambda: client.get_subscription_info(group, s, timeout=CALL_TIMEOUT),
        "info after delete",
    )
    raises(
        NotFound,
        lambda: client.delete_subscription(group, s, timeout=CALL_TIMEOUT),
        "delete twice",
    )


def scenario_persistent_timeouts():
    """Message timeout with event buffer size 1 (redelivered with retry counts 1..3, then
    parked at max retry count 3) and 10 (every unacked event comes back once)."""
    s = name("ps-slow")
    written = [ev("Slow") for _ in range(2)]
    client.append_to_stream(s, current_version=NO_STREAM, events=written)
    group = f"slow-{RUN}"
    client.create_subscription_to_stream(
        group, s, message_timeout=0.3, max_retry_count=3, timeout=CALL_TIMEOUT
    )
    sub = client.read_subscription_to_stream(
        group, s, event_buffer_size=1, max_ack_delay=0.01, timeout=SUB_TIMEOUT
    )
    tries = next_events(sub, 4, "redeliveries")
    eq([e.id for e in tries], [written[0].id] * 4, "the same event each time")
    eq([e.retry_count for e in tries], [0, 1, 2, 3], "retry counts")
    after = next_events(sub, 1, "after parking")[0]
    eq((after.id, after.retry_count), (written[1].id, 0), "the next event once parked")
    sub.ack(after)
    wait_info(group, s, lambda i: i.parked_message_count == 1, "parked at max retries")
    sub.stop()

    s = name("ps-slow10")
    written = [ev("Slow") for _ in range(10)]
    client.append_to_stream(s, current_version=NO_STREAM, events=written)
    client.create_subscription_to_stream(
        group, s, message_timeout=0.3, max_retry_count=3, timeout=CALL_TIMEOUT
    )
    sub = client.read_subscription_to_stream(
        group, s, event_buffer_size=10, max_ack_delay=0.01, timeout=SUB_TIMEOUT
    )
    got = next_events(sub, 10, "ten at once")
    eq([e.id for e in got], [w.id for w in written], "all ten")
    for e in got[::2]:
        sub.ack(e)
    back = next_events(sub, 5, "the unacked ones")
    eq(sorted(str(e.id) for e in back), sorted(str(e.id) for e in got[1::2]), "redelivered")
    eq({e.retry_count for e in back}, {1}, "once each")
    for e in back:
        sub.ack(e)
    sub.stop()


def scenario_persistent_all():
    """A persistent subscription on $all: esdbclient's default filter (a regex excluding
    system events), a stream-name include filter, the maximum subscriber count, strategies by
    name (PinnedByCorrelation; an unknown one is refused)."""
    position = last_position()
    tag = name("ps-all")
    written = [ev("AllThing") for _ in range(3)]
    client.append_to_stream(tag + "-a", current_version=NO_STREAM, events=written[:2])
    client.append_to_stream(tag + "-b", current_version=NO_STREAM, events=written[2:])
    client.set_stream_metadata(tag + "-a", metadata={"k": 1}, current_version=ANY)
    group = f"all-{RUN}"
    client.create_subscription_to_all(
        group,
        commit_position=position + 1,
        max_subscriber_count=1,
        consumer_strategy="PinnedByCorrelation",
        timeout=CALL_TIMEOUT,
    )
    raises(
        AlreadyExists,
        lambda: client.create_subscription_to_all(group, timeout=CALL_TIMEOUT),
        "create on $all twice",
    )
    info = client.get_subscription_info(group, timeout=CALL_TIMEOUT)
    eq(info.event_source, "$all", "event_source")
    eq(info.consumer_strategy, "PinnedByCorrelation", "strategy by name")
    eq(info.start_from, f"C:{position + 1}/P:{position + 1}", "start_from")
    sub = client.read_subscription_to_all(group, max_ack_delay=0.01, timeout=SUB_TIMEOUT)
    got = next_events(sub, 3, "$all history")
    # The default filter hides $metadata (a system event type).
    eq([e.id for e in got], [w.id for w in written], "user events only, in log order")
    for e in got:
        sub.ack(e)
    raises(
        MaximumSubscriptionsReached,
        lambda: next_events(
            client.read_subscription_to_all(group, timeout=SUB_TIMEOUT), 1, "second"
        ),
        "a second consumer over the maximum",
    )
    sub.stop()
    client.delete_subscription(group, timeout=CALL_TIMEOUT)

    group = f"all-inc-{RUN}"
    client.create_subscription_to_all(
        group,
        filter_include=[tag + "-b"],
        filter_by_stream_name=True,
        timeout=CALL_TIMEOUT,
    )
    sub = client.read_subscription_to_all(group, max_ack_delay=0.01, timeout=SUB_TIMEOUT)
    got = next_events(sub, 1, "included stream")
    eq(got[0].id, written[2].id, "only the included stream")
    sub.ack(got[0])
    sub.stop()
    client.delete_subscription(group, timeout=CALL_TIMEOUT)

    raises(
        Exception,
        lambda: client.create_subscription_to_all(
            f"bad-{RUN}", consumer_strategy="Nope", timeout=CALL_TIMEOUT
        ),
        "an unknown strategy",
    )


SCENARIOS = [
    scenario_append_expected_versions,
    scenario_idempotent_retry,
    scenario_get_stream,
    scenario_read_all,
    scenario_paging_and_concurrency,
    scenario_unicode_names,
    scenario_not_found,
    scenario_subscribe_to_stream,
    scenario_subscribe_to_all,
    scenario_checkpoints,
    scenario_stream_metadata,
    scenario_delete_stream,
    scenario_tombstone_stream,
    scenario_delete_never_existing,
    scenario_delete_metadata_only,
    scenario_delete_by_metadata,
    scenario_batch_append_limits_and_empty,
    scenario_list_subscriptions,
    scenario_persistent_stream,
    scenario_persistent_timeouts,
    scenario_persistent_all,
]


def main(argv):
    global client
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    uri = argv[1]
    wanted = set(argv[2:])
    known = {f.__name__.removeprefix("scenario_") for f in SCENARIOS}
    unknown = wanted - known
    if unknown:
        print(f"unknown scenarios {sorted(unknown)}; known: {sorted(known)}", file=sys.stderr)
        return 2
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)

    version = "unknown"
    try:
        from importlib.metadata import version as dist_version

        version = dist_version("esdbclient")
    except Exception:  # noqa: BLE001
        pass
    print(f"esdbclient {version} against {uri} (run tag {RUN})", flush=True)

    client = EventStoreDBClient(uri=uri)
    total = time.monotonic()
    try:
        for scenario in SCENARIOS:
            short = scenario.__name__.removeprefix("scenario_")
            if wanted and short not in wanted:
                continue
            t = time.monotonic()
            try:
                scenario()
            except Exception as e:  # noqa: BLE001 - reported, then exit 1
                ms = (time.monotonic() - t) * 1000
                print(f"FAIL {short} ({ms:.0f} ms): {type(e).__name__}: {e}", flush=True)
                traceback.print_exc(file=sys.stdout)
                sys.stdout.flush()
                return 1
            ms = (time.monotonic() - t) * 1000
            print(f"ok   {short} ({ms:.0f} ms)", flush=True)
    finally:
        client.close()
    print(f"all scenarios passed in {time.monotonic() - total:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
