"""``Client``: the embedded Store's API over etcd's gRPC protocol, for any etcd endpoint.

The same calls, the same result types and the same exceptions as :class:`~etcdlite.Store`,
against etcdlite's own server or a real etcd cluster: gRPC statuses are mapped back to
etcdlite's exception classes by their exact text, as etcd's Go client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .api import KVBase
from .client_watch import ClientWatch, WatchStream
from .clock import Clock, LoopClock
from .errors import EtcdError, UnavailableError, WatchCanceledError, error_from_status
from .lease import Lease, LeaseTimeToLive
from .ops import DeleteRangeRequest, RangeRequest, TxnRequest, _HasId, lease_id
from .types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    PutResponse,
    RangeResponse,
    TxnResponse,
    to_bytes,
)
from .watch import Watch, WatchSpec
from .wire import convert, fastpb
from .wire.codec import ClientCodec
from .wire.pb import etcdserverpb as pb
from .wire.transport import CorkedChannel

__all__ = ["Client", "connect", "parse_endpoint"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` or ``"http://host:port"`` → ``(host, port)`` (port 2379 if absent)."""
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "grpc"):
        raise ValueError(f"unsupported endpoint scheme {parts.scheme!r} (TLS is not supported)")
    if not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r} has no host")
    return parts.hostname, parts.port or 2379


class Client(KVBase):
    """An etcd client with the :class:`~etcdlite.Store` API.

    ``endpoint`` is ``"host:port"`` (or ``http://host:port``). ``timeout`` bounds every call
    (seconds; ``None`` waits forever, like Go's client without a context deadline).
    The connection opens on first use; ``close()`` (or ``async with``) releases it.
    """

    def __init__(
        self, endpoint: str = "127.0.0.1:2379", *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        self.host, self.port = parse_endpoint(endpoint)
        self.endpoint = f"{self.host}:{self.port}"
        self.timeout = timeout
        self._channel: Channel | None = None
        self._kv: pb.KvStub | None = None
        self._lease: pb.LeaseStub | None = None
        self._watches: WatchStream | None = None
        self._keepalive: KeepAliveStream | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: The clock keepalive tasks sleep on.
        self.clock: Clock = LoopClock()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
        if self._watches is not None:
            await self._watches.close()
            self._watches = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._kv = None
            self._lease = None

    def _open(self) -> Channel:
        if self._channel is None:
            self._channel = CorkedChannel(self.host, self.port, codec=ClientCodec())
            self._kv = pb.KvStub(self._channel, timeout=self.timeout)
            self._lease = pb.LeaseStub(self._channel, timeout=self.timeout)
        return self._channel

    @property
    def kv_stub(self) -> pb.KvStub:
        self._open()
        assert self._kv is not None
        return self._kv

    @property
    def lease_stub(self) -> pb.LeaseStub:
        self._open()
        assert self._lease is not None
        return self._lease

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except GRPCError as e:
            raise error_from_status(e.status.value, e.message or "") from None
        except (OSError, StreamTerminatedError) as e:
            raise UnavailableError(f"etcdlite: {self.endpoint}: {e}") from e

    # --- KV ---------------------------------------------------------------------------

    async def range_request(self, req: RangeRequest) -> RangeResponse:
        msg = convert.range_request_to_pb(req)
        # The reply stays raw bytes (see ClientCodec) for the hand-written decoder.
        data = await self._call(
            lambda: self._unary_raw("/etcdserverpb.KV/Range", msg, pb.RangeRequest)
        )
        return fastpb.decode_range_response(data)

    async def _unary_raw(self, path: str, msg: Any, req_type: Any) -> bytes:
        stream: Stream[Any, bytes]
        async with self._open().request(
            path,
            Cardinality.UNARY_UNARY,
            req_type,
            bytes,
            timeout=self.timeout,
        ) as stream:
            await stream.send_message(msg, end=True)
            reply = await stream.recv_message()
            await stream.recv_trailing_metadata()
        assert isinstance(reply, bytes)
        return reply

    async def put(
        self,
        key: Bytesish,
        value: Bytesish,
        *,
        lease: int | _HasId = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> PutResponse:
        msg = pb.PutRequest(
            key=to_bytes(key),
            value=to_bytes(value, "value"),
            lease=lease_id(lease),
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        resp = await self._call(lambda: self.kv_stub.put(msg))
        return convert.put_response_from_pb(resp)

    async def delete_range_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        msg = convert.delete_range_request_to_pb(req)
        resp = await self._call(lambda: self.kv_stub.delete_range(msg))
        return convert.delete_range_response_from_pb(resp)

    async def txn_request(self, req: TxnRequest) -> TxnResponse:
        msg = convert.txn_request_to_pb(req)
        resp = await self._call(lambda: self.kv_stub.txn(msg))
        return convert.txn_response_from_pb(resp)

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        msg = pb.CompactionRequest(revision=revision, physical=physical)
        resp = await self._call(lambda: self.kv_stub.compact(msg))
        return CompactResponse(convert.header_from_pb(resp.header))

    # --- watches --------------------------------------------------------------------

    def open_watch(self, spec: WatchSpec) -> Watch:
        return ClientWatch(self, spec)

    async def _watch_stream(self) -> WatchStream:
        if self._watches is None or not self._watches.alive:
            self._watches = WatchStream(self)
        return self._watches

    async def _resume_watches(self, watches: list[ClientWatch]) -> None:
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
                stream = await self._watch_stream()
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

    # --- leases -----------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0) -> Lease:
        msg = pb.LeaseGrantRequest(ttl=ttl, id=id)
        resp = await self._call(lambda: self.lease_stub.lease_grant(msg))
        if resp.error:
            raise EtcdError(resp.error)
        return Lease(self, resp.id, resp.ttl)

    async def revoke(self, lease: int | _HasId) -> int:
        msg = pb.LeaseRevokeRequest(id=lease_id(lease))
        resp = await self._call(lambda: self.lease_stub.lease_revoke(msg))
        return convert.header_from_pb(resp.header).revision

    async def refresh(self, lease: int | _HasId) -> int:
        """One keepalive on the Client's shared LeaseKeepAlive stream; 0 if the lease is
        gone."""
        if self._keepalive is None or not self._keepalive.alive:
            self._keepalive = KeepAliveStream(self)
        return await self._keepalive.refresh(lease_id(lease))

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        msg = pb.LeaseTimeToLiveRequest(id=lease_id(lease), keys=keys)
        resp = await self._call(lambda: self.lease_stub.lease_time_to_live(msg))
        return LeaseTimeToLive(
            resp.id,
            resp.ttl,
            resp.granted_ttl,
            sorted(resp.keys),
            convert.header_from_pb(resp.header).revision,
        )

    async def leases(self) -> list[int]:
        resp = await self._call(lambda: self.lease_stub.lease_leases(pb.LeaseLeasesRequest()))
        return [status.id for status in resp.leases]


def connect(endpoint: str = "127.0.0.1:2379", *, timeout: float | None = DEFAULT_TIMEOUT) -> Client:
    """A :class:`Client` for ``endpoint`` (``"host:port"``); use ``async with``."""
    return Client(endpoint, timeout=timeout)


class KeepAliveStream:
    """The Client's one ``LeaseKeepAlive`` stream: each request gets one response, in order,
    so concurrent refreshes of different leases share it (answers are matched by ID)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._stream: Stream[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send_lock = asyncio.Lock()
        self._task = asyncio.ensure_future(self._run())

    @property
    def alive(self) -> bool:
        return not self._task.done()

    async def _run(self) -> None:
        error: BaseException
        try:
            async with self._client._open().request(
                "/etcdserverpb.Lease/LeaseKeepAlive",
                Cardinality.STREAM_STREAM,
                pb.LeaseKeepAliveRequest,
                pb.LeaseKeepAliveResponse,
            ) as stream:
                await stream.send_request()
                self._stream = stream
                self._ready.set_result(None)
                while True:
                    msg = await stream.recv_message()
                    if msg is None:
                        break
                    waiters = self._waiters.get(msg.id)
                    if waiters:
                        fut = waiters.pop(0)
                        if not waiters:
                            del self._waiters[msg.id]
                        if not fut.done():
                            fut.set_result(msg.ttl)
            error = UnavailableError("etcdlite: keepalive stream ended")
        except asyncio.CancelledError:
            self._fail(UnavailableError("etcdlite: keepalive stream closed"))
            raise
        except GRPCError as e:
            error = error_from_status(e.status.value, e.message or "")
        except (OSError, StreamTerminatedError) as e:
            error = UnavailableError(f"etcdlite: {self._client.endpoint}: {e}")
        self._fail(error)

    def _fail(self, error: BaseException) -> None:
        if not self._ready.done():
            self._ready.set_exception(error)
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._waiters.clear()

    async def refresh(self, lease: int) -> int:
        await asyncio.shield(self._ready)
        stream = self._stream
        assert stream is not None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease, []).append(fut)
        try:
            async with self._send_lock:
                await stream.send_message(pb.LeaseKeepAliveRequest(id=lease))
        except (OSError, StreamTerminatedError) as e:
            raise UnavailableError(f"etcdlite: {self._client.endpoint}: {e}") from e
        if self._client.timeout is None:
            return await fut
        async with asyncio.timeout(self._client.timeout):
            return await fut

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
