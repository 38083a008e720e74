"""Embedded guard rails (issue #18): a Store refuses calls from outside its own event loop,
and refuses what cannot go over etcd's wire (ids and revisions outside int64, floats,
non-ops in a txn) with a clear error instead of a wrong answer. Every refusal changes
nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest

from etcdlite import FutureRevisionError, KeyNotFoundError, LeaseNotFoundError, Store
from etcdlite.ops import Compare, Delete, Get, Put, Txn

Call = Callable[[Store], Awaitable[object]]

#: One call of each kind a Store serves (each goes through its gate).
CALLS: list[tuple[str, Call]] = [
    ("put", lambda s: s.put(b"k", b"other")),
    ("get", lambda s: s.get(b"k")),
    ("range", lambda s: s.range(b"k", prefix=True)),
    ("delete", lambda s: s.delete(b"k")),
    ("txn", lambda s: s.txn([], [Put(b"k", b"t")])),
    ("compact", lambda s: s.compact(1)),
    ("grant", lambda s: s.grant(10)),
    ("revoke", lambda s: s.revoke(1)),
    ("leases", lambda s: s.leases()),
    ("watch", lambda s: s.watch(b"k").__aenter__()),
    ("close", lambda s: s.close()),
]


def _state(store: Store) -> tuple[object, ...]:
    core = store.core
    return (
        core.revision,
        core.compacted_revision,
        [(kv.key, kv.mod_revision) for kv in core.changes_since(0)],
        sorted(e.id for e in core.lessor.leases()),
        store.closed,
    )


def _in_thread(call: Call, store: Store) -> BaseException | None:
    """Run ``call`` on a fresh loop in another thread; the exception it raised."""
    caught: list[BaseException | None] = [None]

    def run() -> None:
        try:
            asyncio.run(call(store))  # type: ignore[arg-type]
        except BaseException as e:  # handed back to the test
            caught[0] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    return caught[0]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
async def test_call_from_another_thread_raises_and_changes_nothing(name: str, call: Call) -> None:
    async with Store() as store:
        await store.put(b"k", b"v")
        lease = await store.grant(10)
        before = _state(store)
        err = await asyncio.to_thread(_in_thread, call, store)
        assert isinstance(err, RuntimeError), (name, err)
        assert "etcdlite: Store used from another thread" in str(err)
        assert _state(store) == before
        store.core._check()
        # the owner goes on as if nothing happened
        await store.put(b"k", b"v2")
        got = await store.get(b"k")
        assert got is not None and got.value == b"v2" and got.version == 2
        await store.revoke(lease)


def test_call_from_another_event_loop_raises() -> None:
    store = Store()
    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        first.run_until_complete(store.put(b"k", b"v"))
        before = _state(store)
        for _, call in CALLS:
            with pytest.raises(RuntimeError, match="another event loop"):
                second.run_until_complete(call(store))
        assert _state(store) == before
        assert first.run_until_complete(store.get(b"k")) is not None
        first.run_until_complete(store.close())
    finally:
        first.close()
        second.close()


async def test_store_first_used_in_a_thread_belongs_to_it() -> None:
    """The owner is the loop of the first call, not the one that built the Store (a
    ServerThread builds its store in the caller's thread and serves it in its own)."""
    store = Store()
    assert await asyncio.to_thread(_in_thread, lambda s: s.put(b"k", b"v"), store) is None
    with pytest.raises(RuntimeError, match="another thread"):
        await store.get(b"k")


async def test_txn_refuses_non_ops_and_non_compares() -> None:
    async with Store() as store:
        await store.put(b"k", b"v")
        before = _state(store)
        for bad in ("put k", b"k", 1, Compare.version(b"k") == 1, [Put(b"k")]):
            with pytest.raises(TypeError, match="txn"):
                await store.txn([], [Put(b"a", b"1"), bad])  # type: ignore[list-item]
            with pytest.raises(TypeError, match="txn"):
                await store.txn([], [], [bad])  # type: ignore[list-item]
            with pytest.raises(TypeError, match="txn"):
                await store.txn([], [Txn([], [bad])])  # type: ignore[list-item]
        for bad_cmp in (Put(b"k"), b"k", ("k", "==", 1), None):
            with pytest.raises(TypeError, match="compare"):
                await store.txn([bad_cmp], [Put(b"a", b"1")])  # type: ignore[list-item]
        # built first and spoiled afterwards: the store checks too
        t = Txn([Compare.version(b"k") > 0], [Get(b"k"), Delete(b"x")])
        t.success.append(object())  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="txn"):
            await store.txn(t)
        assert _state(store) == before
        # None is etcd's empty RequestOp: etcd's own answer, not a TypeError
        with pytest.raises(KeyNotFoundError):
            await store.txn([], [None])


async def test_loop_without_thread_record_takes_the_exact_check() -> None:
    """A loop class that does not record its thread (not asyncio's, not uvloop's) makes
    every call take the exact check: the owner still works, others are refused."""
    from etcdlite.store import _UNKNOWN_LOOP

    async with Store() as store:
        await store.put(b"k", b"v")
        store._owner = _UNKNOWN_LOOP
        await store.put(b"k", b"v2")
        assert (await store.get(b"k")) is not None
        err = await asyncio.to_thread(_in_thread, lambda s: s.put(b"k", b"x"), store)
        assert isinstance(err, RuntimeError) and "another thread" in str(err)
        assert store.revision == 3


BIG = 1 << 64  # over gRPC this would read as 0


async def test_lease_ids_must_be_int64() -> None:
    async with Store() as store:
        await store.put(b"k", b"v")
        before = _state(store)
        for bad in (BIG, 1 << 63, -(1 << 63) - 1):
            with pytest.raises(ValueError, match="int64"):
                await store.grant(10, bad)
            with pytest.raises(ValueError, match="int64"):
                await store.put(b"k", b"v2", lease=bad)
            with pytest.raises(ValueError, match="int64"):
                await store.txn([], [Put(b"k", b"v2", lease=bad)])
            with pytest.raises(ValueError, match="int64"):
                await store.revoke(bad)
            with pytest.raises(ValueError, match="int64"):
                await store.refresh(bad)
            with pytest.raises(ValueError, match="int64"):
                await store.time_to_live(bad)
            with pytest.raises(ValueError, match="int64"):
                Compare.lease(b"k") == bad  # noqa: B015 - the comparison raises
        for bad_type in (1.0, "1", True):
            with pytest.raises(TypeError, match="lease"):
                await store.put(b"k", b"v2", lease=bad_type)  # type: ignore[arg-type]
        assert _state(store) == before
        # etcd's own limits and answers are kept: int64's ends are ids like any other
        # (negative ids are granted by etcd), a missing lease is etcd's NotFound
        for lid in ((1 << 63) - 1, -(1 << 63), -7):
            lease = await store.grant(10, lid)
            assert lease.id == lid
            await store.put(b"k", b"v", lease=lid)
            await store.revoke(lid)
        with pytest.raises(LeaseNotFoundError):
            await store.put(b"k", b"v", lease=12345)


async def test_revisions_must_be_int64_ints() -> None:
    async with Store() as store:
        for i in range(3):
            await store.put(b"k", b"v%d" % i)
        before = _state(store)
        for bad, exc in ((2.0, TypeError), ("2", TypeError), (None, TypeError), (BIG, ValueError)):
            with pytest.raises(exc, match="revision"):
                await store.range(b"k", revision=bad)  # type: ignore[arg-type]
            with pytest.raises(exc, match="revision"):
                await store.range(b"k", min_mod_revision=bad)  # type: ignore[arg-type]
            with pytest.raises(exc, match="revision"):
                await store.txn([], [Get(b"k", revision=bad)])  # type: ignore[arg-type]
            with pytest.raises(exc, match="revision"):
                await store.compact(bad)  # type: ignore[arg-type]
            with pytest.raises(exc, match="start_revision"):
                store.watch(b"k", start_revision=bad)  # type: ignore[arg-type]
            with pytest.raises(exc, match="compare operand"):
                Compare.mod(b"k") == bad  # noqa: B015 - the comparison raises
        with pytest.raises(TypeError, match="revision"):
            await store.get(b"k", revision=2.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="limit"):
            await store.range(b"k", limit=1.5)  # type: ignore[arg-type]
        assert _state(store) == before
        # a too-large int revision of a plain get is etcd's "future revision" (as etcd
        # answers any revision above the current one)
        with pytest.raises(FutureRevisionError):
            await store.get(b"k", revision=BIG)
        got = await store.get(b"k", revision=2)
        assert got is not None and got.value == b"v0"
