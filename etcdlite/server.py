"""etcd's gRPC API over a :class:`~etcdlite.Store`, for etcdctl, python-etcd3, aetcd, clientv3.

The services only translate: protobuf in, a Store/core call, protobuf out; semantics live
in the core. Errors leave with etcd's exact status codes and texts. Every etcd RPC is
registered, so an RPC etcdlite does not implement answers UNIMPLEMENTED with grpc-go's text
instead of grpclib's bare "method not found" (which grpc-go reports as Unknown).

Use :func:`serve` (an async context manager) or the ``etcdlite serve`` command.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit

from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from .errors import EtcdError, RequestTooLargeError
from .ops import DeleteRangeRequest, PutRequest, TxnRequest
from .server_h2 import UnaryHandler, compression_error, missing_message_error, supported
from .server_recipes import RecipeServices
from .server_watch import ServerWatchStream
from .store import Store
from .wire import convert, fastpb
from .wire.codec import EtcdCodec
from .wire.pb import etcdserverpb as pb
from .wire.pb import v3electionpb, v3lockpb
from .wire.pb.grpc.health import v1 as health
from .wire.transport import CorkedProtocol

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "EMULATED_VERSION",
    "EtcdServer",
    "serve",
]

log = logging.getLogger("etcdlite.server")

#: etcd's ``--max-request-bytes`` default (1.5 MiB).
DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
#: gRPC receive limit over max-request-bytes, as etcd configures it.
GRPC_OVERHEAD = 512 * 1024
#: The etcd line whose behaviour etcdlite emulates (reported by Status).
EMULATED_VERSION = "3.4.23"

Interceptor = Callable[[str], Awaitable[None]]


def _grpc_error(e: EtcdError) -> GRPCError:
    return GRPCError(Status(int(e.code)), e.message)


class EtcdServer:
    """The services for one store; ``handlers()`` is what a grpclib ``Server`` takes."""

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
        #: grpclib's per-connection handlers (``fast_requests`` counts the lean path).
        self.handlers: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The port actually bound by :func:`serve` (useful with port 0).
        self.port = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` of the first advertised client URL."""
        url = urlsplit(self.advertise_client_urls[0])
        return f"{url.hostname}:{url.port}"

    # --- plumbing ---------------------------------------------------------------------

    def drop_watch_streams(self, message: str = "etcdserver: server stopped") -> int:
        """Fault injection: end every open Watch stream with UNAVAILABLE ``message``, as a
        lost member or connection would; returns how many were dropped."""
        streams = list(self.watch_streams)
        for ws in streams:
            ws.close(GRPCError(Status.UNAVAILABLE, message))
        return len(streams)

    def codec(self) -> EtcdCodec:
        return EtcdCodec(self.max_request_bytes + GRPC_OVERHEAD)

    def unary_methods(self) -> dict[str, tuple[Callable[[Any], Awaitable[Any]], type, type]]:
        """Path → (method, request type, reply type) of every unary RPC served."""
        unary: list[tuple[str, Callable[[Any], Awaitable[Any]], type, type]] = [
            ("/etcdserverpb.KV/Range", self.range, pb.RangeRequest, pb.RangeResponse),
            ("/etcdserverpb.KV/Put", self.put, pb.PutRequest, pb.PutResponse),
            (
                "/etcdserverpb.KV/DeleteRange",
                self.delete_range,
                pb.DeleteRangeRequest,
                pb.DeleteRangeResponse,
            ),
            ("/etcdserverpb.KV/Txn", self.txn, pb.TxnRequest, pb.TxnResponse),
            ("/etcdserverpb.KV/Compact", self.compact, pb.CompactionRequest, pb.CompactionResponse),
            (
                "/etcdserverpb.Lease/LeaseGrant",
                self.lease_grant,
                pb.LeaseGrantRequest,
                pb.LeaseGrantResponse,
            ),
            (
                "/etcdserverpb.Lease/LeaseRevoke",
                self.lease_revoke,
                pb.LeaseRevokeRequest,
                pb.LeaseRevokeResponse,
            ),
            (
                "/etcdserverpb.Lease/LeaseTimeToLive",
                self.lease_time_to_live,
                pb.LeaseTimeToLiveRequest,
                pb.LeaseTimeToLiveResponse,
            ),
            (
                "/etcdserverpb.Lease/LeaseLeases",
                self.lease_leases,
                pb.LeaseLeasesRequest,
                pb.LeaseLeasesResponse,
            ),
            ("/etcdserverpb.Maintenance/Status", self.status, pb.StatusRequest, pb.StatusResponse),
            ("/etcdserverpb.Maintenance/Alarm", self.alarm, pb.AlarmRequest, pb.AlarmResponse),
            (
                "/etcdserverpb.Maintenance/Defragment",
                self.defragment,
                pb.DefragmentRequest,
                pb.DefragmentResponse,
            ),
            ("/etcdserverpb.Maintenance/Hash", self.hash, pb.HashRequest, pb.HashResponse),
            ("/etcdserverpb.Maintenance/HashKV", self.hash_kv, pb.HashKvRequest, pb.HashKvResponse),
            (
                "/etcdserverpb.Maintenance/MoveLeader",
                self.move_leader,
                pb.MoveLeaderRequest,
                pb.MoveLeaderResponse,
            ),
            (
                "/etcdserverpb.Cluster/MemberList",
                self.member_list,
                pb.MemberListRequest,
                pb.MemberListResponse,
            ),
            (
                "/etcdserverpb.Cluster/MemberPromote",
                self.member_promote,
                pb.MemberPromoteRequest,
                pb.MemberPromoteResponse,
            ),
            (
                "/etcdserverpb.Auth/Authenticate",
                self.authenticate,
                pb.AuthenticateRequest,
                pb.AuthenticateResponse,
            ),
            (
                "/etcdserverpb.Auth/AuthDisable",
                self.auth_disable,
                pb.AuthDisableRequest,
                pb.AuthDisableResponse,
            ),
            (
                "/etcdserverpb.Auth/AuthEnable",
                self.auth_enable,
                pb.AuthEnableRequest,
                pb.AuthEnableResponse,
            ),
            (
                "/etcdserverpb.Auth/UserList",
                self.user_list,
                pb.AuthUserListRequest,
                pb.AuthUserListResponse,
            ),
            (
                "/etcdserverpb.Auth/RoleList",
                self.role_list,
                pb.AuthRoleListRequest,
                pb.AuthRoleListResponse,
            ),
            (
                "/grpc.health.v1.Health/Check",
                self.health_check,
                health.HealthCheckRequest,
                health.HealthCheckResponse,
            ),
        ]
        return {path: (fn, req, resp) for path, fn, req, resp in unary}

    def mapping(self) -> dict[str, Handler]:
        m: dict[str, Handler] = {}
        for path, (fn, req, resp) in self.unary_methods().items():
            m[path] = Handler(self._unary(path, fn), Cardinality.UNARY_UNARY, req, resp)
        m["/etcdserverpb.Watch/Watch"] = Handler(
            self._watch, Cardinality.STREAM_STREAM, pb.WatchRequest, pb.WatchResponse
        )
        m["/etcdserverpb.Lease/LeaseKeepAlive"] = Handler(
            self._keepalive,
            Cardinality.STREAM_STREAM,
            pb.LeaseKeepAliveRequest,
            pb.LeaseKeepAliveResponse,
        )
        # v3lock / v3election, on etcdlite's ports of the Go recipes.
        m.update(RecipeServices(self).mapping())
        # Everything else etcd serves: registered, answering UNIMPLEMENTED like grpc-go.
        for base in (
            pb.KvBase,
            pb.WatchBase,
            pb.LeaseBase,
            pb.ClusterBase,
            pb.MaintenanceBase,
            pb.AuthBase,
            v3lockpb.LockBase,
            v3electionpb.ElectionBase,
            health.HealthBase,
        ):
            for path, handler in base.__mapping__(_Unimplemented()).items():  # type: ignore[arg-type]
                if path not in m and path not in NEWER_THAN_EMULATED:
                    method = path.rsplit("/", 1)[1]
                    m[path] = Handler(
                        _unimplemented(method),
                        handler.cardinality,
                        handler.request_type,
                        handler.reply_type,
                    )
        return m

    def __mapping__(self) -> dict[str, Handler]:
        return self.mapping()

    def _unary(
        self, path: str, fn: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        async def handler(stream: Stream[Any, Any]) -> None:
            if self.interceptor is not None:
                await self.interceptor(path)
            try:
                request = await stream.recv_message()
            except NotImplementedError:
                raise compression_error() from None
            if request is None:
                raise missing_message_error()
            try:
                reply = await fn(request)
            except EtcdError as e:
                raise _grpc_error(e) from None
            await stream.send_message(reply)

        return handler

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
            async for m in stream:
                header = store.core.header()
                ttl = await store.refresh(m.id)
                # pre-encoded bytes pass through the codec untouched
                await stream.send_message(fastpb.encode_lease_response(header, m.id, ttl))
        except NotImplementedError:
            raise compression_error() from None

    # --- watch ------------------------------------------------------------------------

    async def _watch(self, stream: Stream[pb.WatchRequest, Any]) -> None:
        if self.interceptor is not None:
            await self.interceptor("/etcdserverpb.Watch/Watch")
        ws = ServerWatchStream(self, stream)
        self.watch_streams.add(ws)
        try:
            await ws.run()
        except NotImplementedError:
            raise compression_error() from None
        finally:
            self.watch_streams.discard(ws)

    # --- maintenance ------------------------------------------------------------------

    def _db_size(self) -> int:
        core = self.store.core
        return 4096 + sum(len(kv.key) + len(kv.value) + 48 for kv in core._log)

    async def status(self, m: pb.StatusRequest) -> pb.StatusResponse:
        core = self.store.core
        size = self._db_size()
        return pb.StatusResponse(
            header=self.header(),
            version=EMULATED_VERSION,
            db_size=size,
            leader=core.member_id,
            raft_index=core.revision,
            raft_term=core.raft_term,
            raft_applied_index=core.revision,
            db_size_in_use=size,
        )

    async def alarm(self, m: pb.AlarmRequest) -> pb.AlarmResponse:
        # etcd 3.4 answers Alarm without a header; no alarm is ever raised here.
        return pb.AlarmResponse()

    async def defragment(self, m: pb.DefragmentRequest) -> pb.DefragmentResponse:
        # etcd 3.4 answers with an empty message (no header); there is nothing to defragment.
        return pb.DefragmentResponse()

    async def move_leader(self, m: pb.MoveLeaderRequest) -> pb.MoveLeaderResponse:
        if m.target_id != self.store.core.member_id:
            raise GRPCError(Status.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
        return pb.MoveLeaderResponse()  # 3.4: an empty message, as for Defragment

    def _hash(self, revision: int) -> int:
        """CRC-32 over every kept change up to ``revision``: deterministic, like etcd's
        HashKV (its value is etcd's own business and differs)."""
        crc = zlib.crc32(b"etcdlite")  # never 0, like etcd's (its buckets are hashed too)
        for kv in self.store.core._log:
            if kv.mod_revision > revision:
                break
            crc = zlib.crc32(kv.key, crc)
            crc = zlib.crc32(kv.mod_revision.to_bytes(8, "big", signed=True), crc)
            crc = zlib.crc32(kv.value, crc)
        return crc

    async def hash(self, m: pb.HashRequest) -> pb.HashResponse:
        core = self.store.core
        return pb.HashResponse(header=self.header(), hash=self._hash(core.revision))

    async def hash_kv(self, m: pb.HashKvRequest) -> pb.HashKvResponse:
        core = self.store.core
        rev = m.revision if m.revision > 0 else core.revision
        core._check_read_rev(rev)
        return pb.HashKvResponse(
            header=self.header(),
            hash=self._hash(rev),
            compact_revision=core.compacted_revision,  # -1 until the first compaction
        )

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
            raise GRPCError(
                Status.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"
            )
        raise GRPCError(Status.NOT_FOUND, "etcdserver: member not found")

    # --- auth (always disabled) -------------------------------------------------------

    async def authenticate(self, m: pb.AuthenticateRequest) -> pb.AuthenticateResponse:
        raise GRPCError(Status.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")

    async def auth_disable(self, m: pb.AuthDisableRequest) -> pb.AuthDisableResponse:
        return pb.AuthDisableResponse(header=self.header())

    async def auth_enable(self, m: pb.AuthEnableRequest) -> pb.AuthEnableResponse:
        raise GRPCError(Status.FAILED_PRECONDITION, "etcdserver: root user does not exist")

    async def user_list(self, m: pb.AuthUserListRequest) -> pb.AuthUserListResponse:
        return pb.AuthUserListResponse(header=self.header())

    async def role_list(self, m: pb.AuthRoleListRequest) -> pb.AuthRoleListResponse:
        return pb.AuthRoleListResponse(header=self.header())

    async def health_check(self, m: health.HealthCheckRequest) -> health.HealthCheckResponse:
        return health.HealthCheckResponse(status=health.HealthCheckResponseServingStatus.SERVING)


class _Unimplemented:
    """Stands in for ``self`` when reading the generated bases' method tables."""

    def __getattr__(self, name: str) -> Any:
        return None


#: RPCs added after etcd 3.4 (the emulated line): unknown methods, as in 3.4.
NEWER_THAN_EMULATED = frozenset(
    {"/etcdserverpb.Maintenance/Downgrade", "/etcdserverpb.Auth/AuthStatus"}
)


class _MethodTable(dict[str, Handler]):
    """grpclib's method table, answering an unknown method or service like grpc-go
    (grpclib's own answer, "Method not found" without a content-type, reads as Unknown in
    grpc-go clients)."""

    def get(self, path: str, default: Any = None) -> Handler | None:  # type: ignore[override]
        handler = super().get(path)
        if handler is not None:
            return handler
        service, _, method = path.lstrip("/").rpartition("/")
        known = any(p.startswith(f"/{service}/") for p in self)
        text = (
            f"unknown method {method} for service {service}"
            if known
            else f"unknown service {service or method}"
        )

        async def unknown(stream: Stream[Any, Any]) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, text)

        return Handler(unknown, Cardinality.UNARY_UNARY, pb.RangeRequest, pb.RangeResponse)


def _unimplemented(method: str) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
    async def handler(stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"method {method} not implemented")

    return handler


def _has_writes(req: TxnRequest) -> bool:
    """Whether a txn may write (only writes are held to max_request_bytes, as in etcd)."""
    for op in (*req.success, *req.failure):
        if isinstance(op, PutRequest | DeleteRangeRequest):
            return True
        if isinstance(op, TxnRequest) and _has_writes(op):
            return True
    return False


def parse_listen_url(url: str) -> tuple[str, int]:
    """``http://host:port`` → ``(host, port)``; etcd's flag format."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "grpc"):
        raise ValueError(f"unsupported URL scheme in {url!r} (TLS is not supported)")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"URL {url!r} needs a host and a port")
    return parts.hostname, parts.port


@asynccontextmanager
async def serve(
    store: Store | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 2379,
    name: str = "default",
    advertise_client_urls: list[str] | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> AsyncIterator[EtcdServer]:
    """Serve ``store`` (a new one if ``None``) over etcd's gRPC API on ``host:port``
    (port 0 picks a free one; the bound address is in ``server.advertise_client_urls``).

    ::

        async with etcdlite.serve(store, port=0) as server:
            print(server.advertise_client_urls)
    """
    own_store = store is None
    if store is None:
        store = Store()
    etcd = EtcdServer(
        store,
        name=name,
        advertise_client_urls=advertise_client_urls,
        max_request_bytes=max_request_bytes,
    )
    server = Server([etcd], codec=etcd.codec())
    server._mapping = _MethodTable(server._mapping)
    # Python 3.11's asyncio.Server.close() leaves accepted connections open, so track them
    # to close them on shutdown (a stopped server must stop answering).
    protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()
    make_protocol = server._protocol_factory
    fast = {path: (fn, req) for path, (fn, req, _resp) in etcd.unary_methods().items()}

    def protocol_factory() -> H2Protocol:
        if supported():
            server.__gc_step__()
            handler = UnaryHandler(
                server._mapping,
                server._codec,
                server._status_details_codec,
                server.__dispatch__,
                methods=fast,
                interceptor=lambda: etcd.interceptor,
            )
            server._handlers.add(handler)
            proto: H2Protocol = CorkedProtocol(handler, server._config, server._h2_config)
        else:  # pragma: no cover - a grpclib without the internals: its own path
            proto = make_protocol()
        etcd.handlers.add(proto.handler)
        protocols.add(proto)
        return proto

    server._protocol_factory = protocol_factory  # type: ignore[method-assign]
    await server.start(host, port)
    try:
        listener = cast(asyncio.Server | None, server._server)
        sockets = listener.sockets if listener is not None else ()
        bound = sockets[0].getsockname()[1] if sockets else port
        etcd.port = bound
        if not advertise_client_urls:
            etcd.advertise_client_urls = [f"http://{host}:{bound}"]
        yield etcd
    finally:
        for ws in list(etcd.watch_streams):
            ws.close()
        await asyncio.sleep(0)  # let the watch handlers end their streams with OK
        server.close()
        for proto in list(protocols):
            if hasattr(proto, "processor"):
                proto.processor.close("Server stopped")
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except (TimeoutError, StreamTerminatedError):  # pragma: no cover
            log.warning("server did not close in time")
        if own_store:
            await store.close()
