"""How the server takes in unary requests, pinned at the HTTP/2 frame level.

A raw client (:mod:`tests.h2wire`) writes frames as bytes, in any split and order, and logs
every frame the server sends back. Each case runs on the lean path (``etcdlite.serve``,
requests counted in ``server.fast_requests``) and, where the two can be compared, on
grpclib's own path (``fast_path=False``): a client must not be able to tell them apart.
Where they differ today (the lean path's connections have a frame guard and answer protocol
errors with GOAWAY; grpclib's close the socket), each path's answer is pinned as it is.

The stores share a cluster id, so replies are byte-equal across paths and connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import betterproto2
import pytest

import etcdlite
from etcdlite import Store
from etcdlite.server import EtcdServer
from etcdlite.wire.pb import etcdserverpb as pb

from .h2wire import (
    CANCEL,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADERS,
    PADDED,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    STREAM_CLOSED,
    H2Wire,
    Received,
    data_frames,
    frame,
    grpc_message,
    rst_stream,
    settings_frame,
    split_messages,
    window_update,
)

pytestmark = pytest.mark.timeout(20)

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
TXN = "/etcdserverpb.KV/Txn"
DELETE = "/etcdserverpb.KV/DeleteRange"
GRANT = "/etcdserverpb.Lease/LeaseGrant"

#: Both request paths: the lean one, grpclib's own.
PATHS = [pytest.param(True, id="lean"), pytest.param(False, id="grpclib")]

#: The reply headers and trailers of an answered unary request, on both paths.
OK_BLOCKS = [{":status": "200", "content-type": "application/grpc+proto"}, {"grpc-status": "0"}]


@asynccontextmanager
async def serving(
    lean: bool, data_dir: Path | None = None
) -> AsyncIterator[tuple[Store, EtcdServer]]:
    """A store and a server on a free port; the store is resumed before it closes."""
    async with Store(cluster_id=1, data_dir=data_dir) as store:
        try:
            async with etcdlite.serve(store, port=0, fast_path=lean) as server:
                if lean and not server.fast_path:
                    pytest.skip("the lean path is off (ETCDLITE_FAST_PATH=0)")
                yield store, server
        finally:
            store.faults.resume()


@asynccontextmanager
async def wire(port: int, **options: Any) -> AsyncIterator[H2Wire]:
    w = await H2Wire.connect(port, **options)
    try:
        yield w
    finally:
        await w.close()


async def on_both(scenario: Callable[[bool], Awaitable[Any]]) -> Any:
    """Run ``scenario`` on the lean path and on grpclib's; both must see the same."""
    lean = await scenario(True)
    assert lean == await scenario(False)
    return lean


def decoded(received: Received, reply: type[betterproto2.Message]) -> list[Any]:
    return [reply.parse(m) for m in split_messages(bytes(received.data))]


def answered_ok(received: Received) -> bool:
    """Reply headers, one DATA frame, trailers with grpc-status 0, and nothing else."""
    return (
        received.blocks == OK_BLOCKS
        and received.data_frames == 1
        and received.ended
        and received.reset is None
    )


def frames_of(w: H2Wire, sid: int) -> list[tuple[int, int]]:
    """The (type, flags) of every frame the server sent on stream ``sid``."""
    return [(kind, flags) for kind, flags, s, _ in w.frames if s == sid]


def server_side(server: EtcdServer, w: H2Wire) -> Any:
    """The server's protocol object for ``w``'s connection."""
    ours = w.writer.get_extra_info("sockname")
    for grpc_server in server.grpc_servers:
        for protocol in list(grpc_server.protocols):
            transport = getattr(protocol.connection, "_transport", None)  # None once closed
            if transport is not None and transport.get_extra_info("peername") == ours:
                return protocol
    raise AssertionError("no such connection")


def lean_requests(server: EtcdServer, w: H2Wire) -> int:
    """``fast_requests`` of the server's side of ``w``'s connection alone."""
    return int(getattr(server_side(server, w).handler, "fast_requests", 0))


class ServerReads:
    """Counts the bytes the server's side of a connection has read, so a test can send
    the next bytes only once the server has taken in the ones before (client and server
    share the test's event loop: two writes in a row would reach it as one read)."""

    def __init__(self, protocol: Any) -> None:
        self.reads: list[int] = []
        self._changed = asyncio.Event()
        received = protocol.data_received

        def data_received(data: bytes) -> None:
            self.reads.append(len(data))
            self._changed.set()
            received(data)

        protocol.data_received = data_received  # the transport looks it up per read

    async def until(self, total: int) -> None:
        async with asyncio.timeout(5):
            while sum(self.reads) < total:
                self._changed.clear()
                await self._changed.wait()


#: Each scenario cold (as written) and warm: the same header lists sent first (see
#: :func:`warm_up`), so that the lean path takes the scenario's requests past h2.
WARM = [pytest.param(False, id="cold"), pytest.param(True, id="warm")]

#: A request's header list: its path and :meth:`H2Wire.headers` options (``extra``).
Headers = tuple[str, dict[str, Any]]


async def warm_up(w: H2Wire, *lists: Headers, warm: bool = True, sid: int = 1) -> int:
    """If ``warm``: two rounds of one request per header list in ``lists``, each answered
    before the next; the next stream id. The message is empty (every field its default:
    a Put or DeleteRange is refused for its empty key, a Txn is empty), so the store's
    revision does not move. The first round puts the lists' fields in the server's HPACK
    table (h2's path); in the second every block is references only, left the table as it
    was, and the lean handler accepts it: the intake has learned it, and takes the next
    request with the same header list if its HEADERS and DATA arrive in one read."""
    if not warm:
        return sid
    for _ in range(2):
        for path, options in lists:
            await w.send(w.request(sid, path, b"", **options))
            (reply,) = await w.answered([sid])
            assert reply.ended and reply.reset is None, reply
            sid += 2
    return sid


def taken(server: EtcdServer) -> int:
    """Requests taken whole past h2 on the server's live connections."""
    return server.taken_requests


def goaways(w: H2Wire) -> list[tuple[int, int]]:
    """(last stream id, error code) of each GOAWAY the server sent."""
    return [
        (int.from_bytes(p[:4], "big"), int.from_bytes(p[4:8], "big"))
        for kind, _, _, p in w.frames
        if kind == GOAWAY
    ]


# --- 1. many requests in one write, and the same bytes cut anywhere -----------------------


MIXED: list[tuple[str, betterproto2.Message, type[betterproto2.Message]]] = [
    (PUT, pb.PutRequest(key=b"a", value=b"1"), pb.PutResponse),
    (PUT, pb.PutRequest(key=b"b", value=b"2"), pb.PutResponse),
    (RANGE, pb.RangeRequest(key=b"a", range_end=b"c"), pb.RangeResponse),
    (
        TXN,
        pb.TxnRequest(
            compare=[
                pb.Compare(
                    key=b"a",
                    target=pb.CompareCompareTarget.VALUE,
                    result=pb.CompareCompareResult.EQUAL,
                    value=b"1",
                )
            ],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=b"c", value=b"3"))],
        ),
        pb.TxnResponse,
    ),
    (DELETE, pb.DeleteRangeRequest(key=b"b", prev_kv=True), pb.DeleteRangeResponse),
    (GRANT, pb.LeaseGrantRequest(ttl=60, id=7), pb.LeaseGrantResponse),
    (RANGE, pb.RangeRequest(key=b"a", range_end=b"d"), pb.RangeResponse),
]


async def in_one_read(server: EtcdServer, w: H2Wire, data: bytes) -> None:
    """Send ``data`` so that the server reads it in one read, and check it did."""
    await w.ping()  # what the client sent so far (its SETTINGS ACK too) is read
    reads = ServerReads(server_side(server, w))
    await w.send(data)
    await reads.until(len(data))
    assert reads.reads == [len(data)]


@pytest.mark.parametrize("warm", WARM)
async def test_many_requests_in_one_write_are_each_answered_in_order(warm: bool) -> None:
    """Put, Put, Range, Txn, DeleteRange, LeaseGrant, Range on seven streams in one read:
    each gets reply headers, one DATA frame and trailers with grpc-status 0, run in stream
    order. Warm: Put, Range and Txn were warmed, DeleteRange and LeaseGrant not: the first
    four are taken; the DeleteRange's and LeaseGrant's blocks add to the HPACK table, so
    the last Range's block is a new one (h2's path)."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (_, server), wire(server.port) as w:
            first = await warm_up(w, (PUT, {}), (RANGE, {}), (TXN, {}), warm=warm)
            sids = [first + 2 * i for i in range(len(MIXED))]
            await in_one_read(
                server,
                w,
                b"".join(w.request(s, p, m) for s, (p, m, _) in zip(sids, MIXED, strict=True)),
            )
            replies = await w.answered(sids)
            assert all(answered_ok(r) for r in replies), replies
            assert [frames_of(w, s) for s in sids] == [
                [(HEADERS, END_HEADERS), (DATA, 0), (HEADERS, END_HEADERS | END_STREAM)]
            ] * len(sids)
            put_a, put_b, rng, txn, delete, grant, final = (
                decoded(r, t)[0] for r, (_, _, t) in zip(replies, MIXED, strict=True)
            )
            assert [put_a.header.revision, put_b.header.revision] == [2, 3]
            assert [(kv.key, kv.value) for kv in rng.kvs] == [(b"a", b"1"), (b"b", b"2")]
            assert txn.succeeded and txn.header.revision == 4
            assert delete.deleted == 1 and [kv.value for kv in delete.prev_kvs] == [b"2"]
            assert (grant.id, grant.ttl) == (7, 60)
            assert [(kv.key, kv.value) for kv in final.kvs] == [(b"a", b"1"), (b"c", b"3")]
            assert server.fast_requests == (len(MIXED) + first // 2 if lean else 0)
            assert taken(server) == (4 if lean and warm else 0)
            return [r.outcome() for r in replies]

    await on_both(scenario)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("warm", WARM)
async def test_a_burst_starts_a_few_requests_per_turn_and_answers_in_groups(warm: bool) -> None:
    """16 Puts in one read: they start 4 per turn of the server's loop (in stream order),
    and the first ones' replies leave in a socket write before the last ones start, so the
    client can turn them around while the server goes on; all are answered."""
    async with serving(True) as (_, server), wire(server.port) as w:
        first = await warm_up(w, (PUT, {}), warm=warm)
        transport = server_side(server, w).connection._transport.transport
        writes: list[int] = []  # the server's socket writes
        write = transport.write

        def counted(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        transport.write = counted
        started: list[int] = []  # the server's socket writes so far, as each request starts

        async def interceptor(path: str) -> None:
            started.append(len(writes))

        server.interceptor = interceptor
        sids = [first + 2 * i for i in range(16)]
        burst = b"".join(w.request(s, PUT, pb.PutRequest(key=b"b/%d" % s)) for s in sids)
        await in_one_read(server, w, burst)
        replies = await w.answered(sids)
        assert all(answered_ok(r) for r in replies)
        revisions = [decoded(r, pb.PutResponse)[0].header.revision for r in replies]
        assert revisions == sorted(revisions)  # run in stream order
        assert len(started) == 16
        assert started[:4] == [started[0]] * 4  # one turn
        assert started[-1] > started[0]  # replies left before the last ones started


@pytest.mark.parametrize("warm", WARM)
async def test_two_requests_cut_at_every_byte_are_answered_alike(warm: bool) -> None:
    """The bytes of a Put and a Range (HEADERS+DATA each) in two reads of the server, cut
    at every offset, each on a new connection: every cut gets the same frames, on both
    paths. Warm (each connection warmed with both header lists): both requests are taken
    whatever the cut; a request not whole in the first read (its HEADERS and DATA, or
    part of them) is held back and taken with the second."""

    async def scenario(lean: bool) -> tuple[object, ...]:
        async with serving(lean) as (store, server):
            await store.put(b"r", b"seed")
            seen: set[tuple[object, ...]] = set()
            cut, size = 1, 2
            while cut < size:
                async with wire(server.port) as w:
                    s = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
                    sequence = w.request(s, PUT, pb.PutRequest(key=b"p", value=b"v"))
                    whole = len(sequence)
                    sequence += w.request(s + 2, RANGE, pb.RangeRequest(key=b"r"))
                    size = len(sequence)
                    await w.ping()  # what the client sent so far (its SETTINGS ACK too) is read
                    side = server_side(server, w)
                    reads = ServerReads(side)
                    await w.send(sequence[:cut])
                    await reads.until(cut)
                    if lean and warm:  # the Put is taken once it is whole, not before
                        assert side.intake.taken == (1 if cut >= whole else 0), cut
                    await w.send(sequence[cut:])
                    await reads.until(size)
                    assert reads.reads == [cut, size - cut]
                    put, rng = await w.answered([s, s + 2])
                    assert answered_ok(put) and answered_ok(rng), (cut, put, rng)
                    assert lean_requests(server, w) == (2 + s // 2 if lean else 0)
                    if lean:
                        assert side.intake.taken == (2 if warm else 0), cut
                    # each cut's Put is the next revision: the connections ran in turn
                    assert decoded(put, pb.PutResponse)[0].header.revision == 2 + cut
                    kvs = decoded(rng, pb.RangeResponse)[0].kvs
                    seen.add(
                        (
                            tuple(frames_of(w, s)),
                            tuple(frames_of(w, s + 2)),
                            tuple((kv.key, kv.value) for kv in kvs),
                        )
                    )
                cut += 1
            assert len(seen) == 1, seen  # the same frames, whatever the cut
            return size, *seen

    await on_both(scenario)


# --- 2. one request in unusual frames ------------------------------------------------------


async def test_a_request_in_unusual_frames_is_answered_alike() -> None:
    """DATA after the HEADERS were taken in, DATA in two frames (with a pause between),
    the message then an empty END_STREAM DATA, padded DATA, HEADERS with the PRIORITY flag,
    padded HEADERS, HEADERS+CONTINUATION: each a Put answered as any other."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (store, server), wire(server.port) as w:

            def body(key: bytes) -> bytes:
                return grpc_message(pb.PutRequest(key=key, value=b"x" * 100))

            sid = 1
            # HEADERS, then DATA once the server has taken the HEADERS in
            await w.send(w.headers(sid, PUT))
            await w.ping()
            await w.send(data_frames(sid, body(b"later")))
            # DATA in two frames, in one write and with a pause between
            await w.answered([sid])  # one at a time: revisions in order
            sid += 2
            msg = body(b"two")
            await w.send(
                w.headers(sid, PUT)
                + frame(DATA, msg[:7], 0, sid)
                + frame(DATA, msg[7:], END_STREAM, sid)
            )
            await w.answered([sid])
            sid += 2
            msg = body(b"two-later")
            await w.send(w.headers(sid, PUT) + frame(DATA, msg[:7], 0, sid))
            await w.ping()
            await w.send(frame(DATA, msg[7:], END_STREAM, sid))
            # the whole message, then an empty DATA frame with END_STREAM (at once, later)
            await w.answered([sid])
            sid += 2
            await w.send(
                w.headers(sid, PUT)
                + frame(DATA, body(b"empty-end"), 0, sid)
                + frame(DATA, b"", END_STREAM, sid)
            )
            await w.answered([sid])
            sid += 2
            await w.send(w.headers(sid, PUT) + frame(DATA, body(b"empty-later"), 0, sid))
            await w.ping()
            await w.send(frame(DATA, b"", END_STREAM, sid))
            # padded DATA
            await w.answered([sid])
            sid += 2
            msg = body(b"padded")
            await w.send(
                w.headers(sid, PUT)
                + frame(DATA, bytes([40]) + msg + b"\x00" * 40, END_STREAM | PADDED, sid)
            )
            # HEADERS with PRIORITY fields (depends on 0, weight 200), padded HEADERS
            await w.answered([sid])
            sid += 2
            await w.send(
                w.headers(sid, PUT, flags=PRIORITY_FLAG, prefix=b"\x00\x00\x00\x00\xc8")
                + data_frames(sid, body(b"priority"))
            )
            await w.answered([sid])
            sid += 2
            await w.send(w.headers(sid, PUT, padding=17) + data_frames(sid, body(b"padhead")))
            # the header block cut in two: HEADERS + CONTINUATION
            await w.answered([sid])
            sid += 2
            await w.send(w.headers(sid, PUT, split=5) + data_frames(sid, body(b"continued")))
            sids = list(range(1, sid + 1, 2))
            replies = await w.answered(sids)
            assert all(answered_ok(r) for r in replies), replies
            revisions = [decoded(r, pb.PutResponse)[0].header.revision for r in replies]
            assert revisions == list(range(2, 2 + len(sids)))
            for key in (b"later", b"two", b"two-later", b"empty-end", b"empty-later"):
                kv = await store.get(key)
                assert kv is not None and kv.value == b"x" * 100
            for key in (b"padded", b"priority", b"padhead", b"continued"):
                assert await store.get(key) is not None
            assert server.fast_requests == (len(sids) if lean else 0)
            return [r.outcome() for r in replies]

    await on_both(scenario)


# --- 3. grpc-timeout -------------------------------------------------------------------------


@pytest.mark.parametrize("warm", WARM)
async def test_a_deadline_is_kept_and_one_that_passes_is_deadline_exceeded(warm: bool) -> None:
    """In time: answered. Past its deadline (the store paused): a trailers-only answer,
    grpc-status 4 (DEADLINE_EXCEEDED) and no grpc-message, no RST_STREAM (the client's
    side is closed already); the write never happens, even once the store resumes. Warm:
    the three are taken (the deadline is the learned grpc-timeout, counted from each
    request's arrival)."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            timeout = [("grpc-timeout", "5S")]
            late = [("grpc-timeout", "50m")]
            lists: tuple[Headers, ...] = (
                (PUT, {"extra": timeout}),
                (PUT, {"extra": late}),
                (RANGE, {}),
            )
            s = await warm_up(w, *lists, warm=warm)
            await w.send(w.request(s, PUT, pb.PutRequest(key=b"a"), extra=timeout))
            (ok,) = await w.answered([s])
            assert answered_ok(ok)
            store.faults.pause()
            await w.send(w.request(s + 2, PUT, pb.PutRequest(key=b"b"), extra=late))
            (expired,) = await w.answered([s + 2])
            assert expired.blocks == [{**OK_BLOCKS[0], "grpc-status": "4"}]
            assert frames_of(w, s + 2) == [(HEADERS, END_HEADERS | END_STREAM)]
            assert not in_flight(server)
            store.faults.resume()
            await w.send(w.request(s + 4, RANGE, pb.RangeRequest(key=b"b")))
            (after,) = await w.answered([s + 4])
            assert decoded(after, pb.RangeResponse)[0].count == 0  # the expired put never ran
            assert server.fast_requests == (3 + s // 2 if lean else 0)
            assert taken(server) == (3 if lean and warm else 0)
            return [ok.outcome(), expired.outcome(), after.outcome()]

    await on_both(scenario)


# --- 4. a request cancelled by the client ------------------------------------------------


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("when", ["same-write", "same-write-paused", "after-ping-paused"])
async def test_a_reset_request_gets_nothing_and_never_runs(when: str, warm: bool) -> None:
    """RST_STREAM(CANCEL) right after a Put: in the same write (the store running, or
    paused), or once the server has the request and it waits on the paused store. Nothing
    comes back on that stream, it is released, and the Put never runs: not even in the
    same-write case with the store running (the request starts only once every frame of
    the read was taken in, and the reset came with it), nor once the store resumes. The
    connection serves the next requests. Warm: the three requests are taken, the reset
    one too."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            s = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
            if when != "same-write":
                store.faults.pause()
            request = w.request(s, PUT, pb.PutRequest(key=b"cancelled", value=b"v"))
            if when == "after-ping-paused":
                await w.send(request)
                await w.ping()
                assert in_flight(server) == 1  # waiting on the paused store
                await w.send(rst_stream(s, CANCEL))
            else:
                await in_one_read(server, w, request + rst_stream(s, CANCEL))
            await w.send(
                w.request(s + 2, PUT, pb.PutRequest(key=b"next", value=b"v"))
                + w.request(s + 4, RANGE, pb.RangeRequest(key=b"cancelled"))
            )
            await w.ping()
            store.faults.resume()
            put, rng = await w.answered([s + 2, s + 4])
            assert answered_ok(put) and answered_ok(rng)
            assert decoded(rng, pb.RangeResponse)[0].count == 0
            assert frames_of(w, s) == []
            assert await store.get(b"cancelled") is None
            assert not in_flight(server)
            if lean:
                assert server.fast_requests == 3 + s // 2
                assert _handler(server).closed_streams == 3 + s // 2
            assert taken(server) == (3 if lean and warm else 0)
            return [put.outcome(), rng.outcome()]

    await on_both(scenario)


def in_flight(server: EtcdServer) -> int:
    """Requests the server has not finished: grpclib's path runs each in a task, the lean
    path waits without one."""
    return len(server.request_tasks()) + server.waiting_requests()


def _handler(server: EtcdServer) -> Any:
    """The request handler of the server's one connection."""
    (handler,) = [p.handler for s in server.grpc_servers for p in list(s.protocols)]
    return handler


# --- 5. stream ids and frames on closed streams -----------------------------------------


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("lean", PATHS)
@pytest.mark.parametrize("case", ["lower", "reuse", "reuse-after-another"])
async def test_a_stream_id_used_before_ends_the_connection(
    lean: bool, case: str, warm: bool
) -> None:
    """A HEADERS on a stream id below one already used: connection error PROTOCOL_ERROR
    (h2's StreamIDTooLowError). The id of a finished stream again: STREAM_CLOSED (h2 still
    holds the closed stream, also after another stream opened since). The lean path's
    connection answers with GOAWAY (h2's own, then one with the debug text, same last
    stream id and code) and closes; grpclib's closes without a GOAWAY. Warm: the first
    requests are taken; the offending HEADERS, a copy of a learned block, is not (h2
    refuses its stream id as before)."""
    async with serving(lean) as (store, server), wire(server.port) as w:
        s = await warm_up(w, (PUT, {}), warm=warm)
        first = s + {"lower": 4, "reuse": 0, "reuse-after-another": 0}[case]
        await w.send(w.request(first, PUT, pb.PutRequest(key=b"a")))
        await w.answered([first])
        highest = first
        if case == "reuse-after-another":
            await w.send(w.request(s + 2, PUT, pb.PutRequest(key=b"a")))
            await w.answered([s + 2])
            highest = s + 2
        took = taken(server)
        assert took == ((2 if case == "reuse-after-another" else 1) if lean and warm else 0)
        again = s + 2 if case == "lower" else s
        await w.send(w.request(again, PUT, pb.PutRequest(key=b"b")))
        await w.closed()
        code = PROTOCOL_ERROR if case == "lower" else STREAM_CLOSED
        if lean:
            assert set(goaways(w)) == {(highest, code)}
            assert w.goaway is not None and w.goaway[2]  # the last one says why
        else:
            assert goaways(w) == []
        # nothing on the offending stream but the first request's reply, if it had one
        assert len(frames_of(w, again)) == (0 if case == "lower" else 3)
        assert await store.get(b"b") is None


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("when", ["same-write", "reply-pending", "after-reply"])
async def test_data_after_end_stream_resets_the_stream(when: str, warm: bool) -> None:
    """DATA on a stream after its END_STREAM: RST_STREAM(STREAM_CLOSED) on it, the
    connection goes on. If it came before the reply (in the request's own write, the store
    running; or while the store is paused) the reset also ends the request: no reply on
    that stream, its Put never runs, even after the resume. Warm: the Put and the Range
    are taken."""
    paused = when == "reply-pending"
    replied = when == "after-reply"

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            s = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
            if paused:
                store.faults.pause()
            request = w.request(s, PUT, pb.PutRequest(key=b"a", value=b"1"))
            extra = data_frames(s, grpc_message(pb.PutRequest(key=b"x")))
            if when == "same-write":
                await in_one_read(server, w, request + extra)
            else:
                await w.send(request)
                if paused:
                    await w.ping()
                else:
                    await w.answered([s])
                await w.send(extra)
            await w.wait(lambda: w.stream(s).reset is not None)
            assert w.stream(s).reset == STREAM_CLOSED
            store.faults.resume()
            await w.send(w.request(s + 2, RANGE, pb.RangeRequest(key=b"a", range_end=b"z")))
            (rng,) = await w.answered([s + 2])
            assert answered_ok(rng) and w.goaway is None
            kvs = [(kv.key, kv.value) for kv in decoded(rng, pb.RangeResponse)[0].kvs]
            assert kvs == ([(b"a", b"1")] if replied else [])
            assert not in_flight(server)
            expected = [(RST_STREAM, 0)]
            if replied:
                expected = [
                    (HEADERS, END_HEADERS),
                    (DATA, 0),
                    (HEADERS, END_HEADERS | END_STREAM),
                    *expected,
                ]
            assert frames_of(w, s) == expected
            assert taken(server) == (2 if lean and warm else 0)
            return [frames_of(w, s), rng.outcome()]

    await on_both(scenario)


# --- 6. flow control of the reply ---------------------------------------------------------

BIG = b"v" * 200_000


async def _seed_range(store: Store) -> None:
    for i in range(250):
        await store.put(b"big/%03d" % i, bytes([i % 251]) * 4000)


@pytest.mark.parametrize("warm", WARM)
async def test_a_large_reply_to_a_client_with_tiny_windows_arrives_whole(warm: bool) -> None:
    """Stream windows of 100 bytes and the default connection window: a Put with prev_kv
    of a 200 KB value and a 1 MB Range arrive complete as the client's WINDOW_UPDATEs
    (stream and connection) come, each DATA frame within the window. Warm: both are
    taken."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (store, server):
            await store.put(b"big", BIG)
            await _seed_range(store)
            settings = {SETTINGS_INITIAL_WINDOW_SIZE: 100}
            async with wire(server.port, settings=settings, connection_window=DEFAULT_WINDOW) as w:
                w.auto_window = 2  # each DATA frame given back twice over: windows grow
                s = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
                await w.send(w.request(s, PUT, pb.PutRequest(key=b"big", value=b"w", prev_kv=True)))
                (put,) = await w.answered([s])
                range_request = pb.RangeRequest(key=b"big/", range_end=b"big0")
                await w.send(w.request(s + 2, RANGE, range_request))
                (rng,) = await w.answered([s + 2])
                assert put.blocks == OK_BLOCKS and rng.blocks == OK_BLOCKS
                (reply,) = decoded(put, pb.PutResponse)
                assert reply.prev_kv.value == BIG
                (ranged,) = decoded(rng, pb.RangeResponse)
                assert [kv.value for kv in ranged.kvs] == [
                    bytes([i % 251]) * 4000 for i in range(250)
                ]
                first = next(len(p) for k, _, i, p in w.frames if k == DATA and i == s)
                assert first <= 100  # the first frame fits the 100-byte window
                windows: dict[int, int] = {}  # each stream's window as the frames came
                for kind, _, sid, payload in w.frames:
                    if sid in (s, s + 2) and kind == DATA:
                        windows.setdefault(sid, 100)
                        windows[sid] -= len(payload)
                        assert windows[sid] >= 0, (sid, windows)
                        windows[sid] += 2 * len(payload)  # auto_window gives twice back
                assert server.fast_requests == (2 + s // 2 if lean else 0)
                assert taken(server) == (2 if lean and warm else 0)
                return [put.outcome(), rng.outcome()]

    await on_both(scenario)


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("how", ["window-update", "settings", "same-write"])
async def test_window_given_before_the_reply_starts_is_honoured(how: str, warm: bool) -> None:
    """A client with 100-byte stream windows asks for a 200 KB reply while the store is
    paused, then, before any reply, widens the windows: a stream WINDOW_UPDATE (and a
    connection one), or a SETTINGS INITIAL_WINDOW_SIZE of 1 MB (which moves the open
    stream's window too). After the resume the whole reply comes with no further
    WINDOW_UPDATE. "same-write": the stream and connection WINDOW_UPDATEs follow the
    request in its own write, the store running. Warm: the Put is taken (the stream's
    WINDOW_UPDATE counted by the intake, the SETTINGS change read from h2's)."""

    async def scenario(lean: bool) -> tuple[object, ...]:
        async with serving(lean) as (store, server):
            await store.put(b"big", BIG)
            settings = {SETTINGS_INITIAL_WINDOW_SIZE: 100}
            async with wire(server.port, settings=settings, connection_window=DEFAULT_WINDOW) as w:
                s = await warm_up(w, (PUT, {}), warm=warm)
                request = w.request(s, PUT, pb.PutRequest(key=b"big", value=b"w", prev_kv=True))
                expect_taken = 1 if lean and warm else 0
                if how == "same-write":
                    updates = window_update(s, 300_000) + window_update(0, 300_000)
                    await in_one_read(server, w, request + updates)
                    (put,) = await w.answered([s])
                    (reply,) = decoded(put, pb.PutResponse)
                    assert reply.prev_kv.value == BIG and put.blocks == OK_BLOCKS
                    assert server.fast_requests == (1 + s // 2 if lean else 0)
                    assert taken(server) == expect_taken
                    return put.outcome()
                store.faults.pause()
                await w.send(request)
                await w.ping()
                if how == "window-update":
                    await w.send(window_update(s, 300_000) + window_update(0, 300_000))
                else:
                    await w.send(
                        settings_frame({SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20})
                        + window_update(0, 300_000)
                    )
                await w.ping()
                assert frames_of(w, s) == []
                store.faults.resume()
                (put,) = await w.answered([s])
                (reply,) = decoded(put, pb.PutResponse)
                assert reply.prev_kv.value == BIG and put.blocks == OK_BLOCKS
                if how == "settings":
                    acks = [f for f in w.frames if f[0] == SETTINGS and f[1] == 1]
                    assert len(acks) == 2
                assert server.fast_requests == (1 + s // 2 if lean else 0)
                assert taken(server) == expect_taken
                # the whole reply came with no WINDOW_UPDATE after the request's
                assert w.frames[-1][:3] == (HEADERS, END_HEADERS | END_STREAM, s)
                return put.outcome()

    await on_both(scenario)


# --- 7. flow control of requests ------------------------------------------------------------


async def test_request_bytes_past_the_first_window_are_taken_as_the_server_gives_window() -> None:
    """25 Puts of 200 KB (5 MB, past the server's 4 MB connection window) sent as fast as
    the server's window allows, by a client that keeps its own receive windows at the
    default: the server's connection WINDOW_UPDATEs keep them flowing, all are answered."""

    async def scenario(lean: bool) -> list[object]:
        async with (
            serving(lean) as (_, server),
            wire(server.port, settings={}, connection_window=DEFAULT_WINDOW) as w,
        ):
            w.auto_window = 1
            granted = 4 << 20  # grpclib's connection window, opened with its SETTINGS
            await w.window_for(granted)
            sent = 0
            sids = [1 + 2 * i for i in range(25)]
            for i, sid in enumerate(sids):
                request = w.request(sid, PUT, pb.PutRequest(key=b"in/%02d" % i, value=BIG))
                size = len(grpc_message(pb.PutRequest(key=b"in/%02d" % i, value=BIG)))
                sent += size
                await w.window_for(sent)
                await w.send(request)
            replies = await w.answered(sids)
            assert all(answered_ok(r) for r in replies)
            assert sent > granted and w.send_window >= sent  # more window came as it was used
            # requests cut across reads may finish out of order: each is one revision
            revisions = [decoded(r, pb.PutResponse)[0].header.revision for r in replies]
            assert sorted(revisions) == list(range(2, 27))
            assert server.fast_requests == (25 if lean else 0)
            return [r.blocks for r in replies]

    await on_both(scenario)


@pytest.mark.parametrize("lean", PATHS)
@pytest.mark.parametrize("streams", [1, 3])
async def test_request_bytes_past_the_window_end_the_connection(lean: bool, streams: int) -> None:
    """A client that sends more DATA than the server's 4 MB connection window while the
    server has not read it (requests held by an interceptor before they read their message):
    one request of 4 MB + 1, or three complete ones of 1.4 MB. h2's FlowControlError: the
    lean path's connection sends GOAWAY FLOW_CONTROL_ERROR (last stream id: the highest
    opened) and closes; grpclib's closes without a GOAWAY. No request runs."""
    async with serving(lean) as (store, server):
        gate = asyncio.Event()

        async def hold(path: str) -> None:
            await gate.wait()

        server.interceptor = hold
        try:
            async with wire(server.port) as w:
                if streams == 1:
                    sids = [1]
                    chunk = w.headers(1, PUT) + data_frames(1, b"\x00" * ((4 << 20) + 1), end=False)
                else:
                    sids = [1, 3, 5]
                    body = grpc_message(pb.PutRequest(key=b"k", value=b"v" * 1_400_000))
                    chunk = b"".join(w.request(s, PUT, body[5:]) for s in sids)
                    assert len(body) * 3 > 4 << 20
                await w.send(chunk)
                await w.closed()
                if lean:
                    assert set(goaways(w)) == {(sids[-1], FLOW_CONTROL_ERROR)}
                else:
                    assert goaways(w) == []
                assert all(frames_of(w, s) == [] for s in sids)
        finally:
            gate.set()
        tasks = server.request_tasks()
        if tasks:
            async with asyncio.timeout(5):
                await asyncio.wait(tasks)
        assert await store.get(b"k") is None


async def test_a_request_over_the_size_limit_is_refused_alike() -> None:
    """A 1.6 MB Put (over etcd's 1.5 MiB --max-request-bytes): trailers-only
    INVALID_ARGUMENT "etcdserver: request is too large", no RST_STREAM (the client's side
    is closed); the connection goes on."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            await w.send(w.request(1, PUT, pb.PutRequest(key=b"k", value=b"v" * 1_600_000)))
            (refused,) = await w.answered([1])
            assert refused.blocks == [
                {
                    **OK_BLOCKS[0],
                    "grpc-status": "3",
                    "grpc-message": "etcdserver: request is too large",
                }
            ]
            assert frames_of(w, 1) == [(HEADERS, END_HEADERS | END_STREAM)]
            await w.send(w.request(3, PUT, pb.PutRequest(key=b"a")))
            (ok,) = await w.answered([3])
            assert answered_ok(ok)
            assert await store.get(b"k") is None
            return [refused.outcome(), ok.outcome()]

    await on_both(scenario)


# --- 8. concurrent streams -------------------------------------------------------------------


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("lean", PATHS)
async def test_streams_past_the_concurrency_limit(lean: bool, warm: bool) -> None:
    """The server advertises SETTINGS_MAX_CONCURRENT_STREAMS 100. 110 Puts in one write,
    the store paused. The lean path's guard lets 96 through (100 less STREAM_SLACK 4) and
    answers the other 14 (streams 193..219) with RST_STREAM(REFUSED_STREAM) at once, before
    any reply; their Puts never run, the 96 are answered after the resume and the
    connection takes new streams. grpclib's path: h2 refuses the 101st stream
    (TooManyStreamsError), the connection is closed without a frame: no reply, no GOAWAY,
    no Put runs. Warm: the 96 are taken, and count as open until answered."""
    async with serving(lean) as (store, server), wire(server.port) as w:
        assert w.server_settings[SETTINGS_MAX_CONCURRENT_STREAMS] == 100
        first = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
        warmed = len(w.frames)
        store.faults.pause()
        sids = [first + 2 * i for i in range(110)]
        requests = b"".join(w.request(s, PUT, pb.PutRequest(key=b"c/%d" % s)) for s in sids)
        await in_one_read(server, w, requests)
        if not lean:
            await w.closed()
            assert [f for f in w.frames[warmed:] if f[2]] == [] and w.goaway is None
            store.faults.resume()
            assert (await store.get(b"c/1")) is None
            return
        refused = sids[96:]
        await w.answered(refused)
        sent = [(f[0], f[2]) for f in w.frames[warmed:] if f[2]]
        assert sent == [(RST_STREAM, s) for s in refused]
        assert {w.streams[s].reset for s in refused} == {REFUSED_STREAM}
        assert taken(server) == (96 if warm else 0)
        store.faults.resume()
        replies = await w.answered(sids[:96])
        assert all(answered_ok(r) for r in replies)
        assert all([frames_of(w, s) == [(RST_STREAM, 0)] for s in refused])
        for s in refused:
            assert await store.get(b"c/%d" % s) is None
        last = sids[-1] + 2
        await w.send(w.request(last, RANGE, pb.RangeRequest(key=b"c/", range_end=b"c0")))
        (rng,) = await w.answered([last])
        assert decoded(rng, pb.RangeResponse)[0].count == 96
        assert server.fast_requests == 97 + first // 2
        assert taken(server) == (97 if warm else 0)
        assert w.goaway is None


@pytest.mark.parametrize("warm", WARM)
async def test_streams_pending_from_an_earlier_read_count_against_the_limit(warm: bool) -> None:
    """96 Puts in one read wait on the paused store (warm: taken); 14 more in a later read
    are each refused with RST_STREAM(REFUSED_STREAM) at once (the 96 still count as open),
    and never run. After the resume the 96 are answered and the bound holds again: a Range
    is answered."""
    async with serving(True) as (store, server), wire(server.port) as w:
        first = await warm_up(w, (PUT, {}), (RANGE, {}), warm=warm)
        warmed = len(w.frames)
        store.faults.pause()
        sids = [first + 2 * i for i in range(110)]
        requests = [w.request(s, PUT, pb.PutRequest(key=b"c/%d" % s)) for s in sids]
        await in_one_read(server, w, b"".join(requests[:96]))
        assert taken(server) == (96 if warm else 0)
        await in_one_read(server, w, b"".join(requests[96:]))
        refused = sids[96:]
        await w.answered(refused)
        sent = [(f[0], f[2]) for f in w.frames[warmed:] if f[2]]
        assert sent == [(RST_STREAM, s) for s in refused]
        assert {w.streams[s].reset for s in refused} == {REFUSED_STREAM}
        store.faults.resume()
        replies = await w.answered(sids[:96])
        assert all(answered_ok(r) for r in replies)
        for s in refused:
            assert await store.get(b"c/%d" % s) is None
        last = sids[-1] + 2
        await w.send(w.request(last, RANGE, pb.RangeRequest(key=b"c/", range_end=b"c0")))
        (rng,) = await w.answered([last])
        assert decoded(rng, pb.RangeResponse)[0].count == 96
        assert taken(server) == (97 if warm else 0)
        assert w.goaway is None


# --- 9. the client goes away with requests pending ---------------------------------------


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("lean", PATHS)
async def test_a_client_goaway_with_requests_pending(lean: bool, warm: bool) -> None:
    """Three Puts waiting on a paused store, then the client's GOAWAY. The lean path's
    guard keeps the GOAWAY from h2 (as grpc-go, the streams already open finish): after
    the resume all three are answered and written. grpclib's path closes the connection
    at once (h2's ConnectionTerminated): nothing is answered or written. Warm: the three
    are taken."""
    async with serving(lean) as (store, server), wire(server.port) as w:
        first = await warm_up(w, (PUT, {}), warm=warm)
        warmed = len(w.frames)
        store.faults.pause()
        sids = [first, first + 2, first + 4]
        await w.send(b"".join(w.request(s, PUT, pb.PutRequest(key=b"g/%d" % s)) for s in sids))
        await w.ping()
        tasks = server.request_tasks()
        assert in_flight(server) == 3
        assert taken(server) == (3 if lean and warm else 0)
        await w.send(frame(GOAWAY, (0).to_bytes(4, "big") + (0).to_bytes(4, "big")))
        if lean:
            await w.ping()
            store.faults.resume()
            replies = await w.answered(sids)
            assert all(answered_ok(r) for r in replies)
            assert w.goaway is None and not w.eof
            assert [await store.get(b"g/%d" % s) is not None for s in sids] == [True] * 3
        else:
            await w.closed()
            async with asyncio.timeout(5):
                await asyncio.wait(tasks)
            store.faults.resume()
            assert [f for f in w.frames[warmed:] if f[2]] == [] and w.goaway is None
            assert [await store.get(b"g/%d" % s) for s in sids] == [None] * 3
        assert not in_flight(server)


@pytest.mark.parametrize("warm", WARM)
@pytest.mark.parametrize("lean", PATHS)
async def test_a_closed_connection_releases_its_pending_requests(
    lean: bool, warm: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Three Puts waiting on a paused store, then the client closes the socket: their tasks
    end (cancelled), the lean path's handler counts the three streams released, nothing is
    logged as an error, the Puts never run, and the store serves a new connection. Warm:
    the three are taken."""
    async with serving(lean) as (store, server):
        async with wire(server.port) as w:
            first = await warm_up(w, (PUT, {}), warm=warm)
            store.faults.pause()
            sids = [first, first + 2, first + 4]
            await w.send(b"".join(w.request(s, PUT, pb.PutRequest(key=b"z/%d" % s)) for s in sids))
            await w.ping()
            handler = _handler(server)
            tasks = server.request_tasks()
            # grpclib's path: a task each; the lean path: waiting without a task
            assert len(tasks) + server.waiting_requests() == 3
            warmups = first // 2
            if lean:
                assert server.fast_requests == 3 + warmups
                assert handler.closed_streams == warmups
            assert taken(server) == (3 if lean and warm else 0)
        async with asyncio.timeout(5):
            if tasks:
                await asyncio.wait(tasks)
            await server.wait_connections(0)
        assert not server.request_tasks() and not server.waiting_requests()
        if lean:
            assert handler.closed_streams == 3 + warmups
        store.faults.resume()
        assert [await store.get(b"z/%d" % s) for s in sids] == [None] * 3
        async with wire(server.port) as again:
            await again.send(again.request(1, RANGE, pb.RangeRequest(key=b"z/", range_end=b"z0")))
            (rng,) = await again.answered([1])
            assert answered_ok(rng) and decoded(rng, pb.RangeResponse)[0].count == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- 10. durable writes ----------------------------------------------------------------------


@pytest.mark.parametrize("warm", WARM)
async def test_durable_puts_in_one_write_are_all_answered_in_revision_order(
    tmp_path: Path, warm: bool
) -> None:
    """16 Puts in one write to a Store with a data directory (each reply after its write is
    synced): all answered, revisions 2..17, one per stream in stream order. Warm: all 16
    are taken."""

    async def scenario(lean: bool) -> list[tuple[object, ...]]:
        data_dir = tmp_path / ("lean" if lean else "grpclib")
        async with serving(lean, data_dir) as (store, server), wire(server.port) as w:
            first = await warm_up(w, (PUT, {}), warm=warm)
            sids = [first + 2 * i for i in range(16)]
            requests = b"".join(w.request(s, PUT, pb.PutRequest(key=b"d/%02d" % s)) for s in sids)
            await in_one_read(server, w, requests)
            replies = await w.answered(sids)
            assert all(answered_ok(r) for r in replies)
            revisions = [decoded(r, pb.PutResponse)[0].header.revision for r in replies]
            assert revisions == list(range(2, 18))
            for s, revision in zip(sids, revisions, strict=True):
                kv = await store.get(b"d/%02d" % s)
                assert kv is not None and kv.mod_revision == revision
            assert server.fast_requests == (16 + first // 2 if lean else 0)
            assert taken(server) == (16 if lean and warm else 0)
            return [r.outcome() for r in replies]

    await on_both(scenario)
