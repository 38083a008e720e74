"""etcd's unary RPCs on a lean path over grpclib's HTTP/2 objects: one write per reply.

grpclib answers a unary RPC in three transport writes (headers, data, trailers) with a
generic pipeline around it (server events, metadata and deadline wrappers, per-message
bookkeeping). :class:`UnaryHandler` takes over a registered unary RPC when the request's
headers are the ordinary ones (POST, ``application/grpc[+proto]``, ``te: trailers``) and
answers with headers, DATA and trailers in one buffer; anything else goes down grpclib's own
path, which stays the reference behaviour (tests compare the two paths).

What the lean path does itself, and grpclib's path does the same way:

* the request: a 5-byte prefix (a compressed flag is refused like grpc-go, no decompressor
  is installed), then exactly the announced bytes, decoded by the server's codec;
* ``grpc-timeout`` becomes a server-side deadline (DEADLINE_EXCEEDED when it passes);
* the method raises ``EtcdError``/``GRPCError`` for a status; anything else is logged and
  answered UNKNOWN "Internal Server Error", as grpclib does;
* a status is a trailers-only response, then RST_STREAM if the client's side is still open.

Only :mod:`etcdlite._grpc` imports this; :func:`~etcdlite._grpc.compat.fast_path_enabled`
decides whether it is used at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import h2.exceptions
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import Deadline, encode_grpc_message
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler

from ..errors import (
    EtcdError,
    GrpcCompressedMessageError,
    GrpcInternalServerError,
    GrpcMissingMessageError,
)
from .caller import CALLER, Caller
from .frames import data_frames, send_data
from .headers import headers_frames
from .messages import read_message

__all__ = ["FastMethod", "Interceptor", "UnaryHandler"]

log = logging.getLogger("etcdlite.server")

#: A unary RPC: the decoded request in, the reply (pre-encoded bytes or a message) out; it
#: raises ``EtcdError`` or ``GRPCError`` for a status.
FastMethod = tuple[Callable[[Any], Awaitable[Any]], type]
Interceptor = Callable[[str], Awaitable[None]]

_CONTENT_TYPE = "application/grpc+proto"
_ACCEPTED_CONTENT_TYPES = frozenset({"application/grpc", _CONTENT_TYPE})
_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", _CONTENT_TYPE.encode())]
_TRAILERS_OK = [(b"grpc-status", b"0")]


class UnaryHandler(Handler):
    """grpclib's per-connection request handler, with ``methods`` on the lean path.

    Every other request, and a request to one of ``methods`` with unusual headers, goes to
    grpclib's ``request_handler`` unchanged.
    """

    def __init__(
        self,
        *args: Any,
        methods: Mapping[str, FastMethod],
        interceptor: Callable[[], Interceptor | None],
    ) -> None:
        super().__init__(*args)
        self.methods = methods
        self.interceptor = interceptor
        #: Requests answered on the lean path (tests check it is taken).
        self.fast_requests = 0
        #: Streams released so far (the concurrent-stream bound reads it).
        self.closed_streams = 0

    def accept(
        self, stream: H2Stream, headers: list[tuple[str, str]], release_stream: Callable[[], Any]
    ) -> None:
        # A request cancelled before its task first runs (a client that opens and resets
        # streams in one packet) never reaches the task's ``finally``; :meth:`cancel` then
        # releases the stream, so none stays registered until the connection closes.
        release_stream = stream._etcdlite_release = _Release(release_stream, self)  # type: ignore[attr-defined]
        fields = dict(headers)
        encoding = fields.get("grpc-encoding")
        if encoding is not None and encoding != "identity":
            # grpc-go refuses a compression it has no decompressor for before any message
            self.__gc_step__()
            error = GrpcCompressedMessageError(encoding)
            self._tasks[stream] = self.loop.create_task(
                _refuse(stream, Status(int(error.code)), error.message, release_stream)
            )
            return
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
        token = fields.get("token")
        caller = Caller(fields.get("authorization") if token is None else token, stream)
        self._tasks[stream] = self.loop.create_task(
            self._handle(stream, path, method, timeout, release_stream, caller)
        )

    def cancel(self, stream: H2Stream) -> None:
        task = self._tasks.get(stream)
        super().cancel(stream)
        release = getattr(stream, "_etcdlite_release", None)
        if task is not None and release is not None:
            task.add_done_callback(lambda _task: release())

    async def _handle(
        self,
        stream: H2Stream,
        path: str,
        method: FastMethod,
        timeout: float | None,
        release_stream: Callable[[], Any],
        caller: Caller,
    ) -> None:
        CALLER.set(caller)  # this request's task: its token and stream, for auth
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
                error = GrpcInternalServerError()
                await _send_status(stream, Status(int(error.code)), error.message)
            else:
                await _send_reply(stream, reply if isinstance(reply, bytes) else bytes(reply))
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client went away first
        finally:
            release_stream()

    async def _call(self, stream: H2Stream, path: str, method: FastMethod) -> Any:
        interceptor = self.interceptor()
        if interceptor is not None:
            await interceptor(path)
        fn, request_type = method
        request = await read_message(stream, self.codec, request_type, unary=True)
        if request is None:
            raise GrpcMissingMessageError()
        return await fn(request)


class _Release:
    """A stream's release, idempotent (grpclib's raises if called twice); it also counts
    the handler's released streams."""

    __slots__ = ("_done", "_fn", "_handler")

    def __init__(self, fn: Callable[[], Any], handler: UnaryHandler) -> None:
        self._fn = fn
        self._handler = handler
        self._done = False

    def __call__(self) -> None:
        if not self._done:
            self._done = True
            self._handler.closed_streams += 1
            self._fn()


async def _refuse(
    stream: H2Stream, status: Status, message: str, release_stream: Callable[[], Any]
) -> None:
    try:
        await _send_status(stream, status, message)
    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
        pass
    finally:
        release_stream()


async def _send_reply(stream: H2Stream, message: bytes) -> None:
    conn = stream.connection
    if not conn.write_ready.is_set():
        await conn.write_ready.wait()
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    h2stream = h2conn.streams.get(sid)
    if h2stream is None:
        return  # reset by the client meanwhile
    prefix = b"\x00" + len(message).to_bytes(4, "big")  # gRPC: uncompressed, length
    transport = stream._transport
    if len(message) + 5 <= h2conn.local_flow_control_window(sid):
        # headers, body and trailers in one buffer: the body is copied once, by the join;
        # the header blocks are framed here, not by h2 (see .headers)
        parts: list[bytes | memoryview] = [
            h2conn.data_to_send(),
            headers_frames(h2conn, h2stream, _RESPONSE_HEADERS),
        ]
        parts += data_frames(h2conn, sid, memoryview(message), 0, len(message), prefix)
        parts.append(headers_frames(h2conn, h2stream, _TRAILERS_OK, end_stream=True))
        transport.write(b"".join(parts))
    else:
        transport.write(h2conn.data_to_send() + headers_frames(h2conn, h2stream, _RESPONSE_HEADERS))
        await send_data(stream, message, prefix)  # a large body is not copied to prepend
        h2stream = h2conn.streams.get(sid)
        if h2stream is None:
            return
        transport.write(
            h2conn.data_to_send() + headers_frames(h2conn, h2stream, _TRAILERS_OK, end_stream=True)
        )
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
    headers: list[tuple[bytes, bytes]] = [
        *_RESPONSE_HEADERS,
        (b"grpc-status", str(status.value).encode()),
    ]
    if message is not None:
        headers.append((b"grpc-message", encode_grpc_message(message).encode()))
    h2conn.send_headers(stream.id, headers, end_stream=True)
    stream._transport.write(h2conn.data_to_send())
    if stream.closable:
        stream.reset_nowait()
