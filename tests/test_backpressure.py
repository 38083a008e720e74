"""Clients that send but do not read: the server's memory stays bounded, other clients are
served, and a stalled watcher still receives every event in order once it reads.

Against an ``etcdlite serve`` child process (RSS from /proc). Bounds stated here: RSS
growth under 40 MB for a watch-create flood that fills HTTP/2's windows (5 MB of 10-byte
creates; without the bound the server parsed them all, 175k watchers), and under 100 MB
while 3000 × 1 KiB puts go to 40 watch streams that do not read (120 MB of events if they
were queued).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import pytest

from etcdlite import Client
from etcdlite.wire.pb import etcdserverpb as pb

from .launch import CliServer, running_cli

MB = 1024 * 1024
WATCH_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/etcdserverpb.Watch/Watch"),
    (":authority", "etcd"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def server() -> Iterator[CliServer]:
    with running_cli() as cli:
        yield cli


def message(msg: pb.WatchRequest) -> bytes:
    body = bytes(msg)
    return b"\x00" + len(body).to_bytes(4, "big") + body


class WatchConnection:
    """One raw HTTP/2 connection with one Watch stream; it reads only when asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(self.sid, WATCH_HEADERS)
        self.buffer = b""

    @classmethod
    async def open(cls, endpoint: str) -> WatchConnection:
        host, port = endpoint.split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> int:
        """Send as much of ``data`` as the flow-control windows allow; bytes sent."""
        sent = 0
        while sent < len(data):
            window = min(self.h2.local_flow_control_window(self.sid), 16384)
            if window <= 0:
                break
            self.h2.send_data(self.sid, data[sent : sent + window])
            sent += window
        self.writer.write(self.h2.data_to_send())
        await self.writer.drain()
        return sent

    async def responses(self) -> list[pb.WatchResponse]:
        """Read what has arrived (at least one chunk) and parse whole responses."""
        data = await self.reader.read(1 << 20)
        assert data, "the server closed the connection"
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, self.sid)
                self.buffer += event.data
        self.writer.write(self.h2.data_to_send())
        out = []
        while len(self.buffer) >= 5:
            size = int.from_bytes(self.buffer[1:5], "big")
            if len(self.buffer) < 5 + size:
                break
            out.append(pb.WatchResponse.parse(self.buffer[5 : 5 + size]))
            self.buffer = self.buffer[5 + size :]
        return out

    def close(self) -> None:
        self.writer.close()


async def served_meanwhile(endpoint: str) -> None:
    async with Client(endpoint, timeout=5) as client, asyncio.timeout(1):
        await client.put(b"bystander", b"1")
        assert (await client.get(b"bystander")) is not None


@pytest.mark.timeout(120)
async def test_a_watch_create_flood_that_never_reads_is_bounded(server: CliServer) -> None:
    """The client takes in the server's frames (so it learns of every WINDOW_UPDATE) but
    never consumes a response: once the server stops reading its requests, the windows
    stay spent and the flood stops."""
    before = rss(server.proc.pid)
    conn = await WatchConnection.open(server.endpoint)
    window_opened = asyncio.Event()

    async def take_frames() -> None:
        while data := await conn.reader.read(1 << 16):
            for event in conn.h2.receive_data(data):  # DATA is never acknowledged
                if isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                    window_opened.set()
            conn.writer.write(conn.h2.data_to_send())

    taker = asyncio.ensure_future(take_frames())
    create = message(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"k")))
    batch = create * 1300  # about one DATA frame's worth
    pending, total = batch, 0
    try:
        while True:
            sent = await conn.send(pending)
            total += sent
            pending = pending[sent:] or batch  # a message cut by the window goes on whole
            if conn.h2.local_flow_control_window(conn.sid) > 0:
                continue
            window_opened.clear()
            try:
                async with asyncio.timeout(3):  # no WINDOW_UPDATE for 3 s: it stopped reading
                    await window_opened.wait()
            except TimeoutError:
                break
        assert total > 2 * MB  # the client pushed that much before it stopped
        await served_meanwhile(server.endpoint)
        grown = rss(server.proc.pid) - before
        assert grown < 40 * MB
    finally:
        taker.cancel()
        conn.close()


@pytest.mark.timeout(180)
async def test_stalled_watch_streams_stay_bounded_and_get_every_event_in_order(
    server: CliServer,
) -> None:
    streams = [await WatchConnection.open(server.endpoint) for _ in range(40)]
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"v/", range_end=b"v0"))
    for conn in streams:
        await conn.send(message(create))
    for conn in streams:  # each stream's created response, then no more reading
        while not any(r.created for r in await conn.responses()):
            pass
    before = rss(server.proc.pid)
    value = bytes(1024)
    async with Client(server.endpoint, timeout=30) as client:
        first = (await client.put(b"v/0", value)).header.revision
        for i in range(1, 3000):
            await client.put(b"v/%d" % i, value)
    grown = rss(server.proc.pid) - before
    assert grown < 100 * MB, grown / MB
    await served_meanwhile(server.endpoint)
    for conn in streams:
        revisions: list[int] = []
        async with asyncio.timeout(60):
            while len(revisions) < 3000:
                for r in await conn.responses():
                    revisions += [e.kv.mod_revision for e in r.events if e.kv]
        assert revisions == list(range(first, first + 3000))
        conn.close()
