"""Run the selected workloads on every target of one run, workload by workload (each
workload on all targets back to back, so a noisy machine affects them alike). With
``repeat`` > 1 the targets alternate that many times per workload and every metric is the
median of the runs, so a slow minute of the machine does not decide a ratio."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .ctx import Kept
from .measure import Metrics, Progress
from .report import Result, evaluate, fmt, table
from .targets import (
    ChildTarget,
    EmbeddedTarget,
    EndpointTarget,
    Target,
    etcd_binary,
    etcd_version,
)
from .workloads import Ctx, KeySource, Workload

__all__ = ["Options", "Run", "run", "run_cancellable", "run_sync"]

T = TypeVar("T")


@dataclass
class Options:
    workloads: list[Workload]
    targets: list[str]
    scale: float = 1.0
    endpoint: str | None = None
    pid: int | None = None
    etcd: str | None = None
    json_path: str | None = None
    progress: bool = True
    command: str = ""
    repeat: int = 1
    #: Run every workload as a non-root user with auth enabled (see ``Target.auth``).
    auth: bool = False
    #: Children's data under this directory (``serve`` with ``--data-dir``), not tmpfs.
    data_parent: str | None = None


@dataclass
class Run:
    options: Options
    results: list[Result] = field(default_factory=list)
    targets: list[dict[str, object]] = field(default_factory=list)
    started: str = ""
    elapsed_s: float = 0.0

    @property
    def reference(self) -> str | None:
        names = self.options.targets
        if len(names) < 2:
            return None
        return "etcd" if "etcd" in names else names[-1]

    def table(self) -> str:
        return table(self.results, self.options.targets, self.reference, evaluate(self.results))

    def to_json(self) -> dict[str, object]:
        etcd = etcd_binary(self.options.etcd)
        return {
            "meta": {
                "date": self.started,
                "command": self.options.command,
                "scale": self.options.scale,
                "targets": self.options.targets,
                "reference": self.reference,
                "workloads": [w.name for w in self.options.workloads],
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
                "etcd_version": etcd_version(etcd) if etcd else None,
                "elapsed_s": self.elapsed_s,
            },
            "targets": self.targets,
            "results": [r.to_json() for r in self.results],
            "checks": [c.to_json() for c in evaluate(self.results)],
            "table": self.table(),
        }


def _make_target(name: str, opts: Options) -> Target:
    if name == "embedded":
        return EmbeddedTarget()
    if name in ("serve", "etcd"):
        return ChildTarget(name, etcd_binary(opts.etcd), opts.data_parent)
    if name == "endpoint":
        if not opts.endpoint:
            raise ValueError("the endpoint target needs --endpoint host:port")
        return EndpointTarget(opts.endpoint, opts.pid)
    raise ValueError(f"unknown target {name!r}")


def _summary(metrics: dict[str, object], rows: Sequence[tuple[str, str]]) -> str:
    parts = []
    for metric, label in rows[:2]:
        v = metrics.get(metric)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{label} {fmt(float(v))}")
    return ", ".join(parts)


async def run(opts: Options) -> Run:
    progress = Progress(enabled=opts.progress)
    out = Run(opts, started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    begin = time.perf_counter()
    targets = [_make_target(name, opts) for name in opts.targets]
    for t in targets:
        t.auth = opts.auth
    keys = KeySource()
    kept = Kept()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(kept.remove)
        for t in targets:
            if t.wire:
                progress.step(f"starting target {t.name}")
            await t.start(stack)
        out.targets = [t.info() for t in targets]
        plan = [
            (w, t)
            for w in opts.workloads
            for _ in range(opts.repeat)
            for t in targets
            if w.applies(t)
        ]
        for i, (w, t) in enumerate(plan, 1):
            progress.step(f"[{i}/{len(plan)}] {w.name} @ {t.name}: {w.description}")
            ctx = Ctx(t, opts.scale, progress, keys=keys, etcd=etcd_binary(opts.etcd), kept=kept)
            start = time.perf_counter()
            try:
                metrics = await w.run(ctx)
                result = Result(w.name, t.name, metrics)
            except Exception as e:
                progress.say(f"    failed: {e!r}")
                if opts.progress:
                    traceback.print_exc(file=sys.stderr)
                result = Result(w.name, t.name, error=f"{type(e).__name__}: {e}")
            result.wall_s = time.perf_counter() - start
            out.results.append(result)
            if result.error is None:
                summary = _summary(dict(result.metrics), w.rows)
                progress.say(f"    {result.wall_s:.1f} s: {summary}")
            gc.collect()
    out.results = merge_repeats(out.results)
    out.elapsed_s = time.perf_counter() - begin
    return out


def merge_repeats(results: Sequence[Result]) -> list[Result]:
    """One result per (workload, target): a number is the median of the runs that did not
    fail, a flag holds if it held in every run; ``runs`` counts them. A pair whose every
    run failed keeps the first error."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.workload, r.target), []).append(r)
    merged: list[Result] = []
    for (workload, target), runs in groups.items():
        ok = [r for r in runs if r.error is None]
        if len(runs) == 1 or not ok:
            merged.append(runs[0])
            continue
        metrics: Metrics = {}
        for key in ok[0].metrics:
            values = [r.metrics.get(key) for r in ok]
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if all(isinstance(v, bool) for v in values):
                metrics[key] = all(values)
            elif len(numbers) == len(values):
                metrics[key] = statistics.median(numbers)
            else:
                metrics[key] = values[0]
        metrics["runs"] = len(ok)
        merged.append(Result(workload, target, metrics, wall_s=sum(r.wall_s for r in runs)))
    return merged


def run_sync(opts: Options) -> Run:
    """Run in a fresh event loop; SIGTERM cancels it (children are stopped on the way)."""
    return run_cancellable(run(opts))


def run_cancellable(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` with SIGTERM cancelling it (raised as CancelledError), so the
    ``finally`` blocks that stop child processes run."""

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def write_json(result: Run, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result.to_json(), f, indent=2, default=str)
        f.write("\n")
