"""The workloads of ``etcdlite bench``.

Each workload is an ``async`` function of a :class:`Ctx` returning a flat dict of metrics.
Wire targets are all driven through etcdlite's :class:`~etcdlite.Client`, so the client side
costs the same for every server; the server's own CPU comes from ``/proc``. Every loop is
bounded by a count (sizes scale with ``--scale``) and waits are bounded in time.

Sizes at ``--scale 1`` (embedded / wire):

========================  ==========================================================
put, put-16               100k / 5k new keys, 256 B values (embedded: median of 3 runs)
get                       100k / 5k point reads over 10k / 1k keys
range                     2k / 500 reads of a 1000-key prefix
txn                       50k / 3k compare-and-swap transactions on one key
watch-fanout-N            1 writer, N prefix watchers; 100k/10k/1k puts (N = 1/100/1000),
                          wire 3k/300/50; embedded writer yields every 10 puts
idle-watchers             50k / 3k puts with 10k exact-key + 1k range idle watchers vs none
lease-grant               50k / 3k grants
lease-keepalive           100k / 5k keepalives of one lease
lease-expiry              100k leases with a key each expiring at once (embedded)
compaction                compaction of 1M revisions (100k keys x 10) (embedded)
range-count               count_only and limit=10 ranges over 1M live keys, then with the
                          first 100k deleted (embedded; median of 100 reads each)
memory                    bytes per stored key revision, 20k keys x 5 (embedded)
startup                   store start-up (embedded) or spawn-to-first-answer (children)
restart                   restart holding 1M revisions (10k keys): spawn to first answer,
                          median of 3 (not in ``all``: filling etcd takes minutes)
floor                     bare dict set and SortedDict insert of put's 100k keys
========================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .ctx import Ctx, KeySource
from .kv import (
    get,
    idle_watchers,
    lease_grant,
    lease_keepalive,
    put_16,
    put_sequential,
    range_prefix,
    txn_cas,
    watch_fanout,
)
from .local import compaction, floor, lease_expiry, memory, range_count, startup
from .measure import Metrics
from .restart import restart
from .targets import Target

__all__ = ["GROUPS", "WORKLOADS", "Ctx", "KeySource", "Metrics", "Workload", "select"]


def _fanout(watchers: int) -> Callable[[Ctx], Awaitable[Metrics]]:
    async def run(ctx: Ctx) -> Metrics:
        return await watch_fanout(ctx, watchers)

    return run


# --- registry ------------------------------------------------------------------------

#: Where a workload runs: every target, only in-process, or targets the benchmark starts.
ALL, EMBEDDED, SPAWNED = "all", "embedded", "spawned"

REQUEST_ROWS = (
    ("ops_per_s", "ops/s"),
    ("p50_us", "p50 µs"),
    ("p99_us", "p99 µs"),
    ("cpu_us_per_op", "server CPU µs/op"),
)
REQUEST_FIELDS = ("ops", "elapsed_s", "ops_per_s", "p50_us", "p99_us", "cpu_us_per_op")


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    run: Callable[[Ctx], Awaitable[Metrics]]
    where: str
    #: (metric, label) rows of the table, in order.
    rows: tuple[tuple[str, str], ...]
    #: Metrics every result of this workload carries (checked by the smoke test).
    fields: tuple[str, ...]

    def applies(self, target: Target) -> bool:
        if self.where == EMBEDDED:
            return not target.wire
        if self.where == SPAWNED:
            return target.name in ("embedded", "serve", "etcd")
        return True


def _fanout_workload(n: int) -> Workload:
    return Workload(
        f"watch-fanout-{n}",
        f"1 writer → {n} watcher(s) on one prefix",
        _fanout(n),
        ALL,
        (("events_per_s", "events/s delivered"), ("cpu_us_per_event", "server CPU µs/event")),
        ("watchers", "puts", "events", "complete", "events_per_s", "cpu_us_per_event"),
    )


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "floor",
        "Python floor: bare dict set / SortedDict insert of put's keys",
        floor,
        EMBEDDED,
        (
            ("dict_ops_per_s", "dict set ops/s"),
            ("sorteddict_ops_per_s", "SortedDict insert ops/s"),
            ("sorteddict_cpu_us_per_op", "SortedDict insert CPU µs/op"),
        ),
        ("keys", "dict_ops_per_s", "sorteddict_ops_per_s", "sorteddict_cpu_us_per_op"),
    ),
    Workload(
        "put",
        "sequential put of new keys, 256 B values",
        put_sequential,
        ALL,
        REQUEST_ROWS,
        (*REQUEST_FIELDS, "concurrency"),
    ),
    Workload(
        "put-16",
        "put with 16 requests in flight",
        put_16,
        ALL,
        REQUEST_ROWS,
        (*REQUEST_FIELDS, "concurrency"),
    ),
    Workload("get", "sequential point get", get, ALL, REQUEST_ROWS, REQUEST_FIELDS),
    Workload(
        "range",
        "range of a 1000-key prefix",
        range_prefix,
        ALL,
        REQUEST_ROWS,
        (*REQUEST_FIELDS, "keys_per_range"),
    ),
    Workload(
        "txn",
        "txn compare-and-swap (mod revision) on one key",
        txn_cas,
        ALL,
        REQUEST_ROWS,
        (*REQUEST_FIELDS, "failed"),
    ),
    _fanout_workload(1),
    _fanout_workload(100),
    _fanout_workload(1000),
    Workload(
        "idle-watchers",
        "put with 10k exact-key + 1k range idle watchers vs none",
        idle_watchers,
        ALL,
        (
            ("ops_per_s", "ops/s with idle watchers"),
            ("baseline_ops_per_s", "ops/s with none"),
            ("slowdown", "slowdown (wall time)"),
            ("cpu_us_per_op", "server CPU µs/op"),
            ("cpu_slowdown", "slowdown (server CPU)"),
        ),
        (
            *REQUEST_FIELDS,
            "baseline_ops_per_s",
            "baseline_cpu_us_per_op",
            "slowdown",
            "cpu_slowdown",
            "exact_watchers",
            "range_watchers",
        ),
    ),
    Workload("lease-grant", "lease grant", lease_grant, ALL, REQUEST_ROWS, REQUEST_FIELDS),
    Workload(
        "lease-keepalive",
        "lease keepalive of one lease",
        lease_keepalive,
        ALL,
        REQUEST_ROWS,
        REQUEST_FIELDS,
    ),
    Workload(
        "lease-expiry",
        "expiry of 100k leases with a key each (max event-loop stall)",
        lease_expiry,
        EMBEDDED,
        (
            ("leases_per_s", "leases expired/s"),
            ("max_stall_ms", "max loop stall ms"),
            ("max_stall_cpu_ms", "max loop stall, CPU ms"),
        ),
        ("leases", "expired", "expiry_s", "leases_per_s", "max_stall_ms", "max_stall_cpu_ms"),
    ),
    Workload(
        "compaction",
        "compaction of 1M revisions (max event-loop stall)",
        compaction,
        EMBEDDED,
        (
            ("revisions_per_s", "revisions compacted/s"),
            ("max_stall_ms", "max loop stall ms"),
            ("max_stall_cpu_ms", "max loop stall, CPU ms"),
        ),
        ("revisions", "compact_s", "revisions_per_s", "max_stall_ms", "max_stall_cpu_ms"),
    ),
    Workload(
        "range-count",
        "count_only / limit=10 range over 1M live keys, then past 100k tombstones",
        range_count,
        EMBEDDED,
        (
            ("count_only_ms", "count_only ms (median)"),
            ("limit10_ms", "limit=10 ms (median)"),
            ("count_only_tomb_ms", "count_only, first tenth deleted, ms"),
            ("limit10_tomb_ms", "limit=10 past the deleted tenth, ms"),
        ),
        (
            "keys",
            "reads",
            "count_only_ms",
            "limit10_ms",
            "tombstones",
            "count_only_tomb_ms",
            "limit10_tomb_ms",
        ),
    ),
    Workload(
        "memory",
        "memory per stored key revision (tracemalloc, 256 B values)",
        memory,
        EMBEDDED,
        (
            ("bytes_per_revision", "bytes/revision"),
            ("overhead_bytes_per_revision", "overhead bytes/revision"),
        ),
        ("revisions", "bytes_per_revision", "payload_bytes", "overhead_bytes_per_revision"),
    ),
    Workload(
        "startup",
        "store start-up / server spawn to first answered request",
        startup,
        SPAWNED,
        (("ready_ms", "time to ready ms (median)"),),
        ("reps", "ready_ms", "ready_min_ms", "ready_max_ms"),
    ),
    Workload(
        "restart",
        "restart with 1M revisions in the data dir: spawn to first answer (issue 14)",
        restart,
        SPAWNED,
        (
            ("restart_s", "restart s (median of 3)"),
            ("restart_max_s", "restart s (slowest)"),
            ("restart_cpu_s", "restart, server CPU s (median)"),
            ("fill_s", "fill s (not a target)"),
        ),
        (
            "revisions",
            "keys",
            "fill_s",
            "data_bytes",
            "reps",
            "restart_s",
            "restart_min_s",
            "restart_max_s",
            "restart_cpu_s",
        ),
    ),
)

#: Workloads ``all`` leaves out (each takes minutes at ``--scale 1``): name them.
HEAVY = ("restart",)

#: Names that select several workloads.
GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(w.name for w in WORKLOADS if w.name not in HEAVY),
    "watch-fanout": ("watch-fanout-1", "watch-fanout-100", "watch-fanout-1000"),
    "lease": ("lease-grant", "lease-keepalive", "lease-expiry"),
}


def select(spec: str) -> list[Workload]:
    """Workloads named by ``spec``: names or group names, comma-separated, in the registry's
    order. ``put`` on the embedded target brings the floor along (its target is a ratio)."""
    by_name = {w.name: w for w in WORKLOADS}
    wanted: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in GROUPS:
            wanted.update(GROUPS[part])
        elif part in by_name:
            wanted.add(part)
        else:
            known = ", ".join([*GROUPS, *by_name])
            raise ValueError(f"unknown workload {part!r} (known: {known})")
    if "put" in wanted:
        wanted.add("floor")
    return [w for w in WORKLOADS if w.name in wanted]
