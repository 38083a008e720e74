"""Results, the issue's targets, the comparison table and the JSON document."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .workloads import WORKLOADS, Metrics

__all__ = ["CHECKS", "Check", "CheckResult", "Result", "evaluate", "fmt", "table"]


@dataclass
class Result:
    workload: str
    target: str
    metrics: Metrics = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "target": self.target,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "error": self.error,
            "wall_s": self.wall_s,
        }


def _json_number(v: object) -> object:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Lookup:
    def __init__(self, results: Sequence[Result]) -> None:
        self._by = {(r.workload, r.target): r for r in results}

    def __call__(self, workload: str, target: str, metric: str) -> float | None:
        r = self._by.get((workload, target))
        if r is None or r.error is not None:
            return None
        v = r.metrics.get(metric)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
        return float(v) if math.isfinite(v) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass(frozen=True)
class Check:
    """One target of the issue: ``value(lookup) op limit``, shown on a table row."""

    text: str
    workload: str
    metric: str
    op: str  # ">=" or "<="
    limit: float
    value: Callable[[Lookup], float | None]
    unit: str = "×"
    #: The same measure in wall-clock time, shown beside a CPU-time ``value`` (on a loaded
    #: machine the CPU-time figure is the one that says what the code does).
    wall: Callable[[Lookup], float | None] | None = None


@dataclass
class CheckResult:
    check: Check
    value: float | None
    wall: float | None = None

    @property
    def ok(self) -> bool | None:
        if self.value is None:
            return None
        if self.check.op == ">=":
            return self.value >= self.check.limit
        return self.value <= self.check.limit

    def short(self) -> str:
        c = self.check
        if self.value is None:
            return f"{c.op}{fmt(c.limit)}{c.unit}: n/a"
        verdict = "ok" if self.ok else "MISS"
        wall = f" (wall {fmt(self.wall)})" if c.wall is not None else ""
        return f"{fmt(self.value)}{c.unit}{wall} {c.op} {fmt(c.limit)}{c.unit} {verdict}"

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.check.text,
            "workload": self.check.workload,
            "metric": self.check.metric,
            "op": self.check.op,
            "limit": self.check.limit,
            "value": self.value,
            "wall_value": self.wall,
            "ok": self.ok,
        }


def _inverse(v: float | None) -> float | None:
    return None if v is None or v == 0 else 1e6 / v


CHECKS: tuple[Check, ...] = (
    Check(
        "embedded put ≥ 0.35× bare SortedDict insert rate (rates per CPU-second)",
        "put",
        "ops_per_s",
        ">=",
        0.35,
        lambda q: _ratio(
            q("floor", "embedded", "sorteddict_cpu_us_per_op"),
            q("put", "embedded", "cpu_us_per_op"),
        ),
        "× floor",
        lambda q: _ratio(
            q("put", "embedded", "ops_per_s"), q("floor", "embedded", "sorteddict_ops_per_s")
        ),
    ),
    Check(
        "embedded watch fan-out, 1000 watchers, writer yielding every 10 puts ≥ 1M events/s "
        "(per CPU-second)",
        "watch-fanout-1000",
        "events_per_s",
        ">=",
        1e6,
        lambda q: _inverse(q("watch-fanout-1000", "embedded", "cpu_us_per_event")),
        "",
        lambda q: q("watch-fanout-1000", "embedded", "events_per_s"),
    ),
    Check(
        "embedded put with 11k idle watchers ≤ 1.3× the time of put with none (CPU time)",
        "idle-watchers",
        "cpu_slowdown",
        "<=",
        1.3,
        lambda q: q("idle-watchers", "embedded", "cpu_slowdown"),
        "×",
        lambda q: q("idle-watchers", "embedded", "slowdown"),
    ),
    Check(
        "100k lease expiry: no event-loop stall > 50 ms (CPU time of one loop turn)",
        "lease-expiry",
        "max_stall_cpu_ms",
        "<=",
        50,
        lambda q: q("lease-expiry", "embedded", "max_stall_cpu_ms"),
        " ms",
        lambda q: q("lease-expiry", "embedded", "max_stall_ms"),
    ),
    Check(
        "1M-revision compaction: no event-loop stall > 20 ms (CPU time of one loop turn)",
        "compaction",
        "max_stall_cpu_ms",
        "<=",
        20,
        lambda q: q("compaction", "embedded", "max_stall_cpu_ms"),
        " ms",
        lambda q: q("compaction", "embedded", "max_stall_ms"),
    ),
    Check(
        "serve unary put, server CPU per op ≤ 1.5× real etcd's (goal 1.0×)",
        "put",
        "cpu_us_per_op",
        "<=",
        1.5,
        lambda q: _ratio(q("put", "serve", "cpu_us_per_op"), q("put", "etcd", "cpu_us_per_op")),
        "× etcd",
    ),
    Check(
        "serve put with 16 in flight ≥ 1× real etcd's throughput (issue 14: with "
        "--data-dir-parent, durable against durable)",
        "put-16",
        "ops_per_s",
        ">=",
        1.0,
        lambda q: _ratio(q("put-16", "serve", "ops_per_s"), q("put-16", "etcd", "ops_per_s")),
        "× etcd",
    ),
    Check(
        "serve 1000-key range, server CPU per op ≤ 0.5× real etcd's",
        "range",
        "cpu_us_per_op",
        "<=",
        0.5,
        lambda q: _ratio(q("range", "serve", "cpu_us_per_op"), q("range", "etcd", "cpu_us_per_op")),
        "× etcd",
    ),
    Check(
        "serve watch fan-out, 100 watchers, server CPU per delivered event ≤ 1× real etcd's",
        "watch-fanout-100",
        "cpu_us_per_event",
        "<=",
        1.0,
        lambda q: _ratio(
            q("watch-fanout-100", "serve", "cpu_us_per_event"),
            q("watch-fanout-100", "etcd", "cpu_us_per_event"),
        ),
        "× etcd",
    ),
    Check(
        "etcdlite serve time to ready ≤ 0.3 s (spawn to first answered request)",
        "startup",
        "ready_ms",
        "<=",
        300,
        lambda q: q("startup", "serve", "ready_ms"),
        " ms",
    ),
    Check(
        "etcdlite serve restart holding 1M revisions ≤ 5 s (issue 14; n/a below --scale 1)",
        "restart",
        "restart_s",
        "<=",
        5.0,
        lambda q: _full_restart(q, q("restart", "serve", "restart_s")),
        " s",
    ),
    Check(
        "etcdlite serve restart holding 1M revisions ≤ 1× real etcd's (issue 14)",
        "restart",
        "restart_s",
        "<=",
        1.0,
        lambda q: _full_restart(
            q, _ratio(q("restart", "serve", "restart_s"), q("restart", "etcd", "restart_s"))
        ),
        "× etcd",
    ),
)


def _full_restart(q: Lookup, value: float | None) -> float | None:
    """``value`` if the restart workload ran at full size (the goal is for 1M revisions)."""
    revisions = q("restart", "serve", "revisions")
    return value if revisions is not None and revisions >= 1_000_000 else None


def evaluate(results: Sequence[Result]) -> list[CheckResult]:
    """Every check whose workload ran (value ``None`` when a side of it is missing)."""
    ran = {r.workload for r in results}
    q = Lookup(results)
    return [
        CheckResult(c, c.value(q), None if c.wall is None else c.wall(q))
        for c in CHECKS
        if c.workload in ran
    ]


def fmt(v: float | None) -> str:
    """Three significant digits, k/M suffixes for large numbers."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    if a >= 10e6:
        return f"{v / 1e6:.0f}M"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 100e3:
        return f"{v / 1e3:.0f}k"
    if a >= 10e3:
        return f"{v / 1e3:.1f}k"
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3f}"


def table(
    results: Sequence[Result],
    targets: Sequence[str],
    reference: str | None,
    checks: Sequence[CheckResult] = (),
) -> str:
    """One table: a row per (workload, metric), a column per target, a ratio column per
    target against ``reference``, and the issue's target where one applies."""
    q = Lookup(results)
    ran = {(r.workload, r.target) for r in results}
    errors = {(r.workload, r.target) for r in results if r.error is not None}
    others = [t for t in targets if reference is not None and t != reference]
    notes: dict[tuple[str, str], list[str]] = {}
    for cr in checks:
        notes.setdefault((cr.check.workload, cr.check.metric), []).append(cr.short())
    header = ["workload", "metric", *targets, *(f"{t}/{reference}" for t in others), "target"]
    rows: list[list[str]] = []
    for w in WORKLOADS:
        if not any((w.name, t) in ran for t in targets):
            continue
        for i, (metric, label) in enumerate(w.rows):
            cells = [w.name if i == 0 else "", label]
            for t in targets:
                if (w.name, t) in errors:
                    cells.append("error")
                else:
                    cells.append(fmt(q(w.name, t, metric)))
            for t in others:
                assert reference is not None
                r = _ratio(q(w.name, t, metric), q(w.name, reference, metric))
                cells.append("-" if r is None else f"{fmt(r)}×")
            cells.append("; ".join(notes.get((w.name, metric), [])))
            rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.ljust(widths[i]) if i < 2 or i == len(cells) - 1 else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])
