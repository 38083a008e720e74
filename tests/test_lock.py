"""Sessions and locks: the recipe on every backend, interop with ``etcdctl lock``, and the
v3lock service of ``etcdlite serve`` answering like real etcd 3.4.23.

The recipe tests run on the ``ctx`` backends (Store on a ManualClock, Client → etcdlite's
server, Client → real etcd). The interop and service tests need a network endpoint: they run
on etcdlite's server in the test's loop (``serve``), on the ``etcdlite serve`` command in a
subprocess (``cli``) and on real etcd (``etcd``), with the same assertions.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import etcdlite
from etcdlite import (
    Client,
    LockTimeoutError,
    Put,
    SessionExpiredError,
    Store,
)
from etcdlite.recipes import lease_key
from etcdlite.recipes.cancellation import settle_background
from etcdlite.wire.pb import v3lockpb

from .conftest import IN_CI, Ctx
from .etcd_process import free_port

ETCDCTL = shutil.which("etcdctl")
#: Real-time bound on any single wait in these tests (seconds).
LIMIT = 10.0
# Real etcd revokes expired leases up to ~0.5 s late (its lessor scans every 500 ms).
ETCD_SLACK = 1.5

_counter = itertools.count()


# --- helpers shared with test_election.py ---------------------------------------------------


async def eventually(
    ctx: Ctx | Net, check: Callable[[], Awaitable[bool]], what: str = "condition"
) -> None:
    """Poll ``check`` until it holds (settling the ManualClock or sleeping briefly)."""
    deadline = time.monotonic() + LIMIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        clock = getattr(ctx, "clock", None)
        if clock is not None:
            await clock.advance(0)
        else:
            await asyncio.sleep(0.02)


async def keys_under(kv: Any, prefix: bytes) -> list[bytes]:
    """Keys under ``prefix`` in create-revision order."""
    resp = await kv.range(prefix, prefix=True, sort_target=etcdlite.SortTarget.CREATE)
    return [kv.key for kv in resp.kvs]


def lease_of(key: bytes) -> int:
    """The lease id encoded in a recipe key ``<name>/<hex>``."""
    return int(key.rsplit(b"/", 1)[1], 16)


async def gone(kv: Any, lease: int) -> bool:
    return bool((await kv.time_to_live(lease)).ttl == -1)


def _need_etcdctl() -> None:
    if ETCDCTL is None:
        if IN_CI:
            pytest.fail("CI requires etcdctl")
        pytest.skip("etcdctl is not installed")


@dataclass
class Net:
    """A network endpoint (etcdlite's server, its CLI, or real etcd) and a Client on it."""

    kv: Client
    backend: str
    endpoint: str
    prefix: bytes
    rev0: int

    def k(self, name: str | bytes = b"") -> bytes:
        return self.prefix + (name.encode() if isinstance(name, str) else name)

    def r(self, n: int) -> int:
        return self.rev0 + n

    @property
    def is_etcd(self) -> bool:
        return self.backend == "etcd"

    def channel(self) -> Channel:
        host, port = self.endpoint.rsplit(":", 1)
        return Channel(host, int(port))

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(scope="session", name="cli_endpoint")
def cli_endpoint_fixture() -> Iterator[str]:
    """``etcdlite serve --listen-client-urls http://127.0.0.1:PORT`` as a subprocess."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="etcdlite-cli-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etcdlite",
            "serve",
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with open(log.name, "rb") as f:
                if b"ready to serve client requests" in f.read():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                with open(log.name) as f:
                    raise RuntimeError(f"etcdlite serve did not start: {f.read()}")
            time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)


@pytest_asyncio.fixture(params=["serve", "cli", "etcd"], name="net")
async def net_fixture(request: pytest.FixtureRequest) -> AsyncIterator[Net]:
    """A :class:`Net` on each network backend (test_election.py imports it too)."""
    backend: str = request.param
    prefix = f"n{next(_counter)}-{request.node.name[:40]}/".replace("[", "-").replace("]", "")
    prefix_b = prefix.encode()

    @asynccontextmanager
    async def client(endpoint: str) -> AsyncIterator[Net]:
        async with Client(endpoint, timeout=LIMIT) as c:
            rev0 = (await c.range(b"\0", b"\0", count_only=True)).header.revision
            yield Net(c, backend, endpoint, prefix_b, rev0)

    if backend == "serve":
        async with (
            Store() as store,
            etcdlite.serve(store, port=0) as server,
            client(server.endpoint) as n,
        ):
            yield n
    else:
        fixture = "cli_endpoint" if backend == "cli" else "etcd_endpoint"
        async with client(str(request.getfixturevalue(fixture))) as n:
            yield n


class Proc:
    """A running ``etcdctl`` (asyncio subprocess: the test's loop keeps serving)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.put_nowait(line.decode().rstrip("\n"))

    async def line(self, timeout: float = LIMIT) -> str:
        try:
            async with asyncio.timeout(timeout):
                return await self.lines.get()
        except TimeoutError:
            raise AssertionError(f"no output from etcdctl in {timeout} s") from None

    async def quiet_for(self, seconds: float) -> None:
        """Assert that nothing is printed for ``seconds``."""
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
        async with asyncio.timeout(LIMIT):
            return await self.proc.wait()

    async def exit_code(self) -> int:
        async with asyncio.timeout(LIMIT):
            return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._reader


@asynccontextmanager
async def etcdctl(endpoint: str, *args: str) -> AsyncIterator[Proc]:
    _need_etcdctl()
    assert ETCDCTL is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL,
        f"--endpoints={endpoint}",
        "--dial-timeout=5s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    p = Proc(proc)
    try:
        yield p
    finally:
        await p.stop()


# --- sessions -------------------------------------------------------------------------------


async def test_session_keeps_its_lease_alive_and_revokes_it_on_close(ctx: Ctx) -> None:
    async with ctx.kv.session(2) as s:
        assert s.ttl == 2 and s.alive
        await ctx.kv.put(ctx.k("a"), b"v", lease=s.id)
        await ctx.advance(2 + (ETCD_SLACK if ctx.is_etcd else 0.5))
        assert s.alive
        assert await ctx.kv.get(ctx.k("a")) is not None
    assert not s.alive
    assert await ctx.kv.get(ctx.k("a")) is None
    assert await gone(ctx.kv, s.id)


async def test_session_default_ttl_is_60_and_it_can_adopt_a_lease(ctx: Ctx) -> None:
    s = await ctx.kv.session()
    try:
        assert (await ctx.kv.time_to_live(s.id)).granted_ttl == 60
        adopted = await ctx.kv.session(lease=s.id)
        assert adopted.id == s.id and adopted.ttl == 60
        adopted.orphan()
    finally:
        await s.close()
    with pytest.raises(etcdlite.LeaseNotFoundError):
        await ctx.kv.session(lease=s.id)


async def test_session_notices_its_lease_revoked_elsewhere(ctx: Ctx) -> None:
    async with ctx.kv.session(3) as s:
        await ctx.kv.revoke(s.id)
        await ctx.advance(1.5)
        async with asyncio.timeout(LIMIT):
            await s.lost()
        assert not s.alive


# --- the lock recipe (every backend) --------------------------------------------------------


async def test_lock_uses_gos_key_layout_and_releases(ctx: Ctx) -> None:
    name = ctx.k("L")
    async with ctx.kv.lock(name, ttl=5) as lock:
        assert lock.held and lock.session is not None
        lid = lock.session.id
        assert lock.key == name + b"/" + format(lid, "x").encode()
        kv = await ctx.kv.get(lock.key)
        assert kv is not None and kv.value == b"" and kv.lease == lid
        assert lock.revision == kv.create_revision == ctx.r(1)
        assert lock.header is not None and lock.header.revision == ctx.r(1)
        assert (await ctx.kv.time_to_live(lid)).granted_ttl == 5
    assert not lock.held
    assert await keys_under(ctx.kv, name + b"/") == []
    assert await gone(ctx.kv, lid)  # the lock's own session was revoked


async def test_waiters_are_served_in_arrival_order(ctx: Ctx) -> None:
    name = ctx.k("L")
    order: list[int] = []
    release = [asyncio.Event() for _ in range(4)]

    async def contender(i: int) -> None:
        async with ctx.kv.lock(name, ttl=10):
            order.append(i)
            await release[i].wait()

    tasks = []
    for i in range(4):
        tasks.append(asyncio.ensure_future(contender(i)))
        await eventually(ctx, partial(_count, ctx, name, i + 1), f"{i + 1} keys")
    await eventually(ctx, partial(_len_is, order, 1))
    for i in range(4):
        release[i].set()
        await eventually(ctx, partial(_len_is, order, min(i + 2, 4)))
    async with asyncio.timeout(LIMIT):
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert await keys_under(ctx.kv, name + b"/") == []


async def _count(ctx: Ctx | Net, name: bytes, n: int) -> bool:
    return len(await keys_under(ctx.kv, name + b"/")) == n


async def _len_is(items: list[int], n: int) -> bool:
    return len(items) == n


async def test_timeout_raises_and_leaves_nothing_behind(ctx: Ctx) -> None:
    name = ctx.k("L")
    async with ctx.kv.lock(name, ttl=5) as holder:
        entered = False

        async def waiter() -> None:
            nonlocal entered
            async with ctx.kv.lock(name, ttl=5, timeout=0.5):
                entered = True

        task = asyncio.ensure_future(waiter())
        await eventually(ctx, lambda: _count(ctx, name, 2), "the waiter's key")
        waiter_lease = lease_of((await keys_under(ctx.kv, name + b"/"))[1])
        await ctx.advance(0.6)
        with pytest.raises(LockTimeoutError):
            async with asyncio.timeout(LIMIT):
                await task
        assert not entered  # never entered unheld
        assert await keys_under(ctx.kv, name + b"/") == [holder.key]
        assert await gone(ctx.kv, waiter_lease)


async def test_cancelled_waiter_removes_its_key_and_lease(ctx: Ctx) -> None:
    name = ctx.k("L")
    async with ctx.kv.lock(name) as holder:
        task = asyncio.ensure_future(ctx.kv.lock(name).acquire())
        await eventually(ctx, lambda: _count(ctx, name, 2), "the waiter's key")
        waiter_lease = lease_of((await keys_under(ctx.kv, name + b"/"))[1])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle_background()
        assert await keys_under(ctx.kv, name + b"/") == [holder.key]
        assert await gone(ctx.kv, waiter_lease)
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_waiter_whose_session_ends_gets_session_expired(ctx: Ctx) -> None:
    # etcd 3.4's Mutex would report success here with a key that no longer exists.
    name = ctx.k("L")
    holder = await ctx.kv.lock(name).acquire()
    async with ctx.kv.session(10) as s:
        task = asyncio.ensure_future(s.lock(name).acquire())
        await eventually(ctx, lambda: _count(ctx, name, 2), "the waiter's key")
        await ctx.kv.revoke(s.id)
        await holder.release()
        with pytest.raises(SessionExpiredError, match="mutex: session is expired"):
            async with asyncio.timeout(LIMIT):
                await task
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_try_acquire(ctx: Ctx) -> None:
    name = ctx.k("L")
    first = ctx.kv.lock(name)
    assert await first.try_acquire()
    second = ctx.kv.lock(name)
    assert not await second.try_acquire()
    assert not second.held and second.session is None
    with pytest.raises(LockTimeoutError):
        await ctx.kv.lock(name, timeout=0).acquire()  # timeout 0: one attempt
    assert await keys_under(ctx.kv, name + b"/") == [first.key]
    assert await first.release()
    assert await second.try_acquire()
    assert await second.release()
    assert not await second.release()  # not held any more


async def test_is_owner_fences_writes(ctx: Ctx) -> None:
    name, data = ctx.k("L"), ctx.k("data")
    async with ctx.kv.lock(name) as lock:
        assert (await ctx.kv.txn([lock.is_owner()], [Put(data, b"1")])).succeeded
        assert lock.key is not None
        await ctx.kv.delete(lock.key)  # e.g. the lease expired during a long pause
        assert not (await ctx.kv.txn([lock.is_owner()], [Put(data, b"2")])).succeeded
    kv = await ctx.kv.get(data)
    assert kv is not None and kv.value == b"1"


async def test_locks_sharing_a_session_exclude_each_other_locally(ctx: Ctx) -> None:
    # Go's key is per (session, name): two Mutexes on one session would both "hold" it.
    name = ctx.k("L")
    async with ctx.kv.session(10) as s:
        first = await s.lock(name).acquire()
        first_key, first_rev = first.key, first.revision
        second = s.lock(name)
        task = asyncio.ensure_future(second.acquire())
        await ctx.advance(0.2)
        assert not task.done()
        assert await first.release()
        async with asyncio.timeout(LIMIT):
            await task
        assert second.held and second.key == first_key == lease_key(name + b"/", s.id)
        assert second.revision > first_rev
        assert await second.release()
        assert s.alive  # a given session outlives its locks
        async with s.lock(name):
            task = asyncio.ensure_future(s.lock(name, timeout=0.3).acquire())
            await ctx.advance(0.4)
            with pytest.raises(LockTimeoutError):
                async with asyncio.timeout(LIMIT):
                    await task
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_exception_in_the_body_releases(ctx: Ctx) -> None:
    name = ctx.k("L")
    with pytest.raises(ZeroDivisionError):
        async with ctx.kv.lock(name):
            _ = 1 / 0
    assert await keys_under(ctx.kv, name + b"/") == []
    assert len(await ctx.kv.get_prefix(ctx.k())) == 0


async def test_a_crashed_holders_lock_expires_after_its_ttl(ctx: Ctx) -> None:
    name = ctx.k("L")
    crashed = await ctx.kv.lock(name, ttl=2).acquire()
    assert crashed.session is not None
    crashed.session.orphan()  # the process dies: no more keepalives, no release
    task = asyncio.ensure_future(ctx.kv.lock(name, ttl=10).acquire())
    await ctx.advance(1)
    assert not task.done()
    await ctx.advance(1 + (ETCD_SLACK if ctx.is_etcd else 0.05))
    async with asyncio.timeout(LIMIT):
        lock = await task
    assert lock.key != crashed.key
    await lock.release()


async def test_lock_on_a_closed_or_dead_session_fails_fast(ctx: Ctx) -> None:
    s = await ctx.kv.session(5)
    await s.close()
    with pytest.raises(SessionExpiredError):
        await s.lock(ctx.k("L")).acquire()
    assert await keys_under(ctx.kv, ctx.k("L/")) == []


# --- interop with etcdctl lock (both directions) --------------------------------------------


async def test_etcdctl_lock_excludes_an_etcdlite_lock(net: Net) -> None:
    name = net.k("L").decode()
    async with etcdctl(net.endpoint, "lock", name) as ctl:
        key = await ctl.line()
        assert key.startswith(name + "/")
        assert await ctl.line() == ""  # etcdctl prints the (empty) value line
        kv = await net.kv.get(key)
        assert kv is not None and (await net.kv.time_to_live(kv.lease)).granted_ttl == 10
        with pytest.raises(LockTimeoutError):
            await net.kv.lock(name, timeout=0.5).acquire()
        assert await keys_under(net.kv, name.encode() + b"/") == [key.encode()]
        lock = net.kv.lock(name, timeout=LIMIT)
        task = asyncio.ensure_future(lock.acquire())
        await eventually(net, lambda: _count(net, name.encode(), 2), "etcdlite's key")
        assert not task.done()
        assert await ctl.interrupt() == 0  # SIGINT: etcdctl unlocks
        await task
        assert lock.key is not None and lock.key != key.encode()
        assert await net.kv.get(key) is None
        await lock.release()
    assert await keys_under(net.kv, name.encode() + b"/") == []


async def test_an_etcdlite_lock_excludes_etcdctl_lock(net: Net) -> None:
    name = net.k("L").decode()
    lock = await net.kv.lock(name, ttl=10).acquire()
    cmd = 'echo "held $ETCD_LOCK_KEY $ETCD_LOCK_REV"'
    async with etcdctl(net.endpoint, "lock", name, "--", "sh", "-c", cmd) as ctl:
        await eventually(net, lambda: _count(net, name.encode(), 2), "etcdctl's key")
        await ctl.quiet_for(0.5)
        queued = (await keys_under(net.kv, name.encode() + b"/"))[1]
        assert await lock.release()
        line = await ctl.line()
        _, key, rev = line.split()
        assert key == queued.decode()
        # etcdctl's revision is its Mutex header: the Range after waiting (3.4)
        assert int(rev) >= lock.revision + 2
        assert await ctl.exit_code() == 0
    assert await keys_under(net.kv, name.encode() + b"/") == []


# --- the v3lock service: etcdlite serve answers like etcd 3.4.23 ----------------------------


async def test_v3lock_service_answers_like_etcd(net: Net) -> None:
    channel = net.channel()
    stub = v3lockpb.LockStub(channel)
    name = net.k("L")
    got: list[tuple[object, ...]] = []
    r0 = net.rev0
    try:
        with pytest.raises(GRPCError) as e:
            await stub.lock(v3lockpb.LockRequest(name=name, lease=0x1234))
        got.append(("unknown lease", e.value.status, e.value.message))

        lease = await net.kv.grant(30)
        r = await stub.lock(v3lockpb.LockRequest(name=name, lease=lease.id))
        assert r.header is not None
        got.append(("lock", r.key == lease_key(name + b"/", lease.id), r.header.revision - r0))
        again = await stub.lock(v3lockpb.LockRequest(name=name, lease=lease.id))
        assert again.header is not None
        got.append(("same lease again", again.key == r.key, again.header.revision - r0))

        u = await stub.unlock(v3lockpb.UnlockRequest(key=r.key))
        assert u.header is not None
        got.append(("unlock", u.header.revision - r0))
        u = await stub.unlock(v3lockpb.UnlockRequest(key=name + b"/nothing"))
        assert u.header is not None
        got.append(("unlock a missing key", u.header.revision - r0))
        with pytest.raises(GRPCError) as e:
            await stub.unlock(v3lockpb.UnlockRequest(key=b""))
        got.append(("unlock empty key", e.value.status, e.value.message))

        # lease 0: a fresh 60 s lease that nobody renews
        r = await stub.lock(v3lockpb.LockRequest(name=name))
        assert r.header is not None
        kv = await net.kv.get(r.key)
        assert kv is not None and r.key == lease_key(name + b"/", kv.lease)
        ttl = await net.kv.time_to_live(kv.lease)
        got.append(("lease 0", r.header.revision - r0, ttl.granted_ttl, ttl.ttl >= 57))
        await stub.unlock(v3lockpb.UnlockRequest(key=r.key))
        await net.kv.revoke(kv.lease)
        await lease.revoke()

        # an empty name locks "/<hex>", after every older key under "/": only checked where
        # there is none (the session's etcd holds other tests' "/..." keys; order matters)
        if (await net.kv.get_prefix(b"/", limit=1, keys_only=True)).count == 0:
            lease2 = await net.kv.grant(30)
            r = await stub.lock(v3lockpb.LockRequest(name=b"", lease=lease2.id))
            got.append(("empty name", r.key.startswith(b"/")))
            await net.kv.revoke(lease_of(r.key))
        else:
            got.append(("empty name", True))
    finally:
        channel.close()
    assert got == [
        ("unknown lease", Status.UNKNOWN, "etcdserver: requested lease not found"),
        ("lock", True, 1),
        ("same lease again", True, 1),
        ("unlock", 2),
        ("unlock a missing key", 2),
        ("unlock empty key", Status.UNKNOWN, "etcdserver: key is not provided"),
        ("lease 0", 3, 60, True),
        ("empty name", True),
    ]


async def test_v3lock_contention_release_and_deadline(net: Net) -> None:
    channel = net.channel()
    stub = v3lockpb.LockStub(channel)
    name = net.k("L")
    a, b = await net.kv.grant(30), await net.kv.grant(30)
    try:
        held = await stub.lock(v3lockpb.LockRequest(name=name, lease=a.id))
        # a waiter that gives up: DEADLINE_EXCEEDED for the client, the server deletes its key
        with pytest.raises(TimeoutError):
            await stub.lock(v3lockpb.LockRequest(name=name, lease=b.id), timeout=0.5)
        await eventually(net, lambda: _count(net, name, 1), "the waiter's key removed")
        # the service and the recipe exclude each other
        with pytest.raises(LockTimeoutError):
            await net.kv.lock(name, timeout=0.3).acquire()
        # a waiter is served when the holder unlocks; its header is the unlock's revision
        waiter = asyncio.ensure_future(stub.lock(v3lockpb.LockRequest(name=name, lease=b.id)))
        await eventually(net, lambda: _count(net, name, 2), "the waiter's key")
        assert not waiter.done()
        unlocked = await stub.unlock(v3lockpb.UnlockRequest(key=held.key))
        async with asyncio.timeout(LIMIT):
            got = await waiter
        assert got.key == lease_key(name + b"/", b.id)
        assert got.header is not None and unlocked.header is not None
        assert got.header.revision == unlocked.header.revision
        # relative revisions: lock(1), waiter put(2), waiter delete(3), recipe put/delete
        # (4, 5), waiter put(6), unlock(7)
        assert unlocked.header.revision == net.r(7)
    finally:
        channel.close()
        await a.revoke()
        await b.revoke()


async def test_v3lock_waiter_whose_lease_is_revoked_still_succeeds_like_3_4(net: Net) -> None:
    # etcd 3.4 does not re-check the waiter's key after waiting (3.5 answers "mutex: session
    # is expired"); etcdlite's service follows 3.4, its Python Lock checks.
    channel = net.channel()
    stub = v3lockpb.LockStub(channel)
    name = net.k("L")
    a, b = await net.kv.grant(30), await net.kv.grant(30)
    try:
        held = await stub.lock(v3lockpb.LockRequest(name=name, lease=a.id))
        waiter = asyncio.ensure_future(stub.lock(v3lockpb.LockRequest(name=name, lease=b.id)))
        await eventually(net, lambda: _count(net, name, 2), "the waiter's key")
        await b.revoke()
        await stub.unlock(v3lockpb.UnlockRequest(key=held.key))
        async with asyncio.timeout(LIMIT):
            got = await waiter
        assert got.key == lease_key(name + b"/", b.id)
        assert await net.kv.get(got.key) is None
    finally:
        channel.close()
        await a.revoke()
