"""Watch parity: the same assertions on the embedded Store and on real etcd."""

from __future__ import annotations

import asyncio

import pytest

from etcdlite import (
    Delete,
    EventType,
    FilterType,
    Put,
    WatchCanceledError,
    WatchCompactedError,
    WatchResponse,
)
from etcdlite.types import Event
from etcdlite.watch import Watch

from .conftest import Ctx

TIMEOUT = 10


async def next_response(w: Watch) -> WatchResponse:
    async with asyncio.timeout(TIMEOUT):
        async for resp in w.responses():
            return resp
    raise AssertionError("watch ended")


async def collect(w: Watch, n: int) -> list[tuple[EventType, bytes, int]]:
    """The next ``n`` events as (type, key, mod_revision)."""
    out: list[tuple[EventType, bytes, int]] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            ev = await anext(w)
            out.append((ev.type, ev.kv.key, ev.kv.mod_revision))
    return out


async def responses_until(w: Watch, revision: int) -> list[WatchResponse]:
    """Responses until one reaches ``revision``."""
    out: list[WatchResponse] = []
    async with asyncio.timeout(TIMEOUT):
        async for resp in w.responses():
            out.append(resp)
            if resp.header.revision >= revision:
                return out
    raise AssertionError("watch ended")


def assert_atomic(responses: list[WatchResponse]) -> None:
    """No revision's events are split across responses, and the header revision covers
    every event it carries (a response may hold several whole revisions)."""
    seen: set[int] = set()
    for resp in responses:
        revs = {e.kv.mod_revision for e in resp.events}
        assert not revs & seen, "a revision split across responses"
        seen |= revs
        assert all(r <= resp.header.revision for r in revs)


async def test_created_revision_and_live_events(ctx: Ctx) -> None:
    async with ctx.kv.watch(ctx.k("w"), prefix=True) as w:
        assert w.revision == ctx.r(0) and w.id >= 0
        await ctx.kv.put(ctx.k("w1"), b"a")
        await ctx.kv.txn([], [Put(ctx.k("w2"), b"b"), Put(ctx.k("w3"), b"c"), Delete(ctx.k("w1"))])
        responses = await responses_until(w, ctx.r(2))
        assert_atomic(responses)
        events = [e for r in responses for e in r.events]
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
            (EventType.PUT, ctx.k("w1"), ctx.r(1)),
            (EventType.PUT, ctx.k("w2"), ctx.r(2)),  # one revision, in txn order
            (EventType.PUT, ctx.k("w3"), ctx.r(2)),
            (EventType.DELETE, ctx.k("w1"), ctx.r(2)),
        ]
        dele = events[3].kv
        # a DELETE carries only the key and the deletion revision
        assert (dele.create_revision, dele.version, dele.value, dele.lease) == (0, 0, b"", 0)
        assert events[1].prev_kv is None


async def test_a_watcher_at_the_head_gets_each_revision_with_its_own_header(ctx: Ctx) -> None:
    async with ctx.kv.watch(ctx.k("w"), prefix=True) as w:
        for i in range(3):
            await ctx.kv.put(ctx.k("w"), b"%d" % i)
            resp = await next_response(w)  # read before the next write
            assert resp.header.revision == ctx.r(i + 1)
            assert [e.kv.mod_revision for e in resp.events] == [ctx.r(i + 1)]


async def test_historical_replay_is_one_batch_per_chunk_never_splitting_a_revision(
    ctx: Ctx,
) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")
    await ctx.kv.txn([], [Put(ctx.k("b"), b"2"), Put(ctx.k("c"), b"3")])
    await ctx.kv.delete(ctx.k("a"))
    async with ctx.kv.watch(ctx.k(), prefix=True, start_revision=ctx.r(1)) as w:
        resp = await next_response(w)
        # etcd replays history in one response whose header is the current revision
        assert resp.header.revision == ctx.r(3)
        assert [(e.type, e.kv.key, e.kv.mod_revision) for e in resp.events] == [
            (EventType.PUT, ctx.k("a"), ctx.r(1)),
            (EventType.PUT, ctx.k("b"), ctx.r(2)),
            (EventType.PUT, ctx.k("c"), ctx.r(2)),
            (EventType.DELETE, ctx.k("a"), ctx.r(3)),
        ]
        await ctx.kv.put(ctx.k("d"), b"4")  # then live events
        assert await collect(w, 1) == [(EventType.PUT, ctx.k("d"), ctx.r(4))]


async def test_replay_from_middle_of_history(ctx: Ctx) -> None:
    for i in range(5):
        await ctx.kv.put(ctx.k("k"), b"%d" % i)
    async with ctx.kv.watch(ctx.k("k"), start_revision=ctx.r(3)) as w:
        events = await collect(w, 3)
        assert [rev for _, _, rev in events] == [ctx.r(3), ctx.r(4), ctx.r(5)]


async def test_filters(ctx: Ctx) -> None:
    async with (
        ctx.kv.watch(ctx.k(), prefix=True, filters=[FilterType.NOPUT]) as no_put,
        ctx.kv.watch(ctx.k(), prefix=True, filters=[FilterType.NODELETE]) as no_del,
    ):
        await ctx.kv.put(ctx.k("a"), b"1")
        await ctx.kv.delete(ctx.k("a"))
        await ctx.kv.put(ctx.k("b"), b"2")
        await ctx.kv.delete(ctx.k("b"))
        assert await collect(no_put, 2) == [
            (EventType.DELETE, ctx.k("a"), ctx.r(2)),
            (EventType.DELETE, ctx.k("b"), ctx.r(4)),
        ]
        assert await collect(no_del, 2) == [
            (EventType.PUT, ctx.k("a"), ctx.r(1)),
            (EventType.PUT, ctx.k("b"), ctx.r(3)),
        ]


async def test_prev_kv_live_and_historical(ctx: Ctx) -> None:
    lease = await ctx.kv.grant(600)
    try:
        await ctx.kv.put(ctx.k("a"), b"1", lease=lease)
        await ctx.kv.put(ctx.k("a"), b"2")
        await ctx.kv.delete(ctx.k("a"))

        def shape(w_events: list) -> list:  # type: ignore[type-arg]
            return [
                (e.type, e.kv.value, e.prev_kv and (e.prev_kv.value, e.prev_kv.lease))
                for e in w_events
            ]

        expected = [
            (EventType.PUT, b"1", None),  # a creation carries no prev_kv
            (EventType.PUT, b"2", (b"1", lease.id)),
            (EventType.DELETE, b"", (b"2", 0)),
        ]
        async with ctx.kv.watch(ctx.k("a"), start_revision=ctx.r(1), prev_kv=True) as w:
            events: list[Event] = []
            async with asyncio.timeout(TIMEOUT):
                while len(events) < 3:
                    events.append(await anext(w))
            assert shape(events) == expected
        async with ctx.kv.watch(ctx.k("a"), prev_kv=True) as w:
            await ctx.kv.put(ctx.k("a"), b"3")
            await ctx.kv.put(ctx.k("a"), b"4")
            live = [await anext(w), await anext(w)]
            assert shape(live) == [(EventType.PUT, b"3", None), (EventType.PUT, b"4", (b"3", 0))]
    finally:
        await ctx.kv.revoke(lease)


async def test_cancel_ends_iteration(ctx: Ctx) -> None:
    w = await ctx.kv.watch(ctx.k("a"))
    await ctx.kv.put(ctx.k("a"), b"1")
    assert await collect(w, 1) == [(EventType.PUT, ctx.k("a"), ctx.r(1))]
    await w.cancel()
    await ctx.kv.put(ctx.k("a"), b"2")
    async with asyncio.timeout(TIMEOUT):
        assert [ev async for ev in w] == []


async def test_watch_from_compacted_revision(ctx: Ctx) -> None:
    for i in range(4):
        await ctx.kv.put(ctx.k("a"), b"%d" % i)
    await ctx.kv.compact(ctx.r(3))
    w = ctx.kv.watch(ctx.k("a"), start_revision=ctx.r(1))
    await w  # created first, as etcd answers `created` before the compaction cancel
    with pytest.raises(WatchCompactedError) as e:
        async with asyncio.timeout(TIMEOUT):
            async for _ in w:
                pass
    assert e.value.compact_revision == ctx.r(3)
    # from exactly the compacted revision: replayed
    async with ctx.kv.watch(ctx.k("a"), start_revision=ctx.r(3)) as w2:
        assert [rev for _, _, rev in await collect(w2, 2)] == [ctx.r(3), ctx.r(4)]


@pytest.mark.known_difference(
    reason="etcd-io/etcd#18089: 3.4.23 drops the tombstone at the compaction revision",
    fixed_in=(3, 4, 34),
)
async def test_delete_at_compaction_revision_is_replayed(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")
    await ctx.kv.delete(ctx.k("a"))
    # physical: etcd drops the tombstone when the compaction is applied to its backend
    await ctx.kv.compact(ctx.r(2), physical=True)
    async with ctx.kv.watch(ctx.k("a"), start_revision=ctx.r(2)) as w:
        await ctx.kv.put(ctx.k("b"), b"marker")
        await ctx.kv.put(ctx.k("a"), b"2")
        first = await collect(w, 1)
        assert first == [(EventType.DELETE, ctx.k("a"), ctx.r(2))]


async def test_future_start_revision_skips_until_then(ctx: Ctx) -> None:
    async with ctx.kv.watch(ctx.k("a"), start_revision=ctx.r(3)) as w:
        for i in range(4):
            await ctx.kv.put(ctx.k("a"), b"%d" % i)
        assert [rev for _, _, rev in await collect(w, 2)] == [ctx.r(3), ctx.r(4)]


async def test_empty_range_is_refused(ctx: Ctx) -> None:
    with pytest.raises(WatchCanceledError) as e:
        await ctx.kv.watch(ctx.k("b"), ctx.k("a"))
    assert e.value.reason == "mvcc: watcher range is empty"
    # range_end b"\0" is "every key >= key", not empty
    async with ctx.kv.watch(ctx.k("b"), b"\0") as w:
        await ctx.kv.put(ctx.k("c"), b"1")
        assert await collect(w, 1) == [(EventType.PUT, ctx.k("c"), ctx.r(1))]


async def test_progress_request(ctx: Ctx) -> None:
    async with ctx.kv.watch(ctx.k("a")) as w:
        await ctx.kv.put(ctx.k("other"), b"x")
        await w.request_progress()
        resp = await next_response(w)
        assert resp.progress and resp.events == []
        assert resp.header.revision == ctx.r(1)


async def test_several_watchers_each_get_their_own_responses(ctx: Ctx) -> None:
    async with (
        ctx.kv.watch(ctx.k("a")) as w1,
        ctx.kv.watch(ctx.k(), prefix=True) as w2,
    ):
        assert w1.id != w2.id
        await ctx.kv.put(ctx.k("a"), b"1")
        r1, r2 = await next_response(w1), await next_response(w2)
        assert r1.watch_id == w1.id and r2.watch_id == w2.id
        assert r1.events[0].kv == r2.events[0].kv


async def test_watch_once(ctx: Ctx) -> None:
    # start_revision makes the race between creating the watch and the put harmless
    ev, _ = await asyncio.gather(
        ctx.kv.watch_once(ctx.k("a"), start_revision=ctx.r(1), timeout=TIMEOUT),
        ctx.kv.put(ctx.k("a"), b"v"),
    )
    assert ev.type == EventType.PUT and ev.kv.value == b"v"
    with pytest.raises(TimeoutError):
        await ctx.kv.watch_once(ctx.k("never"), timeout=0.05)
