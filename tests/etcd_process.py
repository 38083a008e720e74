"""Start and stop a real etcd (the oracle) on free loopback ports with a temp data dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["EtcdMissing", "etcd_binary", "etcd_version", "free_port", "running_etcd"]


class EtcdMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str | None:
    return os.environ.get("ETCD_BINARY") or shutil.which("etcd")


def etcd_version() -> tuple[int, ...] | None:
    binary = etcd_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return tuple(int(p) for p in line.split(":", 1)[1].strip().split("."))
    return None


def _wait_ready(log_path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until etcd logs that it serves clients (it has elected itself leader by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited early with code {proc.returncode}")
        with open(log_path, "rb") as f:
            if b"ready to serve client requests" in f.read():
                return
        time.sleep(0.05)
    raise RuntimeError("etcd did not become ready in time")


@contextmanager
def running_etcd(*extra_args: str) -> Iterator[str]:
    """Run etcd on 127.0.0.1 only; yields its ``host:port``; always stops it."""
    binary = etcd_binary()
    if binary is None:
        raise EtcdMissing("etcd is not installed (apt-get install -y etcd-server etcd-client)")
    client_port, peer_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="etcdlite-oracle-")
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    log_path = os.path.join(data_dir, "etcd.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            "--name",
            "oracle",
            "--data-dir",
            os.path.join(data_dir, "data"),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"oracle={peer_url}",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(log_path, proc)
        yield f"127.0.0.1:{client_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
