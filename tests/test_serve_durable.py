"""``etcdlite serve --data-dir``: data survives a restart and a kill -9; ``etcdctl snapshot
save`` fetches a snapshot that ``etcdlite snapshot status/restore`` read, and a server on the
restored directory serves the same store; the NOSPACE alarm outlives a restart, on etcd too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .launch import Etcdctl, running_cli, running_etcd

pytestmark = pytest.mark.etcd  # etcdctl comes with etcd


def _etcdlite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etcdlite", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_data_survives_restart_and_kill_9(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with running_cli("--data-dir", data) as server:
        ctl = Etcdctl(server.endpoint, tmp_path)
        ctl.ok("put", "a", "1")
        ctl.ok("put", "b", "2")
        ctl.ok("del", "a")
        lease = ctl.ok("lease", "grant", "600").split()[1]
        ctl.ok("put", "c", "3", "--lease", lease)
        rev = ctl.revision()
    with running_cli("--data-dir", data) as server:  # a clean restart
        ctl = Etcdctl(server.endpoint, tmp_path)
        assert ctl.revision() == rev
        assert ctl.ok("get", "b", "--print-value-only").strip() == "2"
        assert ctl.ok("get", "a") == ""
        assert ctl.ok("get", "c", "--print-value-only").strip() == "3"
        assert ctl.ok("get", "a", f"--rev={rev - 2}", "--print-value-only").strip() == "1"
        ctl.ok("put", "d", "4")  # acknowledged: durable
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
    with running_cli("--data-dir", data) as server:
        ctl = Etcdctl(server.endpoint, tmp_path)
        assert ctl.ok("get", "d", "--print-value-only").strip() == "4"
        assert ctl.revision() == rev + 1


@pytest.mark.timeout(120)
def test_etcdctl_snapshot_save_then_etcdlite_status_and_restore(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    snap = str(tmp_path / "snap.db")
    with running_cli("--data-dir", data) as server:
        ctl = Etcdctl(server.endpoint, tmp_path)
        for i in range(50):
            ctl.ok("put", f"k{i:02d}", f"v{i}")
        ctl.ok("del", "k00")
        rev = ctl.revision()
        out = ctl.ok("snapshot", "save", snap)
        assert "Snapshot saved" in out or os.path.getsize(snap) > 0
    status = _etcdlite("snapshot", "status", snap, "-w", "json")
    assert status.returncode == 0, status.stderr
    assert f'"revision": {rev}' in status.stdout
    restored = str(tmp_path / "restored")
    done = _etcdlite("snapshot", "restore", snap, "--data-dir", restored)
    assert done.returncode == 0, done.stderr
    again = _etcdlite("snapshot", "restore", snap, "--data-dir", restored)
    assert again.returncode == 2 and "not empty" in again.stderr  # refuses to overwrite
    with running_cli("--data-dir", restored) as server:
        ctl = Etcdctl(server.endpoint, tmp_path)
        assert ctl.revision() == rev
        keys = ctl.ok("get", "k", "--prefix", "--keys-only").split()
        assert keys == [f"k{i:02d}" for i in range(1, 50)]


def test_a_corrupt_snapshot_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a snapshot" * 10)
    out = _etcdlite("snapshot", "status", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1


@contextmanager
def _server(kind: str, data: str, *args: str) -> Iterator[str]:
    """``etcdlite serve`` or etcd on ``data``; yields the endpoint."""
    if kind == "etcd":
        with running_etcd("--data-dir", data, *args) as endpoint:  # the last --data-dir wins
            yield endpoint
    else:
        with running_cli("--data-dir", data, *args) as server:
            yield server.endpoint


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["etcdlite", "etcd"])
def test_the_nospace_alarm_survives_a_restart(tmp_path: Path, kind: str) -> None:
    """etcd keeps alarms in its backend: a restarted member still refuses growth until the
    alarm is disarmed. Same sequence on etcdlite's server and on etcd, both on a data dir."""
    data = str(tmp_path / "data")
    quota = "--quota-backend-bytes=300000"
    with _server(kind, data, quota) as endpoint:
        ctl = Etcdctl(endpoint, tmp_path)
        value = "x" * 50_000
        for i in range(200):  # 10 MB: past the quota on both (etcd's size lags 100 ms)
            r = ctl.run("put", f"k{i}", value)
            if r.returncode != 0:
                assert "database space exceeded" in r.stderr
                break
        else:
            pytest.fail("the quota was never reached")
        assert "alarm:NOSPACE" in ctl.ok("alarm", "list")
    with _server(kind, data) as endpoint:  # restarted without the quota flag
        ctl = Etcdctl(endpoint, tmp_path)
        assert "alarm:NOSPACE" in ctl.ok("alarm", "list")
        r = ctl.run("put", "small", "v")
        assert r.returncode != 0 and "database space exceeded" in r.stderr
        ctl.ok("alarm", "disarm")
    with _server(kind, data) as endpoint:
        ctl = Etcdctl(endpoint, tmp_path)
        assert ctl.ok("alarm", "list").strip() == ""
        ctl.ok("put", "small", "v")
