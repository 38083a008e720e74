"""Measuring tools: request loops with latency samples, CPU time of a process from /proc,
event-loop stall detection, and a rate-limited progress line on stderr."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TextIO

__all__ = [
    "LoopLag",
    "Metrics",
    "Progress",
    "RequestStats",
    "drive",
    "percentile",
    "proc_cpu_seconds",
]

#: A workload's results: a flat dict of numbers (and a few flags).
Metrics = dict[str, float | int | bool | str | None]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads, live or exited), from
    ``/proc/<pid>/stat`` (resolution: one clock tick, usually 10 ms)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def percentile(sorted_samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q ≤ 1) of already sorted samples."""
    if not sorted_samples:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


class Progress:
    """Progress lines on stderr: one per step, and at most one every ``interval`` seconds
    while a long step runs."""

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 2.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self._label = ""
        self._step_start = time.perf_counter()
        self._last = 0.0

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def step(self, label: str) -> None:
        self._label = label
        self._step_start = self._last = time.perf_counter()
        self.say(label)

    def tick(self, done: int, total: int, what: str = "") -> None:
        """Report ``done`` of ``total`` if the last report is old enough (cheap otherwise)."""
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        elapsed = now - self._step_start
        extra = f" {what}" if what else ""
        self.say(f"    … {done}/{total}{extra} ({elapsed:.1f} s)")


@dataclass
class RequestStats:
    """What :func:`drive` measured: ops, wall seconds, sampled latencies (seconds)."""

    ops: int
    elapsed: float
    latencies: list[float] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed if self.elapsed > 0 else math.nan

    def metrics(self, cpu_seconds: float | None) -> Metrics:
        lat = sorted(self.latencies)
        return {
            "ops": self.ops,
            "elapsed_s": self.elapsed,
            "ops_per_s": self.ops_per_s,
            "p50_us": percentile(lat, 0.50) * 1e6,
            "p99_us": percentile(lat, 0.99) * 1e6,
            "cpu_us_per_op": None if cpu_seconds is None else cpu_seconds / self.ops * 1e6,
        }


async def drive(
    op: Callable[[int], Awaitable[object]],
    n: int,
    *,
    concurrency: int = 1,
    sample_every: int = 1,
    progress: Progress | None = None,
) -> RequestStats:
    """Run ``op(0) … op(n-1)`` with ``concurrency`` in flight; time every ``sample_every``-th
    op. ``op`` should return the awaitable directly (e.g. ``lambda i: kv.put(keys[i], v)``)
    so the loop adds no coroutine of its own."""
    if n <= 0:
        return RequestStats(0, 0.0)
    latencies: list[float] = []
    clock = time.perf_counter
    total = n

    async def worker(indices: range) -> None:
        for i in indices:
            if i % sample_every == 0:
                t = clock()
                await op(i)
                latencies.append(clock() - t)
                if progress is not None and i & 1023 == 0:
                    progress.tick(i, total, "ops")
            else:
                await op(i)

    start = clock()
    if concurrency <= 1:
        await worker(range(n))
    else:
        # Worker k takes ops k, k+c, k+2c, …: every op index is done exactly once.
        await asyncio.gather(*(worker(range(k, n, concurrency)) for k in range(concurrency)))
    return RequestStats(n, clock() - start, latencies)


class LoopLag:
    """``async with LoopLag() as lag:``: the longest time the event loop went without
    running this ticker, which yields on every loop turn: ``lag.max_stall`` in wall seconds,
    and ``lag.max_stall_cpu`` in this thread's CPU seconds (the work done in one loop turn,
    not counting time the OS gave to other processes: robust on a loaded machine)."""

    def __init__(self) -> None:
        self.max_stall = 0.0
        self.max_stall_cpu = 0.0
        self.turns = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock = time.perf_counter
        cpu = time.thread_time
        last = clock()
        last_cpu = cpu()
        while True:
            await asyncio.sleep(0)
            now = clock()
            now_cpu = cpu()
            if now - last > self.max_stall:
                self.max_stall = now - last
            if now_cpu - last_cpu > self.max_stall_cpu:
                self.max_stall_cpu = now_cpu - last_cpu
            self.turns += 1
            last = now
            last_cpu = now_cpu

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
