"""Watches over etcd's bidirectional Watch stream: all of a Client's watches on one stream.

As etcd's Go client does: creates are sent one at a time and the next ``created`` response
belongs to the oldest outstanding create; responses are routed by ``watch_id``; a progress
response (``watch_id`` -1) goes to every watch of the stream; fragments are reassembled.

:class:`Watches` is a Client's multiplexer, built from what it needs of the Client (a way
to open the channel, the endpoint's name, a task spawner), so nothing here reaches into the
Client. A stream that breaks with UNAVAILABLE or a lost connection is reopened (retrying with a
short backoff, as Go's client does) and every live watch is re-created from the revision
after the last one it delivered, so iteration continues with no gap and no duplicate. If
compaction overtook that revision meanwhile, the watch ends with ``WatchCompactedError``;
if the re-created watch's header names another cluster than before (an in-memory server
restarted: its revisions are another history), it ends with ``WatchClusterChangedError``
(clientv3 does not check; see that error).
Any other failure, or closing the Client, ends the watches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .._grpc.channel import undo_lost_connection_cancel
from ..errors import (
    WATCH_CANCELED,
    EtcdError,
    UnavailableError,
    WatchCanceledError,
    WatchClusterChangedError,
    WatchCompactedError,
    error_from_go_status_text,
    error_from_status,
)
from ..types import Event, WatchResponse
from ..watch import Watch, WatchSpec
from ..wire import clientpb, convert
from ..wire.pb import etcdserverpb as pb
from .policy import DeadlineExceededError

if TYPE_CHECKING:
    from grpclib.client import Channel, Stream

__all__ = ["ClientWatch", "WatchStream", "Watches"]

_END = object()


class ClientWatch(Watch):
    """A watch carried by a Client's shared Watch stream."""

    def __init__(self, watches: Watches, spec: WatchSpec) -> None:
        super().__init__(spec)
        self._watches = watches
        self._queue: asyncio.Queue[WatchResponse | BaseException | None] = asyncio.Queue()
        self._fragments: list[Event] = []
        #: Where a re-created watch resumes: the revision after the last one delivered.
        self._next_rev = 0
        #: The cluster the watch was created on (0: not known yet).
        self._cluster_id = 0

    async def _create(self) -> None:
        await self._watches.create(self)

    def _deliver(self, resp: WatchResponse) -> None:
        if resp.fragment:
            self._fragments.extend(resp.events)
            return
        if self._fragments:
            resp.events = self._fragments + resp.events
            self._fragments = []
        if resp.events:
            self._next_rev = resp.events[-1].kv.mod_revision + 1
        elif resp.header.revision:
            self._next_rev = max(self._next_rev, resp.header.revision + 1)
        self._queue.put_nowait(resp)

    def _end(self, error: BaseException | None) -> None:
        self._queue.put_nowait(error)

    async def _next(self) -> WatchResponse | None:
        item = await self._queue.get()
        if isinstance(item, WatchResponse):
            return item
        self._done = True
        if item is None:
            return None
        raise item

    async def _cancel(self) -> None:
        stream = self._watches.current
        if stream is not None:
            await stream.cancel(self)
        self._end(None)

    async def request_progress(self) -> None:
        await self._ensure_created()
        stream = await self._watches.stream()
        await stream.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))


class WatchStream:
    """One open ``/etcdserverpb.Watch/Watch`` stream and the watches it carries."""

    def __init__(self, owner: Watches) -> None:
        self._owner = owner
        self._watches: dict[int, ClientWatch] = {}
        self._create_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._pending: asyncio.Future[WatchResponse] | None = None
        self._pending_watch: ClientWatch | None = None
        self._stream: Stream[pb.WatchRequest, bytes] | None = None
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._run())
        self._error: BaseException | None = None
        self._abandoned: UnavailableError | None = None

    @property
    def alive(self) -> bool:
        return not self._task.done()

    async def _run(self) -> None:
        try:
            channel = self._owner.open_channel()
            async with channel.request(
                "/etcdserverpb.Watch/Watch",
                Cardinality.STREAM_STREAM,
                pb.WatchRequest,
                bytes,  # the reply stays raw bytes (see ClientCodec) for the hand decoder
            ) as stream:
                await stream.send_request()
                self._stream = stream
                if not self._ready.done():
                    self._ready.set_result(None)
                while True:
                    msg = await stream.recv_message()
                    if msg is None:
                        break
                    self._dispatch(clientpb.decode_watch_response(msg))
            error: BaseException = UnavailableError("etcdlite: watch stream ended")
        except asyncio.CancelledError:
            if self._abandoned is not None:
                # cancelled on purpose by abandon(): the watches go on elsewhere
                self._fail(self._abandoned, resumable=True)
                return
            error = UnavailableError("etcdlite: watch stream closed")
            self._fail(error)
            raise
        except GRPCError as e:
            error = error_from_status(e.status.value, e.message or "")
        except (OSError, StreamTerminatedError) as e:
            error = UnavailableError(f"etcdlite: {self._owner.endpoint()}: {e}")
        self._fail(error, resumable=isinstance(error, UnavailableError))

    def abandon(self, error: UnavailableError) -> None:
        """Give up on this stream (a create went unanswered): a late answer must not be
        taken for the next create's, so the stream ends and its watches resume on a new one."""
        if self._abandoned is None and not self._task.done():
            self._abandoned = error
            self._task.cancel()

    def _fail(self, error: BaseException, *, resumable: bool = False) -> None:
        self._error = error
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # nobody may be waiting for it
        if self._pending is not None and not self._pending.done():
            self._pending.set_exception(error)
            self._pending.exception()  # its creator may have failed first, on the send
        watches = [w for w in self._watches.values() if not w.done]
        self._watches.clear()
        if resumable and watches and not self._owner.closing:
            self._owner.spawn(self._owner.resume(watches))
            return
        for w in watches:
            w._end(error)

    def _dispatch(self, resp: WatchResponse) -> None:
        if resp.created:
            fut, w = self._pending, self._pending_watch
            if fut is not None and not fut.done():
                if not resp.canceled and w is not None:
                    cluster = resp.header.cluster_id
                    if w._cluster_id and cluster and cluster != w._cluster_id:
                        # resumed on another cluster: end it, and drop it on the server
                        fut.set_result(resp)
                        w._end(WatchClusterChangedError(w._cluster_id, cluster))
                        self._owner.spawn(self._cancel_id(resp.watch_id))
                        return
                    w._cluster_id = w._cluster_id or cluster
                    # Register now: its events may follow before create() resumes.
                    w.id = resp.watch_id
                    if not w._is_created:
                        w.revision = resp.header.revision
                    if not w._next_rev:
                        start = w.spec.start_revision
                        w._next_rev = start if start > 0 else resp.header.revision + 1
                    self._watches[resp.watch_id] = w
                fut.set_result(resp)
            return
        if resp.watch_id == -1 and not resp.events and not resp.canceled:
            for w in self._watches.values():
                w._deliver(resp)
            return
        w = self._watches.get(resp.watch_id)
        if w is None:
            return
        if resp.canceled:
            del self._watches[resp.watch_id]
            if resp.events:
                w._deliver(resp)
            if resp.compact_revision:
                w._end(WatchCompactedError(resp.compact_revision))
            else:
                w._end(WatchCanceledError(resp.cancel_reason or WATCH_CANCELED))
            return
        w._deliver(resp)

    async def send(self, req: pb.WatchRequest) -> None:
        await asyncio.shield(self._ready)
        stream = self._stream
        if stream is None or self._error is not None:
            raise self._error or UnavailableError("etcdlite: watch stream closed")
        async with self._send_lock:
            try:
                await stream.send_message(req)
            except (OSError, StreamTerminatedError) as e:
                raise UnavailableError(f"etcdlite: {self._owner.endpoint()}: {e}") from e

    async def create(self, watch: ClientWatch, start_revision: int | None = None) -> None:
        """Create ``watch`` on this stream (from ``start_revision`` when resuming)."""
        async with self._create_lock:
            fut: asyncio.Future[WatchResponse] = asyncio.get_running_loop().create_future()
            self._pending = fut
            self._pending_watch = watch
            request = convert.watch_create_to_pb(watch.spec)
            if start_revision is not None:
                assert request.create_request is not None
                request.create_request.start_revision = start_revision
            try:
                await self.send(request)
                resp = await fut
            finally:
                self._pending = None
                self._pending_watch = None
            if resp.canceled:
                # etcd refuses a watch it may not create (auth) with grpc-go's text of the
                # status: raise the error it names, as a unary call would
                raise error_from_go_status_text(resp.cancel_reason) or WatchCanceledError(
                    resp.cancel_reason
                )

    async def cancel(self, watch: ClientWatch) -> None:
        if self._watches.get(watch.id) is not watch:
            return
        del self._watches[watch.id]
        with contextlib.suppress(EtcdError):
            await self.send(
                pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch.id))
            )

    async def _cancel_id(self, watch_id: int) -> None:
        with contextlib.suppress(EtcdError):
            await self.send(
                pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id))
            )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class Watches:
    """A Client's watches: one shared stream at a time, re-created after a break."""

    def __init__(
        self,
        open_channel: Callable[[], Channel],
        endpoint: Callable[[], str],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        *,
        timeout: float | None = None,
        can_retry: Callable[[], bool] = lambda: False,
    ) -> None:
        self.open_channel = open_channel
        #: Whether a create whose stream broke is tried again on a new stream (there is
        #: another endpoint to go to).
        self.can_retry = can_retry
        #: Bounds a watch's creation (retries on other endpoints included).
        self.timeout = timeout
        self.endpoint = endpoint
        self.spawn = spawn
        #: The stream in use (``None`` before the first watch).
        self.current: WatchStream | None = None
        #: Set when the Client closes: a broken stream is then not resumed.
        self.closing = False

    def open(self, spec: WatchSpec) -> ClientWatch:
        return ClientWatch(self, spec)

    async def stream(self) -> WatchStream:
        """The live stream, opening a new one if there is none."""
        if self.current is None or not self.current.alive:
            self.current = WatchStream(self)
        return self.current

    async def create(self, watch: ClientWatch) -> None:
        """Create ``watch``, on a new stream (the next endpoint) while streams break, within
        ``timeout``: if it runs out, ``DeadlineExceededError`` and the stream that did not
        answer is abandoned."""
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        delay = 0.001
        last: BaseException | None = None
        stream: WatchStream | None = None
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                while True:
                    stream = await self.stream()
                    try:
                        await stream.create(watch)
                        return
                    except UnavailableError as e:
                        undo_lost_connection_cancel(task, cancelling)
                        if not self.can_retry():
                            raise
                        last = e
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.25, 0.1)
        except (TimeoutError, asyncio.CancelledError) as e:
            if not deadline.expired() or (
                isinstance(e, asyncio.CancelledError) and task.cancelling() > cancelling
            ):
                raise
            if stream is not None:
                stream.abandon(UnavailableError("etcdlite: watch create went unanswered"))
            raise DeadlineExceededError(
                f"etcdlite: watch create deadline exceeded after {self.timeout}s"
                f" (last endpoint {self.endpoint()}; last error: {last!r})"
            ) from None

    async def resume(self, watches: list[ClientWatch]) -> None:
        """Re-create ``watches`` on a new stream after the old one broke, each from the
        revision after the last it delivered; retries (1 ms, x1.25, at most 100 ms apart,
        as Go's client) until the server answers or the Client closes."""
        delay = 0.001
        pending = watches
        while pending:
            pending = [w for w in pending if not w.done]
            if not pending:
                return
            try:
                stream = await self.stream()
                while pending:
                    w = pending[0]
                    try:
                        await stream.create(w, start_revision=w._next_rev)
                    except WatchCanceledError as e:
                        w._end(e)
                    pending.pop(0)
            except UnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 1.25, 0.1)

    async def close(self) -> None:
        self.closing = True
        if self.current is not None:
            await self.current.close()
            self.current = None
