"""Embedded guard rails (issue #18): a Store refuses what cannot go over etcd's wire with a
clear error instead of a wrong answer. Every refusal changes nothing."""

from __future__ import annotations

import pytest

from etcdlite import KeyNotFoundError, Store
from etcdlite.ops import Compare, Delete, Get, Put, Txn


def _state(store: Store) -> tuple[object, ...]:
    core = store.core
    return (
        core.revision,
        core.compacted_revision,
        [(kv.key, kv.mod_revision) for kv in core.changes_since(0)],
        sorted(e.id for e in core.lessor.leases()),
        store.closed,
    )


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
