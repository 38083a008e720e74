"""etcd's v3lock (``/v3lockpb.Lock``) and v3election (``/v3electionpb.Election``) services.

etcd runs its Go ``concurrency`` recipes inside the server for these; etcdlite runs its own
ports of them (:mod:`etcdlite.recipes`) on the served Store, with etcd 3.4.23's observable
behaviour:

* each request builds a session on ``lease`` and orphans it at once: the caller owns the
  lease's liveness; lease 0 grants a fresh 60 s lease that nobody renews (Lock, Campaign,
  and also Proclaim/Resign, which re-bind or leak it as etcd does);
* every error is gRPC UNKNOWN with etcd's text (``election: no leader``, ``election: not
  leader``, ``"leader" field must be provided``, ``etcdserver: requested lease not
  found`` …): grpc-go sends the recipes' plain Go errors that way;
* a waiter whose RPC is cancelled (deadline, reset) deletes its key (shielded);
* like 3.4, Lock and Campaign do not re-check the own key after waiting;
* with auth enabled each request acts as its caller (etcd's recipes run on an in-process
  client carrying the request's context, token included): every read and write is checked
  as the caller's own, and a refusal is UNKNOWN with etcd's text (``etcdserver: permission
  denied``, ``etcdserver: user name is empty``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from .._grpc import Interceptor, recv_message
from ..errors import (
    ElectionNoLeaderError,
    EtcdError,
    GrpcMissingMessageError,
    MissingLeaderKeyError,
)
from ..kvbase import KVCore
from ..recipes.election import Candidate, leader_range, observe_leader
from ..recipes.lock import Mutex
from ..types import KeyValue, ResponseHeader
from ..wire import convert
from ..wire.pb import mvccpb, v3electionpb, v3lockpb
from .methods import UnaryMethod, grpc_error

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["SESSION_TTL", "RecipeServices"]

#: TTL of the lease a v3lock/v3election request with lease 0 gets (Go's session default).
SESSION_TTL = 60


def _header(h: ResponseHeader | None) -> Any:
    return convert.header_to_pb(h) if h is not None else None


def _kv(kv: KeyValue) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


class RecipeServices:
    """The Lock and Election services of one :class:`~etcdlite.EtcdServer`."""

    def __init__(
        self,
        store: Store,
        interceptor: Callable[[], Interceptor | None],
        fast_path: Callable[[], bool],
        caller_kv: Callable[[], KVCore] | None = None,
    ) -> None:
        self.store = store
        self._interceptor = interceptor
        self._fast_path = fast_path
        #: The store as the current request's caller sees it (``EtcdServer.kv``).
        self._caller_kv = caller_kv

    def kv(self) -> KVCore:
        """What the recipes run on: the caller's view (the store without a caller)."""
        return self.store if self._caller_kv is None else self._caller_kv()

    def unary_methods(self) -> list[UnaryMethod]:
        """The unary RPCs; their errors are the recipes' plain Go errors (UNKNOWN)."""
        lock, election = "/v3lockpb.Lock/", "/v3electionpb.Election/"
        return [
            UnaryMethod(
                lock + "Lock", self.lock, v3lockpb.LockRequest, v3lockpb.LockResponse, True
            ),
            UnaryMethod(
                lock + "Unlock", self.unlock, v3lockpb.UnlockRequest, v3lockpb.UnlockResponse, True
            ),
            UnaryMethod(
                election + "Campaign",
                self.campaign,
                v3electionpb.CampaignRequest,
                v3electionpb.CampaignResponse,
                True,
            ),
            UnaryMethod(
                election + "Proclaim",
                self.proclaim,
                v3electionpb.ProclaimRequest,
                v3electionpb.ProclaimResponse,
                True,
            ),
            UnaryMethod(
                election + "Leader",
                self.leader,
                v3electionpb.LeaderRequest,
                v3electionpb.LeaderResponse,
                True,
            ),
            UnaryMethod(
                election + "Resign",
                self.resign,
                v3electionpb.ResignRequest,
                v3electionpb.ResignResponse,
                True,
            ),
        ]

    def stream_handlers(self) -> dict[str, Handler]:
        return {
            "/v3electionpb.Election/Observe": Handler(
                self._observe,
                Cardinality.UNARY_STREAM,
                v3electionpb.LeaderRequest,
                v3electionpb.LeaderResponse,
            )
        }

    async def _session(self, kv: KVCore, lease: int) -> int:
        """Go's ``NewSession(WithLease(lease))`` + ``Orphan()``: lease 0 gets a new lease
        that is never renewed; any other id is used as is (not checked)."""
        if lease == 0:
            return (await kv.grant(SESSION_TTL)).id
        return lease

    # --- v3lock -----------------------------------------------------------------------

    async def lock(self, m: v3lockpb.LockRequest) -> v3lockpb.LockResponse:
        kv = self.kv()
        lease = await self._session(kv, m.lease)
        mutex = Mutex(kv, m.name + b"/", lease)
        await mutex.lock(verify=False, retry_compacted=False)
        return v3lockpb.LockResponse(header=_header(mutex.header), key=mutex.key)

    async def unlock(self, m: v3lockpb.UnlockRequest) -> v3lockpb.UnlockResponse:
        resp = await self.kv().delete(m.key)
        return v3lockpb.UnlockResponse(header=_header(resp.header))

    # --- v3election -------------------------------------------------------------------

    async def campaign(self, m: v3electionpb.CampaignRequest) -> v3electionpb.CampaignResponse:
        kv = self.kv()
        lease = await self._session(kv, m.lease)
        c = Candidate(kv, m.name + b"/", lease)
        await c.campaign(m.value, verify=False, retry_compacted=False)
        return v3electionpb.CampaignResponse(
            header=_header(c.header),
            leader=v3electionpb.LeaderKey(name=m.name, key=c.key, rev=c.rev, lease=lease),
        )

    def _resume(self, kv: KVCore, leader: v3electionpb.LeaderKey, lease: int) -> Candidate:
        # Go's ResumeElection keeps the name as the prefix, without "/" (unused here).
        return Candidate(kv, leader.name, lease, key=leader.key, rev=leader.rev)

    async def proclaim(self, m: v3electionpb.ProclaimRequest) -> v3electionpb.ProclaimResponse:
        if m.leader is None:
            raise MissingLeaderKeyError()
        kv = self.kv()
        lease = await self._session(kv, m.leader.lease)
        c = self._resume(kv, m.leader, lease)
        await c.proclaim(m.value)
        return v3electionpb.ProclaimResponse(header=_header(c.header))

    async def resign(self, m: v3electionpb.ResignRequest) -> v3electionpb.ResignResponse:
        if m.leader is None:
            raise MissingLeaderKeyError()
        kv = self.kv()
        lease = await self._session(kv, m.leader.lease)
        c = self._resume(kv, m.leader, lease)
        await c.resign()
        return v3electionpb.ResignResponse(header=_header(c.header))

    async def leader(self, m: v3electionpb.LeaderRequest) -> v3electionpb.LeaderResponse:
        resp = await leader_range(self.kv(), m.name + b"/")
        if not resp.kvs:
            raise ElectionNoLeaderError()
        return v3electionpb.LeaderResponse(header=_header(resp.header), kv=_kv(resp.kvs[0]))

    async def _observe(
        self, stream: Stream[v3electionpb.LeaderRequest, v3electionpb.LeaderResponse]
    ) -> None:
        """Leader values until the client goes away; the stream ends with OK when Go's
        observer would close its channel (a watch ended or failed)."""
        hook = self._interceptor()
        if hook is not None:
            await hook("/v3electionpb.Election/Observe")
        try:
            fast = self._fast_path() and not getattr(stream, "in_process", False)
            m = await recv_message(stream, unary=False, fast=fast)
            view = self.kv()
        except EtcdError as e:
            raise grpc_error(e) from None
        if m is None:
            raise grpc_error(GrpcMissingMessageError())
        # a refused read ends the stream like any failed one (Go's observer just closes)
        gen = observe_leader(view, m.name + b"/", restart_on_compaction=False)
        try:
            async with aclosing(gen):
                async for header, kv in gen:
                    await stream.send_message(
                        v3electionpb.LeaderResponse(header=_header(header), kv=_kv(kv))
                    )
        except EtcdError:
            return
