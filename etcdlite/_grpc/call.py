"""The Client's unary RPCs on a lean path over grpclib's HTTP/2 objects: one write per call,
one wake-up per reply.

grpclib's client ``Stream`` makes a call in several steps, each awaited on its own (connect,
headers with an event dispatch, the message with another, initial metadata, the message, the
trailers), wakes the calling task once per step the reply arrives in, and reads the reply
through a flow-control buffer. :func:`unary_call` sends the request's HEADERS and its one DATA
frame in one transport write and registers a :class:`_UnaryStream` with grpclib's events
processor in place of grpclib's protocol stream: the reply's headers, DATA and trailers are
collected as h2 reports them, and the caller wakes once, when the stream ends.

What it does the way grpclib's path does (tests compare the two):

* request headers: grpclib's, in its order (``:method``, ``:scheme``, ``:path``,
  ``:authority``, ``te``, ``content-type``, ``user-agent``), then the call's metadata,
  framed by :mod:`.request` (a cached block that leaves HPACK's dynamic table alone; h2's
  ``send_headers`` when the encoder owes the peer a table size update);
* a reply ``:status`` other than 200, a missing or foreign ``content-type``, a missing
  ``grpc-status`` are the same ``GRPCError``s with grpclib's texts; a non-OK ``grpc-status``
  (in trailers, or a trailers-only reply) is ``GRPCError(status, grpc-message)``;
* a stream reset by the server or a lost connection is ``StreamTerminatedError`` with
  grpclib's reason text, unless a non-OK status already arrived (then that status), as
  grpclib's stream exit decides; the calling task is not cancelled for it (grpclib cancels
  it and turns the ``CancelledError`` into the error);
* a caller cancelled (a deadline) resets the stream with RST_STREAM NO_ERROR;
* received DATA is acknowledged (flow control) in 1 MiB steps as it arrives (a unary
  reply is buffered whole anyway) and the rest when the call ends, as grpclib's stream
  release acknowledges what was not read.

A request too large for one DATA frame or the current flow-control windows is not taken:
:func:`unary_call` returns ``None`` before sending anything and the caller goes grpclib's way.
"""

from __future__ import annotations

import asyncio

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.metadata import USER_AGENT, decode_grpc_message
from grpclib.protocol import Connection, EventsProcessor, H2Protocol
from h2.connection import ConnectionState
from h2.exceptions import TooManyStreamsError

from .request import header_block, request_frames

__all__ = ["unary_call"]

#: HTTP statuses of a reply without gRPC status, as grpclib (and gRPC's spec) map them.
_HTTP_TO_GRPC_STATUS = {
    "400": Status.INTERNAL,
    "401": Status.UNAUTHENTICATED,
    "403": Status.PERMISSION_DENIED,
    "404": Status.UNIMPLEMENTED,
    "429": Status.UNAVAILABLE,
    "502": Status.UNAVAILABLE,
    "503": Status.UNAVAILABLE,
    "504": Status.UNAVAILABLE,
}
_CONTENT_TYPE = "application/grpc"
_CONTENT_TYPES = frozenset({_CONTENT_TYPE, _CONTENT_TYPE + "+proto"})

Metadata = tuple[tuple[str, str], ...]


class _Ignored:
    """Stands in for the ``asyncio.Event``s grpclib's processor sets on a stream."""

    __slots__ = ()

    def set(self) -> None:
        pass


_IGNORED = _Ignored()

#: Reply bytes acknowledged (flow control) at once when this many are unacknowledged; the
#: rest when the call ends. grpclib opens 4 MiB windows: a reply under 1 MiB is
#: acknowledged once, at its end, instead of per 16 KiB frame.
ACK_AFTER = 1 << 20


class _UnaryStream:
    """What grpclib's ``EventsProcessor`` touches on a client stream, for one unary call:
    headers, DATA (acknowledged at once) and trailers are kept, and :attr:`done` is resolved
    when the stream ends or is terminated."""

    __slots__ = (
        "_ack",
        "_unacked",
        "buffer",
        "chunks",
        "data_received",
        "done",
        "headers",
        "id",
        "terminated",
        "trailers",
    )

    # The processor sets these on every stream; a unary call waits on none of them.
    headers_received = _IGNORED
    trailers_received = _IGNORED
    window_updated = _IGNORED

    def __init__(self, stream_id: int, connection: Connection, done: asyncio.Future[None]):
        self.id = stream_id
        self._ack = connection.ack
        self._unacked = 0
        self.buffer = self  # the processor adds DATA to ``stream.buffer``
        self.chunks: list[bytes] = []
        self.data_received = 0
        self.done = done
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.terminated: str | None = None

    # --- the buffer's part ---------------------------------------------------------------

    def add(self, data: bytes, ack_size: int) -> None:
        self.chunks.append(data)
        self._unacked += ack_size
        if self._unacked >= ACK_AFTER:
            self._ack(self.id, self._unacked)
            self._unacked = 0

    def eof(self) -> None:
        pass

    def unacked_size(self) -> int:
        """What grpclib's stream release acknowledges (the rest of the reply)."""
        return self._unacked

    # --- the stream's part ---------------------------------------------------------------

    def __ended__(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def __terminated__(self, reason: str) -> None:
        self.terminated = reason
        if not self.done.done():
            self.done.set_result(None)


#: Request headers by (scheme, authority, path, metadata): the list as bytes for h2 (which
#: takes bytes as they are, and caches the HPACK block of a list seen before per
#: connection), the table-neutral block of :mod:`.request`, the authority as bytes.
_HEADERS: dict[tuple[str, str, str, Metadata], tuple[list[tuple[bytes, bytes]], bytes, bytes]] = {}
_MAX_HEADERS = 256

#: Whether requests leave as :func:`.request.request_frames` builds them (tests compare
#: with False: h2's ``send_headers`` and ``send_data``).
LEAN_REQUEST_FRAMES = True


def _request_headers(
    channel: Channel, path: str, metadata: Metadata
) -> tuple[list[tuple[bytes, bytes]], bytes, bytes]:
    key = (channel._scheme, channel._authority, path, metadata)
    entry = _HEADERS.get(key)
    if entry is None:
        if len(_HEADERS) >= _MAX_HEADERS:  # tokens change: keep the table bounded
            _HEADERS.clear()
        fields = [
            (":method", "POST"),
            (":scheme", channel._scheme),
            (":path", path),
            (":authority", channel._authority),
            ("te", "trailers"),
            ("content-type", _CONTENT_TYPE),
            ("user-agent", USER_AGENT),
            *metadata,
        ]
        entry = _HEADERS[key] = (
            [(k.encode(), v.encode()) for k, v in fields],
            header_block(fields),
            channel._authority.encode(),
        )
    return entry


def _status_error(fields: dict[str, str]) -> GRPCError | None:
    """The ``GRPCError`` a header block's ``grpc-status`` stands for (``None``: OK), with
    grpclib's texts for a missing or malformed one."""
    text = fields.get("grpc-status")
    if text is None:
        return GRPCError(Status.UNKNOWN, "Missing grpc-status header")
    try:
        status = Status(int(text))
    except ValueError:
        return GRPCError(Status.UNKNOWN, f"Invalid grpc-status: {text!r}")
    if status is Status.OK:
        return None
    message = fields.get("grpc-message")
    return GRPCError(status, decode_grpc_message(message) if message is not None else None)


def _check_status(fields: dict[str, str]) -> None:
    status = fields.get(":status")
    if status is not None and status != "200":
        grpc_status = _HTTP_TO_GRPC_STATUS.get(status, Status.UNKNOWN)
        raise GRPCError(grpc_status, f"Received :status = {status!r}")


def _check_headers(fields: dict[str, str]) -> None:
    _check_status(fields)
    content_type = fields.get("content-type")
    if content_type is None:
        raise GRPCError(Status.UNKNOWN, "Missing content-type header")
    if content_type not in _CONTENT_TYPES:
        raise GRPCError(Status.UNKNOWN, f"Invalid content-type: {content_type!r}")


#: etcd's (grpc-go's) reply headers and OK trailers: a reply with exactly these needs none
#: of the checks below (compared as lists: h2 builds new ones per reply).
_ETCD_HEADERS = [(":status", "200"), ("content-type", _CONTENT_TYPE)]
_OK_TRAILERS = [("grpc-status", "0"), ("grpc-message", "")]


def _outcome(stream: _UnaryStream) -> bytes:
    """The reply message of an ended or terminated stream, or the error it stands for."""
    if (
        stream.terminated is None
        and stream.trailers == _OK_TRAILERS
        and stream.headers == _ETCD_HEADERS
    ):
        return _message(stream.chunks)
    if stream.terminated is not None:
        # grpclib: a status that already arrived wins over the termination
        if stream.headers is not None:
            fields = dict(stream.headers)
            _check_status(fields)
            if stream.trailers is None and "grpc-status" in fields:
                error = _status_error(fields)
                if error is not None:
                    raise error
        if stream.trailers is not None:
            error = _status_error(dict(stream.trailers))
            if error is not None:
                raise error
        raise StreamTerminatedError(stream.terminated)
    assert stream.headers is not None  # h2 ends no response stream before its headers
    fields = dict(stream.headers)
    _check_headers(fields)
    if "grpc-status" in fields:  # trailers-only
        error = _status_error(fields)
        if error is not None:
            raise error
        raise GRPCError(Status.UNKNOWN, "no reply message")
    if stream.trailers is None:
        raise GRPCError(Status.UNKNOWN, "Missing grpc-status header")
    error = _status_error(dict(stream.trailers))
    if error is not None:
        raise error
    return _message(stream.chunks)


def _message(chunks: list[bytes]) -> bytes:
    """The one message the DATA frames of a unary reply carry."""
    first = chunks[0] if chunks else b""
    if len(first) < 5:  # the prefix straddles frames (or is missing): join first
        first = b"".join(chunks)
        chunks = [first]
    if len(first) < 5:
        raise GRPCError(Status.UNKNOWN, "no reply message")
    if first[0]:
        raise NotImplementedError("Compressed messages are not supported")
    size = int.from_bytes(first[1:5], "big")
    # The prefix is cut off the first frame's bytes, not the joined reply: a large reply is
    # copied once, by the join.
    data = first[5:] if len(chunks) == 1 else b"".join([first[5:], *chunks[1:]])
    if len(data) < size:
        raise GRPCError(Status.UNKNOWN, "no reply message")
    return data if len(data) == size else data[:size]


async def unary_call(
    channel: Channel, path: str, request: bytes, metadata: Metadata
) -> bytes | None:
    """Call the unary RPC ``path`` with the encoded ``request``; the encoded reply.

    Raises ``GRPCError`` and ``StreamTerminatedError`` as grpclib's path does, ``OSError``
    when the connection cannot be made. ``None``: the request does not fit one DATA frame
    in the current windows; nothing was sent.
    """
    protocol: H2Protocol = await channel.__connect__()
    conn = protocol.connection
    h2conn = conn._connection
    processor: EventsProcessor = protocol.processor
    size = len(request) + 5
    headers, block, authority = _request_headers(channel, path, metadata)
    message = b"\x00" + (size - 5).to_bytes(4, "big") + request
    while True:
        if not conn.write_ready.is_set():
            await conn.write_ready.wait()
        if (
            size > h2conn.max_outbound_frame_size
            or size > h2conn.outbound_flow_control_window
            or size > h2conn.remote_settings.initial_window_size
        ):
            return None
        stream_id = h2conn.get_next_available_stream_id()
        try:
            frames = None
            if LEAN_REQUEST_FRAMES:
                frames = request_frames(h2conn, stream_id, block, authority, message)
            if frames is None:
                h2conn.send_headers(stream_id, headers)
        except TooManyStreamsError:
            # as grpclib: wait for a stream to close, then try again from the start
            conn.stream_close_waiter.clear()
            await conn.stream_close_waiter.wait()
            continue
        break
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stream = _UnaryStream(stream_id, conn, done)
    release = processor.register(stream)  # type: ignore[arg-type]
    try:
        if frames is None:
            h2conn.send_data(stream_id, message, end_stream=True)
            conn._transport.write(h2conn.data_to_send())
        else:
            pending = h2conn.data_to_send()  # h2's frames (acks, settings) first
            conn._transport.write(pending + frames if pending else frames)
        conn.headers_send_process()
        conn.data_send_process()
        await done
        return _outcome(stream)
    finally:
        if stream.terminated is None and _closable(conn, stream_id):
            h2conn.reset_stream(stream_id)  # a caller that gave up: tell the server
            if conn.write_ready.is_set():
                conn._transport.write(h2conn.data_to_send())
        release()


def _closable(conn: Connection, stream_id: int) -> bool:
    """grpclib's ``Stream.closable``: the stream is still open in h2 on a live connection."""
    h2conn = conn._connection
    if conn._transport.is_closing() or h2conn.state_machine.state is ConnectionState.CLOSED:
        return False
    h2stream = h2conn.streams.get(stream_id)
    return h2stream is not None and not h2stream.closed
