"""Range: every option of etcd's RangeRequest, on every backend."""

from __future__ import annotations

import pytest

from etcdlite import (
    CompactedError,
    EmptyKeyError,
    FutureRevisionError,
    SortOrder,
    SortTarget,
    prefix_end,
)
from etcdlite.ops import Delete, Get, Put

from .conftest import Ctx


async def _fill(ctx: Ctx) -> None:
    # etcd's own test vectors: k1=z k2=y k3=x k2=w k\xff=v l=u
    for name, value in [
        (b"k1", b"z"),
        (b"k2", b"y"),
        (b"k3", b"x"),
        (b"k2", b"w"),
        (b"k\xff", b"v"),
        (b"l", b"u"),
    ]:
        await ctx.kv.put(ctx.k(name), value)


def keys(ctx: Ctx, resp: object) -> list[bytes]:
    return [kv.key[len(ctx.prefix) :] for kv in resp]  # type: ignore[attr-defined]


async def test_key_range_matrix(ctx: Ctx) -> None:
    await _fill(ctx)
    kv = ctx.kv
    assert keys(ctx, await kv.range(ctx.k("k1"))) == [b"k1"]
    assert keys(ctx, await kv.range(ctx.k("k"), ctx.k("l"))) == [b"k1", b"k2", b"k3", b"k\xff"]
    assert keys(ctx, await kv.range(ctx.k("k"), prefix=True)) == [b"k1", b"k2", b"k3", b"k\xff"]
    assert keys(ctx, await kv.get_prefix(ctx.k("k"))) == [b"k1", b"k2", b"k3", b"k\xff"]
    # range_end b"\0": every key >= key (other tests' keys sort after ours only if larger)
    ge = await kv.range(ctx.k("k3"), b"\0")
    assert keys(ctx, [x for x in ge if x.key.startswith(ctx.prefix)]) == [b"k3", b"k\xff", b"l"]
    # end <= key: empty, no error
    r = await kv.range(ctx.k("l"), ctx.k("k"))
    assert (list(r), r.count) == ([], 0)
    r = await kv.get_range(ctx.k("k2"), ctx.k("k\xff"))
    assert keys(ctx, r) == [b"k2", b"k3"]
    with pytest.raises(EmptyKeyError):
        await kv.range(b"")


def test_prefix_end_is_gos_rule() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"
    assert prefix_end(b"ab\x00") == b"ab\x01"


async def test_limit_more_count(ctx: Ctx) -> None:
    await _fill(ctx)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), limit=2, keys_only=True)
    assert keys(ctx, r) == [b"k1", b"k2"] and r.more and r.count == 4
    assert all(x.value == b"" for x in r) and r.kvs[1].version == 2
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), limit=4)
    assert len(r) == 4 and not r.more
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), limit=-1)
    assert len(r) == 4 and not r.more
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), limit=1 << 62)
    assert len(r) == 4 and not r.more


async def test_count_only(ctx: Ctx) -> None:
    await _fill(ctx)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), count_only=True, limit=1)
    assert (r.count, list(r), r.more) == (4, [], False)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), count_only=True, keys_only=True)
    assert (r.count, list(r)) == (4, [])


async def test_sorting(ctx: Ctx) -> None:
    await _fill(ctx)
    kv, lo, hi = ctx.kv, ctx.k("k"), ctx.k("l")
    # a sort target alone sorts ascending by it
    assert keys(ctx, await kv.range(lo, hi, sort_target=SortTarget.VALUE)) == [
        b"k\xff",
        b"k2",
        b"k3",
        b"k1",
    ]
    assert keys(ctx, await kv.range(lo, hi, sort_order=SortOrder.DESCEND)) == [
        b"k\xff",
        b"k3",
        b"k2",
        b"k1",
    ]
    r = await kv.range(lo, hi, sort_order=SortOrder.DESCEND, limit=2)
    assert keys(ctx, r) == [b"k\xff", b"k3"] and r.more and r.count == 4
    assert keys(
        ctx, await kv.range(lo, hi, sort_order=SortOrder.ASCEND, sort_target=SortTarget.MOD)
    ) == [b"k1", b"k3", b"k2", b"k\xff"]
    assert keys(
        ctx, await kv.range(lo, hi, sort_order=SortOrder.DESCEND, sort_target=SortTarget.CREATE)
    ) == [b"k\xff", b"k3", b"k2", b"k1"]
    assert (
        keys(
            ctx,
            await kv.range(lo, hi, sort_order=SortOrder.DESCEND, sort_target=SortTarget.VERSION),
        )[0]
        == b"k2"
    )
    assert keys(
        ctx, await kv.range(lo, hi, sort_order=SortOrder.ASCEND, sort_target=SortTarget.KEY)
    ) == [b"k1", b"k2", b"k3", b"k\xff"]


async def test_sort_target_without_order_sorts_only_the_limit_window(ctx: Ctx) -> None:
    """etcd reads limit+1 keys in key order before a target-only sort (apply.go)."""
    await _fill(ctx)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), sort_target=SortTarget.VALUE, limit=1)
    assert keys(ctx, r) == [b"k2"] and r.more and r.count == 4
    r = await ctx.kv.range(
        ctx.k("k"), ctx.k("l"), sort_target=SortTarget.VALUE, sort_order=SortOrder.ASCEND, limit=1
    )
    assert keys(ctx, r) == [b"k\xff"] and r.more


async def test_out_of_range_sort_enums_mean_no_sort(ctx: Ctx) -> None:
    await _fill(ctx)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), sort_order=7)
    assert keys(ctx, r) == [b"k1", b"k2", b"k3", b"k\xff"]


async def test_revision_filters(ctx: Ctx) -> None:
    await _fill(ctx)
    lo, hi = ctx.k("k"), ctx.k("l")
    r = await ctx.kv.range(lo, hi, min_mod_revision=ctx.r(4), limit=1)
    assert keys(ctx, r) == [b"k2"] and r.more and r.count == 4
    r = await ctx.kv.range(lo, hi, max_create_revision=ctx.r(2))
    assert keys(ctx, r) == [b"k1", b"k2"] and r.count == 4 and not r.more
    r = await ctx.kv.range(lo, hi, min_create_revision=ctx.r(3), max_mod_revision=ctx.r(3))
    assert keys(ctx, r) == [b"k3"]


async def test_historical_and_invalid_revisions(ctx: Ctx) -> None:
    await _fill(ctx)
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), revision=ctx.r(2))
    assert [(x.key[len(ctx.prefix) :], x.value, x.version) for x in r] == [
        (b"k1", b"z", 1),
        (b"k2", b"y", 1),
    ]
    assert r.count == 2 and r.header.revision == ctx.r(6)  # header: current revision
    with pytest.raises(FutureRevisionError) as e:
        await ctx.kv.range(ctx.k("k1"), revision=ctx.r(1000))
    assert e.value.code == 11
    # a negative revision means "current" for a plain range
    r = await ctx.kv.range(ctx.k("k1"), revision=-5)
    assert keys(ctx, r) == [b"k1"]


async def test_compacted_revision_read(ctx: Ctx) -> None:
    await _fill(ctx)
    await ctx.kv.compact(ctx.r(3))
    with pytest.raises(CompactedError):
        await ctx.kv.range(ctx.k("k"), ctx.k("l"), revision=ctx.r(2))
    r = await ctx.kv.range(ctx.k("k"), ctx.k("l"), revision=ctx.r(3))  # == compacted: ok
    assert keys(ctx, r) == [b"k1", b"k2", b"k3"]


async def _tombstoned(ctx: Ctx) -> None:
    """c00..c09 at r(1)..r(10); c02..c05 deleted at r(11), c08 at r(12): live c00 c01 c06
    c07 c09, with a run of four deleted keys and a single one between them."""
    for i in range(10):
        await ctx.kv.put(ctx.k(b"c%02d" % i), b"v%d" % i)
    assert (await ctx.kv.delete(ctx.k("c02"), ctx.k("c06"))).deleted == 4
    assert (await ctx.kv.delete(ctx.k("c08"))).deleted == 1


async def test_count_and_limit_across_tombstones(ctx: Ctx) -> None:
    await _tombstoned(ctx)
    kv, lo, hi = ctx.kv, ctx.k("c"), prefix_end(ctx.k("c"))
    r = await kv.range(lo, hi, count_only=True)
    assert (r.count, list(r), r.more) == (5, [], False)
    r = await kv.range(lo, hi, count_only=True, limit=2)
    assert (r.count, list(r), r.more) == (5, [], False)
    r = await kv.range(lo, hi, limit=2)
    assert keys(ctx, r) == [b"c00", b"c01"] and r.more and r.count == 5
    r = await kv.range(lo, hi, limit=5)
    assert len(r) == 5 and not r.more and r.count == 5
    # starting on the deleted run: the limit counts live keys only
    r = await kv.range(ctx.k("c02"), hi, limit=2)
    assert keys(ctx, r) == [b"c06", b"c07"] and r.more and r.count == 3
    r = await kv.range(ctx.k("c02"), hi, limit=3, keys_only=True)
    assert keys(ctx, r) == [b"c06", b"c07", b"c09"] and not r.more and r.count == 3
    # a range holding only deleted keys, and a single deleted key
    r = await kv.range(ctx.k("c02"), ctx.k("c06"), limit=1)
    assert (list(r), r.more, r.count) == ([], False, 0)
    r = await kv.range(ctx.k("c04"))
    assert (list(r), r.count) == ([], 0)
    r = await kv.range(ctx.k("c08"), count_only=True)
    assert r.count == 0
    r = await kv.range(ctx.k("c07"), ctx.k("c09"), count_only=True)  # c07, c08 (deleted)
    assert r.count == 1
    # descending with a limit crosses the tombstones from the other side
    r = await kv.range(lo, hi, limit=2, sort_order=SortOrder.DESCEND)
    assert keys(ctx, r) == [b"c09", b"c07"] and r.more and r.count == 5
    r = await kv.range(lo, ctx.k("c06"), limit=1, sort_order=SortOrder.DESCEND)
    assert keys(ctx, r) == [b"c01"] and r.more and r.count == 2
    # a filter with a limit: count is before the filter, more after it
    r = await kv.range(lo, hi, limit=1, min_mod_revision=ctx.r(7))
    assert keys(ctx, r) == [b"c06"] and r.more and r.count == 5
    r = await kv.range(lo, hi, limit=2, max_create_revision=ctx.r(2))
    assert keys(ctx, r) == [b"c00", b"c01"] and not r.more and r.count == 5
    # a sort target alone sorts only the limit+1 window of live keys
    r = await kv.range(lo, hi, limit=1, sort_target=SortTarget.MOD)
    assert keys(ctx, r) == [b"c00"] and r.more and r.count == 5
    assert r.header.revision == ctx.r(12)


async def test_count_and_limit_after_recreate(ctx: Ctx) -> None:
    await _tombstoned(ctx)
    kv, hi = ctx.kv, prefix_end(ctx.k("c"))
    await kv.put(ctx.k("c03"), b"again")  # r(13)
    got = await kv.get(ctx.k("c03"))
    assert got is not None
    assert (got.create_revision, got.mod_revision, got.version) == (ctx.r(13), ctx.r(13), 1)
    r = await kv.range(ctx.k("c"), hi, count_only=True)
    assert r.count == 6
    r = await kv.range(ctx.k("c02"), hi, limit=3)
    assert keys(ctx, r) == [b"c03", b"c06", b"c07"] and r.more and r.count == 4
    r = await kv.range(ctx.k("c02"), ctx.k("c06"), limit=1, sort_order=SortOrder.DESCEND)
    assert keys(ctx, r) == [b"c03"] and not r.more and r.count == 1
    # everything deleted and c05 re-created inside one txn, counted after each step (the
    # deletes leave c05 out: a put may not fall inside a delete range of its txn)
    resp = await kv.txn(
        [],
        [
            Delete(ctx.k("c00"), ctx.k("c05")),
            Delete(ctx.k("c06"), hi),
            Get(ctx.k("c"), hi, count_only=True),
            Put(ctx.k("c05"), b"t"),
            Get(ctx.k("c"), hi, limit=1),
        ],
    )
    assert resp.succeeded and resp.header.revision == ctx.r(14)
    first, second, before, _, after = resp.responses
    assert (first.deleted, second.deleted) == (3, 3)  # type: ignore[union-attr]
    assert before.count == 0  # type: ignore[union-attr]
    assert keys(ctx, after) == [b"c05"] and after.count == 1  # type: ignore[union-attr]
    assert not after.more  # type: ignore[union-attr]
    r = await kv.range(ctx.k("c"), hi, count_only=True)
    assert r.count == 1


async def test_count_and_limit_at_past_revisions(ctx: Ctx) -> None:
    await _tombstoned(ctx)
    await ctx.kv.put(ctx.k("c03"), b"again")  # r(13)
    kv, lo, hi = ctx.kv, ctx.k("c"), prefix_end(ctx.k("c"))

    async def at(rev: int, start: bytes = lo, **kw: int) -> tuple[list[bytes], bool, int]:
        r = await kv.range(start, hi, revision=rev, **kw)  # type: ignore[arg-type]
        assert r.header.revision == ctx.r(13)
        return keys(ctx, r), r.more, r.count

    assert (await at(ctx.r(10), count_only=True))[2] == 10
    assert (await at(ctx.r(11), count_only=True))[2] == 6
    assert (await at(ctx.r(12), count_only=True))[2] == 5
    assert (await at(ctx.r(13), count_only=True))[2] == 6
    assert await at(ctx.r(10), ctx.k("c02"), limit=3) == ([b"c02", b"c03", b"c04"], True, 8)
    assert await at(ctx.r(12), ctx.k("c02"), limit=2) == ([b"c06", b"c07"], True, 3)
    assert await at(ctx.r(12), limit=2, sort_order=SortOrder.DESCEND) == (
        [b"c09", b"c07"],
        True,
        5,
    )
    assert await at(ctx.r(11), limit=3, sort_order=SortOrder.DESCEND) == (
        [b"c09", b"c08", b"c07"],
        True,
        6,
    )
    assert await at(ctx.r(3), count_only=True) == ([], False, 3)
    # compaction keeps what reads at and after it need; counts now are unchanged
    await kv.compact(ctx.r(12))
    assert (await at(ctx.r(12), count_only=True))[2] == 5
    assert await at(ctx.r(12), ctx.k("c02"), limit=1) == ([b"c06"], True, 3)
    r = await kv.range(lo, hi, count_only=True)
    assert r.count == 6
    r = await kv.range(ctx.k("c02"), hi, limit=2)
    assert keys(ctx, r) == [b"c03", b"c06"] and r.more and r.count == 4
    with pytest.raises(CompactedError):
        await at(ctx.r(11), count_only=True)
