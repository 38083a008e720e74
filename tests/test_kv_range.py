"""Range: every option of etcd's RangeRequest, on every backend (notes §2, §3, §14)."""

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

from .conftest import Ctx


async def _fill(ctx: Ctx) -> None:
    # the vectors of notes §14: k1=z k2=y k3=x k2=w k\xff=v l=u
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
