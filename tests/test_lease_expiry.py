"""Lease expiry and keepalive: parity where time can be shared, ManualClock where it cannot."""

from __future__ import annotations

import asyncio

import pytest

from etcdlite import EventType, LeaseNotFoundError, ManualClock, Store
from etcdlite.clock import LoopClock

from .conftest import Ctx

# Real etcd revokes expired leases up to ~0.5 s late (its lessor scans every 500 ms).
ETCD_SLACK = 1.5


async def test_expiry_deletes_keys_in_one_revision_seen_by_a_watch(ctx: Ctx) -> None:
    lease = await ctx.kv.grant(2)
    for name in ("e3", "e1", "e2"):
        await ctx.kv.put(ctx.k(name), b"v", lease=lease)
    async with ctx.kv.watch(ctx.k("e"), prefix=True, prev_kv=True) as w:
        await ctx.advance(2 + (ETCD_SLACK if ctx.is_etcd else 0.01))
        async with asyncio.timeout(10):
            resp = await anext(w.responses())
        assert resp.header.revision == ctx.r(4)
        assert [(e.type, e.kv.key) for e in resp.events] == [
            (EventType.DELETE, ctx.k("e1")),
            (EventType.DELETE, ctx.k("e2")),
            (EventType.DELETE, ctx.k("e3")),
        ]
        assert all(e.prev_kv is not None and e.prev_kv.lease == lease.id for e in resp.events)
    assert (await ctx.kv.time_to_live(lease)).ttl == -1
    assert await ctx.kv.refresh(lease) == 0
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.revoke(lease)


async def test_keepalive_keeps_a_lease_alive(ctx: Ctx) -> None:
    async with ctx.kv.lease(2) as lease:
        await ctx.kv.put(ctx.k("a"), b"v", lease=lease)
        await ctx.advance(2 + ETCD_SLACK)
        assert lease.alive
        assert await ctx.kv.get(ctx.k("a")) is not None
        assert (await lease.time_to_live()).granted_ttl == 2
    # leaving the block revoked it
    assert await ctx.kv.get(ctx.k("a")) is None
    assert (await ctx.kv.time_to_live(lease)).ttl == -1


async def test_keepalive_notices_a_lease_revoked_elsewhere(ctx: Ctx) -> None:
    async with ctx.kv.lease(2) as lease:
        await ctx.kv.revoke(lease.id)
        await ctx.advance(2)
        async with asyncio.timeout(10):
            await lease.lost()
        assert not lease.alive


async def test_refresh_resets_the_expiry() -> None:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        lease = await store.grant(10)
        await store.put(b"k", b"v", lease=lease)
        await clock.advance(8)
        assert await lease.refresh() == 10
        await clock.advance(8)
        assert await store.get(b"k") is not None
        assert (await lease.time_to_live()).ttl == 1  # 2 s left, floored an instant later
        await clock.advance(2)
        assert await store.get(b"k") is None
        with pytest.raises(LeaseNotFoundError):
            await lease.refresh()
        assert not lease.alive


async def test_many_leases_expire_in_bounded_batches() -> None:
    clock = ManualClock()
    async with Store(clock=clock, lease_expiry_batch=500) as store:
        rev0 = store.revision
        batches: list[int] = []
        real_revoke = store.core.revoke

        leases = []
        for i in range(10_000):
            lease = await store.grant(5 + (i % 3))
            await store.put(b"key/%05d" % i, b"v", lease=lease)
            leases.append(lease)
        rev_after_puts = store.revision
        assert rev_after_puts == rev0 + 10_000

        revoked_in_turn = 0

        def counting_revoke(lease_id: int) -> int:
            nonlocal revoked_in_turn
            revoked_in_turn += 1
            return real_revoke(lease_id)

        store.core.revoke = counting_revoke  # type: ignore[method-assign]

        async def watch_turns() -> None:
            nonlocal revoked_in_turn
            while True:
                await asyncio.sleep(0)
                if revoked_in_turn:
                    batches.append(revoked_in_turn)
                    revoked_in_turn = 0

        watcher = asyncio.ensure_future(watch_turns())
        try:
            await clock.advance(10)
        finally:
            watcher.cancel()
        assert (await store.get_prefix(b"key/")).count == 0
        # one revision per expired lease, as etcd revokes them
        assert store.revision == rev_after_puts + 10_000
        assert len(store.core.lessor) == 0
        assert max(batches) <= 500 and sum(batches) == 10_000
        store.core._check()


async def test_leader_change_gives_leases_their_full_ttl_back() -> None:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        lease = await store.grant(10)
        await store.put(b"k", b"v", lease=lease)
        await clock.advance(9)
        store.simulate_leader_change()
        await clock.advance(9)
        assert await store.get(b"k") is not None
        assert (await lease.time_to_live()).ttl == 0
        await clock.advance(1)
        assert await store.get(b"k") is None


async def test_min_lease_ttl_is_configurable() -> None:
    clock = ManualClock()
    async with Store(clock=clock, min_lease_ttl=1) as store:
        assert (await store.grant(0)).ttl == 1
        assert (await store.grant(1)).ttl == 1
        assert (await store.grant(3)).ttl == 3


async def test_keepalive_tasks_end_with_the_store() -> None:
    clock = ManualClock()
    store = Store(clock=clock)
    keeper = store.lease(10)
    lease = await keeper.__aenter__()
    assert lease._keeper is not None and not lease._keeper.done()
    await store.close()
    assert lease._keeper.done()
    assert not store._tasks
    assert clock.pending == 0


async def test_cancelling_the_keepalive_leaves_no_task() -> None:
    clock = ManualClock()
    async with Store(clock=clock) as store:
        lease = await store.grant(10)
        lease.keepalive()
        await clock.advance(4)
        lease.stop_keepalive()
        await asyncio.sleep(0)
        await clock.advance(20)
        assert await store.get(b"nothing") is None
        assert not lease.alive or (await lease.time_to_live()).ttl == -1
        assert len(store._tasks) == 1  # only the expiry loop


async def test_store_on_the_loop_clock_expires_leases_in_real_time() -> None:
    async with Store(clock=LoopClock(), min_lease_ttl=0.05) as store:
        lease = await store.grant(0)
        put = await store.put(b"k", b"v", lease=lease)
        async with (
            store.watch(b"k", start_revision=put.header.revision + 1) as w,
            asyncio.timeout(5),
        ):
            event = await anext(w)  # the expiry's delete, from the revision after the put
        assert event.type == EventType.DELETE
        assert await store.get(b"k") is None
