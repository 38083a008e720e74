"""etcd's gRPC services over a :class:`~etcdlite.Store`: KV, Watch, Lease, Maintenance,
Cluster, Auth (disabled) and health.

The services only translate: protobuf in, a Store call, protobuf out; semantics live in the
core. Errors leave with etcd's exact status codes and texts (:mod:`etcdlite.errors`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import weakref
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from grpclib.const import Cardinality, Handler
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from .._grpc import Interceptor, recv_message
from ..core.hashkv import crc32c, hash_entries
from ..core.quota import AlarmType
from ..errors import (
    AuthNotEnabledError,
    BadLeaderTransfereeError,
    CompactedError,
    EtcdError,
    MemberNotFoundError,
    MemberNotLearnerError,
    RequestTooLargeError,
    RootUserNotExistError,
    ServerStoppedError,
)
from ..ops import DeleteRangeRequest, PutRequest, TxnRequest
from ..store import Store
from ..wire import convert, fastpb
from ..wire.codec import EtcdCodec
from ..wire.pb import etcdserverpb as pb
from ..wire.pb import v3electionpb, v3lockpb
from ..wire.pb.grpc.health import v1 as health
from .methods import UnaryMethod, grpc_error, unimplemented_handlers
from .recipes import RecipeServices
from .watch_stream import ServerWatchStream

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "EMULATED_VERSION", "EtcdServer"]

#: etcd's ``--max-request-bytes`` default (1.5 MiB).
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
#: gRPC receive limit over max-request-bytes, as etcd configures it.
GRPC_OVERHEAD = 512 * 1024
#: Bytes per SnapshotResponse (etcd sends 32 KiB blobs).
SNAPSHOT_CHUNK = 32 * 1024
#: The etcd line whose behaviour etcdlite emulates (reported by Status).
EMULATED_VERSION = "3.4.23"


class EtcdServer:
    """The services for one store: :meth:`mapping` is grpclib's method table,
    :meth:`unary_methods` the unary RPCs (which may also take the lean path)."""

    def __init__(
        self,
        store: Store,
        *,
        name: str = "default",
        advertise_client_urls: list[str] | None = None,
        peer_urls: list[str] | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.store = store
        self.name = name
        self.advertise_client_urls = advertise_client_urls or []
        self.peer_urls = peer_urls or ["http://localhost:2380"]
        self.max_request_bytes = max_request_bytes
        #: Awaited before every request with the method path: a hook for fault injection
        #: (pause, fail the next N requests of a kind).
        self.interceptor: Interceptor | None = None
        self.watch_streams: set[ServerWatchStream] = set()
        #: The addresses :func:`~etcdlite.server.serve` listens on, each stoppable
        #: (:class:`~etcdlite.server.listen.Listeners`; ``None`` outside ``serve``).
        self.listeners: Any = None
        #: etcd's ``--client-cert-auth``: a request without a token may be made as the CN
        #: of its connection's client certificate (:func:`etcdlite._grpc.peer_common_name`).
        self.client_cert_auth = False
        #: The grpclib servers serving this (the lean path's request count is theirs).
        self.grpc_servers: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The port actually bound by :func:`serve` (useful with port 0); ``ports`` has
        #: every port it listens on, the first one first.
        self.port = 0
        self.ports: list[int] = []
        #: Whether the serving connections take the fast path (set by :func:`serve`);
        #: streams then write their responses as DATA frames directly.
        self.fast_path = False
        #: Watch/LeaseKeepAlive/Observe streams started and ended (by gRPC code), for
        #: ``/metrics``; the unary counts are on each :class:`UnaryMethod`.
        self.stream_started: dict[str, int] = {}
        self.stream_handled: dict[str, list[int]] = {}
        self._unary: dict[str, UnaryMethod] | None = None
        #: The HTTP gateway on the served port (set by :func:`serve`).
        self._http: Any = None
        #: Makes :attr:`http` (set by :func:`~etcdlite.server.serve`; the HTTP modules sit
        #: above this one).
        self.http_factory: Callable[[EtcdServer], Any] | None = None

    @property
    def http(self) -> Any:
        """The HTTP/1.x handler of this server (:class:`~etcdlite.server.http.HttpGateway`):
        made, and its module imported, on first use, so a server that only ever sees gRPC
        starts without it."""
        if self._http is None and self.http_factory is not None:
            self._http = self.http_factory(self)
        return self._http

    @property
    def endpoint(self) -> str:
        """``host:port`` of the first advertised client URL."""
        url = urlsplit(self.advertise_client_urls[0])
        return f"{url.hostname}:{url.port}"

    @property
    def fast_requests(self) -> int:
        """Requests answered on the lean unary path so far (tests check it is taken)."""
        return sum(s.fast_requests for s in list(self.grpc_servers))

    def request_tasks(self) -> list[Any]:
        """The tasks of requests whose handler has not finished yet, on every connection
        (``asyncio.wait`` on them to know the server is idle)."""
        return [t for s in list(self.grpc_servers) for t in s.request_tasks()]

    # --- plumbing ---------------------------------------------------------------------

    def drop_watch_streams(self, message: str = ServerStoppedError.message) -> int:
        """Fault injection: end every open Watch stream with UNAVAILABLE ``message``, as a
        lost member or connection would; returns how many were dropped."""
        streams = list(self.watch_streams)
        for ws in streams:
            ws.close(grpc_error(ServerStoppedError(message)))
        return len(streams)

    def codec(self) -> EtcdCodec:
        return EtcdCodec(self.max_request_bytes + GRPC_OVERHEAD)

    def unary_methods(self) -> dict[str, UnaryMethod]:
        """Path → :class:`UnaryMethod` of every unary RPC served (made once, so the gRPC
        paths and the HTTP gateway share their counters)."""
        if self._unary is None:
            self._unary = self._make_unary_methods()
        return self._unary

    def _make_unary_methods(self) -> dict[str, UnaryMethod]:
        methods = [
            UnaryMethod("/etcdserverpb.KV/Range", self.range, pb.RangeRequest, pb.RangeResponse),
            UnaryMethod("/etcdserverpb.KV/Put", self.put, pb.PutRequest, pb.PutResponse),
            UnaryMethod(
                "/etcdserverpb.KV/DeleteRange",
                self.delete_range,
                pb.DeleteRangeRequest,
                pb.DeleteRangeResponse,
            ),
            UnaryMethod("/etcdserverpb.KV/Txn", self.txn, pb.TxnRequest, pb.TxnResponse),
            UnaryMethod(
                "/etcdserverpb.KV/Compact",
                self.compact,
                pb.CompactionRequest,
                pb.CompactionResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Lease/LeaseGrant",
                self.lease_grant,
                pb.LeaseGrantRequest,
                pb.LeaseGrantResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Lease/LeaseRevoke",
                self.lease_revoke,
                pb.LeaseRevokeRequest,
                pb.LeaseRevokeResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Lease/LeaseTimeToLive",
                self.lease_time_to_live,
                pb.LeaseTimeToLiveRequest,
                pb.LeaseTimeToLiveResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Lease/LeaseLeases",
                self.lease_leases,
                pb.LeaseLeasesRequest,
                pb.LeaseLeasesResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/Status",
                self.status,
                pb.StatusRequest,
                pb.StatusResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/Alarm", self.alarm, pb.AlarmRequest, pb.AlarmResponse
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/Defragment",
                self.defragment,
                pb.DefragmentRequest,
                pb.DefragmentResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/Hash", self.hash, pb.HashRequest, pb.HashResponse
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/HashKV",
                self.hash_kv,
                pb.HashKvRequest,
                pb.HashKvResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Maintenance/MoveLeader",
                self.move_leader,
                pb.MoveLeaderRequest,
                pb.MoveLeaderResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Cluster/MemberList",
                self.member_list,
                pb.MemberListRequest,
                pb.MemberListResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Cluster/MemberPromote",
                self.member_promote,
                pb.MemberPromoteRequest,
                pb.MemberPromoteResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Auth/Authenticate",
                self.authenticate,
                pb.AuthenticateRequest,
                pb.AuthenticateResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Auth/AuthDisable",
                self.auth_disable,
                pb.AuthDisableRequest,
                pb.AuthDisableResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Auth/AuthEnable",
                self.auth_enable,
                pb.AuthEnableRequest,
                pb.AuthEnableResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Auth/UserList",
                self.user_list,
                pb.AuthUserListRequest,
                pb.AuthUserListResponse,
            ),
            UnaryMethod(
                "/etcdserverpb.Auth/RoleList",
                self.role_list,
                pb.AuthRoleListRequest,
                pb.AuthRoleListResponse,
            ),
            UnaryMethod(
                "/grpc.health.v1.Health/Check",
                self.health_check,
                health.HealthCheckRequest,
                health.HealthCheckResponse,
            ),
            *self._recipes().unary_methods(),
        ]
        return {m.path: m for m in methods}

    def mapping(self) -> dict[str, Handler]:
        """grpclib's method table: every RPC of etcd 3.4's API."""
        interceptor = self._interceptor
        m: dict[str, Handler] = {
            path: method.grpclib_handler(interceptor)
            for path, method in self.unary_methods().items()
        }
        m["/etcdserverpb.Watch/Watch"] = Handler(
            self._counted("/etcdserverpb.Watch/Watch", self._watch),
            Cardinality.STREAM_STREAM,
            pb.WatchRequest,
            pb.WatchResponse,
        )
        m["/etcdserverpb.Lease/LeaseKeepAlive"] = Handler(
            self._counted("/etcdserverpb.Lease/LeaseKeepAlive", self._keepalive),
            Cardinality.STREAM_STREAM,
            pb.LeaseKeepAliveRequest,
            pb.LeaseKeepAliveResponse,
        )
        m["/etcdserverpb.Maintenance/Snapshot"] = Handler(
            self._counted("/etcdserverpb.Maintenance/Snapshot", self._snapshot),
            Cardinality.UNARY_STREAM,
            pb.SnapshotRequest,
            pb.SnapshotResponse,
        )
        for path, h in self._recipes().stream_handlers().items():
            m[path] = h._replace(func=self._counted(path, h.func))
        bases = (
            pb.KvBase,
            pb.WatchBase,
            pb.LeaseBase,
            pb.ClusterBase,
            pb.MaintenanceBase,
            pb.AuthBase,
            v3lockpb.LockBase,
            v3electionpb.ElectionBase,
            health.HealthBase,
        )
        m.update(unimplemented_handlers(bases, m, lambda: self.fast_path))
        return m

    def __mapping__(self) -> dict[str, Handler]:
        """grpclib's ``IServable``: so ``Server([etcd_server])`` and grpclib's in-memory
        ``ChannelFor`` serve it (on grpclib's own path)."""
        return self.mapping()

    def _fast_for(self, stream: Any) -> bool:
        """Whether ``stream`` takes the fast path: a served connection's stream does when
        the server's connections do; the HTTP gateway's in-process streams never do."""
        return self.fast_path and not getattr(stream, "in_process", False)

    def _recipes(self) -> RecipeServices:
        return RecipeServices(self.store, self._interceptor, lambda: self.fast_path)

    def _counted(
        self, path: str, fn: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """``fn``, a stream handler, counted in :attr:`stream_started`/`stream_handled`."""
        started, handled = self.stream_started, self.stream_handled
        started.setdefault(path, 0)
        counts = handled.setdefault(path, [0] * 17)

        async def handler(stream: Any) -> None:
            started[path] += 1
            code = 0
            try:
                await fn(stream)
            except GRPCError as e:
                code = e.status.value
                raise
            except asyncio.CancelledError:
                code = 1
                raise
            except Exception:
                code = 2
                raise
            finally:
                counts[code] += 1

        return handler

    def _interceptor(self) -> Interceptor | None:
        return self.interceptor

    def _check_size(self, request: Any) -> None:
        if getattr(request, "_etcdlite_size", 0) > self.max_request_bytes:
            raise RequestTooLargeError()

    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        return convert.header_to_pb(self.store.core.header(revision))

    # --- KV ---------------------------------------------------------------------------

    async def range(self, m: pb.RangeRequest) -> bytes:
        resp = await self.store.range_request(convert.range_request_from_pb(m))
        return fastpb.encode_range_response(resp)

    async def put(self, m: pb.PutRequest) -> bytes:
        self._check_size(m)
        resp = await self.store.put(
            m.key,
            m.value,
            lease=m.lease,
            prev_kv=m.prev_kv,
            ignore_value=m.ignore_value,
            ignore_lease=m.ignore_lease,
        )
        return fastpb.encode_put_response(resp)

    async def delete_range(self, m: pb.DeleteRangeRequest) -> bytes:
        self._check_size(m)
        resp = await self.store.delete_range_request(convert.delete_range_request_from_pb(m))
        return fastpb.encode_delete_range_response(resp)

    async def txn(self, m: pb.TxnRequest) -> bytes:
        req = convert.txn_request_from_pb(m)
        if _has_writes(req):
            self._check_size(m)
        resp = await self.store.txn_request(req)
        return fastpb.encode_txn_response(resp)

    async def compact(self, m: pb.CompactionRequest) -> pb.CompactionResponse:
        resp = await self.store.compact(m.revision, physical=m.physical)
        return pb.CompactionResponse(header=convert.header_to_pb(resp.header))

    # --- leases -----------------------------------------------------------------------

    async def lease_grant(self, m: pb.LeaseGrantRequest) -> bytes:
        self._check_size(m)
        lease = await self.store.grant(m.ttl, m.id)
        return fastpb.encode_lease_response(self.store.core.header(), lease.id, lease.ttl)

    async def lease_revoke(self, m: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        rev = await self.store.revoke(m.id)
        return pb.LeaseRevokeResponse(header=self.header(rev))

    async def lease_time_to_live(self, m: pb.LeaseTimeToLiveRequest) -> pb.LeaseTimeToLiveResponse:
        t = await self.store.time_to_live(m.id, keys=m.keys)
        return pb.LeaseTimeToLiveResponse(
            header=self.header(), id=m.id, ttl=t.ttl, granted_ttl=t.granted_ttl, keys=t.keys
        )

    async def lease_leases(self, m: pb.LeaseLeasesRequest) -> pb.LeaseLeasesResponse:
        ids = await self.store.leases()
        return pb.LeaseLeasesResponse(
            header=self.header(), leases=[pb.LeaseStatus(id=i) for i in ids]
        )

    async def _keepalive(self, stream: Stream[pb.LeaseKeepAliveRequest, Any]) -> None:
        """Each request gets one response in order: the granted TTL, or TTL 0 for a lease
        that is gone (no error; the stream stays open). Half-close ends it with OK."""
        if self.interceptor is not None:
            await self.interceptor("/etcdserverpb.Lease/LeaseKeepAlive")
        store = self.store
        try:
            fast = self._fast_for(stream)
            while (m := await recv_message(stream, unary=False, fast=fast)) is not None:
                header = store.core.header()
                ttl = await store.refresh(m.id)
                # pre-encoded bytes pass through the codec untouched
                await stream.send_message(fastpb.encode_lease_response(header, m.id, ttl))
        except EtcdError as e:
            raise grpc_error(e) from None

    # --- watch ------------------------------------------------------------------------

    async def _watch(self, stream: Stream[pb.WatchRequest, Any]) -> None:
        if self.interceptor is not None:
            await self.interceptor("/etcdserverpb.Watch/Watch")
        ws = ServerWatchStream(
            self.store,
            stream,
            max_message_bytes=self.max_request_bytes + GRPC_OVERHEAD,
            fast_writes=self._fast_for(stream),
        )
        self.watch_streams.add(ws)
        try:
            await ws.run()
        finally:
            self.watch_streams.discard(ws)

    # --- maintenance ------------------------------------------------------------------

    def db_size(self) -> int:
        """The database size Status reports (and ``/metrics``)."""
        return self.store.disk_size()

    async def status(self, m: pb.StatusRequest) -> pb.StatusResponse:
        store = self.store
        core = store.core
        rev = await store.sync()  # report only what is durable
        return pb.StatusResponse(
            header=self.header(rev),
            version=EMULATED_VERSION,
            db_size=store.disk_size(),
            leader=core.member_id,
            raft_index=rev,
            raft_term=core.raft_term,
            raft_applied_index=rev,
            # etcd lists every active alarm in Go's %v of its AlarmMember (trailing space)
            errors=[
                f"memberID:{member} alarm:{alarm.name} " for member, alarm in store.quota.listed()
            ],
            db_size_in_use=store.disk_size_in_use(),
        )

    async def alarm(self, m: pb.AlarmRequest) -> pb.AlarmResponse:
        """GET lists the active alarms; ACTIVATE/DEACTIVATE raise or clear one and answer
        with it. etcd 3.4 answers without a header."""
        action, alarm = int(m.action), AlarmType(int(m.alarm))
        if action == int(pb.AlarmRequestAlarmAction.GET):
            listed = await self.store.alarms()
        elif action == int(pb.AlarmRequestAlarmAction.ACTIVATE):
            await self.store.activate(alarm, m.member_id)
            listed = [(m.member_id, alarm)] if alarm != AlarmType.NONE else []
        else:
            listed = [(m.member_id, alarm)] if await self.store.disarm(alarm, m.member_id) else []
        return pb.AlarmResponse(
            alarms=[pb.AlarmMember(member_id=mid, alarm=pb.AlarmType(int(a))) for mid, a in listed]
        )

    async def defragment(self, m: pb.DefragmentRequest) -> pb.DefragmentResponse:
        # etcd 3.4 answers with an empty message (no header).
        await self.store.defragment()
        return pb.DefragmentResponse()

    async def move_leader(self, m: pb.MoveLeaderRequest) -> pb.MoveLeaderResponse:
        if m.target_id != self.store.core.member_id:
            raise BadLeaderTransfereeError()
        return pb.MoveLeaderResponse()  # 3.4: an empty message, as for Defragment

    async def _hash(self, revision: int) -> int:
        """etcd's HashKV of the store at ``revision`` (:mod:`etcdlite.core.hashkv`),
        yielding to the loop every few thousand revisions."""
        crc = crc32c(b"key")
        for i, piece in enumerate(hash_entries(self.store.core, revision)):
            crc = crc32c(piece, crc)
            if i % 4096 == 4095:
                await asyncio.sleep(0)
        return crc

    async def hash(self, m: pb.HashRequest) -> pb.HashResponse:
        rev = await self.store.sync()
        return pb.HashResponse(header=self.header(rev), hash=await self._hash(rev))

    async def hash_kv(self, m: pb.HashKvRequest) -> pb.HashKvResponse:
        core = self.store.core
        current = await self.store.sync()
        rev = m.revision if m.revision > 0 else current
        core.read_revision(rev)
        if 0 < m.revision <= core.compacted_revision:  # etcd: *at* the compaction point too
            raise CompactedError()
        return pb.HashKvResponse(
            header=self.header(current),
            hash=await self._hash(rev),
            compact_revision=core.compacted_revision,  # -1 until the first compaction
        )

    async def _snapshot(self, stream: Stream[pb.SnapshotRequest, pb.SnapshotResponse]) -> None:
        """Maintenance.Snapshot: a consistent snapshot of the store in etcdlite's format,
        ending in the sha256 of the rest as etcd's does (``etcdctl snapshot save`` checks
        it), streamed in 32 KiB chunks with the bytes still to come."""
        if self.interceptor is not None:
            await self.interceptor("/etcdserverpb.Maintenance/Snapshot")
        try:
            await recv_message(stream, unary=False, fast=self._fast_for(stream))
        except EtcdError as e:
            raise grpc_error(e) from None
        fd, path = tempfile.mkstemp(prefix="etcdlite-snapshot-")
        os.close(fd)
        try:
            info = await self.store.snapshot(path)
            header = self.header(info.revision)
            sent = 0
            with open(path, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, SNAPSHOT_CHUNK):
                    sent += len(chunk)
                    await stream.send_message(
                        pb.SnapshotResponse(
                            header=header, remaining_bytes=info.size - sent, blob=chunk
                        )
                    )
        finally:
            os.unlink(path)

    # --- cluster ----------------------------------------------------------------------

    def _member(self) -> pb.Member:
        return pb.Member(
            id=self.store.core.member_id,
            name=self.name,
            peer_ur_ls=self.peer_urls,
            client_ur_ls=self.advertise_client_urls,
        )

    def _member_header(self) -> pb.ResponseHeader:
        core = self.store.core
        return pb.ResponseHeader(
            cluster_id=core.cluster_id, member_id=core.member_id, raft_term=core.raft_term
        )

    async def member_list(self, m: pb.MemberListRequest) -> pb.MemberListResponse:
        return pb.MemberListResponse(header=self._member_header(), members=[self._member()])

    async def member_promote(self, m: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        if m.id == self.store.core.member_id:
            raise MemberNotLearnerError()
        raise MemberNotFoundError()

    # --- auth (always disabled) -------------------------------------------------------

    async def authenticate(self, m: pb.AuthenticateRequest) -> pb.AuthenticateResponse:
        raise AuthNotEnabledError()

    async def auth_disable(self, m: pb.AuthDisableRequest) -> pb.AuthDisableResponse:
        return pb.AuthDisableResponse(header=self.header())

    async def auth_enable(self, m: pb.AuthEnableRequest) -> pb.AuthEnableResponse:
        raise RootUserNotExistError()

    async def user_list(self, m: pb.AuthUserListRequest) -> pb.AuthUserListResponse:
        return pb.AuthUserListResponse(header=self.header())

    async def role_list(self, m: pb.AuthRoleListRequest) -> pb.AuthRoleListResponse:
        return pb.AuthRoleListResponse(header=self.header())

    async def health_check(self, m: health.HealthCheckRequest) -> health.HealthCheckResponse:
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


def _has_writes(req: TxnRequest) -> bool:
    """Whether a txn may write (only writes are held to max_request_bytes, as in etcd)."""
    for op in (*req.success, *req.failure):
        if isinstance(op, PutRequest | DeleteRangeRequest):
            return True
        if isinstance(op, TxnRequest) and _has_writes(op):
            return True
    return False
