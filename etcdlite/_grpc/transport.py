"""grpclib's HTTP/2 protocol with writes corked per event-loop turn (Client and server),
and header blocks that repeat decoded once.

grpclib writes each HTTP/2 step to the socket at once: a unary request leaves as two TCP
segments (HEADERS, then DATA), and the server wakes up, reads and parses twice per request.
grpc-go batches what one turn of its writer produced into one write; :class:`CorkedProtocol`
does the same for asyncio: everything written during one event-loop turn leaves in one
``send`` at the start of the next turn.

HPACK decoding in pure Python is a large part of a small request's cost. A peer that sends
the same headers again (etcdlite's Client: same path, same ``grpc-timeout`` text; a server's
replies) sends them as references into the dynamic table, or (etcdlite's lean requests) as
literals that are not indexed: a block that leaves the table as it is.
:class:`CachingDecoder` decodes such a block once and reuses the result until a block that
may change the table arrives. :class:`CachingEncoder` does the same on the way
out, for the header lists a server sends with every reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h2.exceptions
from grpclib.client import Channel
from grpclib.client import Handler as ClientHandler
from grpclib.protocol import H2Protocol
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hpack import Decoder, Encoder
from hyperframe import frame as hyperframe

from .guard import Abuse, FrameGuard, Limits
from .headers import check_headers_once
from .intake import RequestIntake
from .receive import FrameSplitter

__all__ = [
    "PING_ACK_DELAY",
    "CachingDecoder",
    "CachingEncoder",
    "CorkedChannel",
    "CorkedProtocol",
    "CorkedTransport",
    "ServerProtocol",
]

#: Cached header blocks per connection (a client uses one per RPC method it calls).
MAX_CACHED_BLOCKS = 64
#: Seconds a Client connection holds a PING ACK that nothing else is going out with.
PING_ACK_DELAY = 0.02
_PING_ACK_HEADER = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00"  # PING, ACK, stream 0


def _only_ping_acks(data: bytes) -> bool:
    """Whether ``data`` is nothing but PING ACK frames (17 bytes each)."""
    if not data or len(data) % 17:
        return False
    return all(data[i : i + 9] == _PING_ACK_HEADER for i in range(0, len(data), 17))


def _table_neutral(block: bytes) -> bool:
    """Whether no field of an HPACK block touches the dynamic table's contents: indexed
    references (RFC 7541 6.1), literals without indexing (6.2.2) and never indexed (6.2.3)
    whose name is a static-table index or a literal (etcdlite's Client sends its requests
    so). An incrementally indexed literal (6.2.1) adds to the table, a size update (6.3)
    resizes it, and a reference into the dynamic table reads it (only a block that left
    the table as it was may be cached, and the references stay valid while it is)."""
    pos, end = 0, len(block)
    while pos < end:
        b = block[pos]
        if b & 0x80:  # indexed: the index continues while the low 7 bits are all ones
            pos += 1
            if b & 0x7F == 0x7F:
                while pos < end and block[pos] & 0x80:
                    pos += 1
                pos += 1
            continue
        if b & 0xE0:  # 01xxxxxx incremental indexing, 001xxxxx size update
            return False
        pos += 1
        strings = 1 if b & 0x0F else 2  # the name is an index, or a literal
        if b & 0x0F == 0x0F:
            while pos < end and block[pos] & 0x80:
                pos += 1
            pos += 1
        for _ in range(strings):
            if pos >= end:
                return False
            n = block[pos] & 0x7F
            pos += 1
            if n == 0x7F:
                shift = 0
                n = 0x7F
                while pos < end:
                    c = block[pos]
                    pos += 1
                    n += (c & 0x7F) << shift
                    shift += 7
                    if not c & 0x80:
                        break
            pos += n
    return pos == end


class _HpackCache:
    """An hpack coder behind a cache of table-neutral blocks: attributes (the table size
    settings h2 sets) pass through to the coder, and setting one empties the cache."""

    def __init__(self, coder: Decoder | Encoder) -> None:
        object.__setattr__(self, "_coder", coder)
        object.__setattr__(self, "_cache", {})
        #: What users of the cache derived from cached entries (the server's intake keeps
        #: its verdicts on request header blocks here): emptied with the cache, since it
        #: holds only while the table stays as it is.
        object.__setattr__(self, "derived", {})

    def _remember(self, key: Any, value: Any, block: bytes) -> None:
        """Keep ``value`` for ``key`` if ``block`` left the table as it was; else the
        table may have moved, and nothing cached still holds."""
        cache = self._cache
        if _table_neutral(block):
            if len(cache) >= MAX_CACHED_BLOCKS:
                self._forget()
            cache[key] = value
        else:
            self._forget()

    def _forget(self) -> None:
        self._cache.clear()
        self.derived.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coder, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._forget()
        setattr(self._coder, name, value)


class CachingDecoder(_HpackCache):
    """h2's HPACK ``Decoder``, with the results of table-neutral blocks cached; any other
    block (or a settings change) may move the table, so it empties the cache."""

    def cached(self, block: bytes) -> Any:
        """The header list h2 got for ``block`` (decoded raw) if it is cached: a pure
        lookup, the table is not touched (``None`` if not cached)."""
        return self._cache.get((block, True))

    def decode(self, data: bytes, raw: bool = False) -> Any:
        key = (bytes(data), raw)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        headers = self._coder.decode(data, raw=raw)
        self._remember(key, headers, key[0])
        return headers


class CachingEncoder(_HpackCache):
    """h2's HPACK ``Encoder``, with the blocks of header lists that encoded to references
    only (table-neutral) cached; any other block, a pending table resize or a settings
    change empties the cache, since the table may have moved."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        encoder = self._coder
        items = tuple(headers) if isinstance(headers, list | tuple) else None
        if items is None or not all(type(h) is tuple and len(h) == 2 for h in items):
            # a dict, or sensitive (never-indexed) fields: hpack's own way, uncached
            self._forget()
            return bytes(encoder.encode(headers, huffman))
        key = (items, huffman)
        if not encoder.header_table.resized:
            hit = self._cache.get(key)
            if hit is not None:
                return bytes(hit)
        block = bytes(encoder.encode(items, huffman))
        self._remember(key, block, block)
        return block

    def encode_fixed(self, items: tuple[tuple[bytes, bytes], ...]) -> bytes:
        """:meth:`encode` for a constant tuple of valid, lower-case byte fields (the lean
        path's reply headers), without checking its shape."""
        if not self._coder.header_table.resized:
            hit = self._cache.get((items, True))
            if hit is not None:
                return bytes(hit)
        return self.encode(list(items))


class CorkedTransport:
    """The part of ``asyncio.Transport`` grpclib uses, with writes joined per loop turn."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending = []
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class AckHoldingTransport(CorkedTransport):
    """The Client's :class:`CorkedTransport`: PING ACKs leave :data:`PING_ACK_DELAY` seconds
    after the PING came, not at once.

    etcd (grpc-go) measures the connection with BDP PINGs: a DATA frame that arrives while
    no BDP PING is out makes it send a WINDOW_UPDATE and a new PING. Answered at once, as h2
    answers, every request of a sequential client drew both, two of the five frames each
    reply carried, and a send of their own. The ACK carries nothing etcd waits on (grpc-go
    times it to size its receive window, which may only grow; its keepalive PINGs allow
    seconds), so it waits: the requests of the next 20 ms draw no new PING.
    """

    __slots__ = ("_acks", "_timer")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self._acks: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data and _only_ping_acks(ack := bytes(data)):
            self._acks.append(ack)
            if self._timer is None:
                self._timer = self._loop.call_later(PING_ACK_DELAY, self._send_acks)
            return
        super().write(data)

    def _send_acks(self) -> None:
        self._timer = None
        acks, self._acks = self._acks, []
        self._pending += acks
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._send_acks()
        super().close()

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._acks = []
        super().abort()


class CorkedProtocol(H2Protocol):
    """grpclib's ``H2Protocol`` over a :class:`CorkedTransport`."""

    transport_class: type[CorkedTransport] = CorkedTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(self.transport_class(transport))  # type: ignore[arg-type]
        h2conn = self.connection._connection
        h2conn.decoder = CachingDecoder(h2conn.decoder)  # type: ignore[assignment]
        h2conn.encoder = CachingEncoder(h2conn.encoder)  # type: ignore[assignment]


#: Streams under h2's concurrency bound at which new ones are refused (see ServerProtocol).
STREAM_SLACK = 4
#: Seconds a connection that was sent GOAWAY for abuse stays open, its input dropped.
GOAWAY_GRACE = 0.5


class ServerProtocol(CorkedProtocol):
    """The server's connections: :class:`CorkedProtocol` behind a :class:`FrameGuard`.

    Rules it adds to grpclib's protocol:

    * a client that breaks a guard bound, or makes h2 raise a protocol error, gets GOAWAY
      with the error code (and, for floods, grpc-go's debug text) before the connection
      closes; grpclib would close TCP without a word. What the client sends after the
      GOAWAY is read and dropped for ``GOAWAY_GRACE`` seconds before the close: closing a
      socket with unread bytes makes the kernel send RST, which can destroy the GOAWAY
      before the client reads it;
    * a connection whose client has not sent the HTTP/2 preface within
      ``preface_timeout`` seconds is closed (a socket that never speaks costs a slot);
    * events grpclib has no handler for (an unknown frame type, which RFC 9113 says to
      ignore) are ignored instead of raising from grpclib's event processor;
    * h2 checks each distinct received header list once (:func:`.headers.check_headers_once`)
      and reads frames whose ``repr`` is cheap (:func:`quiet_frames`);
    * with the lean path's handler, what the guard lets through goes to a
      :class:`~.intake.RequestIntake`, which takes whole lean requests past h2 and gives h2
      everything else in order; the handler starts the requests of a read once all of it
      has been taken in.
    """

    def __init__(
        self,
        *args: Any,
        limits: Limits | None = None,
        preface_timeout: float = 10.0,
    ) -> None:
        super().__init__(*args)
        self._preface_timeout = preface_timeout
        self._preface_timer: asyncio.TimerHandle | None = None
        self._dropping = False
        self._limits = limits or Limits()
        self.guard = FrameGuard(self._limits)
        #: Takes whole lean requests past h2 (with the lean path's handler only).
        self.intake: RequestIntake | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._preface_timer = asyncio.get_running_loop().call_later(
            self._preface_timeout, self._no_preface
        )
        check_headers_once(self.connection._connection)
        quiet_frames(self.connection._connection)  # the server formats a repr per frame too
        handler = self.handler
        take = getattr(handler, "take", None)
        if take is not None:  # the lean path's handler: whole requests taken past h2
            self.intake = RequestIntake(self, self._feed_h2, take)
            handler.intake = self.intake  # type: ignore[attr-defined]
        if hasattr(handler, "closed_streams"):  # the lean path's handler counts them
            h2conn = self.connection._connection
            # Below h2's own bound (which ends the connection): a stream we have released
            # can stay open in h2 until the client's END_STREAM arrives.
            self.guard = FrameGuard(
                self._limits,
                max_streams=h2conn.local_settings.max_concurrent_streams - STREAM_SLACK,
                closed_streams=lambda: int(handler.closed_streams),
            )

    def _refuse_stream(self, stream_id: int, header_block: bytes) -> None:
        """A stream over the concurrency bound: decode its header block (the client's HPACK
        table moved with it), then RST_STREAM REFUSED_STREAM; h2 never sees the stream."""
        h2conn = self.connection._connection
        try:
            h2conn.decoder.decode(header_block)
        except Exception:
            self._goaway(int(ErrorCodes.COMPRESSION_ERROR), "bad header block")
            return
        self.connection.flush()  # h2's pending frames first
        rst = (4).to_bytes(3, "big") + b"\x03\x00" + stream_id.to_bytes(4, "big")
        self.connection._transport.write(rst + int(ErrorCodes.REFUSED_STREAM).to_bytes(4, "big"))

    def _no_preface(self) -> None:
        self._preface_timer = None
        if not self.guard.preface_received:
            self._close("no HTTP/2 preface in time")

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        try:
            data = self.guard.feed(data)
        except Abuse as e:
            self._goaway(e.code, e.debug)
            return
        if self._preface_timer is not None and self.guard.preface_received:
            self._preface_timer.cancel()
            self._preface_timer = None
        if not data and not self.guard.refusals:
            return
        receive = self._feed_h2 if self.intake is None else self.intake.feed
        done = 0
        for offset, stream_id, block in self.guard.refusals:
            if offset > done and not receive(data[done:offset]):
                return
            # a request's HEADERS the intake holds was encoded before the refused block
            if self.intake is not None and not self.intake.release():
                return
            done = offset
            self._refuse_stream(stream_id, block)
        if done < len(data) and not receive(data[done:]):
            return
        # the lean path's requests start once their DATA is in (see .unary)
        run_pending = getattr(self.handler, "run_pending", None)
        if run_pending is not None:
            run_pending()
        self.connection.flush()

    def _feed_h2(self, data: bytes) -> bool:
        """h2 takes ``data``; grpclib processes what it made of it. False if that ended the
        connection."""
        connection = self.connection
        try:
            events = connection.feed(data)
        except h2.exceptions.ProtocolError as e:
            code = getattr(e, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
            self._goaway(int(code), str(e))
            return False
        connection.flush()
        processor = self.processor
        known = getattr(processor, "processors", None)
        for event in events:
            if known is not None and event.__class__ not in known:
                continue  # e.g. UnknownFrameReceived: RFC 9113 says ignore it
            processor.process(event)
        return True

    def _goaway(self, code: int, debug: str) -> None:
        h2conn = self.connection._connection
        with contextlib.suppress(Exception):  # the connection may already be closed
            h2conn.close_connection(error_code=code, additional_data=debug.encode()[:256])
            self.connection.flush()
        self._dropping = True
        asyncio.get_running_loop().call_later(GOAWAY_GRACE, self._close, debug)

    def _close(self, reason: str) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
            self._preface_timer = None
        self.processor.close(reason)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
            self._preface_timer = None
        super().connection_lost(exc)


def _quiet(cls: type[hyperframe.Frame]) -> type[hyperframe.Frame]:
    """``cls`` with a ``repr`` that does not serialize the frame."""

    def __repr__(self: hyperframe.Frame) -> str:
        return f"{cls.__name__}(stream_id={self.stream_id}, flags={self.flags!r})"

    return type(cls.__name__, (cls,), {"__slots__": (), "__repr__": __repr__})


#: hyperframe's frame classes → the same with a cheap ``repr``.
_QUIET: dict[type, type] = {
    cls: _quiet(cls)
    for cls in (
        hyperframe.DataFrame,
        hyperframe.HeadersFrame,
        hyperframe.ContinuationFrame,
        hyperframe.PingFrame,
        hyperframe.WindowUpdateFrame,
        hyperframe.SettingsFrame,
        hyperframe.RstStreamFrame,
        hyperframe.GoAwayFrame,
    )
}


class QuietFrameBuffer(FrameBuffer):
    """h2's ``FrameBuffer``, yielding frames whose ``repr`` is cheap.

    h2 formats ``repr(frame)`` for a trace log line on every frame it receives, logged or
    not; hyperframe's ``repr`` of a DATA frame copies and hex-encodes the whole body. That
    was ~10% of a small call's client CPU and ~25% of a 1000-key range's (measured with
    the repr stubbed out). The frames become subclasses of their classes (same fields,
    same handlers: the connection's dispatch table gets the subclasses too)."""

    def __next__(self) -> hyperframe.Frame:
        frame = super().__next__()
        quiet = _QUIET.get(frame.__class__)
        if quiet is not None:
            frame.__class__ = quiet
        return frame


def quiet_frames(h2conn: Any) -> None:
    """Make ``h2conn`` read frames whose ``repr`` is cheap (:class:`QuietFrameBuffer`)."""
    table = h2conn._frame_dispatch_table
    for cls, quiet in _QUIET.items():
        if cls in table:
            table[quiet] = table[cls]
    h2conn.incoming_buffer.__class__ = QuietFrameBuffer


class ClientProtocol(CorkedProtocol):
    """The Client's connections: corked writes, PING ACKs held, frames' reprs cheap, the
    reply DATA of lean calls taken without h2 (:class:`~etcdlite._grpc.receive.FrameSplitter`)."""

    transport_class = AckHoldingTransport
    splitter: FrameSplitter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        quiet_frames(self.connection._connection)
        self.splitter = FrameSplitter(self)

    def data_received(self, data: bytes) -> None:
        if self.splitter is None:  # not connected yet (grpclib's own handling)
            super().data_received(data)
        else:
            self.splitter.feed(data)


class CorkedChannel(Channel):
    """grpclib's client ``Channel`` over :class:`ClientProtocol` connections."""

    def _protocol_factory(self) -> H2Protocol:
        return ClientProtocol(ClientHandler(), self._config, self._h2_config)
