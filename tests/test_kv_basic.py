"""Revisions, put, get, delete: the same assertions on every backend."""

from __future__ import annotations

import pytest

from etcdlite import (
    EmptyKeyError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    ValueProvidedError,
)

from .conftest import Ctx


async def test_each_write_bumps_revision_once(ctx: Ctx) -> None:
    r = await ctx.kv.put(ctx.k("a"), b"1")
    assert r.header.revision == ctx.r(1)
    r = await ctx.kv.put(ctx.k("a"), b"1")  # identical value still bumps
    assert r.header.revision == ctx.r(2)
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (
        ctx.r(1),
        ctx.r(2),
        2,
        b"1",
        0,
    )
    # reads and no-op deletes do not bump
    assert (await ctx.kv.range(ctx.k("a"))).header.revision == ctx.r(2)
    d = await ctx.kv.delete(ctx.k("nonexistent"))
    assert (d.deleted, d.header.revision) == (0, ctx.r(2))


async def test_delete_recreate_resets_version_and_create_revision(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")
    await ctx.kv.put(ctx.k("a"), b"2")
    d = await ctx.kv.delete(ctx.k("a"), prev_kv=True)
    assert d.deleted == 1 and d.header.revision == ctx.r(3)
    assert [(p.key, p.version, p.value) for p in d.prev_kvs] == [(ctx.k("a"), 2, b"2")]
    assert await ctx.kv.get(ctx.k("a")) is None
    await ctx.kv.put(ctx.k("a"), b"3")
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (ctx.r(4), ctx.r(4), 1)
    # the old generation is still readable at its revisions
    old = await ctx.kv.get(ctx.k("a"), revision=ctx.r(2))
    assert old is not None and (old.value, old.version) == (b"2", 2)
    assert await ctx.kv.get(ctx.k("a"), revision=ctx.r(3)) is None


async def test_put_prev_kv(ctx: Ctx) -> None:
    r = await ctx.kv.put(ctx.k("a"), b"1", prev_kv=True)
    assert r.prev_kv is None
    r = await ctx.kv.put(ctx.k("a"), b"2", prev_kv=True)
    assert r.prev_kv is not None
    assert (r.prev_kv.key, r.prev_kv.value, r.prev_kv.version, r.prev_kv.mod_revision) == (
        ctx.k("a"),
        b"1",
        1,
        ctx.r(1),
    )
    r = await ctx.kv.put(ctx.k("a"), b"3")
    assert r.prev_kv is None  # not asked for


async def test_str_keys_and_values_are_utf8(ctx: Ctx) -> None:
    key = ctx.k("ключ").decode()
    await ctx.kv.put(key, "знач")
    kv = await ctx.kv.get(key.encode())
    assert kv is not None and kv.value == "знач".encode()


async def test_put_validation_order_and_errors(ctx: Ctx) -> None:
    with pytest.raises(EmptyKeyError) as e:
        await ctx.kv.put(b"", b"v")
    assert e.value.code == 3 and e.value.message == "etcdserver: key is not provided"
    with pytest.raises(ValueProvidedError):
        await ctx.kv.put(ctx.k("a"), b"v", ignore_value=True)
    with pytest.raises(LeaseProvidedError):
        await ctx.kv.put(ctx.k("a"), b"", lease=7, ignore_lease=True)
    # a missing lease is reported before the missing key (standalone put)
    with pytest.raises(LeaseNotFoundError) as le:
        await ctx.kv.put(ctx.k("a"), b"", lease=0x7E57_0000_0000_0001, ignore_value=True)
    assert le.value.code == 5
    with pytest.raises(KeyNotFoundError):
        await ctx.kv.put(ctx.k("a"), b"", ignore_value=True)
    with pytest.raises(KeyNotFoundError):
        await ctx.kv.put(ctx.k("a"), b"v", ignore_lease=True)
    # nothing was stored by any of the rejected requests
    r = await ctx.kv.range(ctx.k(), prefix=True)
    assert r.header.revision == ctx.r(0) and r.count == 0


async def test_ignore_value_keeps_value(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")
    await ctx.kv.put(ctx.k("a"), b"", ignore_value=True)
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None and (kv.value, kv.version) == (b"1", 2)
    await ctx.kv.put(ctx.k("a"), b"2", ignore_lease=True)
    kv = await ctx.kv.get(ctx.k("a"))
    assert kv is not None and (kv.value, kv.version) == (b"2", 3)


async def test_delete_range_and_prefix(ctx: Ctx) -> None:
    for name in ("a", "b", "b1", "c"):
        await ctx.kv.put(ctx.k(name), name.encode())
    d = await ctx.kv.delete(ctx.k("b"), prefix=True, prev_kv=True)
    assert d.deleted == 2 and d.header.revision == ctx.r(5)
    assert [p.key for p in d.prev_kvs] == [ctx.k("b"), ctx.k("b1")]  # key order
    d = await ctx.kv.delete(ctx.k("a"), ctx.k("z"))
    assert d.deleted == 2 and d.prev_kvs == [] and d.header.revision == ctx.r(6)
    d = await ctx.kv.delete(ctx.k("a"), ctx.k("z"))
    assert d.deleted == 0 and d.header.revision == ctx.r(6)
    with pytest.raises(EmptyKeyError):
        await ctx.kv.delete(b"")


async def test_delete_prefix_helper_and_inverted_range(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("x/1"), b"1")
    await ctx.kv.put(ctx.k("x/2"), b"2")
    d = await ctx.kv.delete(ctx.k("z"), ctx.k("a"))  # end <= key: empty range, no error
    assert d.deleted == 0
    d = await ctx.kv.delete_prefix(ctx.k("x/"))
    assert d.deleted == 2
    assert (await ctx.kv.get_prefix(ctx.k())).count == 0


async def test_wrong_types_are_rejected_before_anything_is_sent(ctx: Ctx) -> None:
    with pytest.raises(TypeError):
        await ctx.kv.put(123, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ctx.kv.put(ctx.k("a"), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ctx.kv.put(ctx.k("a"), b"v", lease="x")  # type: ignore[arg-type]
    assert (await ctx.kv.range(ctx.k(), prefix=True)).header.revision == ctx.r(0)
