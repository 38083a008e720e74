"""``Client``: the embedded Store's API over etcd's gRPC protocol, for any etcd endpoint.

The same calls, the same result types and the same exceptions as :class:`~etcdlite.Store`,
against etcdlite's own server or a real etcd cluster: gRPC statuses are mapped back to
etcdlite's exception classes by their exact text, as etcd's Go client does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .._grpc import open_channel
from ..api import KVBase
from ..clock import Clock, LoopClock
from ..core.quota import AlarmType
from ..errors import EtcdError, UnavailableError, error_from_status
from ..lease import Lease, LeaseTimeToLive
from ..ops import DeleteRangeRequest, RangeRequest, TxnRequest, _HasId, lease_id
from ..types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    PutResponse,
    RangeResponse,
    TxnResponse,
    to_bytes,
)
from ..watch import Watch, WatchSpec
from ..wire import convert, fastpb
from ..wire.codec import ClientCodec
from ..wire.pb import etcdserverpb as pb
from .keepalive import KeepAliveStream
from .watch import Watches

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
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches = Watches(self._open, self._endpoint, self._spawn)
        self._keepalive: KeepAliveStream | None = None
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

    def _endpoint(self) -> str:
        return self.endpoint

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        self._watches.closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
        await self._watches.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._kv = None
            self._lease = None

    def _open(self) -> Channel:
        if self._channel is None:
            self._channel = open_channel(self.host, self.port, codec=ClientCodec())
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
        return self._watches.open(spec)

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
            self._keepalive = KeepAliveStream(self._open, self._endpoint, self.timeout)
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

    # --- maintenance ------------------------------------------------------------------

    def _maintenance(self) -> pb.MaintenanceStub:
        return pb.MaintenanceStub(self._open(), timeout=self.timeout)

    async def defragment(self) -> None:
        await self._call(lambda: self._maintenance().defragment(pb.DefragmentRequest()))

    async def alarms(self) -> list[tuple[int, AlarmType]]:
        msg = pb.AlarmRequest(action=pb.AlarmRequestAlarmAction.GET)
        resp = await self._call(lambda: self._maintenance().alarm(msg))
        return sorted((a.member_id, AlarmType(int(a.alarm))) for a in resp.alarms)

    async def disarm(self, alarm: AlarmType = AlarmType.NOSPACE, member: int = 0) -> bool:
        if not member:
            status = await self._call(lambda: self._maintenance().status(pb.StatusRequest()))
            member = status.header.member_id if status.header else 0
        msg = pb.AlarmRequest(
            action=pb.AlarmRequestAlarmAction.DEACTIVATE,
            member_id=member,
            alarm=pb.AlarmType(int(alarm)),
        )
        resp = await self._call(lambda: self._maintenance().alarm(msg))
        return bool(resp.alarms)


def connect(endpoint: str = "127.0.0.1:2379", *, timeout: float | None = DEFAULT_TIMEOUT) -> Client:
    """A :class:`Client` for ``endpoint`` (``"host:port"``); use ``async with``."""
    return Client(endpoint, timeout=timeout)
