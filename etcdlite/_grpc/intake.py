"""The server connection's receive path: a lean unary request that arrives whole is taken
without h2 or grpclib making a stream of it; every other frame goes through h2.

For each request h2 parses two frames into hyperframe objects, runs them through its
connection and stream state machines (counting the open streams on every HEADERS), and
grpclib makes a stream with its buffer and events: most of a small request's server CPU.
A unary call's request is almost always one HEADERS frame and one DATA frame with
END_STREAM, written together by the client. :class:`RequestIntake` cuts what a connection
reads into frames itself (9-byte headers) and *takes* such a pair when all of these hold;
otherwise h2 gets the frames and decides (and raises) as it always did:

* the header block is one h2 decoded before and cached as leaving the HPACK table as it
  was (:meth:`~.transport.CachingDecoder.cached`: a lookup, the table is not touched), and
  the lean handler accepted the same block for its lean path when h2 gave it that request
  (:meth:`learn`): the verdict (method, deadline, token) holds for every later copy of the
  block while the table stays as it is (the decoder drops the verdicts with its cache);
* HEADERS has END_HEADERS and no END_STREAM, padding or priority; the DATA frame follows it
  directly, on the same stream, whole in the bytes read, with END_STREAM and no padding,
  and holds exactly one uncompressed gRPC message (its 5-byte prefix announces the rest);
* h2's connection is open (SERVER_OPEN), the stream id is a client's (odd) and above every
  stream h2 has seen, and the DATA fits h2's frame size and both inbound windows.

What h2 and grpclib would have done with the pair is done here: h2's highest inbound stream
id moves to the stream (a later HEADERS on a lower id is h2's protocol error, as before);
the connection's inbound window is debited and the bytes are processed at once, with the
WINDOW_UPDATE h2's window manager asks for; grpclib's counters move. The request goes to
the handler (:meth:`~.unary.UnaryHandler.take`) with a :class:`~.taken.TakenStream`.

Frames on a taken stream that is not finished yet are h2's to answer, with the stream's
state as h2 would hold it (half-closed by the client, which may still send these):

* WINDOW_UPDATE: counted in the stream's send window (h2 ignores it: a stream it does not
  hold);
* RST_STREAM: the request is cancelled, as grpclib cancels it on h2's event;
* DATA or HEADERS: h2 would reset the stream (STREAM_CLOSED) and cancel the request; the
  request is cancelled and h2 is told the stream was reset, so it sends that RST_STREAM.

A lean request's HEADERS whose DATA has not arrived yet is held back (not given to h2)
until the next read, as an incomplete frame is: the request can do nothing without its
message. Not when h2 would answer the HEADERS itself (a stream id it refuses, a connection
no longer open), nor for a request with a deadline (h2's path counts it from the HEADERS
and answers DEADLINE_EXCEEDED if the message is late): those HEADERS go to h2 at once. A
frame split across reads waits whole too; a frame header announcing more than h2's
maximum frame size sends every byte from there on to h2 (it refuses the frame). A held
HEADERS goes to h2 before a stream the frame guard refuses after it (:meth:`release`): the
protocol decodes the refused block itself, and HPACK blocks must be decoded in order.
Frames go to h2 in order, in one ``receive_data`` per run between taken requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy

from .http2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    HEADERS,
    PADDED,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
)
from .taken import TakenStream

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RequestIntake", "Verdict"]

#: HEADERS flags a taken request's may carry (END_HEADERS must be set).
_HEADERS_FLAGS = END_HEADERS | END_STREAM | PADDED | PRIORITY_FLAG
_LARGEST_WINDOW = 2**31 - 1
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Verdict(NamedTuple):
    """What the lean handler made of a request's headers (see :meth:`UnaryHandler.accept
    <.unary.UnaryHandler.accept>`): the method's path and entry, the ``grpc-timeout`` in
    seconds, the token."""

    path: str
    method: Any
    timeout: float | None
    token: str | None


class RequestIntake:
    """Receives a server connection's bytes (see the module docstring).

    ``feed_h2(data)`` gives h2 whole frames and grpclib their events (False: the connection
    ended); ``take(stream, verdict)`` hands a taken request to the handler."""

    __slots__ = (
        "_blocks",
        "_closed",
        "_feed_h2",
        "_h2conn",
        "_in_block",
        "_pending",
        "_preface",
        "_protocol",
        "_take",
        "_through",
        "live",
        "taken",
        "window_changed",
    )

    def __init__(
        self,
        protocol: Any,
        feed_h2: Callable[[bytes], bool],
        take: Callable[[TakenStream, Verdict], None],
    ) -> None:
        self._protocol = protocol
        self._h2conn = protocol.connection._connection
        self._feed_h2 = feed_h2
        self._take = take
        self._pending = b""  # the start of a frame not complete yet (or a held request)
        self._preface = len(_PREFACE)  # bytes of the client's preface still to come
        self._in_block = False  # a HEADERS/PUSH_PROMISE without END_HEADERS was seen
        self._through = False  # h2 holds a partial frame: it gets all bytes from now on
        self._closed = False  # the connection ended: nothing more is read
        #: HEADERS blocks given to h2 in the current run, by stream (for :meth:`learn`).
        self._blocks: dict[int, bytes] = {}
        #: Taken streams not finished yet, by id.
        self.live: dict[int, TakenStream] = {}
        #: Set when an outbound window may have grown (a reply over the windows waits).
        self.window_changed = asyncio.Event()
        #: Requests taken so far (tests read it).
        self.taken = 0

    def learn(self, sid: int, verdict: Verdict, headers: list[tuple[str, str]]) -> None:
        """The lean handler accepted stream ``sid``, which h2 just gave it with ``headers``,
        for its lean path: later copies of its header block may be taken.

        Only if the block is cached (table-neutral, so it may repeat) *and* its cached
        meaning is still ``headers``: h2 decoded the whole run before the handler saw it,
        and a later block of the run may have moved the table, after which the same bytes,
        sent again, meant other headers (and were cached so)."""
        block = self._blocks.get(sid)
        if block is None:
            return
        decoder = self._h2conn.decoder
        current = decoder.cached(block)
        if current is None or len(current) != len(headers):
            return
        for (name, value), (key, field) in zip(current, headers, strict=True):
            if name != key.encode() or value != field.encode():
                return
        decoder.derived[block] = verdict

    def feed(self, data: bytes) -> bool:
        """Take ``data`` from the connection; False if the connection ended."""
        if self._closed:
            return False
        if self._through:
            return self._to_h2(data)
        if self._preface:
            # the client's connection preface precedes the frames: h2's to check
            n = min(self._preface, len(data))
            self._preface -= n
            if not self._to_h2(data[:n]):
                return False
            data = data[n:]
        if self._pending:
            data = self._pending + data
            self._pending = b""
        h2conn = self._h2conn
        verdicts: dict[bytes, Verdict] = h2conn.decoder.derived
        live = self.live
        unpack = FRAME_HEADER.unpack_from
        end = len(data)
        pos = start = 0  # start: the first byte of the run h2 has not been given yet
        moved = False  # a frame in the run may grow an outbound window
        blocks = False  # the run holds a header block h2 may not have decoded before
        while pos + 9 <= end:
            hi, lo, ftype, flags, sid = unpack(data, pos)
            stop = pos + 9 + (hi << 16 | lo)
            if stop > end:
                if stop - pos > h2conn.max_inbound_frame_size + 9:
                    # too large: h2's to refuse, once it holds the whole frame; from here
                    # on h2 holds a partial frame, so every byte goes to h2
                    self._through = True
                    return self._run(data[start:], moved)
                break
            sid &= 0x7FFFFFFF
            if ftype == HEADERS and not self._in_block:
                if flags & _HEADERS_FLAGS == END_HEADERS and sid & 1:
                    block = data[pos + 9 : stop]
                    verdict = verdicts.get(block)
                    if verdict is not None and blocks:
                        # a header block before this one in the run may change the HPACK
                        # table, and with it what these bytes mean: h2 decodes the run
                        # first (emptying the verdicts if it did), then the verdict counts
                        if not self._run(data[start:pos], moved):
                            return False
                        start, moved, blocks = pos, False, False
                        verdict = verdicts.get(block)
                    if verdict is None:
                        self._blocks[sid] = block
                    else:
                        after = self._pair(data, pos, stop, sid)
                        if after < 0:  # its DATA is not here whole yet
                            if self._may_hold(sid, verdict):
                                break  # hold both
                            after = 0
                        if after:
                            if start < pos and not self._run(data[start:pos], moved):
                                return False
                            start, moved = pos, False
                            if self._admit(data, stop, after, sid, verdict):
                                pos = start = after
                                continue
                if sid in live:
                    self._reset(sid, StreamClosedBy.SEND_RST_STREAM)
            elif sid in live:
                if ftype == WINDOW_UPDATE:
                    if stop - pos == 13:
                        self._credit(live[sid], data, pos + 9)
                    moved = True
                elif ftype == RST_STREAM:
                    self._reset(sid, StreamClosedBy.RECV_RST_STREAM)
                elif ftype == DATA:
                    self._reset(sid, StreamClosedBy.SEND_RST_STREAM)
            elif sid == 0 and ftype in (WINDOW_UPDATE, SETTINGS):
                moved = True
            if ftype in (HEADERS, PUSH_PROMISE, CONTINUATION):
                blocks = True
            if ftype in (HEADERS, PUSH_PROMISE):
                self._in_block = not flags & END_HEADERS
            elif ftype == CONTINUATION and flags & END_HEADERS:
                self._in_block = False
            pos = stop
        if pos < end:
            self._pending = data[pos:]
        if start < pos:
            return self._run(data[start:pos], moved)
        return True

    def release(self) -> bool:
        """Give h2 a held request's HEADERS now (False if that ended the connection): what
        follows in the stream is not fed here first (a stream the guard refuses, whose
        header block the protocol decodes itself), and the client's HPACK encoder encoded
        the held block before it. At a refusal the bytes fed so far end on a frame
        boundary, so what is pending is whole frames (a held HEADERS) or nothing."""
        if self._closed:
            return False
        if self._through or not self._pending:
            return True
        held, self._pending = self._pending, b""
        return self._run(held, False)

    def _pair(self, data: bytes, pos: int, stop: int, sid: int) -> int:
        """Where the DATA frame that completes the request whose HEADERS is
        ``data[pos:stop]`` ends, if it follows as a taken request's must; -1 if the bytes
        so far could still make one (hold them); 0 if not."""
        end = len(data)
        if stop + 9 > end:
            return -1
        hi, lo, ftype, flags, dsid = FRAME_HEADER.unpack_from(data, stop)
        size = hi << 16 | lo
        if ftype != DATA or dsid & 0x7FFFFFFF != sid or flags != END_STREAM or size < 5:
            return 0
        after = stop + 9 + size
        if after > end:
            return -1 if size <= self._h2conn.max_inbound_frame_size else 0
        body = stop + 9
        if data[body] or int.from_bytes(data[body + 1 : body + 5], "big") != size - 5:
            return 0  # compressed, or not one whole message: h2's path answers it
        return int(after)

    def _may_hold(self, sid: int, verdict: Verdict) -> bool:
        """Whether a learned HEADERS on stream ``sid`` whose DATA is not here whole may wait
        for it, unseen by h2: not if h2 would answer the HEADERS itself (a stream id it
        refuses, a connection not open), nor if the request has a deadline (h2's path counts
        it from the HEADERS and answers DEADLINE_EXCEEDED while the message is to come)."""
        h2conn = self._h2conn
        return (
            verdict.timeout is None
            and sid > h2conn.highest_inbound_stream_id
            and h2conn.state_machine.state is ConnectionState.SERVER_OPEN
        )

    def _admit(self, data: bytes, stop: int, after: int, sid: int, verdict: Verdict) -> bool:
        """Take the request whose DATA frame is ``data[stop:after]`` if h2, as it stands
        now, would take the pair without a word; whether taken."""
        h2conn = self._h2conn
        size = after - stop - 9
        window = h2conn._inbound_flow_control_window_manager
        if (
            h2conn.state_machine.state is not ConnectionState.SERVER_OPEN
            or sid <= h2conn.highest_inbound_stream_id
            or size > h2conn.max_inbound_frame_size
            or size > window.current_window_size
            or size > h2conn.local_settings.initial_window_size
        ):
            return False
        h2conn.highest_inbound_stream_id = sid
        window.window_consumed(size)
        increment = window.process_bytes(size)  # the message is read at once
        conn = self._protocol.connection
        if increment:
            update = FRAME_HEADER.pack(0, 4, WINDOW_UPDATE, 0, 0) + increment.to_bytes(4, "big")
            conn._transport.write(update)
        conn.data_received += size
        conn.last_data_received = time.monotonic()
        conn.streams_started += 1
        conn.streams_succeeded += 1
        stream = TakenStream(sid, conn, h2conn, self.live, self.window_changed)
        stream.message = data[stop + 14 : after]
        self.live[sid] = stream
        self.taken += 1
        self._take(stream, verdict)
        return True

    def _credit(self, stream: TakenStream, data: bytes, at: int) -> None:
        increment = int.from_bytes(data[at : at + 4], "big") & 0x7FFFFFFF
        if not increment:
            return  # h2 refuses the frame (a connection error)
        stream.credit += increment
        if stream.stream_window() > _LARGEST_WINDOW:
            # h2 resets a stream whose window overflows (FLOW_CONTROL_ERROR)
            self._reset(stream.id, StreamClosedBy.SEND_RST_STREAM)
            code = int(ErrorCodes.FLOW_CONTROL_ERROR).to_bytes(4, "big")
            rst = FRAME_HEADER.pack(0, 4, RST_STREAM, 0, stream.id) + code
            self._protocol.connection._transport.write(rst)

    def _reset(self, sid: int, closed_by: StreamClosedBy) -> None:
        """The client reset taken stream ``sid`` (or sent what makes h2 reset it): the
        request is cancelled and h2 records the stream as closed by ``closed_by``."""
        stream = self.live.pop(sid)
        stream.reset = True
        self._h2conn._closed_streams[sid] = closed_by
        conn = self._protocol.connection
        conn.streams_failed += 1
        self._protocol.handler.cancel(stream)

    def _run(self, data: bytes, moved: bool) -> bool:
        """Give h2 the run ``data`` (whole frames); False if that ended the connection."""
        ok = self._to_h2(data)
        if moved:
            self.window_changed.set()
        return ok

    def _to_h2(self, data: bytes) -> bool:
        ok = self._feed_h2(data)
        self._blocks.clear()
        if not ok:
            self._closed = True
            self._pending = b""
        return ok
