"""``etcdlite bench``: the command line (kept light: the workloads load only when it runs).

::

    etcdlite bench put --target embedded
    etcdlite bench all --compare embedded,serve,etcd --json bench.json
    etcdlite bench range,get --endpoint 127.0.0.1:2379 --pid 1234
    etcdlite bench all --scale 0.01        # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys

__all__ = ["add_parser", "run"]

TARGETS = ("embedded", "serve", "etcd", "endpoint")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "bench",
        help="benchmark etcdlite against real etcd and the Python floor",
        description="Run workloads on the embedded store, an `etcdlite serve` child, a real "
        "etcd child or a given endpoint, and print one table with ratios. Progress goes to "
        "stderr, the table to stdout.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("::", 1)[1] if __doc__ else None,
    )
    b.add_argument(
        "workload",
        nargs="?",
        default="all",
        help="a workload, a group (all, watch-fanout, lease) or a comma-separated list; "
        "--list shows them",
    )
    b.add_argument("--target", choices=TARGETS, help="one target (default: embedded)")
    b.add_argument(
        "--compare",
        metavar="T1,T2,…",
        help="several targets in one run, e.g. embedded,serve,etcd (ratios against etcd)",
    )
    b.add_argument("--endpoint", metavar="HOST:PORT", help="a running server (target endpoint)")
    b.add_argument("--pid", type=int, help="the endpoint server's pid, for its CPU per op")
    b.add_argument("--etcd", metavar="PATH", help="etcd binary (default: $ETCD_BINARY, PATH)")
    b.add_argument("--json", metavar="FILE", help="write machine-readable results to FILE")
    b.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size (0.01: a smoke run)"
    )
    b.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run each workload N times, alternating the targets; report medians",
    )
    b.add_argument("--list", action="store_true", help="list the workloads and exit")
    b.add_argument("--quiet", action="store_true", help="no progress on stderr")
    b.add_argument("--log-level", default="WARNING")


def _targets(args: argparse.Namespace) -> list[str]:
    if args.compare:
        names = [t.strip() for t in args.compare.split(",") if t.strip()]
    elif args.target:
        names = [args.target]
    elif args.endpoint:
        names = ["endpoint"]
    else:
        names = ["embedded"]
    for t in names:
        if t not in TARGETS:
            raise ValueError(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    if len(set(names)) != len(names):
        raise ValueError("a target is named twice")
    if "endpoint" in names and not args.endpoint:
        raise ValueError("the endpoint target needs --endpoint HOST:PORT")
    if args.endpoint and "endpoint" not in names:
        raise ValueError("--endpoint is the endpoint target: name it in --target/--compare")
    return names


def run(args: argparse.Namespace) -> int:
    from .report import evaluate
    from .runner import Options, run_sync, write_json
    from .workloads import GROUPS, WORKLOADS, select

    if args.list:
        for w in WORKLOADS:
            where = {"all": "every target", "embedded": "embedded only"}.get(
                w.where, "embedded, serve, etcd"
            )
            print(f"{w.name:18} {w.description} ({where})")
        print("groups: " + ", ".join(f"{g} ({', '.join(ws)})" for g, ws in GROUPS.items()))
        return 0
    try:
        workloads = select(args.workload)
        targets = _targets(args)
        if args.scale <= 0:
            raise ValueError("--scale must be positive")
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
    except ValueError as e:
        print(f"etcdlite bench: {e}", file=sys.stderr)
        return 2
    opts = Options(
        workloads=workloads,
        targets=targets,
        scale=args.scale,
        repeat=args.repeat,
        endpoint=args.endpoint,
        pid=args.pid,
        etcd=args.etcd,
        json_path=args.json,
        progress=not args.quiet,
        command=shlex.join(["etcdlite", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith(("etcdlite", "__main__.py"))
        else "etcdlite bench",
    )
    try:
        result = run_sync(opts)
    except KeyboardInterrupt:
        print("etcdlite bench: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:  # SIGTERM
        print("etcdlite bench: terminated", file=sys.stderr)
        return 143
    except Exception as e:  # a target that does not start
        print(f"etcdlite bench: {e}", file=sys.stderr)
        return 1
    print(result.table())
    checks = evaluate(result.results)
    if checks:
        print("\nTargets (issue 6):")
        for c in checks:
            verdict = "n/a " if c.ok is None else "ok  " if c.ok else "MISS"
            print(f"  {verdict} {c.check.text}: {c.short()}")
    print(
        "\nCPU: embedded = this whole process; serve/etcd/endpoint = the server process "
        "(/proc/<pid>/stat utime+stime)."
    )
    if args.json:
        write_json(result, args.json)
    return 1 if any(r.error for r in result.results) else 0
