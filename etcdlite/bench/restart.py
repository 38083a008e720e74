"""The ``restart`` workload: how long a server holding 1M revisions takes to come back.

Issue 14 asks for recovery of 1M revisions in ≤ 5 s and no slower than etcd's own restart.
etcd 3.4 restarts by opening its bolt backend, rebuilding the in-memory key index from every
revision in it, loading the last raft snapshot and replaying the WAL entries after it (a
snapshot every ``--snapshot-count`` = 100000 entries by default, kept), then electing itself
leader. etcdlite restarts by loading its newest snapshot file (if the log ever outgrew one)
and replaying the log after it (:mod:`etcdlite.storage.recovery`).

How each data directory is filled (``N`` = 1M × ``--scale``, at least 1000, single-key puts
of 100 B values, key ``i % 10000`` for revision ``i``: many revisions per key, as a config
store sees):

* ``serve`` and ``embedded``: an in-process :class:`~etcdlite.Store` with that
  ``data_dir`` and 256 puts in flight: the same writer, record encoding, group commit and
  automatic snapshots as ``etcdlite serve --data-dir`` (which is that Store behind gRPC),
  without a Python client on the wire;
* ``etcd``: the real etcd child (default flags) over gRPC, 256 puts in flight, with
  grpcio's asyncio channel and hand-encoded PutRequests when grpcio is installed (the test
  extra brings it; about 3× the rate of etcdlite's pure-Python :class:`~etcdlite.Client`,
  which is the fallback); the data dir is on tmpfs (``/dev/shm``) unless
  ``--data-dir-parent`` says otherwise, so its fsyncs do not make the fill take an hour.
  1M revisions take a few minutes on two cores.

Then the server is stopped (SIGTERM: etcd's clean shutdown) and restarted 3 times on that
directory. With ``--repeat N`` the directories are filled once and kept for the run (removed
when it ends), so the later repeats restart serve and etcd in turns a few seconds apart: a
machine shared with other jobs then weighs on both alike, where the first repeat times one
target minutes after the other (the etcd fill between). Each restart is timed as
:func:`~etcdlite.bench.local.startup` times start-up: from spawning the process to the
first answered request (a point Range), without ``PR_SET_PDEATHSIG``. ``embedded`` times
``Store(data_dir=D)`` to its first answered get (the recovery itself, without an
interpreter start or gRPC). The first answer's revision
is checked, so a restart that lost data is an error, not a fast time. ``restart_cpu_s`` is
the server's CPU time until it answered (``/proc/<pid>/stat``; embedded: this process's):
on a shared machine it says what the code costs when the wall time says what the
neighbours did (etcd's Go runtime spreads over both cores: its CPU may exceed its wall).
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ..api import KV
from ..client import Client
from ..store import Store
from .ctx import Ctx
from .measure import Metrics, proc_cpu_seconds
from .targets import PROBE_KEY, start_child, tmp_parent

__all__ = ["fill", "restart"]

#: Revisions at ``--scale 1``.
REVISIONS = 1_000_000
#: Distinct keys the revisions cycle over.
KEYS = 10_000
VALUE = b"v" * 100
IN_FLIGHT = 256
#: Restarts timed per run.
RESTARTS = 3


def key(i: int) -> bytes:
    return b"bench/restart/%05d" % (i % KEYS)


async def fill(kv: KV, n: int, ctx: Ctx | None = None) -> int:
    """``n`` single-key puts with :data:`IN_FLIGHT` in flight; returns the last revision."""
    last = 0

    async def worker(k: int) -> None:
        nonlocal last
        for i in range(k, n, IN_FLIGHT):
            rev = (await kv.put(key(i), VALUE)).header.revision
            last = max(last, rev)
            if ctx is not None and i & 16383 == 0:
                ctx.progress.tick(i, n, "revisions written")

    await asyncio.gather(*(worker(k) for k in range(IN_FLIGHT)))
    return last


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def put_request(k: bytes, v: bytes) -> bytes:
    """An encoded ``etcdserverpb.PutRequest`` of key (field 1) and value (field 2)."""
    return b"\x0a" + _varint(len(k)) + k + b"\x12" + _varint(len(v)) + v


async def fill_grpcio(endpoint: str, n: int, ctx: Ctx | None = None) -> int | None:
    """:func:`fill` through grpcio, if it is installed (else ``None``); returns the last
    revision (read back with a Range, as the replies are not decoded)."""
    try:
        import grpc
    except ImportError:
        return None
    channel = grpc.aio.insecure_channel(endpoint)
    try:
        put = channel.unary_unary("/etcdserverpb.KV/Put")

        async def worker(k: int) -> None:
            for i in range(k, n, IN_FLIGHT):
                await put(put_request(key(i), VALUE))
                if ctx is not None and i & 16383 == 0:
                    ctx.progress.tick(i, n, "revisions written")

        await asyncio.gather(*(worker(k) for k in range(IN_FLIGHT)))
    finally:
        await channel.close()
    return await _first_answer(endpoint)


async def _first_answer(endpoint: str) -> int:
    """The revision a Range answers with (the probe of :func:`~.targets.wait_ready`)."""
    async with Client(endpoint) as client:
        return (await client.range(PROBE_KEY)).header.revision


async def restart(ctx: Ctx) -> Metrics:
    """Fill a data directory with ``n`` revisions (once per run: a repeat reuses it), then
    time :data:`RESTARTS` restarts."""
    kind = ctx.target.name
    if kind not in ("embedded", "serve", "etcd"):
        raise ValueError(f"restart needs a target the benchmark starts, not {kind}")
    n = ctx.n(REVISIONS, minimum=1000)
    name = f"restart/{kind}/{n}"
    kept = ctx.kept.find(name) if ctx.kept is not None else None
    if kept is None:
        kept = await _filled(ctx, kind, n)
        if ctx.kept is not None:
            ctx.kept.keep(name, *kept)
    root, notes = kept
    data = f"{root}/data"
    try:
        times, cpu = await _restarts(ctx, kind, data, int(notes["last"]))
    finally:
        if ctx.kept is None:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "revisions": n,
        "keys": min(KEYS, n),
        "fill_s": notes["fill_s"],
        "data_bytes": notes["data_bytes"],
        "reps": len(times),
        "restart_s": statistics.median(times),
        "restart_min_s": min(times),
        "restart_max_s": max(times),
        "restart_cpu_s": statistics.median(cpu),
    }


async def _filled(ctx: Ctx, kind: str, n: int) -> tuple[str, dict[str, float]]:
    """A new directory holding ``<dir>/data`` filled with ``n`` revisions, and notes on it:
    the fill's time, the data's size and the last revision written."""
    parent = getattr(ctx.target, "data_parent", None) or tmp_parent()
    root = tempfile.mkdtemp(prefix=f"etcdlite-bench-restart-{kind}-", dir=parent)
    data = f"{root}/data"
    try:
        start = time.perf_counter()
        if kind == "etcd":
            async with start_child(kind, ctx.etcd, data_dir=data) as (child, _ready):
                filled = await fill_grpcio(child.endpoint, n, ctx)
                if filled is None:
                    async with Client(child.endpoint) as client:
                        filled = await fill(client, n, ctx)
                last = filled
        else:
            async with Store(data_dir=data) as store:
                last = await fill(store, n, ctx)
        fill_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in _files(data))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root, {"fill_s": fill_s, "data_bytes": size, "last": last}


async def _restarts(ctx: Ctx, kind: str, data: str, last: int) -> tuple[list[float], list[float]]:
    """:data:`RESTARTS` restarts on ``data``: wall and CPU seconds to the first answer."""
    times: list[float] = []
    cpu: list[float] = []
    for i in range(RESTARTS):
        ctx.progress.tick(i, RESTARTS, "restarts")
        gc.collect()
        if kind == "embedded":
            t = time.perf_counter()
            c = time.process_time()
            store = await asyncio.to_thread(Store, data_dir=data)
            try:
                rev = (await store.range(PROBE_KEY)).header.revision
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            finally:
                await store.close()
                del store
        else:
            async with start_child(kind, ctx.etcd, die_with_parent=False, data_dir=data) as (
                child,
                ready,
            ):
                times.append(ready)
                cpu.append(proc_cpu_seconds(child.pid))
                rev = await _first_answer(child.endpoint)
        if rev != last:
            raise RuntimeError(f"{kind} restarted at revision {rev}, {last} written")
    return times, cpu


def _files(directory: str) -> list[Path]:
    return [p for p in Path(directory).rglob("*") if p.is_file()]
