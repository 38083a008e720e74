"""``Client``: the embedded Store's API over etcd's gRPC protocol, for any etcd endpoint.

The same calls, the same result types and the same exceptions as :class:`~etcdlite.Store`,
against etcdlite's own server or a real etcd cluster: gRPC statuses are mapped back to
etcdlite's exception classes by their exact text, as etcd's Go client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl as _ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.events import SendRequest, listen
from grpclib.exceptions import GRPCError, StreamTerminatedError

from .._grpc.call import unary_call
from .._grpc.channel import (
    connect_channel,
    lean_channel,
    open_channel,
    undo_lost_connection_cancel,
)
from ..api import KVBase
from ..clock import Clock, LoopClock
from ..core.quota import AlarmType
from ..errors import (
    AuthNotEnabledError,
    EtcdError,
    StatusCode,
    UnavailableError,
    error_from_status,
)
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
from ..wire import clientpb, convert, fastpb
from ..wire.codec import ClientCodec
from ..wire.pb import etcdserverpb as pb
from .auth import ClientAuth
from .keepalive import KeepAliveStream
from .policy import (
    AuthOldRevisionError,
    DeadlineExceededError,
    Endpoint,
    EndpointPolicy,
    Failure,
    InvalidAuthTokenError,
    UserEmptyError,
    parse_endpoint_url,
    parse_endpoints,
)
from .watch import Watches

__all__ = ["Client", "DeadlineExceededError", "connect", "parse_endpoint"]

T = TypeVar("T")

_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
_STREAMS = frozenset({"/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"})

_RANGE = "/etcdserverpb.KV/Range"
_PUT = "/etcdserverpb.KV/Put"
_DELETE_RANGE = "/etcdserverpb.KV/DeleteRange"
_TXN = "/etcdserverpb.KV/Txn"
_LEASE_GRANT = "/etcdserverpb.Lease/LeaseGrant"

DEFAULT_TIMEOUT = 30.0


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` or ``"http(s)://host:port"`` → ``(host, port)`` (port 2379 if absent)."""
    ep = parse_endpoint_url(endpoint)
    return ep.host, ep.port


def _deadline_hit(deadline: asyncio.Timeout, error: BaseException) -> bool:
    """Whether ``error`` is ``deadline`` running out (and not the caller cancelling us).

    grpclib can turn the deadline's cancellation into a ``CancelledError`` of its own when a
    connection is lost at the same moment, so ``asyncio.timeout`` does not always convert
    it; a cancellation while nobody is cancelling the task is then the deadline's.
    """
    if not deadline.expired():
        return False
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return True


def _first_failure_hint(tls: bool, connecting: bool) -> str:
    """Why a connection that never answered most likely failed, for the error text: a
    TLS/plaintext or client-certificate mismatch fails at once and will not go away by
    retrying (the usual cause of an endpoint that never answers)."""
    if connecting:
        return (
            " (TLS handshake failed: the endpoint may not serve TLS; use http:// without ssl=)"
            if tls
            else ""
        )
    if tls:
        return (
            " (the server closed the connection after the TLS handshake: it may require a "
            "client certificate that the ssl= context does not present, or refuse the one "
            "it does)"
        )
    return " (the server closed the connection: it may serve TLS only; use https:// or ssl=)"


class _Conn:
    """One endpoint's channel and stubs.

    The stubs carry no grpclib deadline: the Client's own deadline bounds a call and its
    retries (two deadlines cancelling one task would hide which one ran out).
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        #: Whether a call on this connection ever succeeded (a failure before the first
        #: one is most likely a TLS mismatch: see :func:`_first_failure_hint`).
        self.answered = False
        #: Whether unary calls take the lean path (:mod:`etcdlite._grpc.call`).
        self.lean = lean_channel(channel)
        self.kv = pb.KvStub(channel)
        self.lease = pb.LeaseStub(channel)
        self.auth = pb.AuthStub(channel)
        self.cluster = pb.ClusterStub(channel)
        self.maintenance = pb.MaintenanceStub(channel)


class Client(KVBase):
    """An etcd client with the :class:`~etcdlite.Store` API.

    ``endpoints`` is ``"host:port"``, a URL (``http://``, ``https://``), etcdctl's comma
    form (``"https://a:2379,https://b:2379"``) or a sequence of those. Unary calls go round
    robin over the endpoints whose connection has not just failed; what is retried on
    another endpoint is decided by :class:`~etcdlite.client.policy.EndpointPolicy`, as Go's
    clientv3 decides it. Watch and LeaseKeepAlive streams stay on one endpoint until they break.

    ``timeout`` bounds every call, retries included (seconds; ``None`` waits forever, like
    Go's client without a context deadline); a call that runs out of it raises
    :class:`DeadlineExceededError` naming the endpoints tried and the last error.
    ``ssl`` is an ``ssl.SSLContext`` for TLS; ``https://`` endpoints without one use the
    system default context. ``keepalive_time``/``keepalive_timeout`` (seconds) send HTTP/2
    PINGs so that a member that stopped answering is noticed (``None``: no PINGs).
    Connections open on first use; ``close()`` (or ``async with``) releases them.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "127.0.0.1:2379",
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        ssl: _ssl.SSLContext | None = None,
        keepalive_time: float | None = None,
        keepalive_timeout: float | None = None,
        username: str | None = None,
        password: str | None = None,
        require_leader: bool = False,
        auto_sync_interval: float | None = None,
    ) -> None:
        parsed = parse_endpoints(endpoints)
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.username = username
        self.password = password
        self.require_leader = require_leader
        self.auto_sync_interval = auto_sync_interval
        self._sync_task: asyncio.Task[None] | None = None
        #: The auth token sent as ``token`` metadata; ``None`` until authenticated.
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        self.policy = EndpointPolicy(parsed)
        self.host, self.port = parsed[0].host, parsed[0].port
        self.timeout = timeout
        if ssl is None and any(ep.tls for ep in parsed):
            ssl = _ssl.create_default_context()
        if ssl is not None:
            # gRPC over TLS is HTTP/2 negotiated by ALPN; etcd refuses a TLS client without it.
            ssl.set_alpn_protocols(["h2"])
        self.ssl = ssl
        self.keepalive_time = keepalive_time
        self.keepalive_timeout = keepalive_timeout
        self._conns: dict[Endpoint, _Conn] = {}
        #: The endpoint the most recently opened stream went to.
        self._stream_endpoint = parsed[0]
        self._tasks: set[asyncio.Task[None]] = set()
        #: etcd's Auth service (:class:`~etcdlite.auth.AuthAPI`), as this client's user.
        self.auth = ClientAuth(self._call)
        self._watches = Watches(
            self._open,
            self._endpoint,
            self._spawn,
            timeout=timeout,
            can_retry=lambda: len(self.policy.endpoints) > 1,
        )
        self._keepalive: KeepAliveStream | None = None
        #: Granted TTLs of this Client's leases: a keepalive is bounded by a third of it.
        self._ttls: dict[int, int] = {}
        #: The clock keepalive tasks sleep on.
        self.clock: Clock = LoopClock()

    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self.policy.endpoints)

    @property
    def endpoint(self) -> str:
        """The first endpoint, as ``host:port``."""
        return str(self.policy.endpoints[0])

    @classmethod
    def from_env(cls, *, timeout: float | None = DEFAULT_TIMEOUT) -> Client:
        """A Client configured as etcdctl is by its environment: ``ETCDCTL_ENDPOINTS``
        (comma form; default ``127.0.0.1:2379``), ``ETCDCTL_CACERT``, ``ETCDCTL_CERT``,
        ``ETCDCTL_KEY``, ``ETCDCTL_USER`` (``user:password``)."""
        endpoints = os.environ.get("ETCDCTL_ENDPOINTS") or "127.0.0.1:2379"
        cacert = os.environ.get("ETCDCTL_CACERT")
        cert = os.environ.get("ETCDCTL_CERT")
        key = os.environ.get("ETCDCTL_KEY")
        user = os.environ.get("ETCDCTL_USER")
        username = password = None
        if user:
            username, _, password = user.partition(":")
        context = None
        if cacert or cert:
            context = _ssl.create_default_context(cafile=cacert)
            context.set_alpn_protocols(["h2"])
            if cert:
                context.load_cert_chain(cert, key)
        return cls(endpoints, timeout=timeout, ssl=context, username=username, password=password)

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
        return str(self._stream_endpoint)

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
        self._sync_task = None
        if self._keepalive is not None:
            await self._keepalive.close()
            self._keepalive = None
        await self._watches.close()
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.channel.close()

    def _conn(self, ep: Endpoint) -> _Conn:
        conn = self._conns.get(ep)
        if conn is None:
            channel = open_channel(
                ep.host,
                ep.port,
                codec=ClientCodec(),
                ssl=self.ssl,
                keepalive_time=self.keepalive_time,
                keepalive_timeout=self.keepalive_timeout,
            )
            listen(channel, SendRequest, self._on_send_request)
            conn = self._conns[ep] = _Conn(channel)
        return conn

    async def _on_send_request(self, event: SendRequest) -> None:
        """Every call's metadata: the auth token (fetched afresh before a stream opens, as
        clientv3 does, so a resumed watch never carries an expired one) and, on streams
        with ``require_leader``, etcd's ``hasleader``."""
        if event.method_name == _AUTHENTICATE:
            return
        if event.method_name in _STREAMS:
            if self.username is not None:
                await self._authenticate(self._token)
            if self.require_leader:
                event.metadata["hasleader"] = "true"
        if self._token is not None:
            event.metadata["token"] = self._token

    async def _authenticate(self, stale: str | None) -> None:
        """Fetch a token unless another task already replaced ``stale``."""
        if self.username is None or self.password is None:
            return
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return
            self._token = None
            msg = pb.AuthenticateRequest(name=self.username, password=self.password)
            try:
                resp = await self._call_once(_AUTHENTICATE, lambda c: c.auth.authenticate(msg))
            except AuthNotEnabledError:
                return  # clientv3: not an error, calls go without a token
            self._token = resp.token

    def _open(self) -> Channel:
        """The channel a new stream goes on: the next healthy endpoint in turn."""
        ep = self.policy.pick()
        self._stream_endpoint = ep
        return self._conn(ep).channel

    @property
    def kv_stub(self) -> pb.KvStub:
        return self._conn(self.policy.endpoints[0]).kv

    @property
    def lease_stub(self) -> pb.LeaseStub:
        return self._conn(self.policy.endpoints[0]).lease

    # --- cluster ------------------------------------------------------------------------

    async def members(self) -> list[pb.Member]:
        """etcd's MemberList: every member's ``id``, ``name``, ``peer_ur_ls``,
        ``client_ur_ls`` (betterproto2's names for peerURLs/clientURLs) and ``is_learner``."""
        resp = await self._call(
            "/etcdserverpb.Cluster/MemberList",
            lambda c: c.cluster.member_list(pb.MemberListRequest()),
        )
        return list(resp.members)

    async def status(self, endpoint: str) -> pb.StatusResponse:
        """etcd's Maintenance Status of the member at ``endpoint`` (asked of it alone):
        ``version``, ``db_size``, ``leader``, ``raft_index``, ``raft_term``,
        ``header.member_id``..."""
        ep = parse_endpoint_url(endpoint)
        if ep not in self._conns and not ep.tls and any(e.tls for e in self.policy.endpoints):
            ep = Endpoint(ep.host, ep.port, True)
        conn = self._conn(ep)

        async def ask() -> pb.StatusResponse:
            if self.username is not None and self._token is None:
                await self._authenticate(None)
            return await conn.maintenance.status(pb.StatusRequest())

        try:
            async with asyncio.timeout(self.timeout):
                return await ask()
        except GRPCError as e:
            raise error_from_status(e.status.value, e.message or "") from None
        except (OSError, StreamTerminatedError) as e:
            task = asyncio.current_task()
            if task is not None:
                undo_lost_connection_cancel(task, 0)
            raise UnavailableError(f"etcdlite: {ep}: {e}") from e
        except TimeoutError:
            raise DeadlineExceededError(f"etcdlite: {ep}: status deadline exceeded") from None

    async def sync(self) -> list[Endpoint]:
        """clientv3's ``Sync``: the endpoints become the client URLs of the members that
        have a name (have started) and are not learners."""
        urls = [
            url
            for m in await self.members()
            if m.name and not m.is_learner
            for url in m.client_ur_ls  # betterproto2's name for client_urls
        ]
        if urls:
            self.policy.set_endpoints(parse_endpoints(urls))
        return self.endpoints

    async def _auto_sync(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # A failed sync keeps the endpoints it has; the next one tries again.
            with contextlib.suppress(EtcdError, TimeoutError):
                await self.sync()

    def _start_auto_sync(self) -> None:
        if self.auto_sync_interval and self._sync_task is None:
            self._sync_task = self._spawn(self._auto_sync(self.auto_sync_interval))

    async def _call(self, method: str, fn: Callable[[_Conn], Awaitable[T]]) -> T:
        """:meth:`_call_once`, authenticated first when credentials are configured; an
        invalid or outdated token is refreshed and the call retried once, as clientv3 does."""
        self._start_auto_sync()
        if self.username is None:
            return await self._call_once(method, fn)
        if self._token is None:
            await self._authenticate(None)
        token = self._token
        try:
            return await self._call_once(method, fn)
        except (InvalidAuthTokenError, AuthOldRevisionError, UserEmptyError):
            await self._authenticate(token)
            return await self._call_once(method, fn)

    async def _call_once(self, method: str, fn: Callable[[_Conn], Awaitable[T]]) -> T:
        """``fn`` on the next endpoint in turn, retried elsewhere as the policy allows."""
        tried: list[str] = []
        last: BaseException | None = None
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                attempt = 0
                while True:
                    if attempt:
                        delay = self.policy.retry_delay(attempt)
                        if delay:
                            await asyncio.sleep(delay)
                    attempt += 1
                    ep = self.policy.pick()
                    tried.append(str(ep))
                    conn = self._conn(ep)
                    try:
                        await connect_channel(conn.channel)
                    except _ssl.SSLError as e:
                        # A certificate or protocol mismatch will not go away by retrying.
                        raise UnavailableError(f"etcdlite: {ep}: TLS: {e}") from e
                    except OSError as e:
                        self.policy.failed(ep)
                        hint = _first_failure_hint(self.ssl is not None, connecting=True)
                        failure = UnavailableError(f"etcdlite: {ep}: {e or type(e).__name__}{hint}")
                        if not self.policy.should_retry(method, Failure.NOT_SENT):
                            raise failure from e
                        last = failure  # the deadline's error names it
                        continue  # never sent: any RPC may go elsewhere
                    try:
                        result = await fn(conn)
                    except GRPCError as e:
                        error = error_from_status(e.status.value, e.message or "")
                        if error.code != StatusCode.UNAVAILABLE or not self.policy.should_retry(
                            method, Failure.UNAVAILABLE
                        ):
                            raise error from None
                        last = error
                        continue
                    except (OSError, StreamTerminatedError) as e:
                        undo_lost_connection_cancel(task, cancelling)
                        self.policy.failed(ep)
                        hint = ""
                        if not conn.answered:
                            hint = _first_failure_hint(self.ssl is not None, False)
                        failure = UnavailableError(f"etcdlite: {ep}: {e}{hint}")
                        if not self.policy.should_retry(method, Failure.UNAVAILABLE):
                            raise failure from e
                        last = failure
                        continue
                    self.policy.succeeded(ep)
                    conn.answered = True
                    return result
        except (TimeoutError, asyncio.CancelledError) as e:
            if not _deadline_hit(deadline, e):
                raise
            raise DeadlineExceededError(
                f"etcdlite: context deadline exceeded after {self.timeout}s"
                f" (tried {', '.join(dict.fromkeys(tried)) or 'no endpoint'};"
                f" last error: {last!r})"
            ) from None

    # --- KV ---------------------------------------------------------------------------

    async def range_request(self, req: RangeRequest) -> RangeResponse:
        body = clientpb.encode_range_request(req)
        data = await self._call(_RANGE, lambda c: self._unary_raw(c, _RANGE, body))
        return fastpb.decode_range_response(data)

    async def _unary_raw(self, conn: _Conn, path: str, body: bytes) -> bytes:
        """The unary RPC ``path`` with an encoded request; the encoded reply. On the lean
        path when the channel takes it (the auth token sent as ``token`` metadata, as the
        ``SendRequest`` listener adds it on grpclib's path), else through grpclib's
        ``Stream``; both raise the same ``GRPCError``/``StreamTerminatedError``."""
        if conn.lean:
            token = self._token
            reply = await unary_call(conn.channel, path, body, (("token", token),) if token else ())
            if reply is not None:
                return reply
        stream: Stream[bytes, bytes]
        async with conn.channel.request(path, Cardinality.UNARY_UNARY, bytes, bytes) as stream:
            await stream.send_message(body, end=True)
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
        body = clientpb.encode_put_request(
            to_bytes(key),
            to_bytes(value, "value"),
            lease_id(lease),
            prev_kv,
            ignore_value,
            ignore_lease,
        )
        data = await self._call(_PUT, lambda c: self._unary_raw(c, _PUT, body))
        return clientpb.decode_put_response(data)

    async def delete_range_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        body = clientpb.encode_delete_range_request(req)
        data = await self._call(_DELETE_RANGE, lambda c: self._unary_raw(c, _DELETE_RANGE, body))
        return clientpb.decode_delete_range_response(data)

    async def txn_request(self, req: TxnRequest) -> TxnResponse:
        body = bytes(convert.txn_request_to_pb(req))
        data = await self._call(_TXN, lambda c: self._unary_raw(c, _TXN, body))
        return convert.txn_response_from_pb(pb.TxnResponse.parse(data))

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        msg = pb.CompactionRequest(revision=revision, physical=physical)
        resp = await self._call("/etcdserverpb.KV/Compact", lambda c: c.kv.compact(msg))
        return CompactResponse(convert.header_from_pb(resp.header))

    # --- watches --------------------------------------------------------------------

    def open_watch(self, spec: WatchSpec) -> Watch:
        return self._watches.open(spec)

    # --- leases -----------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0) -> Lease:
        body = clientpb.encode_lease_grant_request(ttl, id)
        data = await self._call(_LEASE_GRANT, lambda c: self._unary_raw(c, _LEASE_GRANT, body))
        _, granted, granted_ttl, error = clientpb.decode_lease_grant_response(data)
        if error:
            raise EtcdError(error)
        self._ttls[granted] = granted_ttl
        return Lease(self, granted, granted_ttl)

    async def revoke(self, lease: int | _HasId) -> int:
        msg = pb.LeaseRevokeRequest(id=lease_id(lease))
        self._ttls.pop(msg.id, None)
        resp = await self._call(
            "/etcdserverpb.Lease/LeaseRevoke", lambda c: c.lease.lease_revoke(msg)
        )
        return convert.header_from_pb(resp.header).revision

    async def refresh(self, lease: int | _HasId) -> int:
        """One keepalive on the Client's shared LeaseKeepAlive stream; 0 if the lease is
        gone.

        The stream stays on its endpoint until it breaks; a broken stream is reopened on
        the next endpoint and the keepalive sent again. Each refresh is bounded by a third
        of the lease's TTL (as far as this Client granted it) and by ``timeout``, so a
        stalled member cannot hold the lease's keepalive past its TTL: a refresh that runs
        out raises :class:`DeadlineExceededError` (an ``EtcdError``, which the background
        keepalive retries until the TTL is spent) and drops the stalled stream.
        """
        id = lease_id(lease)
        bound = self.timeout
        ttl = self._ttls.get(id)
        if ttl is not None:
            bound = max(ttl / 3, 0.5) if bound is None else min(bound, max(ttl / 3, 0.5))
        last: BaseException | None = None
        tried: list[str] = []
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                while True:
                    stream = self._keepalive
                    if stream is None or not stream.alive:
                        stream = self._keepalive = KeepAliveStream(self._open, self._endpoint, None)
                    tried.append(self._endpoint())
                    try:
                        return await stream.refresh(id)
                    except UnavailableError as e:
                        last = e
                        await self._drop_keepalive(stream)
                        if len(self.policy.endpoints) < 2:
                            raise  # nowhere else to go, as a one-endpoint Client always did
                        # a pause before reopening, so a dead cluster is not spun on
                        await asyncio.sleep(0.05)
        except (TimeoutError, asyncio.CancelledError) as e:
            if not _deadline_hit(deadline, e):
                raise
            stalled = self._keepalive
            if stalled is not None:
                await self._drop_keepalive(stalled)
            raise DeadlineExceededError(
                f"etcdlite: lease keepalive deadline exceeded after {bound}s"
                f" (tried {', '.join(dict.fromkeys(tried))}; last error: {last!r})"
            ) from None

    async def _drop_keepalive(self, stream: KeepAliveStream) -> None:
        if self._keepalive is stream:
            self._keepalive = None
        await stream.close()

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        msg = pb.LeaseTimeToLiveRequest(id=lease_id(lease), keys=keys)
        resp = await self._call(
            "/etcdserverpb.Lease/LeaseTimeToLive", lambda c: c.lease.lease_time_to_live(msg)
        )
        return LeaseTimeToLive(
            resp.id,
            resp.ttl,
            resp.granted_ttl,
            sorted(resp.keys),
            convert.header_from_pb(resp.header).revision,
        )

    async def leases(self) -> list[int]:
        resp = await self._call(
            "/etcdserverpb.Lease/LeaseLeases",
            lambda c: c.lease.lease_leases(pb.LeaseLeasesRequest()),
        )
        return [status.id for status in resp.leases]

    # --- maintenance ------------------------------------------------------------------

    async def defragment(self) -> None:
        """etcd's Defragment, on one member (the next in turn)."""
        await self._call(
            "/etcdserverpb.Maintenance/Defragment",
            lambda c: c.maintenance.defragment(pb.DefragmentRequest()),
        )

    async def alarms(self) -> list[tuple[int, AlarmType]]:
        msg = pb.AlarmRequest(action=pb.AlarmRequestAlarmAction.GET)
        resp = await self._call(
            "/etcdserverpb.Maintenance/Alarm", lambda c: c.maintenance.alarm(msg)
        )
        return sorted((a.member_id, AlarmType(int(a.alarm))) for a in resp.alarms)

    async def disarm(self, alarm: AlarmType = AlarmType.NOSPACE, member: int = 0) -> bool:
        if not member:
            status = await self._call(
                "/etcdserverpb.Maintenance/Status",
                lambda c: c.maintenance.status(pb.StatusRequest()),
            )
            member = status.header.member_id if status.header else 0
        msg = pb.AlarmRequest(
            action=pb.AlarmRequestAlarmAction.DEACTIVATE,
            member_id=member,
            alarm=pb.AlarmType(int(alarm)),
        )
        resp = await self._call(
            "/etcdserverpb.Maintenance/Alarm", lambda c: c.maintenance.alarm(msg)
        )
        return bool(resp.alarms)


def connect(
    endpoints: str | Sequence[str] = "127.0.0.1:2379",
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    ssl: _ssl.SSLContext | None = None,
) -> Client:
    """A :class:`Client` for ``endpoints`` (``"host:port"``, or etcdctl's comma form
    ``"https://a:2379,https://b:2379"``); use ``async with``."""
    return Client(endpoints, timeout=timeout, ssl=ssl)
