"""The embedded store: etcd's KV API as awaitables over the synchronous core.

One event loop owns a Store. Each call runs to completion between awaits, which gives
etcd's linearizable order without locks. Work that could stall the loop (physical
compaction) runs in the background in bounded steps.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

from .api import KVBase
from .clock import Clock, LoopClock
from .core.autocompact import AutoCompactor
from .core.mvcc import DEFAULT_MAX_TXN_OPS, MVCC
from .lease import Lease, LeaseTimeToLive
from .ops import DeleteRangeRequest, RangeRequest, TxnRequest, _HasId, lease_id
from .types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    TxnResponse,
    to_bytes,
)

__all__ = ["Store", "StoreClosedError"]

#: Ids reported in response headers; any fixed non-zero values will do for one member.
CLUSTER_ID = 0x14841639068965F6
MEMBER_ID = 0x4D2A_6C69_7465_0001
RAFT_TERM = 2


class StoreClosedError(RuntimeError):
    """The store was closed."""


class Store(KVBase):
    """An in-process etcd v3 store.

    Options:

    * ``clock``: where time comes from (default: the event loop's); a
      :class:`~etcdlite.ManualClock` makes lease TTLs and periodic work controllable.
    * ``max_txn_ops``: etcd's ``--max-txn-ops`` (128).
    * ``min_lease_ttl``: the minimum lease TTL (etcd: 2 s); lower it in tests.
    * ``auto_compaction_mode`` (``"periodic"`` or ``"revision"``) and
      ``auto_compaction_retention``: etcd's ``--auto-compaction-*`` flags. Periodic keeps
      ``retention`` seconds of history; revision keeps the last ``retention`` revisions
      (checked every 5 minutes, as etcd does).
    * ``compaction_batch``: changes trimmed per event-loop turn by physical compaction.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl: float = 2,
        auto_compaction_mode: str | None = None,
        auto_compaction_retention: float = 0,
        compaction_batch: int = 10_000,
        cluster_id: int = CLUSTER_ID,
        member_id: int = MEMBER_ID,
    ) -> None:
        self.clock: Clock = clock if clock is not None else LoopClock()
        self.core = MVCC(
            max_txn_ops=max_txn_ops,
            cluster_id=cluster_id,
            member_id=member_id,
            raft_term=RAFT_TERM,
        )
        self.core.lessor.min_ttl = min_lease_ttl
        self.compaction_batch = compaction_batch
        self._auto = (
            AutoCompactor(auto_compaction_mode, auto_compaction_retention)
            if auto_compaction_mode
            else None
        )
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._compactor: asyncio.Task[None] | None = None
        self._started = False

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Store:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._auto is not None:
            self._spawn(self._auto_compact_loop())

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop background work. The data stays readable by nobody: further calls fail."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")
        if not self._started:
            self._start()

    @property
    def revision(self) -> int:
        """The current revision."""
        return self.core.revision

    @property
    def compacted_revision(self) -> int:
        return self.core.compacted_revision

    # --- KV ---------------------------------------------------------------------------

    async def _range(self, req: RangeRequest) -> RangeResponse:
        self._check()
        return self.core.range(req)

    async def get(self, key: Bytesish, *, revision: int = 0) -> KeyValue | None:
        self._check()
        return self.core.get(key if type(key) is bytes else to_bytes(key), revision)

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
        if self._closed or not self._started:
            self._check()
        return self.core.put(
            key if type(key) is bytes else to_bytes(key),
            value if type(value) is bytes else to_bytes(value, "value"),
            lease if type(lease) is int else lease_id(lease),
            prev_kv,
            ignore_value,
            ignore_lease,
        )

    async def _delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        self._check()
        return self.core.delete_range(req)

    async def _txn(self, req: TxnRequest) -> TxnResponse:
        self._check()
        return self.core.txn(req)

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        self._check()
        self.core.compact(revision)
        task = self._compactor
        if task is None or task.done():
            task = self._compactor = self._spawn(self._physical_compaction())
        if physical:
            await asyncio.shield(task)
        return CompactResponse(self.core.header())

    async def _physical_compaction(self) -> None:
        core = self.core
        while not core.compact_step(self.compaction_batch):
            await asyncio.sleep(0)

    async def _auto_compact_loop(self) -> None:
        auto = self._auto
        assert auto is not None
        auto.start(self.clock.time(), self.core.revision)
        while True:
            await self.clock.sleep(auto.interval)
            target = auto.tick(self.clock.time(), self.core.revision)
            if target is not None and target > self.core.compacted_revision:
                await self.compact(min(target, self.core.revision))

    # --- leases -----------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0) -> Lease:
        self._check()
        entry = self.core.grant(ttl, id, self.clock.time())
        return Lease(self, entry.id, entry.ttl)

    async def revoke(self, lease: int | _HasId) -> int:
        self._check()
        return self.core.revoke(lease_id(lease))

    async def refresh(self, lease: int | _HasId) -> int:
        self._check()
        return self.core.lessor.renew(lease_id(lease), self.clock.time())

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        self._check()
        lid = lease_id(lease)
        entry = self.core.lessor.get(lid)
        now = self.clock.time()
        if entry is None or entry.expiry <= now:
            return LeaseTimeToLive(lid, -1, 0, [], self.core.revision)
        remaining = math.floor(entry.expiry - now)
        return LeaseTimeToLive(
            lid, remaining, entry.ttl, sorted(entry.keys) if keys else [], self.core.revision
        )

    async def leases(self) -> list[int]:
        self._check()
        return [entry.id for entry in self.core.lessor.leases()]
