"""``/metrics``: etcd's Prometheus metrics that etcdlite has, in the text exposition format
0.0.4, with etcd 3.4's names, types, labels and HELP texts.

Written by hand rather than with ``prometheus_client``: etcdlite keeps no registry, every
value is read from the server when scraped (so a request costs nothing extra), and the
format is a few lines; that keeps the runtime dependencies at grpclib, betterproto2,
sortedcontainers and h11. The tests parse the output with ``prometheus_client``'s parser.

Counting on the request path is one list increment per unary RPC, in
:meth:`~etcdlite.server.methods.UnaryMethod.invoke` (on both gRPC paths and the gateway).
Differences from etcd:

* ``grpc_server_started_total`` of a unary RPC is counted when it ends (it equals the
  handled count; etcd counts it on arrival, so etcd's is larger by the in-flight ones);
* ``grpc_server_handling_seconds`` is not exported (etcd only has it with
  ``--metrics extensive``, which would put two clock reads on every request);
* like etcd, the grpc series are pre-populated with zeros for every method of KV, Watch,
  Lease, Cluster, Auth, Maintenance and Health and every code; v3lock and v3election
  series appear once used.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..services import EtcdServer

__all__ = ["CODE_NAMES", "CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: grpc-go's code names, by code.
CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip

_PREPOPULATED = ("etcdserverpb.", "grpc.health.v1.")
_STREAM_TYPES = {
    "/etcdserverpb.Watch/Watch": "bidi_stream",
    "/etcdserverpb.Lease/LeaseKeepAlive": "bidi_stream",
    "/etcdserverpb.Maintenance/Snapshot": "server_stream",
    "/grpc.health.v1.Health/Watch": "server_stream",
    "/v3electionpb.Election/Observe": "server_stream",
}


_DB_HELP = "Total size of the underlying database physically allocated in bytes."
_CLUSTER_VERSION_HELP = (
    "Which version is running. 1 for 'cluster_version' label with current cluster version"
)
_ID_HELP = "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."
_VERSION_HELP = "Which version is running. 1 for 'server_version' label with current version."


def _family(name: str, kind: str, help_: str, samples: Iterable[str]) -> str:
    return f"# HELP {name} {help_}\n# TYPE {name} {kind}\n" + "".join(samples)


def _one(name: str, kind: str, help_: str, value: float, labels: str = "") -> str:
    return _family(name, kind, help_, [f"{name}{labels} {_num(value)}\n"])


def _num(v: float) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))


def _grpc(etcd: EtcdServer, paths: Iterable[str]) -> str:
    unary = etcd.unary_methods()
    started: list[str] = []
    handled: list[str] = []
    for path in sorted(paths):
        service, method = path.lstrip("/").rsplit("/", 1)
        kind = _STREAM_TYPES.get(path, "unary")
        if path in unary:
            counts = unary[path].handled
            total = sum(counts)
        else:
            counts = etcd.stream_handled.get(path) or [0] * len(CODE_NAMES)
            total = etcd.stream_started.get(path, 0)
        if total == 0 and not service.startswith(_PREPOPULATED):
            continue
        base = f'grpc_method="{method}",grpc_service="{service}",grpc_type="{kind}"'
        started.append(f"grpc_server_started_total{{{base}}} {total}\n")
        for code, n in enumerate(counts):
            handled.append(
                f'grpc_server_handled_total{{grpc_code="{CODE_NAMES[code]}",{base}}} {n}\n'
            )
    return _family(
        "grpc_server_handled_total",
        "counter",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        handled,
    ) + _family(
        "grpc_server_started_total",
        "counter",
        "Total number of RPCs started on the server.",
        started,
    )


def _process() -> str:
    t = os.times()
    rows: list[tuple[str, str, str, float]] = [
        ("process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.", t.user + t.system),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.",
         resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
    ]  # fmt: skip
    try:
        rows.append(("process_open_fds", "gauge", "Number of open file descriptors.",
                     len(os.listdir("/proc/self/fd"))))  # fmt: skip
        with open("/proc/self/statm") as f:
            vsz, rss = (int(x) for x in f.read().split()[:2])
        page = os.sysconf("SC_PAGE_SIZE")
        rows += [
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
             rss * page),
            ("process_start_time_seconds", "gauge",
             "Start time of the process since unix epoch in seconds.", _start_time()),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
             vsz * page),
        ]  # fmt: skip
    except OSError:  # pragma: no cover - not Linux
        pass
    return "".join(_one(*row) for row in rows)


def _start_time() -> float:
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def render(etcd: EtcdServer, grpc_paths: Iterable[str], health_ok: int, health_failed: int) -> str:
    """Every metric family, scraped now."""
    store = etcd.store
    core = store.core
    db = etcd.db_size()
    # (name, type, HELP as etcd 3.4.23 writes it, value, labels)
    table: list[tuple[str, str, str, float, str]] = [
        ("etcd_cluster_version", "gauge", _CLUSTER_VERSION_HELP, 1, '{cluster_version="3.4"}'),
        ("etcd_debugging_auth_revision", "gauge", "The current revision of auth store.",
         store.auth_store.revision, ""),
        ("etcd_debugging_mvcc_compact_revision", "gauge",
         "The revision of the last compaction in store.", max(core.compacted_revision, 0), ""),
        ("etcd_debugging_mvcc_current_revision", "gauge", "The current revision of store.",
         core.revision, ""),
        ("etcd_debugging_mvcc_db_total_size_in_bytes", "gauge", _DB_HELP, db, ""),
        ("etcd_debugging_mvcc_keys_total", "gauge", "Total number of keys.", len(core), ""),
        ("etcd_debugging_mvcc_watch_stream_total", "gauge", "Total number of watch streams.",
         len(etcd.watch_streams), ""),
        ("etcd_debugging_mvcc_watcher_total", "gauge", "Total number of watchers.",
         len(store.watches), ""),
        ("etcd_mvcc_db_total_size_in_bytes", "gauge", _DB_HELP, db, ""),
        ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge",
         "Total size of the underlying database logically in use in bytes.", db, ""),
        ("etcd_server_has_leader", "gauge",
         "Whether or not a leader exists. 1 is existence, 0 is not.", 1, ""),
        ("etcd_server_health_failures", "counter", "The total number of failed health checks",
         health_failed, ""),
        ("etcd_server_health_success", "counter", "The total number of successful health checks",
         health_ok, ""),
        ("etcd_server_id", "gauge", _ID_HELP, 1, f'{{server_id="{core.member_id:x}"}}'),
        ("etcd_server_is_leader", "gauge",
         "Whether or not this member is a leader. 1 if is, 0 otherwise.", 1, ""),
        ("etcd_server_version", "gauge", _VERSION_HELP, 1, '{server_version="3.4.23"}'),
        ("etcdlite_leases", "gauge", "Number of live leases (etcdlite only).",
         len(core.lessor), ""),
    ]  # fmt: skip
    parts = [_one(*row) for row in table]
    parts += [_grpc(etcd, grpc_paths), _process()]
    return "".join(parts)
