"""Leases: grant, TTLs, time_to_live, refresh, revoke, keys and leases.

Real etcd is shared by the session, so explicit lease ids are random per run, and every
lease a test grants is revoked when it ends (the ``grant`` fixture).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from etcdlite import (
    Compare,
    Lease,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseTTLTooLargeError,
    Put,
)

from .conftest import Ctx

Grant = Callable[..., Awaitable[Lease]]

_rng = random.SystemRandom()


def fresh_id() -> int:
    """A positive 62-bit lease id nobody else in the session uses."""
    return _rng.randrange(1 << 40, 1 << 62)


@pytest_asyncio.fixture
async def grant(ctx: Ctx) -> AsyncIterator[Grant]:
    """``await grant(ttl, id=0)``; the lease is revoked at teardown if still alive."""
    granted: list[int] = []

    async def _grant(ttl: int = 60, id: int = 0) -> Lease:
        lease = await ctx.kv.grant(ttl, id)
        granted.append(lease.id)
        return lease

    yield _grant
    for lid in granted:
        with contextlib.suppress(LeaseNotFoundError):
            await ctx.kv.revoke(lid)


async def current_rev(ctx: Ctx) -> int:
    return (await ctx.kv.range(ctx.k("\0"))).header.revision


# --- grant ------------------------------------------------------------------------------


async def test_grant_auto_id(ctx: Ctx, grant: Grant) -> None:
    l1 = await grant(60)
    l2 = await grant(60)
    assert l1.id > 0 and l2.id > 0 and l1.id != l2.id
    assert (l1.ttl, l2.ttl) == (60, 60)
    assert {l1.id, l2.id} <= set(await ctx.kv.leases())
    await l1.revoke()
    await l2.revoke()


async def test_grant_explicit_id_and_duplicate(ctx: Ctx, grant: Grant) -> None:
    lid = fresh_id()
    lease = await grant(60, lid)
    assert (lease.id, lease.ttl) == (lid, 60)
    with pytest.raises(LeaseExistsError) as e:
        await ctx.kv.grant(30, lid)
    assert e.value.message == "etcdserver: lease already exists"
    ttl = await ctx.kv.time_to_live(lid)
    assert ttl.granted_ttl == 60  # the failed grant changed nothing
    await lease.revoke()
    # once revoked, the id can be granted again
    again = await grant(30, lid)
    assert (again.id, again.ttl) == (lid, 30)
    await again.revoke()


async def test_grant_negative_explicit_id(ctx: Ctx, grant: Grant) -> None:
    lid = -fresh_id()
    lease = await grant(60, lid)
    assert lease.id == lid
    assert lid in await ctx.kv.leases()
    await ctx.kv.put(ctx.k("a"), b"1", lease=lid)
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None and kv.lease == lid
    await lease.revoke()
    assert await ctx.kv.get(ctx.k("a")) is None


async def test_grant_minimum_ttl(ctx: Ctx, grant: Grant) -> None:
    for ttl in (1, 0, -5):
        lease = await grant(ttl)
        assert lease.ttl == 2, ttl
        t = await ctx.kv.time_to_live(lease)
        assert t.granted_ttl == 2
        assert 0 <= t.ttl <= 2
        await lease.revoke()
    lease = await grant(2)
    assert lease.ttl == 2
    lease = await grant(3)
    assert lease.ttl == 3


async def test_grant_maximum_ttl(ctx: Ctx, grant: Grant) -> None:
    with pytest.raises(LeaseTTLTooLargeError) as e:
        await grant(9_000_000_001)
    assert e.value.message == "etcdserver: too large lease TTL"
    with pytest.raises(LeaseTTLTooLargeError):
        await grant(9_000_000_001, fresh_id())
    lease = await grant(9_000_000_000)
    assert lease.ttl == 9_000_000_000
    await ctx.advance(0.2)
    t = await ctx.kv.time_to_live(lease)
    assert t.granted_ttl == 9_000_000_000
    assert t.ttl == 8_999_999_999  # floor of the remaining time
    await lease.revoke()


async def test_grant_does_not_bump_revision(ctx: Ctx, grant: Grant) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    lease = await grant(60)
    assert await current_rev(ctx) == ctx.r(1)
    await lease.refresh()
    await ctx.kv.time_to_live(lease, keys=True)
    await ctx.kv.leases()
    assert await current_rev(ctx) == ctx.r(1)
    await lease.revoke()


# --- time_to_live / refresh / leases ----------------------------------------------------


async def test_time_to_live(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    await ctx.kv.put(ctx.k("k2"), b"2", lease=lease)
    await ctx.kv.put(ctx.k("k1"), b"1", lease=lease.id)
    await ctx.kv.put(ctx.k("other"), b"x")
    await ctx.advance(0.2)
    t = await ctx.kv.time_to_live(lease, keys=True)
    assert t.id == lease.id
    assert t.ttl == 59  # floor of the remaining time
    assert t.granted_ttl == 60
    assert sorted(t.keys) == [ctx.k("k1"), ctx.k("k2")]
    t = await ctx.kv.time_to_live(lease.id)
    assert (t.granted_ttl, t.keys) == (60, [])
    t = await lease.time_to_live(keys=True)
    assert sorted(t.keys) == [ctx.k("k1"), ctx.k("k2")]
    # a lease without keys
    bare = await grant(30)
    t = await ctx.kv.time_to_live(bare, keys=True)
    assert (t.id, t.granted_ttl, t.keys) == (bare.id, 30, [])
    assert t.ttl <= 30
    await lease.revoke()
    await bare.revoke()


async def test_time_to_live_unknown_lease(ctx: Ctx, grant: Grant) -> None:
    lid = fresh_id()
    t = await ctx.kv.time_to_live(lid, keys=True)
    assert (t.id, t.ttl, t.granted_ttl, t.keys) == (lid, -1, 0, [])
    # and once revoked
    lease = await grant(60)
    await ctx.kv.put(ctx.k("a"), b"1", lease=lease)
    await lease.revoke()
    t = await ctx.kv.time_to_live(lease, keys=True)
    assert (t.id, t.ttl, t.granted_ttl, t.keys) == (lease.id, -1, 0, [])


async def test_refresh(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    await ctx.advance(1.5)
    assert (await ctx.kv.time_to_live(lease)).ttl == 58
    assert await ctx.kv.refresh(lease.id) == 60
    assert await ctx.kv.refresh(lease) == 60
    assert await lease.refresh() == 60
    await ctx.advance(0.2)
    t = await ctx.kv.time_to_live(lease)
    assert (t.ttl, t.granted_ttl) == (59, 60)  # the refresh reset the expiry
    # unknown lease: TTL 0, not an error
    assert await ctx.kv.refresh(fresh_id()) == 0
    await lease.revoke()
    assert await ctx.kv.refresh(lease.id) == 0
    with pytest.raises(LeaseNotFoundError):
        await lease.refresh()


async def test_leases_lists_granted_ids(ctx: Ctx, grant: Grant) -> None:
    explicit = fresh_id()
    l1 = await grant(60)
    l2 = await grant(120, explicit)
    ids = await ctx.kv.leases()
    assert l1.id in ids and explicit in ids
    assert len(ids) == len(set(ids))
    await l1.revoke()
    ids = await ctx.kv.leases()
    assert l1.id not in ids and explicit in ids
    await l2.revoke()
    assert explicit not in await ctx.kv.leases()


async def test_leases_ordered_by_expiry(ctx: Ctx, grant: Grant) -> None:
    long = await grant(600)
    short = await grant(30, fresh_id())
    middle = await grant(120)
    ids = [i for i in await ctx.kv.leases() if i in (long.id, short.id, middle.id)]
    assert ids == [short.id, middle.id, long.id]


# --- revoke -----------------------------------------------------------------------------


async def test_revoke_deletes_all_keys_in_one_revision(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    await ctx.kv.put(ctx.k("c"), b"3", lease=lease)  # r1
    await ctx.kv.put(ctx.k("a"), b"1", lease=lease)  # r2
    await ctx.kv.put(ctx.k("b"), b"2", lease=lease)  # r3
    await ctx.kv.put(ctx.k("z"), b"keep")  # r4
    rev = await lease.revoke()
    assert rev == ctx.r(5)
    for name in ("a", "b", "c"):
        assert await ctx.kv.get(ctx.k(name)) is None
    assert [kv.key for kv in (await ctx.kv.get_prefix(ctx.k(""))).kvs] == [ctx.k("z")]
    assert await current_rev(ctx) == ctx.r(5)
    # all three at the same revision: just before it they all existed
    before = await ctx.kv.get_prefix(ctx.k(""), revision=ctx.r(4))
    assert [kv.key for kv in before.kvs] == [ctx.k(n) for n in ("a", "b", "c", "z")]
    assert lease.id not in await ctx.kv.leases()
    assert (await ctx.kv.time_to_live(lease)).ttl == -1


async def test_revoke_keyless_lease_does_not_bump(ctx: Ctx, grant: Grant) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    lease = await grant(60)
    assert await ctx.kv.revoke(lease.id) == ctx.r(1)
    assert await current_rev(ctx) == ctx.r(1)
    # a lease whose keys were all deleted or detached has no keys either
    lease = await grant(60)
    await ctx.kv.put(ctx.k("b"), b"1", lease=lease)  # r2
    await ctx.kv.put(ctx.k("b"), b"2")  # r3: detaches
    await ctx.kv.put(ctx.k("c"), b"1", lease=lease)  # r4
    await ctx.kv.delete(ctx.k("c"))  # r5
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == []
    assert await lease.revoke() == ctx.r(5)
    assert (await ctx.kv.put(ctx.k("a"), b"2")).header.revision == ctx.r(6)


async def test_revoke_unknown_lease(ctx: Ctx, grant: Grant) -> None:
    with pytest.raises(LeaseNotFoundError) as e:
        await ctx.kv.revoke(fresh_id())
    assert e.value.message == "etcdserver: requested lease not found"
    lease = await grant(60)
    await lease.revoke()
    with pytest.raises(LeaseNotFoundError):
        await lease.revoke()
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.revoke(lease.id)


# --- keys and leases --------------------------------------------------------------------


async def test_put_with_missing_lease(ctx: Ctx, grant: Grant) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    with pytest.raises(LeaseNotFoundError) as e:
        await ctx.kv.put(ctx.k("b"), b"1", lease=fresh_id())
    assert e.value.message == "etcdserver: requested lease not found"
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.put(ctx.k("a"), b"2", lease=fresh_id())
    # a revoked lease is missing too
    lease = await grant(60)
    await lease.revoke()
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.put(ctx.k("a"), b"2", lease=lease)
    assert await ctx.kv.get(ctx.k("b")) is None
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None and (kv.value, kv.lease, kv.version) == (b"1", 0, 1)
    assert await current_rev(ctx) == ctx.r(1)


async def test_plain_put_detaches_key(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    k1, k2 = ctx.k("k1"), ctx.k("k2")
    await ctx.kv.put(k1, b"1", lease=lease)  # r1
    await ctx.kv.put(k2, b"2", lease=lease)  # r2
    kv = await ctx.kv.get(k1)
    assert kv is not None and kv.lease == lease.id
    await ctx.kv.put(k1, b"1b")  # r3: no lease → detached
    kv = await ctx.kv.get(k1)
    assert kv is not None and kv.lease == 0
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == [k2]
    assert await lease.revoke() == ctx.r(4)
    assert await ctx.kv.get(k2) is None
    kv = await ctx.kv.get(k1)
    assert kv is not None and (kv.value, kv.lease, kv.mod_revision) == (b"1b", 0, ctx.r(3))


async def test_put_moves_key_to_another_lease(ctx: Ctx, grant: Grant) -> None:
    l1, l2 = await grant(60), await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"1", lease=l1)  # r1
    await ctx.kv.put(k, b"2", lease=l2)  # r2
    assert (await ctx.kv.time_to_live(l1, keys=True)).keys == []
    assert (await ctx.kv.time_to_live(l2, keys=True)).keys == [k]
    assert await l1.revoke() == ctx.r(2)  # no keys left on l1: no bump
    assert (await ctx.kv.get(k)).value == b"2"  # type: ignore[union-attr]
    assert await l2.revoke() == ctx.r(3)
    assert await ctx.kv.get(k) is None


async def test_ignore_lease_keeps_lease(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"v1", lease=lease)  # r1
    await ctx.kv.put(k, b"v2", ignore_lease=True)  # r2
    kv = await ctx.kv.get(k)
    assert kv is not None and (kv.value, kv.lease, kv.version) == (b"v2", lease.id, 2)
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == [k]
    assert await lease.revoke() == ctx.r(3)
    assert await ctx.kv.get(k) is None


async def test_ignore_value_alone_drops_lease(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"v1", lease=lease)  # r1
    await ctx.kv.put(k, b"", ignore_value=True)  # r2: keeps value, lease becomes 0
    kv = await ctx.kv.get(k)
    assert kv is not None and (kv.value, kv.lease, kv.version, kv.mod_revision) == (
        b"v1",
        0,
        2,
        ctx.r(2),
    )
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == []
    assert await lease.revoke() == ctx.r(2)  # no keys left: no bump
    kv = await ctx.kv.get(k)
    assert kv is not None and kv.value == b"v1"


async def test_ignore_value_with_lease_attaches(ctx: Ctx, grant: Grant) -> None:
    l1, l2 = await grant(60), await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"v1", lease=l1)  # r1
    await ctx.kv.put(k, b"", ignore_value=True, lease=l2)  # r2
    kv = await ctx.kv.get(k)
    assert kv is not None and (kv.value, kv.lease) == (b"v1", l2.id)
    assert (await ctx.kv.time_to_live(l1, keys=True)).keys == []
    assert (await ctx.kv.time_to_live(l2, keys=True)).keys == [k]
    assert await l2.revoke() == ctx.r(3)
    assert await ctx.kv.get(k) is None
    await l1.revoke()


async def test_delete_detaches_key(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"1", lease=lease)  # r1
    await ctx.kv.delete(k)  # r2
    await ctx.kv.put(k, b"2")  # r3: re-created without a lease
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == []
    assert await lease.revoke() == ctx.r(3)
    assert (await ctx.kv.get(k)).value == b"2"  # type: ignore[union-attr]


async def test_lease_compare_in_txn(ctx: Ctx, grant: Grant) -> None:
    lease = await grant(60)
    k = ctx.k("k")
    await ctx.kv.put(k, b"1", lease=lease)  # r1
    r = await ctx.kv.txn([Compare.lease(k) == lease], [Put(k, b"2", ignore_lease=True)])
    assert r.succeeded and r.header.revision == ctx.r(2)
    assert not (await ctx.kv.txn([Compare.lease(k) == 0])).succeeded
    assert (await ctx.kv.txn([Compare.lease(k) > lease.id - 1])).succeeded
    assert (await ctx.kv.txn([Compare.lease(k) != lease.id + 1])).succeeded
    # a txn put with a lease attaches the key; a plain txn put detaches it
    k2 = ctx.k("k2")
    r = await ctx.kv.txn([Compare.version(k2) == 0], [Put(k2, b"x", lease=lease)])
    assert r.succeeded
    assert (await ctx.kv.txn([Compare.lease(ctx.k(""), prefix=True) == lease])).succeeded
    await ctx.kv.txn([], [Put(k, b"3")])
    assert (await ctx.kv.txn([Compare.lease(k) == 0])).succeeded
    assert not (await ctx.kv.txn([Compare.lease(ctx.k(""), prefix=True) == lease])).succeeded
    assert (await ctx.kv.time_to_live(lease, keys=True)).keys == [k2]
    await lease.revoke()
    assert await ctx.kv.get(k2) is None
    # after the revoke, nothing refers to the lease any more
    assert (await ctx.kv.txn([Compare.lease(k) == 0])).succeeded
