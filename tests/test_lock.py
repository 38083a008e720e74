"""Sessions and locks: the recipe on every backend, interop with ``etcdctl lock``, and the
v3lock service of ``etcdlite serve`` answering like real etcd 3.4.23.

The recipe tests run on the ``ctx`` backends (Store on a ManualClock, Client → etcdlite's
server, Client → real etcd). The interop and service tests need a network endpoint: they run
on etcdlite's server in the test's loop (``serve``), on the ``etcdlite serve`` command in a
subprocess (``cli``) and on real etcd (``etcd``), with the same assertions.
"""

from __future__ import annotations

import asyncio

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import etcdlite
from etcdlite import (
    Client,
    LockTimeoutError,
    Put,
    SessionExpiredError,
)
from etcdlite.recipes import lease_key
from etcdlite.recipes.cancellation import settle_background
from etcdlite.wire.pb import v3lockpb

from .conftest import Ctx
from .helpers import (
    ETCD_SLACK,
    LIMIT,
    etcdctl,
    gone,
    keys_under,
    lease_of,
    wait_for_count,
)

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
    entered: asyncio.Queue[int] = asyncio.Queue()
    release = [asyncio.Event() for _ in range(4)]

    async def contender(i: int) -> None:
        async with ctx.kv.lock(name, ttl=10):
            order.append(i)
            entered.put_nowait(i)
            await release[i].wait()

    async def next_holder() -> None:
        async with asyncio.timeout(LIMIT):
            await entered.get()

    tasks = []
    for i in range(4):
        tasks.append(asyncio.ensure_future(contender(i)))
        await wait_for_count(ctx.kv, name + b"/", i + 1, f"{i + 1} keys")
    await next_holder()
    assert len(order) == 1
    for i in range(4):
        release[i].set()
        if i < 3:
            await next_holder()
        assert len(order) == min(i + 2, 4)
    async with asyncio.timeout(LIMIT):
        await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert await keys_under(ctx.kv, name + b"/") == []


async def test_timeout_raises_and_leaves_nothing_behind(ctx: Ctx) -> None:
    name = ctx.k("L")
    async with ctx.kv.lock(name, ttl=5) as holder:
        entered = False

        async def waiter() -> None:
            nonlocal entered
            async with ctx.kv.lock(name, ttl=5, timeout=0.5):
                entered = True

        task = asyncio.ensure_future(waiter())
        await wait_for_count(ctx.kv, name + b"/", 2, "the waiter's key")
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
        await wait_for_count(ctx.kv, name + b"/", 2, "the waiter's key")
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
        await wait_for_count(ctx.kv, name + b"/", 2, "the waiter's key")
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


async def test_etcdctl_lock_excludes_an_etcdlite_lock(net: Ctx) -> None:
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
        await wait_for_count(net.kv, name.encode() + b"/", 2, "etcdlite's key")
        assert not task.done()
        assert await ctl.interrupt() == 0  # SIGINT: etcdctl unlocks
        await task
        assert lock.key is not None and lock.key != key.encode()
        assert await net.kv.get(key) is None
        await lock.release()
    assert await keys_under(net.kv, name.encode() + b"/") == []


async def test_an_etcdlite_lock_excludes_etcdctl_lock(net: Ctx) -> None:
    name = net.k("L").decode()
    lock = await net.kv.lock(name, ttl=10).acquire()
    cmd = 'echo "held $ETCD_LOCK_KEY $ETCD_LOCK_REV"'
    async with etcdctl(net.endpoint, "lock", name, "--", "sh", "-c", cmd) as ctl:
        await wait_for_count(net.kv, name.encode() + b"/", 2, "etcdctl's key")
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


async def test_v3lock_service_answers_like_etcd(net: Ctx) -> None:
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
    ]


async def test_v3lock_empty_name_locks_slash_after_every_older_slash_key(
    fresh_endpoint: tuple[str, str],
) -> None:
    """An empty name locks ``/<hex>`` and waits for every older key under ``/``: on a server
    of its own, where the test knows every ``/`` key (the session's etcd has other tests')."""
    _, endpoint = fresh_endpoint
    host, port = endpoint.rsplit(":", 1)
    channel = Channel(host, int(port))
    stub = v3lockpb.LockStub(channel)
    async with Client(endpoint, timeout=LIMIT) as kv:
        try:
            await kv.put(b"/older", b"x")
            lease = await kv.grant(30)
            waiter = asyncio.ensure_future(
                stub.lock(v3lockpb.LockRequest(name=b"", lease=lease.id))
            )
            await wait_for_count(kv, b"/", 2, "the lock's key under /")
            assert not waiter.done()  # queued behind /older
            await kv.delete(b"/older")
            async with asyncio.timeout(LIMIT):
                r = await waiter
            assert r.key.startswith(b"/") and r.key == lease_key(b"/", lease.id)
            assert lease_of(r.key) == lease.id
            await stub.unlock(v3lockpb.UnlockRequest(key=r.key))
            assert await keys_under(kv, b"/") == []
            await kv.revoke(lease.id)
        finally:
            channel.close()


async def test_v3lock_contention_release_and_deadline(net: Ctx) -> None:
    channel = net.channel()
    stub = v3lockpb.LockStub(channel)
    name = net.k("L")
    a, b = await net.kv.grant(30), await net.kv.grant(30)
    try:
        held = await stub.lock(v3lockpb.LockRequest(name=name, lease=a.id))
        # a waiter that gives up: DEADLINE_EXCEEDED for the client, the server deletes its key
        with pytest.raises(TimeoutError):
            await stub.lock(v3lockpb.LockRequest(name=name, lease=b.id), timeout=0.5)
        await wait_for_count(net.kv, name + b"/", 1, "the waiter's key removed")
        # the service and the recipe exclude each other
        with pytest.raises(LockTimeoutError):
            await net.kv.lock(name, timeout=0.3).acquire()
        # a waiter is served when the holder unlocks; its header is the unlock's revision
        waiter = asyncio.ensure_future(stub.lock(v3lockpb.LockRequest(name=name, lease=b.id)))
        await wait_for_count(net.kv, name + b"/", 2, "the waiter's key")
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


async def test_v3lock_waiter_whose_lease_is_revoked_still_succeeds_like_3_4(net: Ctx) -> None:
    # etcd 3.4 does not re-check the waiter's key after waiting (3.5 answers "mutex: session
    # is expired"); etcdlite's service follows 3.4, its Python Lock checks.
    channel = net.channel()
    stub = v3lockpb.LockStub(channel)
    name = net.k("L")
    a, b = await net.kv.grant(30), await net.kv.grant(30)
    try:
        held = await stub.lock(v3lockpb.LockRequest(name=name, lease=a.id))
        waiter = asyncio.ensure_future(stub.lock(v3lockpb.LockRequest(name=name, lease=b.id)))
        await wait_for_count(net.kv, name + b"/", 2, "the waiter's key")
        await b.revoke()
        await stub.unlock(v3lockpb.UnlockRequest(key=held.key))
        async with asyncio.timeout(LIMIT):
            got = await waiter
        assert got.key == lease_key(name + b"/", b.id)
        assert await net.kv.get(got.key) is None
    finally:
        channel.close()
        await a.revoke()
