"""A real 3-member etcd cluster on loopback for the cluster Client's tests.

Members are real processes driven with real signals: ``kill`` (SIGKILL), ``restart`` (same
data dir), ``stop``/``cont`` (SIGSTOP/SIGCONT). Everything is stopped and removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .launch import EtcdMissing, etcd_binary, free_port

__all__ = ["Cluster", "Member", "running_cluster"]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    log_offset: int = field(default=0)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "etcd.log")


class Cluster:
    def __init__(self, size: int, root: str, extra: tuple[str, ...], tls: bool = False) -> None:
        self.root = root
        self.tls = tls
        self.extra = extra
        self.members = [
            Member(f"m{i}", free_port(), free_port(), os.path.join(root, f"m{i}"))
            for i in range(1, size + 1)
        ]
        self.initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member(self, endpoint: str) -> Member:
        return next(m for m in self.members if m.endpoint == endpoint)

    def start(self, m: Member, state: str = "new") -> None:
        binary = etcd_binary()
        assert binary is not None
        os.makedirs(m.data_dir, exist_ok=True)
        client_url = f"{'https' if self.tls else 'http'}://127.0.0.1:{m.client_port}"
        peer_url = f"http://127.0.0.1:{m.peer_port}"
        log = open(m.log_path, "ab")  # noqa: SIM115 - the child holds it; closed right after
        m.log_offset = os.path.getsize(m.log_path)
        m.proc = subprocess.Popen(
            [
                binary,
                "--name",
                m.name,
                "--data-dir",
                os.path.join(m.data_dir, "data"),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                self.initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                os.path.basename(self.root),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        m.stopped = False

    def wait_ready(self, m: Member, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert m.proc is not None
            if m.proc.poll() is not None:
                raise RuntimeError(f"{m.name} exited with {m.proc.returncode}")
            with open(m.log_path, "rb") as f:
                f.seek(m.log_offset)
                if b"ready to serve client requests" in f.read():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{m.name} did not become ready")

    def kill(self, m: Member) -> None:
        """SIGKILL: no goodbye to peers or clients."""
        assert m.proc is not None
        if m.stopped:
            m.proc.send_signal(signal.SIGCONT)
        m.proc.kill()
        m.proc.wait()
        m.proc = None

    def restart(self, m: Member) -> None:
        self.start(m, state="existing")
        self.wait_ready(m)

    def stop(self, m: Member) -> None:
        """SIGSTOP: the member keeps its sockets but answers nothing."""
        assert m.proc is not None
        m.proc.send_signal(signal.SIGSTOP)
        m.stopped = True

    def cont(self, m: Member) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGCONT)
        m.stopped = False

    def status(self) -> list[dict[str, object]]:
        """``etcdctl endpoint status`` of the running, unstopped members."""
        eps = [m.endpoint for m in self.members if m.proc is not None and not m.stopped]
        out = subprocess.run(
            ["etcdctl", "--endpoints", ",".join(eps), "endpoint", "status", "-w", "json"],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        return list(json.loads(out.stdout or "[]"))

    def leader(self, timeout: float = 15.0) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for st in self.status():
                status = st["Status"]
                assert isinstance(status, dict)
                if status["leader"] and status["leader"] == status["header"]["member_id"]:
                    return self.member(str(st["Endpoint"]))
            time.sleep(0.1)
        raise RuntimeError("no leader")

    def heal(self) -> None:
        """Every member running and answering again, and a leader elected."""
        dead = [m for m in self.members if m.proc is None]
        for m in self.members:
            if m.stopped:
                self.cont(m)
        # all restarted before waiting: a lone member is not ready until it has a quorum
        for m in dead:
            self.start(m, state="existing")
        for m in dead:
            self.wait_ready(m)
        self.leader()

    def close(self) -> None:
        for m in self.members:
            if m.proc is not None:
                if m.stopped:
                    m.proc.send_signal(signal.SIGCONT)
                m.proc.kill()
                m.proc.wait()
                m.proc = None


@contextmanager
def running_cluster(size: int = 3, *extra: str, tls: bool = False) -> Iterator[Cluster]:
    """``tls``: clients speak TLS (pass ``--cert-file`` etc. in ``extra``)."""
    if etcd_binary() is None or shutil.which("etcdctl") is None:
        raise EtcdMissing("etcd/etcdctl are not installed")
    root = tempfile.mkdtemp(prefix="etcdlite-cluster-")
    cluster = Cluster(size, root, extra, tls)
    try:
        for m in cluster.members:
            cluster.start(m)
        for m in cluster.members:
            cluster.wait_ready(m)
        if not tls:
            cluster.leader()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)
