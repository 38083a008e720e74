"""``BaseSession``: a lease kept alive in the background, the liveness of locks and elections.

Go's ``concurrency.Session``: a lease granted with the session TTL (60 s by default) and
renewed about every TTL/3 until the session is closed (revoked) or orphaned (left to
expire). Keys a lock or an election puts are attached to it, so a process that dies
releases them after at most the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from ..errors import LeaseNotFoundError, SessionExpiredError
from ..lease import Lease
from ..types import Bytesish, to_bytes
from .cancellation import run_shielded, spawn

if TYPE_CHECKING:
    from ..kvbase import KVCore

__all__ = ["DEFAULT_TTL", "BaseSession", "SessionHolder"]

#: Go's default session TTL (seconds).
DEFAULT_TTL = 60


class BaseSession:
    """A lease kept alive until :meth:`close` (revoke) or :meth:`orphan` (stop renewing).

    ``await kv.session(ttl)`` opens one; ``async with kv.session(ttl) as s:`` also closes it.
    ``lease`` reuses an existing lease (a :class:`~etcdlite.Lease` or its id) instead of
    granting one. A ``ttl`` ≤ 0 means the default (60 s), as in Go.

    Locks and elections sharing a session on the same name share one key (Go's layout is
    ``<name>/<lease id hex>``), so etcdlite serializes them within the process: a second
    holder on the same session waits for the first to release.
    """

    def __init__(
        self, kv: KVCore, ttl: int = DEFAULT_TTL, *, lease: Lease | int | None = None
    ) -> None:
        self._kv = kv
        self.ttl = ttl if ttl > 0 else DEFAULT_TTL
        self._given = lease
        self._lease: Lease | None = None
        self._opening: asyncio.Task[Self] | None = None
        self._closed = False
        self._local: dict[bytes, asyncio.Lock] = {}

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> Self:
        """Grant (or adopt) the lease and start renewing it; idempotent."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._opening)

    async def _open(self) -> Self:
        given = self._given
        if isinstance(given, Lease):
            lease = given
            self.ttl = lease.ttl
        elif given is not None:
            ttl = await self._kv.time_to_live(given)
            if ttl.ttl < 0:
                raise LeaseNotFoundError()
            self.ttl = ttl.granted_ttl
            lease = Lease(cast(Any, self._kv), given, ttl.granted_ttl)
        else:
            lease = await _grant(self._kv, self.ttl)
        self._lease = lease
        if self._closed:
            # closed while the grant was in flight
            await self._revoke(lease)
            raise SessionExpiredError("session closed while opening")
        lease.keepalive()
        return self

    def __await__(self) -> Generator[Any, None, Self]:
        return self.open().__await__()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def orphan(self) -> None:
        """Stop renewing the lease; it (and every key on it) expires after the TTL."""
        if self._lease is not None:
            self._lease.stop_keepalive()

    async def close(self) -> None:
        """Stop renewing and revoke the lease, deleting its keys (shielded: a cancelled
        caller does not leave the lease behind)."""
        self._closed = True
        lease = self._lease
        if lease is None:
            opening = self._opening
            if opening is None or opening.done():
                return
            # the grant is in flight: revoke whatever it returns
            await run_shielded(_revoke_when_granted(opening))
            return
        lease.stop_keepalive()
        await run_shielded(self._revoke(lease))

    @staticmethod
    async def _revoke(lease: Lease) -> None:
        with contextlib.suppress(LeaseNotFoundError):
            await lease.revoke()

    # --- state ------------------------------------------------------------------------

    @property
    def lease(self) -> Lease:
        """The session's :class:`~etcdlite.Lease` (the session must be open)."""
        if self._lease is None:
            raise RuntimeError("the session is not open (await it first)")
        return self._lease

    @property
    def id(self) -> int:
        """The lease id: keys are ``<name>/<id in lower-case hex>``."""
        return self.lease.id

    lease_id = id

    @property
    def alive(self) -> bool:
        """False once the session is closed or its lease is known to be gone."""
        return not self._closed and self._lease is not None and self._lease.alive

    @property
    def closed(self) -> bool:
        return self._closed

    async def lost(self) -> None:
        """Return when the lease is known to be gone (expired, revoked or closed)."""
        await self.lease.lost()

    def _local_lock(self, prefix: bytes) -> asyncio.Lock:
        lock = self._local.get(prefix)
        if lock is None:
            lock = self._local[prefix] = asyncio.Lock()
        return lock

    def __repr__(self) -> str:
        lid = self._lease.id if self._lease is not None else None
        return f"BaseSession(lease={lid}, ttl={self.ttl}, alive={self.alive})"


async def _grant(kv: KVCore, ttl: int) -> Lease:
    """Grant a lease; if the caller is cancelled meanwhile, revoke it once granted."""
    task = asyncio.ensure_future(kv.grant(ttl))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        spawn(_revoke_when_granted(task))
        raise


async def _revoke_when_granted(task: asyncio.Future[Any]) -> None:
    await asyncio.wait([task])
    if task.cancelled() or task.exception() is not None:
        return
    result = task.result()
    lease = result.lease if isinstance(result, BaseSession) else result
    if isinstance(lease, Lease):
        lease.stop_keepalive()
        with contextlib.suppress(LeaseNotFoundError):
            await lease.revoke()


class SessionHolder:
    """What :class:`~etcdlite.recipes.Lock` and :class:`~etcdlite.recipes.Election` share:
    a name and its key prefix, the session (the one given, or one of their own per
    acquisition, closed with it) and, while held, that session's in-process lock for the
    name (two holders on one session would share one key)."""

    def __init__(self, kv: KVCore, name: Bytesish, ttl: int, session: BaseSession | None) -> None:
        self._kv = kv
        self.name = to_bytes(name, "name")
        self.prefix = self.name + b"/"
        self.ttl = ttl
        self._given_session = session
        #: The session holding (or acquiring) the lock or leadership.
        self.session: BaseSession | None = session
        self._local: asyncio.Lock | None = None
        self._busy = False

    def _new_session(self) -> tuple[BaseSession, bool]:
        """The session to acquire with, and whether it is this object's own."""
        session = self._given_session or BaseSession(self._kv, self.ttl)
        self.session = session
        return session, self._given_session is None

    async def _abandon(self, session: BaseSession, own: bool, held: asyncio.Lock | None) -> None:
        """Undo a failed acquisition: the local lock, and the session if it is ours."""
        if held is not None:
            held.release()
        if own:
            await session.close()
            self.session = None

    async def _let_go(self, local: asyncio.Lock | None) -> None:
        """After a release: the local lock, and the session if it is this object's own."""
        if local is not None:
            local.release()
        session = self.session
        if session is not None and self._given_session is None:
            await session.close()
            self.session = None
