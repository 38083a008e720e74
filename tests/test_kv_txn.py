"""Txn: compares, branches, inner responses, static validation."""

from __future__ import annotations

import pytest

from etcdlite import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteRangeResponse,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    Get,
    KeyNotFoundError,
    LeaseNotFoundError,
    Put,
    PutResponse,
    RangeResponse,
    TooManyOpsError,
    Txn,
    TxnResponse,
    ValueProvidedError,
)
from etcdlite.ops import Op
from etcdlite.types import ResponseHeader

from .conftest import Ctx

EQ, GT, LT, NE = (
    CompareResult.EQUAL,
    CompareResult.GREATER,
    CompareResult.LESS,
    CompareResult.NOT_EQUAL,
)
# For operands (stored - 1, stored, stored + 1): is "stored <result> operand" true?
EXPECTED = {
    EQ: (False, True, False),
    NE: (True, False, True),
    GT: (True, False, False),
    LT: (False, False, True),
}


async def holds(ctx: Ctx, *cmps: Compare) -> bool:
    """Run a txn with these compares and no ops; which branch ran."""
    r = await ctx.kv.txn(list(cmps))
    assert r.responses == []
    return r.succeeded


async def current_rev(ctx: Ctx) -> int:
    return (await ctx.kv.range(ctx.k("\0"))).header.revision


def only_revision(h: ResponseHeader) -> tuple[int, int, int]:
    """Inner txn headers carry only ``revision``: the other fields are zero."""
    return (h.cluster_id, h.member_id, h.raft_term)


# --- compares ---------------------------------------------------------------------------


async def test_compare_missing_key_value_always_false(ctx: Ctx) -> None:
    k = ctx.k("missing")
    for result in (EQ, NE, GT, LT):
        for operand in (b"", b"x", b"\0"):
            cmp = Compare(k, CompareTarget.VALUE, result, operand)
            assert not await holds(ctx, cmp), cmp
    # even over a range with no keys in it
    assert not await holds(ctx, Compare.value(ctx.k("none/"), prefix=True) != b"")
    assert not await holds(ctx, Compare.value(ctx.k("none/"), prefix=True) == b"")


async def test_compare_missing_key_integer_targets_compare_zero(ctx: Ctx) -> None:
    k = ctx.k("missing")
    wrong = []
    for target in (
        CompareTarget.VERSION,
        CompareTarget.CREATE,
        CompareTarget.MOD,
        CompareTarget.LEASE,
    ):
        for result, expected in EXPECTED.items():
            for operand, want in zip((-1, 0, 1), expected, strict=True):
                cmp = Compare(k, target, result, operand)
                if await holds(ctx, cmp) != want:
                    wrong.append(cmp)
    assert wrong == []
    assert await holds(ctx, Compare.version(k) == 0)
    assert await holds(ctx, Compare.mod(k) < 1)
    assert await holds(ctx, Compare.create(k) == 0)
    assert await holds(ctx, Compare.lease(k) == 0)
    assert not await holds(ctx, Compare.version(k) > 0)
    # an empty range behaves like a missing key
    assert await holds(ctx, Compare.version(ctx.k("none/"), prefix=True) == 0)


async def test_compare_every_target_and_result(ctx: Ctx) -> None:
    k = ctx.k("a")
    lease = await ctx.kv.grant(60)
    try:
        await ctx.kv.put(k, b"l")  # r1
        await ctx.kv.put(k, b"m", lease=lease)  # r2
        kv = await ctx.kv.get(k)
        assert kv is not None
        assert (kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease) == (
            ctx.r(1),
            ctx.r(2),
            2,
            b"m",
            lease.id,
        )
        stored: dict[CompareTarget, tuple[object, object, object]] = {
            CompareTarget.VERSION: (1, 2, 3),
            CompareTarget.CREATE: (ctx.r(0), ctx.r(1), ctx.r(2)),
            CompareTarget.MOD: (ctx.r(1), ctx.r(2), ctx.r(3)),
            CompareTarget.VALUE: (b"l", b"m", b"n"),
            CompareTarget.LEASE: (lease.id - 1, lease.id, lease.id + 1),
        }
        wrong = []
        for target, operands in stored.items():
            for result, expected in EXPECTED.items():
                for operand, want in zip(operands, expected, strict=True):
                    cmp = Compare(k, target, result, operand)
                    if await holds(ctx, cmp) != want:
                        wrong.append(cmp)
        assert wrong == []
        # VALUE compares bytes lexicographically (unsigned)
        assert await holds(ctx, Compare.value(k) > b"lzzz")
        assert await holds(ctx, Compare.value(k) < b"m\0")
        assert await holds(ctx, Compare.value(k) != b"")
        assert await holds(ctx, Compare.value(k) < b"\xff")
        # no revision was created by any of these
        assert await current_rev(ctx) == ctx.r(2)
    finally:
        await ctx.kv.revoke(lease)


async def test_compare_lease_target(ctx: Ctx) -> None:
    lease = await ctx.kv.grant(60)
    try:
        await ctx.kv.put(ctx.k("leased"), b"1", lease=lease)
        await ctx.kv.put(ctx.k("plain"), b"1")
        assert await holds(ctx, Compare.lease(ctx.k("leased")) == lease)
        assert await holds(ctx, Compare.lease(ctx.k("leased")) == lease.id)
        assert not await holds(ctx, Compare.lease(ctx.k("leased")) == 0)
        assert await holds(ctx, Compare.lease(ctx.k("leased")) != 0)
        assert await holds(ctx, Compare.lease(ctx.k("plain")) == 0)
        assert not await holds(ctx, Compare.lease(ctx.k("plain")) == lease.id)
        assert await holds(ctx, Compare.lease(ctx.k("missing")) == 0)
        # over a range: every key must hold
        assert not await holds(ctx, Compare.lease(ctx.k(""), prefix=True) == lease.id)
        assert await holds(ctx, Compare.lease(ctx.k("leased"), ctx.k("leasee")) == lease.id)
    finally:
        await ctx.kv.revoke(lease)


async def test_range_compare_holds_for_every_key(ctx: Ctx) -> None:
    p = ctx.k("p/")
    await ctx.kv.put(ctx.k("p/a"), b"1")  # r1
    await ctx.kv.put(ctx.k("p/b"), b"2")  # r2
    await ctx.kv.put(ctx.k("p/c"), b"3")  # r3
    await ctx.kv.put(ctx.k("p/c"), b"4")  # r4
    await ctx.kv.put(ctx.k("q"), b"0")  # r5, outside p/

    assert await holds(ctx, Compare.version(p, prefix=True) > 0)
    assert not await holds(ctx, Compare.version(p, prefix=True) == 1)  # p/c is at 2
    assert await holds(ctx, Compare.version(ctx.k("p/a"), ctx.k("p/c")) == 1)  # [a, c)
    assert await holds(ctx, Compare.value(p, prefix=True) > b"0")
    assert not await holds(ctx, Compare.value(p, prefix=True) != b"1")  # p/a is "1"
    assert await holds(ctx, Compare.value(p, prefix=True) != b"9")
    assert await holds(ctx, Compare.value(ctx.k("p/b"), ctx.k("p/d")) > b"1")
    assert await holds(ctx, Compare.mod(p, prefix=True) < ctx.r(5))
    assert not await holds(ctx, Compare.mod(p, prefix=True) < ctx.r(4))
    assert await holds(ctx, Compare.create(p, prefix=True) > ctx.r(0))
    assert not await holds(ctx, Compare.create(p, prefix=True) > ctx.r(1))
    # range_end b"\0": every key >= key (on etcd that includes other tests' keys too)
    assert await holds(ctx, Compare.version(ctx.k("p/b"), b"\0") > 0)
    assert not await holds(ctx, Compare.version(ctx.k("p/a"), b"\0") > 1)  # p/a is at 1
    assert await holds(ctx, Compare.mod(ctx.k("p/a"), b"\0") < ctx.r(6))
    assert await holds(ctx, Compare.create(ctx.k("p/a"), b"\0") > 0)
    # an empty range (end <= key) matches nothing: behaves like a missing key
    assert await holds(ctx, Compare.version(ctx.k("p/c"), ctx.k("p/a")) == 0)
    assert not await holds(ctx, Compare.value(ctx.k("p/c"), ctx.k("p/a")) != b"x")


# --- branches ---------------------------------------------------------------------------


async def test_branch_selection(ctx: Ctx) -> None:
    a, b = ctx.k("a"), ctx.k("b")
    await ctx.kv.put(a, b"1")  # r1
    ok = [Compare.value(a) == b"1", Compare.version(a) == 1, Compare.version(b) == 0]
    r = await ctx.kv.txn(ok, [Put(b, b"then")], [Put(b, b"else")])
    assert r.succeeded is True
    assert r.header.revision == ctx.r(2)
    assert len(r.responses) == 1 and isinstance(r.responses[0], PutResponse)
    assert (await ctx.kv.get(b)).value == b"then"  # type: ignore[union-attr]

    # one false compare among true ones selects failure
    mixed = [Compare.value(a) == b"1", Compare.version(b) == 0]
    r = await ctx.kv.txn(mixed, [Put(b, b"then")], [Put(b, b"else"), Get(b)])
    assert r.succeeded is False
    assert r.header.revision == ctx.r(3)
    assert [type(x) for x in r.responses] == [PutResponse, RangeResponse]
    rr = r.responses[1]
    assert isinstance(rr, RangeResponse)
    assert [(kv.key, kv.value, kv.version) for kv in rr.kvs] == [(b, b"else", 2)]

    # a failed compare with an empty failure branch: nothing happens
    r = await ctx.kv.txn([Compare.value(a) == b"nope"], [Put(b, b"x")])
    assert (r.succeeded, r.responses, r.header.revision) == (False, [], ctx.r(3))
    assert (await ctx.kv.get(b)).value == b"else"  # type: ignore[union-attr]

    # the Txn object form
    r = await ctx.kv.txn(Txn([Compare.value(a) == b"1"], [Get(a)], [Put(a, b"x")]))
    assert r.succeeded is True and isinstance(r.responses[0], RangeResponse)


async def test_read_your_writes_inside_txn(ctx: Ctx) -> None:
    a, b, c = ctx.k("a"), ctx.k("b"), ctx.k("c")
    await ctx.kv.put(a, b"old")  # r1
    await ctx.kv.put(c, b"gone")  # r2
    r = await ctx.kv.txn(
        [],
        [
            Get(a),
            Put(b, b"1"),
            Get(b),
            Put(a, b"new"),
            Get(ctx.k(""), prefix=True),
            Delete(c),
            Get(c),
            Get(ctx.k(""), prefix=True, count_only=True),
        ],
    )
    R = ctx.r(3)
    assert r.succeeded and r.header.revision == R
    resps = r.responses
    assert [type(x) for x in resps] == [
        RangeResponse,
        PutResponse,
        RangeResponse,
        PutResponse,
        RangeResponse,
        DeleteRangeResponse,
        RangeResponse,
        RangeResponse,
    ]
    g0, g2, g4, g6, g7 = resps[0], resps[2], resps[4], resps[6], resps[7]
    assert isinstance(g0, RangeResponse) and isinstance(g2, RangeResponse)
    assert isinstance(g4, RangeResponse) and isinstance(g6, RangeResponse)
    assert isinstance(g7, RangeResponse)
    assert [(kv.value, kv.mod_revision, kv.version) for kv in g0.kvs] == [(b"old", ctx.r(1), 1)]
    assert [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in g2.kvs
    ] == [(b, b"1", R, R, 1)]
    assert [
        (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in g4.kvs
    ] == [
        (a, b"new", ctx.r(1), R, 2),
        (b, b"1", R, R, 1),
        (c, b"gone", ctx.r(2), ctx.r(2), 1),
    ]
    assert g4.count == 3
    d = resps[5]
    assert isinstance(d, DeleteRangeResponse) and d.deleted == 1
    assert (g6.kvs, g6.count) == ([], 0)
    assert (g7.kvs, g7.count) == ([], 2)
    # the outcome is visible afterwards, all at one revision
    got = await ctx.kv.get_prefix(ctx.k(""))
    assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [
        (a, b"new", R),
        (b, b"1", R),
    ]
    assert await current_rev(ctx) == R


async def test_inner_response_headers(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    R = ctx.r(1)
    r = await ctx.kv.txn(
        [],
        [
            Get(a),
            Delete(ctx.k("missing1")),
            Put(ctx.k("b"), b"2"),
            Get(a),
            Delete(ctx.k("missing2")),
            Delete(a),
        ],
    )
    assert r.header.revision == R + 1
    assert [x.header.revision for x in r.responses] == [R, R, R + 1, R + 1, R + 1, R + 1]
    d = r.responses[5]
    assert isinstance(d, DeleteRangeResponse) and d.deleted == 1
    for x in r.responses:
        assert only_revision(x.header) == (0, 0, 0), x
    # top-level header is a full one
    assert r.header.cluster_id != 0 and r.header.member_id != 0

    # read-only txn: every header is R
    R = ctx.r(2)
    r = await ctx.kv.txn([], [Get(a), Delete(ctx.k("missing"))])
    assert [r.header.revision, *(x.header.revision for x in r.responses)] == [R, R, R]


async def test_nested_txn(ctx: Ctx) -> None:
    a, b, c = ctx.k("a"), ctx.k("b"), ctx.k("c")
    await ctx.kv.put(a, b"old")  # r1
    R = ctx.r(1)
    r = await ctx.kv.txn(
        [Compare.value(a) == b"old"],
        [
            Put(a, b"new"),
            # nested compares see the state before the outer txn, not a=new
            Txn([Compare.value(a) == b"old"], [Put(b, b"yes"), Get(a)], [Put(b, b"no")]),
            Txn([Compare.value(a) == b"new"], [Put(c, b"yes")], [Put(c, b"no"), Get(c)]),
            Txn(),
        ],
    )
    assert r.succeeded and r.header.revision == R + 1
    # nested reads see the revision as of their position in the whole txn
    r2 = await ctx.kv.txn([], [Txn([], [Get(a)]), Put(ctx.k("d"), b"1"), Txn([], [Get(a)])])
    assert [x.header.revision for x in r2.responses] == [0, R + 2, 0]
    before, after = r2.responses[0], r2.responses[2]
    assert isinstance(before, TxnResponse) and isinstance(after, TxnResponse)
    assert [x.header.revision for x in before.responses + after.responses] == [R + 1, R + 2]
    assert [type(x) for x in r.responses] == [PutResponse, TxnResponse, TxnResponse, TxnResponse]
    n1, n2, n3 = r.responses[1], r.responses[2], r.responses[3]
    assert isinstance(n1, TxnResponse) and isinstance(n2, TxnResponse)
    assert isinstance(n3, TxnResponse)
    for n in (n1, n2, n3):
        h = n.header
        assert (h.cluster_id, h.member_id, h.revision, h.raft_term) == (0, 0, 0, 0)
    assert n1.succeeded is True
    assert [type(x) for x in n1.responses] == [PutResponse, RangeResponse]
    assert [x.header.revision for x in n1.responses] == [R + 1, R + 1]
    g = n1.responses[1]
    assert isinstance(g, RangeResponse)
    assert [kv.value for kv in g.kvs] == [b"new"]  # ops themselves do see earlier writes
    assert n2.succeeded is False
    assert [type(x) for x in n2.responses] == [PutResponse, RangeResponse]
    g = n2.responses[1]
    assert isinstance(g, RangeResponse) and [kv.value for kv in g.kvs] == [b"no"]
    assert (n3.succeeded, n3.responses) == (True, [])
    got = await ctx.kv.get_prefix(ctx.k(""))
    assert [(kv.key, kv.value, kv.mod_revision) for kv in got.kvs] == [
        (a, b"new", R + 1),
        (b, b"yes", R + 1),
        (c, b"no", R + 1),
        (ctx.k("d"), b"1", R + 2),
    ]


async def test_nested_read_only_and_noop_do_not_bump(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    r = await ctx.kv.txn([], [Txn([], [Get(ctx.k("a")), Delete(ctx.k("missing"))])])
    assert r.header.revision == ctx.r(1)
    n = r.responses[0]
    assert isinstance(n, TxnResponse)
    assert [x.header.revision for x in n.responses] == [ctx.r(1), ctx.r(1)]
    assert (await ctx.kv.put(ctx.k("b"), b"2")).header.revision == ctx.r(2)


# --- revisions ----------------------------------------------------------------------------


async def test_empty_txn(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    r = await ctx.kv.txn()
    assert (r.succeeded, r.responses, r.header.revision) == (True, [], ctx.r(1))
    r = await ctx.kv.txn(Txn())
    assert (r.succeeded, r.responses, r.header.revision) == (True, [], ctx.r(1))
    assert (await ctx.kv.put(ctx.k("a"), b"2")).header.revision == ctx.r(2)


async def test_read_only_txn_does_not_bump(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    r = await ctx.kv.txn([Compare.version(a) == 1], [Get(a), Get(ctx.k("x"))], [Put(a, b"no")])
    assert r.succeeded and r.header.revision == ctx.r(1)
    assert [x.header.revision for x in r.responses] == [ctx.r(1), ctx.r(1)]
    assert (await ctx.kv.put(a, b"2")).header.revision == ctx.r(2)


async def test_txn_deleting_only_missing_keys_does_not_bump(ctx: Ctx) -> None:
    await ctx.kv.put(ctx.k("a"), b"1")  # r1
    r = await ctx.kv.txn([], [Delete(ctx.k("missing")), Delete(ctx.k("none/"), prefix=True)])
    assert r.succeeded and r.header.revision == ctx.r(1)
    assert [(type(x), x.deleted, x.header.revision) for x in r.responses] == [  # type: ignore[union-attr]
        (DeleteRangeResponse, 0, ctx.r(1)),
        (DeleteRangeResponse, 0, ctx.r(1)),
    ]
    # the failure branch too
    r = await ctx.kv.txn([Compare.version(ctx.k("a")) == 9], [], [Delete(ctx.k("missing"))])
    assert not r.succeeded and r.header.revision == ctx.r(1)
    assert (await ctx.kv.put(ctx.k("a"), b"2")).header.revision == ctx.r(2)


# --- static validation ----------------------------------------------------------------


async def test_duplicate_key_matrix(ctx: Ctx) -> None:
    a, b, c, d = ctx.k("a"), ctx.k("b"), ctx.k("c"), ctx.k("d")
    await ctx.kv.put(a, b"0")  # r1
    rejected: dict[str, list[Op]] = {
        "two puts": [Put(a, b"1"), Put(a, b"2")],
        "put then delete range covering it": [Put(b, b"1"), Delete(a, c)],
        "delete range then put inside": [Delete(a, c), Put(b, b"1")],
        "delete single then put same key": [Delete(a), Put(a, b"1")],
        "delete prefix then put inside": [Delete(ctx.k(""), prefix=True), Put(b, b"1")],
        "nested then repeats parent put": [Put(a, b"1"), Txn([], [Put(a, b"2")])],
        "nested else repeats parent put": [Put(a, b"1"), Txn([], [], [Put(a, b"2")])],
        "parent put after nested repeating it": [Txn([], [Put(a, b"2")]), Put(a, b"1")],
        "nested put inside parent delete": [Delete(a, c), Txn([], [Put(b, b"1")])],
        "parent put inside nested delete": [Put(b, b"1"), Txn([], [Delete(a, c)])],
        "sibling nested puts": [Txn([], [Put(a, b"1")]), Txn([], [Put(a, b"2")])],
        "nested put in sibling nested delete": [
            Txn([], [Delete(a, c)]),
            Txn([], [Put(b, b"2")]),
        ],
        "nested-nested repeats parent put": [Put(a, b"1"), Txn([], [Txn([], [Put(a, b"2")])])],
        "duplicate within a nested branch": [Txn([], [Put(a, b"1"), Put(a, b"2")])],
    }
    for name, ops in rejected.items():
        for where in ("success", "failure"):
            ops_: list[Op | None] = list(ops)
            args: tuple[list[Compare], list[Op | None], list[Op | None]] = (
                ([], ops_, []) if where == "success" else ([], [], ops_)
            )
            with pytest.raises(DuplicateKeyError) as e:
                await ctx.kv.txn(*args)
            assert e.value.message == "etcdserver: duplicate key given in txn request", name
    # nothing was applied by any of them
    assert await current_rev(ctx) == ctx.r(1)
    assert [kv.key for kv in (await ctx.kv.get_prefix(ctx.k(""))).kvs] == [a]

    allowed: dict[str, list[Op]] = {
        "overlapping deletes": [Delete(a, c), Delete(b, d), Delete(a, d)],
        "same delete twice": [Delete(a), Delete(a)],
        "range then put same key": [Get(a), Put(a, b"1")],
        "put then range same key": [Put(a, b"1"), Get(a)],
        "nested then/else repeat": [Txn([], [Put(a, b"1")], [Put(a, b"2")])],
        "nested delete overlapping parent delete": [Delete(a, c), Txn([], [Delete(b, d)])],
        "put outside delete range": [Delete(a, b), Put(b, b"1")],
        "nested put outside parent delete": [Delete(a, b), Txn([], [Put(c, b"1")])],
    }
    for name, ops in allowed.items():
        r = await ctx.kv.txn([], ops)
        assert r.succeeded, name
    # success and failure are checked separately: the same key in both is fine
    r = await ctx.kv.txn([Compare.value(a) == b"nope"], [Put(a, b"s")], [Put(a, b"f")])
    assert r.succeeded is False
    assert (await ctx.kv.get(a)).value == b"f"  # type: ignore[union-attr]


async def test_duplicate_key_in_untaken_branch_rejected(ctx: Ctx) -> None:
    a = ctx.k("a")
    with pytest.raises(DuplicateKeyError):
        await ctx.kv.txn([], [Put(ctx.k("ok"), b"1")], [Put(a, b"1"), Put(a, b"2")])
    assert await ctx.kv.get(ctx.k("ok")) is None
    assert await current_rev(ctx) == ctx.r(0)


async def test_max_txn_ops(ctx: Ctx) -> None:
    k = ctx.k
    r = await ctx.kv.txn([], [Put(k(f"k{i:03}"), b"v") for i in range(128)])
    assert r.succeeded and len(r.responses) == 128 and r.header.revision == ctx.r(1)
    assert (await ctx.kv.get_prefix(k("k"), keys_only=True)).count == 128

    r = await ctx.kv.txn([Compare.version(k("k000")) == 1] * 128)
    assert r.succeeded and r.header.revision == ctx.r(1)
    r = await ctx.kv.txn([], [], [Get(k("k000"))] * 128)
    assert r.succeeded and r.responses == []

    too_many: list[tuple[list[Compare], list[Op], list[Op]]] = [
        ([], [Put(k(f"x{i:03}"), b"v") for i in range(129)], []),
        ([Compare.version(k("k000")) == 1] * 129, [], []),
        ([], [Get(k("k000"))] * 129, []),
        ([], [], [Put(k(f"x{i:03}"), b"v") for i in range(129)]),  # untaken branch too
        # a nested txn gets the budget 128 - (parent's op count)
        ([], [Txn([], [Put(k(f"x{i:03}"), b"v") for i in range(128)])], []),
        ([], [Get(k("k000")), Txn([], [Get(k("k000"))] * 127)], []),
    ]
    for cmps, ok, ko in too_many:
        with pytest.raises(TooManyOpsError) as e:
            await ctx.kv.txn(cmps, ok, ko)
        assert e.value.message == "etcdserver: too many operations in txn request"
    assert await current_rev(ctx) == ctx.r(1)
    assert (await ctx.kv.range(k("x"), prefix=True, count_only=True)).count == 0

    # exactly at the nested budget is fine
    r = await ctx.kv.txn([], [Txn([], [Get(k("k000"))] * 127)])
    assert r.succeeded
    r = await ctx.kv.txn([], [Get(k("k000")), Txn([], [Get(k("k000"))] * 126)])
    assert r.succeeded


async def test_empty_request_op_rejected(ctx: Ctx) -> None:
    a = ctx.k("a")
    cases: list[tuple[list[Compare], list[Op | None], list[Op | None]]] = [
        ([], [None], []),
        ([], [Put(a, b"1"), None], []),
        ([], [Put(a, b"1")], [None]),  # untaken branch
        ([], [Txn([], [None])], []),
        ([], [Txn([], [Put(a, b"1")], [None])], []),  # nested untaken branch
    ]
    for cmps, ok, ko in cases:
        with pytest.raises(KeyNotFoundError) as e:
            await ctx.kv.txn(cmps, ok, ko)
        assert e.value.message == "etcdserver: key not found"
    assert await ctx.kv.get(a) is None
    assert await current_rev(ctx) == ctx.r(0)


async def test_static_errors_in_untaken_branch_still_fail(ctx: Ctx) -> None:
    a = ctx.k("a")
    cases: list[tuple[list[Compare], list[Op], list[Op], type[Exception]]] = [
        ([], [Put(a, b"1")], [Put(b"", b"x")], EmptyKeyError),
        ([], [Put(a, b"1")], [Get(b"")], EmptyKeyError),
        ([], [Put(a, b"1")], [Delete(b"")], EmptyKeyError),
        ([], [Put(a, b"1")], [Txn([], [Put(b"", b"x")])], EmptyKeyError),
        ([], [Put(a, b"1")], [Put(a, b"x", ignore_value=True)], ValueProvidedError),
        ([Compare.version(a) == 1], [Put(b"", b"x")], [Put(a, b"1")], EmptyKeyError),
        ([Compare.version(b"") == 0], [Put(a, b"1")], [], EmptyKeyError),
    ]
    for cmps, ok, ko, exc in cases:
        with pytest.raises(exc):
            await ctx.kv.txn(cmps, ok, ko)
    assert await ctx.kv.get(a) is None
    assert await current_rev(ctx) == ctx.r(0)


# --- data-dependent errors --------------------------------------------------------------


async def test_data_errors_in_untaken_branch_ignored(ctx: Ctx) -> None:
    a = ctx.k("a")
    missing_lease = 0x7EADBEEF_0000_0001
    r = await ctx.kv.txn(
        [],
        [Put(a, b"1")],
        [
            Put(ctx.k("b"), b"x", lease=missing_lease),
            Put(ctx.k("c"), b"", ignore_value=True),
            Put(ctx.k("d"), b"x", ignore_lease=True),
            Get(a, revision=ctx.r(1000)),
        ],
    )
    assert r.succeeded and r.header.revision == ctx.r(1)
    assert (await ctx.kv.get(a)).value == b"1"  # type: ignore[union-attr]
    # and when the failure branch is the one taken, the success branch is not checked
    r = await ctx.kv.txn(
        [Compare.value(a) == b"nope"],
        [Put(ctx.k("b"), b"x", lease=missing_lease), Get(a, revision=ctx.r(1000))],
        [Put(a, b"2")],
    )
    assert not r.succeeded and r.header.revision == ctx.r(2)
    # nested untaken branches are not checked either
    r = await ctx.kv.txn(
        [], [Txn([Compare.version(a) == 2], [Put(a, b"3")], [Put(a, b"x", lease=missing_lease)])]
    )
    assert r.succeeded and r.header.revision == ctx.r(3)
    n = r.responses[0]
    assert isinstance(n, TxnResponse) and n.succeeded


async def test_data_error_in_taken_branch_applies_nothing(ctx: Ctx) -> None:
    a, b = ctx.k("a"), ctx.k("b")
    missing_lease = 0x7EADBEEF_0000_0002
    await ctx.kv.put(a, b"orig")  # r1
    cases: list[tuple[list[Compare], list[Op], list[Op], type[Exception]]] = [
        ([], [Put(a, b"new"), Put(b, b"x", lease=missing_lease)], [], LeaseNotFoundError),
        ([], [Delete(a), Put(b, b"", ignore_value=True)], [], KeyNotFoundError),
        ([], [Put(a, b"new"), Put(b, b"x", ignore_lease=True)], [], KeyNotFoundError),
        ([], [Put(a, b"new"), Get(a, revision=ctx.r(100))], [], FutureRevisionError),
        (
            [Compare.version(a) == 9],
            [],
            [Put(a, b"new"), Txn([], [Put(b, b"x", lease=missing_lease)])],
            LeaseNotFoundError,
        ),
    ]
    for cmps, ok, ko, exc in cases:
        with pytest.raises(exc):
            await ctx.kv.txn(cmps, ok, ko)
        assert await current_rev(ctx) == ctx.r(1)
        kv = await ctx.kv.get(a)
        assert kv is not None and (kv.value, kv.mod_revision, kv.version) == (
            b"orig",
            ctx.r(1),
            1,
        )
        assert await ctx.kv.get(b) is None
    assert (await ctx.kv.put(b, b"1")).header.revision == ctx.r(2)


async def test_data_check_order_in_taken_branch(ctx: Ctx) -> None:
    a, b = ctx.k("a"), ctx.k("b")
    missing_lease = 0x7EADBEEF_0000_0003
    await ctx.kv.put(a, b"1")  # r1
    # inside a txn the key-existence check of ignore_value comes before the lease check
    with pytest.raises(KeyNotFoundError):
        await ctx.kv.txn([], [Put(b, b"", ignore_value=True, lease=missing_lease)])
    # every put is checked before any range: a later bad put wins over an earlier bad range
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.txn([], [Get(a, revision=ctx.r(50)), Put(b, b"x", lease=missing_lease)])
    # among puts, the first failing one in order
    with pytest.raises(LeaseNotFoundError):
        await ctx.kv.txn(
            [], [Put(b, b"x", lease=missing_lease), Put(ctx.k("c"), b"", ignore_value=True)]
        )
    with pytest.raises(KeyNotFoundError):
        await ctx.kv.txn(
            [], [Put(ctx.k("c"), b"", ignore_value=True), Put(b, b"x", lease=missing_lease)]
        )
    assert await current_rev(ctx) == ctx.r(1)


async def test_prev_kv_inside_txn(ctx: Ctx) -> None:
    a, b, c = ctx.k("a"), ctx.k("b"), ctx.k("c")
    await ctx.kv.put(a, b"1")  # r1
    await ctx.kv.put(b, b"2")  # r2
    r = await ctx.kv.txn(
        [],
        [
            Put(a, b"1b", prev_kv=True),
            Put(c, b"3", prev_kv=True),
            Delete(b, prev_kv=True),
            Delete(ctx.k("zz"), prev_kv=True),
        ],
    )
    p1, p2, d1, d2 = r.responses
    assert isinstance(p1, PutResponse) and isinstance(p2, PutResponse)
    assert isinstance(d1, DeleteRangeResponse) and isinstance(d2, DeleteRangeResponse)
    assert p1.prev_kv is not None
    assert (p1.prev_kv.key, p1.prev_kv.value, p1.prev_kv.mod_revision) == (a, b"1", ctx.r(1))
    assert p2.prev_kv is None
    assert (d1.deleted, [(kv.key, kv.value) for kv in d1.prev_kvs]) == (1, [(b, b"2")])
    assert (d2.deleted, d2.prev_kvs) == (0, [])
    assert [x.header.revision for x in r.responses] == [ctx.r(3)] * 4


async def test_txn_range_future_revision(ctx: Ctx) -> None:
    a = ctx.k("a")
    await ctx.kv.put(a, b"1")  # r1
    with pytest.raises(FutureRevisionError) as e:
        await ctx.kv.txn([], [Get(a, revision=ctx.r(2))])
    assert e.value.message == "etcdserver: mvcc: required revision is a future revision"
    # the check uses the revision before the txn: R+1 is "future" even after a put in it
    with pytest.raises(FutureRevisionError):
        await ctx.kv.txn([], [Put(a, b"2"), Get(a, revision=ctx.r(2))])
    assert await current_rev(ctx) == ctx.r(1)
    # the current revision and older ones are fine
    r = await ctx.kv.txn([], [Put(a, b"2"), Get(a, revision=ctx.r(1)), Get(a, revision=ctx.r(0))])
    assert r.header.revision == ctx.r(2)
    g1, g0 = r.responses[1], r.responses[2]
    assert isinstance(g1, RangeResponse) and isinstance(g0, RangeResponse)
    assert [kv.value for kv in g1.kvs] == [b"1"]
    assert g0.kvs == []
    assert g1.header.revision == ctx.r(2)
