"""A unary request the server took whole, without h2 making a stream of it, and its reply.

:class:`~.intake.RequestIntake` takes a lean request whose HEADERS and END_STREAM DATA
arrived together; h2 never holds a stream for it. :class:`TakenStream` is what the request
is served by in place of grpclib's and h2's stream objects: the lean handler
(:mod:`.unary`) runs the method as for any lean request and answers through
:meth:`TakenStream.reply_now` / :meth:`~TakenStream.send_reply` /
:meth:`~TakenStream.status_now`, which write what h2 would have written for the stream:

* HEADERS (``:status: 200`` and the content type), the reply as DATA frames, trailers with
  END_STREAM, the header blocks from the connection's HPACK encoder in sending order (the
  client's dynamic table stays in step); or a trailers-only status. The client's side of
  the stream is closed already (its END_STREAM came with the request), so a status is not
  followed by RST_STREAM, as grpclib sends none then either;
* the connection's state machine takes SEND_HEADERS for each block: a connection h2 has
  closed raises ``ProtocolError``, as h2's ``send_headers`` does;
* DATA never exceeds either outbound flow-control window: the connection's (h2's, debited
  here as h2's ``send_data`` debits it) and the stream's, which is the peer's current
  ``SETTINGS_INITIAL_WINDOW_SIZE`` plus the stream's WINDOW_UPDATE increments (the intake
  counts those) minus what was sent, as RFC 9113 6.9.2 defines it. A reply over the
  windows sends its headers, then the body as the windows open, then the trailers;
* once answered (or reset) the stream is recorded in h2's closed streams, as h2 records a
  stream it closed, so h2 answers later frames on it as it would on its own closed stream.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol, cast

from grpclib.const import Status
from grpclib.metadata import encode_grpc_message
from h2.connection import ConnectionInputs, ConnectionState
from h2.stream import StreamClosedBy

from .frames import frame_pieces
from .headers import frame_block

if TYPE_CHECKING:
    from grpclib.protocol import Connection
    from h2.connection import H2Connection


__all__ = ["RESPONSE_HEADERS", "TRAILERS_OK", "TakenStream", "status_headers"]

RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc+proto"))
TRAILERS_OK = ((b"grpc-status", b"0"),)


def status_headers(status: Status, message: str | None) -> list[tuple[bytes, bytes]]:
    """A trailers-only response's headers for ``status`` (and its message)."""
    headers = [*RESPONSE_HEADERS, (b"grpc-status", str(status.value).encode())]
    if message is not None:
        headers.append((b"grpc-message", encode_grpc_message(message).encode()))
    return headers


class TakenStream:
    """A taken request's stream: what the lean handler answers it through."""

    __slots__ = (
        "_etcdlite_release",
        "_h2_connection",
        "_live",
        "_transport",
        "_window_changed",
        "answered",
        "connection",
        "credit",
        "id",
        "message",
        "reset",
        "sent",
    )

    def __init__(
        self,
        sid: int,
        connection: Connection,
        h2conn: H2Connection,
        live: dict[int, TakenStream],
        window_changed: asyncio.Event,
    ) -> None:
        self.id = sid
        #: grpclib's connection: its write pausing, keepalive counters and transport
        #: (:mod:`.peer` reads the TLS peer through it).
        self.connection = connection
        self._h2_connection = h2conn
        self._transport = connection._transport
        #: The intake's unfinished taken streams (this one leaves it when done), and its
        #: signal that an outbound window may have grown.
        self._live = live
        self._window_changed = window_changed
        #: The request's message (its 5-byte prefix cut off).
        self.message = b""
        #: WINDOW_UPDATE increments the client gave the stream, and bytes of DATA sent.
        self.credit = 0
        self.sent = 0
        #: The reply's trailers (or a status) went out / the client reset the stream.
        self.answered = False
        self.reset = False
        self._etcdlite_release: Any = None

    def stream_window(self) -> int:
        """The stream's outbound window: the peer's initial window size now, plus the
        stream's WINDOW_UPDATEs, minus the DATA sent (RFC 9113 6.9.2)."""
        return self._h2_connection.remote_settings.initial_window_size + self.credit - self.sent

    def window(self) -> int:
        """Bytes of DATA both outbound windows allow now."""
        return min(self.stream_window(), self._h2_connection.outbound_flow_control_window)

    def reply_now(self, message: bytes) -> bool:
        """Write the reply (headers, ``message``, trailers) in one buffer if the
        connection's writes are not paused and it fits both windows; False if nothing was
        written (True also when the client reset the stream meanwhile)."""
        conn = self.connection
        if not conn.write_ready.is_set():
            return False
        if self.reset or self.answered:
            return True
        size = len(message)
        if size + 5 > self.window():
            return False
        h2conn = self._h2_connection
        sid = self.id
        machine = h2conn.state_machine
        if machine.state is not ConnectionState.SERVER_OPEN:
            # h2's move for the two blocks; it raises on a closed connection (in
            # SERVER_OPEN sending headers changes nothing)
            machine.process_input(ConnectionInputs.SEND_HEADERS)
            machine.process_input(ConnectionInputs.SEND_HEADERS)
        encode = _encoder(h2conn).encode_fixed
        parts: list[bytes | memoryview] = [
            h2conn.data_to_send(),
            frame_block(h2conn, sid, encode(RESPONSE_HEADERS)),
        ]
        prefix = b"\x00" + size.to_bytes(4, "big")  # gRPC: uncompressed, length
        parts += frame_pieces(
            h2conn.max_outbound_frame_size, sid, memoryview(message), 0, size, prefix
        )
        h2conn.outbound_flow_control_window -= size + 5
        self.sent += size + 5
        parts.append(frame_block(h2conn, sid, encode(TRAILERS_OK), end_stream=True))
        self._transport.write(b"".join(parts))
        conn.data_send_process()  # grpclib's keepalive accounting: the connection is in use
        self.answered = True
        return True

    async def send_reply(self, message: bytes) -> None:
        """Send the reply, waiting for paused writes and for the windows as needed."""
        conn = self.connection
        if not conn.write_ready.is_set():
            await conn.write_ready.wait()
        if self.reply_now(message):
            return
        # a body over the windows: headers now, the body as WINDOW_UPDATEs arrive
        h2conn = self._h2_connection
        sid = self.id
        machine = h2conn.state_machine
        machine.process_input(ConnectionInputs.SEND_HEADERS)
        transport = self._transport
        transport.write(
            h2conn.data_to_send()
            + frame_block(h2conn, sid, _encoder(h2conn).encode_fixed(RESPONSE_HEADERS))
        )
        body = memoryview(b"\x00" + len(message).to_bytes(4, "big") + message)
        pos, end = 0, len(body)
        changed = self._window_changed
        while pos < end:
            if not conn.write_ready.is_set():
                await conn.write_ready.wait()
            if self.reset:
                return
            window = self.window()
            if window <= 0:
                changed.clear()
                await changed.wait()
                continue
            stop = min(end, pos + window)
            parts: list[bytes | memoryview] = [h2conn.data_to_send()]
            parts += frame_pieces(h2conn.max_outbound_frame_size, sid, body, pos, stop)
            h2conn.outbound_flow_control_window -= stop - pos
            self.sent += stop - pos
            transport.write(b"".join(parts))
            conn.data_send_process()
            pos = stop
        if not conn.write_ready.is_set():
            await conn.write_ready.wait()
        if self.reset:
            return
        machine.process_input(ConnectionInputs.SEND_HEADERS)
        transport.write(
            h2conn.data_to_send()
            + frame_block(h2conn, sid, _encoder(h2conn).encode_fixed(TRAILERS_OK), end_stream=True)
        )
        conn.data_send_process()
        self.answered = True

    def status_now(self, status: Status, message: str | None) -> bool:
        """A trailers-only response carrying ``status`` if the connection's writes are not
        paused; False if nothing was sent."""
        conn = self.connection
        if not conn.write_ready.is_set():
            return False
        if self.reset or self.answered:
            return True
        h2conn = self._h2_connection
        h2conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        block = h2conn.encoder.encode(status_headers(status, message))
        self._transport.write(
            h2conn.data_to_send() + frame_block(h2conn, self.id, block, end_stream=True)
        )
        self.answered = True
        return True

    def finish(self) -> None:
        """The handler is done with the stream: it leaves the intake, and h2 records it
        closed (by our END_STREAM, or by the reset)."""
        self._live.pop(self.id, None)
        if self.reset:
            return  # the intake recorded how
        # released unanswered (the connection is closing): h2 answers later frames on it as
        # on a stream it reset
        closed = StreamClosedBy.SEND_END_STREAM if self.answered else StreamClosedBy.SEND_RST_STREAM
        self._h2_connection._closed_streams[self.id] = closed


class _FixedEncoder(Protocol):
    """What a server connection's HPACK encoder (``transport.CachingEncoder``) offers."""

    def encode_fixed(self, items: tuple[tuple[bytes, bytes], ...]) -> bytes: ...


def _encoder(h2conn: H2Connection) -> _FixedEncoder:
    """The connection's HPACK encoder (a server connection's is always caching)."""
    return cast(_FixedEncoder, h2conn.encoder)
