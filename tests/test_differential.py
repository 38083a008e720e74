"""Differential test: random op sequences give the same results on Store and on real etcd.

Every hypothesis example applies one generated sequence of KV/lease operations to a fresh
:class:`etcdlite.Store` and, through :class:`etcdlite.Client`, to the real etcd of the session
and compares every result (or exception) after normalisation:

* revisions are made relative to each backend's starting revision (a 0 stays "unset");
* header ``cluster_id``/``member_id``/``raft_term`` are ignored;
* lease ids are the same on both sides (explicit, random per run);
* remaining lease TTLs are compared loosely (time passes between the two calls).

etcd is shared by the whole session and never reset, so each example works under a fresh key
prefix. The prefix starts with ``b"\\xfd"`` and a time stamp, so it sorts above every key
written before it: ranges ending at ``b"\\0"`` then see only this example's keys (if some other
test wrote keys above it, such ends are replaced by the end of the prefix on both backends).
Compaction is global on etcd, so it only ever comes last in an example and targets a revision
inside the example's own range.

Hypothesis is synchronous: the test is a plain function that drives every example through one
module-scoped :class:`asyncio.Runner` with its own loop (it never touches the loop
pytest-asyncio installs for the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import etcdlite
from etcdlite import (
    CompactResponse,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeResponse,
    KeyValue,
    Lease,
    LeaseNotFoundError,
    LeaseTimeToLive,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    TxnResponse,
    UnavailableError,
    prefix_end,
)
from etcdlite.ops import DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest

pytestmark = pytest.mark.etcd

# --- the key/value space: few, short, overlapping keys (≤ 12 keys per example) -------------

SUFFIXES: list[bytes] = [b"a", b"a\x00", b"ab", b"b", b"b\xff", b"c", b"\xff", b"\xff\xff"]
VALUES: list[bytes] = [b"", b"x", b"y", b"xy", b"\x00", b"\xff"]
N_LEASES = 3  # lease slots 0..2 can be granted; slot 3 is never granted (an unknown id)
MAX_REL = 24  # relative revisions drawn in [0, MAX_REL]; ops may well not get that far


@dataclass(frozen=True)
class Rel:
    """A revision relative to the example's starting revision (resolved per backend)."""

    n: int

    def __repr__(self) -> str:
        return f"R0+{self.n}"


@dataclass(frozen=True)
class LeaseRef:
    """Lease slot ``slot`` of the example (ids drawn at run time, unique per run)."""

    slot: int

    def __repr__(self) -> str:
        return f"L{self.slot}"


@dataclass(frozen=True)
class Back:
    """The revision ``n`` before the current one (not before the start): resolved to a
    :class:`Rel` from the Store's current revision just before the op runs."""

    n: int

    def __repr__(self) -> str:
        return f"R-{self.n}"


@dataclass(frozen=True)
class RevOf:
    """The create or mod revision of key P+``key`` (now, in the Store) plus ``delta``; the
    current revision if the key does not exist. Hits the boundaries of compares/filters."""

    key: bytes
    which: str
    delta: int

    def __repr__(self) -> str:
        return f"{self.which}({self.key!r}){self.delta:+d}"


async def resolve(x: Any, store: etcdlite.Store, env: Env, lowest: int = 0) -> Any:
    """Replace every :class:`Back`/:class:`RevOf` in a description by the :class:`Rel` it
    stands for, from the Store's state just before the op (the same on both backends as
    long as they agreed so far)."""
    current = store.revision - env.rev0
    if isinstance(x, Back):
        return Rel(max(lowest, current - x.n))
    if isinstance(x, RevOf):
        kv = await store.get(env.key(x.key))
        if kv is None:
            return Rel(current)
        rev = kv.create_revision if x.which == "create" else kv.mod_revision
        return Rel(max(lowest, rev - env.rev0 + x.delta))
    if isinstance(x, dict):
        return {k: await resolve(v, store, env, lowest) for k, v in x.items()}
    if isinstance(x, list):
        return [await resolve(v, store, env, lowest) for v in x]
    return x


# Key: a suffix of the prefix P (b"" = P itself) or None = the empty key (an error).
sfx = st.sampled_from(SUFFIXES)
# The empty key (None) is an error everywhere: keep it rare (~2 %), since a txn has many keys.
key_st = st.sampled_from([*SUFFIXES * 6, b"", b"", None])
write_key_st = st.sampled_from([*SUFFIXES * 6, b"", None])
range_key_st = st.sampled_from([b"", b"", b"", b"a", b"a", *SUFFIXES * 2, None])
value_st = st.sampled_from(VALUES)
# A revision: from the start (R0+n, may be in the future) or back from the current one.
rel_st = st.one_of(st.integers(0, MAX_REL).map(Rel), *[st.integers(0, 4).map(Back)] * 3)
revof_st = st.builds(RevOf, sfx, st.sampled_from(["create", "mod"]), st.sampled_from([-1, 0, 0, 1]))
rev_bound_st = st.one_of(st.just(0), rel_st, revof_st, revof_st)
lease_st = st.one_of(
    st.just(0), st.integers(0, N_LEASES - 1).map(LeaseRef), st.just(LeaseRef(N_LEASES))
)

# Range ends: ("none",) single key; ("zero",) b"\0"; ("all",) end of P; ("p",) P itself;
# ("key", s) P+s; ("prefix", s) prefix_end(P+s).
range_end_st = st.one_of(
    st.just(("none",)),
    st.just(("zero",)),
    st.just(("all",)),
    st.just(("p",)),
    st.tuples(st.just("key"), st.sampled_from([*SUFFIXES, b""])),
    st.tuples(st.just("prefix"), st.sampled_from([*SUFFIXES, b"a", b"b", b"\xff"])),
)


@st.composite
def range_desc(draw: st.DrawFn) -> dict[str, Any]:
    end = draw(st.one_of(range_end_st, st.just(("all",)), st.just(("zero",))))  # mostly wide
    d: dict[str, Any] = {"op": "range", "key": draw(range_key_st), "end": end}
    if draw(st.booleans()):
        d["limit"] = draw(st.sampled_from([-1, 0, 1, 1, 2, 2, 3, 5]))
    if draw(st.integers(0, 2)) == 0:
        d["revision"] = draw(rel_st)
    if draw(st.booleans()):
        # 7: out of range, accepted by 3.4 as "no sort". (An invalid sort_target is never
        # sent: etcd 3.4 sorts with a nil sorter and panics.)
        d["sort_order"] = draw(st.sampled_from([0, 1, 2, 1, 2, 7]))
    if draw(st.booleans()):
        d["sort_target"] = draw(st.integers(0, 4))
    for flag in ("keys_only", "count_only"):
        if draw(st.integers(0, 4)) == 0:
            d[flag] = True
    for bound in (
        "min_mod_revision",
        "max_mod_revision",
        "min_create_revision",
        "max_create_revision",
    ):
        if draw(st.integers(0, 6)) == 0:
            d[bound] = draw(rev_bound_st)
    return d


@st.composite
def list_desc(draw: st.DrawFn) -> dict[str, Any]:
    """A wide sorted/limited listing: where sorting ties, limit and ``more`` matter."""
    d: dict[str, Any] = {
        "op": "range",
        "key": draw(st.sampled_from([b"", b"a", b"b"])),
        "end": draw(st.sampled_from([("all",), ("zero",), ("prefix", b"")])),
        "limit": draw(st.integers(0, 4)),
        "sort_order": draw(st.integers(0, 2)),
        "sort_target": draw(st.integers(0, 4)),
    }
    if draw(st.integers(0, 3)) == 0:
        d["keys_only"] = True
    if draw(st.integers(0, 2)) == 0:
        bound = draw(
            st.sampled_from(
                [
                    "min_mod_revision",
                    "max_mod_revision",
                    "min_create_revision",
                    "max_create_revision",
                ]
            )
        )
        d[bound] = draw(st.one_of(st.integers(0, 6).map(Back), revof_st))
    return d


@st.composite
def get_desc(draw: st.DrawFn) -> dict[str, Any]:
    d: dict[str, Any] = {"op": "get", "key": draw(key_st)}
    if draw(st.booleans()):
        d["revision"] = draw(rel_st)
    return d


@st.composite
def put_desc(draw: st.DrawFn) -> dict[str, Any]:
    d: dict[str, Any] = {"op": "put", "key": draw(write_key_st), "value": draw(value_st)}
    if draw(st.integers(0, 2)) == 0:
        d["lease"] = draw(lease_st)
    if draw(st.booleans()):
        d["prev_kv"] = True
    if draw(st.integers(0, 7)) == 0:
        d["ignore_value"] = True
        if draw(st.integers(0, 3)) > 0:
            d["value"] = b""  # mostly valid
    if draw(st.integers(0, 7)) == 0:
        d["ignore_lease"] = True
        if draw(st.integers(0, 3)) > 0:
            d.pop("lease", None)  # mostly valid
    return d


@st.composite
def delete_desc(draw: st.DrawFn) -> dict[str, Any]:
    d: dict[str, Any] = {
        "op": "delete",
        "key": draw(write_key_st),
        "end": draw(st.one_of(st.just(("none",)), st.just(("none",)), range_end_st)),
    }
    if draw(st.booleans()):
        d["prev_kv"] = True
    return d


@st.composite
def compare_desc(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from(list(CompareTarget)))
    key = draw(key_st)
    operand: Any
    if target == CompareTarget.VERSION:
        operand = draw(st.integers(-1, 4))
    elif target in (CompareTarget.CREATE, CompareTarget.MOD):
        # mostly this key's own revision ± 1: the boundary of every result
        which = "create" if target == CompareTarget.CREATE else "mod"
        own = st.builds(RevOf, st.just(key or b""), st.just(which), st.sampled_from([-1, 0, 1]))
        operand = draw(st.one_of(rev_bound_st, own, own))
    elif target == CompareTarget.VALUE:
        operand = draw(value_st)
    else:
        operand = draw(lease_st)
    return {
        "key": key,
        "end": draw(st.one_of(st.just(("none",)), st.just(("none",)), range_end_st)),
        "target": target,
        "result": draw(st.sampled_from(list(CompareResult))),
        "operand": operand,
    }


def request_op(depth: int) -> st.SearchStrategy[dict[str, Any] | None]:
    ops: list[st.SearchStrategy[dict[str, Any] | None]] = [
        range_desc(),
        put_desc(),
        put_desc(),
        delete_desc(),
        list_desc(),
    ]
    if depth < 2:
        ops.append(txn_body(depth + 1))
    ops.append(st.none())  # an empty RequestOp: etcd rejects it
    return st.one_of(*ops)


def txn_body(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "op": st.just("txn"),
            "compare": st.lists(compare_desc(), max_size=3),
            "success": st.lists(request_op(depth), max_size=3),
            "failure": st.lists(request_op(depth), max_size=3),
        }
    )


def _clean(txn: dict[str, Any], put_keys: set[Any]) -> dict[str, Any]:
    """Drop what may trip etcd's duplicate-key rule: repeated put keys anywhere in the tree,
    range deletes and single deletes of put keys, and empty RequestOps."""

    def walk(ops: list[Any]) -> list[Any]:
        out = []
        for op in ops:
            if op is None:
                continue
            if op["op"] == "put":
                if op["key"] in put_keys:
                    continue
                put_keys.add(op["key"])
            elif op["op"] == "txn":
                op = {**op, "success": walk(op["success"]), "failure": walk(op["failure"])}
            out.append(op)
        return out

    def drop_deletes(ops: list[Any]) -> list[Any]:
        out = []
        for op in ops:
            if op["op"] == "delete" and (op["end"] != ("none",) or op["key"] in put_keys):
                continue
            if op["op"] == "txn":
                op = {
                    **op,
                    "success": drop_deletes(op["success"]),
                    "failure": drop_deletes(op["failure"]),
                }
            out.append(op)
        return out

    txn = {**txn, "success": walk(txn["success"]), "failure": walk(txn["failure"])}
    return {
        **txn,
        "success": drop_deletes(txn["success"]),
        "failure": drop_deletes(txn["failure"]),
    }


@st.composite
def txn_desc(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(txn_body(0))
    # Mostly conflict-free txns (so branches execute); the rest check the error paths.
    mode = draw(st.sampled_from(["clean", "clean", "clean", "raw", "dup"]))
    if mode == "clean":
        return _clean(body, set())
    if mode == "dup":
        # Inject what etcd's duplicate-key rule (checkIntervals) looks at, around key P+k.
        branch = draw(st.sampled_from(["success", "failure"]))
        k = draw(sfx)
        other = draw(sfx)

        def put(key: bytes, value: bytes = b"d") -> dict[str, Any]:
            return {"op": "put", "key": key, "value": value}

        def nested(success: list[Any], failure: list[Any]) -> dict[str, Any]:
            return {"op": "txn", "compare": [], "success": success, "failure": failure}

        extra = draw(
            st.sampled_from(
                [
                    [put(k), put(k, b"e")],  # same level
                    [put(k), {"op": "delete", "key": k, "end": ("none",)}],
                    [{"op": "delete", "key": k, "end": ("none",)}, put(k)],
                    [{"op": "delete", "key": b"", "end": ("all",)}, put(k)],
                    [{"op": "delete", "key": k, "end": ("zero",)}, put(k)],
                    [{"op": "delete", "key": k, "end": ("zero",)}, put(other)],
                    [{"op": "delete", "key": k, "end": ("prefix", k)}, put(other)],
                    [{"op": "delete", "key": other, "end": ("key", k)}, put(k)],  # maybe inverted
                    [
                        {"op": "delete", "key": k, "end": ("none",)},
                        {"op": "delete", "key": b"", "end": ("all",)},
                    ],  # overlapping deletes: fine
                    [put(k), nested([put(k)], [])],  # parent put vs nested put
                    [put(k), nested([], [put(k)])],
                    [nested([put(k)], [put(k)])],  # then/else of one txn may share a key
                    [nested([put(k)], [put(k)]), put(other)],
                    [nested([put(k)], []), nested([put(k)], [])],  # two nested txns
                    [nested([put(k)], []), nested([], [put(k)])],
                    [{"op": "delete", "key": k, "end": ("none",)}, nested([put(k)], [])],
                    [nested([{"op": "delete", "key": k, "end": ("none",)}], []), put(k)],
                    [
                        nested([{"op": "delete", "key": b"", "end": ("all",)}], []),
                        nested([put(k)], []),
                    ],
                    [put(k), {"op": "range", "key": k, "end": ("none",)}],  # reads never conflict
                ]
            )
        )
        body = {**body, branch: draw(st.permutations([*body[branch][:1], *extra]))}
    return _defuse(body)


def _ops_of(txn: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for op in (*txn["success"], *txn["failure"]):
        if op is not None:
            yield op
            if op["op"] == "txn":
                yield from _ops_of(op)


def _defuse(txn: dict[str, Any]) -> dict[str, Any]:
    """Keep etcd 3.4.23 alive. A delete ending at b"\0" escapes its duplicate-key check
    (the interval [key, "\0") is empty to it), so a txn may delete a key and then put it
    with ignore_value/ignore_lease; the put then fails inside the apply loop and etcd
    panics ("unexpected error during txn"), killing the shared server. Such txns get the
    end of the prefix instead of b"\0" (same keys, now seen by the duplicate check)."""
    ops = list(_ops_of(txn))
    if not any(o["op"] == "put" and (o.get("ignore_value") or o.get("ignore_lease")) for o in ops):
        return txn
    if not any(o["op"] == "delete" and o["end"] == ("zero",) for o in ops):
        return txn

    def fix(branch: list[Any]) -> list[Any]:
        out = []
        for op in branch:
            if op is not None and op["op"] == "delete" and op["end"] == ("zero",):
                op = {**op, "end": ("all",)}
            elif op is not None and op["op"] == "txn":
                op = {**op, "success": fix(op["success"]), "failure": fix(op["failure"])}
            out.append(op)
        return out

    return {**txn, "success": fix(txn["success"]), "failure": fix(txn["failure"])}


@st.composite
def lease_desc(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["grant", "revoke", "revoke", "ttl", "refresh", "leases"]))
    if kind == "grant":
        # TTL ≥ 60 so nothing expires during the test; rarely too large (an error).
        ttl = draw(st.sampled_from([60, 61, 3600, 60, 9_000_000_001]))
        return {"op": "grant", "lease": LeaseRef(draw(st.integers(0, N_LEASES - 1))), "ttl": ttl}
    if kind == "leases":
        return {"op": "leases"}
    return {"op": kind, "lease": LeaseRef(draw(st.integers(0, N_LEASES)))}


op_st = st.one_of(
    put_desc(),
    list_desc(),
    range_desc(),
    put_desc(),
    txn_desc(),
    delete_desc(),
    lease_desc(),
    put_desc(),
    range_desc(),
    get_desc(),
    txn_desc(),
    lease_desc(),
    put_desc(),
    put_desc(),
    range_desc(),
    list_desc(),
    txn_desc(),
)
# Plain puts first, so that ranges, sorts and limits have several keys to work on.
seed_st = (
    st.integers(0, 10)
    .flatmap(
        lambda n: st.lists(
            st.one_of(
                *[st.fixed_dictionaries({"op": st.just("put"), "key": sfx, "value": value_st})] * 3,
                st.fixed_dictionaries(
                    {
                        "op": st.just("put"),
                        "key": sfx,
                        "value": value_st,
                        "lease": st.integers(0, N_LEASES - 1).map(LeaseRef),
                    }
                ),
                st.fixed_dictionaries(
                    {
                        "op": st.just("grant"),
                        "lease": st.integers(0, N_LEASES - 1).map(LeaseRef),
                        "ttl": st.just(60),
                    }
                ),
            ),
            min_size=n,
            max_size=n,
        )
    )
    .map(lambda seed: sorted(seed, key=lambda d: d["op"] != "grant"))
)  # grants first
# A length drawn first (and shrunk like any integer): longer sequences on average than
# st.lists gives, so 50 examples reach more states; shrinking still gets down to one op.
ops_st = st.integers(1, 36).flatmap(lambda n: st.lists(op_st, min_size=n, max_size=n))
final_st = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "op": st.just("compact"),
            "revision": st.one_of(
                st.integers(1, MAX_REL).map(Rel), *[st.integers(0, 3).map(Back)] * 3
            ),
            "physical": st.booleans(),
        }
    ),
)


# --- resolving descriptions for one backend -------------------------------------------------


@dataclass
class Env:
    """How a description maps onto one backend."""

    prefix: bytes
    rev0: int
    lease_ids: list[int]
    open_end_ok: bool

    def key(self, s: bytes | None) -> bytes:
        return b"" if s is None else self.prefix + s

    def end(self, e: tuple[Any, ...]) -> bytes | None:
        tag = e[0]
        if tag == "none":
            return None
        if tag == "zero":
            return b"\0" if self.open_end_ok else prefix_end(self.prefix)
        if tag == "all":
            return prefix_end(self.prefix)
        if tag == "p":
            return self.prefix
        if tag == "key":
            return self.prefix + bytes(e[1])
        return prefix_end(self.prefix + bytes(e[1]))

    def val(self, v: Any) -> Any:
        if isinstance(v, Rel):
            return self.rev0 + v.n
        if isinstance(v, LeaseRef):
            return self.lease_ids[v.slot]
        return v

    def rev(self, r: int) -> int | None:
        """Normalised revision: relative to the start; 0 (unset/empty header) → None."""
        return None if r == 0 else r - self.rev0


RANGE_OPTS = (
    "limit",
    "revision",
    "sort_order",
    "sort_target",
    "keys_only",
    "count_only",
    "min_mod_revision",
    "max_mod_revision",
    "min_create_revision",
    "max_create_revision",
)


def build_range(env: Env, d: dict[str, Any]) -> RangeRequest:
    opts = {k: env.val(d[k]) for k in RANGE_OPTS if k in d}
    return RangeRequest(env.key(d["key"]), env.end(d["end"]), **opts)


def build_put(env: Env, d: dict[str, Any]) -> PutRequest:
    return PutRequest(
        env.key(d["key"]),
        d["value"],
        lease=env.val(d.get("lease", 0)),
        prev_kv=d.get("prev_kv", False),
        ignore_value=d.get("ignore_value", False),
        ignore_lease=d.get("ignore_lease", False),
    )


def build_delete(env: Env, d: dict[str, Any]) -> DeleteRangeRequest:
    return DeleteRangeRequest(env.key(d["key"]), env.end(d["end"]), prev_kv=d.get("prev_kv", False))


def build_compare(env: Env, c: dict[str, Any]) -> Compare:
    return Compare(
        env.key(c["key"]), c["target"], c["result"], env.val(c["operand"]), env.end(c["end"])
    )


def build_op(env: Env, d: dict[str, Any] | None) -> Any:
    if d is None:
        return None
    kind = d["op"]
    if kind == "range":
        return build_range(env, d)
    if kind == "put":
        return build_put(env, d)
    if kind == "delete":
        return build_delete(env, d)
    return build_txn(env, d)


def build_txn(env: Env, d: dict[str, Any]) -> TxnRequest:
    return TxnRequest(
        [build_compare(env, c) for c in d["compare"]],
        [build_op(env, o) for o in d["success"]],
        [build_op(env, o) for o in d["failure"]],
    )


# --- normalising results ----------------------------------------------------------------


def norm(env: Env, x: Any) -> Any:
    if x is None or isinstance(x, bool | int | bytes | str):
        return x
    if isinstance(x, ResponseHeader):
        return ("hdr", env.rev(x.revision))
    if isinstance(x, KeyValue):
        return (
            "kv",
            x.key,
            env.rev(x.create_revision),
            env.rev(x.mod_revision),
            x.version,
            x.value,
            x.lease,
        )
    if isinstance(x, RangeResponse):
        return ("range", norm(env, x.header), [norm(env, kv) for kv in x.kvs], x.more, x.count)
    if isinstance(x, PutResponse):
        return ("put", norm(env, x.header), norm(env, x.prev_kv))
    if isinstance(x, DeleteRangeResponse):
        return ("delete", norm(env, x.header), x.deleted, [norm(env, kv) for kv in x.prev_kvs])
    if isinstance(x, TxnResponse):
        return ("txn", norm(env, x.header), x.succeeded, [norm(env, r) for r in x.responses])
    if isinstance(x, CompactResponse):
        return ("compact", norm(env, x.header))
    if isinstance(x, Lease):
        return ("lease", x.id, x.ttl)
    if isinstance(x, LeaseTimeToLive):
        if x.ttl == -1:
            ttl: Any = -1
        elif x.granted_ttl - 5 <= x.ttl <= x.granted_ttl:
            ttl = "≈granted"
        else:
            ttl = x.ttl
        return ("ttl", x.id, ttl, x.granted_ttl, sorted(x.keys), env.rev(x.revision))
    raise TypeError(f"cannot normalise {x!r}")


async def outcome(env: Env, call: Callable[[], Awaitable[Any]], post: Any = None) -> Any:
    try:
        result = await call()
    except Exception as e:
        code = getattr(e, "code", None)
        return ("raises", type(e).__name__, str(e), None if code is None else int(code))
    return post(result) if post is not None else norm(env, result)


async def apply(kv: etcdlite.Store | etcdlite.Client, env: Env, d: dict[str, Any]) -> Any:
    kind = d["op"]
    if kind == "range":
        req = build_range(env, d)
        return await outcome(
            env,
            lambda: kv.range(  # the public API, every option spelled out
                req.key,
                req.range_end,
                limit=req.limit,
                revision=req.revision,
                sort_order=req.sort_order,
                sort_target=req.sort_target,
                keys_only=req.keys_only,
                count_only=req.count_only,
                min_mod_revision=req.min_mod_revision,
                max_mod_revision=req.max_mod_revision,
                min_create_revision=req.min_create_revision,
                max_create_revision=req.max_create_revision,
            ),
        )
    if kind == "get":
        rev = env.val(d.get("revision", 0))
        return await outcome(env, lambda: kv.get(env.key(d["key"]), revision=rev))
    if kind == "put":
        p = build_put(env, d)
        return await outcome(
            env,
            lambda: kv.put(
                p.key,
                p.value,
                lease=p.lease,
                prev_kv=p.prev_kv,
                ignore_value=p.ignore_value,
                ignore_lease=p.ignore_lease,
            ),
        )
    if kind == "delete":
        r = build_delete(env, d)
        return await outcome(env, lambda: kv.delete(r.key, r.range_end, prev_kv=r.prev_kv))
    if kind == "txn":
        t = build_txn(env, d)
        return await outcome(env, lambda: kv.txn(t))
    if kind == "grant":
        return await outcome(env, lambda: kv.grant(d["ttl"], env.val(d["lease"])))
    if kind == "revoke":
        return await outcome(env, lambda: kv.revoke(env.val(d["lease"])), env.rev)
    if kind == "ttl":
        return await outcome(env, lambda: kv.time_to_live(env.val(d["lease"]), keys=True))
    if kind == "refresh":
        return await outcome(env, lambda: kv.refresh(env.val(d["lease"])), lambda t: t)
    if kind == "leases":
        ours = set(env.lease_ids)
        return await outcome(
            env, lambda: kv.leases(), lambda ids: sorted(i for i in ids if i in ours)
        )
    if kind == "compact":
        rev = env.val(d["revision"])
        return await outcome(env, lambda: kv.compact(rev, physical=d["physical"]))
    raise AssertionError(kind)


# --- running one example on both backends ---------------------------------------------------


def describe(d: dict[str, Any] | None) -> str:
    return "None (empty RequestOp)" if d is None else repr(d)


async def run_example(
    client: etcdlite.Client, ops: list[dict[str, Any]], final: dict[str, Any] | None
) -> None:
    # Sorts above everything written before; random part so runs never share a prefix.
    prefix = b"\xfd" + f"{time.time_ns():020d}-{secrets.token_hex(3)}/".encode()
    lease_ids: list[int] = []
    while len(lease_ids) < N_LEASES + 1:
        lid = secrets.randbits(62) + 1
        if lid not in lease_ids:
            lease_ids.append(lid)

    start_e = await client.range(prefix, b"\0", count_only=True)
    open_end_ok = start_e.count == 0  # nothing of anybody else's sorts after our prefix
    env_e = Env(prefix, start_e.header.revision, lease_ids, open_end_ok)
    trace: list[str] = [f"prefix P={prefix!r}, etcd rev0={env_e.rev0}"]

    async with etcdlite.Store() as store:
        rev0_s = (await store.range(b"\0", b"\0", count_only=True)).header.revision
        env_s = Env(prefix, rev0_s, lease_ids, open_end_ok)

        async def step(d: dict[str, Any]) -> None:
            # compaction targets a revision after the start: etcd may be compacted at R0
            d = await resolve(d, store, env_s, 1 if d["op"] == "compact" else 0)
            got_s = await apply(store, env_s, d)
            got_e = await apply(client, env_e, d)
            trace.append(f"{describe(d)}\n      -> {got_e!r}")
            if got_s != got_e:
                trail = "\n  ".join(trace[:-1])
                # The only writes nobody asked for on the shared etcd: other tests' leases
                # expiring with keys attached would shift etcd's revisions under us.
                foreign = sorted(set(await client.leases()) - set(lease_ids))
                raise AssertionError(
                    f"Store and etcd disagree.\n  {trail}\n"
                    f"  LAST OP: {describe(d)}\n"
                    f"    etcd : {got_e!r}\n"
                    f"    Store: {got_s!r}\n"
                    f"  (other leases alive on etcd: {foreign or 'none'})"
                )

        try:
            for d in ops:
                await step(d)
            if final is not None:
                await step(final)
                # What the compaction left readable: every revision of the example, and one
                # past the end (future), over the whole prefix and inside a txn.
                last = store.revision - rev0_s
                for n in range(last + 2):
                    await step({"op": "range", "key": b"", "end": ("all",), "revision": Rel(n)})
                await step(
                    {
                        "op": "txn",
                        "compare": [],
                        "success": [
                            {"op": "range", "key": b"a", "end": ("none",), "revision": Rel(0)}
                        ],
                        "failure": [],
                    }
                )
                await step({"op": "range", "key": b"", "end": ("all",), "revision": Back(0)})
        finally:
            for lid in lease_ids:  # no expiry may bump etcd's revision during later tests
                with contextlib.suppress(LeaseNotFoundError, UnavailableError):
                    await client.revoke(lid)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    # loop_factory: the runner neither installs nor unsets the thread's current event loop,
    # so it cannot disturb the session loop of pytest-asyncio.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as r:
        yield r


@pytest.fixture(scope="module")
def etcd_client(runner: asyncio.Runner, etcd_endpoint: str) -> Iterator[etcdlite.Client]:
    client = etcdlite.Client(etcd_endpoint, timeout=10)
    try:
        yield client
    finally:
        runner.run(client.close())


@pytest.mark.etcd
@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(seed=seed_st, ops=ops_st, final=final_st)
def test_store_matches_etcd(
    runner: asyncio.Runner,
    etcd_client: etcdlite.Client,
    seed: list[dict[str, Any]],
    ops: list[dict[str, Any]],
    final: dict[str, Any] | None,
) -> None:
    runner.run(run_example(etcd_client, seed + ops, final))
