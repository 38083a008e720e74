"""Embedded-only behaviour: store options, lifecycle, chunked and automatic compaction."""

from __future__ import annotations

import asyncio

import pytest

from etcdlite import CompactedError, Delete, ManualClock, Store, StoreClosedError
from etcdlite.core.autocompact import REVISION_INTERVAL, AutoCompactor
from etcdlite.core.mvcc import MVCC


async def test_fresh_store_is_at_revision_one() -> None:
    async with Store() as store:
        r = await store.range(b"a")
        assert r.header.revision == 1 and store.revision == 1
        assert r.header.cluster_id and r.header.member_id and r.header.raft_term


async def test_closed_store_refuses_calls() -> None:
    store = Store()
    await store.put(b"a", b"1")
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.put(b"a", b"2")
    with pytest.raises(StoreClosedError):
        await store.get(b"a")


async def test_physical_compaction_runs_in_bounded_steps() -> None:
    async with Store(compaction_batch=100) as store:
        for i in range(1000):
            await store.put(b"k%d" % (i % 10), b"v%d" % i)
        steps = 0
        real_step = store.core.compact_step

        def counting_step(budget: int = 10_000) -> bool:
            nonlocal steps
            steps += 1
            assert budget == 100
            return real_step(budget)

        store.core.compact_step = counting_step  # type: ignore[method-assign]
        await store.compact(store.revision - 5, physical=True)
        assert steps >= 10  # ~995 changes trimmed 100 at a time, one loop turn each
        assert not store.core.compaction_pending
        store.core._check()
        # history at and above the compacted revision survives; below it is gone
        assert len(store.core._log) <= 10 + 5
        kvs = await store.range(b"k", b"l", revision=store.revision - 5)
        assert kvs.count == 10


async def test_compaction_keeps_latest_revision_of_untouched_keys() -> None:
    async with Store() as store:
        await store.put(b"old", b"1")
        await store.put(b"gone", b"x")
        await store.delete(b"gone")
        for i in range(5):
            await store.put(b"hot", b"%d" % i)
        await store.compact(store.revision, physical=True)
        kv = await store.get(b"old")
        assert kv is not None and kv.value == b"1" and kv.mod_revision == 2
        assert b"gone" not in store.core._index  # a deleted key disappears entirely
        store.core._check()


def test_delete_at_compaction_revision_stays_in_change_log() -> None:
    """etcd-io/etcd#18089 (fixed in 3.4.34/3.5.16): a watch from the compaction revision
    must still replay the DELETE made at exactly that revision."""
    m = MVCC()
    m.put(b"a", b"1")
    m.delete_range(Delete(b"a"))
    rev = m.revision
    m.compact(rev)
    m.compact_all()
    changes = m.changes_since(rev)
    assert [(kv.key, kv.version, kv.mod_revision) for kv in changes] == [(b"a", 0, rev)]


async def test_auto_compaction_revision_mode() -> None:
    clock = ManualClock()
    async with Store(
        clock=clock, auto_compaction_mode="revision", auto_compaction_retention=10
    ) as store:
        for i in range(50):
            await store.put(b"k", b"%d" % i)
        await clock.advance(REVISION_INTERVAL - 1)
        assert store.compacted_revision == -1
        await clock.advance(1)
        assert store.compacted_revision == store.revision - 10
        with pytest.raises(CompactedError):
            await store.get(b"k", revision=store.revision - 11)
        assert (await store.get(b"k", revision=store.revision - 10)) is not None


async def test_auto_compaction_periodic_mode_keeps_retention_window() -> None:
    clock = ManualClock()
    async with Store(
        clock=clock, auto_compaction_mode="periodic", auto_compaction_retention=60
    ) as store:
        rev_at: dict[int, int] = {}
        for second in range(0, 181):
            rev_at[second] = store.revision
            await store.put(b"k", b"%d" % second)
            await clock.advance(1)
        # Compactions happen on sample boundaries; the compacted revision is never newer
        # than the revision of `retention` seconds ago, and it did move forward.
        assert store.compacted_revision > 1
        assert store.compacted_revision <= rev_at[180 - 60 + 6]


def test_auto_compactor_policy_is_etcds() -> None:
    rev_mode = AutoCompactor("revision", 100)
    assert rev_mode.interval == 300
    assert rev_mode.tick(0, 50) is None  # nothing to compact yet
    assert rev_mode.tick(300, 1000) == 900
    assert rev_mode.tick(600, 1000) is None  # same target again: skipped
    periodic = AutoCompactor("periodic", 3600 * 5)
    assert periodic.interval == 360  # samples every hour / 10 for long retentions
    with pytest.raises(ValueError):
        AutoCompactor("sometimes", 1)
    with pytest.raises(ValueError):
        AutoCompactor("periodic", 0)


async def test_close_cancels_background_work() -> None:
    clock = ManualClock()
    store = Store(clock=clock, auto_compaction_mode="revision", auto_compaction_retention=1)
    await store.put(b"a", b"1")
    assert store._tasks
    await store.close()
    assert not store._tasks
    assert clock.pending == 0
    await asyncio.sleep(0)
