"""The embedded store: etcd's KV API as awaitables over the synchronous core.

One event loop owns a Store: the one it is first used on. Each call runs to completion
between awaits, which gives etcd's linearizable order without locks; a call from another
event loop or thread raises ``RuntimeError`` before it touches anything. Work that could
stall the loop (physical compaction) runs in the background in bounded steps.
"""

from __future__ import annotations

import asyncio
import math
import os
from _thread import get_ident
from asyncio import get_running_loop
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .api import KVBase
from .auth import DEFAULT_BCRYPT_COST, StoreAuth
from .clock import Clock, LoopClock
from .core.auth import DEFAULT_TOKEN_TTL, AuthStore
from .core.autocompact import AutoCompactor
from .core.mvcc import DEFAULT_MAX_TXN_OPS, MVCC
from .core.quota import AlarmType, Quota
from .core.watch import EVENTS, REQUESTED, Watcher, WatchRegistry
from .errors import (
    WATCH_CANCELED,
    WATCH_EMPTY_RANGE,
    EtcdError,
    WatchCanceledError,
    WatchCompactedError,
)
from .faults import Faults
from .identity import DEFAULT_PEER_URL, fresh_cluster_id, member_id
from .lease import Lease, LeaseTimeToLive
from .ops import DeleteRangeRequest, RangeRequest, TxnRequest, _HasId, int64, lease_id
from .types import (
    Bytesish,
    CompactResponse,
    DeleteRangeResponse,
    Event,
    KeyValue,
    PutResponse,
    RangeResponse,
    TxnResponse,
    WatchResponse,
    to_bytes,
)
from .userview import UserView
from .watch import Watch, WatchSpec

if TYPE_CHECKING:
    from .storage.datadir import DataDir
    from .storage.snapshot import SnapshotInfo

_A = TypeVar("_A")
_R = TypeVar("_R")

__all__ = ["Store", "StoreClosedError"]

#: Ids reported in response headers; any fixed non-zero values will do for one member.
#: The member ID of a Store not told otherwise: etcd's ID for a member with etcd's
#: default peer URL and cluster token (see :mod:`etcdlite.identity`).
MEMBER_ID = member_id([DEFAULT_PEER_URL])
RAFT_TERM = 2


class _UnknownLoop:
    """Stands for an owning loop that does not record its thread: never matches."""

    _thread_id = -1


_UNKNOWN_LOOP = _UnknownLoop()


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
    * ``lease_expiry_batch``: expired leases revoked per event-loop turn (one revision each).
    * ``watch_buffer``: revisions buffered per watcher before it falls back to catching up
      from history (etcd buffers 128 responses per stream).
    * ``watch_progress_notify_interval``: seconds between progress notifications for
      ``progress_notify`` watches (etcd's ``--experimental-watch-progress-notify-interval``,
      10 minutes).
    * ``auth_token_ttl``: seconds a token stays valid after its last use (etcd's
      ``--auth-token-ttl``, 300); ``bcrypt_cost``: etcd's ``--bcrypt-cost`` (10, 4..31).
    * ``data_dir``: keep the store in this directory (see :mod:`etcdlite.storage`); without
      it the store lives in memory only. An existing directory is recovered when the store
      is created (every kept revision, the compaction point, the leases with their full TTL
      back, as etcd's lessor gives them when a member starts). A second store on the same
      directory, in any process, is refused with ``DataDirLockedError``. The directory
      keeps the cluster and member IDs it was created with (later ``cluster_id`` and
      ``member_id`` arguments are ignored, as etcd ignores its ``--initial-cluster*``
      flags once it has a data dir). Recovery reads
      the directory while the Store is created (seconds for millions of revisions): create
      it before serving, or off the loop (``await asyncio.to_thread(Store, data_dir=d)``).

    With a ``data_dir``, what etcd acknowledges after its WAL sync is acknowledged here after
    the log's sync: a write returns once it is durable (concurrent writes share one sync),
    and no read, watch event or progress notification shows a revision before it is durable
    (a read issued while a sync is pending waits for it). If a write or sync fails (a full
    disk) the store stops: that call and every later one raise ``StorageFailedError``, and
    the directory keeps what was durable.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        min_lease_ttl: float = 2,
        auto_compaction_mode: str | None = None,
        auto_compaction_retention: float = 0,
        compaction_batch: int = 5_000,
        watch_buffer: int = 128,
        watch_progress_notify_interval: float = 600.0,
        lease_expiry_batch: int = 1000,
        cluster_id: int | None = None,
        member_id: int = MEMBER_ID,
        quota_bytes: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        auth_token_ttl: float = DEFAULT_TOKEN_TTL,
        bcrypt_cost: int = DEFAULT_BCRYPT_COST,
    ) -> None:
        for name, value in (
            ("compaction_batch", compaction_batch),
            ("watch_buffer", watch_buffer),
            ("lease_expiry_batch", lease_expiry_batch),
            ("max_txn_ops", max_txn_ops),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        if not 4 <= bcrypt_cost <= 31:
            raise ValueError(f"bcrypt_cost must be within 4..31, not {bcrypt_cost}")
        if auth_token_ttl <= 0:
            raise ValueError(f"auth_token_ttl must be positive, not {auth_token_ttl}")
        self.clock: Clock = clock if clock is not None else LoopClock()
        #: ``clock.time``, or the owning loop's own ``time`` once started on a LoopClock
        #: (what a hot path reads: no running-loop lookup).
        self.now: Callable[[], float] = self.clock.time
        #: Users, roles, permissions and tokens (:mod:`etcdlite.core.auth`).
        self.auth_store = AuthStore(auth_token_ttl)
        self.bcrypt_cost = bcrypt_cost
        #: etcd's Auth API, acting as the store's owner (never refused); see
        #: :meth:`as_user` and :meth:`login` for checked callers.
        self.auth = StoreAuth(self)
        self._token_sweeper: asyncio.Task[None] | None = None
        stored = None
        if data_dir is not None:
            # the storage modules load only for a store that has a directory
            from .storage.log import read_identity

            stored = read_identity(Path(data_dir))
        if stored is not None:
            # An existing directory keeps its cluster's identity, as etcd ignores its
            # --initial-cluster* flags once it has a data dir.
            cluster_id, member_id = stored
        self.core = MVCC(
            max_txn_ops=max_txn_ops,
            # memory-only: a new cluster per Store, so clients can tell history was reset
            cluster_id=cluster_id if cluster_id is not None else fresh_cluster_id(member_id),
            member_id=member_id,
            raft_term=RAFT_TERM,
        )
        self.core.lessor.min_ttl = min_lease_ttl
        self.compaction_batch = compaction_batch
        # Held while a snapshot reads the core: physical compaction waits for it.
        self._compaction_lock = asyncio.Lock()
        self._storage: DataDir | None = None
        if data_dir is not None:
            from .storage.datadir import DataDir

            self._storage = DataDir.open(data_dir, self.core)
            self._storage.compaction_lock = self._compaction_lock
            if self._storage.auth is not None:
                self.auth_store.load(self._storage.auth)  # users, roles: not tokens
        self.watches = WatchRegistry(
            self.core, buffer_size=watch_buffer, deferred=self._storage is not None
        )
        if self._storage is not None:
            self._storage.on_durable = self.watches.release
        #: Size accounting, the backend quota and the alarms (``quota_bytes``); made after
        #: recovery, so it counts what the directory held.
        self.quota = Quota(self.core, quota_bytes)
        if self._storage is not None:
            # Alarms outlive a restart, as etcd's (kept in its backend) do.
            for member, alarm in sorted(self._storage.alarms):
                self.quota.activate(member, AlarmType(alarm))
            self.quota.on_alarm = self._storage.log_alarm
        #: Fault injection for tests (see :mod:`etcdlite.faults`).
        self.faults = Faults(self.watches)
        self.watch_progress_notify_interval = watch_progress_notify_interval
        self._watch_ids: dict[int, Watcher] = {}
        self._next_watch_id = 0
        self._ticker: asyncio.Task[None] | None = None
        self.lease_expiry_batch = lease_expiry_batch
        self._expirer: asyncio.Task[None] | None = None
        self._expiry_wakeup = asyncio.Event()
        #: Leases revoked by the last expiry pass (tests check the batch bound with it).
        self.last_expiry_batch = 0
        self._auto = (
            AutoCompactor(auto_compaction_mode, auto_compaction_retention)
            if auto_compaction_mode
            else None
        )
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._compactor: asyncio.Task[None] | None = None
        self._started = False
        # The owner, set on first use: the core is not thread-safe and its background
        # tasks belong to one loop, so every request checks it is on that loop (see _start).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: object = _UNKNOWN_LOOP
        self._thread = 0

    # --- auth -------------------------------------------------------------------------

    def as_user(self, name: str | None) -> UserView:
        """This store as user ``name`` sees it (``None``: an anonymous caller): every call
        checked as etcd checks a request from that user (see :mod:`etcdlite.userview`).
        No password is asked, as for etcd's certificate-authenticated users."""
        return UserView(self, self, name)

    async def login(self, name: str, password: str) -> UserView:
        """Authenticate as ``name`` (etcd's errors for a wrong password, or auth being
        off) and return the view acting with its token, re-authenticated when it expires."""
        token = await self.auth.authenticate(name, password)
        return UserView(self, self, name, token=token, password=password)

    async def _auth_changed(self) -> None:
        """After a change of users, roles, permissions or enablement: with a data
        directory, the auth store's new state is logged and durable before the reply."""
        if self._storage is not None:
            self._storage.log_auth(self.auth_store.dump())
            await self._storage.settle()

    def _sweep_tokens(self) -> None:
        """Keep expiring tokens while there are any (started by each Authenticate)."""
        task = self._token_sweeper
        if task is None or task.done():
            self._token_sweeper = self._spawn(self._token_sweep_loop())

    async def _token_sweep_loop(self) -> None:
        a = self.auth_store
        while len(a.tokens):
            await self.clock.sleep(a.tokens.sweep_interval)
            a.sweep_tokens(self.clock.time())

    def with_token(self, token: str) -> UserView:
        """The view of whoever ``token`` belongs to; once the token expires or is
        invalidated every call raises ``InvalidAuthTokenError``."""
        return UserView(self, self, None, token=token)

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
        loop = self._loop = get_running_loop()
        if type(self.clock) is LoopClock:
            self.now = loop.time
        self._thread = get_ident()
        # asyncio's loops (uvloop's too) record the thread running them in _thread_id, and a
        # thread runs one loop at a time: "my thread runs the owner" is then the whole check,
        # ~50 ns where get_running_loop() costs ~230 (a put costs ~3 µs). Any other loop
        # takes the exact check in _foreign() on every call.
        self._owner = loop if isinstance(getattr(loop, "_thread_id", None), int) else _UNKNOWN_LOOP
        self._started = True
        if self._auto is not None:
            self._spawn(self._auto_compact_loop())
        if self._storage is not None:
            self._storage.start()
            if len(self.core.lessor):
                # Recovered leases: their full TTL from now, as etcd's lessor on start.
                self.core.lessor.promote(self.clock.time())
                self._expirer = self._spawn(self._expiry_loop())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop background work and end every watch; further calls fail. With a data
        directory, what was logged is made durable and the directory released."""
        if self._started and get_ident() != self._owner._thread_id:  # type: ignore[attr-defined]
            self._foreign()
        self._closed = True
        for w in list(self.watches.watchers):
            self.watches.cancel(w)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._storage is not None:
            await self._storage.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")
        if not self._started:
            self._start()
        elif get_ident() != self._owner._thread_id:  # type: ignore[attr-defined]
            self._foreign()
        if self._storage is not None and self._storage.failure is not None:
            raise self._storage.failure

    def _foreign(self) -> None:
        """Refuse a call from outside the owning loop (nothing has been touched yet)."""
        if self._owner is _UNKNOWN_LOOP and get_running_loop() is self._loop:
            return
        where = "thread" if get_ident() != self._thread else "event loop"
        raise RuntimeError(
            f"etcdlite: Store used from another {where} than the event loop that owns it "
            f"(thread {self._thread}); a Store is not thread-safe: use it from its own loop, "
            "or run a server (etcdlite.serve / etcdlite.testing.ServerThread) and a Client"
        )

    async def admit(self, kind: str) -> None:
        """Checks before a request: open, started, and any armed fault for ``kind``."""
        self._check()
        if self.faults.active:
            await self.faults.before(kind)
            self._check()

    @property
    def revision(self) -> int:
        """The current revision."""
        return self.core.revision

    @property
    def compacted_revision(self) -> int:
        return self.core.compacted_revision

    # --- durability -------------------------------------------------------------------

    @property
    def data_dir(self) -> Path | None:
        """The data directory, or ``None`` for a store in memory."""
        return self._storage.path if self._storage is not None else None

    @property
    def durable_revision(self) -> int:
        """The newest revision that is durable (the current one for a store in memory):
        what a watch or a response header may show."""
        return self._storage.durable_revision if self._storage is not None else self.core.revision

    async def _settle(self) -> None:
        """Wait until everything the store has logged is durable (nothing in memory)."""
        if self._storage is not None:
            await self._storage.settle()

    async def _settled(self, fn: Callable[[_A], _R], arg: _A) -> _R:
        """``fn(arg)`` on the core, then wait until what it logged is durable (also when it
        raised: an error reply must not overtake the writes before it)."""
        assert self._storage is not None
        try:
            return fn(arg)
        finally:
            await self._storage.settle()

    async def sync(self) -> int:
        """Wait until everything done so far is durable; returns the revision at the call,
        durable by then (what a server may report, e.g. in Status, without showing anything
        a crash could take back). Immediate for a store in memory."""
        await self.admit("sync")
        revision = self.core.revision
        await self._settle()
        return revision

    def disk_size(self) -> int:
        """Bytes the data directory takes (etcd's Status ``dbSize``); in memory, the size
        the quota counts (:mod:`etcdlite.core.quota`)."""
        if self._storage is not None:
            return self._storage.disk_size()
        return self.quota.size

    def disk_size_in_use(self) -> int:
        """Bytes of the data directory the store needs (``dbSizeInUse``): the live snapshot
        and the log after it (older files are deleted once a new snapshot is in place); in
        memory, what the quota counts as in use."""
        if self._storage is not None:
            return self._storage.disk_size_in_use()
        return self.quota.in_use()

    async def defragment(self) -> None:
        """etcd's Defragment: give the space compaction freed back. Physical compaction
        finishes first; the database's size (what the quota counts) shrinks to what is in
        use; with a data directory, a snapshot of the state replaces the log so far (a store
        does that by itself once its log outgrows the last snapshot)."""
        await self.admit("defragment")
        task = self._compactor
        if task is not None and not task.done():
            await asyncio.shield(task)
        if self._storage is not None:
            await self._storage.compact_files()
        self.quota.defragment()

    async def snapshot(self, path: str | os.PathLike[str]) -> SnapshotInfo:
        """Write a consistent snapshot of the store now to ``path`` (etcdlite's format,
        ending in the sha256 of the rest, as etcd's does); see
        :mod:`etcdlite.storage.snapshot` for restoring it and reporting on it. The store
        serves requests meanwhile; only what is durable is included."""
        await self.admit("snapshot")
        async with self._compaction_lock:
            await self._settle()
            from .storage.records import encode_alarm, encode_auth
            from .storage.snapshot import write_snapshot

            # alarms and auth too: a store restored from it refuses what this one refuses
            extras = [encode_alarm(m, int(a), True) for m, a in self.quota.listed()]
            if self.auth_store.users or self.auth_store.enabled:
                extras.append(encode_auth(self.auth_store.dump()))
            return await write_snapshot(self.core, Path(path), extras=extras)

    # --- KV ---------------------------------------------------------------------------

    async def range_request(self, req: RangeRequest) -> RangeResponse:
        await self.admit("range")
        if self._storage is None:
            return self.core.range(req)
        return await self._settled(self.core.range, req)

    async def get(self, key: Bytesish, *, revision: int = 0) -> KeyValue | None:
        if (  # the put fast path's gate, inlined: a point read is as hot
            self._closed
            or not self._started
            or self.faults.active
            or get_ident() != self._owner._thread_id  # type: ignore[attr-defined]
        ):
            await self.admit("range")
        if type(revision) is not int:
            revision = int64(revision, "revision")  # a float would compare fine, wrongly
        if self._storage is None:
            return self.core.get(key if type(key) is bytes else to_bytes(key), revision)
        try:
            return self.core.get(key if type(key) is bytes else to_bytes(key), revision)
        finally:
            await self._storage.settle()

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
        if (
            self._closed
            or not self._started
            or self.faults.active
            or get_ident() != self._owner._thread_id  # type: ignore[attr-defined]
        ):
            await self.admit("put")
        key = key if type(key) is bytes else to_bytes(key)
        value = value if type(value) is bytes else to_bytes(value, "value")
        if self.quota.enforced and key:  # an empty key is refused first, by the core
            self.quota.check_put(key, value)
        if self._storage is not None:
            try:
                return self.core.put(
                    key,
                    value,
                    lease if type(lease) is int else lease_id(lease),
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                )
            finally:
                await self._storage.settle()
        return self.core.put(
            key,
            value,
            lease if type(lease) is int else lease_id(lease),
            prev_kv,
            ignore_value,
            ignore_lease,
        )

    async def delete_range_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        await self.admit("delete_range")
        if self._storage is None:
            return self.core.delete_range(req)
        return await self._settled(self.core.delete_range, req)

    async def txn_request(self, req: TxnRequest) -> TxnResponse:
        await self.admit("txn")
        if self.quota.enforced:
            self.quota.check_txn(req)
        if self._storage is None:
            return self.core.txn(req)
        return await self._settled(self.core.txn, req)

    async def compact(self, revision: int, *, physical: bool = False) -> CompactResponse:
        await self.admit("compact")
        revision = int64(revision, "revision")
        try:
            self.core.compact(revision)
        except EtcdError:
            await self._settle()
            raise
        if self._storage is not None:
            self._storage.log_compact(revision)
            await self._storage.settle()
        task = self._compactor
        if task is None or task.done():
            task = self._compactor = self._spawn(self._physical_compaction())
        if physical:
            await asyncio.shield(task)
        return CompactResponse(self.core.header())

    async def alarms(self) -> list[tuple[int, AlarmType]]:
        """Active alarms as (member ID, alarm), as etcd's ``Alarm(GET)`` lists them."""
        await self.admit("alarm")
        await self._settle()  # an alarm is shown once it is durable
        return self.quota.listed()

    async def activate(self, alarm: AlarmType, member: int) -> None:
        """etcd's ``Alarm(ACTIVATE)``: raise ``alarm`` for ``member`` (taken as given, as
        etcd does); returns once it is durable."""
        await self.admit("alarm")
        self.quota.activate(member, alarm)
        await self._settle()

    async def disarm(self, alarm: AlarmType = AlarmType.NOSPACE, member: int = 0) -> bool:
        """etcd's ``Alarm(DEACTIVATE)`` (``etcdctl alarm disarm``); ``member`` 0 means this
        store's. Returns whether the alarm was active."""
        await self.admit("alarm")
        active = self.quota.deactivate(member or self.core.member_id, alarm)
        await self._settle()
        return active

    async def _physical_compaction(self) -> None:
        core = self.core
        lock = self._compaction_lock
        while True:
            if lock.locked():
                async with lock:  # a snapshot is reading the core: wait for it
                    pass
            if core.compact_step(self.compaction_batch):
                return
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

    # --- watches --------------------------------------------------------------------

    def open_watch(self, spec: WatchSpec) -> Watch:
        return StoreWatch(self, spec)

    def _register_watcher(self, spec: WatchSpec, now: int | None = None) -> Watcher:
        if spec.empty_range:
            raise WatchCanceledError(WATCH_EMPTY_RANGE)
        wid = self._next_watch_id
        while wid in self._watch_ids:
            wid += 1
        self._next_watch_id = wid + 1
        w = self.register_watcher(spec, wid, now)
        self._watch_ids[wid] = w
        return w

    def register_watcher(self, spec: WatchSpec, watch_id: int, now: int | None = None) -> Watcher:
        """Add a core watcher for ``spec`` (the caller owns the id space and refuses empty
        ranges); used by the Store's own watches and by the server's watch streams. A
        ``start_revision`` of 0 means after ``now`` (default: the durable revision)."""
        self._check()
        start = spec.start_revision
        if start == 0 and self._storage is not None:
            start = (self.durable_revision if now is None else now) + 1
        w = Watcher(
            spec.key,
            spec.range_end,
            prev_kv=spec.prev_kv,
            noput=spec.noput,
            nodelete=spec.nodelete,
            progress_notify=spec.progress_notify,
            watch_id=watch_id,
        )
        self.watches.add(w, start)
        if spec.progress_notify and (self._ticker is None or self._ticker.done()):
            self._ticker = self._spawn(self._progress_ticker())
        return w

    def _unregister_watcher(self, w: Watcher) -> None:
        self.watches.remove(w)
        if self._watch_ids.get(w.id) is w:
            del self._watch_ids[w.id]
        if w.id < self._next_watch_id:
            self._next_watch_id = w.id  # ids are reused like etcd's per-stream counter

    async def _progress_ticker(self) -> None:
        while any(w.progress_notify for w in self.watches.watchers):
            await self.clock.sleep(self.watch_progress_notify_interval)
            self.watches.progress_tick()

    # --- leases -----------------------------------------------------------------------

    async def grant(self, ttl: int, id: int = 0) -> Lease:
        await self.admit("grant")
        if self.quota.enforced:
            self.quota.check_grant()
        try:
            entry = self.core.grant(ttl, int64(id, "lease id"), self.clock.time())
        except EtcdError:
            await self._settle()
            raise
        if self._storage is not None:
            self._storage.log_grant(entry.id, entry.ttl)
            await self._storage.settle()
        if self._expirer is None or self._expirer.done():
            self._expirer = self._spawn(self._expiry_loop())
        else:
            self._expiry_wakeup.set()
        return Lease(self, entry.id, entry.ttl)

    async def _expiry_loop(self) -> None:
        """Revoke leases as they expire: sleep until the soonest expiry (woken early when a
        grant may have moved it), then revoke what is due, at most ``lease_expiry_batch``
        per loop turn, one revision per lease as etcd does."""
        lessor = self.core.lessor
        clock = self.clock
        wakeup = self._expiry_wakeup
        while True:
            wakeup.clear()
            nxt = lessor.next_expiry()
            delay = None if nxt is None else nxt - clock.time()
            if delay is None or delay > 0:
                waiter = asyncio.ensure_future(wakeup.wait())
                sleeper = None if delay is None else asyncio.ensure_future(clock.sleep(delay))
                try:
                    await asyncio.wait(
                        [t for t in (waiter, sleeper) if t is not None],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
                    if sleeper is not None:
                        sleeper.cancel()
            expired = lessor.pop_expired(clock.time(), self.lease_expiry_batch)
            for expired_id in expired:
                self._revoke(expired_id)
            self.last_expiry_batch = len(expired)
            if len(expired) == self.lease_expiry_batch:
                await asyncio.sleep(0)  # more are due: let the loop breathe between batches

    def simulate_leader_change(self) -> None:
        """Fault injection: what a leader change does to leases in etcd (the new leader's
        lessor ``Promote``): every lease gets its full TTL back."""
        self.core.lessor.promote(self.clock.time())
        self._expiry_wakeup.set()

    def _revoke(self, lid: int) -> int:
        if self._storage is None:
            return self.core.revoke(lid)
        with self._storage.revoking(lid):
            return self.core.revoke(lid)

    async def revoke(self, lease: int | _HasId) -> int:
        await self.admit("revoke")
        if self._storage is None:
            return self.core.revoke(lease_id(lease))
        try:
            return self._revoke(lease_id(lease))
        finally:
            await self._storage.settle()

    async def refresh(self, lease: int | _HasId) -> int:
        # Not logged: a recovered lease gets its full TTL back anyway (etcd's rule).
        await self.admit("refresh")
        ttl = self.core.lessor.renew(lease_id(lease), self.clock.time())
        await self._settle()
        return ttl

    async def time_to_live(self, lease: int | _HasId, *, keys: bool = False) -> LeaseTimeToLive:
        await self.admit("time_to_live")
        await self._settle()
        lid = lease_id(lease)
        entry = self.core.lessor.get(lid)
        now = self.clock.time()
        if entry is None or entry.expiry <= now:
            return LeaseTimeToLive(lid, -1, 0, [], self.core.revision)
        # etcd floors the remaining seconds, and on a real server some time has always passed
        # since the grant or renew; "floor of an instant later" keeps that on a frozen clock.
        remaining = math.ceil(entry.expiry - now) - 1
        return LeaseTimeToLive(
            lid, remaining, entry.ttl, sorted(entry.keys) if keys else [], self.core.revision
        )

    async def leases(self) -> list[int]:
        await self.admit("leases")
        await self._settle()
        return [entry.id for entry in self.core.lessor.leases()]


class StoreWatch(Watch):
    """A watch on the embedded store (see :class:`~etcdlite.watch.Watch`)."""

    def __init__(self, store: Store, spec: WatchSpec) -> None:
        super().__init__(spec)
        self._store = store
        self._watcher: Watcher | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._pending: list[WatchResponse] = []

    async def _create(self) -> None:
        self._loop = asyncio.get_running_loop()
        store = self._store
        await store.admit("watch")
        # "From now" means from the newest durable revision: later ones reach the watch
        # when they are durable, and the header never shows one that is not.
        self.revision = store.durable_revision
        w = store._register_watcher(self.spec, self.revision)
        w.wake = self._wake
        self._watcher = w
        self.id = w.id

    def _wake(self) -> None:
        fut = self._wakeup
        if fut is not None:
            self._wakeup = None
            if not fut.done():
                fut.set_result(None)

    async def _next(self) -> WatchResponse | None:
        pending = self._pending
        w = self._watcher
        assert w is not None
        registry = self._store.watches
        header = self._store.core.header
        while not pending:
            if self._done:
                return None
            batches = registry.take(w)
            if batches:
                wid = w.id
                run: list[Event] | None = None
                run_rev = 0
                for rev, events, kind in batches:
                    if kind == EVENTS:
                        # Consecutive revisions travel together (whole revisions only).
                        if run is None:
                            run = list(events)
                        else:
                            run.extend(events)
                        run_rev = rev
                        continue
                    if run is not None:
                        pending.append(WatchResponse(header(run_rev), wid, run))
                        run = None
                    # A requested progress answers with watch_id -1, as etcd's does.
                    pending.append(WatchResponse(header(rev), -1 if kind == REQUESTED else wid, []))
                if run is not None:
                    pending.append(WatchResponse(header(run_rev), wid, run))
                pending.reverse()
                break
            if w.canceled:
                self._store._unregister_watcher(w)
                self._done = True
                if w.compacted:
                    raise WatchCompactedError(w.compact_revision)
                raise WatchCanceledError(w.cancel_reason or WATCH_CANCELED)
            if registry.ready(w):
                await asyncio.sleep(0)  # catching up: one chunk per loop turn
                continue
            fut = self._wakeup = self._loop.create_future()
            await fut
        return pending.pop()

    async def _cancel(self) -> None:
        w = self._watcher
        if w is not None:
            self._store._unregister_watcher(w)
            w.wake = None
        self._wake()

    async def request_progress(self) -> None:
        await self._ensure_created()
        assert self._watcher is not None
        self._store.watches.request_progress(self._watcher)
