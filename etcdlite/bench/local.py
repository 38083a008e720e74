"""In-process workloads (event-loop stalls, memory, the Python floor) and start-up."""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import struct
import time
import tracemalloc

from sortedcontainers import SortedDict

from ..clock import ManualClock
from ..store import Store
from .ctx import VALUE_SIZE, WAIT_LIMIT, Ctx
from .kv import put_keys
from .measure import LoopLag, Metrics
from .targets import start_child

__all__ = ["compaction", "floor", "lease_expiry", "memory", "range_count", "startup"]

# --- in-process only: stalls and memory ------------------------------------------------


async def lease_expiry(ctx: Ctx) -> Metrics:
    """``n`` leases with one key each expire at the same instant (a ManualClock jump); the
    store revokes them in batches while a ticker measures the longest event-loop stall."""
    n = ctx.n(100_000, minimum=10)
    clock = ManualClock()
    value = ctx.value
    async with Store(clock=clock) as store:
        for i in range(n):
            lease = await store.grant(10)
            await store.put(b"bench/expiry/%08d" % i, value, lease=lease.id)
            if i & 1023 == 0:
                ctx.progress.tick(i, n, "leases granted")
        rev0 = store.revision
        gc.collect()
        async with LoopLag() as lag:
            start = time.perf_counter()
            await clock.advance(11)
            deadline = start + WAIT_LIMIT
            while len(store.core.lessor) and time.perf_counter() < deadline:
                await asyncio.sleep(0)
            elapsed = time.perf_counter() - start
        left = len(store.core.lessor)
        keys_left = (await store.range(b"bench/expiry/", prefix=True, count_only=True)).count
        revisions = store.revision - rev0
        batch = store.lease_expiry_batch
    return {
        "leases": n,
        "expired": n - left,
        "keys_left": keys_left,
        "revisions": revisions,
        "expiry_s": elapsed,
        "leases_per_s": (n - left) / elapsed if elapsed > 0 else math.nan,
        "max_stall_ms": lag.max_stall * 1e3,
        "max_stall_cpu_ms": lag.max_stall_cpu * 1e3,
        "loop_turns": lag.turns,
        "batch": batch,
    }


async def compaction(ctx: Ctx) -> Metrics:
    """Compact ``revs`` revisions (round-robin over revs/10 keys, so each compaction step
    touches as many distinct keys as it can) while a ticker measures the longest stall."""
    revs = ctx.n(1_000_000, minimum=100)
    nkeys = max(1, revs // 10)
    keys = [b"bench/compact/%07d" % i for i in range(nkeys)]
    value = ctx.value
    async with Store() as store:
        core_put = store.core.put  # setup only: the synchronous core is quicker to fill
        for i in range(revs):
            core_put(keys[i % nkeys], value)
            if i & 16383 == 0:
                ctx.progress.tick(i, revs, "revisions written")
        target = store.revision
        gc.collect()
        async with LoopLag() as lag:
            start = time.perf_counter()
            await store.compact(target, physical=True)
            elapsed = time.perf_counter() - start
        left = len(store.core.changes)
        batch = store.compaction_batch
    return {
        "revisions": revs,
        "keys": nkeys,
        "log_left": left,
        "compact_s": elapsed,
        "revisions_per_s": revs / elapsed if elapsed > 0 else math.nan,
        "max_stall_ms": lag.max_stall * 1e3,
        "max_stall_cpu_ms": lag.max_stall_cpu * 1e3,
        "loop_turns": lag.turns,
        "batch": batch,
    }


async def range_count(ctx: Ctx) -> Metrics:
    """``count_only`` and ``limit=10`` ranges over a prefix of ``nkeys`` live keys (1M at
    scale 1), then the same after deleting the first tenth of them (a ``limit=10`` range
    must then get past 100k tombstones). Each read is timed on its own: medians in ms."""
    nkeys = ctx.n(1_000_000, minimum=100)
    reads = ctx.n(100, minimum=5)
    prefix = b"bench/count/"
    value = ctx.value
    clock = time.perf_counter
    async with Store() as store:
        core_put = store.core.put  # setup only: the synchronous core is quicker to fill
        for i in range(nkeys):
            core_put(b"%s%08d" % (prefix, i), value)
            if i & 16383 == 0:
                ctx.progress.tick(i, nkeys, "keys written")
        gc.collect()

        async def timed(check: int, **options: int | bool) -> float:
            times = []
            for _ in range(reads):
                start = clock()
                resp = await store.range(prefix, prefix=True, **options)  # type: ignore[arg-type]
                times.append(clock() - start)
                if resp.count != check or (options.get("limit") and len(resp.kvs) != 10):
                    raise RuntimeError(f"range-count: count {resp.count}, expected {check}")
            return statistics.median(times) * 1e3

        count_ms = await timed(nkeys, count_only=True)
        limit_ms = await timed(nkeys, limit=10)
        dead = nkeys // 10
        await store.delete_range(prefix + b"%08d" % 0, prefix + b"%08d" % dead)
        gc.collect()
        tomb_count_ms = await timed(nkeys - dead, count_only=True)
        tomb_limit_ms = await timed(nkeys - dead, limit=10)
    return {
        "keys": nkeys,
        "reads": reads,
        "count_only_ms": count_ms,
        "limit10_ms": limit_ms,
        "tombstones": dead,
        "count_only_tomb_ms": tomb_count_ms,
        "limit10_tomb_ms": tomb_limit_ms,
    }


async def memory(ctx: Ctx) -> Metrics:
    """Bytes per stored key revision (tracemalloc): ``nkeys`` keys × 5 revisions, each put
    with its own key and 256 B value objects, as a server would have decoded them."""
    nkeys = ctx.n(20_000, minimum=10)
    per_key = 5
    head = ctx.value[: VALUE_SIZE - 8]
    pack = struct.Struct(">Q").pack
    key_len = len(b"bench/mem/%08d" % 0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with Store() as store:
            for r in range(per_key):
                for j in range(nkeys):
                    await store.put(b"bench/mem/%08d" % j, head + pack(r * nkeys + j))
                ctx.progress.tick(r, per_key, "rounds")
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            assert store.revision == 1 + nkeys * per_key
    finally:
        tracemalloc.stop()
    count = nkeys * per_key
    per_rev = (after - before) / count
    payload = key_len + VALUE_SIZE
    return {
        "keys": nkeys,
        "revisions": count,
        "bytes_per_revision": per_rev,
        "payload_bytes": payload,
        "overhead_bytes_per_revision": per_rev - payload,
    }


# --- start-up ----------------------------------------------------------------------------


async def startup(ctx: Ctx) -> Metrics:
    """Embedded: ``Store()`` to the first answered put. Children: spawn to the first answered
    request (``etcdlite serve`` = a fresh Python interpreter importing etcdlite)."""
    times: list[float] = []
    if ctx.embedded:
        for _ in range(ctx.n(20, minimum=3)):
            start = time.perf_counter()
            async with Store() as store:
                await store.put(b"bench/startup", b"v")
                times.append(time.perf_counter() - start)
    else:
        kind = ctx.target.name
        if kind not in ("serve", "etcd"):
            raise ValueError(f"startup needs a target the benchmark starts, not {kind}")
        for i in range(ctx.n(3, minimum=1)):
            ctx.progress.tick(i, 3, "starts")
            gc.collect()
            async with start_child(kind, ctx.etcd, die_with_parent=False) as (_child, ready):
                times.append(ready)
    return {
        "reps": len(times),
        "ready_ms": statistics.median(times) * 1e3,
        "ready_min_ms": min(times) * 1e3,
        "ready_max_ms": max(times) * 1e3,
    }


# --- the Python floor ------------------------------------------------------------------


async def floor(ctx: Ctx) -> Metrics:
    """Bare ``dict`` set and ``SortedDict`` insert of exactly the keys ``put`` writes
    (median of 3 each): what the embedded put rate is judged against."""
    keys = put_keys(ctx, b"bench/put/")
    value = ctx.value
    clock = time.perf_counter
    cpu = time.process_time
    dict_rates: list[float] = []
    sd_rates: list[float] = []
    dict_cpu: list[float] = []
    sd_cpu: list[float] = []
    for _ in range(3):
        d: dict[bytes, bytes] = {}
        start, start_cpu = clock(), cpu()
        for k in keys:
            d[k] = value
        dict_rates.append(len(keys) / (clock() - start))
        dict_cpu.append((cpu() - start_cpu) / len(keys))
        sd = SortedDict()
        start, start_cpu = clock(), cpu()
        for k in keys:
            sd[k] = value
        sd_rates.append(len(keys) / (clock() - start))
        sd_cpu.append((cpu() - start_cpu) / len(keys))
        del d, sd
        gc.collect()
        await asyncio.sleep(0)
    return {
        "keys": len(keys),
        "dict_ops_per_s": statistics.median(dict_rates),
        "sorteddict_ops_per_s": statistics.median(sd_rates),
        "dict_cpu_us_per_op": statistics.median(dict_cpu) * 1e6,
        "sorteddict_cpu_us_per_op": statistics.median(sd_cpu) * 1e6,
    }
