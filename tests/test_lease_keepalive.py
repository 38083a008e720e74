"""A lease's background keepalive under failures: it retries through timeouts, etcd errors
and lost connections while the TTL lasts, marks the lease lost only when the TTL is spent
(or the cluster says it is gone), and never dies silently."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from etcdlite import Clock, Lease, LeaseTimeToLive, ManualClock, UnavailableError


class FlakyBackend:
    """What a Lease needs of a backend, with refresh answers scripted per call."""

    def __init__(self, clock: ManualClock, answers: list[object]) -> None:
        self.clock: Clock = clock
        self.answers = answers
        self.calls = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def refresh(self, lease: int) -> int:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else self.answers_after
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, int)
        return answer

    answers_after: object = 10

    async def revoke(self, lease: int) -> int:
        return 0

    async def time_to_live(self, lease: int, *, keys: bool = False) -> LeaseTimeToLive:
        return LeaseTimeToLive(lease, 10, 10, [])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        return task


async def test_failed_refreshes_are_retried_while_the_ttl_lasts() -> None:
    clock = ManualClock()
    failures: list[object] = [TimeoutError(), UnavailableError("down"), OSError("reset")]
    backend = FlakyBackend(clock, failures)
    lease = Lease(backend, 1, 9)  # refresh every 3 s; retry every 1 s after a failure
    lease.keepalive()
    await clock.advance(3)  # first refresh: a timeout
    await clock.advance(1)  # retry: etcd unavailable
    await clock.advance(1)  # retry: connection reset
    assert lease.alive and backend.calls == 3
    await clock.advance(1)  # retry succeeds: TTL renewed
    assert lease.alive and backend.calls == 4
    await clock.advance(30)  # and it goes on refreshing
    assert lease.alive and backend.calls > 10
    lease.stop_keepalive()


async def test_the_lease_is_lost_once_no_refresh_succeeded_for_a_whole_ttl() -> None:
    clock = ManualClock()
    backend = FlakyBackend(clock, [])
    backend.answers_after = TimeoutError()
    lease = Lease(backend, 1, 6)
    lease.keepalive()
    await clock.advance(5)
    assert lease.alive  # still within the TTL: retrying
    await clock.advance(2)
    assert not lease.alive
    async with asyncio.timeout(1):
        await lease.lost()


async def test_an_unexpected_failure_marks_the_lease_lost_instead_of_dying_silently() -> None:
    clock = ManualClock()
    backend = FlakyBackend(clock, [RuntimeError("bug")])
    lease = Lease(backend, 1, 6)
    lease.keepalive()
    await clock.advance(2)
    assert not lease.alive
    (task,) = backend.tasks
    assert task.done() and task.exception() is None  # logged, not left to die


async def test_the_cluster_saying_gone_marks_it_lost_at_once() -> None:
    clock = ManualClock()
    backend = FlakyBackend(clock, [0])
    lease = Lease(backend, 1, 30)
    lease.keepalive()
    await clock.advance(10)
    assert not lease.alive
