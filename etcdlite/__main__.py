"""``etcdlite serve``: etcd's gRPC API on loopback, backed by an in-memory store.

Flags use etcd's names where they apply::

    etcdlite serve --listen-client-urls http://127.0.0.1:2379

Also runnable as ``python -m etcdlite serve``. ``etcdlite bench`` runs the benchmarks
(:mod:`etcdlite.bench`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._grpc.server import DEFAULT_MAX_CONNECTIONS
from .core.quota import DEFAULT_QUOTA_BYTES
from .errors import TLS_CLIENT_CERT_AUTH_IGNORED, TLS_FILES_IGNORED, TLS_FILES_REQUIRED
from .identity import DEFAULT_CLUSTER_TOKEN, DEFAULT_PEER_URL, member_id
from .server import DEFAULT_MAX_REQUEST_BYTES, parse_listen_url, serve
from .server.tls import server_context
from .store import Store

__all__ = ["main"]

log = logging.getLogger("etcdlite")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcdlite", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve etcd's gRPC API from an in-memory store")
    s.add_argument(
        "--listen-client-urls",
        default="http://127.0.0.1:2379",
        help="comma-separated URLs to listen on (loopback unless --allow-remote)",
    )
    s.add_argument("--advertise-client-urls", default="", help="URLs reported by MemberList")
    s.add_argument("--name", default="default", help="member name")
    s.add_argument(
        "--data-dir",
        default=None,
        help="keep the store in this directory (recovered at start); memory only without it",
    )
    s.add_argument(
        "--initial-advertise-peer-urls",
        default=DEFAULT_PEER_URL,
        help="peer URLs reported by MemberList (with the token, they make the member ID)",
    )
    s.add_argument(
        "--initial-cluster-token",
        default=DEFAULT_CLUSTER_TOKEN,
        help="cluster token (with the peer URLs, it makes the member ID, as in etcd)",
    )
    s.add_argument("--max-txn-ops", type=int, default=128)
    s.add_argument(
        "--quota-backend-bytes",
        type=int,
        default=0,
        help="refuse writes past this database size and raise NOSPACE (0: etcd's 2 GiB; "
        "negative: no quota)",
    )
    s.add_argument(
        "--auth-token-ttl",
        type=int,
        default=300,
        help="seconds an auth token stays valid after its last use",
    )
    s.add_argument(
        "--bcrypt-cost",
        type=int,
        default=10,
        help="bcrypt cost of stored passwords (4..31)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="concurrent client connections per address; more are closed as they arrive",
    )
    s.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    s.add_argument(
        "--experimental-watch-progress-notify-interval",
        default="10m",
        help="progress notification interval (etcd duration, e.g. 10m, 5s, 100ms)",
    )
    s.add_argument("--auto-compaction-mode", choices=("periodic", "revision"), default=None)
    s.add_argument(
        "--auto-compaction-retention",
        default="0",
        help="periodic: a duration (e.g. 1h; a bare number means hours, as in etcd); "
        "revision: a number of revisions",
    )
    s.add_argument("--cert-file", default="", help="path to the client server TLS cert file")
    s.add_argument("--key-file", default="", help="path to the client server TLS key file")
    s.add_argument(
        "--trusted-ca-file",
        default="",
        help="path to the client server TLS trusted CA cert file (checks client certificates)",
    )
    s.add_argument(
        "--client-cert-auth",
        action="store_true",
        help="require a client certificate signed by --trusted-ca-file on every connection",
    )
    s.add_argument(
        "--allow-remote",
        action="store_true",
        help="permit a non-loopback listen address (https://, or with --insecure-remote)",
    )
    s.add_argument(
        "--insecure-remote",
        action="store_true",
        help="permit a non-loopback http:// (plaintext) listen address: anyone who can "
        "reach it can read and write everything",
    )
    s.add_argument("--log-level", default="INFO")
    snap = sub.add_parser("snapshot", help="restore or inspect a snapshot file")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    restore = snap_sub.add_parser("restore", help="install a snapshot as a new data directory")
    restore.add_argument("file")
    restore.add_argument("--data-dir", required=True)
    status = snap_sub.add_parser("status", help="check a snapshot file and report on it")
    status.add_argument("file")
    status.add_argument("-w", "--write-out", choices=("simple", "table", "json"), default="simple")
    from .bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def parse_duration(text: str, bare_unit: float = 1.0) -> float:
    """Go-style durations (``1h30m``, ``500ms``, ``10s``); a bare number is in ``bare_unit``."""
    text = text.strip()
    try:
        return float(text) * bare_unit
    except ValueError:
        pass
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        for unit in ("ms", "us", "µs", "ns", "h", "m", "s"):
            if text.startswith(unit, i):
                if not num:
                    raise ValueError(f"invalid duration {text!r}")
                total += float(num) * units[unit]
                num = ""
                i += len(unit)
                break
        else:
            raise ValueError(f"invalid duration {text!r}")
    if num:
        raise ValueError(f"invalid duration {text!r} (missing unit)")
    return total


class UsageError(Exception):
    """A flag or address that cannot be used: one line to stderr, exit code 2."""


def _listen_addresses(args: argparse.Namespace) -> list[tuple[str, int, bool]]:
    """``(host, port, tls)`` per ``--listen-client-urls`` entry, with etcd's checks of the
    scheme against the TLS flags and etcdlite's own rule for non-loopback addresses."""
    addresses: list[tuple[str, int, bool]] = []
    for url in (u.strip() for u in args.listen_client_urls.split(",")):
        if not url:
            continue
        try:
            host, port = parse_listen_url(url)
        except ValueError as e:
            raise UsageError(f"--listen-client-urls: {e}") from None
        tls = url.startswith("https://")
        if tls and not (args.cert_file and args.key_file):
            raise UsageError(TLS_FILES_REQUIRED.format(url=url))
        if not _is_loopback(host):
            if not args.allow_remote:
                raise UsageError(
                    f"refusing to listen on {url} without --allow-remote: a non-loopback "
                    "address serves everyone who can reach it"
                )
            if not tls and not args.insecure_remote:
                raise UsageError(
                    f"refusing to listen on {url} without TLS: plaintext on a non-loopback "
                    "address lets anyone on the network read and write everything; use "
                    "https:// with --cert-file/--key-file (and --client-cert-auth), or "
                    "--insecure-remote to accept that"
                )
        if any((h, p) == (host, port) for h, p, _ in addresses):
            raise UsageError(
                f"--listen-client-urls: {host}:{port} is given twice (etcdlite serves http "
                "and https on separate ports)"
            )
        addresses.append((host, port, tls))
    if not addresses:
        raise UsageError("--listen-client-urls: no URL given")
    if (args.cert_file or args.client_cert_auth) and not all(t for *_, t in addresses):
        for url in (u.strip() for u in args.listen_client_urls.split(",")):
            if url and not url.startswith("https://"):
                if args.cert_file:
                    log.warning(TLS_FILES_IGNORED.format(url=url))
                if args.client_cert_auth:
                    log.warning(TLS_CLIENT_CERT_AUTH_IGNORED.format(url=url))
    return addresses


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from etcd's flags (``None`` without cert files)."""
    if not (args.cert_file and args.key_file):
        return None
    try:
        return server_context(
            args.cert_file,
            args.key_file,
            trusted_ca_file=args.trusted_ca_file or None,
            client_cert_auth=args.client_cert_auth,
        )
    except (OSError, ssl.SSLError) as e:
        raise UsageError(
            f"cannot load TLS files (--cert-file, --key-file, --trusted-ca-file): {e}"
        ) from None


def _store_options(args: argparse.Namespace) -> dict[str, Any]:
    retention: float = 0
    try:
        if args.auto_compaction_mode == "periodic":
            retention = parse_duration(args.auto_compaction_retention, bare_unit=3600)
        elif args.auto_compaction_mode == "revision":
            retention = int(args.auto_compaction_retention)
        progress = parse_duration(args.experimental_watch_progress_notify_interval)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if min(args.max_txn_ops, args.max_request_bytes, args.max_connections) < 1:
        raise UsageError(
            "--max-txn-ops, --max-request-bytes and --max-connections must be positive"
        )
    if not 4 <= args.bcrypt_cost <= 31:
        raise UsageError(f"--bcrypt-cost must be within 4..31, not {args.bcrypt_cost}")
    if args.auth_token_ttl <= 0:
        raise UsageError("--auth-token-ttl must be positive")
    peers = [u for u in args.initial_advertise_peer_urls.split(",") if u]
    return {
        "auth_token_ttl": args.auth_token_ttl,
        "bcrypt_cost": args.bcrypt_cost,
        "max_txn_ops": args.max_txn_ops,
        "watch_progress_notify_interval": progress,
        "auto_compaction_mode": args.auto_compaction_mode,
        "auto_compaction_retention": retention,
        "member_id": member_id(peers, args.initial_cluster_token),
        "data_dir": args.data_dir,
        "quota_bytes": (
            None
            if args.quota_backend_bytes < 0
            else args.quota_backend_bytes or DEFAULT_QUOTA_BYTES
        ),
    }


def open_store(options: dict[str, Any]) -> Store:
    """The server's store. A recovered data directory is millions of long-lived objects:
    loaded with the collector off and then frozen (:func:`gc.freeze`), no collection ever
    walks them again (the first one after a load of 1M revisions took ~0.2 s before the
    first answer, and each later full collection as long). The server owns its process's
    collector; an embedded Store leaves the host's alone."""
    if options.get("data_dir") is None:
        return Store(**options)
    gc.disable()
    try:
        return Store(**options)
    finally:
        gc.freeze()
        gc.enable()


async def run_server(args: argparse.Namespace) -> int:
    try:
        listen = _listen_addresses(args)
        context = _tls_context(args)
        options = _store_options(args)
    except UsageError as e:
        print(f"etcdlite: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    refusals: tuple[type[Exception], ...] = (OSError,)
    if args.data_dir is not None:  # the storage modules load only for a data directory
        from .storage.errors import StorageError

        refusals = (OSError, StorageError)
    try:
        store = open_store(options)
    except refusals as e:
        print(f"etcdlite: cannot open --data-dir {args.data_dir}: {e}", file=sys.stderr)
        return 2
    advertise = [u for u in args.advertise_client_urls.split(",") if u]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    addresses = [(h, p) for h, p, _ in listen]
    contexts = [context if tls else None for *_, tls in listen]
    (host, port), *rest = addresses
    also = [(h, p, c) for (h, p), c in zip(rest, contexts[1:], strict=True)]
    try:
        async with (
            store,
            serve(
                store,
                host=host,
                port=port,
                also=also,
                name=args.name,
                advertise_client_urls=advertise or None,
                peer_urls=[u for u in args.initial_advertise_peer_urls.split(",") if u],
                max_request_bytes=args.max_request_bytes,
                max_connections=args.max_connections,
                ssl=contexts[0],
                client_cert_auth=args.client_cert_auth,
            ) as server,
        ):
            bound = zip(addresses, server.ports, strict=True)
            log.info(
                "etcdlite ready to serve client requests on %s (name %s, %.0f ms)",
                ", ".join(f"{h}:{p}" for (h, _), p in bound),
                args.name,
                (time.perf_counter() - started) * 1000,
            )
            await stop.wait()
            log.info("shutting down")
    except OSError as e:  # only binding raises it here
        reason = os.strerror(e.errno) if e.errno else str(e)
        print(f"etcdlite: cannot listen on {_failed(addresses, e)}: {reason}", file=sys.stderr)
        return 2
    return 0


def run_snapshot(args: argparse.Namespace) -> int:
    """``etcdlite snapshot restore FILE --data-dir D`` / ``etcdlite snapshot status FILE``,
    on etcdlite's snapshot files (what ``etcdctl snapshot save`` fetched from etcdlite)."""
    from .storage import StorageError, restore_snapshot, snapshot_status

    try:
        if args.snapshot_command == "restore":
            revision = restore_snapshot(args.file, args.data_dir)
            print(f"restored snapshot at revision {revision} to {args.data_dir}")
            return 0
        st = snapshot_status(args.file)
    except (StorageError, OSError) as e:
        print(f"etcdlite: {e}", file=sys.stderr)
        return 2
    if args.write_out == "json":
        print(
            json.dumps(
                {
                    "hash": st.hash,
                    "revision": st.revision,
                    "totalKey": st.total_keys,
                    "totalSize": st.total_size,
                }
            )
        )
    elif args.write_out == "table":
        print("+----------+----------+------------+------------+")
        print("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |")
        print("+----------+----------+------------+------------+")
        print(f"| {st.hash:8x} | {st.revision:8} | {st.total_keys:10} | {st.total_size:10} |")
        print("+----------+----------+------------+------------+")
    else:  # etcdctl's simple form: hash, revision, total keys, total size
        print(f"{st.hash:x}, {st.revision}, {st.total_keys}, {st.total_size}")
    return 0


def _failed(addresses: list[tuple[str, int]], error: OSError) -> str:
    """The address an OSError from binding names (asyncio's text names it), else all."""
    text = str(error)
    for host, port in addresses:
        if f"({host!r}, {port})" in text or f"{host}:{port}" in text:
            return f"{host}:{port}"
    return ", ".join(f"{h}:{p}" for h, p in addresses)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        return asyncio.run(run_server(args))
    if args.command == "snapshot":
        return run_snapshot(args)
    if args.command == "bench":
        from .bench.cli import run as run_bench

        return run_bench(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
