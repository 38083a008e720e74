"""Every child process and server thread the tests start, in one place.

* real etcd (the oracle): :func:`running_etcd`, on free loopback ports with a temp data dir;
* ``etcdlite serve`` as a child process: :func:`running_cli`;
* etcdlite's server in a thread of its own, for synchronous clients: :func:`server_thread`
  (:class:`etcdlite.testing.ServerThread`, on real time like etcd);
* ``etcdctl``: :class:`Etcdctl` (blocking, with :class:`Background` commands) and
  :func:`etcdctl_async` (an asyncio child, for tests whose loop must keep serving);
* pytest or Python in a temp project of its own: :func:`run_pytest_project`, :func:`run_python`.

Rules this module keeps: every child is started here and always stopped here (terminate,
then kill after a grace period, then reap); readiness is read from the child's own output
("ready to serve client requests"), never assumed after a fixed delay.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdlite.testing import ServerThread

__all__ = [
    "ETCDCTL",
    "Background",
    "CliServer",
    "EtcdMissing",
    "Etcdctl",
    "EtcdctlProc",
    "etcd_binary",
    "etcd_version",
    "etcdctl_async",
    "etcdctl_env",
    "free_port",
    "run_pytest_project",
    "run_python",
    "running_cli",
    "running_etcd",
    "server_thread",
]

#: Real-time bound on waiting for a child (start, a line of output, an exit).
CHILD_TIMEOUT = 15.0
READY = b"ready to serve client requests"
ETCDCTL = shutil.which("etcdctl")


class EtcdMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[Any], grace: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_for_log(
    log_path: str, proc: subprocess.Popen[Any], what: str, timeout: float = 30.0
) -> str:
    """Until the child's log file holds the ready line; returns the log so far."""
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, "rb") as f:
            text = f.read()
        if READY in text:
            return text.decode(errors="replace")
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}: {text!r}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in time: {text!r}")
        time.sleep(0.02)  # polling the child's log for its ready line


# --- real etcd ------------------------------------------------------------------------------


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


@contextmanager
def running_etcd(*extra_args: str, scheme: str = "http") -> Iterator[str]:
    """Run etcd on 127.0.0.1 only; yields its ``host:port``; always stops it.

    Ready once etcd logs that it serves clients (it has elected itself leader by then).
    ``scheme="https"`` listens for clients over TLS (``extra_args`` then carry the cert
    flags).
    """
    binary = etcd_binary()
    if binary is None:
        raise EtcdMissing("etcd is not installed (apt-get install -y etcd-server etcd-client)")
    client_port, peer_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="etcdlite-oracle-")
    client_url = f"{scheme}://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    log_path = os.path.join(data_dir, "etcd.log")
    with open(log_path, "wb") as log:
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
        _wait_for_log(log_path, proc, "etcd")
        yield f"127.0.0.1:{client_port}"
    finally:
        _stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- etcdlite's server ----------------------------------------------------------------------


@dataclass
class CliServer:
    """A running ``etcdlite serve`` child: its process, endpoint and first log line."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    first_line: str


@contextmanager
def running_cli(*extra_args: str, scheme: str = "http") -> Iterator[CliServer]:
    """``python -m etcdlite serve --listen-client-urls http://127.0.0.1:PORT`` as a child
    (``scheme="https"``: https://); yields once it logged that it is ready; always stops it
    (the test may stop it first)."""
    port = free_port()
    fd, log_path = tempfile.mkstemp(prefix="etcdlite-cli-", suffix=".log")
    try:
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "etcdlite",
                    "serve",
                    "--listen-client-urls",
                    f"{scheme}://127.0.0.1:{port}",
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        try:
            text = _wait_for_log(log_path, proc, "etcdlite serve", timeout=20)
            yield CliServer(proc, f"127.0.0.1:{port}", text.splitlines()[0])
        finally:
            _stop(proc)
    finally:
        os.unlink(log_path)


@contextmanager
def server_thread(**store_options: Any) -> Iterator[ServerThread]:
    """etcdlite's server in a thread with its own event loop, on real time (like etcd), so
    that blocking clients (python-etcd3, ``subprocess.run(["etcdctl", ...])``) cannot
    deadlock it. A fresh, empty store (``Store(**store_options)``); always stopped."""
    with ServerThread(manual_clock=False, store_options=store_options) as server:
        yield server


# --- etcdctl --------------------------------------------------------------------------------


def etcdctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


@dataclass
class Background:
    """A long-running etcdctl (watch, lock, elect) writing to files under ``tmp_path``."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text()

    def wait_for(self, predicate: str | Callable[[str], bool], timeout: float = 15.0) -> str:
        """Until stdout satisfies ``predicate(text)`` (or contains the string): etcdctl
        prints each event as it gets it, so its output is the event to wait on."""
        check = (lambda t: predicate in t) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {predicate!r}; stdout={text!r} "
                    f"stderr={self.err.read_text()!r} exit={self.proc.poll()}"
                )
            time.sleep(0.02)  # polling the child's output file

    def interrupt(self, timeout: float = 15.0) -> int:
        """SIGINT (etcdctl's graceful stop: unlock / resign), then wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        _stop(self.proc, grace=5)


@dataclass
class Etcdctl:
    """``etcdctl`` against one endpoint: blocking commands and background ones."""

    endpoint: str
    tmp_path: Path
    timeout: float = 15.0
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def argv(self, *args: str) -> list[str]:
        assert ETCDCTL is not None
        return [
            ETCDCTL,
            f"--endpoints={self.endpoint}",
            "--dial-timeout=5s",
            "--command-timeout=10s",
            *args,
        ]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            env=etcdctl_env(),
            check=False,
        )

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """An etcdctl child with the caller's pipes (stop it yourself)."""
        return subprocess.Popen(self.argv(*args), env=etcdctl_env(), **kwargs)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, f"etcdctl {' '.join(args)} failed: {r.stderr}"
        return r.stdout

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.ok("-w", "json", *args, stdin=stdin))

    def fails(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        """A failing command's exit code and its last stderr line (``Error: …``)."""
        r = self.run(*args, stdin=stdin)
        assert r.returncode != 0, f"etcdctl {' '.join(args)} unexpectedly succeeded: {r.stdout}"
        return r.returncode, r.stderr.strip().splitlines()[-1]

    def revision(self) -> int:
        return int(self.json("get", "/rc-no-such-key")["header"]["revision"])

    @contextmanager
    def background(self, *args: str) -> Iterator[Background]:
        n = next(self._n)
        out, err = self.tmp_path / f"bg{n}.out", self.tmp_path / f"bg{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(self.argv(*args), stdout=fo, stderr=fe, env=etcdctl_env())
        bg = Background(proc, out, err)
        try:
            yield bg
        finally:
            bg.stop()


class EtcdctlProc:
    """A running ``etcdctl`` as an asyncio child (the test's loop keeps serving)."""

    def __init__(self, proc: asyncio.subprocess.Process, limit: float) -> None:
        self.proc = proc
        self.limit = limit
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.put_nowait(line.decode().rstrip("\n"))

    async def line(self, timeout: float | None = None) -> str:
        timeout = self.limit if timeout is None else timeout
        try:
            async with asyncio.timeout(timeout):
                return await self.lines.get()
        except TimeoutError:
            raise AssertionError(f"no output from etcdctl in {timeout} s") from None

    async def quiet_for(self, seconds: float) -> None:
        """Assert that nothing is printed for ``seconds`` (the time is the behaviour)."""
        try:
            async with asyncio.timeout(seconds):
                line = await self.lines.get()
        except TimeoutError:
            return
        raise AssertionError(f"etcdctl printed {line!r} too early")

    async def interrupt(self) -> int:
        """SIGINT (etcdctl's graceful stop: unlock / resign) and the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(self.limit):
            return await self.proc.wait()

    async def exit_code(self) -> int:
        async with asyncio.timeout(self.limit):
            return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


@asynccontextmanager
async def etcdctl_async(
    endpoint: str, *args: str, limit: float = CHILD_TIMEOUT
) -> AsyncIterator[EtcdctlProc]:
    assert ETCDCTL is not None
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints={endpoint}",
        "--dial-timeout=5s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=etcdctl_env(),
    )
    p = EtcdctlProc(proc, limit)
    try:
        yield p
    finally:
        await p.stop()


# --- a project of its own -------------------------------------------------------------------


def run_python(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` (this interpreter) in ``cwd``: output captured, never raises on exit."""
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )


def run_pytest_project(
    root: Path,
    files: Mapping[str, str],
    *,
    passed: int,
    ini: str = "[pytest]\nasyncio_mode = auto\n",
    env: Mapping[str, str] | None = None,
) -> None:
    """Write ``files`` and ``pytest.ini`` under ``root``, run pytest there in a child, and
    require ``passed`` passes and nothing else failing."""
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "pytest.ini").write_text(ini)
    out = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{passed} passed" in out.stdout, out.stdout
