"""The server's request intake (``etcdlite/_grpc/intake.py``): what decides whether a lean
request is taken past h2, pinned at the HTTP/2 frame level with :mod:`tests.h2wire`.

Every case first warms the connection (:func:`~tests.test_server_requests.warm_up`: the
same header list twice), then sends a request the intake must *not* take (or must take
only when its header block means what it meant when it was learned), and checks the
answer is the one grpclib's path (``fast_path=False``) gives to the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hpack import NeverIndexedHeaderTuple

from etcdlite.wire.pb import etcdserverpb as pb

from .h2wire import (
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    WINDOW_UPDATE,
    H2Wire,
    data_frames,
    frame,
    grpc_message,
    rst_stream,
    settings_frame,
    window_update,
)
from .test_server_requests import (
    DELETE,
    OK_BLOCKS,
    PUT,
    RANGE,
    answered_ok,
    decoded,
    goaways,
    in_one_read,
    on_both,
    server_side,
    serving,
    taken,
    warm_up,
    wire,
)

pytestmark = pytest.mark.timeout(30)

HEADER_TABLE_SIZE, MAX_FRAME_SIZE = 0x1, 0x5  # SETTINGS parameters (RFC 9113 6.5.2)


def _put(key: bytes) -> bytes:
    return grpc_message(pb.PutRequest(key=key, value=b"x" * 50))


#: Requests whose frames or message are not a taken request's: (HEADERS and DATA of
#: stream ``sid`` of ``w``). Each is a Put with the warmed header list.
UNUSUAL: dict[str, Any] = {
    # the message's compressed flag set (the request names no grpc-encoding)
    "compressed": lambda w, sid: (
        w.headers(sid, PUT) + frame(DATA, b"\x01" + _put(b"c")[1:], END_STREAM, sid)
    ),
    # the prefix announces fewer bytes than the DATA holds
    "prefix-short": lambda w, sid: (
        w.headers(sid, PUT)
        + frame(DATA, _put(b"s")[:4] + bytes([_put(b"s")[4] - 3]) + _put(b"s")[5:], END_STREAM, sid)
    ),
    # the prefix announces more bytes than the DATA holds
    "prefix-long": lambda w, sid: (
        w.headers(sid, PUT)
        + frame(DATA, _put(b"l")[:4] + bytes([_put(b"l")[4] + 3]) + _put(b"l")[5:], END_STREAM, sid)
    ),
    # two whole messages in the one DATA frame
    "two-messages": lambda w, sid: (
        w.headers(sid, PUT) + frame(DATA, _put(b"m1") + _put(b"m2"), END_STREAM, sid)
    ),
    # padded DATA
    "padded-data": lambda w, sid: (
        w.headers(sid, PUT)
        + frame(DATA, bytes([30]) + _put(b"pd") + b"\x00" * 30, END_STREAM | PADDED, sid)
    ),
    # HEADERS with the PRIORITY flag (depends on 0, weight 200)
    "priority": lambda w, sid: (
        w.headers(sid, PUT, flags=PRIORITY_FLAG, prefix=b"\0\0\0\0\xc8")
        + data_frames(sid, _put(b"pr"))
    ),
    # padded HEADERS
    "padded-headers": lambda w, sid: w.headers(sid, PUT, padding=9) + data_frames(sid, _put(b"ph")),
    # the header block in HEADERS + CONTINUATION
    "continuation": lambda w, sid: w.headers(sid, PUT, split=3) + data_frames(sid, _put(b"co")),
    # the message in two DATA frames
    "two-frames": lambda w, sid: (
        w.headers(sid, PUT)
        + frame(DATA, _put(b"tf")[:9], 0, sid)
        + frame(DATA, _put(b"tf")[9:], END_STREAM, sid)
    ),
    # END_STREAM on an empty DATA frame after the message
    "empty-end": lambda w, sid: (
        w.headers(sid, PUT) + frame(DATA, _put(b"ee"), 0, sid) + frame(DATA, b"", END_STREAM, sid)
    ),
}


@pytest.mark.parametrize("case", list(UNUSUAL))
async def test_an_unusual_request_after_warm_up_is_answered_as_grpclib_answers_it(
    case: str,
) -> None:
    """After the warm-up, a Put with the warmed header list whose frames or message are
    not a taken request's, in one read: it goes through h2 (not taken), and its answer is
    grpclib's to the same bytes; the next Put, sent plainly, is taken and answered."""

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            sid = await warm_up(w, (PUT, {}))
            await in_one_read(server, w, UNUSUAL[case](w, sid))
            await w.wait(lambda: w.stream(sid).done or w.eof)
            assert taken(server) == 0
            odd = w.stream(sid).outcome() if not w.eof else ("closed", goaways(w))
            if w.eof:
                return [odd]
            await w.send(w.request(sid + 2, PUT, pb.PutRequest(key=b"after")))
            (after,) = await w.answered([sid + 2])
            assert answered_ok(after)
            assert taken(server) == (1 if lean else 0)
            return [odd, after.outcome(), store.revision]

    await on_both(scenario)


def _path_only_indexed(w: H2Wire, sid: int, path: str) -> bytes:
    """A request's HEADERS whose block puts only ``:path`` in the HPACK table (the other
    fields static references or never indexed), as an encoder may: every path's block
    after the first is then one byte of reference plus the same literals, so the same
    bytes name a different path once another path was inserted before it."""
    block = w.encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            NeverIndexedHeaderTuple(":authority", "etcd"),
            NeverIndexedHeaderTuple("content-type", "application/grpc"),
            NeverIndexedHeaderTuple("te", "trailers"),
        ]
    )
    return frame(HEADERS, block, END_HEADERS, sid)


@pytest.mark.parametrize("reads", ["one-read", "two-reads"])
async def test_a_block_whose_meaning_changed_earlier_in_the_read_is_not_served_stale(
    reads: str,
) -> None:
    """Puts warm the connection with a block in which ``:path`` is the newest entry of the
    table (index 62). Then two DeleteRanges: the first inserts its path (now 62; the Put's
    63), the second refers to 62 again: the very bytes the intake learned as a Put. Sent
    in one read or two, the second is a DeleteRange (it deletes nothing and creates no
    key), as h2 decodes it, on both paths."""

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            sid = 1
            for _ in range(3):  # the third is taken: its block is a learned one
                put = _path_only_indexed(w, sid, PUT) + data_frames(sid, _put(b"p"))
                await w.send(put)
                (reply,) = await w.answered([sid])
                assert answered_ok(reply)
                sid += 2
            assert taken(server) == (1 if lean else 0)
            learned = _path_only_indexed(w, 0, PUT)[9:]
            message = grpc_message(pb.DeleteRangeRequest(key=b"k", range_end=b"kz"))
            first = _path_only_indexed(w, sid, DELETE) + data_frames(sid, message)
            second = _path_only_indexed(w, sid + 2, DELETE)
            assert second[9:] == learned  # the same bytes, now naming DeleteRange
            second += data_frames(sid + 2, message)
            if reads == "one-read":
                await in_one_read(server, w, first + second)
            else:
                await w.send(first)
                await w.answered([sid])
                await w.send(second)
            replies = await w.answered([sid, sid + 2])
            assert all(answered_ok(r) for r in replies)
            deletes = [decoded(r, pb.DeleteRangeResponse)[0] for r in replies]
            assert [d.deleted for d in deletes] == [0, 0]
            assert await store.get(b"k") is None  # no Put ran
            return [r.outcome() for r in replies]

    await on_both(scenario)


@pytest.mark.parametrize("reads", ["one-read", "two-reads"])
async def test_a_table_size_update_forgets_what_was_learned(reads: str) -> None:
    """A Put's header list warmed (learned), then the client's encoder shrinks its dynamic
    table to 0 and back (an HPACK size update, RFC 7541 6.3, which empties the table) and
    sends a Range twice: the first Range's block inserts the same fields as the Put's
    first one did, so the second Range's block is byte for byte the Put's learned one.
    It is a Range (h2 decodes it so), whether the two come in one read or two."""

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            await store.put(b"r", b"seed")
            sid = await warm_up(w, (PUT, {}))
            await w.send(w.request(sid, PUT, pb.PutRequest(key=b"p")))
            assert answered_ok((await w.answered([sid]))[0])
            assert taken(server) == (1 if lean else 0)
            learned = w.headers(0, PUT)[9:]
            w.encoder.header_table_size = 0
            w.encoder.header_table_size = 4096
            rng = grpc_message(pb.RangeRequest(key=b"r"))
            first = w.headers(sid + 2, RANGE) + data_frames(sid + 2, rng)
            second = w.headers(sid + 4, RANGE)
            assert second[9:] == learned
            second += data_frames(sid + 4, rng)
            if reads == "one-read":
                await in_one_read(server, w, first + second)
            else:
                await w.send(first)
                await w.answered([sid + 2])
                await w.send(second)
            replies = await w.answered([sid + 2, sid + 4])
            assert all(answered_ok(r) for r in replies)
            for r in replies:
                assert [kv.value for kv in decoded(r, pb.RangeResponse)[0].kvs] == [b"seed"]
            assert taken(server) == (1 if lean else 0)
            assert store.revision == 3  # the seed and the one Put
            return [r.outcome() for r in replies]

    await on_both(scenario)


async def test_a_block_learned_on_one_connection_is_not_taken_on_another() -> None:
    """A Put's header list is learned on one connection. On a second connection (its own
    HPACK tables) the same header list is not taken until it was learned there too (the
    third request); the first connection's learned block bytes, sent on the second as its
    first request, refer to table entries the second connection does not have: h2's
    COMPRESSION_ERROR, as on a server where no connection was ever warmed."""
    async with serving(True) as (_, server), wire(server.port) as a:
        sid = await warm_up(a, (PUT, {}))
        learned = a.request(sid, PUT, pb.PutRequest(key=b"a"))
        await a.send(learned)
        assert answered_ok((await a.answered([sid]))[0])
        assert server_side(server, a).intake.taken == 1
        async with wire(server.port) as b:
            for i, sid in enumerate([1, 3, 5]):
                await b.send(b.request(sid, PUT, pb.PutRequest(key=b"b")))
                assert answered_ok((await b.answered([sid]))[0])
                assert server_side(server, b).intake.taken == (1 if i == 2 else 0)
        async with wire(server.port) as c:
            block = learned[: 9 + int.from_bytes(learned[:3], "big")]
            await c.send(frame(HEADERS, block[9:], END_HEADERS, 1) + learned[len(block) :])
            await c.closed()
            assert server.taken_requests == 2  # a's and b's: c took none
            warm_goaways = goaways(c)
    async with serving(True) as (_, server), wire(server.port) as fresh:
        await fresh.send(frame(HEADERS, block[9:], END_HEADERS, 1) + learned[len(block) :])
        await fresh.closed()
        assert goaways(fresh) == warm_goaways and warm_goaways


async def test_taken_requests_past_the_first_connection_window_get_its_window_updates() -> None:
    """Puts of 16 KB (each HEADERS and one DATA frame), 300 of them (4.8 MB, past the
    server's 4 MB connection window), each sent once the server's window allows it and the
    one before was answered: all but the warm-up are taken, all answered, and the
    server's connection WINDOW_UPDATEs are the ones grpclib's path sends for the same
    reads."""

    async def scenario(lean: bool) -> list[object]:
        async with (
            serving(lean) as (_, server),
            wire(server.port, settings={}, connection_window=DEFAULT_WINDOW) as w,
        ):
            w.auto_window = 1
            await w.window_for(4 << 20)
            sid = await warm_up(w, (PUT, {}))
            sent = 0
            value = b"v" * 16_000
            for i in range(300):
                message = grpc_message(pb.PutRequest(key=b"w/%03d" % i, value=value))
                assert len(message) <= 16384  # one DATA frame
                sent += len(message)
                await w.window_for(sent)
                await w.send(w.headers(sid, PUT) + frame(DATA, message, END_STREAM, sid))
                assert answered_ok((await w.answered([sid]))[0])
                sid += 2
            assert sent > 4 << 20
            assert taken(server) == (300 if lean else 0)
            updates = [
                int.from_bytes(p, "big") for k, _, s, p in w.frames if k == WINDOW_UPDATE and not s
            ]
            return [updates, w.send_window]

    await on_both(scenario)


async def cold_and_warm(scenario: Callable[[bool, bool], Awaitable[Any]], *, paths: bool) -> Any:
    """Run ``scenario(lean, warm)`` on the lean path cold and warm (and on grpclib's path
    cold and warm if ``paths``): everything it returns must be the same."""
    results = [await scenario(True, True), await scenario(True, False)]
    if paths:
        results += [await scenario(False, True), await scenario(False, False)]
    assert all(r == results[0] for r in results), results
    return results[0]


#: Frames a client sends on its stream after the request's END_STREAM, before the reply
#: (the store paused): (the frame for stream ``sid``, whether both paths answer alike).
AFTER_END: dict[str, tuple[Callable[[H2Wire, int], bytes], bool]] = {
    "headers": (lambda w, sid: w.headers(sid, PUT), True),
    "trailers-end-stream": (lambda w, sid: w.headers(sid, PUT, end=True), True),
    "window-update-zero": (lambda w, sid: window_update(sid, 0), False),
    "window-update-overflow": (lambda w, sid: window_update(sid, MAX_WINDOW), True),
    "priority": (lambda w, sid: frame(PRIORITY, b"\0\0\0\0\x10", 0, sid), True),
    "rst-no-error": (lambda w, sid: rst_stream(sid, 0), True),
    # grpclib's own path has no processor for h2's UnknownFrameReceived and fails
    "unknown-frame": (lambda w, sid: frame(0x42, b"hello", 0, sid), False),
}


@pytest.mark.parametrize("case", list(AFTER_END))
async def test_a_frame_on_a_pending_taken_stream_is_answered_as_on_h2s(case: str) -> None:
    """A Put waits on the paused store (warm: taken), then the client sends one more frame
    on its stream: the same frames come back (reset, GOAWAY, or the reply after the
    resume), the Put runs or not alike, and the connection goes on or ends alike, as when
    the request went through h2 (and as on grpclib's path, unless the lean path's frame
    guard answers the frame itself)."""
    make, paths = AFTER_END[case]

    async def scenario(lean: bool, warm: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            sid = await warm_up(w, (PUT, {}), warm=warm)
            warmed = len(w.frames)
            store.faults.pause()
            await w.send(w.request(sid, PUT, pb.PutRequest(key=b"p", value=b"v")))
            await w.ping()
            assert taken(server) == (1 if lean and warm else 0)
            await w.send(make(w, sid))
            with contextlib.suppress(AssertionError):
                await w.ping()  # unless the frame ended the connection
            store.faults.resume()
            if not w.eof:
                await w.send(w.request(sid + 2, RANGE, pb.RangeRequest(key=b"p")))
                with contextlib.suppress(AssertionError):
                    await w.answered([sid + 2])
            if not w.eof:
                await w.ping()
            tasks = server.request_tasks()
            if tasks:
                async with asyncio.timeout(5):
                    await asyncio.wait(tasks)
            kv = await store.get(b"p")
            return [
                # every frame on the streams (header blocks differ in bytes: the server's
                # HPACK table holds the warm-up's replies), the codes of resets
                [
                    (k, f, s - sid, p if k == RST_STREAM else b"")
                    for k, f, s, p in w.frames[warmed:]
                    if s >= sid
                ],
                [w.stream(s).outcome() for s in (sid, sid + 2)],
                [(last - sid, code) for last, code in goaways(w)],
                w.eof,
                None if kv is None else kv.value,
            ]

    await cold_and_warm(scenario, paths=paths)


@pytest.mark.parametrize("error", ["reused-stream-id", "window-update-zero", "bad-settings"])
async def test_a_connection_error_in_the_read_of_a_taken_request(error: str) -> None:
    """A Put and, in the same read, a frame that is a connection error: a HEADERS on the
    stream id of an earlier, answered request (h2: STREAM_CLOSED), a connection
    WINDOW_UPDATE of 0, a SETTINGS frame of a wrong length.
    The Put taken (its header list warmed) or not (a Range's warmed instead), the lean
    path answers alike: the same GOAWAY (its last stream id the Put's), the same frames on
    the Put's stream, the Put runs or not alike."""

    async def scenario(lean: bool, warm: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            sid = await warm_up(w, (PUT if warm else RANGE, {}))
            warmed = len(w.frames)
            request = w.request(sid, PUT, pb.PutRequest(key=b"p", value=b"v"))
            bad = {
                "reused-stream-id": w.headers(sid - 2, PUT),
                "window-update-zero": window_update(0, 0),
                "bad-settings": frame(SETTINGS, b"\0\0\0"),
            }[error]
            await in_one_read(server, w, request + bad)
            assert taken(server) == (1 if lean and warm else 0)
            await w.closed()
            tasks = server.request_tasks()
            if tasks:
                async with asyncio.timeout(5):
                    await asyncio.wait(tasks)
            kv = await store.get(b"p")
            return [
                [(k, f) for k, f, s, _ in w.frames[warmed:] if s == sid],
                [(last - sid, code) for last, code in goaways(w)],
                None if kv is None else kv.value,
            ]

    await cold_and_warm(scenario, paths=False)


@pytest.mark.parametrize("warm", [False, True])
async def test_big_replies_to_taken_requests_share_a_tiny_connection_window(warm: bool) -> None:
    """Three 1 MB Ranges in one read (warm: all taken) by a client with 100-byte stream
    windows and the default connection window, given back twice over as DATA comes: all
    three arrive whole, and no DATA frame is sent past the stream's or the connection's
    window at the time the client gave it."""

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server):
            for i in range(250):
                await store.put(b"big/%03d" % i, bytes([i % 251]) * 4000)
            settings = {SETTINGS_INITIAL_WINDOW_SIZE: 100}
            async with wire(server.port, settings=settings, connection_window=DEFAULT_WINDOW) as w:
                w.auto_window = 2
                sid = await warm_up(w, (RANGE, {}), warm=warm)
                warmed = len(w.frames)
                sids = [sid, sid + 2, sid + 4]
                request = pb.RangeRequest(key=b"big/", range_end=b"big0")
                await in_one_read(server, w, b"".join(w.request(s, RANGE, request) for s in sids))
                replies = await w.answered(sids)
                assert all(r.blocks == OK_BLOCKS and r.ended for r in replies)
                for r in replies:
                    assert len(decoded(r, pb.RangeResponse)[0].kvs) == 250
                streams = dict.fromkeys(sids, 100)
                connection = (
                    DEFAULT_WINDOW
                    + sum(  # what the warm-up's DATA gave back
                        len(p) for k, _, s, p in w.frames[:warmed] if k == DATA
                    )
                )
                for kind, _, s, payload in w.frames[warmed:]:
                    if kind == DATA:
                        size = len(payload)
                        streams[s] -= size
                        connection -= size
                        assert streams[s] >= 0 and connection >= 0, (s, streams, connection)
                        streams[s] += 2 * size
                        connection += 2 * size
                assert taken(server) == (3 if lean and warm else 0)
                return [r.outcome() for r in replies]

    await on_both(scenario)


@pytest.mark.parametrize("grpc_timeout", ["100m", None])
async def test_a_request_whose_data_comes_later_keeps_its_deadline(
    grpc_timeout: str | None,
) -> None:
    """A Put's HEADERS alone in one read, then (once the server has answered it or the
    client gave up waiting, 1 s) its DATA. With a grpc-timeout of 100 ms h2's path answers
    DEADLINE_EXCEEDED 100 ms after the HEADERS came, the message never read; without one
    the request waits for its DATA. The same whether the header list was learned (the Put
    could be taken once whole) or not (a Range's warmed instead)."""
    extra = [("grpc-timeout", grpc_timeout)] if grpc_timeout else []

    async def scenario(lean: bool, warm: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            sid = await warm_up(w, (PUT if warm else RANGE, {"extra": extra}))
            warmed = len(w.frames)
            await in_one_read(server, w, w.headers(sid, PUT, extra=extra))
            with contextlib.suppress(TimeoutError):
                await w.answered([sid], timeout=1.0)
            early = w.stream(sid).done
            await in_one_read(server, w, data_frames(sid, _put(b"late")))
            await w.wait(lambda: w.stream(sid).done or w.eof)
            kv = await store.get(b"late")
            return [
                early,
                [(k, f) for k, f, s, _ in w.frames[warmed:] if s == sid],
                w.stream(sid).outcome(),
                None if kv is None else kv.value,
            ]

    await cold_and_warm(scenario, paths=True)


async def test_replies_to_taken_requests_follow_the_clients_later_settings() -> None:
    """After the warm-up the client lowers its SETTINGS_HEADER_TABLE_SIZE to 0 and raises
    its SETTINGS_MAX_FRAME_SIZE to 20000, then asks for a 1 MB Range (warm: taken): the
    first reply block starts with an HPACK size update to 0 (RFC 7541 4.2), and the
    reply comes in DATA frames of up to 20000 bytes, as on grpclib's path."""

    async def scenario(lean: bool, warm: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            for i in range(250):
                await store.put(b"big/%03d" % i, bytes([i % 251]) * 4000)
            sid = await warm_up(w, (RANGE if warm else PUT, {}))
            warmed = len(w.frames)
            await w.send(settings_frame({HEADER_TABLE_SIZE: 0, MAX_FRAME_SIZE: 20000}))
            await w.ping()  # the server has the settings (and sent its ACK)
            request = pb.RangeRequest(key=b"big/", range_end=b"big0")
            await in_one_read(server, w, w.request(sid, RANGE, request))
            (rng,) = await w.answered([sid])
            assert taken(server) == (1 if lean and warm else 0)
            blocks = [p for k, _, s, p in w.frames[warmed:] if k == HEADERS and s == sid]
            assert blocks[0][0] == 0x20  # a size update to 0 first
            sizes = [len(p) for k, _, s, p in w.frames[warmed:] if k == DATA and s == sid]
            assert max(sizes) == 20000
            return [rng.outcome(), sizes]

    await cold_and_warm(scenario, paths=True)


@pytest.mark.parametrize("warm", [False, True])
async def test_a_held_request_is_decoded_before_a_refused_stream_after_it(warm: bool) -> None:
    """95 Puts wait on the paused store; then, in one read, the HEADERS of a Put (the 96th
    open stream: let through, warm: a learned block, its DATA not yet here), the HEADERS of
    a DeleteRange (the 97th: refused by the guard; its block inserts its path into the
    HPACK table), then both DATA frames. The Put's block must be decoded before the
    refused one's, as the client encoded them: the Put is answered after the resume and
    runs; the DeleteRange is refused."""
    async with serving(True) as (store, server), wire(server.port) as w:
        first = await warm_up(w, (PUT, {}), warm=warm)
        store.faults.pause()
        sids = [first + 2 * i for i in range(95)]
        requests = b"".join(w.request(s, PUT, pb.PutRequest(key=b"c/%d" % s)) for s in sids)
        await in_one_read(server, w, requests)
        put, delete = sids[-1] + 2, sids[-1] + 4
        message = grpc_message(pb.DeleteRangeRequest(key=b"c/", range_end=b"c0"))
        await in_one_read(
            server,
            w,
            w.headers(put, PUT)
            + w.headers(delete, DELETE)
            + data_frames(put, _put(b"held"))
            + data_frames(delete, message),
        )
        (refused,) = await w.answered([delete])
        assert refused.reset == 0x7  # REFUSED_STREAM
        store.faults.resume()
        (reply,) = await w.answered([put])
        assert answered_ok(reply)
        kv = await store.get(b"held")
        assert kv is not None and kv.value == b"x" * 50
        assert w.goaway is None


async def test_a_block_learned_in_a_read_that_later_changed_its_meaning_is_not_taken() -> None:
    """A Put warms the table with its path (index 62; only ``:path`` is indexed). Then, in
    one read: a Put whose block refers to 62 (the intake has not learned it yet), a
    request to an unknown method that inserts its path (now 62; the Put's 63), and a
    second request to that method whose block is byte for byte the Put's. The lean handler
    accepts the Put after h2 decoded the whole read, when those bytes name the unknown
    method. Sent again with a Put's message, they are the unknown method's request: h2's
    UNIMPLEMENTED, no Put, on both paths."""
    unknown = "/etcdserverpb.KV/Nothing"

    async def scenario(lean: bool) -> list[object]:
        async with serving(lean) as (store, server), wire(server.port) as w:
            await w.send(_path_only_indexed(w, 1, PUT) + data_frames(1, _put(b"w")))
            assert answered_ok((await w.answered([1]))[0])
            put = _path_only_indexed(w, 3, PUT)
            learned = put[9:]
            first = _path_only_indexed(w, 5, unknown)
            second = _path_only_indexed(w, 7, unknown)
            assert second[9:] == learned  # the same bytes, now naming the unknown method
            await in_one_read(
                server,
                w,
                put
                + data_frames(3, _put(b"a"))
                + first
                + data_frames(5, _put(b"b"))
                + second
                + data_frames(7, _put(b"c")),
            )
            replies = await w.answered([3, 5, 7])
            third = _path_only_indexed(w, 9, unknown)
            assert third[9:] == learned
            await in_one_read(server, w, third + data_frames(9, _put(b"d")))
            (last,) = await w.answered([9])
            assert await store.get(b"d") is None  # no Put ran
            assert taken(server) == 0
            return [r.outcome() for r in [*replies, last]]

    await on_both(scenario)
