"""Distributed mutex: Go's ``concurrency.Mutex`` algorithm and key layout, with a safer API.

Every contender puts ``<name>/<lease id hex>`` (empty value, attached to its session lease)
if absent; the key with the smallest create revision holds the lock and each waiter waits
for the deletion of the newest key created before its own. ``etcdctl lock``, Go programs
and etcd's v3lock service use the same layout, so they all exclude each other.

:class:`Lock` is the Python API (``async with kv.lock(b"name", ttl=30, timeout=5):``);
:class:`Mutex` is Go's algorithm over a bare lease id, which etcdlite's v3lock service uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from ..errors import EtcdError, LeaseNotFoundError, LockTimeoutError, SessionExpiredError
from ..ops import Compare, Delete, Get, Put
from ..types import (
    Bytesish,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
)
from .cancellation import Deadline, clock_of, run_shielded
from .session import DEFAULT_TTL, BaseSession, SessionHolder
from .wait import wait_deletes

if TYPE_CHECKING:
    from ..kvbase import KVCore

__all__ = ["Lock", "Mutex", "lease_key"]


class _Unset:
    pass


_UNSET: Final = _Unset()


def lease_key(prefix: bytes, lease_id: int) -> bytes:
    """``prefix`` + the lease id in lower-case hex without padding (Go's ``%x``)."""
    return prefix + (b"%x" % lease_id)


def _owner_range(prefix: bytes) -> Get:
    return Get(
        prefix, prefix=True, sort_target=SortTarget.CREATE, sort_order=SortOrder.ASCEND, limit=1
    )


class Mutex:
    """Go's ``concurrency.Mutex`` on ``prefix`` (``name + b"/"``) for one lease id.

    No session management: the caller owns the lease. ``revision`` is the own key's create
    revision (-1 until the first attempt), ``header`` the header Go's ``Header()`` returns.
    """

    def __init__(self, kv: KVCore, prefix: bytes, lease_id: int) -> None:
        self.kv = kv
        self.prefix = prefix
        self.lease_id = lease_id
        self.key = lease_key(prefix, lease_id)
        self.revision = -1
        self.header: ResponseHeader | None = None

    async def _try(self) -> bool:
        """Go's tryAcquire: put the own key if absent; True if it is the oldest."""
        key = self.key
        resp = await self.kv.txn(
            [Compare.create(key) == 0],
            [Put(key, b"", lease=self.lease_id), _owner_range(self.prefix)],
            [Get(key), _owner_range(self.prefix)],
        )
        mine, owners = resp.responses
        assert isinstance(mine, RangeResponse | PutResponse)
        assert isinstance(owners, RangeResponse)
        if resp.succeeded:
            self.revision = resp.header.revision
        else:
            assert isinstance(mine, RangeResponse)
            self.revision = mine.kvs[0].create_revision
        owner = owners.kvs
        if not owner or owner[0].create_revision == self.revision:
            self.header = resp.header
            return True
        return False

    async def lock(self, *, verify: bool = True, retry_compacted: bool = True) -> None:
        """Go's ``Lock``: take a place in the queue and wait for every older key to go.

        ``verify`` (etcd 3.5+): check that the own key still exists after waiting, else
        raise :class:`SessionExpiredError` (3.4 reports success with a key that is gone).
        Any failure, cancellation included, deletes the own key (shielded, after the
        acquire Txn has finished, so a Txn still in flight cannot re-create it).
        """
        attempt = asyncio.ensure_future(self._try())
        try:
            if await asyncio.shield(attempt):
                return
            header = await wait_deletes(
                self.kv, self.prefix, self.revision - 1, retry_compacted=retry_compacted
            )
            if verify:
                resp = await self.kv.range(self.key)
                if not resp.kvs or resp.kvs[0].create_revision != self.revision:
                    raise SessionExpiredError()
                header = resp.header
            self.header = header
        except BaseException:
            await run_shielded(self._cleanup(attempt))
            raise

    async def try_lock(self) -> bool:
        """Go 3.5's ``TryLock``: one attempt; if another holds the lock, remove the own key
        again and return False."""
        attempt = asyncio.ensure_future(self._try())
        try:
            if await asyncio.shield(attempt):
                return True
        except BaseException:
            await run_shielded(self._cleanup(attempt))
            raise
        await run_shielded(self._cleanup(attempt))
        return False

    async def _cleanup(self, attempt: asyncio.Future[Any]) -> None:
        await asyncio.wait([attempt])
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the caller reports its own error
        with contextlib.suppress(EtcdError):
            await self.kv.delete(self.key)
        self.revision = -1

    async def unlock(self) -> None:
        """Go's ``Unlock``: delete the own key, unconditionally."""
        await self.kv.delete(self.key)
        self.revision = -1

    def is_owner(self) -> Compare:
        """A Txn compare that holds while this mutex still owns its key (a fence)."""
        return Compare.create(self.key) == self.revision


class Lock(SessionHolder):
    """A distributed lock on ``name``, interoperable with ``etcdctl lock`` and Go's Mutex.

    * ``ttl``: seconds the lock survives its holder's death (the session lease TTL);
      default 60 as in Go. Ignored when ``session`` is given.
    * ``timeout``: seconds to wait for the lock; ``None`` waits forever. When it passes,
      :class:`LockTimeoutError` is raised and nothing is held: the lock is never entered
      unheld.
    * ``session``: hold the lock through an existing :class:`Session` (kept open after
      release); by default every acquisition opens its own session and revokes it on
      release or failure, so no lease is leaked.

    ::

        async with kv.lock(b"jobs", ttl=30, timeout=5) as lock:
            await kv.txn([lock.is_owner()], [Put(b"jobs/state", b"mine")])

    Acquiring is cancellation-safe: a waiter that is cancelled or times out removes its key
    (shielded) before the exception leaves ``acquire``. After waiting, the own key is read
    back; if the session lease expired meanwhile :class:`SessionExpiredError` is raised.
    """

    def __init__(
        self,
        kv: KVCore,
        name: Bytesish,
        *,
        ttl: int = DEFAULT_TTL,
        timeout: float | None = None,
        session: BaseSession | None = None,
    ) -> None:
        super().__init__(kv, name, ttl, session)
        self.timeout = timeout
        self._mutex: Mutex | None = None

    # --- state ------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True between a successful acquire and release (as far as this process knows:
        watch ``session.lost()`` to learn that the lease ended)."""
        return self._mutex is not None

    @property
    def key(self) -> bytes | None:
        """The own key ``<name>/<lease hex>`` while held."""
        return self._mutex.key if self._mutex is not None else None

    @property
    def revision(self) -> int:
        """Create revision of the own key while held (0 otherwise): the fencing token."""
        return self._mutex.revision if self._mutex is not None else 0

    @property
    def header(self) -> ResponseHeader | None:
        """Header of the response that confirmed ownership."""
        return self._mutex.header if self._mutex is not None else None

    def is_owner(self) -> Compare:
        """A compare that holds while this lock is still held, to guard writes in a txn."""
        if self._mutex is None:
            raise RuntimeError("the lock is not held")
        return self._mutex.is_owner()

    # --- acquire / release ------------------------------------------------------------

    async def acquire(self, timeout: float | _Unset | None = _UNSET) -> Lock:
        """Wait for the lock (at most ``timeout`` seconds, default: the Lock's ``timeout``;
        0 makes one attempt without waiting).

        Raises :class:`LockTimeoutError` (a ``TimeoutError``) on timeout and
        :class:`SessionExpiredError` if the session ended while waiting; in every failure
        nothing is held and the waiter key is gone.
        """
        t = self.timeout if isinstance(timeout, _Unset) else timeout
        if t is not None and t <= 0:
            # no waiting at all: one attempt
            if not await self._enter(wait=False, timeout=None):
                raise LockTimeoutError(f"lock {self.name!r} is held by another session")
            return self
        await self._enter(wait=True, timeout=t)
        return self

    async def try_acquire(self) -> bool:
        """One attempt without waiting: True if the lock is now held."""
        return await self._enter(wait=False, timeout=None)

    async def _enter(self, *, wait: bool, timeout: float | None) -> bool:
        if self._mutex is not None or self._busy:
            raise RuntimeError("this Lock is already held or being acquired")
        self._busy = True
        deadline = Deadline(clock_of(self._kv), timeout)
        try:
            async with deadline:
                return await self._acquire(wait)
        except TimeoutError:
            if deadline.expired():
                raise LockTimeoutError(
                    f"lock {self.name!r} not acquired within {timeout} s"
                ) from None
            raise
        finally:
            self._busy = False

    async def _acquire(self, wait: bool) -> bool:
        session, own = self._new_session()
        held: asyncio.Lock | None = None  # the session's local lock, once this task has it
        try:
            await session.open()
            if not session.alive:
                raise SessionExpiredError()
            local = session._local_lock(self.prefix)
            if not wait and local.locked():
                await self._abandon(session, own, None)
                return False
            await local.acquire()
            held = local
            mutex = Mutex(self._kv, self.prefix, session.id)
            try:
                if wait:
                    await mutex.lock(verify=True)
                elif not await mutex.try_lock():
                    held = None
                    await self._abandon(session, own, local)
                    return False
            except LeaseNotFoundError as e:
                # the session lease ended before the own key could be put
                raise SessionExpiredError() from e
        except BaseException:
            await self._abandon(session, own, held)
            raise
        self._mutex = mutex
        self._local = held
        return True

    async def release(self) -> bool:
        """Release the lock: delete the own key if it is still ours (a Txn guarded by its
        create revision) and, for a Lock's own session, revoke the lease. Returns whether
        the key was still held. Shielded: a cancelled caller still releases."""
        mutex = self._mutex
        if mutex is None:
            return False
        self._mutex = None
        return await run_shielded(self._release(mutex))

    async def _release(self, mutex: Mutex) -> bool:
        local, self._local = self._local, None
        try:
            resp = await self._kv.txn([mutex.is_owner()], [Delete(mutex.key)])
            return resp.succeeded
        finally:
            await self._let_go(local)

    async def __aenter__(self) -> Lock:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"Lock(name={self.name!r}, key={self.key!r}, revision={self.revision})"
