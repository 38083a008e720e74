"""What every workload gets: the target, the scale, progress, shared keys and values, and
the measuring helpers built on :mod:`.measure`."""

from __future__ import annotations

import random
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..api import KV
from .measure import Metrics, Progress, RequestStats, drive
from .targets import Target

__all__ = [
    "VALUE_SIZE",
    "WAIT_LIMIT",
    "Ctx",
    "Kept",
    "KeySource",
    "cpu_delta",
    "measure",
    "preload",
]

VALUE_SIZE = 256
#: Bound on any wait for deliveries (seconds).
WAIT_LIMIT = 120.0


class KeySource:
    """The same pseudo-random keys for every workload and target of a run (put and the
    Python floor insert exactly the same ones)."""

    def __init__(self, seed: int = 6) -> None:
        self._rng = random.Random(seed)
        self._keys: list[bytes] = []
        self._seen: set[bytes] = set()

    def take(self, n: int) -> list[bytes]:
        while len(self._keys) < n:
            k = b"%016x" % self._rng.getrandbits(64)
            if k not in self._seen:
                self._seen.add(k)
                self._keys.append(k)
        return self._keys[:n]


class Kept:
    """Directories a workload keeps between its repeats in one run (the restart workload's
    filled data directories: filling etcd with 1M revisions takes minutes), each with what
    the workload noted about it; :meth:`remove` deletes them all when the run ends."""

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[str, dict[str, float]]] = {}

    def find(self, name: str) -> tuple[str, dict[str, float]] | None:
        return self._dirs.get(name)

    def keep(self, name: str, path: str, notes: dict[str, float]) -> None:
        self._dirs[name] = (path, notes)

    def remove(self) -> None:
        for path, _ in self._dirs.values():
            shutil.rmtree(path, ignore_errors=True)
        self._dirs.clear()


@dataclass
class Ctx:
    target: Target
    scale: float
    progress: Progress
    keys: KeySource = field(default_factory=KeySource)
    value: bytes = field(default_factory=lambda: random.Random(256).randbytes(VALUE_SIZE))
    etcd: str | None = None
    #: Where a workload may keep a directory for its next repeat (``None``: it may not).
    kept: Kept | None = None

    @property
    def embedded(self) -> bool:
        return not self.target.wire

    def n(self, embedded: int, wire: int | None = None, minimum: int = 1) -> int:
        """A size: ``embedded`` or ``wire`` (by target) times the scale, at least ``minimum``."""
        base = wire if (self.target.wire and wire is not None) else embedded
        return max(minimum, round(base * self.scale))

    def cpu(self) -> float | None:
        return self.target.cpu_seconds()


def cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def measure(
    ctx: Ctx,
    op: Callable[[int], Awaitable[object]],
    n: int,
    *,
    concurrency: int = 1,
) -> Metrics:
    # Per-op timing costs ~0.1 µs: sample every 16th op in-process, every op on the wire.
    sample = 16 if ctx.embedded else 1
    before = ctx.cpu()
    stats: RequestStats = await drive(
        op, n, concurrency=concurrency, sample_every=sample, progress=ctx.progress
    )
    return stats.metrics(cpu_delta(before, ctx.cpu()))


async def measure_alternating(
    ctx: Ctx, ops: list[Callable[[int], Awaitable[object]]], n: int, *, chunk: int = 1000
) -> list[Metrics]:
    """Like :func:`measure` for each of ``ops`` (``n`` ops each), in turns of ``chunk`` ops:
    a slow spell of the machine falls on all of them alike, so their ratio holds."""
    sample = 16 if ctx.embedded else 1
    totals = [RequestStats(0, 0.0) for _ in ops]
    cpu: list[float | None] = [0.0 for _ in ops]
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        for j, op in enumerate(ops):
            before = ctx.cpu()
            stats = await drive(_from(op, start), count, sample_every=sample)
            spent = cpu_delta(before, ctx.cpu())
            total = totals[j]
            total.ops += stats.ops
            total.elapsed += stats.elapsed
            total.latencies += stats.latencies
            prior = cpu[j]
            cpu[j] = None if prior is None or spent is None else prior + spent
        ctx.progress.tick(start + count, n, "ops (alternating)")
    return [t.metrics(c) for t, c in zip(totals, cpu, strict=True)]


def _from(
    op: Callable[[int], Awaitable[object]], offset: int
) -> Callable[[int], Awaitable[object]]:
    return lambda i: op(offset + i)


async def preload(ctx: Ctx, kv: KV, keys: Iterable[bytes], total: int) -> None:
    value = ctx.value
    for i, k in enumerate(keys):
        await kv.put(k, value)
        if i & 255 == 0:
            ctx.progress.tick(i, total, "preloaded")
