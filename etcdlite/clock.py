"""Clocks: where a :class:`~etcdlite.Store` reads time and sleeps.

Every timer of a Store (lease expiry, keepalive, auto-compaction, watch progress) goes through
its clock, so a test can swap in :class:`ManualClock` and step virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "LoopClock", "ManualClock"]


@runtime_checkable
class Clock(Protocol):
    """Seconds on a monotonic scale, and a sleep on that scale."""

    def time(self) -> float: ...

    async def sleep(self, delay: float) -> None: ...


class LoopClock:
    """The running event loop's clock (the default)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)


class ManualClock:
    """Virtual time that moves only when a test calls :meth:`advance`.

    ``await clock.advance(s)`` steps through every timer due within ``s`` seconds in order,
    setting the time to each deadline and letting the woken tasks run before the next, then
    returns once all work due by the new time has run.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + delay, next(self._seq), fut))
        await fut

    @property
    def pending(self) -> int:
        """Number of sleepers still waiting."""
        return sum(1 for _, _, fut in self._timers if not fut.done())

    def next_deadline(self) -> float | None:
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    def _drop_cancelled(self) -> None:
        timers = self._timers
        while timers and timers[0][2].done():
            heapq.heappop(timers)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing every timer due on the way, in order."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        await _settle()
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > target:
                break
            deadline = self._timers[0][0]
            self._now = max(self._now, deadline)
            while self._timers and self._timers[0][0] <= deadline:
                _, _, fut = heapq.heappop(self._timers)
                if not fut.done():
                    fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 200) -> None:
    """Let every task that is ready run until the loop has nothing left to do right now."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    for _ in range(rounds):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            # One more round: a task woken last may schedule a callback of its own.
            await asyncio.sleep(0)
            if not ready:
                return
