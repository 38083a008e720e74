"""Bounds on what one client connection may make the server do, read from frame headers.

h2 only looks at a frame once all of it has arrived, answers every PING and SETTINGS, and
takes a client's GOAWAY as the end of the connection. :class:`FrameGuard` reads the 9-byte
header of every frame a client sends, before h2 does, and keeps these rules:

* **Frame size.** A frame longer than the server's ``SETTINGS_MAX_FRAME_SIZE`` is refused
  from its header (GOAWAY FRAME_SIZE_ERROR, as etcd does), not buffered first.
* **Floods.** PING, SETTINGS and RST_STREAM frames each draw from a token bucket (a burst,
  refilled per second). A client that empties one gets GOAWAY ENHANCE_YOUR_CALM with
  grpc-go's debug text (``too_many_pings`` for pings): answering a flood costs CPU on the
  one event loop and, for a peer that never reads, memory. Streams opened and reset in a
  loop (CVE-2023-44487, "rapid reset") are the RST_STREAM case.
* **Concurrent streams.** A HEADERS frame that opens a stream while ``max_streams`` are
  already open is not passed to h2 (which would end the whole connection): the stream is
  refused with RST_STREAM REFUSED_STREAM, as RFC 9113 §5.1.2 allows, its header block is
  still decoded (so HPACK stays in step) and the frames that follow for it are dropped.
* **A client's GOAWAY** is taken out of the bytes h2 sees: grpc-go lets the streams already
  open finish (a client closing its channel sends GOAWAY, then the rest of its requests),
  where h2 would close the connection and fail them. No new stream follows a GOAWAY from
  a well-behaved client, so nothing else changes.

The guard is sans-IO: :meth:`feed` takes bytes and returns the bytes for h2, or raises
:class:`Abuse` with the HTTP/2 error code and debug text to send with GOAWAY.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .http2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
)

__all__ = ["PREFACE", "Abuse", "FrameGuard", "Limits"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAME_SIZE_ERROR = 0x6
ENHANCE_YOUR_CALM = 0xB


_STREAM_FRAMES = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, WINDOW_UPDATE, CONTINUATION})


class Abuse(Exception):
    """The client broke a bound: send GOAWAY with ``code`` and ``debug``, then close."""

    def __init__(self, code: int, debug: str) -> None:
        super().__init__(debug)
        self.code = code
        self.debug = debug


@dataclass(frozen=True)
class Limits:
    """Per-connection bounds (bursts and per-second refills of the token buckets)."""

    max_frame_size: int = 16384
    ping_burst: int = 100
    pings_per_second: float = 20.0
    settings_burst: int = 100
    settings_per_second: float = 20.0
    reset_burst: int = 1000
    resets_per_second: float = 200.0


class _Bucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, capacity: int, rate: float, now: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1
        return True


class FrameGuard:
    """Reads a client's frame headers ahead of h2 (see the module docstring)."""

    def __init__(
        self,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_streams: int | None = None,
        closed_streams: Callable[[], int] | None = None,
    ) -> None:
        """``closed_streams`` counts the streams the server has finished with; a stream
        that would make more than ``max_streams`` of those it let through open is listed in
        :attr:`refusals` instead of reaching h2."""
        self.limits = limits = limits or Limits()
        self._max_streams = max_streams
        self._closed_streams = closed_streams
        #: Streams refused by the last :meth:`feed`: (offset in the bytes it returned,
        #: stream id, header block). The block must be decoded after h2 has taken the
        #: bytes before that offset (HPACK is one state for the connection, in order).
        self.refusals: list[tuple[int, int, bytes]] = []
        self._out: list[bytes] = []  # the bytes the current feed has put out so far
        self._accepted = 0  # streams let through to h2
        self._highest = 0  # the highest stream id a client HEADERS opened
        self._refused: set[int] = set()  # refused ids above the highest accepted one
        self._block: bytearray | None = None  # a refused stream's header block so far
        self._block_stream = 0
        self._block_flags = 0  # the HEADERS frame's flags (padding, priority)
        self._block_end = False  # whether the frame being dropped ends the header block
        self._block_first = 0  # the HEADERS frame's payload length
        self._clock = clock
        now = clock()
        self._buckets = {
            PING: (_Bucket(limits.ping_burst, limits.pings_per_second, now), "too_many_pings"),
            SETTINGS: (
                _Bucket(limits.settings_burst, limits.settings_per_second, now),
                "too_many_settings",
            ),
            RST_STREAM: (
                _Bucket(limits.reset_burst, limits.resets_per_second, now),
                "too_many_resets",
            ),
        }
        self._preface = len(PREFACE)  # preface bytes still to pass through
        self._header = b""  # a frame header cut by a read
        self._pass = 0  # payload bytes still to pass through
        self._drop = 0  # payload bytes still to drop (a GOAWAY's)
        #: Whether the client sent GOAWAY (it opens no more streams).
        self.goaway_received = False

    @property
    def preface_received(self) -> bool:
        """Whether the client's connection preface has fully arrived."""
        return not self._preface

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` for h2, in order, less any GOAWAY frame."""
        end = len(data)
        pos = 0
        if self._preface:  # the client's connection preface passes through as it is
            pos = min(self._preface, end)
            self._preface -= pos
            if pos == end:
                return data
        out: list[bytes] = []
        start = 0  # start of the bytes kept since the last cut
        if self.refusals:
            self.refusals = []
        self._out = out
        while pos < end:
            if self._pass:
                step = min(self._pass, end - pos)
                self._pass -= step
                pos += step
                continue
            if self._drop:
                step = min(self._drop, end - pos)
                if self._block is not None:
                    self._block += data[pos : pos + step]
                self._drop -= step
                pos += step
                start = pos
                if not self._drop and self._block is not None and self._block_end:
                    self._refused_block_done()
                continue
            if self._header or end - pos < 9:
                need = 9 - len(self._header)
                piece = data[pos : pos + need]
                if pos > start:
                    out.append(data[start:pos])
                self._header += piece
                pos += len(piece)
                start = pos
                if len(self._header) < 9:
                    break
                header, self._header = self._header, b""
                if self._frame(header):
                    out.append(header)
                continue
            header = data[pos : pos + 9]
            if header[3] == HEADERS and pos > start:
                # a refused stream is recorded at its offset in the output: flush first
                out.append(data[start:pos])
                start = pos
            if self._frame(header):
                pos += 9
            else:
                if pos > start:
                    out.append(data[start:pos])
                pos += 9
                start = pos
        if start < end:
            out.append(data[start:end])
        if start == 0 and len(out) == 1:
            return data
        return b"".join(out)

    def _frame(self, header: bytes) -> bool:
        """Account for a frame; whether its bytes go to h2 (else they are dropped)."""
        length = int.from_bytes(header[:3], "big")
        kind = header[3]
        if length > self.limits.max_frame_size:
            raise Abuse(FRAME_SIZE_ERROR, f"frame of {length} bytes over the maximum")
        if kind == GOAWAY:
            self.goaway_received = True
            self._drop = length
            return False
        if (
            self._max_streams is not None
            # only a HEADERS opens a stream; other frames matter only for refused streams
            and (kind == HEADERS or self._refused or self._block is not None)
            and kind in _STREAM_FRAMES
            and not self._stream_frame(header, length)
        ):
            return False
        limit = self._buckets.get(kind)
        if limit is not None and (kind == RST_STREAM or not header[4] & ACK):
            bucket, debug = limit
            if not bucket.take(self._clock()):
                raise Abuse(ENHANCE_YOUR_CALM, debug)
        self._pass = length
        return True

    def _stream_frame(self, header: bytes, length: int) -> bool:
        """Concurrent streams: whether a stream's frame goes to h2 (else it is dropped)."""
        kind, flags = header[3], header[4]
        sid = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if kind == CONTINUATION and self._block is not None and sid == self._block_stream:
            self._drop_block(flags, length)
            return False
        if sid in self._refused:
            self._drop = length
            return False
        if kind != HEADERS or sid <= self._highest or not sid & 1:
            return True
        self._highest = sid
        assert self._closed_streams is not None and self._max_streams is not None
        if self._accepted - self._closed_streams() < self._max_streams:
            self._accepted += 1
            if self._refused:
                self._refused = {r for r in self._refused if r > sid}
            return True
        self._refused.add(sid)
        self._block = bytearray()
        self._block_stream = sid
        self._block_flags = flags
        self._block_first = length
        self._drop_block(flags, length)
        return False

    def _drop_block(self, flags: int, length: int) -> None:
        self._drop = length
        self._block_end = bool(flags & END_HEADERS)
        if not length and self._block_end:
            self._refused_block_done()

    def _refused_block_done(self) -> None:
        """A refused stream's whole header block has been read: hand it over without its
        padding and priority fields."""
        block, self._block = bytes(self._block or b""), None
        flags = self._block_flags
        # The HEADERS frame's own payload: [pad length] [priority: 5] fragment [padding];
        # CONTINUATION payloads that follow are fragment only.
        first, rest = block[: self._block_first], block[self._block_first :]
        pad = first[0] if flags & PADDED and first else 0
        skip = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0)
        fragment = first[skip : len(first) - pad] + rest
        offset = sum(len(b) for b in self._out)
        self.refusals.append((offset, self._block_stream, fragment))
