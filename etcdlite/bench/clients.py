"""``etcdlite bench --clients etcdlite,aetcd,etcd3``: Python etcd clients side by side against
one real etcd (issue #17).

The parent starts one etcd child (or uses ``--endpoint``) and runs every (workload, client)
pair in a child process of its own (:mod:`.clientrun`: aetcd and python-etcd3 cannot share
a process; python-etcd3's child alone gets ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``).
With ``--repeat N`` the clients take turns N times per workload and every figure is the
median. Each run writes under a key prefix of its own, so runs never see each other's keys.
The table shows ops/s and the client process's CPU per op for each client, and each
client's ratio against aetcd (the issue's baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .clientrun import CLIENTS, MODULES, WATCH_BATCH, WORKLOADS, sizes
from .measure import Progress
from .report import Lookup, Result, fmt
from .runner import merge_repeats
from .targets import etcd_binary, etcd_version, start_child

__all__ = [
    "REFERENCE",
    "ROWS",
    "ClientOptions",
    "ClientRun",
    "missing_clients",
    "parse_clients",
    "run_clients",
    "select_workloads",
]

#: The baseline every ratio is taken against.
REFERENCE = "aetcd"
#: A run's bound on one child (seconds).
CHILD_TIMEOUT = 600.0

DESCRIPTIONS = {
    "put": "sequential put of new keys, 256 B values",
    "get": "sequential point get",
    "put-16": "put, 16 in flight (async: 16 tasks; etcd3: 16 threads)",
    "range": "get_prefix of a 1000-key prefix (counted; then every key and value read)",
    "watch": f"prefix watch consumed while a writer process puts ({WATCH_BATCH} puts per txn)",
    "keepalive": "sequential keepalive of one lease",
}
_CPU = ("client_cpu_us_per_op", "client CPU µs/op")
#: (metric, label) rows of the table per workload.
ROWS: dict[str, tuple[tuple[str, str], ...]] = {
    "put": (("ops_per_s", "ops/s"), ("p50_us", "p50 µs"), _CPU),
    "get": (("ops_per_s", "ops/s"), ("p50_us", "p50 µs"), _CPU),
    "put-16": (("ops_per_s", "ops/s"), ("p50_us", "p50 µs"), _CPU),
    "range": (
        ("ops_per_s", "ranges/s"),
        ("p50_us", "p50 µs"),
        ("client_cpu_us_per_op", "client CPU µs/range"),
        ("touched_ops_per_s", "ranges/s, every key+value read"),
        ("touched_cpu_us_per_op", "client CPU µs/range, touched"),
    ),
    "watch": (
        ("ops_per_s", "events/s delivered"),
        ("writer_events_per_s", "writer events/s"),
        ("client_cpu_us_per_op", "client CPU µs/event"),
    ),
    "keepalive": (("ops_per_s", "keepalives/s"), ("p50_us", "p50 µs"), _CPU),
}


def parse_clients(spec: str) -> list[str]:
    names = [c.strip() for c in spec.split(",") if c.strip()]
    if not names:
        raise ValueError("--clients needs at least one client")
    for c in names:
        if c not in CLIENTS:
            raise ValueError(f"unknown client {c!r} (known: {', '.join(CLIENTS)})")
    if len(set(names)) != len(names):
        raise ValueError("a client is named twice")
    return names


def select_workloads(spec: str) -> list[str]:
    """Client workloads named by ``spec`` (``all`` or comma-separated names), in order."""
    wanted: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part == "all":
            wanted.update(WORKLOADS)
        elif part in WORKLOADS:
            wanted.add(part)
        else:
            known = ", ".join(("all", *WORKLOADS))
            raise ValueError(f"unknown client workload {part!r} (known: {known})")
    return [w for w in WORKLOADS if w in wanted]


def missing_clients(clients: Sequence[str]) -> list[str]:
    """Clients whose package is not installed (looked up without importing it)."""
    return [c for c in clients if importlib.util.find_spec(MODULES[c].split(".")[0]) is None]


@dataclass
class ClientOptions:
    clients: list[str]
    workloads: list[str]
    scale: float = 1.0
    repeat: int = 1
    endpoint: str | None = None
    etcd: str | None = None
    progress: bool = True
    command: str = ""


@dataclass
class ClientRun:
    options: ClientOptions
    results: list[Result] = field(default_factory=list)
    #: Every child's result before the medians (``--repeat`` runs in the order they ran).
    runs: list[Result] = field(default_factory=list)
    endpoint: str = ""
    etcd_version: str | None = None
    #: The etcd child's temp dir (removed when the run ends), if it started one.
    temp_dir: str | None = None
    started: str = ""
    elapsed_s: float = 0.0

    @property
    def reference(self) -> str | None:
        return REFERENCE if REFERENCE in self.options.clients else None

    def table(self) -> str:
        return client_table(self.results, self.options.clients, self.reference)

    def to_json(self) -> dict[str, object]:
        return {
            "meta": {
                "date": self.started,
                "command": self.options.command,
                "scale": self.options.scale,
                "repeat": self.options.repeat,
                "clients": self.options.clients,
                "reference": self.reference,
                "workloads": self.options.workloads,
                "sizes": sizes(self.options.scale),
                "endpoint": self.endpoint,
                "etcd_version": self.etcd_version,
                "temp_dir": self.temp_dir,
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
                "elapsed_s": self.elapsed_s,
            },
            "results": [r.to_json() for r in self.results],
            "runs": [r.to_json() for r in self.runs],
            "table": self.table(),
        }


def client_table(results: Sequence[Result], clients: Sequence[str], reference: str | None) -> str:
    """A row per (workload, metric), a column per client, then each other client's ratio
    against ``reference`` (for rates, > 1 is faster; for CPU and latency, < 1 is cheaper)."""
    q = Lookup(results)
    ran = {(r.workload, r.target) for r in results}
    errors = {(r.workload, r.target) for r in results if r.error is not None}
    others = [c for c in clients if reference is not None and c != reference]
    header = ["workload", "metric", *clients, *(f"{c}/{reference}" for c in others)]
    rows: list[list[str]] = []
    for w in WORKLOADS:
        if not any((w, c) in ran for c in clients):
            continue
        for i, (metric, label) in enumerate(ROWS[w]):
            cells = [w if i == 0 else "", label]
            for c in clients:
                cells.append("error" if (w, c) in errors else fmt(q(w, c, metric)))
            for c in others:
                assert reference is not None
                a, b = q(w, c, metric), q(w, reference, metric)
                cells.append("-" if a is None or b is None or b == 0 else f"{fmt(a / b)}×")
            rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _child_env(client: str) -> dict[str, str]:
    env = dict(os.environ)
    # The child imports this very etcdlite, installed or not.
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    if client == "etcd3":
        # python-etcd3 0.12's generated code only loads with the pure-Python protobuf runtime.
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    else:
        env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    return env


async def run_child(client: str, workload: str, endpoint: str, prefix: str, scale: float) -> Result:
    """One (workload, client) run in a child process; its JSON becomes a :class:`Result`."""
    argv = [
        sys.executable, "-m", "etcdlite.bench.clientrun", client, workload,
        "--endpoint", endpoint, "--prefix", prefix, "--scale", repr(scale),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(client),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return Result(workload, client, error=f"exit {proc.returncode}: {tail[0]}", wall_s=wall)
    try:
        metrics = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Result(
            workload, client, error=f"no JSON from the child: {out[-200:]!r}", wall_s=wall
        )
    return Result(workload, client, metrics, wall_s=wall)


async def run_clients(opts: ClientOptions) -> ClientRun:
    progress = Progress(enabled=opts.progress)
    out = ClientRun(opts, started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    begin = time.perf_counter()
    tag = f"{os.getpid()}-{int(time.time())}"
    async with contextlib.AsyncExitStack() as stack:
        if opts.endpoint:
            out.endpoint = opts.endpoint
        else:
            binary = etcd_binary(opts.etcd)
            progress.step("starting target etcd")
            child, _ready = await stack.enter_async_context(start_child("etcd", binary))
            out.endpoint = child.endpoint
            out.temp_dir = child.tmpdir
            out.etcd_version = etcd_version(binary) if binary else None
        plan = [(w, r, c) for w in opts.workloads for r in range(opts.repeat) for c in opts.clients]
        for i, (w, r, c) in enumerate(plan, 1):
            progress.step(f"[{i}/{len(plan)}] {w} @ {c}: {DESCRIPTIONS[w]}")
            prefix = f"etcdlite-bench-clients/{tag}/{w}/{r}/{c}/"
            result = await run_child(c, w, out.endpoint, prefix, opts.scale)
            if result.error is not None:
                progress.say(f"    failed: {result.error}")
            else:
                metric, label = ROWS[w][0]
                progress.say(f"    {result.wall_s:.1f} s: {label} {fmt(_num(result, metric))}")
            out.results.append(result)
    out.runs = out.results
    out.results = merge_repeats(out.runs)
    out.elapsed_s = time.perf_counter() - begin
    return out


def _num(result: Result, metric: str) -> float | None:
    v = result.metrics.get(metric)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def write_json(run: ClientRun, path: str) -> None:
    with open(path, "w") as f:
        json.dump(run.to_json(), f, indent=2, default=str)
        f.write("\n")
