"""``etcdlite bench``: the command line (kept light: the workloads load only when it runs).

::

    etcdlite bench put --target embedded
    etcdlite bench all --compare embedded,serve,etcd --json bench.json
    etcdlite bench range,get --endpoint 127.0.0.1:2379 --pid 1234
    etcdlite bench all --scale 0.01        # a smoke run of a few seconds
    etcdlite bench --clients etcdlite,aetcd,etcd3 --repeat 3   # clients against one etcd
    etcdlite bench put,put-16 --compare serve,etcd --data-dir-parent /var/tmp   # durable
    etcdlite bench restart --compare serve,etcd   # restart holding 1M revisions (minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    b.add_argument(
        "--clients",
        metavar="C1,C2,…",
        help="compare Python clients (etcdlite, aetcd, etcd3) against one real etcd, each in "
        "a process of its own, ratios against aetcd; workloads: all or "
        "put,get,put-16,range,watch,keepalive (aetcd and etcd3 come with the test extra)",
    )
    b.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help="a running server (target endpoint; with --clients: the etcd to use)",
    )
    b.add_argument("--pid", type=int, help="the endpoint server's pid, for its CPU per op")
    b.add_argument("--etcd", metavar="PATH", help="etcd binary (default: $ETCD_BINARY, PATH)")
    b.add_argument(
        "--data-dir-parent",
        metavar="DIR",
        help="keep the serve and etcd children's data under DIR (serve with --data-dir): "
        "durable against durable on one disk (default: serve in memory, etcd on tmpfs)",
    )
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
    b.add_argument(
        "--auth",
        action="store_true",
        help="auth enabled: run the workloads as a non-root user allowed every key",
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


def _command() -> str:
    if sys.argv and sys.argv[0].endswith(("etcdlite", "__main__.py")):
        return shlex.join(["etcdlite", *sys.argv[1:]])
    return "etcdlite bench"


def run_clients(args: argparse.Namespace) -> int:
    """``--clients``: the client axis (:mod:`.clients`)."""
    from .clients import ClientOptions, missing_clients, parse_clients, select_workloads, write_json
    from .clients import run_clients as run_all
    from .runner import run_cancellable

    try:
        if args.compare or args.target or args.pid:
            raise ValueError("--clients runs against one etcd: no --target/--compare/--pid")
        clients = parse_clients(args.clients)
        workloads = select_workloads(args.workload)
        if args.scale <= 0:
            raise ValueError("--scale must be positive")
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
    except ValueError as e:
        print(f"etcdlite bench: {e}", file=sys.stderr)
        return 2
    missing = missing_clients(clients)
    if missing:
        from .clientrun import EXTRA_HINT

        print(f"etcdlite bench: {', '.join(missing)} not installed: {EXTRA_HINT}", file=sys.stderr)
        return 2
    opts = ClientOptions(
        clients=clients,
        workloads=workloads,
        scale=args.scale,
        repeat=args.repeat,
        endpoint=args.endpoint,
        etcd=args.etcd,
        progress=not args.quiet,
        command=_command(),
    )
    try:
        result = run_cancellable(run_all(opts))
    except KeyboardInterrupt:
        print("etcdlite bench: interrupted", file=sys.stderr)
        return 130
    except asyncio.CancelledError:  # SIGTERM
        print("etcdlite bench: terminated", file=sys.stderr)
        return 143
    except Exception as e:  # etcd does not start
        print(f"etcdlite bench: {e}", file=sys.stderr)
        return 1
    print(result.table())
    ref = f"ratios: client/{result.reference}" if result.reference else "no aetcd: no ratios"
    print(
        f"\netcd {result.etcd_version or '?'} at {result.endpoint}; {ref} (rates: > 1 faster; "
        "CPU, latency: < 1 cheaper). Client CPU: the client's own process (all threads)."
    )
    if args.json:
        write_json(result, args.json)
    return 1 if any(r.error for r in result.results) else 0


def run(args: argparse.Namespace) -> int:
    if args.clients:
        return run_clients(args)
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
        from .clients import DESCRIPTIONS

        print("\nwith --clients etcdlite,aetcd,etcd3 (one real etcd, a process per client):")
        for name, text in DESCRIPTIONS.items():
            print(f"{name:18} {text}")
        return 0
    try:
        workloads = select(args.workload)
        targets = _targets(args)
        if args.scale <= 0:
            raise ValueError("--scale must be positive")
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        if args.data_dir_parent is not None and not os.path.isdir(args.data_dir_parent):
            raise ValueError(f"--data-dir-parent {args.data_dir_parent!r} is not a directory")
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
        command=_command(),
        auth=args.auth,
        data_parent=args.data_dir_parent,
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
        print("\nTargets (issues 6 and 14):")
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
