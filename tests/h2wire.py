"""A raw HTTP/2 client for frame-level server tests: it writes the bytes it is given (frames
built here, any order, any split) and logs every frame the server sends, per stream.

Unlike :mod:`tests.h2probe` (h2's client state machine on the sending side), nothing here
checks what is sent: a test can send a HEADERS on a used stream id, DATA after END_STREAM,
padded or prioritised frames, or ignore the server's windows. What comes back is parsed
frame by frame (header blocks decoded with hpack), so a test can compare the frames both of
the server's request paths send.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import betterproto2
from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x6, 0x7, 0x8, 0x9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x1, 0x3, 0x5
REFUSED_STREAM, CANCEL = 0x7, 0x8

#: How long a test waits for any one thing the server should send.
WAIT = 5.0


def frame(kind: int, payload: bytes = b"", flags: int = 0, stream: int = 0) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def settings_frame(values: dict[int, int]) -> bytes:
    payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())
    return frame(SETTINGS, payload)


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, increment.to_bytes(4, "big"), stream=stream)


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, code.to_bytes(4, "big"), stream=stream)


def grpc_message(message: betterproto2.Message | bytes) -> bytes:
    """A length-prefixed gRPC message (not compressed)."""
    body = message if isinstance(message, bytes) else bytes(message)
    return b"\x00" + len(body).to_bytes(4, "big") + body


def data_frames(stream: int, body: bytes, *, end: bool = True, size: int = MAX_FRAME) -> bytes:
    """``body`` in DATA frames of at most ``size`` bytes, END_STREAM on the last if ``end``."""
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    return b"".join(
        frame(DATA, c, END_STREAM if end and i == len(chunks) - 1 else 0, stream)
        for i, c in enumerate(chunks)
    )


def split_messages(data: bytes) -> list[bytes]:
    """The gRPC messages in a stream's DATA bytes (each checked uncompressed)."""
    out = []
    pos = 0
    while pos < len(data):
        assert data[pos] == 0, "compressed reply"
        size = int.from_bytes(data[pos + 1 : pos + 5], "big")
        out.append(bytes(data[pos + 5 : pos + 5 + size]))
        assert len(out[-1]) == size, "a cut message"
        pos += 5 + size
    return out


@dataclass
class Received:
    """What came back on one stream: each header block (response headers, trailers), the
    DATA bytes and frame count, whether the server ended it, its RST_STREAM code."""

    blocks: list[dict[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    data_frames: int = 0
    ended: bool = False
    reset: int | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def outcome(self) -> tuple[object, ...]:
        """What a gRPC client makes of it: the header blocks, the messages (however the
        DATA was framed), whether the server ended the stream, its reset code."""
        return (
            [dict(b) for b in self.blocks],
            split_messages(bytes(self.data)),
            self.ended,
            self.reset,
        )


class H2Wire:
    """One client connection: :meth:`send` writes bytes, a reader task logs what comes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()
        self.decoder = Decoder()
        #: Every frame the server sent: (type, flags, stream id, payload).
        self.frames: list[tuple[int, int, int, bytes]] = []
        self.streams: dict[int, Received] = {}
        #: The server's SETTINGS (merged, in order).
        self.server_settings: dict[int, int] = {}
        #: The server's GOAWAY: (last stream id, error code, debug data).
        self.goaway: tuple[int, int, bytes] | None = None
        self.eof = False
        #: Connection window the server grants us to send DATA in (its WINDOW_UPDATEs).
        self.send_window = DEFAULT_WINDOW
        #: Each DATA frame received is given back at once, this many times over, to its
        #: stream's window and the connection's (0: the test sends WINDOW_UPDATEs itself).
        self.auto_window = 0
        self._pings = 0
        self._changed = asyncio.Event()
        self._block: tuple[int, int, bytearray] | None = None
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        settings: dict[int, int] | None = None,
        connection_window: int = MAX_WINDOW,
    ) -> H2Wire:
        """Connect (TCP_NODELAY), send the preface, ``settings`` (default: the largest
        stream window) and a connection WINDOW_UPDATE up to ``connection_window``; wait for
        the server's SETTINGS."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = cls(reader, writer)
        values = {SETTINGS_INITIAL_WINDOW_SIZE: MAX_WINDOW} if settings is None else settings
        opening = PREFACE + settings_frame(values)
        if connection_window > DEFAULT_WINDOW:
            opening += window_update(0, connection_window - DEFAULT_WINDOW)
        await wire.send(opening)
        await wire.wait(lambda: any(f[0] == SETTINGS and not f[1] & ACK for f in wire.frames))
        return wire

    async def send(self, *chunks: bytes) -> None:
        """Write each chunk and drain it before the next (each its own TCP segment, as a
        rule, with TCP_NODELAY)."""
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    async def wait(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Until ``predicate()`` holds after some frame came (or already holds)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.eof:
                    raise AssertionError("the server closed the connection")
                self._changed.clear()
                await self._changed.wait()

    async def answered(self, streams: Iterable[int], timeout: float = WAIT) -> list[Received]:
        """Wait until each of ``streams`` was ended or reset by the server."""
        ids = list(streams)
        await self.wait(lambda: all(self.stream(s).done for s in ids), timeout)
        return [self.streams[s] for s in ids]

    async def closed(self, timeout: float = WAIT) -> None:
        """Until the server closed the connection."""
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._task)

    async def window_for(self, total: int) -> None:
        """Until the server's connection WINDOW_UPDATEs have granted ``total`` bytes of
        DATA in all (what a client that keeps to the window may have sent by then)."""
        await self.wait(lambda: self.send_window >= total)

    async def ping(self) -> None:
        """Send a PING and wait for its ACK: the server has taken in everything sent before
        it (h2 answers a PING as it reads it, in order)."""
        self._pings += 1
        payload = self._pings.to_bytes(8, "big")
        await self.send(frame(PING, payload))
        await self.wait(lambda: (PING, ACK, 0, payload) in self.frames)

    def stream(self, sid: int) -> Received:
        return self.streams.setdefault(sid, Received())

    def headers(
        self,
        sid: int,
        path: str,
        *,
        end: bool = False,
        extra: Iterable[tuple[str, str]] = (),
        flags: int = 0,
        prefix: bytes = b"",
        padding: int = 0,
        split: int | None = None,
    ) -> bytes:
        """A gRPC request's HEADERS (``prefix``: PRIORITY fields, with PRIORITY_FLAG in
        ``flags``; ``padding``: that many pad bytes; ``split``: the block cut after that
        many bytes, the rest in a CONTINUATION)."""
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", "etcd"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *extra,
            ]
        )
        first, rest = (block, b"") if split is None else (block[:split], block[split:])
        flags |= END_STREAM if end else 0
        if padding:
            flags |= PADDED
            payload = bytes([padding]) + prefix + first + b"\x00" * padding
        else:
            payload = prefix + first
        if split is None:
            return frame(HEADERS, payload, flags | END_HEADERS, sid)
        return frame(HEADERS, payload, flags, sid) + frame(CONTINUATION, rest, END_HEADERS, sid)

    def request(
        self, sid: int, path: str, message: betterproto2.Message | bytes, **headers: Any
    ) -> bytes:
        """A whole unary request: HEADERS, then the message in DATA with END_STREAM."""
        return self.headers(sid, path, **headers) + data_frames(sid, grpc_message(message))

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = await self.reader.read(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= 9:
                    size = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + size:
                        break
                    kind, flags = buf[3], buf[4]
                    sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                    payload, buf = buf[9 : 9 + size], buf[9 + size :]
                    self.frames.append((kind, flags, sid, payload))
                    self._frame(kind, flags, sid, payload)
                self._changed.set()
        except ConnectionError:
            pass
        finally:
            self.eof = True
            self._changed.set()

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                key = int.from_bytes(payload[i : i + 2], "big")
                self.server_settings[key] = int.from_bytes(payload[i + 2 : i + 6], "big")
            self.writer.write(frame(SETTINGS, flags=ACK))
        elif kind == WINDOW_UPDATE and sid == 0:
            self.send_window += int.from_bytes(payload, "big")
        elif kind == GOAWAY:
            self.goaway = (
                int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                int.from_bytes(payload[4:8], "big"),
                payload[8:],
            )
        elif kind == RST_STREAM:
            self.stream(sid).reset = int.from_bytes(payload, "big")
        elif kind == DATA:
            pad = payload[0] if flags & PADDED else 0
            body = payload[1 : len(payload) - pad] if flags & PADDED else payload
            received = self.stream(sid)
            received.data += body
            received.data_frames += 1
            received.ended = bool(flags & END_STREAM)
            if self.auto_window and payload:
                give = len(payload) * self.auto_window
                self.writer.write(window_update(sid, give) + window_update(0, give))
        elif kind == HEADERS:
            pad = payload[0] if flags & PADDED else 0
            skip = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0)
            self._block = (sid, flags, bytearray(payload[skip : len(payload) - pad]))
            if flags & END_HEADERS:
                self._end_block()
        elif kind == CONTINUATION:
            assert self._block is not None and self._block[0] == sid
            self._block[2].extend(payload)
            if flags & END_HEADERS:
                self._end_block()

    def _end_block(self) -> None:
        assert self._block is not None
        sid, flags, block = self._block
        self._block = None
        fields = self.decoder.decode(bytes(block))
        received = self.stream(sid)
        received.blocks.append({str(k): str(v) for k, v in fields})
        if flags & END_STREAM:
            received.ended = True
