"""Workloads that run on every target (the embedded store and, through etcdlite's
``Client``, any server): requests, leases and watches."""

from __future__ import annotations

import asyncio
import gc
import math
import time

from ..api import KV
from ..ops import Compare, Get, Put
from ..watch import Watch
from .ctx import WAIT_LIMIT, Ctx, cpu_delta, measure, measure_alternating, preload
from .measure import Metrics

__all__ = [
    "get",
    "idle_watchers",
    "lease_grant",
    "lease_keepalive",
    "put_16",
    "put_keys",
    "put_sequential",
    "range_prefix",
    "txn_cas",
    "watch_fanout",
]

# --- request workloads ---------------------------------------------------------------


def put_keys(ctx: Ctx, prefix: bytes) -> list[bytes]:
    return [prefix + k for k in ctx.keys.take(ctx.n(100_000, 5_000, minimum=20))]


async def put_sequential(ctx: Ctx) -> Metrics:
    return await _put(ctx, b"bench/put/", 1)


async def put_16(ctx: Ctx) -> Metrics:
    return await _put(ctx, b"bench/put16/", 16)


async def _put(ctx: Ctx, prefix: bytes, concurrency: int) -> Metrics:
    keys = put_keys(ctx, prefix)
    value = ctx.value
    if ctx.embedded and concurrency == 1:
        return await _embedded_put(ctx, keys)
    async with ctx.target.session() as kv:
        metrics = await _put_run(ctx, kv, keys, concurrency)
    metrics["concurrency"] = concurrency
    metrics["value_bytes"] = len(value)
    return metrics


async def _embedded_put(ctx: Ctx, keys: list[bytes]) -> Metrics:
    """The rate the floor is compared with: the same loop shape as the floor's
    (``for k in keys: await put(k, v)`` against ``for k in keys: d[k] = v``), median of 3
    fresh stores; latencies come from a fourth, sampled run."""
    value = ctx.value
    clock = time.perf_counter
    rates: list[tuple[float, float]] = []
    for _ in range(3):
        async with ctx.target.session() as kv:
            put = kv.put
            before = ctx.cpu()
            start = clock()
            for k in keys:
                await put(k, value)
            elapsed = clock() - start
            cpu = cpu_delta(before, ctx.cpu())
        rates.append((len(keys) / elapsed, (cpu or 0.0) / len(keys) * 1e6))
        gc.collect()
    async with ctx.target.session() as kv:
        metrics = await _put_run(ctx, kv, keys, 1)
    gc.collect()
    rates.sort()
    metrics["ops_per_s"], metrics["cpu_us_per_op"] = rates[1]
    metrics["elapsed_s"] = len(keys) / rates[1][0]
    metrics["runs"] = 3
    metrics["latency_from"] = "a fourth run timing every 16th put"
    metrics["concurrency"] = 1
    metrics["value_bytes"] = len(value)
    return metrics


async def _put_run(ctx: Ctx, kv: KV, keys: list[bytes], concurrency: int) -> Metrics:
    put = kv.put
    value = ctx.value
    return await measure(ctx, lambda i: put(keys[i], value), len(keys), concurrency=concurrency)


async def get(ctx: Ctx) -> Metrics:
    stored = ctx.n(10_000, 1_000, minimum=10)
    n = ctx.n(100_000, 5_000, minimum=20)
    keys = [b"bench/get/" + k for k in ctx.keys.take(stored)]
    order = [keys[(i * 7919) % stored] for i in range(n)]
    async with ctx.target.session() as kv:
        await preload(ctx, kv, keys, stored)
        if await kv.get(order[0]) is None:
            raise RuntimeError("get: preloaded key missing")
        read = kv.get
        metrics = await measure(ctx, lambda i: read(order[i]), n)
    metrics["stored_keys"] = stored
    return metrics


async def range_prefix(ctx: Ctx) -> Metrics:
    size = ctx.n(1000, 1000, minimum=20)
    n = ctx.n(2_000, 500, minimum=5)
    prefix = b"bench/range/"
    async with ctx.target.session() as kv:
        await preload(ctx, kv, (prefix + b"%06d" % i for i in range(size)), size)
        resp = await kv.get_prefix(prefix)
        if len(resp.kvs) != size:
            raise RuntimeError(f"range: {len(resp.kvs)} keys, expected {size}")
        read = kv.get_prefix
        metrics = await measure(ctx, lambda i: read(prefix), n)
    metrics["keys_per_range"] = size
    return metrics


async def txn_cas(ctx: Ctx) -> Metrics:
    n = ctx.n(50_000, 3_000, minimum=20)
    key = b"bench/txn/cas"
    value = ctx.value
    failed = 0
    async with ctx.target.session() as kv:
        rev = (await kv.put(key, value)).header.revision

        async def cas(i: int) -> None:
            nonlocal rev, failed
            resp = await kv.txn([Compare.mod(key) == rev], [Put(key, value)], [Get(key)])
            if resp.succeeded:
                rev = resp.header.revision
            else:
                failed += 1
                current = await kv.get(key)
                rev = current.mod_revision if current is not None else 0

        metrics = await measure(ctx, cas, n)
    metrics["failed"] = failed
    return metrics


async def lease_grant(ctx: Ctx) -> Metrics:
    n = ctx.n(50_000, 3_000, minimum=20)
    ids: list[int] = []
    async with ctx.target.session() as kv:

        async def grant(i: int) -> None:
            ids.append((await kv.grant(600)).id)

        metrics = await measure(ctx, grant, n)
        if ctx.target.wire:
            # Revoke (untimed) so their expiry cannot load the server during later workloads.
            for start in range(0, len(ids), 16):
                await asyncio.gather(*(kv.revoke(i) for i in ids[start : start + 16]))
                ctx.progress.tick(start, len(ids), "revoked")
    return metrics


async def lease_keepalive(ctx: Ctx) -> Metrics:
    n = ctx.n(100_000, 5_000, minimum=20)
    async with ctx.target.session() as kv:
        lease = await kv.grant(600)
        refresh = lease.refresh
        metrics = await measure(ctx, lambda i: refresh(), n)
        await lease.revoke()
    return metrics


# --- watches ---------------------------------------------------------------------------

_FANOUT_PUTS = {1: (100_000, 3_000), 100: (10_000, 300), 1000: (1_000, 50)}


async def watch_fanout(ctx: Ctx, watchers: int) -> Metrics:
    """One writer, ``watchers`` watches on one prefix, each consumed by its own task via
    ``watch.responses()``; events/s = events delivered to all consumers / (first put →
    last delivery)."""
    emb, wire = _FANOUT_PUTS.get(watchers, (1_000, 50))
    puts = ctx.n(emb, wire, minimum=5)
    prefix = b"bench/fan%d/" % watchers
    keys = [prefix + b"%03d" % (i % 100) for i in range(puts)]
    value = ctx.value
    received = [0] * watchers
    finished = [0.0] * watchers
    clock = time.perf_counter

    async def consume(j: int, w: Watch) -> None:
        got = 0
        try:
            async for resp in w.responses():
                got += len(resp.events)
                if got >= puts:
                    break
        finally:
            received[j] = got
            finished[j] = clock()

    async with ctx.target.session() as kv:
        ws: list[Watch] = []
        for j in range(watchers):
            ws.append(await kv.watch(prefix, prefix=True))
            if j & 63 == 0:
                ctx.progress.tick(j, watchers, "watches created")
        tasks = [asyncio.ensure_future(consume(j, w)) for j, w in enumerate(ws)]
        try:
            await asyncio.sleep(0)
            before = ctx.cpu()
            start = clock()
            put = kv.put
            if ctx.embedded:
                for i in range(puts):
                    await put(keys[i], value)
                    if i % 10 == 9:
                        await asyncio.sleep(0)  # the writer yields every 10 puts
            else:
                for i in range(puts):
                    await put(keys[i], value)
            written = clock()
            _done, pending = await asyncio.wait(tasks, timeout=WAIT_LIMIT)
            end = clock() if pending else max(finished)
            cpu = cpu_delta(before, ctx.cpu())
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(received)
    elapsed = end - start
    return {
        "watchers": watchers,
        "puts": puts,
        "events": delivered,
        "complete": delivered == puts * watchers,
        "elapsed_s": elapsed,
        "write_s": written - start,
        "events_per_s": delivered / elapsed if elapsed > 0 else math.nan,
        "cpu_us_per_event": None if cpu is None or not delivered else cpu / delivered * 1e6,
    }


async def idle_watchers(ctx: Ctx) -> Metrics:
    """Sequential puts of new keys with no watcher, then with 10k exact-key and 1k range
    watchers that never match (their keys interleave with the put keys)."""
    n = ctx.n(50_000, 3_000, minimum=20)
    n_exact = ctx.n(10_000, 10_000, minimum=10)
    n_range = ctx.n(1_000, 1_000, minimum=1)
    prefix = b"bench/idle/"
    raw = ctx.keys.take(2 * n + n_exact + n_range)
    base_keys = [prefix + k for k in raw[:n]]
    keys = [prefix + k for k in raw[n : 2 * n]]
    exact = [prefix + k + b"/w" for k in raw[2 * n : 2 * n + n_exact]]
    ranges = [(prefix + k + b"/r", prefix + k + b"/s") for k in raw[2 * n + n_exact :]]
    value = ctx.value
    # Two sessions: on the embedded target each is a fresh store, so both phases insert
    # into an index of the same size (a second phase on a grown store would be charged
    # for the bigger index, not for the watchers). In-process the two stores take turns,
    # 1000 puts at a time, so a slow spell of the machine cannot decide the ratio; on the
    # wire both sessions reach the one server, so the phases run one after the other.
    async with ctx.target.session() as plain, ctx.target.session() as kv:
        if not ctx.embedded:
            baseline = await measure(ctx, lambda i: plain.put(base_keys[i], value), n)
        ws: list[Watch] = []
        for i, k in enumerate(exact):
            ws.append(await kv.watch(k))
            if i & 255 == 0:
                ctx.progress.tick(i, n_exact + n_range, "watches created")
        for start, end in ranges:
            ws.append(await kv.watch(start, end))
        gc.collect()
        put = kv.put
        if ctx.embedded:
            baseline, metrics = await measure_alternating(
                ctx,
                [lambda i: plain.put(base_keys[i], value), lambda i: put(keys[i], value)],
                n,
            )
        else:
            metrics = await measure(ctx, lambda i: put(keys[i], value), n)
    metrics["baseline_ops_per_s"] = baseline["ops_per_s"]
    metrics["baseline_p50_us"] = baseline["p50_us"]
    metrics["baseline_cpu_us_per_op"] = baseline["cpu_us_per_op"]
    b = baseline["ops_per_s"]
    w_rate = metrics["ops_per_s"]
    metrics["slowdown"] = (
        float(b) / float(w_rate)
        if isinstance(b, float) and isinstance(w_rate, float) and w_rate > 0
        else None
    )
    b_cpu = baseline["cpu_us_per_op"]
    w_cpu = metrics["cpu_us_per_op"]
    metrics["cpu_slowdown"] = (
        float(w_cpu) / float(b_cpu)
        if isinstance(b_cpu, float) and isinstance(w_cpu, float) and b_cpu > 0
        else None
    )
    metrics["exact_watchers"] = n_exact
    metrics["range_watchers"] = n_range
    return metrics
