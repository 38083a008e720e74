"""One client, one workload, in a process of its own: the child of ``etcdlite bench --clients``.

::

    python -m etcdlite.bench.clientrun CLIENT WORKLOAD --endpoint HOST:PORT --prefix P [--scale S]
    python -m etcdlite.bench.clientrun writer --endpoint HOST:PORT --prefix P --txns N

It imports only the client it drives (aetcd and python-etcd3 both register ``kv.proto`` and
friends in protobuf's default pool, so they cannot share a process; python-etcd3 also needs
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, which the parent sets for its child only),
runs the workload against the etcd at ``--endpoint`` under the key prefix ``--prefix`` and
prints one JSON object of metrics on stdout. Exit code 3 with a message on stderr: the
client is not installed.

What each workload does with each client (``etcdlite``: :class:`etcdlite.Client`; ``aetcd``:
``aetcd.Client``, grpc.aio; ``etcd3``: python-etcd3's ``etcd3.client``, synchronous grpcio):

========  =======================================================================================
put       sequential ``put(key, value)`` of new keys, 256 B values
get       sequential ``get(key)`` over preloaded keys
put-16    put with 16 requests in flight: 16 asyncio tasks on one client (etcdlite, aetcd), 16
          threads sharing one client (etcd3)
range     ``get_prefix(prefix)`` of a 1000-key prefix, counted as the client hands it out:
          aetcd's ``len()`` of its protobuf container, etcdlite's of its ``kvs`` (a
          list-like KeyValueList: its length from a scan of the reply, its KeyValues
          decoded on first access), etcd3's generator consumed; then
          the same with every key and value read (the *touched* rows)
watch     one prefix watch consumed event by event (etcdlite: ``watch.responses()``, counting
          each response's events; aetcd: ``async for event in watch``; etcd3: the
          ``watch_prefix`` events iterator) while a *writer process* (this module's ``writer``,
          etcdlite's Client, 16 txns in flight, 100 puts per txn: fast enough that the
          consumer is the bottleneck) writes; events/s = events received / (writer told
          to go → last event received). The writer is the same process for every client.
keepalive one lease refreshed sequentially with each client's own call (etcdlite:
          ``lease.refresh()`` over its shared LeaseKeepAlive stream; aetcd:
          ``refresh_lease(id)`` and etcd3: ``lease.refresh()``, each opening a new
          LeaseKeepAlive stream per refresh, as those clients do)
========  =======================================================================================

Every workload also reports the client process's own CPU per op (``time.process_time`` over
the timed loop: all threads of the process, so grpcio's too), since on 2 cores the client is
often what limits the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

__all__ = ["CLIENTS", "EXTRA_HINT", "SIZES", "WORKLOADS", "main", "sizes"]

CLIENTS = ("etcdlite", "aetcd", "etcd3")
#: Module each client needs (its own process imports only this one).
MODULES = {"etcdlite": "etcdlite.client", "aetcd": "aetcd", "etcd3": "etcd3"}
EXTRA_HINT = "install the test extra: pip install -e '.[test]'"
WORKLOADS = ("put", "get", "put-16", "range", "watch", "keepalive")
VALUE_SIZE = 256
#: Sizes at ``--scale 1`` (each at least its minimum at small scales).
SIZES: dict[str, tuple[int, int]] = {
    "put": (3000, 20),
    "get": (3000, 20),
    "get_keys": (1000, 10),
    "put-16": (5000, 32),
    "range": (300, 3),
    "range_keys": (1000, 1000),  # the 1000-key range, at every scale
    "watch_txns": (200, 1),
    "keepalive": (3000, 20),
}
WATCH_BATCH = 100  # puts per writer txn (etcd allows 128): events per revision
WATCH_IN_FLIGHT = 16
IN_FLIGHT = 16
#: Bound on waiting for watch events or the writer (seconds).
WAIT_LIMIT = 120.0

Metrics = dict[str, float | int | bool | str | None]


def sizes(scale: float) -> dict[str, int]:
    return {k: max(low, round(v * scale)) for k, (v, low) in SIZES.items()}


def _value() -> bytes:
    return bytes((i * 31 + 7) % 256 for i in range(VALUE_SIZE))


def _keys(prefix: bytes, n: int) -> list[bytes]:
    return [prefix + b"%08d" % i for i in range(n)]


# --- timing ------------------------------------------------------------------------------


class Timer:
    """Wall time, process CPU and per-op latencies of one timed loop."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.start = self.end = 0.0
        self.cpu_start = self.cpu_end = 0.0

    def __enter__(self) -> Timer:
        self.cpu_start = time.process_time()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = time.perf_counter()
        self.cpu_end = time.process_time()

    def metrics(self, ops: int, **extra: float | int | bool | str | None) -> Metrics:
        elapsed = self.end - self.start
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return lat[min(len(lat), max(1, math.ceil(q * len(lat)))) - 1] * 1e6

        return {
            "ops": ops,
            "elapsed_s": elapsed,
            "ops_per_s": ops / elapsed if elapsed > 0 else None,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "client_cpu_us_per_op": (self.cpu_end - self.cpu_start) / ops * 1e6 if ops else None,
            **extra,
        }


def _touched(timer: Timer, ops: int) -> Metrics:
    """The *touched* range figures (every key and value read) of ``timer``."""
    m = timer.metrics(ops)
    return {"touched_ops_per_s": m["ops_per_s"], "touched_cpu_us_per_op": m["client_cpu_us_per_op"]}


async def _drive_async(
    timer: Timer, op: Callable[[int], Awaitable[object]], n: int, concurrency: int = 1
) -> None:
    """``op(0) … op(n-1)``, ``concurrency`` asyncio tasks taking every c-th index."""
    clock = time.perf_counter
    lat = timer.latencies

    async def worker(indices: range) -> None:
        for i in indices:
            t = clock()
            await op(i)
            lat.append(clock() - t)

    with timer:
        if concurrency <= 1:
            await worker(range(n))
        else:
            await asyncio.gather(*(worker(range(k, n, concurrency)) for k in range(concurrency)))


def _drive_threads(timer: Timer, op: Callable[[int], object], n: int, threads: int = 1) -> None:
    """``op(0) … op(n-1)`` in ``threads`` threads taking every t-th index (sequential in this
    thread when 1)."""
    clock = time.perf_counter
    errors: list[BaseException] = []

    def worker(indices: range) -> None:
        local: list[float] = []
        try:
            for i in indices:
                t = clock()
                op(i)
                local.append(clock() - t)
        except BaseException as e:
            errors.append(e)
        with timer.lock:
            timer.latencies.extend(local)

    with timer:
        if threads <= 1:
            worker(range(n))
        else:
            pool = [
                threading.Thread(target=worker, args=(range(k, n, threads),))
                for k in range(threads)
            ]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
    if errors:
        raise errors[0]


# --- the watch writer (a process of its own) -------------------------------------------------


class Writer:
    """``python -m etcdlite.bench.clientrun writer``: connects, says ``ready``, waits for
    ``go`` on stdin, writes ``txns`` txns of :data:`WATCH_BATCH` puts (16 in flight), prints
    its JSON and exits."""

    def __init__(self, endpoint: str, prefix: bytes, txns: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "etcdlite.bench.clientrun", "writer",
                "--endpoint", endpoint, "--prefix", prefix.decode(), "--txns", str(txns),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"watch writer did not start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(timeout=WAIT_LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("watch writer did not finish") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"watch writer failed with code {self.proc.returncode}")
        doc: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def _writer_main(endpoint: str, prefix: bytes, txns: int) -> None:
    from etcdlite.client import Client
    from etcdlite.ops import Put

    value = _value()
    async with Client(endpoint) as kv:
        await kv.get(prefix)  # connected
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            raise SystemExit(1)
        batches = [
            [Put(prefix + b"%06d/%02d" % (i, j), value) for j in range(WATCH_BATCH)]
            for i in range(txns)
        ]
        timer = Timer()
        await _drive_async(timer, lambda i: kv.txn([], batches[i], []), txns, WATCH_IN_FLIGHT)
    m = timer.metrics(txns)
    rate = m["ops_per_s"]
    print(
        json.dumps(
            {
                "txns": txns,
                "events": txns * WATCH_BATCH,
                "elapsed_s": m["elapsed_s"],
                "events_per_s": None if rate is None else float(rate) * WATCH_BATCH,
            }
        ),
        flush=True,
    )


def _watch_metrics(
    received: int, expected: int, go: float, end: float, cpu: float, writer: dict[str, Any]
) -> Metrics:
    elapsed = end - go
    return {
        "events": received,
        "expected": expected,
        "complete": received == expected,
        "elapsed_s": elapsed,
        "ops_per_s": received / elapsed if elapsed > 0 else None,
        "client_cpu_us_per_op": cpu / received * 1e6 if received else None,
        "writer_events_per_s": writer.get("events_per_s"),
        "writer_s": writer.get("elapsed_s"),
        "batch": WATCH_BATCH,
    }


# --- async clients: etcdlite, aetcd ----------------------------------------------------------


class AsyncAdapter:
    """What the async workloads need from a client."""

    async def connect(self, endpoint: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def put(self, key: bytes, value: bytes) -> Awaitable[object]:
        raise NotImplementedError

    def get(self, key: bytes) -> Awaitable[object]:
        raise NotImplementedError

    async def range_count(self, prefix: bytes) -> int:
        raise NotImplementedError

    async def range_touch(self, prefix: bytes) -> int:
        """Range ``prefix`` and read every key and value; the bytes read."""
        raise NotImplementedError

    async def grant(self, ttl: int) -> Any:
        raise NotImplementedError

    def keepalive(self, lease: Any) -> Awaitable[object]:
        raise NotImplementedError

    async def revoke(self, lease: Any) -> None:
        raise NotImplementedError

    async def consume(self, prefix: bytes, expected: int, started: Callable[[], None]) -> int:
        """Watch ``prefix``, call ``started`` once the watch exists, count events until
        ``expected``; returns the count."""
        raise NotImplementedError


class EtcdliteAdapter(AsyncAdapter):
    async def connect(self, endpoint: str) -> None:
        from etcdlite.client import Client

        self.c = Client(endpoint)
        await self.c.get(b"etcdlite-bench/ready")

    async def close(self) -> None:
        await self.c.close()

    def put(self, key: bytes, value: bytes) -> Awaitable[object]:
        return self.c.put(key, value)

    def get(self, key: bytes) -> Awaitable[object]:
        return self.c.get(key)

    async def range_count(self, prefix: bytes) -> int:
        return len((await self.c.get_prefix(prefix)).kvs)

    async def range_touch(self, prefix: bytes) -> int:
        return sum(len(kv.key) + len(kv.value) for kv in (await self.c.get_prefix(prefix)).kvs)

    async def grant(self, ttl: int) -> Any:
        return await self.c.grant(ttl)

    def keepalive(self, lease: Any) -> Awaitable[object]:
        refresh: Callable[[], Awaitable[object]] = lease.refresh
        return refresh()

    async def revoke(self, lease: Any) -> None:
        await lease.revoke()

    async def consume(self, prefix: bytes, expected: int, started: Callable[[], None]) -> int:
        got = 0
        watch = await self.c.watch(prefix, prefix=True)
        try:
            started()
            async for resp in watch.responses():
                got += len(resp.events)
                if got >= expected:
                    break
        finally:
            await watch.cancel()
        return got


class AetcdAdapter(AsyncAdapter):
    async def connect(self, endpoint: str) -> None:
        import aetcd

        host, port = endpoint.rsplit(":", 1)
        self.c = aetcd.Client(host=host, port=int(port), timeout=60, connect_wait_timeout=30)
        await self.c.connect()
        await self.c.get(b"etcdlite-bench/ready")

    async def close(self) -> None:
        await self.c.close()

    def put(self, key: bytes, value: bytes) -> Awaitable[object]:
        return self.c.put(key, value)  # type: ignore[no-any-return]

    def get(self, key: bytes) -> Awaitable[object]:
        return self.c.get(key)  # type: ignore[no-any-return]

    async def range_count(self, prefix: bytes) -> int:
        return len(await self.c.get_prefix(prefix))

    async def range_touch(self, prefix: bytes) -> int:
        return sum(len(kv.key) + len(kv.value) for kv in await self.c.get_prefix(prefix))

    async def grant(self, ttl: int) -> Any:
        return await self.c.lease(ttl)

    def keepalive(self, lease: Any) -> Awaitable[object]:
        return self.c.refresh_lease(lease.id)  # type: ignore[no-any-return]

    async def revoke(self, lease: Any) -> None:
        await self.c.revoke_lease(lease.id)

    async def consume(self, prefix: bytes, expected: int, started: Callable[[], None]) -> int:
        got = 0
        watch = await self.c.watch_prefix(prefix)
        try:
            started()
            async for _event in watch:
                got += 1
                if got >= expected:
                    break
        finally:
            await watch.cancel()
        return got


async def _run_async(adapter: AsyncAdapter, workload: str, endpoint: str, prefix: bytes,
                     n: dict[str, int]) -> Metrics:  # fmt: skip
    value = _value()
    await adapter.connect(endpoint)
    try:
        timer = Timer()
        if workload in ("put", "put-16"):
            keys = _keys(prefix, n[workload])
            c = IN_FLIGHT if workload == "put-16" else 1
            await _drive_async(timer, lambda i: adapter.put(keys[i], value), len(keys), c)
            return timer.metrics(len(keys), concurrency=c)
        if workload == "get":
            stored = _keys(prefix, n["get_keys"])
            for k in stored:
                await adapter.put(k, value)
            order = [stored[(i * 7919) % len(stored)] for i in range(n["get"])]
            await _drive_async(timer, lambda i: adapter.get(order[i]), len(order))
            return timer.metrics(len(order), stored_keys=len(stored))
        if workload == "range":
            size = n["range_keys"]
            await _preload_async(adapter, _keys(prefix, size), value)
            if await adapter.range_count(prefix) != size:
                raise RuntimeError("range: preloaded keys missing")
            await _drive_async(timer, lambda i: adapter.range_count(prefix), n["range"])
            touched = Timer()
            await _drive_async(touched, lambda i: adapter.range_touch(prefix), n["range"])
            return timer.metrics(n["range"], keys_per_range=size, **_touched(touched, n["range"]))
        if workload == "keepalive":
            lease = await adapter.grant(600)
            await _drive_async(timer, lambda i: adapter.keepalive(lease), n["keepalive"])
            await adapter.revoke(lease)
            return timer.metrics(n["keepalive"])
        if workload == "watch":
            txns = n["watch_txns"]
            expected = txns * WATCH_BATCH
            writer = Writer(endpoint, prefix, txns)
            try:
                go = [0.0]
                cpu = [0.0]

                def started() -> None:
                    cpu[0] = time.process_time()
                    go[0] = time.perf_counter()
                    writer.go()

                got = await asyncio.wait_for(adapter.consume(prefix, expected, started), WAIT_LIMIT)
                end = time.perf_counter()
                spent = time.process_time() - cpu[0]
                done = writer.result()
            finally:
                writer.stop()
            return _watch_metrics(got, expected, go[0], end, spent, done)
        raise ValueError(f"unknown workload {workload!r}")
    finally:
        await adapter.close()


async def _preload_async(adapter: AsyncAdapter, keys: list[bytes], value: bytes) -> None:
    for start in range(0, len(keys), IN_FLIGHT):
        await asyncio.gather(*(adapter.put(k, value) for k in keys[start : start + IN_FLIGHT]))


# --- python-etcd3 (synchronous, grpcio) -------------------------------------------------------


def _run_etcd3(workload: str, endpoint: str, prefix: bytes, n: dict[str, int]) -> Metrics:
    import etcd3

    host, port = endpoint.rsplit(":", 1)
    c = etcd3.client(host=host, port=int(port), timeout=60)
    value = _value()
    try:
        c.get(b"etcdlite-bench/ready")
        timer = Timer()
        if workload in ("put", "put-16"):
            keys = _keys(prefix, n[workload])
            threads = IN_FLIGHT if workload == "put-16" else 1
            _drive_threads(timer, lambda i: c.put(keys[i], value), len(keys), threads)
            return timer.metrics(len(keys), concurrency=threads)
        if workload == "get":
            stored = _keys(prefix, n["get_keys"])
            for k in stored:
                c.put(k, value)
            order = [stored[(i * 7919) % len(stored)] for i in range(n["get"])]
            _drive_threads(timer, lambda i: c.get(order[i]), len(order))
            return timer.metrics(len(order), stored_keys=len(stored))
        if workload == "range":
            size = n["range_keys"]
            for k in _keys(prefix, size):
                c.put(k, value)

            def read(i: int) -> int:
                return sum(1 for _ in c.get_prefix(prefix))

            def touch(i: int) -> int:
                return sum(len(m.key) + len(v) for v, m in c.get_prefix(prefix))

            if read(0) != size:
                raise RuntimeError("range: preloaded keys missing")
            _drive_threads(timer, read, n["range"])
            touched = Timer()
            _drive_threads(touched, touch, n["range"])
            return timer.metrics(n["range"], keys_per_range=size, **_touched(touched, n["range"]))
        if workload == "keepalive":
            lease = c.lease(600)
            _drive_threads(timer, lambda i: lease.refresh(), n["keepalive"])
            lease.revoke()
            return timer.metrics(n["keepalive"])
        if workload == "watch":
            return _etcd3_watch(c, endpoint, prefix, n["watch_txns"])
        raise ValueError(f"unknown workload {workload!r}")
    finally:
        _close_etcd3(c)


def _etcd3_watch(c: Any, endpoint: str, prefix: bytes, txns: int) -> Metrics:
    expected = txns * WATCH_BATCH
    writer = Writer(endpoint, prefix, txns)
    try:
        events: Iterator[Any]
        events, cancel = c.watch_prefix(prefix)
        got = 0
        # The watch is created by python-etcd3's watcher thread before watch_prefix returns.
        cpu = time.process_time()
        go = time.perf_counter()
        writer.go()
        # The iterator blocks until an event comes: cancelling the watch ends it.
        limit = threading.Timer(WAIT_LIMIT, cancel)
        limit.start()
        try:
            for _event in events:
                got += 1
                if got >= expected:
                    break
        finally:
            end = time.perf_counter()
            spent = time.process_time() - cpu
            limit.cancel()
            cancel()
        done = writer.result()
    finally:
        writer.stop()
    return _watch_metrics(got, expected, go, end, spent, done)


def _close_etcd3(client: Any) -> None:
    """Close python-etcd3's client; its watcher thread then dies with ``ValueError: Cannot
    invoke RPC: Channel closed!`` (a python-etcd3 0.12 quirk): joined quietly."""
    thread = client.watcher._callback_thread
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if not (args.thread is thread and args.exc_type is ValueError):
            previous(args)

    threading.excepthook = hook
    try:
        client.close()
        if thread is not None:
            thread.join(5)
    finally:
        threading.excepthook = previous


# --- entry point -----------------------------------------------------------------------------


def run(client: str, workload: str, endpoint: str, prefix: bytes, scale: float) -> Metrics:
    n = sizes(scale)
    if client == "etcd3":
        return _run_etcd3(workload, endpoint, prefix, n)
    adapter: AsyncAdapter = EtcdliteAdapter() if client == "etcdlite" else AetcdAdapter()
    return asyncio.run(_run_async(adapter, workload, endpoint, prefix, n))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m etcdlite.bench.clientrun")
    p.add_argument("client", choices=[*CLIENTS, "writer"])
    p.add_argument("workload", nargs="?", choices=WORKLOADS)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--txns", type=int, default=0, help="writer: txns to write")
    args = p.parse_args(argv)
    prefix = args.prefix.encode()
    if args.client == "writer":
        asyncio.run(_writer_main(args.endpoint, prefix, args.txns))
        return 0
    if args.workload is None:
        p.error("a workload is needed")
    try:
        importlib.import_module(MODULES[args.client])
    except ImportError as e:
        print(f"{args.client} is not installed ({e}): {EXTRA_HINT}", file=sys.stderr)
        return 3
    metrics = run(args.client, args.workload, args.endpoint, prefix, args.scale)
    print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
