"""Targets: what a workload runs against, and the child processes behind them.

* ``embedded``: a fresh :class:`~etcdlite.Store` per session, in this process (its CPU is
  this whole process's, store and benchmark loop together);
* ``serve``: an ``etcdlite serve`` child on a free loopback port;
* ``etcd``: a real etcd child on free loopback ports with a temp data dir (on tmpfs when
  ``/dev/shm`` is writable, so etcd's fsyncs do not dominate);
* with ``data_parent`` (``--data-dir-parent DIR``) both children keep their data under
  ``DIR`` instead, and ``serve`` gets ``--data-dir`` there: durable against durable, on the
  same disk;
* ``endpoint``: any running server (``--endpoint host:port``; CPU only with ``--pid``).

Wire targets are driven with etcdlite's own :class:`~etcdlite.Client`, whatever the server,
and their CPU is read from ``/proc/<pid>/stat`` of the server process. Every child is
started in ``try``/``finally``: it is stopped (SIGTERM, then SIGKILL) and its temp dir
removed however the benchmark ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from ..api import KV
from ..client import Client
from ..errors import EtcdError
from ..store import Store
from ..types import PermissionType
from .measure import proc_cpu_seconds

__all__ = [
    "TARGET_NAMES",
    "Child",
    "ChildTarget",
    "EmbeddedTarget",
    "EndpointTarget",
    "Target",
    "TargetError",
    "etcd_binary",
    "etcd_version",
    "free_port",
    "start_child",
    "tmp_parent",
]

TARGET_NAMES = ("embedded", "serve", "etcd", "endpoint")
#: How long a child may take to answer its first request.
READY_TIMEOUT = 30.0
#: Key the readiness probe reads (a point read: works on an empty store).
PROBE_KEY = b"etcdlite-bench/ready"


class TargetError(RuntimeError):
    """A target could not be started or reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("ETCD_BINARY") or shutil.which("etcd")


def etcd_version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return None


_libc: Any = None


def _load_libc() -> bool:
    """libc for :func:`_die_with_parent`, loaded in the parent (not between fork and exec)."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    return bool(_libc)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the child if the benchmark process dies without cleaning up."""
    if _libc:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tmp_parent() -> str | None:
    """``/dev/shm`` if writable (tmpfs: fsync costs nothing there), else the default."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


class Child:
    """A server child process on loopback; :meth:`stop` always cleans up."""

    def __init__(self, kind: str, argv: list[str], endpoint: str, tmpdir: str) -> None:
        self.kind = kind
        self.argv = argv
        self.endpoint = endpoint
        self.tmpdir = tmpdir
        self.log_path = os.path.join(tmpdir, f"{kind}.log")
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, env: dict[str, str] | None = None, *, die_with_parent: bool = True) -> None:
        """Start the child. ``die_with_parent`` (Linux) also has it killed if this process
        dies uncleanly; it costs a full fork instead of vfork, so start-up measurements
        (whose children live for a moment inside ``try``/``finally``) go without it."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if die_with_parent and _load_libc() else None,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise TargetError(
                f"{self.kind} exited with code {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _serve_child(tmpdir: str, data: str | None) -> tuple[Child, dict[str, str]]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "etcdlite",
        "serve",
        "--listen-client-urls",
        f"http://127.0.0.1:{port}",
    ]
    if data is not None:
        argv += ["--data-dir", data]
    env = dict(os.environ)
    # The child imports this very etcdlite, installed or not.
    root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return Child("serve", argv, f"127.0.0.1:{port}", tmpdir), env


def _etcd_child(binary: str, tmpdir: str, data: str) -> Child:
    client_port, peer_port = free_port(), free_port()
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    argv = [
        binary,
        "--name",
        "bench",
        "--data-dir",
        data,
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"bench={peer_url}",
    ]
    return Child("etcd", argv, f"127.0.0.1:{client_port}", tmpdir)


def _accepts(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


async def wait_ready(child: Child, timeout: float = READY_TIMEOUT) -> None:
    """Until a client request to the child succeeds (bounded by ``timeout``). A cheap TCP
    connect is polled first (every 2 ms), so probing steals little CPU from the start-up."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline and not _accepts(child.endpoint):
        child.check_alive()
        await asyncio.sleep(0.002)
    while time.monotonic() < deadline:
        child.check_alive()
        client = Client(child.endpoint, timeout=max(0.05, min(5.0, deadline - time.monotonic())))
        try:
            await client.get(PROBE_KEY)
            return
        except Exception as e:  # refused, no leader yet, timeout: try again
            last = e
        finally:
            await client.close()
        await asyncio.sleep(0.005)
    raise TargetError(f"{child.kind} not ready after {timeout} s ({last!r}):\n{child.log_tail()}")


@contextlib.asynccontextmanager
async def start_child(
    kind: str,
    etcd: str | None = None,
    *,
    die_with_parent: bool = True,
    data_parent: str | None = None,
    data_dir: str | None = None,
) -> AsyncIterator[tuple[Child, float]]:
    """Start a ``serve`` or ``etcd`` child; yields it and its time to ready (seconds, from
    spawn to the first successful request); always stops it. With ``data_parent`` the
    child's data lives there (``serve`` with ``--data-dir``), else in memory or on tmpfs.
    With ``data_dir`` the child uses that directory (``serve`` with ``--data-dir``), which
    outlives it: a restart of the same data."""
    tmpdir = tempfile.mkdtemp(prefix=f"etcdlite-bench-{kind}-", dir=data_parent or tmp_parent())
    env: dict[str, str] | None = None
    durable = data_dir or (os.path.join(tmpdir, "data") if data_parent is not None else None)
    if kind == "serve":
        child, env = _serve_child(tmpdir, durable)
    elif kind == "etcd":
        if etcd is None:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise TargetError("etcd is not installed (no `etcd` on PATH, no ETCD_BINARY)")
        child = _etcd_child(etcd, tmpdir, data_dir or os.path.join(tmpdir, "data"))
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise ValueError(f"unknown child kind {kind!r}")
    try:
        started = time.perf_counter()
        child.spawn(env, die_with_parent=die_with_parent)
        await wait_ready(child)
        yield child, time.perf_counter() - started
    finally:
        child.stop()


#: The user ``bench --auth`` runs workloads as.
BENCH_USER = ("bench", "bench")


async def enable_bench_auth(kv: KV) -> None:
    """Users root and :data:`BENCH_USER` (READWRITE on every key, not root), auth on."""
    a = kv.auth
    await a.user_add("root", "root")
    await a.user_grant_role("root", "root")
    await a.user_add(*BENCH_USER)
    await a.role_add("everything")
    await a.role_grant_permission("everything", PermissionType.READWRITE, b"", b"\0")
    await a.user_grant_role(BENCH_USER[0], "everything")
    await a.enable()


async def _auth_enabled(client: Client) -> bool:
    try:
        await client.auth.user_list()
    except EtcdError:
        return True  # refused: auth is on already (set up by an earlier session)
    return False


class Target:
    """Where workloads run; :meth:`session` opens the KV a workload uses."""

    name = ""
    wire = True
    #: Spawn-to-first-answer time of the target's child, if it started one.
    ready_s: float | None = None
    #: ``bench --auth``: auth enabled, every workload run as user ``bench``, which may
    #: READWRITE every key without being root (so each request pays the range check).
    auth = False

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start what the target needs; cleanup goes on ``stack``."""

    def session(self, **store_options: Any) -> contextlib.AbstractAsyncContextManager[KV]:
        raise NotImplementedError

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the server (None if unknown)."""
        return None

    def info(self) -> dict[str, object]:
        return {"name": self.name}


class EmbeddedTarget(Target):
    name = "embedded"
    wire = False

    @contextlib.asynccontextmanager
    async def session(self, **store_options: Any) -> AsyncIterator[KV]:
        if self.auth:
            store_options.setdefault("bcrypt_cost", 4)
        async with Store(**store_options) as store:
            if not self.auth:
                yield store
                return
            await enable_bench_auth(store)
            yield await store.login(*BENCH_USER)

    def cpu_seconds(self) -> float | None:
        return time.process_time()

    def info(self) -> dict[str, object]:
        return {"name": self.name, "cpu": "this process (store and benchmark loop)"}


class _WireTarget(Target):
    endpoint = ""
    pid: int | None = None

    @contextlib.asynccontextmanager
    async def session(self, **store_options: Any) -> AsyncIterator[KV]:
        if not self.auth:
            async with Client(self.endpoint) as client:
                yield client
            return
        async with Client(self.endpoint) as owner:
            if not await _auth_enabled(owner):
                await enable_bench_auth(owner)
        name, password = BENCH_USER
        async with Client(self.endpoint, username=name, password=password) as client:
            yield client

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        return proc_cpu_seconds(self.pid)

    def info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "pid": self.pid,
            "ready_s": self.ready_s,
            "cpu": f"/proc/{self.pid}/stat utime+stime" if self.pid else None,
        }


class ChildTarget(_WireTarget):
    """``serve`` or ``etcd``: a child started for the run."""

    def __init__(self, kind: str, etcd: str | None = None, data_parent: str | None = None) -> None:
        self.name = kind
        self.etcd = etcd
        self.data_parent = data_parent
        self.child: Child | None = None

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        child, ready = await stack.enter_async_context(
            start_child(self.name, self.etcd, data_parent=self.data_parent)
        )
        self.child = child
        self.endpoint = child.endpoint
        self.pid = child.pid
        self.ready_s = ready

    def cpu_seconds(self) -> float | None:
        if self.child is not None:
            self.child.check_alive()
        return super().cpu_seconds()

    def info(self) -> dict[str, object]:
        info = super().info()
        if self.name == "etcd" and self.etcd:
            info["version"] = etcd_version(self.etcd)
            info["binary"] = self.etcd
        if self.name == "serve":
            info["data_dir"] = self.data_parent is not None
        if self.child is not None:
            info["data_dir_parent"] = os.path.dirname(self.child.tmpdir)
            info["temp_dir"] = self.child.tmpdir  # removed when the run ends
        return info


class EndpointTarget(_WireTarget):
    """A server someone else runs."""

    name = "endpoint"

    def __init__(self, endpoint: str, pid: int | None = None) -> None:
        self.endpoint = endpoint
        self.pid = pid

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        client = Client(self.endpoint, timeout=5.0)
        try:
            await client.get(PROBE_KEY)
        except Exception as e:
            raise TargetError(f"endpoint {self.endpoint} does not answer: {e!r}") from e
        finally:
            await client.close()
