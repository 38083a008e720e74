"""The server's hot path over grpclib's HTTP/2 objects: unary RPCs and bulk writes.

grpclib answers a unary RPC in three transport writes (headers, data, trailers), with a
generic pipeline around it (server events, metadata, deadline wrappers, per-message
bookkeeping): ~400 µs of CPU per request on the development machine, ~10% of it etcdlite's
own. :class:`UnaryHandler` takes over etcd's unary RPCs when a request's headers are the
ordinary ones (POST, ``application/grpc[+proto]``, ``te: trailers``) and answers with one
write; anything else goes down grpclib's own path, which stays the reference behaviour.
:func:`send_data` writes a large body as many DATA frames as the flow-control windows allow
in one transport write, where grpclib writes once per frame; it frames the DATA itself (a
9-byte header per frame) and keeps h2's flow-control windows in step, since h2 copies a
body six times on its way out (~20 µs per 16 KiB frame, most of a large range's cost).

Both rely on grpclib's protocol objects (``Stream._h2_connection``, ``Stream._transport``,
``Handler._tasks``); the version range in pyproject pins what was checked, and
:func:`supported` tells ``serve()`` whether to use them at all.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import h2.exceptions
from grpclib.const import Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline, encode_grpc_message
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler
from h2.connection import H2Connection
from h2.stream import StreamState

from .errors import EtcdError

__all__ = [
    "UnaryHandler",
    "UnaryMethod",
    "compression_error",
    "missing_message_error",
    "send_data",
    "supported",
]

log = logging.getLogger("etcdlite.server")

#: A unary RPC: the decoded request in, the reply (pre-encoded bytes or a message) out.
UnaryMethod = tuple[Callable[[Any], Awaitable[Any]], type]
Interceptor = Callable[[str], Awaitable[None]]

_CONTENT_TYPE = "application/grpc+proto"
_ACCEPTED_CONTENT_TYPES = frozenset({"application/grpc", _CONTENT_TYPE})
_RESPONSE_HEADERS = [(":status", "200"), ("content-type", _CONTENT_TYPE)]
_TRAILERS_OK = [("grpc-status", "0")]


def supported() -> bool:
    """Whether this grpclib has the internals the fast path uses."""
    return all(hasattr(Handler, name) for name in ("accept", "cancel", "__gc_step__")) and all(
        hasattr(H2Stream, name) for name in ("recv_data", "reset_nowait", "closable")
    )


_FRAME_HEADER = struct.Struct(">HBBBL")  # HTTP/2: 24-bit length, type, flags, stream id
_SENDING_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


def _data_frames(
    h2conn: H2Connection, sid: int, view: memoryview, start: int, stop: int, prefix: bytes = b""
) -> list[bytes | memoryview]:
    """DATA frames (no flags) carrying ``prefix`` then ``view[start:stop]``, as pieces for
    one join (the body is not copied before that); the bytes must fit both flow-control
    windows, and are debited from h2's windows as its own ``send_data`` would."""
    h2stream = h2conn.streams.get(sid)
    if h2stream is None or h2stream.state_machine.state not in _SENDING_STATES:
        raise h2.exceptions.StreamClosedError(sid)
    frame_size = h2conn.max_outbound_frame_size
    pack = _FRAME_HEADER.pack
    total = len(prefix) + stop - start
    parts: list[bytes | memoryview] = []
    pos = start
    if prefix:
        n = min(frame_size, total)
        take = n - len(prefix)
        parts += (pack(n >> 8, n & 0xFF, 0, 0, sid), prefix, view[pos : pos + take])
        pos += take
    while pos < stop:
        n = min(frame_size, stop - pos)
        parts += (pack(n >> 8, n & 0xFF, 0, 0, sid), view[pos : pos + n])
        pos += n
    h2conn.outbound_flow_control_window -= total
    h2stream.outbound_flow_control_window -= total
    return parts


def compression_error() -> GRPCError:
    """grpc-go's answer to a compressed message when no decompressor is installed."""
    return GRPCError(
        Status.UNIMPLEMENTED,
        'grpc: Decompressor is not installed for grpc-encoding "gzip"',
    )


def missing_message_error() -> GRPCError:
    """The answer to a unary request that ends without its message."""
    return GRPCError(Status.INTERNAL, "grpc: error while receiving request: EOF")


class UnaryHandler(Handler):
    """grpclib's per-connection request handler, with ``methods`` on the lean path.

    Every other request, and a request to one of ``methods`` with unusual headers, goes to
    grpclib's ``request_handler`` unchanged.
    """

    def __init__(
        self,
        *args: Any,
        methods: dict[str, UnaryMethod],
        interceptor: Callable[[], Interceptor | None],
    ) -> None:
        super().__init__(*args)
        self.methods = methods
        self.interceptor = interceptor
        #: Requests answered on the lean path (tests check it is taken).
        self.fast_requests = 0

    def accept(
        self, stream: H2Stream, headers: list[tuple[str, str]], release_stream: Callable[[], Any]
    ) -> None:
        fields = dict(headers)
        path = fields.get(":path", "")
        method = self.methods.get(path)
        if (
            method is None
            or fields.get(":method") != "POST"
            or fields.get("content-type") not in _ACCEPTED_CONTENT_TYPES
            or fields.get("te") != "trailers"
        ):
            super().accept(stream, headers, release_stream)
            return
        timeout: float | None = None
        if "grpc-timeout" in fields:
            try:
                deadline = Deadline.from_headers(headers)
            except ValueError:
                super().accept(stream, headers, release_stream)  # grpclib's answer
                return
            if deadline is not None:
                timeout = deadline.time_remaining()
        self.__gc_step__()
        self.fast_requests += 1
        self._tasks[stream] = self.loop.create_task(
            self._handle(stream, path, method, timeout, release_stream)
        )

    async def _handle(
        self,
        stream: H2Stream,
        path: str,
        method: UnaryMethod,
        timeout: float | None,
        release_stream: Callable[[], Any],
    ) -> None:
        try:
            try:
                if timeout is None:
                    reply = await self._call(stream, path, method)
                else:
                    async with asyncio.timeout(timeout):
                        reply = await self._call(stream, path, method)
            except EtcdError as e:
                await _send_status(stream, Status(int(e.code)), e.message)
            except GRPCError as e:
                await _send_status(stream, e.status, e.message)
            except TimeoutError:
                await _send_status(stream, Status.DEADLINE_EXCEEDED, None)
            except Exception:
                log.exception("Application error")
                await _send_status(stream, Status.UNKNOWN, "Internal Server Error")
            else:
                await _send_reply(stream, reply if isinstance(reply, bytes) else bytes(reply))
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client went away first
        finally:
            release_stream()

    async def _call(self, stream: H2Stream, path: str, method: UnaryMethod) -> Any:
        interceptor = self.interceptor()
        if interceptor is not None:
            await interceptor(path)
        fn, request_type = method
        request = await _recv_message(stream, self.codec, request_type)
        return await fn(request)


async def _recv_message(stream: H2Stream, codec: CodecBase, request_type: type) -> Any:
    prefix = await stream.recv_data(5)
    if len(prefix) < 5:
        raise missing_message_error()
    if prefix[0]:
        raise compression_error()
    size = int.from_bytes(prefix[1:5], "big")
    data = await stream.recv_data(size) if size else b""
    return codec.decode(data, request_type)


async def _send_reply(stream: H2Stream, message: bytes) -> None:
    conn = stream.connection
    if not conn.write_ready.is_set():
        await conn.write_ready.wait()
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    if sid not in h2conn.streams:
        return  # reset by the client meanwhile
    prefix = b"\x00" + len(message).to_bytes(4, "big")  # gRPC: uncompressed, length
    h2conn.send_headers(sid, _RESPONSE_HEADERS)
    transport = stream._transport
    if len(message) + 5 <= h2conn.local_flow_control_window(sid):
        # headers, body and trailers in one buffer: the body is copied once, by the join
        parts: list[bytes | memoryview] = [h2conn.data_to_send()]
        parts += _data_frames(h2conn, sid, memoryview(message), 0, len(message), prefix)
        h2conn.send_headers(sid, _TRAILERS_OK, end_stream=True)
        parts.append(h2conn.data_to_send())
        transport.write(b"".join(parts))
    else:
        transport.write(h2conn.data_to_send())
        await send_data(stream, prefix + message)
        if sid not in h2conn.streams:
            return
        h2conn.send_headers(sid, _TRAILERS_OK, end_stream=True)
        transport.write(h2conn.data_to_send())
    conn.data_send_process()  # grpclib's keepalive accounting: the connection is in use


async def _send_status(stream: H2Stream, status: Status, message: str | None) -> None:
    """A trailers-only response, then RST_STREAM if the client's side is still open (as
    grpclib does)."""
    conn = stream.connection
    if not conn.write_ready.is_set():
        await conn.write_ready.wait()
    h2conn = stream._h2_connection
    assert stream.id is not None
    if stream.id not in h2conn.streams:
        return
    headers = [*_RESPONSE_HEADERS, ("grpc-status", str(status.value))]
    if message is not None:
        headers.append(("grpc-message", encode_grpc_message(message)))
    h2conn.send_headers(stream.id, headers, end_stream=True)
    stream._transport.write(h2conn.data_to_send())
    if stream.closable:
        stream.reset_nowait()


async def send_data(stream: H2Stream, data: bytes) -> None:
    """Send ``data`` on ``stream`` as DATA frames: every frame the flow-control windows
    allow goes out in one transport write; waits for window updates when they are spent."""
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    conn = stream.connection
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        if not conn.write_ready.is_set():
            await conn.write_ready.wait()
        window = h2conn.local_flow_control_window(sid)
        if window <= 0:
            stream.window_updated.clear()
            await stream.window_updated.wait()
            continue
        stop = min(end, pos + window)
        parts: list[bytes | memoryview] = [h2conn.data_to_send()]  # h2's frames first
        parts += _data_frames(h2conn, sid, view, pos, stop)
        stream._transport.write(b"".join(parts))
        conn.data_send_process()
        pos = stop
