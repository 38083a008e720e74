"""The Client connection's receive path: reply DATA of lean unary calls taken straight into
the call, every other frame through h2.

h2 parses every received frame into a hyperframe object, runs it through the connection's
and the stream's state machines and hands grpclib an event, which grpclib's processor puts
into the stream's buffer: ~30 µs of Python per frame. A 1000-key range reply is ~18 DATA
frames (grpc-go writes 16 KiB frames), most of its receive cost. :class:`FrameSplitter`
cuts the incoming bytes into frames itself (a 9-byte header each) and takes a DATA frame
for a lean call's stream (:class:`etcdlite._grpc.call._UnaryStream`) without h2, doing
what h2 and grpclib's processor would do with it:

* both of h2's inbound flow-control windows (connection and stream) are debited by the
  frame's length, as h2's ``receive_data`` debits them, so the call's acknowledgements
  (``acknowledge_received_data``) send the same WINDOW_UPDATEs as before;
* the payload goes to the stream's chunks, its length to grpclib's counters (keepalive
  reads ``data_received`` and ``last_data_received``).

h2 stays the authority for everything else: any frame not taken (HEADERS, trailers,
RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, unknown types, DATA of other streams)
goes to h2 as bytes, in order, and its events go to grpclib's processor. A DATA frame is
taken only when h2 would accept it without an event beyond ``DataReceived``, i.e. when all
of these hold; otherwise h2 gets it and decides (and raises) as it always did:

* the connection is CLIENT_OPEN in h2, and no header block is in progress (CONTINUATION
  frames must follow their HEADERS directly: h2 checks that);
* the frame has no padding and no END_STREAM flag (h2 makes the state transition), and
  fits ``max_inbound_frame_size`` and both inbound windows;
* the stream is a lean call's, OPEN or HALF_CLOSED_LOCAL in h2, without a
  ``content-length`` h2 would check, and its reply headers have been processed or are in
  the frames ahead that h2 is about to be given.

The frames not taken of one read go to h2 in one ``receive_data`` (a reply's headers and
trailers, and the other replies of the read), with the DATA taken cut out: h2's per-call
overhead was a third of a small reply's receive cost. A DATA frame is judged before h2 has
seen the frames ahead of it only when none of those can change h2's verdict: none on the
connection (stream 0) but PING and WINDOW_UPDATE (SETTINGS may move the frame size and the
windows, GOAWAY the connection's state), and none on its own stream but its response
HEADERS (which move no state of a HALF_CLOSED_LOCAL stream; trailers or RST_STREAM would).
Otherwise h2 is given the frames ahead first and the frame is judged after.

h2 only ever sees whole frames: a frame split across reads waits here until it is complete,
so h2's own frame buffer stays empty between reads. The one exception is a frame header
announcing more than ``max_inbound_frame_size``: h2 waits for such a frame whole before it
refuses it, so from there on every byte goes to h2 unlooked-at (the connection ends then).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import h2.exceptions
from h2.connection import ConnectionState
from h2.stream import StreamState

from .call import _UnaryStream
from .http2 import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    HEADERS,
    PADDED,
    PING,
    PUSH_PROMISE,
    WINDOW_UPDATE,
)

if TYPE_CHECKING:
    from grpclib.protocol import H2Protocol

__all__ = ["FrameSplitter"]

_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)


class FrameSplitter:
    """Receives a Client connection's bytes (see the module docstring)."""

    __slots__ = ("_closed", "_in_block", "_pending", "_protocol", "_through", "taken")

    def __init__(self, protocol: H2Protocol) -> None:
        self._protocol = protocol
        self._pending = b""  # the start of a frame not complete yet
        self._in_block = False  # a HEADERS/PUSH_PROMISE without END_HEADERS was seen
        self._through = False  # h2 holds a partial frame: it gets all bytes from now on
        self._closed = False  # h2 found a protocol error: the connection is going away
        self.taken = 0  # DATA frames taken without h2 (tests read it)

    def feed(self, data: bytes) -> None:
        """Take ``data`` from the socket."""
        if self._closed:
            return
        if self._through:
            self._to_h2(data)
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        protocol = self._protocol
        streams = protocol.processor.streams
        unpack = FRAME_HEADER.unpack_from
        end = len(data)
        pos = start = 0  # start: the first byte of the run h2 has not been given yet
        # The run h2 has not been given (``parts``, then ``data[start:pos]``), for the rule
        # of when a DATA frame may be taken before h2 has seen the frames ahead of it:
        # ``run_conn``: the run holds a connection-level frame other than PING and
        # WINDOW_UPDATE (SETTINGS may move the frame size and windows, GOAWAY the state);
        # ``run_streams``: stream -> True while its only frames in the run are response
        # headers (a HEADERS with END_HEADERS, without END_STREAM: h2 changes no state for
        # it), False once it has any other frame (trailers, RST_STREAM, DATA not taken).
        parts: list[bytes] = []
        run_conn = False
        run_streams: dict[int, bool] = {}
        while pos + 9 <= end:
            hi, lo, ftype, flags, sid = unpack(data, pos)
            stop = pos + 9 + (hi << 16 | lo)
            if stop > end:
                if stop - pos > protocol.connection._connection.max_inbound_frame_size + 9:
                    # Too large: h2's to refuse (once it holds the whole frame). From here
                    # on h2 holds a partial frame, so every byte goes to h2.
                    self._through = True
                    parts.append(data[start:])
                    self._to_h2(b"".join(parts))
                    return
                break
            sid &= 0x7FFFFFFF
            if ftype == DATA and not (self._in_block or flags & (END_STREAM | PADDED)):
                # grpclib's map holds its own streams and the lean calls' ones
                stream: object = streams.get(sid)
                if type(stream) is _UnaryStream:
                    if run_conn or run_streams.get(sid) is False:
                        # h2 first: what is ahead may change what h2 would make of it
                        parts.append(data[start:pos])
                        if not self._to_h2(b"".join(parts)):
                            return
                        parts, start, run_conn = [], pos, False
                        run_streams.clear()
                    if self._take(stream, data, pos + 9, stop, sid in run_streams):
                        parts.append(data[start:pos])
                        start = pos = stop
                        continue
            if sid == 0:
                if ftype != PING and ftype != WINDOW_UPDATE:
                    run_conn = True
            elif (
                ftype == HEADERS
                and flags & (END_HEADERS | END_STREAM) == END_HEADERS
                and sid not in run_streams
            ):
                run_streams[sid] = True
            else:
                run_streams[sid] = False
            if ftype in (HEADERS, PUSH_PROMISE):
                self._in_block = not flags & END_HEADERS
            elif ftype == CONTINUATION and flags & END_HEADERS:
                self._in_block = False
            pos = stop
        if start < pos:
            parts.append(data[start:pos])
        if parts and not self._to_h2(b"".join(parts)):
            return
        if pos < end:
            self._pending = data[pos:]

    def _take(
        self, stream: _UnaryStream, data: bytes, begin: int, stop: int, headers_ahead: bool
    ) -> bool:
        """Give the payload ``data[begin:stop]`` of a DATA frame to a lean call's
        ``stream`` if h2 would take it without a word (module docstring); whether taken.
        ``headers_ahead``: the stream's response headers are in the run h2 is given next."""
        protocol = self._protocol
        registered: object = protocol.processor.streams.get(stream.id)
        if registered is not stream or (stream.headers is None and not headers_ahead):
            return False
        conn = protocol.connection
        h2conn = conn._connection
        size = stop - begin
        if (
            h2conn.state_machine.state is not ConnectionState.CLIENT_OPEN
            or size > h2conn.max_inbound_frame_size
        ):
            return False
        h2stream = h2conn.streams.get(stream.id)
        if (
            h2stream is None
            or h2stream.state_machine.state not in _RECEIVING
            or h2stream._expected_content_length is not None
        ):
            return False
        conn_window = h2conn._inbound_flow_control_window_manager
        stream_window = h2stream._inbound_window_manager
        if size > conn_window.current_window_size or size > stream_window.current_window_size:
            return False  # h2 answers FLOW_CONTROL_ERROR
        conn_window.current_window_size -= size
        stream_window.current_window_size -= size
        h2stream._actual_content_length += size
        self.taken += 1
        stream.data_received += size
        conn.data_received += size
        conn.last_data_received = time.monotonic()
        stream.add(data[begin:stop], size)
        return True

    def _to_h2(self, data: bytes) -> bool:
        """Whole frames to h2, their events to grpclib's processor, as grpclib's
        ``data_received`` does; False if h2 found a protocol error (the connection is
        closed, nothing more is read)."""
        protocol = self._protocol
        connection = protocol.connection
        try:
            events = connection.feed(data)
        except h2.exceptions.ProtocolError:
            protocol.processor.close("Protocol error")
            self._pending = b""
            self._closed = True
            return False
        connection.flush()
        process = protocol.processor.process
        for event in events:
            process(event)
        connection.flush()
        return True
