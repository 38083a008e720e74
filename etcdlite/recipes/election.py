"""Leader election: Go's ``concurrency.Election`` algorithm and key layout, with a safer API.

Each candidate puts ``<name>/<lease id hex>`` with its proposal as the value (attached to its
session lease); the key with the smallest create revision is the leader, and its value is
the leader's current proclamation. ``etcdctl elect``, Go programs and etcd's v3election
service use the same layout, so they all take part in the same election.

:class:`Election` is the Python API; :class:`Candidate` is Go's algorithm over a bare lease
id, which etcdlite's v3election service uses; :func:`observe_leader` is Go's ``Observe``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import (
    ELECTION_SESSION_EXPIRED,
    CompactedError,
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    EtcdError,
    LeaseNotFoundError,
    LockTimeoutError,
    SessionExpiredError,
)
from ..ops import Compare, Delete, Get, Put
from ..types import (
    Bytesish,
    EventType,
    KeyValue,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    to_bytes,
)
from .cancellation import Deadline, clock_of, run_shielded
from .lock import lease_key
from .session import DEFAULT_TTL, BaseSession, SessionHolder
from .wait import wait_deletes

if TYPE_CHECKING:
    from ..kvbase import KVCore

__all__ = ["Candidate", "Election", "LeaderKey", "Observer", "observe_leader"]

#: Text of :class:`SessionExpiredError` when a campaign's key vanished while waiting.


@dataclass(frozen=True)
class LeaderKey:
    """What identifies a leadership (etcd's ``v3electionpb.LeaderKey``): the election
    ``name``, the leader's ``key``, its create revision ``rev`` and its ``lease``."""

    name: bytes
    key: bytes
    rev: int
    lease: int


async def leader_range(kv: KVCore, prefix: bytes) -> RangeResponse:
    """Go's ``Leader`` Range: the oldest key under ``prefix``."""
    return await kv.range(
        prefix, prefix=True, sort_target=SortTarget.CREATE, sort_order=SortOrder.ASCEND, limit=1
    )


class Candidate:
    """Go's ``concurrency.Election`` on ``prefix`` (``name + b"/"``) for one lease id.

    ``key``/``rev`` identify the leadership once campaigning; ``leader`` says whether this
    object believes it leads; ``header`` is what Go's ``Header()`` returns.
    """

    def __init__(
        self,
        kv: KVCore,
        prefix: bytes,
        lease_id: int,
        *,
        key: bytes | None = None,
        rev: int = 0,
    ) -> None:
        self.kv = kv
        self.prefix = prefix
        self.lease_id = lease_id
        self.key = key if key is not None else lease_key(prefix, lease_id)
        self.rev = rev
        #: True when resumed with a known key (Go's ResumeElection) or after campaigning.
        self.leader = key is not None
        self.header: ResponseHeader | None = None

    async def campaign(
        self, value: bytes, *, verify: bool = True, retry_compacted: bool = True
    ) -> None:
        """Go's ``Campaign``: put the own key (or reuse it, proclaiming ``value`` if it
        differs) and wait until every older candidate is gone.

        ``verify``: check the own key still exists afterwards, else raise
        :class:`SessionExpiredError` (Go never checks). Any failure, cancellation included,
        resigns (shielded, after the campaign Txn has finished).
        """
        key = self.key = lease_key(self.prefix, self.lease_id)
        attempt = asyncio.ensure_future(
            self.kv.txn(
                [Compare.create(key) == 0],
                [Put(key, value, lease=self.lease_id)],
                [Get(key)],
            )
        )
        try:
            resp = await asyncio.shield(attempt)
            self.rev = resp.header.revision
            self.leader = True
            if not resp.succeeded:
                mine = resp.responses[0]
                assert isinstance(mine, RangeResponse)
                self.rev = mine.kvs[0].create_revision
                if mine.kvs[0].value != value:
                    await self.proclaim(value)
            await wait_deletes(self.kv, self.prefix, self.rev - 1, retry_compacted=retry_compacted)
            if verify:
                check = await self.kv.range(key)
                if not check.kvs or check.kvs[0].create_revision != self.rev:
                    self.leader = False
                    raise SessionExpiredError(ELECTION_SESSION_EXPIRED)
            self.header = resp.header
        except BaseException:
            await run_shielded(self._cleanup(attempt))
            raise

    async def _cleanup(self, attempt: asyncio.Future[Any]) -> None:
        """Resign the key this campaign created or reused, once its Txn has finished."""
        await asyncio.wait([attempt])
        if attempt.cancelled() or attempt.exception() is not None:
            self.leader = False
            return
        resp = attempt.result()
        if resp.succeeded:
            self.rev = resp.header.revision
        else:
            mine = resp.responses[0]
            assert isinstance(mine, RangeResponse)
            self.rev = mine.kvs[0].create_revision
        self.leader = True
        with contextlib.suppress(EtcdError):
            await self.resign()
        self.leader = False

    async def proclaim(self, value: bytes) -> None:
        """Go's ``Proclaim``: rewrite the leader key's value (Txn guarded by its create
        revision, re-attached to this lease); :class:`ElectionNotLeaderError` if not leader."""
        if not self.leader:
            raise ElectionNotLeaderError()
        resp = await self.kv.txn(
            [Compare.create(self.key) == self.rev], [Put(self.key, value, lease=self.lease_id)]
        )
        if not resp.succeeded:
            self.leader = False
            raise ElectionNotLeaderError()
        self.header = resp.header

    async def resign(self) -> None:
        """Go's ``Resign``: delete the leader key if its create revision still matches (a
        mismatch is not an error); no-op when not leading."""
        if not self.leader:
            return
        resp = await self.kv.txn([Compare.create(self.key) == self.rev], [Delete(self.key)])
        self.header = resp.header
        self.leader = False

    def is_leader(self) -> Compare:
        """A compare that holds while this leadership's key exists (a fence for txns)."""
        return Compare.create(self.key) == self.rev


async def observe_leader(
    kv: KVCore, prefix: bytes, *, restart_on_compaction: bool = True
) -> AsyncGenerator[tuple[ResponseHeader, KeyValue], None]:
    """Go's ``Observe``: the current leader's KeyValue, then each of its proclamations, then
    the next leader's, … as ``(header, kv)`` pairs with Go's headers.

    Every latest value is reported, not necessarily every intermediate one. Ends when a
    watch ends; on compaction it starts over from a fresh Range unless
    ``restart_on_compaction`` is false (Go ends).
    """
    while True:
        resp = await leader_range(kv, prefix)
        leader: KeyValue | None = None
        try:
            if resp.kvs:
                header, leader = resp.header, resp.kvs[0]
            else:
                # no leader: wait for the first candidate to put its key
                async with kv.watch(prefix, prefix=True, start_revision=resp.header.revision) as w:
                    async for wr in w.responses():
                        for ev in wr.events:
                            if ev.type == EventType.PUT:
                                leader = ev.kv
                                h = wr.header
                                header = ResponseHeader(
                                    h.cluster_id, h.member_id, leader.mod_revision, h.raft_term
                                )
                                break
                        if leader is not None:
                            break
                if leader is None:
                    return
            yield header, leader
            async with kv.watch(leader.key, start_revision=header.revision + 1) as w:
                deleted = False
                async for wr in w.responses():
                    for ev in wr.events:
                        if ev.type == EventType.DELETE:
                            deleted = True
                            break
                        yield wr.header, ev.kv
                    if deleted:
                        break
                if not deleted:
                    return
        except CompactedError:
            if not restart_on_compaction:
                return


class Observer:
    """``async for kv in election.observe():`` the leader's KeyValue each time it changes
    (a new leader, or a proclamation). Also an async context manager that stops it."""

    def __init__(self, kv: KVCore, prefix: bytes) -> None:
        self._gen = observe_leader(kv, prefix)
        #: Header of the last response (Go's header choice).
        self.header: ResponseHeader | None = None

    def __aiter__(self) -> Observer:
        return self

    async def __anext__(self) -> KeyValue:
        header, kv = await self._gen.__anext__()
        self.header = header
        return kv

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> Observer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Election(SessionHolder):
    """A leader election on ``name``, interoperable with ``etcdctl elect`` and Go.

    * ``ttl``: seconds a dead leader keeps its leadership (session lease TTL, default 60).
      Ignored when ``session`` is given.
    * ``session``: campaign through an existing :class:`Session`; by default each campaign
      opens its own session, revoked when the leadership ends (resign, failure or close).

    ::

        async with kv.election(b"svc") as e:
            await e.campaign(b"node-1", timeout=10)
            ...                                   # leader until resign / exit
        async for kv in kv.election(b"svc").observe():
            print("leader is", kv.value)

    ``campaign`` is cancellation-safe (a cancelled or timed-out candidate removes its key)
    and checks after waiting that its key still exists (:class:`SessionExpiredError`).
    """

    def __init__(
        self,
        kv: KVCore,
        name: Bytesish,
        *,
        ttl: int = DEFAULT_TTL,
        session: BaseSession | None = None,
    ) -> None:
        super().__init__(kv, name, ttl, session)
        self._candidate: Candidate | None = None

    # --- state ------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this object believes it leads (watch ``session.lost()`` as well)."""
        return self._candidate is not None and self._candidate.leader

    @property
    def leader_key(self) -> LeaderKey | None:
        c = self._candidate
        if c is None or not c.leader:
            return None
        return LeaderKey(self.name, c.key, c.rev, c.lease_id)

    @property
    def key(self) -> bytes | None:
        lk = self.leader_key
        return lk.key if lk is not None else None

    @property
    def revision(self) -> int:
        """Create revision of the leader key while leading (0 otherwise)."""
        lk = self.leader_key
        return lk.rev if lk is not None else 0

    @property
    def header(self) -> ResponseHeader | None:
        return self._candidate.header if self._candidate is not None else None

    def is_owner(self) -> Compare:
        """A compare that holds while this leadership lasts, to guard writes in a txn."""
        if self._candidate is None or not self._candidate.leader:
            raise ElectionNotLeaderError()
        return self._candidate.is_leader()

    # --- campaigning ------------------------------------------------------------------

    async def campaign(self, value: Bytesish, *, timeout: float | None = None) -> LeaderKey:
        """Become leader with ``value`` (waiting at most ``timeout`` seconds).

        Already leading: proclaims ``value`` and returns at once. Raises
        :class:`LockTimeoutError` on timeout, :class:`SessionExpiredError` if the session
        ended while waiting; on any failure the candidacy is withdrawn.
        """
        v = to_bytes(value, "value")
        if self._candidate is not None and self._candidate.leader:
            await self.proclaim(v)
            lk = self.leader_key
            assert lk is not None
            return lk
        if self._busy:
            raise RuntimeError("this Election is already campaigning")
        self._busy = True
        deadline = Deadline(clock_of(self._kv), timeout)
        try:
            async with deadline:
                await self._campaign(v)
        except TimeoutError:
            if deadline.expired():
                raise LockTimeoutError(f"not elected in {self.name!r} within {timeout} s") from None
            raise
        finally:
            self._busy = False
        lk = self.leader_key
        assert lk is not None
        return lk

    async def _campaign(self, value: bytes) -> None:
        session, own = self._new_session()
        held: asyncio.Lock | None = None  # the session's local lock, once this task has it
        try:
            await session.open()
            if not session.alive:
                raise SessionExpiredError(ELECTION_SESSION_EXPIRED)
            local = session._local_lock(self.prefix)
            await local.acquire()
            held = local
            candidate = Candidate(self._kv, self.prefix, session.id)
            try:
                await candidate.campaign(value, verify=True)
            except LeaseNotFoundError as e:
                raise SessionExpiredError(ELECTION_SESSION_EXPIRED) from e
        except BaseException:
            await self._abandon(session, own, held)
            raise
        self._candidate = candidate
        self._local = held

    async def proclaim(self, value: Bytesish) -> None:
        """Announce a new value as leader; :class:`ElectionNotLeaderError` if this object
        does not lead (any more)."""
        c = self._candidate
        if c is None or not c.leader:
            raise ElectionNotLeaderError()
        try:
            await c.proclaim(to_bytes(value, "value"))
        except ElectionNotLeaderError:
            await run_shielded(self._end())
            raise

    async def resign(self) -> None:
        """Give up leadership (delete the key if it is still ours) so the next candidate is
        elected; closes a campaign's own session. No-op when not leading. Shielded."""
        if self._candidate is None:
            return
        await run_shielded(self._end())

    async def _end(self) -> None:
        c, self._candidate = self._candidate, None
        local, self._local = self._local, None
        try:
            if c is not None:
                await c.resign()
        finally:
            await self._let_go(local)

    async def close(self) -> None:
        """Resign if leading (the election object can campaign again afterwards)."""
        await self.resign()

    # --- observing --------------------------------------------------------------------

    async def leader(self) -> KeyValue:
        """The current leader's KeyValue; :class:`ElectionNoLeaderError` if none."""
        resp = await leader_range(self._kv, self.prefix)
        if not resp.kvs:
            raise ElectionNoLeaderError()
        return resp.kvs[0]

    def observe(self) -> Observer:
        """An async iterator of the leader's KeyValue: the current one (once there is a
        leader), then every change (proclamations and new leaders)."""
        return Observer(self._kv, self.prefix)

    async def __aenter__(self) -> Election:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Election(name={self.name!r}, key={self.key!r}, leader={self.is_leader})"
