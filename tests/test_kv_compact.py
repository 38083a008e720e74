"""Compact: errors, what survives, headers.

Compaction on the shared etcd is global: every test compacts only at revisions it created
itself and never assumes what the compacted revision was before it ran.
"""

from __future__ import annotations

import pytest

from etcdlite import (
    CompactedError,
    Compare,
    FutureRevisionError,
    Get,
    Put,
    RangeResponse,
    Txn,
)

from .conftest import Ctx


async def current_rev(ctx: Ctx) -> int:
    return (await ctx.kv.range(ctx.k("\0"))).header.revision


async def history(ctx: Ctx) -> None:
    """r1 put a=1, r2 put x=1, r3 delete x, r4 put a=2, r5 put b=1, r6 put a=3."""
    a, b, x = ctx.k("a"), ctx.k("b"), ctx.k("x")
    assert (await ctx.kv.put(a, b"1")).header.revision == ctx.r(1)
    assert (await ctx.kv.put(x, b"1")).header.revision == ctx.r(2)
    assert (await ctx.kv.delete(x)).header.revision == ctx.r(3)
    assert (await ctx.kv.put(a, b"2")).header.revision == ctx.r(4)
    assert (await ctx.kv.put(b, b"1")).header.revision == ctx.r(5)
    assert (await ctx.kv.put(a, b"3")).header.revision == ctx.r(6)


def rows(resp: RangeResponse) -> list[tuple[bytes, bytes, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in resp]


async def test_compact_future_revision(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    for rev in (ctx.r(2), ctx.r(100)):
        with pytest.raises(FutureRevisionError) as e:
            await ctx.kv.compact(rev)
        assert e.value.message == "etcdserver: mvcc: required revision is a future revision"
    # nothing was compacted: the whole history of this test is readable
    assert rows(await ctx.kv.range(ctx.k("a"), revision=ctx.r(1))) == [
        (ctx.k("a"), b"1", ctx.r(1), ctx.r(1), 1)
    ]
    assert await current_rev(ctx) == ctx.r(1)


async def test_compact_twice_and_below_fails(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    await ctx.kv.put(a, b"2")  # r2
    await ctx.kv.put(a, b"3")  # r3
    r = await ctx.kv.compact(ctx.r(2))
    assert r.header.revision == ctx.r(3)
    for rev in (ctx.r(2), ctx.r(1)):
        with pytest.raises(CompactedError) as e:
            await ctx.kv.compact(rev)
        assert e.value.message == "etcdserver: mvcc: required revision has been compacted"
    # negative revisions are always at or below the compacted revision (-1 before any)
    with pytest.raises(CompactedError):
        await ctx.kv.compact(-1)
    # above the compacted revision is still fine
    r = await ctx.kv.compact(ctx.r(3))
    assert r.header.revision == ctx.r(3)
    with pytest.raises(CompactedError):
        await ctx.kv.compact(ctx.r(3))
    assert await current_rev(ctx) == ctx.r(3)


async def test_reads_after_compaction(ctx: Ctx) -> None:
    a, b, x = ctx.k("a"), ctx.k("b"), ctx.k("x")
    await history(ctx)
    rev = ctx.r(4)
    r = await ctx.kv.compact(rev)
    assert r.header.revision == ctx.r(6)

    # below rev: compacted, whether single key, prefix or a key that never existed
    for revision in (rev - 1, ctx.r(1)):
        for key, kw in ((a, {}), (ctx.k(""), {"prefix": True}), (ctx.k("never"), {})):
            with pytest.raises(CompactedError) as e:
                await ctx.kv.range(key, revision=revision, **kw)  # type: ignore[arg-type]
            assert e.value.message == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(CompactedError):
        await ctx.kv.get(a, revision=rev - 1)

    # at rev: the right historical data; x, deleted before rev, is gone
    at = await ctx.kv.range(ctx.k(""), prefix=True, revision=rev)
    assert rows(at) == [(a, b"2", ctx.r(1), ctx.r(4), 2)]
    assert at.count == 1
    assert at.header.revision == ctx.r(6)  # header is current even for historical reads
    assert await ctx.kv.get(x, revision=rev) is None
    assert await ctx.kv.get(b, revision=rev) is None

    # above rev: history intact
    assert rows(await ctx.kv.range(ctx.k(""), prefix=True, revision=ctx.r(5))) == [
        (a, b"2", ctx.r(1), ctx.r(4), 2),
        (b, b"1", ctx.r(5), ctx.r(5), 1),
    ]
    # current data intact
    assert rows(await ctx.kv.get_prefix(ctx.k(""))) == [
        (a, b"3", ctx.r(1), ctx.r(6), 3),
        (b, b"1", ctx.r(5), ctx.r(5), 1),
    ]
    assert rows(await ctx.kv.range(ctx.k(""), prefix=True, revision=ctx.r(6))) == rows(
        await ctx.kv.get_prefix(ctx.k(""))
    )
    # a later write continues the revision sequence and version count
    assert (await ctx.kv.put(a, b"4")).header.revision == ctx.r(7)
    kv = await ctx.kv.get(a)
    assert kv is not None and (kv.create_revision, kv.version) == (ctx.r(1), 4)


async def test_key_deleted_at_compaction_revision(ctx: Ctx) -> None:
    a, x = ctx.k("a"), ctx.k("x")
    await ctx.kv.put(a, b"1")  # r1
    await ctx.kv.put(x, b"1")  # r2
    await ctx.kv.delete(x)  # r3
    await ctx.kv.put(a, b"2")  # r4
    await ctx.kv.compact(ctx.r(3))
    assert await ctx.kv.get(x, revision=ctx.r(3)) is None
    assert rows(await ctx.kv.range(ctx.k(""), prefix=True, revision=ctx.r(3))) == [
        (a, b"1", ctx.r(1), ctx.r(1), 1)
    ]
    with pytest.raises(CompactedError):
        await ctx.kv.get(x, revision=ctx.r(2))
    # re-creating the key starts a new generation
    await ctx.kv.put(x, b"again")  # r5
    kv = await ctx.kv.get(x)
    assert kv is not None and (kv.create_revision, kv.version) == (ctx.r(5), 1)


async def test_physical_compaction(ctx: Ctx) -> None:
    a, b, x = ctx.k("a"), ctx.k("b"), ctx.k("x")
    await history(ctx)
    r = await ctx.kv.compact(ctx.r(5), physical=True)
    assert r.header.revision == ctx.r(6)
    with pytest.raises(CompactedError):
        await ctx.kv.range(a, revision=ctx.r(4))
    assert rows(await ctx.kv.range(ctx.k(""), prefix=True, revision=ctx.r(5))) == [
        (a, b"2", ctx.r(1), ctx.r(4), 2),
        (b, b"1", ctx.r(5), ctx.r(5), 1),
    ]
    assert await ctx.kv.get(x, revision=ctx.r(5)) is None
    assert rows(await ctx.kv.get_prefix(ctx.k(""))) == [
        (a, b"3", ctx.r(1), ctx.r(6), 3),
        (b, b"1", ctx.r(5), ctx.r(5), 1),
    ]
    with pytest.raises(CompactedError):
        await ctx.kv.compact(ctx.r(5), physical=True)


async def test_compaction_does_not_bump_revision(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    await ctx.kv.put(a, b"2")  # r2
    r = await ctx.kv.compact(ctx.r(1))
    assert r.header.revision == ctx.r(2)
    assert await current_rev(ctx) == ctx.r(2)
    # compacting at the current revision itself is allowed
    r = await ctx.kv.compact(ctx.r(2))
    assert r.header.revision == ctx.r(2)
    assert rows(await ctx.kv.range(a, revision=ctx.r(2))) == [(a, b"2", ctx.r(1), ctx.r(2), 2)]
    assert (await ctx.kv.put(a, b"3")).header.revision == ctx.r(3)


async def test_txn_range_at_compacted_revision(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    await ctx.kv.put(a, b"2")  # r2
    await ctx.kv.put(a, b"3")  # r3
    await ctx.kv.compact(ctx.r(2))
    with pytest.raises(CompactedError) as e:
        await ctx.kv.txn([], [Get(a, revision=ctx.r(1))])
    assert e.value.message == "etcdserver: mvcc: required revision has been compacted"
    # the error aborts the whole txn, even when a write came first
    with pytest.raises(CompactedError):
        await ctx.kv.txn([], [Put(ctx.k("b"), b"1"), Get(a, revision=ctx.r(1))])
    assert await ctx.kv.get(ctx.k("b")) is None
    assert await current_rev(ctx) == ctx.r(3)
    # in a nested txn too
    with pytest.raises(CompactedError):
        await ctx.kv.txn([], [Get(a), Txn([], [Get(a, revision=ctx.r(1))])])
    # at the compacted revision it is readable
    r = await ctx.kv.txn([], [Get(a, revision=ctx.r(2))])
    g = r.responses[0]
    assert isinstance(g, RangeResponse)
    assert rows(g) == [(a, b"2", ctx.r(1), ctx.r(2), 2)]
    # a negative revision: a plain Range reads the current revision, but inside a txn it is
    # checked against the compacted revision and fails once anything was compacted
    assert rows(await ctx.kv.range(a, revision=-1)) == [(a, b"3", ctx.r(1), ctx.r(3), 3)]
    with pytest.raises(CompactedError):
        await ctx.kv.txn([], [Get(a, revision=-1)])
    # the untaken branch is not checked against the compacted revision
    r = await ctx.kv.txn(
        [Compare.value(a) == b"3"], [Put(ctx.k("b"), b"1")], [Get(a, revision=ctx.r(1))]
    )
    assert r.succeeded and r.header.revision == ctx.r(4)
