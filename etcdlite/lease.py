"""Lease handles returned by ``grant()`` and ``lease()`` on every backend.

A :class:`Lease` is a granted lease: ``id``, the granted ``ttl`` and methods to refresh,
inspect and revoke it. ``async with kv.lease(ttl) as lease:`` also keeps it alive in the
background (a refresh about every ``ttl / 3``, as etcd's clients do) and revokes it on exit.
If the keepalive finds the lease gone (expired or revoked elsewhere), or no refresh has
succeeded for a whole TTL (a server that hangs or is unreachable), it stops: ``alive`` turns
false and ``await lease.lost()`` returns. Failed refreshes are retried until then; it never
spins, never dies silently and never raises into unrelated code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from .errors import EtcdError, LeaseNotFoundError

if TYPE_CHECKING:
    from .clock import Clock

__all__ = ["Lease", "LeaseKeeper", "LeaseTimeToLive"]

log = logging.getLogger("etcdlite.lease")

#: Smallest pause between keepalive refreshes (seconds), however short the TTL.
MIN_KEEPALIVE_INTERVAL = 0.05


class LeaseTimeToLive:
    """etcd's LeaseTimeToLiveResponse: ``ttl`` is the remaining time in whole seconds
    (floored, -1 when the lease does not exist), ``granted_ttl`` the TTL it was granted."""

    __slots__ = ("granted_ttl", "id", "keys", "revision", "ttl")

    def __init__(
        self, id: int, ttl: int, granted_ttl: int, keys: list[bytes], revision: int = 0
    ) -> None:
        self.id = id
        self.ttl = ttl
        self.granted_ttl = granted_ttl
        self.keys = keys
        self.revision = revision

    def __repr__(self) -> str:
        return (
            f"LeaseTimeToLive(id={self.id}, ttl={self.ttl}, granted_ttl={self.granted_ttl}, "
            f"keys={self.keys!r})"
        )


class _LeaseBackend(Protocol):
    clock: Clock

    async def revoke(self, lease: int) -> int: ...

    async def refresh(self, lease: int) -> int: ...

    async def time_to_live(self, lease: int, *, keys: bool = False) -> LeaseTimeToLive: ...

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class Lease:
    """A granted lease: ``id`` and the granted ``ttl`` in seconds.

    Pass it (or its id) as ``put(..., lease=lease)`` to attach keys; when the lease is
    revoked or expires, its keys are deleted in one revision.
    """

    __slots__ = ("_backend", "_keeper", "_lost", "id", "ttl")

    def __init__(self, backend: _LeaseBackend, id: int, ttl: int) -> None:
        self._backend = backend
        self.id = id
        self.ttl = ttl
        self._keeper: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    async def revoke(self) -> int:
        """Revoke the lease and delete its keys; returns the header revision."""
        self.stop_keepalive()
        rev = await self._backend.revoke(self.id)
        self._mark_lost()
        return rev

    async def refresh(self) -> int:
        """Renew the lease once; returns the TTL (``LeaseNotFoundError`` if it is gone)."""
        ttl = await self._backend.refresh(self.id)
        if ttl <= 0:
            self._mark_lost()
            raise LeaseNotFoundError()
        return ttl

    async def time_to_live(self, keys: bool = False) -> LeaseTimeToLive:
        """Remaining TTL (floored seconds, -1 if gone), granted TTL and, if asked, keys."""
        return await self._backend.time_to_live(self.id, keys=keys)

    # --- keepalive --------------------------------------------------------------------

    def keepalive(self) -> None:
        """Start refreshing the lease in the background (about every ``ttl / 3``)."""
        if self._keeper is None or self._keeper.done():
            self._keeper = self._backend._spawn(self._keep())

    def stop_keepalive(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None

    @property
    def alive(self) -> bool:
        """False once the lease is known to be gone (revoked, or expired under keepalive)."""
        return self._lost is None or not self._lost.done()

    def _lost_future(self) -> asyncio.Future[None]:
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        return self._lost

    def _mark_lost(self) -> None:
        fut = self._lost_future()
        if not fut.done():
            fut.set_result(None)

    async def lost(self) -> None:
        """Return when the lease is known to be gone."""
        await asyncio.shield(self._lost_future())

    async def _keep(self) -> None:
        """Refresh about every ``ttl / 3``. A failed refresh (an etcd error, a timeout, a
        lost connection) is retried, sooner, until the lease's TTL since the last good
        refresh is spent; only then, or when the cluster answers that the lease is gone,
        is it marked lost. The task never ends silently: any other failure is logged and
        marks the lease lost."""
        clock = self._backend.clock
        self._lost_future()
        interval = max(self.ttl / 3, MIN_KEEPALIVE_INTERVAL)
        retry = min(interval, 1.0)
        deadline = clock.time() + self.ttl
        wait = interval
        try:
            while True:
                await clock.sleep(wait)
                try:
                    ttl = await self._backend.refresh(self.id)
                except (EtcdError, TimeoutError, OSError):
                    if clock.time() >= deadline:
                        self._mark_lost()  # the cluster has let it expire by now
                        return
                    wait = retry
                    continue
                if ttl <= 0:
                    self._mark_lost()
                    return
                deadline = clock.time() + ttl
                wait = interval
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("etcdlite: keepalive of lease %x failed", self.id)
            self._mark_lost()

    def __repr__(self) -> str:
        return f"Lease(id={self.id}, ttl={self.ttl})"


class LeaseKeeper:
    """``async with kv.lease(ttl) as lease``: grant, keep alive, revoke on exit."""

    def __init__(
        self, grant: Callable[[int, int], Awaitable[Lease]], ttl: int, lease_id: int
    ) -> None:
        self._grant = grant
        self._ttl = ttl
        self._id = lease_id
        self._lease: Lease | None = None

    async def __aenter__(self) -> Lease:
        lease = await self._grant(self._ttl, self._id)
        lease.keepalive()
        self._lease = lease
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self._lease
        if lease is None:
            return
        lease.stop_keepalive()
        with contextlib.suppress(LeaseNotFoundError):
            await lease.revoke()
