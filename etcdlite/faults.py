"""Fault injection: the failures production etcd users hit, on demand, for tests.

Every :class:`~etcdlite.Store` has a :class:`Faults` at ``store.faults``. Because etcdlite's
server calls the same Store, each fault also reaches clients over the wire, with etcd's
status code and message::

    store.faults.fail_next("put", 2, LeaderChangedError())   # next 2 puts fail
    store.faults.pause()                                     # requests hang ...
    store.faults.resume()                                    # ... until resumed
    store.faults.cancel_watches("etcdserver: mvcc: ...")     # server-side watch cancel

Forced compaction is plain ``store.compact(rev)``; a leader change that gives every lease
its full TTL back is ``store.simulate_leader_change()``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from .errors import WATCH_CANCELED, EtcdError, TimeoutError_

if TYPE_CHECKING:
    from .core.watch import WatchRegistry

__all__ = ["KINDS", "Faults"]

#: Request kinds a fault can target (``"*"`` matches all).
KINDS = frozenset(
    {
        "range",
        "put",
        "delete_range",
        "txn",
        "compact",
        "grant",
        "revoke",
        "refresh",
        "time_to_live",
        "leases",
        "watch",
        "defragment",
        "alarm",
        "sync",
        "snapshot",
    }
)


class Faults:
    """Pending faults of one store; inert (one attribute check per request) when unused."""

    def __init__(self, watches: WatchRegistry) -> None:
        self._watches = watches
        #: True while any fault is armed; the store checks only this on its fast path.
        self.active = False
        self._failures: dict[str, deque[EtcdError]] = {}
        self._running: asyncio.Event | None = None

    def _update(self) -> None:
        self.active = bool(self._failures) or self._running is not None

    def fail_next(
        self,
        kind: str,
        count: int = 1,
        error: EtcdError | type[EtcdError] | None = None,
    ) -> None:
        """Make the next ``count`` requests of ``kind`` fail with ``error`` (default: an
        UNAVAILABLE error like a lost connection). ``kind`` is one of :data:`KINDS` or "*"."""
        if kind != "*" and kind not in KINDS:
            raise ValueError(f"unknown request kind {kind!r}; one of {sorted(KINDS)} or '*'")
        if count < 1:
            raise ValueError("count must be at least 1")
        if error is None:
            error = TimeoutError_()
        elif isinstance(error, type):
            error = error()
        self._failures.setdefault(kind, deque()).extend([error] * count)
        self._update()

    def pause(self) -> None:
        """Requests wait (in order) until :meth:`resume`, like a server that stopped
        answering. Watches already open keep their state."""
        if self._running is None:
            self._running = asyncio.Event()
        self._update()

    def resume(self) -> None:
        if self._running is not None:
            self._running.set()
            self._running = None
        self._update()

    @property
    def paused(self) -> bool:
        return self._running is not None

    def clear(self) -> None:
        """Disarm every fault (and resume)."""
        self._failures.clear()
        self.resume()

    async def before(self, kind: str) -> None:
        """Called by the store before a request of ``kind``: wait while paused, then raise
        the next armed failure for it, if any."""
        while self._running is not None:
            await self._running.wait()
        for key in (kind, "*"):
            queue = self._failures.get(key)
            if queue:
                error = queue.popleft()
                if not queue:
                    del self._failures[key]
                self._update()
                raise error

    def cancel_watches(self, reason: str = WATCH_CANCELED, key: bytes | None = None) -> int:
        """Cancel open watches from the server side with ``cancel_reason`` ``reason``
        (those covering ``key``, or all); returns how many. Embedded iterators raise
        ``WatchCanceledError(reason)``; wire clients get etcd's canceled response."""
        count = 0
        for w in list(self._watches.watchers):
            if key is None or w.matches(key):
                w.cancel_reason = reason
                self._watches.cancel(w)
                count += 1
        return count
