"""etcd's unary RPCs on a lean path over grpclib's HTTP/2 objects: one write per reply.

grpclib answers a unary RPC in three transport writes (headers, data, trailers) with a
generic pipeline around it (server events, metadata and deadline wrappers, per-message
bookkeeping). :class:`UnaryHandler` takes over a registered unary RPC when the request's
headers are the ordinary ones (POST, ``application/grpc[+proto]``, ``te: trailers``) and
answers with headers, DATA and trailers in one buffer; anything else goes down grpclib's own
path, which stays the reference behaviour (tests compare the two paths).

A request does not get a task of its own up front. :meth:`UnaryHandler.accept` only takes
its headers; once the connection has handed grpclib all the frames of the bytes it read
(the request's DATA with them, as a rule), :meth:`UnaryHandler.run_pending` runs the
method at once, in a context of its own that holds the request's caller
(:data:`~.caller.CALLER`), up to its first wait. A request that never waits (a read, a write
to a store in memory) is answered there and then: no task, no loop turn before the reply.
One that waits (a durable write, a paused store) on an asyncio future and has no deadline
waits without a task: the future's callback takes it on from where it stopped, in the same
context, as a task's wake-up would (:class:`_Waiter`; a stream reset throws CancelledError
into it at its wait, as a task's cancel does). One with a deadline, or that waits a second
time, goes on in a task, under its deadline. A stream reset before the request started
releases it without running it.

A request whose HEADERS and DATA arrive together usually never reaches h2: the
connection's :class:`~.intake.RequestIntake` takes it (:meth:`UnaryHandler.take`) once
:meth:`UnaryHandler.accept` has accepted the same header block for this path, and it is
answered through a :class:`~.taken.TakenStream` in place of grpclib's stream.

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
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any

import h2.exceptions
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.metadata import decode_timeout
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
from .intake import RequestIntake, Verdict
from .messages import read_message
from .taken import RESPONSE_HEADERS, TRAILERS_OK, TakenStream, status_headers

__all__ = ["REQUESTS_PER_TURN", "FastMethod", "Interceptor", "UnaryHandler"]

log = logging.getLogger("etcdlite.server")

#: A unary RPC: the decoded request in, the reply (pre-encoded bytes or a message) out; it
#: raises ``EtcdError`` or ``GRPCError`` for a status.
FastMethod = tuple[Callable[[Any], Awaitable[Any]], type]
Interceptor = Callable[[str], Awaitable[None]]

_ACCEPTED_CONTENT_TYPES = frozenset({"application/grpc", "application/grpc+proto"})


#: Requests :meth:`UnaryHandler.run_pending` starts per turn of the loop.
REQUESTS_PER_TURN = 4
#: A request's stream: grpclib's (h2's path) or one the intake took whole.
_Stream = H2Stream | TakenStream
#: An accepted request: its path, method, deadline (loop time), stream release, caller.
_Request = tuple[str, "FastMethod", float | None, Callable[[], Any], Caller]


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
        #: Requests waiting on a future without a task (see :class:`_Waiter`).
        self._waiters: dict[_Stream, _Waiter] = {}
        #: A :meth:`run_pending` is scheduled for the next turn of the loop.
        self._deferred = False
        #: Requests accepted, not started yet: what :meth:`run_pending` starts.
        self._pending: dict[_Stream, _Request] = {}
        #: The connection's intake (set by its protocol): told which header blocks the
        #: lean path accepts, it takes later copies of them past h2.
        self.intake: RequestIntake | None = None

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
                # grpclib's Deadline.from_headers: the smallest of the values
                timeout = min(decode_timeout(v) for k, v in headers if k == "grpc-timeout")
            except ValueError:
                super().accept(stream, headers, release_stream)  # grpclib's answer
                return
        self.__gc_step__()
        self.fast_requests += 1
        token = fields.get("token")
        if token is None:
            token = fields.get("authorization")
        intake = self.intake
        if intake is not None and stream.id is not None and "content-length" not in fields:
            intake.learn(stream.id, Verdict(path, method, timeout, token), headers)
        caller = Caller(token, stream)
        at = None if timeout is None else self.loop.time() + timeout
        # started by run_pending, once the frames read with these headers (its DATA, as a
        # rule) have been taken in
        self._pending[stream] = (path, method, at, release_stream, caller)

    def take(self, stream: TakenStream, verdict: Verdict) -> None:
        """A request the connection's intake took whole (its headers are a copy of ones
        :meth:`accept` judged, ``verdict``): it waits for :meth:`run_pending` as an
        accepted one does."""
        release = stream._etcdlite_release = _Release(stream.finish, self)
        self.__gc_step__()
        self.fast_requests += 1
        timeout = verdict.timeout
        at = None if timeout is None else self.loop.time() + timeout
        caller = Caller(verdict.token, stream)
        self._pending[stream] = (verdict.path, verdict.method, at, release, caller)

    def run_pending(self) -> None:
        """Start the requests accepted since the last call. The connection's protocol calls
        this once it has handed grpclib every event of the bytes it read.

        They start in order, :data:`REQUESTS_PER_TURN` per turn of the loop; the rest go on
        at the next turn. In between, the replies of the turn leave (one write) and the
        client starts on them while the server goes on: a client with 16 requests in flight
        keeps groups of them going, one being processed while it turns another around,
        instead of both sides taking turns on all 16. For durable writes, the next turn
        comes before the hand-over of this turn's writes to the log's writer (scheduled when
        they were queued), so the writer syncs two turns' writes at once while the loop
        starts the next ones, and their replies leave when their sync is done."""
        pending = self._pending
        if len(pending) > REQUESTS_PER_TURN and not self._deferred:
            self._deferred = True
            self.loop.call_soon(self._run_deferred)
        for _ in range(min(REQUESTS_PER_TURN, len(pending))):
            stream = next(iter(pending))
            path, method, deadline, release_stream, caller = pending.pop(stream)
            self._start(stream, path, method, deadline, release_stream, caller)

    def _run_deferred(self) -> None:
        self._deferred = False
        self.run_pending()

    def cancel(self, stream: _Stream) -> None:
        waiter = self._waiters.pop(stream, None)
        if waiter is not None:
            waiter.cancel()
            return
        if self._pending.pop(stream, None) is not None:  # reset before it started
            release = getattr(stream, "_etcdlite_release", None)
            if release is not None:
                release()
            return
        task = self._tasks.get(stream)  # type: ignore[arg-type]
        if task is None:
            return  # answered already (a synchronous request leaves no task)
        super().cancel(stream)  # type: ignore[arg-type]
        release = getattr(stream, "_etcdlite_release", None)
        if release is not None:
            task.add_done_callback(lambda _task: release())

    def close(self) -> None:
        pending, self._pending = self._pending, {}
        for _, _, _, release_stream, _ in pending.values():
            release_stream()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.cancel()
        super().close()

    def _start(
        self,
        stream: _Stream,
        path: str,
        method: FastMethod,
        deadline: float | None,
        release_stream: Callable[[], Any],
        caller: Caller,
    ) -> None:
        """Run the request's method at once, in a context of its own (its caller), up to
        its first wait: a request that needs none is answered now, without a task; one that
        waits (a durable write, a paused store) goes on from where it stopped when its
        future is done (:class:`_Waiter`), or in a task under its deadline if it has one."""
        context = contextvars.copy_context()
        context.run(CALLER.set, caller)
        coro = self._call(stream, path, method)
        try:
            waiting = context.run(coro.send, None)
        except StopIteration as done:
            reply = done.value
            message = reply if isinstance(reply, bytes) else bytes(reply)
            self._answer(stream, message, None, release_stream)
        except Exception as e:
            self._answer(stream, None, e, release_stream)
        else:
            if deadline is None and _Waiter.fits(waiting):
                _Waiter(self, stream, coro, waiting, context, release_stream)
                return
            # grpclib's task map (cancel, close and gc read it) holds taken streams too
            self._tasks[stream] = self.loop.create_task(  # type: ignore[index]
                self._handle(stream, _Resume(coro, waiting), deadline, release_stream),
                context=context,
            )

    def _answer(
        self,
        stream: _Stream,
        message: bytes | None,
        error: Exception | None,
        release_stream: Callable[[], Any],
    ) -> None:
        """Send the reply (or the status ``error`` maps to) and release the stream now if
        the connection takes it without waiting; else a task does both."""
        status, text = (Status.OK, None) if message is not None else _status_of(error)
        try:
            if message is not None:
                done = _reply_now(stream, message)
            else:
                done = _status_now(stream, status, text)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            done = True  # the client went away first
        if done:
            release_stream()
            return
        # the connection's writes are paused, or the body is over the windows: a task waits
        self._tasks[stream] = self.loop.create_task(  # type: ignore[index]
            self._handle(stream, _Done(message), None, release_stream)
            if message is not None
            else _refuse(stream, status, text, release_stream)
        )

    async def _handle(
        self,
        stream: _Stream,
        call: Awaitable[Any],
        deadline: float | None,
        release_stream: Callable[[], Any],
    ) -> None:
        try:
            try:
                if deadline is None:
                    reply = await call
                else:
                    async with asyncio.timeout_at(deadline):
                        reply = await call
            except Exception as e:
                status, text = _status_of(e)
                await _send_status(stream, status, text)
            else:
                await _send_reply(stream, reply if isinstance(reply, bytes) else bytes(reply))
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client went away first
        finally:
            release_stream()

    async def _call(self, stream: _Stream, path: str, method: FastMethod) -> Any:
        interceptor = self.interceptor()
        if interceptor is not None:
            await interceptor(path)
        fn, request_type = method
        if isinstance(stream, TakenStream):
            codec = self.codec
            check_size = getattr(codec, "check_size", None)
            if check_size is not None:
                check_size(len(stream.message))
            return await fn(codec.decode(stream.message, request_type))
        request = await read_message(stream, self.codec, request_type, unary=True)
        if request is None:
            raise GrpcMissingMessageError()
        return await fn(request)


def _status_of(error: BaseException | None) -> tuple[Status, str | None]:
    """The status a method's exception is answered with: its own for ``EtcdError`` and
    ``GRPCError``, DEADLINE_EXCEEDED for the deadline's ``TimeoutError``, else UNKNOWN
    "Internal Server Error" (logged, as grpclib does)."""
    if isinstance(error, EtcdError):
        return Status(int(error.code)), error.message
    if isinstance(error, GRPCError):
        return error.status, error.message
    if isinstance(error, TimeoutError):
        return Status.DEADLINE_EXCEEDED, None
    log.error("Application error", exc_info=error)
    internal = GrpcInternalServerError()
    return Status(int(internal.code)), internal.message


class _Resume:
    """Awaiting this goes on with ``coro``, a coroutine run up to its first wait outside
    any task (it yielded ``waiting``, the future it waits on): the task awaiting this sees
    that future first, then everything ``coro`` yields, and sends and throws (cancellation,
    a deadline) go on to ``coro``; its result is ``coro``'s."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._waiting
        while True:
            try:
                sent = yield value
            except BaseException as e:
                try:
                    value = coro.throw(e)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


class _Waiter:
    """A request's coroutine waiting on an asyncio future without a task: the future's
    callback resumes it (in the request's context), as a task's wake-up would, and answers
    when it returns; a second wait goes on in a task. Cancelling throws CancelledError
    into the coroutine at its wait, as a task's cancel does."""

    __slots__ = ("_context", "_coro", "_future", "_handler", "_release", "_stream")

    @staticmethod
    def fits(waiting: Any) -> bool:
        """Whether ``waiting`` (what the coroutine yielded) is a future a task would wait
        on: an asyncio future that asked to block."""
        return getattr(waiting, "_asyncio_future_blocking", False) is True

    def __init__(
        self,
        handler: UnaryHandler,
        stream: _Stream,
        coro: Coroutine[Any, Any, Any],
        future: asyncio.Future[Any],
        context: contextvars.Context,
        release: Callable[[], Any],
    ) -> None:
        self._handler = handler
        self._stream = stream
        self._coro = coro
        self._future = future
        self._context = context
        self._release = release
        future._asyncio_future_blocking = False  # what a task does with it
        future.add_done_callback(self._wake, context=context)
        handler._waiters[stream] = self

    def _wake(self, _future: asyncio.Future[Any]) -> None:
        handler = self._handler
        if handler._waiters.pop(self._stream, None) is not self:
            return
        self._resume(None)

    def _resume(self, error: BaseException | None) -> None:
        """Go on with the coroutine (already inside the request's context)."""
        handler, stream, coro, release = self._handler, self._stream, self._coro, self._release
        try:
            waiting = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as done:
            reply = done.value
            message = reply if isinstance(reply, bytes) else bytes(reply)
            handler._answer(stream, message, None, release)
        except asyncio.CancelledError:
            release()
        except Exception as e:
            handler._answer(stream, None, e, release)
        else:
            # it waits again: a task takes it from here
            handler._tasks[stream] = handler.loop.create_task(  # type: ignore[index]
                handler._handle(stream, _Resume(coro, waiting), None, release)
            )

    def cancel(self) -> None:
        """The stream was reset or the connection closed: the wait ends with
        CancelledError in the coroutine, as a task's cancel ends it."""
        self._future.remove_done_callback(self._wake)
        self._future.cancel()
        self._context.run(self._resume, asyncio.CancelledError())


class _Done:
    """A reply known already, awaited by the task that sends it."""

    __slots__ = ("_message",)

    def __init__(self, message: bytes) -> None:
        self._message = message

    def __await__(self) -> Generator[Any, Any, bytes]:
        return self._message
        yield  # a generator: awaitable


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
    stream: _Stream, status: Status, message: str | None, release_stream: Callable[[], Any]
) -> None:
    try:
        await _send_status(stream, status, message)
    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
        pass
    finally:
        release_stream()


def _reply_now(stream: _Stream, message: bytes) -> bool:
    """Write the reply (headers, ``message``, trailers) in one buffer if the connection
    takes it now: writes not paused, the body within the flow-control windows. False if
    nothing was written; True also when the client reset the stream meanwhile."""
    if isinstance(stream, TakenStream):
        return stream.reply_now(message)
    conn = stream.connection
    if not conn.write_ready.is_set():
        return False
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    h2stream = h2conn.streams.get(sid)
    if h2stream is None:
        return True  # reset by the client meanwhile
    size = len(message)
    if size + 5 > h2conn.local_flow_control_window(sid):
        return False
    # headers, body and trailers in one buffer: the body is copied once, by the join; the
    # header blocks are framed here, not by h2 (see .headers)
    parts: list[bytes | memoryview] = [
        h2conn.data_to_send(),
        headers_frames(h2conn, h2stream, RESPONSE_HEADERS),
    ]
    prefix = b"\x00" + size.to_bytes(4, "big")  # gRPC: uncompressed, length
    parts += data_frames(h2conn, sid, memoryview(message), 0, size, prefix)
    parts.append(headers_frames(h2conn, h2stream, TRAILERS_OK, end_stream=True))
    stream._transport.write(b"".join(parts))
    conn.data_send_process()  # grpclib's keepalive accounting: the connection is in use
    return True


async def _send_reply(stream: _Stream, message: bytes) -> None:
    if isinstance(stream, TakenStream):
        await stream.send_reply(message)
        return
    conn = stream.connection
    if not conn.write_ready.is_set():
        await conn.write_ready.wait()
    if _reply_now(stream, message):
        return
    # a body over the windows: it goes out as WINDOW_UPDATEs arrive, not copied to prepend
    h2conn = stream._h2_connection
    sid = stream.id
    assert sid is not None
    h2stream = h2conn.streams.get(sid)
    if h2stream is None:
        return
    transport = stream._transport
    transport.write(h2conn.data_to_send() + headers_frames(h2conn, h2stream, RESPONSE_HEADERS))
    await send_data(stream, message, b"\x00" + len(message).to_bytes(4, "big"))
    h2stream = h2conn.streams.get(sid)
    if h2stream is None:
        return
    transport.write(
        h2conn.data_to_send() + headers_frames(h2conn, h2stream, TRAILERS_OK, end_stream=True)
    )
    conn.data_send_process()


def _status_now(stream: _Stream, status: Status, message: str | None) -> bool:
    """A trailers-only response, then RST_STREAM if the client's side is still open (as
    grpclib does), if the connection's writes are not paused; False if nothing was sent."""
    if isinstance(stream, TakenStream):
        return stream.status_now(status, message)
    conn = stream.connection
    if not conn.write_ready.is_set():
        return False
    h2conn = stream._h2_connection
    assert stream.id is not None
    if stream.id not in h2conn.streams:
        return True
    h2conn.send_headers(stream.id, status_headers(status, message), end_stream=True)
    stream._transport.write(h2conn.data_to_send())
    if stream.closable:
        stream.reset_nowait()
    return True


async def _send_status(stream: _Stream, status: Status, message: str | None) -> None:
    conn = stream.connection
    if not conn.write_ready.is_set():
        await conn.write_ready.wait()
    _status_now(stream, status, message)
