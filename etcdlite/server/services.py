"""etcd's gRPC services over a :class:`~etcdlite.Store`: KV, Watch, Lease, Maintenance,
Cluster, Auth and health.

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
from .._grpc.caller import CALLER
from .._grpc.peer import peer_common_name
from ..auth import StoreAuth
from ..core.hashkv import crc32c, hash_entries
from ..core.quota import AlarmType
from ..errors import (
    BadLeaderTransfereeError,
    CompactedError,
    EtcdError,
    InvalidAuthTokenError,
    MaintenanceInvalidAuthTokenError,
    MemberNotFoundError,
    MemberNotLearnerError,
    RequestTooLargeError,
    ServerStoppedError,
)
from ..ops import DeleteRangeRequest, PutRequest, TxnRequest
from ..store import Store
from ..userview import UserView
from ..watch import WatchSpec
from ..wire import convert, fastpb
from ..wire.codec import EtcdCodec
from ..wire.pb import authpb, v3electionpb, v3lockpb
from ..wire.pb import etcdserverpb as pb
from ..wire.pb.grpc.health import v1 as health
from .methods import UnaryMethod, grpc_error, set_caller, unimplemented_handlers
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

    @property
    def taken_requests(self) -> int:
        """Lean requests taken whole past h2 so far (tests check it is taken)."""
        return sum(s.taken_requests for s in list(self.grpc_servers))

    def request_tasks(self) -> list[Any]:
        """The tasks of requests whose handler has not finished yet, on every connection.
        Lean requests waiting without a task (a durable write, a paused store) are not among
        them: :meth:`waiting_requests` counts those."""
        return [t for s in list(self.grpc_servers) for t in s.request_tasks()]

    def waiting_requests(self) -> int:
        """Lean requests waiting without a task of their own, on every connection."""
        return sum(s.waiting_requests() for s in list(self.grpc_servers))

    async def wait_connections(self, at_most: int) -> None:
        """Return once no listener has more than ``at_most`` client connections open."""
        for s in list(self.grpc_servers):
            await s.wait_connections(at_most)

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
            *self._auth_methods(),
            UnaryMethod(
                "/grpc.health.v1.Health/Check",
                self.health_check,
                health.HealthCheckRequest,
                health.HealthCheckResponse,
            ),
            *self._recipes().unary_methods(),
        ]
        return {m.path: m for m in methods}

    def _auth_methods(self) -> list[UnaryMethod]:
        """etcd's Auth service: method name → (handler, request, response)."""
        table: list[tuple[str, Callable[[Any], Awaitable[Any]], type, type]] = [
            ("Authenticate", self.authenticate, pb.AuthenticateRequest, pb.AuthenticateResponse),
            ("AuthEnable", self.auth_enable, pb.AuthEnableRequest, pb.AuthEnableResponse),
            ("AuthDisable", self.auth_disable, pb.AuthDisableRequest, pb.AuthDisableResponse),
            ("UserAdd", self.user_add, pb.AuthUserAddRequest, pb.AuthUserAddResponse),
            ("UserGet", self.user_get, pb.AuthUserGetRequest, pb.AuthUserGetResponse),
            ("UserList", self.user_list, pb.AuthUserListRequest, pb.AuthUserListResponse),
            ("UserDelete", self.user_delete, pb.AuthUserDeleteRequest, pb.AuthUserDeleteResponse),
            (
                "UserChangePassword",
                self.user_change_password,
                pb.AuthUserChangePasswordRequest,
                pb.AuthUserChangePasswordResponse,
            ),
            (
                "UserGrantRole",
                self.user_grant_role,
                pb.AuthUserGrantRoleRequest,
                pb.AuthUserGrantRoleResponse,
            ),
            (
                "UserRevokeRole",
                self.user_revoke_role,
                pb.AuthUserRevokeRoleRequest,
                pb.AuthUserRevokeRoleResponse,
            ),
            ("RoleAdd", self.role_add, pb.AuthRoleAddRequest, pb.AuthRoleAddResponse),
            ("RoleGet", self.role_get, pb.AuthRoleGetRequest, pb.AuthRoleGetResponse),
            ("RoleList", self.role_list, pb.AuthRoleListRequest, pb.AuthRoleListResponse),
            ("RoleDelete", self.role_delete, pb.AuthRoleDeleteRequest, pb.AuthRoleDeleteResponse),
            (
                "RoleGrantPermission",
                self.role_grant_permission,
                pb.AuthRoleGrantPermissionRequest,
                pb.AuthRoleGrantPermissionResponse,
            ),
            (
                "RoleRevokePermission",
                self.role_revoke_permission,
                pb.AuthRoleRevokePermissionRequest,
                pb.AuthRoleRevokePermissionResponse,
            ),
        ]
        return [
            UnaryMethod(f"/etcdserverpb.Auth/{name}", fn, req, resp)
            for name, fn, req, resp in table
        ]

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
        return RecipeServices(self.store, self._interceptor, lambda: self.fast_path, self.kv)

    def _counted(
        self, path: str, fn: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """``fn``, a stream handler, counted in :attr:`stream_started`/`stream_handled`."""
        started, handled = self.stream_started, self.stream_handled
        started.setdefault(path, 0)
        counts = handled.setdefault(path, [0] * 17)

        async def handler(stream: Any) -> None:
            set_caller(stream)
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

    def kv(self) -> Store | UserView:
        """The store as the current request's caller sees it: the store itself while auth
        is disabled; with auth enabled, the view of the token's user, else (with
        ``client_cert_auth``) of the TLS client certificate's common name, else anonymous.
        A token that is not valid is ``invalid auth token``, not rescued by the
        certificate."""
        store = self.store
        a = store.auth_store
        if not a.enabled:
            return store
        token, stream = CALLER.get()
        cn = peer_common_name(stream) if token is None and self.client_cert_auth else None
        return store.as_user(a.identify(token, cn, store.clock.time()))

    def view(self) -> UserView:
        """:meth:`kv` as a view even while auth is disabled (its checks then pass)."""
        kv = self.kv()
        return kv if isinstance(kv, UserView) else self.store.as_user(None)

    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        return convert.header_to_pb(self.store.core.header(revision))

    # --- KV ---------------------------------------------------------------------------

    async def range(self, m: pb.RangeRequest) -> bytes:
        resp = await self.kv().range_request(convert.range_request_from_pb(m))
        return fastpb.encode_range_response(resp)

    async def put(self, m: pb.PutRequest) -> bytes:
        self._check_size(m)
        resp = await self.kv().put(
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
        resp = await self.kv().delete_range_request(convert.delete_range_request_from_pb(m))
        return fastpb.encode_delete_range_response(resp)

    async def txn(self, m: pb.TxnRequest) -> bytes:
        req = convert.txn_request_from_pb(m)
        if _has_writes(req):
            self._check_size(m)
        resp = await self.kv().txn_request(req)
        return fastpb.encode_txn_response(resp)

    async def compact(self, m: pb.CompactionRequest) -> pb.CompactionResponse:
        resp = await self.kv().compact(m.revision, physical=m.physical)
        return pb.CompactionResponse(header=convert.header_to_pb(resp.header))

    # --- leases -----------------------------------------------------------------------

    async def lease_grant(self, m: pb.LeaseGrantRequest) -> bytes:
        self._check_size(m)
        lease = await self.kv().grant(m.ttl, m.id)
        return fastpb.encode_lease_response(self.store.core.header(), lease.id, lease.ttl)

    async def lease_revoke(self, m: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        rev = await self.kv().revoke(m.id)
        return pb.LeaseRevokeResponse(header=self.header(rev))

    async def lease_time_to_live(self, m: pb.LeaseTimeToLiveRequest) -> pb.LeaseTimeToLiveResponse:
        t = await self.kv().time_to_live(m.id, keys=m.keys)
        return pb.LeaseTimeToLiveResponse(
            header=self.header(), id=m.id, ttl=t.ttl, granted_ttl=t.granted_ttl, keys=t.keys
        )

    async def lease_leases(self, m: pb.LeaseLeasesRequest) -> pb.LeaseLeasesResponse:
        ids = await self.kv().leases()
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
                ttl = await self.kv().refresh(m.id)
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
            permit=self._permit_watch,
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
        self._authenticated()
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
            self._authenticated()
        else:
            self._admin()
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
        self._maintenance()
        await self.store.defragment()
        return pb.DefragmentResponse()

    async def move_leader(self, m: pb.MoveLeaderRequest) -> pb.MoveLeaderResponse:
        self._admin()
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
        self._maintenance()
        rev = await self.store.sync()
        return pb.HashResponse(header=self.header(rev), hash=await self._hash(rev))

    async def hash_kv(self, m: pb.HashKvRequest) -> pb.HashKvResponse:
        self._maintenance()
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
            self._maintenance()
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
        self._authenticated()
        return pb.MemberListResponse(header=self._member_header(), members=[self._member()])

    async def member_promote(self, m: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
        self._admin()
        if m.id == self.store.core.member_id:
            raise MemberNotLearnerError()
        raise MemberNotFoundError()

    # --- auth -------------------------------------------------------------------------

    def _authenticated(self) -> None:
        """etcd's ``requireAuthInfo``: with auth enabled, any authenticated caller."""
        kv = self.kv()
        if isinstance(kv, UserView):
            self.store.auth_store.check_authenticated(kv.name)

    def _admin(self) -> None:
        """The root role, with auth enabled."""
        kv = self.kv()
        if isinstance(kv, UserView):
            self.store.auth_store.check_admin(kv.name)

    def _permit_watch(self, spec: WatchSpec) -> None:
        """READ on the watched range, checked as given (an open ``range_end`` ``b"\\0"`` is
        the open range: etcd 3.4 checked it as one key, a hole later releases closed)."""
        kv = self.kv()
        if isinstance(kv, UserView):
            self.store.auth_store.check_read(kv.name, spec.key, spec.range_end)

    def _maintenance(self) -> None:
        """Defragment, Hash, HashKV, Snapshot: root, with etcd 3.4's unmapped errors."""
        try:
            kv = self.kv()
        except InvalidAuthTokenError:
            raise MaintenanceInvalidAuthTokenError() from None
        if isinstance(kv, UserView):
            kv._check_maintenance(kv.name)

    async def authenticate(self, m: pb.AuthenticateRequest) -> pb.AuthenticateResponse:
        # Needs no token, but a token it carries must be valid: etcd checks the password
        # first, then its Authenticate raft entry reads the request's token as every raft
        # request does, so a wrong password is "authentication failed" and a right one with
        # a stale token "invalid auth token" (clientv3 drops its token before logging in
        # again). With auth disabled tokens are ignored, as everywhere.
        try:
            self.kv()
        except InvalidAuthTokenError:
            await StoreAuth(self.store).verify_password(m.name, m.password)
            raise
        token = await self.store.auth.authenticate(m.name, m.password)
        return pb.AuthenticateResponse(header=self.header(), token=token)

    async def auth_enable(self, m: pb.AuthEnableRequest) -> pb.AuthEnableResponse:
        await self.kv().auth.enable()
        return pb.AuthEnableResponse(header=self.header())

    async def auth_disable(self, m: pb.AuthDisableRequest) -> pb.AuthDisableResponse:
        await self.kv().auth.disable()
        return pb.AuthDisableResponse(header=self.header())

    async def user_add(self, m: pb.AuthUserAddRequest) -> pb.AuthUserAddResponse:
        no_password = m.options is not None and m.options.no_password
        await self.kv().auth.user_add(m.name, m.password, no_password=no_password)
        return pb.AuthUserAddResponse(header=self.header())

    async def user_get(self, m: pb.AuthUserGetRequest) -> pb.AuthUserGetResponse:
        roles = await self.kv().auth.user_get(m.name)
        return pb.AuthUserGetResponse(header=self.header(), roles=roles)

    async def user_list(self, m: pb.AuthUserListRequest) -> pb.AuthUserListResponse:
        users = await self.kv().auth.user_list()
        return pb.AuthUserListResponse(header=self.header(), users=users)

    async def user_delete(self, m: pb.AuthUserDeleteRequest) -> pb.AuthUserDeleteResponse:
        await self.kv().auth.user_delete(m.name)
        return pb.AuthUserDeleteResponse(header=self.header())

    async def user_change_password(
        self, m: pb.AuthUserChangePasswordRequest
    ) -> pb.AuthUserChangePasswordResponse:
        await self.kv().auth.user_change_password(m.name, m.password)
        return pb.AuthUserChangePasswordResponse(header=self.header())

    async def user_grant_role(self, m: pb.AuthUserGrantRoleRequest) -> pb.AuthUserGrantRoleResponse:
        await self.kv().auth.user_grant_role(m.user, m.role)
        return pb.AuthUserGrantRoleResponse(header=self.header())

    async def user_revoke_role(
        self, m: pb.AuthUserRevokeRoleRequest
    ) -> pb.AuthUserRevokeRoleResponse:
        await self.kv().auth.user_revoke_role(m.name, m.role)
        return pb.AuthUserRevokeRoleResponse(header=self.header())

    async def role_add(self, m: pb.AuthRoleAddRequest) -> pb.AuthRoleAddResponse:
        await self.kv().auth.role_add(m.name)
        return pb.AuthRoleAddResponse(header=self.header())

    async def role_get(self, m: pb.AuthRoleGetRequest) -> pb.AuthRoleGetResponse:
        perms = await self.kv().auth.role_get(m.role)
        return pb.AuthRoleGetResponse(
            header=self.header(),
            perm=[
                authpb.Permission(
                    perm_type=authpb.PermissionType(int(p.perm_type)),
                    key=p.key,
                    range_end=p.range_end,
                )
                for p in perms
            ],
        )

    async def role_list(self, m: pb.AuthRoleListRequest) -> pb.AuthRoleListResponse:
        roles = await self.kv().auth.role_list()
        return pb.AuthRoleListResponse(header=self.header(), roles=roles)

    async def role_delete(self, m: pb.AuthRoleDeleteRequest) -> pb.AuthRoleDeleteResponse:
        await self.kv().auth.role_delete(m.role)
        return pb.AuthRoleDeleteResponse(header=self.header())

    async def role_grant_permission(
        self, m: pb.AuthRoleGrantPermissionRequest
    ) -> pb.AuthRoleGrantPermissionResponse:
        perm = m.perm if m.perm is not None else authpb.Permission()
        await self.kv().auth.role_grant_permission(
            m.name, int(perm.perm_type), perm.key, perm.range_end
        )
        return pb.AuthRoleGrantPermissionResponse(header=self.header())

    async def role_revoke_permission(
        self, m: pb.AuthRoleRevokePermissionRequest
    ) -> pb.AuthRoleRevokePermissionResponse:
        await self.kv().auth.role_revoke_permission(m.role, m.key, m.range_end)
        return pb.AuthRoleRevokePermissionResponse(header=self.header())

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
