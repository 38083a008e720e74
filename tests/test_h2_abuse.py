"""HTTP/2 abuse from one client: the offending connection is closed with the right GOAWAY
(or a stream reset), the server's memory stays bounded, and other clients keep being
served. Each case runs against an ``etcdlite serve`` child process, whose RSS is read from
/proc, with a normal Client on another connection making requests throughout.

Bounds stated here: RSS growth under 100 MB per case; a normal client's request answered
within 1 s during the attack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from etcdlite import Client
from etcdlite._grpc.compat import fast_path_enabled
from etcdlite._grpc.guard import PREFACE, FrameGuard, Limits

from .launch import CliServer, running_cli

MB = 1024 * 1024
RSS_BOUND = 100 * MB
LATENCY_BOUND = 1.0

# The guard (etcdlite._grpc.guard) belongs to the fast path: with ETCDLITE_FAST_PATH=0 the
# served child runs grpclib's own path, which has no such limits.
pytestmark = pytest.mark.skipif(
    not fast_path_enabled(), reason="the abuse guard exists only on the fast path"
)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server() -> Iterator[CliServer]:
    with running_cli() as cli:
        yield cli


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def frame(kind: int, payload: bytes = b"", flags: int = 0, stream: int = 0) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


class RawClient:
    """A client speaking HTTP/2 with h2 for what it reads and raw bytes for what it sends;
    a reader task takes in everything the server sends as it arrives (so a GOAWAY is read
    even when the server then closes the connection on unread bytes)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.terminated: asyncio.Future[h2.events.ConnectionTerminated | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._reading = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while not self.terminated.done():
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        self.terminated.set_result(event)
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        if not self.terminated.done():
            self.terminated.set_result(None)

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False once the server has closed the connection."""
        if self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            return False
        return True

    async def goaway(self, timeout: float = 5.0) -> h2.events.ConnectionTerminated | None:
        """The server's GOAWAY (``None`` if it closed without one)."""
        async with asyncio.timeout(timeout):
            return await self.terminated

    async def close(self) -> None:
        self.writer.close()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reading
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def connect(endpoint: str) -> RawClient:
    host, port = endpoint.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client = RawClient(reader, writer)
    await client.send(client.h2.data_to_send())  # preface + SETTINGS
    return client


async def bystander(endpoint: str, stop: asyncio.Event, worst: list[float]) -> None:
    """A normal client putting and reading while the attack goes on."""
    async with Client(endpoint, timeout=10) as client:
        i = 0
        while not stop.is_set():
            start = time.monotonic()
            await client.put(b"bystander", b"%d" % i)
            kv = await client.get(b"bystander")
            assert kv is not None and kv.value == b"%d" % i
            worst.append(time.monotonic() - start)
            i += 1
            await asyncio.sleep(0.01)


async def under_attack(server: CliServer, attack: Callable[[], Awaitable[None]]) -> None:
    before = rss(server.proc.pid)
    stop = asyncio.Event()
    latencies: list[float] = []
    other = asyncio.ensure_future(bystander(server.endpoint, stop, latencies))
    try:
        await attack()
    finally:
        stop.set()
        await other
    assert latencies, "the normal client made no request"
    assert max(latencies) < LATENCY_BOUND, max(latencies)
    assert rss(server.proc.pid) - before < RSS_BOUND
    assert server.proc.poll() is None


async def plain_connection(
    endpoint: str,
) -> tuple[h2.connection.H2Connection, asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = endpoint.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    return conn, reader, writer


async def trailers_status(
    conn: h2.connection.H2Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> str | None:
    """Read until the first stream's trailers; their grpc-status."""
    async with asyncio.timeout(5):
        while True:
            data = await reader.read(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.TrailersReceived):
                    return {_text(k): _text(v) for k, v in event.headers}.get("grpc-status")
            writer.write(conn.data_to_send())


HEADERS_RANGE = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/etcdserverpb.KV/Range"),
    (":authority", "etcd"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


@pytest.mark.timeout(60)
async def test_rapid_reset_gets_goaway_and_releases_streams(server: CliServer) -> None:
    async def attack() -> None:
        client = await connect(server.endpoint)
        conn = client.h2
        try:
            for _ in range(200):  # 20k streams in batches of 100
                if client.terminated.done():
                    break
                for _ in range(100):
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, HEADERS_RANGE)
                    conn.reset_stream(sid)
                if not await client.send(conn.data_to_send()):
                    break
                await asyncio.sleep(0)
            goaway = await client.goaway()
        finally:
            await client.close()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert goaway.additional_data == b"too_many_resets"

    await under_attack(server, attack)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "debug"), [(0x6, b"too_many_pings"), (0x4, b"too_many_settings")])
async def test_ping_and_settings_floods_get_goaway(
    server: CliServer, kind: int, debug: bytes
) -> None:
    payload = bytes(8) if kind == 0x6 else b""

    async def attack() -> None:
        client = await connect(server.endpoint)
        flood = frame(kind, payload) * 500
        try:
            for _ in range(40):
                if client.terminated.done() or not await client.send(flood):
                    break
                await asyncio.sleep(0)
            goaway = await client.goaway()
        finally:
            await client.close()
        assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert goaway.additional_data == debug

    await under_attack(server, attack)


@pytest.mark.timeout(60)
async def test_oversized_frames_are_refused_from_their_header(server: CliServer) -> None:
    """50 connections each declaring a 16 MiB frame and sending the start of it: each is
    closed with FRAME_SIZE_ERROR once its 9-byte header arrives, nothing is buffered."""

    async def attack() -> None:
        clients = [await connect(server.endpoint) for _ in range(50)]
        header = (16 * MB - 1).to_bytes(3, "big") + bytes([0x0, 0x0]) + (1).to_bytes(4, "big")
        for client in clients:
            await client.send(header + bytes(64 * 1024))  # the start of the 16 MiB
        for client in clients:
            goaway = await client.goaway()
            assert goaway is not None
            assert goaway.error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR
            await client.close()

    await under_attack(server, attack)


async def test_a_clients_goaway_lets_its_open_streams_finish(server: CliServer) -> None:
    """grpc-js closes a channel with GOAWAY, then sends the rest of its requests: the Range
    opened before the GOAWAY is answered (h2 alone would close the connection)."""
    conn, reader, writer = await plain_connection(server.endpoint)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, HEADERS_RANGE)
    writer.write(conn.data_to_send())
    writer.write(frame(0x7, (0).to_bytes(4, "big") + (0).to_bytes(4, "big")))  # GOAWAY
    body = b"\x0a\x01k"  # RangeRequest(key=b"k")
    writer.write(frame(0x0, b"\x00" + len(body).to_bytes(4, "big") + body, flags=0x1, stream=sid))
    assert await trailers_status(conn, reader, writer) == "0"
    writer.close()
    await writer.wait_closed()


async def test_an_unknown_frame_type_is_ignored(server: CliServer) -> None:
    conn, reader, writer = await plain_connection(server.endpoint)
    writer.write(frame(0xFA, b"extension"))  # RFC 9113: ignore it
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, HEADERS_RANGE)
    body = b"\x0a\x01k"
    conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    writer.write(conn.data_to_send())
    assert await trailers_status(conn, reader, writer) == "0"
    writer.close()
    await writer.wait_closed()


async def test_garbage_instead_of_a_preface_is_closed(server: CliServer) -> None:
    """Neither the HTTP/2 preface nor an HTTP/1.x request line: the connection is closed
    unanswered, as etcd's listener does."""
    host, port = server.endpoint.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x01garbage" + bytes(64))
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()


async def test_garbage_after_the_preface_gets_goaway(server: CliServer) -> None:
    host, port = server.endpoint.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(PREFACE + b"\xff" * 64)  # not a frame h2 can take
    async with asyncio.timeout(5):
        data = await reader.read()  # until the server closes
    # the server's SETTINGS, then a GOAWAY (frame type 7) before the close
    assert b"\x07\x00\x00\x00\x00\x00" in data
    writer.close()


# --- the guard itself (sans-IO) -------------------------------------------------------------


def test_the_guard_passes_every_byte_but_goaways_however_reads_split_them() -> None:
    import random

    rng = random.Random(7)
    for _ in range(500):
        frames = [
            frame(
                rng.choice([0, 1, 3, 4, 6, 7, 8, 9]), bytes(rng.randrange(50)), 0, rng.randrange(9)
            )
            for _ in range(rng.randrange(8))
        ]
        stream = PREFACE + b"".join(frames)
        expected = PREFACE + b"".join(f for f in frames if f[3] != 0x7)
        guard = FrameGuard(Limits(ping_burst=10**6, settings_burst=10**6, reset_burst=10**6))
        out, pos = b"", 0
        while pos < len(stream):
            step = rng.randrange(1, 40)
            out += guard.feed(stream[pos : pos + step])
            pos += step
        assert out == expected


def test_a_bucket_refills_with_time() -> None:
    now = [0.0]
    guard = FrameGuard(Limits(ping_burst=3, pings_per_second=1.0), clock=lambda: now[0])
    ping = frame(0x6, bytes(8))
    guard.feed(PREFACE + ping * 3)
    with pytest.raises(Exception, match="too_many_pings"):
        guard.feed(ping)
    guard = FrameGuard(Limits(ping_burst=3, pings_per_second=1.0), clock=lambda: now[0])
    guard.feed(PREFACE + ping * 3)
    now[0] += 2.0
    guard.feed(ping * 2)  # two tokens back
    ack = frame(0x6, bytes(8), flags=0x1)
    guard.feed(ack * 100)  # acks are not counted


@pytest.fixture
async def quiet_server() -> AsyncIterator[object]:
    import etcdlite

    async with etcdlite.serve(port=0) as served:
        for grpc_server in served.grpc_servers:
            grpc_server.preface_timeout = 0.3
        yield served


async def test_a_connection_that_never_sends_a_preface_is_closed(quiet_server: object) -> None:
    port = quiet_server.port  # type: ignore[attr-defined]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(5):
        await reader.read()  # returns once the server closed it
    writer.close()


async def test_connections_over_the_limit_are_closed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import etcdlite

    async with etcdlite.serve(port=0, max_connections=3) as served:
        endpoint = f"127.0.0.1:{served.port}"
        held = [await plain_connection(endpoint) for _ in range(3)]
        _conn, reader, writer = await plain_connection(endpoint)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed as it arrived
        writer.close()
        assert "connection limit reached (3)" in caplog.text
        # one of the three goes away: a new client gets in and is served
        held[0][2].close()
        await held[0][2].wait_closed()
        async with asyncio.timeout(5):
            (grpc_server,) = served.grpc_servers
            await grpc_server.wait_connections(2)
        async with Client(endpoint, timeout=5) as client:
            await client.put(b"k", b"v")
        for _, _, w in held[1:]:
            w.close()


async def test_a_burst_of_connects_is_accepted() -> None:
    import etcdlite

    async with etcdlite.serve(port=0) as served:
        opened = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", served.port) for _ in range(1000))
        )
        assert len(opened) == 1000
        for _, writer in opened:
            writer.close()


async def test_streams_over_the_concurrency_limit_are_refused_not_the_connection(
    server: CliServer,
) -> None:
    """150 requests opened at once on one connection, where the server allows 96 (h2's 100,
    less a slack): the last 54 get RST_STREAM REFUSED_STREAM (RFC 9113 §5.1.2), the first 96
    are answered, and the connection goes on serving."""
    conn, reader, writer = await plain_connection(server.endpoint)
    sids = []
    for _ in range(150):  # the request headers only: every handler waits for its message
        sids.append(conn.get_next_available_stream_id())
        conn.send_headers(sids[-1], HEADERS_RANGE)
    writer.write(conn.data_to_send())
    refused: set[int] = set()
    done: dict[int, str] = {}
    body = b"\x0a\x01k"
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    async with asyncio.timeout(20):
        while len(refused) < 54:
            data = await reader.read(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.StreamReset):
                    assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                    refused.add(event.stream_id)
            writer.write(conn.data_to_send())
        assert refused == set(sids[96:])
        for sid in sids[:96]:
            conn.send_data(sid, message, end_stream=True)
        writer.write(conn.data_to_send())
        while len(done) < 96:
            data = await reader.read(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.TrailersReceived):
                    headers = {_text(k): _text(v) for k, v in event.headers}
                    done[event.stream_id] = headers["grpc-status"]
            writer.write(conn.data_to_send())
    assert set(done) == set(sids[:96]) and set(done.values()) == {"0"}
    # and the same connection takes new requests
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, HEADERS_RANGE)
    conn.send_data(sid, message, end_stream=True)
    writer.write(conn.data_to_send())
    assert await trailers_status(conn, reader, writer) == "0"
    writer.close()
    await writer.wait_closed()


def test_a_refused_streams_header_block_is_cut_out_exactly_however_reads_split_it() -> None:
    """The guard hands over a refused stream's header block without its padding and
    priority fields, across CONTINUATION frames and reads split anywhere; the frames that
    follow for that stream never reach h2."""
    block = bytes(range(1, 40))
    padded = bytes([3]) + bytes(5) + block[:20] + b"\0\0\0"  # pad length, priority, padding
    frames_in = (
        frame(0x1, b"ab", flags=0x4, stream=1)  # stream 1: accepted
        + frame(0x1, padded, flags=0x8 | 0x20, stream=3)  # stream 3: refused...
        + frame(0x9, block[20:], flags=0x4, stream=3)  # ...its CONTINUATION
        + frame(0x0, b"data", flags=0x1, stream=3)  # ...and its DATA
        + frame(0x0, b"more", flags=0x1, stream=1)
    )
    first = frame(0x1, b"ab", flags=0x4, stream=1)
    for split in range(1, len(frames_in)):
        out = [PREFACE]  # what h2 got
        guard = FrameGuard(max_streams=1, closed_streams=lambda: 0)
        guard.feed(PREFACE)
        got = []
        for piece in (frames_in[:split], frames_in[split:]):
            data = guard.feed(piece)
            done = len(b"".join(out))
            got += [(done + off, sid, blk) for off, sid, blk in guard.refusals]
            out.append(data)
        assert b"".join(out) == PREFACE + first + frame(0x0, b"more", flags=0x1, stream=1), split
        assert got == [(len(PREFACE) + 11, 3, block)], split
