"""The Client connection's receive path: reply DATA of lean unary calls, and their reply
HEADERS and trailers once h2 has decoded the same header block before, taken straight into
the call; every other frame through h2.

h2 parses every received frame into a hyperframe object, runs it through the connection's
and the stream's state machines and hands grpclib an event, which grpclib's processor puts
into the stream's buffer: ~30 µs of Python per frame. A 1000-key range reply is ~18 DATA
frames (grpc-go writes 16 KiB frames), most of its receive cost; a small reply is a HEADERS,
a DATA and a trailers HEADERS, and h2's handling of the two header frames was a third of a
small call's client CPU. :class:`FrameSplitter` cuts the incoming bytes into frames itself
(a 9-byte header each) and takes these frames of a lean call's stream
(:class:`etcdlite._grpc.call._UnaryStream`) without h2, doing what h2 and grpclib's
processor would do with them.

**DATA**:

* both of h2's inbound flow-control windows (connection and stream) are debited by the
  frame's length, as h2's ``receive_data`` debits them, so the call's acknowledgements
  (``acknowledge_received_data``) send the same WINDOW_UPDATEs as before;
* the payload goes to the stream's chunks, its length to grpclib's counters (keepalive
  reads ``data_received`` and ``last_data_received``).

**HEADERS** (the reply's headers, a trailers-only reply, the trailers):

* h2's connection state machine takes RECV_HEADERS, the stream's RECV_HEADERS (its first:
  the response, then the trailers) and, with END_STREAM, RECV_END_STREAM, which closes the
  stream as h2 closes it (h2 drops it from its open streams when it next counts them, so
  ``MAX_CONCURRENT_STREAMS`` accounting is as before);
* the header list is the one h2 reported for the same block before: a block is *learned*
  (:meth:`FrameSplitter._learn`) when h2, given a lean call's HEADERS, reported headers
  that the connection's :class:`~.transport.CachingDecoder` still holds for its bytes as
  a table-neutral decoding (no ``content-length`` among them: h2 keeps that for its
  checks). Learned blocks live in the decoder's ``derived``, which it empties with its
  cache whenever a block may have moved the HPACK table (or a table setting changed);
* the stream gets what grpclib's processor gives it for ResponseReceived,
  TrailersReceived and StreamEnded (headers, trailers, the end; ``streams_succeeded``).

h2 stays the authority for everything else: any frame not taken (RST_STREAM, SETTINGS,
PING, GOAWAY, WINDOW_UPDATE, PUSH_PROMISE, CONTINUATION, unknown types, frames of other
streams, header blocks not learned) goes to h2 as bytes, in order, and its events go to
grpclib's processor. A frame is taken only when h2 would accept it without an event beyond
the ones made here, i.e. when all of these hold; otherwise h2 gets it and decides (and
raises) as it always did:

* the connection is CLIENT_OPEN in h2, and no header block is in progress (CONTINUATION
  frames must follow their HEADERS directly: h2 checks that); the frame fits
  ``max_inbound_frame_size`` and has no padding;
* DATA: no END_STREAM flag (h2 makes the state transition), fits both inbound windows;
  the stream is a lean call's, OPEN or HALF_CLOSED_LOCAL in h2, without a
  ``content-length`` h2 would check, and its reply headers have been processed or are in
  the frames ahead that h2 is about to be given;
* HEADERS: END_HEADERS, no PRIORITY flag, a learned block (still cached by the decoder);
  the stream is a lean call's, HALF_CLOSED_LOCAL in h2, without a ``content-length`` h2
  would check; trailers carry END_STREAM (h2 refuses trailers that do not).

The frames not taken of one read go to h2 in one ``receive_data`` (a reply's headers and
trailers not taken, and the other replies of the read), with the frames taken cut out: h2's
per-call overhead was a third of a small reply's receive cost. A frame is judged before h2
has seen the frames ahead of it only when none of those can change h2's verdict:

* DATA: none on the connection (stream 0) but PING and WINDOW_UPDATE (SETTINGS may move the
  frame size and the windows, GOAWAY the connection's state), and none on its own stream
  but its response HEADERS (which move no state of a HALF_CLOSED_LOCAL stream; trailers or
  RST_STREAM would);
* HEADERS: none on the connection but PING and WINDOW_UPDATE, none on its own stream, and
  no header block (HEADERS, CONTINUATION, PUSH_PROMISE) at all: HPACK blocks are decoded
  in order, and one ahead may move the table and with it what this block's bytes mean.

Otherwise h2 is given the frames ahead first and the frame is judged after (for HEADERS:
looked up again, since h2's decoding of the run may have emptied the decoder's cache).

h2 only ever sees whole frames: a frame split across reads waits here until it is complete,
so h2's own frame buffer stays empty between reads. The one exception is a frame header
announcing more than ``max_inbound_frame_size``: h2 waits for such a frame whole before it
refuses it, so from there on every byte goes to h2 unlooked-at (the connection ends then).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import h2.exceptions
from h2.connection import ConnectionInputs, ConnectionState
from h2.events import ResponseReceived, TrailersReceived
from h2.stream import StreamInputs, StreamState

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
    PRIORITY_FLAG,
    PUSH_PROMISE,
    WINDOW_UPDATE,
)

if TYPE_CHECKING:
    from grpclib.protocol import H2Protocol

__all__ = ["FrameSplitter"]

_RECEIVING = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
#: HEADERS flags looked at for taking a header block (END_HEADERS must be the one set of
#: the three; END_STREAM may be set too).
_BLOCK_FLAGS = END_HEADERS | PADDED | PRIORITY_FLAG


class FrameSplitter:
    """Receives a Client connection's bytes (see the module docstring)."""

    __slots__ = (
        "_blocks",
        "_closed",
        "_in_block",
        "_pending",
        "_protocol",
        "_through",
        "blocks_taken",
        "taken",
    )

    def __init__(self, protocol: H2Protocol) -> None:
        self._protocol = protocol
        self._pending = b""  # the start of a frame not complete yet
        self._in_block = False  # a HEADERS/PUSH_PROMISE without END_HEADERS was seen
        self._through = False  # h2 holds a partial frame: it gets all bytes from now on
        self._closed = False  # h2 found a protocol error: the connection is going away
        self.taken = 0  # DATA frames taken without h2 (tests read it)
        self.blocks_taken = 0  # reply HEADERS (headers or trailers) taken without h2
        #: The header blocks of lean calls' HEADERS in the run h2 is given next, by stream
        #: in order (to learn from h2's events for them, :meth:`_learn`).
        self._blocks: dict[int, list[bytes]] = {}

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
        # ``run_blocks``: the run holds a header block (HEADERS, CONTINUATION, PUSH_PROMISE),
        # which may move the HPACK table: a learned block after it is taken only once h2
        # has decoded the run (HPACK blocks are decoded in order).
        parts: list[bytes] = []
        run_conn = run_blocks = False
        # Lean calls' reply header blocks h2 decoded before (:meth:`_learn`): emptied by the
        # decoder whenever a block may have moved the table.
        learned: dict[bytes, tuple[tuple[str, str], ...]] = (
            protocol.connection._connection.decoder.derived  # type: ignore[attr-defined]
        )
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
                        parts, start, run_conn, run_blocks = [], pos, False, False
                        run_streams.clear()
                    if self._take(stream, data, pos + 9, stop, sid in run_streams):
                        parts.append(data[start:pos])
                        start = pos = stop
                        continue
            elif ftype == HEADERS and flags & _BLOCK_FLAGS == END_HEADERS and not self._in_block:
                lean: object = streams.get(sid)
                if type(lean) is _UnaryStream:
                    block = data[pos + 9 : stop]
                    if block in learned:
                        if run_blocks or run_conn or sid in run_streams:
                            # h2 first: a header block ahead may move the HPACK table
                            # (and what these bytes mean), other frames ahead the
                            # connection's or the stream's state
                            parts.append(data[start:pos])
                            if not self._to_h2(b"".join(parts)):
                                return
                            parts, start, run_conn, run_blocks = [], pos, False, False
                            run_streams.clear()
                        headers = learned.get(block)
                        if headers is not None and self._take_block(
                            lean, block, headers, flags & END_STREAM
                        ):
                            parts.append(data[start:pos])
                            start = pos = stop
                            continue
                    # h2 decodes it: learn from what h2 makes of it (:meth:`_learn`)
                    self._blocks.setdefault(sid, []).append(block)
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
                run_blocks = True
                self._in_block = not flags & END_HEADERS
            elif ftype == CONTINUATION:
                run_blocks = True
                if flags & END_HEADERS:
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

    def _take_block(
        self,
        stream: _UnaryStream,
        block: bytes,
        headers: tuple[tuple[str, str], ...],
        end_stream: int,
    ) -> bool:
        """Take a HEADERS frame (END_HEADERS, no padding or priority) of a lean call's
        ``stream`` whose ``block`` was learned as ``headers`` if h2 would take it without a
        word (module docstring): h2's state machines make h2's moves, the stream gets what
        grpclib's processor would give it; whether taken."""
        protocol = self._protocol
        conn = protocol.connection
        h2conn = conn._connection
        if (
            h2conn.state_machine.state is not ConnectionState.CLIENT_OPEN
            or len(block) > h2conn.max_inbound_frame_size
            or h2conn.decoder.cached(block) is None  # type: ignore[attr-defined]
        ):
            return False
        h2stream = h2conn.streams.get(stream.id)
        if (
            h2stream is None
            or h2stream.state_machine.state is not StreamState.HALF_CLOSED_LOCAL
            or h2stream._expected_content_length is not None
        ):
            return False
        machine = h2stream.state_machine
        trailers = machine.headers_received
        if trailers and not end_stream:
            return False  # h2's ProtocolError: trailers must end the stream
        # h2's _receive_headers_frame and H2Stream.receive_headers, with the list decoded
        # (the events the state machines return are h2's to hand on: what grpclib's
        # processor would make of them is done below)
        h2conn.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        machine.process_input(StreamInputs.RECV_HEADERS)
        if end_stream:
            # closes the stream (closed_by RECV_END_STREAM): h2 drops it from its open
            # streams when it next counts them, as after its own receive_headers
            machine.process_input(StreamInputs.RECV_END_STREAM)
        received = list(headers)
        self.blocks_taken += 1
        # grpclib's process_response_received / process_trailers_received, then
        # process_stream_ended
        if trailers:
            stream.trailers = received
        else:
            stream.headers = received
        if end_stream:
            stream.__ended__()
            conn.streams_succeeded += 1
        return True

    def _learn(self, events: Sequence[object]) -> None:
        """Learn the header blocks of lean calls' HEADERS h2 was just given, from the
        events it made of them: a block whose cached decoding (table-neutral, decoded by
        h2 once on this connection) is still exactly the headers h2 reported, without a
        ``content-length`` (h2 keeps it for its checks), may be taken from now on while the
        decoder keeps it (a block that may move the table empties both). A later block of
        the run may have moved the table after h2 decoded this one: then the cached meaning
        of the bytes differs (or is gone), and nothing is learned."""
        blocks = self._blocks
        decoder = self._protocol.connection._connection.decoder
        for event in events:
            if not isinstance(event, ResponseReceived | TrailersReceived):
                continue
            # h2 reports a stream's HEADERS in order, one event each; a frame h2 answered
            # otherwise shifts the pairing, which costs learning, never correctness: a
            # block is learned only as what the decoder's cache says its bytes mean
            queue = blocks.get(event.stream_id)
            if not queue:
                continue
            block = queue.pop(0)
            headers: list[Any] = event.headers or []
            raw = decoder.cached(block)  # type: ignore[attr-defined]
            if raw is None or len(raw) != len(headers):
                continue
            for (name, value), (key, field) in zip(raw, headers, strict=True):
                if (
                    type(key) is not str
                    or type(field) is not str
                    or name == b"content-length"
                    or name != key.encode()
                    or value != field.encode()
                ):
                    break
            else:
                decoder.derived[block] = tuple(headers)  # type: ignore[attr-defined]
        blocks.clear()

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
        if self._blocks:
            self._learn(events)
        return True
