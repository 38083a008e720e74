"""Timeouts on a backend's clock and work that must finish even if its caller is cancelled.

* :class:`Deadline` is ``asyncio.timeout`` measured on a :class:`~etcdlite.Clock`, so a
  :class:`~etcdlite.ManualClock` drives lock and campaign timeouts in tests.
* :func:`run_shielded` runs cleanup (deleting a waiter key, revoking a lease) as a task of
  its own: a cancelled caller stops waiting for it, the cleanup still completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from ..clock import Clock, LoopClock

__all__ = ["Deadline", "clock_of", "run_shielded", "settle_background"]

T = TypeVar("T")

log = logging.getLogger("etcdlite.recipes")

# Strong references to cleanups still running after their caller went away.
_background: set[asyncio.Task[Any]] = set()


def clock_of(kv: object) -> Clock:
    """The clock a backend's timers run on (``Store.clock``; the loop's for a Client)."""
    clock = getattr(kv, "clock", None)
    return clock if isinstance(clock, Clock) else LoopClock()


def _retrieve(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("background cleanup failed", exc_info=task.exception())


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task kept alive until done; its failure is logged, never raised into anyone."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_retrieve)
    return task


async def run_shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` in its own task: cancelling the caller does not cancel the work."""
    task = spawn(coro)
    return await asyncio.shield(task)


async def settle_background() -> None:
    """Wait for every cleanup still running (tests use it before checking leftovers)."""
    while _background:
        await asyncio.wait(list(_background))


class Deadline:
    """``async with Deadline(clock, seconds):`` — ``asyncio.timeout`` on ``clock``.

    ``None`` never expires. On expiry the body is cancelled (so its cancellation cleanup
    runs) and ``TimeoutError`` leaves the block; :meth:`expired` tells it apart from a
    ``TimeoutError`` raised by the body itself.
    """

    def __init__(self, clock: Clock, delay: float | None) -> None:
        self._clock = clock
        self._delay = delay
        self._cm = asyncio.timeout(None)
        self._timer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Deadline:
        await self._cm.__aenter__()
        if self._delay is not None:
            self._timer = asyncio.ensure_future(self._fire(self._delay))
        return self

    async def _fire(self, delay: float) -> None:
        await self._clock.sleep(max(delay, 0))
        self._cm.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._cm.__aexit__(exc_type, exc, tb)

    def expired(self) -> bool:
        return self._cm.expired()
