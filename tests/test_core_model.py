"""Model-based tests of the synchronous MVCC core (``etcdlite.core.mvcc.MVCC``).

The core is driven side by side with :class:`Model`, a deliberately simple and slow
re-statement of etcd's KV rules (revisions, range, put, delete, txn, compaction):

* each key's history is a plain list of ``(revision, value or None for a deletion, lease)``;
  ``create_revision`` and ``version`` are *derived* from that list (walk back to the last
  deletion), never tracked incrementally;
* the model never forgets anything: compaction only moves ``compacted``, which makes reads
  below it fail. So every read the core answers after physical compaction is checked
  against the full history;
* lease attachments are derived too (the keys whose current incarnation carries the lease).

Parts: 1. a hypothesis ``RuleBasedStateMachine``; 2. a seeded random stress test (5 seeds ×
3000 ops, ``_check()`` after every op, every key at every readable revision compared at the
end); 3. bad-input tests; then pinned subtle rules (the limit window of a default sort, the
duplicate-key rule) and regressions for three core bugs this file found (fixed since):
same-revision rewrites of one key, a txn left half-applied by a failing put,
``compact_step(0)``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from etcdlite.core.lessor import MAX_LEASE_TTL, Lessor
from etcdlite.core.mvcc import MVCC
from etcdlite.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    EtcdError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
    LeaseProvidedError,
    LeaseTTLTooLargeError,
    TooManyOpsError,
    ValueProvidedError,
)
from etcdlite.ops import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Op,
    PutRequest,
    RangeRequest,
    TxnRequest,
    prefix_end,
)
from etcdlite.types import (
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnResponse,
)

# --- vocabulary ---------------------------------------------------------------------------

#: Keys chosen so that single keys, prefixes (b"a" ⊂ b"ab"), b"\0"-ended ranges and the
#: all-0xff prefix (prefix_end(b"\xff") == b"\0") overlap.
KEYS = (b"a", b"ab", b"b", b"b\xff", b"c", b"\xff")
#: Range starts, including keys never written.
STARTS = (*KEYS, b"\0", b"aa", b"b\x00", b"bb")
#: Explicit range ends (some ≤ the start: an empty range).
ENDS = (b"a", b"ab", b"b", b"b\xff", b"c", b"d", b"\xff", b"\xff\xff")
#: Few values, so that VALUE sorts and compares tie.
VALUES = (b"", b"x", b"y", b"xy", b"z")
#: Explicit lease ids the tests grant; MISSING_LEASE is never granted.
LEASE_IDS = (1, 2, 3)
MISSING_LEASE = 999

MAX_TXN_OPS = 8  # small, so that "too many operations" is reachable
CLUSTER_ID, MEMBER_ID, RAFT_TERM = 0x1111, 0x2222, 7


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's key-range rule: no end is one key, ``b"\\0"`` every key from ``start``,
    anything else ``[start, end)``."""
    if end == b"":
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def full_header(revision: int) -> ResponseHeader:
    return ResponseHeader(CLUSTER_ID, MEMBER_ID, revision, RAFT_TERM)


def kv_tuple(kv: KeyValue | None) -> tuple[object, ...] | None:
    if kv is None:
        return None
    return (kv.key, kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def strip_value(kv: KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)


_SORT_FIELD: dict[int, Callable[[KeyValue], object]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


# --- expected responses -------------------------------------------------------------------


@dataclass
class ExpRange:
    header: ResponseHeader
    kvs: list[KeyValue]  # what etcd returns (values cleared if keys_only)
    more: bool
    count: int
    # When sorted by a non-key target, ties may come in any order (Go's sort.Sort is not
    # stable) and a limit may cut between tied KVs: then ``kvs`` is one valid answer and
    # ``pool`` (sorted, values kept) holds every candidate.
    sort_field: Callable[[KeyValue], object] | None = None
    pool: list[KeyValue] = field(default_factory=list)
    keys_only: bool = False


@dataclass
class ExpPut:
    header: ResponseHeader
    prev_kv: KeyValue | None


@dataclass
class ExpDelete:
    header: ResponseHeader
    deleted: int
    prev_kvs: list[KeyValue]


@dataclass
class ExpTxn:
    header: ResponseHeader
    succeeded: bool
    responses: list[ExpRange | ExpPut | ExpDelete | ExpTxn]


Expected = ExpRange | ExpPut | ExpDelete | ExpTxn


def check_response(got: object, exp: Expected) -> None:
    if isinstance(exp, ExpRange):
        assert isinstance(got, RangeResponse), got
        assert got.header == exp.header
        assert (got.count, got.more) == (exp.count, exp.more), got
        if exp.sort_field is None:
            assert got.kvs == exp.kvs
            return
        # Tie-tolerant: same sequence of sort values, every KV a distinct valid candidate.
        by_key = {kv.key: kv for kv in exp.pool}
        found = [by_key.get(kv.key) for kv in got.kvs]
        assert None not in found, (got.kvs, exp.pool)
        full = [kv for kv in found if kv is not None]
        assert len({kv.key for kv in got.kvs}) == len(got.kvs)
        f = exp.sort_field
        assert [f(kv) for kv in full] == [f(kv) for kv in exp.pool[: len(exp.kvs)]]
        assert got.kvs == [strip_value(kv) if exp.keys_only else kv for kv in full]
    elif isinstance(exp, ExpPut):
        assert isinstance(got, PutResponse), got
        assert got.header == exp.header
        assert got.prev_kv == exp.prev_kv
    elif isinstance(exp, ExpDelete):
        assert isinstance(got, DeleteRangeResponse), got
        assert got.header == exp.header
        assert got.deleted == exp.deleted
        assert list(got.prev_kvs) == exp.prev_kvs
    else:
        assert isinstance(got, TxnResponse), got
        assert got.header == exp.header
        assert got.succeeded == exp.succeeded
        assert len(got.responses) == len(exp.responses), got
        for g, e in zip(got.responses, exp.responses, strict=True):
            check_response(g, e)


# --- the model ----------------------------------------------------------------------------

Entry = tuple[int, bytes | None, int]  # (revision, value or None for a deletion, lease)


class Model:
    """etcd's KV semantics, written for obviousness rather than speed."""

    def __init__(self, max_txn_ops: int = MAX_TXN_OPS) -> None:
        self.max_txn_ops = max_txn_ops
        self.hist: dict[bytes, list[Entry]] = {}
        # Every change in commit order: (revision, key, index into hist[key]).
        self.changes: list[tuple[int, bytes, int]] = []
        self.rev = 1
        self.compacted = -1
        self.leases: set[int] = set()
        self._memo: dict[tuple[bytes, int], KeyValue | None] = {}

    # reads

    def _kv(self, key: bytes, i: int) -> KeyValue | None:
        """The KeyValue of hist[key][i]; history is append-only, so this is memoised."""
        memo = self._memo.get((key, i), self)
        if memo is not self:
            return memo  # type: ignore[return-value]
        entries = self.hist[key]
        rev, value, lease = entries[i]
        kv = None
        if value is not None:
            first = i  # first put of this incarnation: right after the last deletion
            while first > 0 and entries[first - 1][1] is not None:
                first -= 1
            kv = KeyValue(key, entries[first][0], rev, i - first + 1, value, lease)
        self._memo[(key, i)] = kv
        return kv

    def at(self, key: bytes, rev: int) -> KeyValue | None:
        """The live KeyValue of key at rev (the last change at or below rev wins)."""
        entries = self.hist.get(key, [])
        i = bisect_right(entries, rev, key=lambda e: e[0]) - 1
        return self._kv(key, i) if i >= 0 else None

    def live(self, start: bytes, end: bytes, rev: int) -> list[KeyValue]:
        out = []
        for key in sorted(self.hist):
            if in_range(key, start, end):
                kv = self.at(key, rev)
                if kv is not None:
                    out.append(kv)
        return out

    def attached(self, lease: int) -> set[bytes]:
        return {kv.key for kv in self.live(b"\0", b"\0", self.rev) if kv.lease == lease}

    def change(self, rev: int, key: bytes, i: int) -> KeyValue:
        kv = self._kv(key, i)
        return kv if kv is not None else KeyValue(key, 0, rev, 0, b"", 0)  # tombstone

    def changes_from(self, rev: int) -> list[KeyValue]:
        return [self.change(*c) for c in self.changes if c[0] >= rev]

    def changes_at(self, rev: int) -> list[KeyValue]:
        return [self.change(*c) for c in self.changes if c[0] == rev]

    def index_keys(self) -> tuple[set[bytes], set[bytes]]:
        """Bounds on the keys a fully compacted store holds: it needs those live at the
        compacted revision or changed after it, and may keep those changed exactly at it
        (a key created and deleted in that very revision has no older change to trigger
        its trimming); a key deleted below it leaves no trace."""
        c = self.compacted
        if c <= 0:
            return set(self.hist), set(self.hist)
        need = {k for k, es in self.hist.items() if self.at(k, c) is not None or es[-1][0] > c}
        return need, need | {k for k, es in self.hist.items() if any(e[0] == c for e in es)}

    def get(self, key: bytes, revision: int) -> KeyValue | None:
        if not key:
            raise EmptyKeyError()
        if revision > self.rev:
            raise FutureRevisionError()
        rev = self.rev if revision <= 0 else revision
        if rev < self.compacted:
            raise CompactedError()
        return self.at(key, rev)

    def range(self, req: RangeRequest) -> ExpRange:
        if not req.key:
            raise EmptyKeyError()
        return self._range(req, self.rev, full_header(self.rev))

    def _range(self, req: RangeRequest, cur: int, header: ResponseHeader) -> ExpRange:
        if req.revision > cur:
            raise FutureRevisionError()
        rev = cur if req.revision <= 0 else req.revision
        if rev < self.compacted:  # revision == compacted is readable
            raise CompactedError()
        kvs = self.live(req.key, req.range_end, rev)
        count = len(kvs)  # before limit and filters
        if req.count_only:
            return ExpRange(header, [], False, count)
        filters = (
            req.min_mod_revision,
            req.max_mod_revision,
            req.min_create_revision,
            req.max_create_revision,
        )
        if req.limit > 0 and req.sort_order == SortOrder.NONE and not any(filters):
            # etcd's apply.go asks the MVCC for only limit+1 keys (in key order) unless a
            # sort order or a filter is given; the default ASCEND for a non-KEY sort_target
            # (below) is decided later, so such a sort reorders only this window.
            kvs = kvs[: req.limit + 1]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        order = req.sort_order
        if order == SortOrder.NONE and req.sort_target != SortTarget.KEY:
            order = SortOrder.ASCEND
        sort_field = None
        # Any other order value (e.g. 3) means "no sort" in etcd 3.4/3.5 (3.6 rejects it).
        if order in (SortOrder.ASCEND, SortOrder.DESCEND):
            f = _SORT_FIELD[req.sort_target]
            kvs = sorted(kvs, key=f, reverse=order == SortOrder.DESCEND)  # type: ignore[arg-type]
            if req.sort_target != SortTarget.KEY:
                sort_field = f
        more = 0 < req.limit < len(kvs)
        out = kvs[: req.limit] if more else kvs
        if req.keys_only:
            out = [strip_value(kv) for kv in out]
        return ExpRange(header, out, more, count, sort_field, kvs, req.keys_only)

    # writes

    def _write(self, key: bytes, rev: int, value: bytes | None, lease: int) -> None:
        entries = self.hist.setdefault(key, [])
        entries.append((rev, value, lease))
        self.changes.append((rev, key, len(entries) - 1))

    def _apply_put(self, req: PutRequest, rev: int) -> KeyValue | None:
        prev = self.at(req.key, rev)  # sees earlier writes of the same txn
        assert prev is not None or not (req.ignore_value or req.ignore_lease), (
            "etcd would panic here: Model.txn's data check should have refused the txn"
        )
        value = prev.value if req.ignore_value and prev else req.value
        lease = prev.lease if req.ignore_lease and prev else req.lease
        self._write(req.key, rev, value, lease)
        return prev

    def _apply_delete(self, key: bytes, end: bytes, rev: int) -> list[KeyValue]:
        victims = self.live(key, end, rev)
        for kv in victims:  # key order
            self._write(kv.key, rev, None, 0)
        return victims

    def put(self, req: PutRequest) -> ExpPut:
        # Validation order of a standalone Put, as etcd's apply code checks.
        if not req.key:
            raise EmptyKeyError()
        if req.ignore_value and req.value:
            raise ValueProvidedError()
        if req.ignore_lease and req.lease:
            raise LeaseProvidedError()
        if req.lease and req.lease not in self.leases:
            raise LeaseNotFoundError()
        if (req.ignore_value or req.ignore_lease) and self.at(req.key, self.rev) is None:
            raise KeyNotFoundError()
        rev = self.rev + 1
        prev = self._apply_put(req, rev)
        self.rev = rev
        return ExpPut(full_header(rev), prev if req.prev_kv else None)

    def delete(self, req: DeleteRangeRequest) -> ExpDelete:
        if not req.key:
            raise EmptyKeyError()
        victims = self._apply_delete(req.key, req.range_end, self.rev + 1)
        if not victims:
            return ExpDelete(full_header(self.rev), 0, [])
        self.rev += 1
        return ExpDelete(full_header(self.rev), len(victims), victims if req.prev_kv else [])

    # transactions

    def _static_check(self, t: TxnRequest, budget: int) -> None:
        opc = max(len(t.compare), len(t.success), len(t.failure))
        if opc > budget:
            raise TooManyOpsError()
        if any(not c.key for c in t.compare):
            raise EmptyKeyError()
        for op in (*t.success, *t.failure):  # both branches, whichever runs
            if op is None:
                raise KeyNotFoundError()  # etcd's answer to an empty RequestOp
            if isinstance(op, TxnRequest):
                self._static_check(op, budget - opc)
            elif not op.key:
                raise EmptyKeyError()
            elif isinstance(op, PutRequest):
                if op.ignore_value and op.value:
                    raise ValueProvidedError()
                if op.ignore_lease and op.lease:
                    raise LeaseProvidedError()

    def _holds(self, c: Compare) -> bool:
        kvs = self.live(c.key, c.range_end, self.rev)
        if not kvs and c.target == CompareTarget.VALUE:
            return False  # a VALUE compare on no key is false, whatever the operand
        candidates: list[KeyValue | None] = list(kvs) if kvs else [None]
        for kv in candidates:
            if c.target == CompareTarget.VALUE:
                have: object = kv.value if kv else b""
                want: object = c.operand if isinstance(c.operand, bytes) else b""
            else:
                have = {
                    CompareTarget.VERSION: kv.version if kv else 0,
                    CompareTarget.CREATE: kv.create_revision if kv else 0,
                    CompareTarget.MOD: kv.mod_revision if kv else 0,
                    CompareTarget.LEASE: kv.lease if kv else 0,
                }[CompareTarget(c.target)]
                want = c.operand if isinstance(c.operand, int) else 0
            ok = {
                CompareResult.EQUAL: have == want,
                CompareResult.NOT_EQUAL: have != want,
                CompareResult.GREATER: have > want,  # type: ignore[operator]
                CompareResult.LESS: have < want,  # type: ignore[operator]
            }[CompareResult(c.result)]
            if not ok:
                return False
        return True

    def _choose(self, t: TxnRequest, chosen: dict[int, bool]) -> None:
        """Every compare, nested ones included, sees the state before the txn."""
        ok = chosen[id(t)] = all(self._holds(c) for c in t.compare)
        for op in t.success if ok else t.failure:
            if isinstance(op, TxnRequest):
                self._choose(op, chosen)

    def _path(self, t: TxnRequest, chosen: dict[int, bool]) -> Iterator[Op]:
        for op in t.success if chosen[id(t)] else t.failure:
            if isinstance(op, TxnRequest):
                yield from self._path(op, chosen)
            elif op is not None:
                yield op

    def txn(self, req: TxnRequest, duplicate: bool = False) -> ExpTxn:
        self._static_check(req, self.max_txn_ops)
        if duplicate:
            # The generator only marks txns that break etcd's rule at one level (two puts of
            # a key, a put inside a [k, e) delete, a nested put repeating a parent put).
            raise DuplicateKeyError()
        chosen: dict[int, bool] = {}
        self._choose(req, chosen)
        path = list(self._path(req, chosen))
        # Data checks of the chosen path only: every put first (key existence, then lease),
        # then every range's revision, against the state before the txn.
        deleted: list[tuple[bytes, bytes]] = []
        for op in path:
            if isinstance(op, DeleteRangeRequest):
                deleted.append((op.key, op.range_end))
            elif isinstance(op, PutRequest):
                if (op.ignore_value or op.ignore_lease) and (
                    self.at(op.key, self.rev) is None
                    # An earlier delete of this txn removed the key (only a b"\0"-ended one
                    # passes the duplicate-key rule): etcd panics applying the put
                    # ("unexpected error during txn"); etcdlite refuses the whole txn.
                    or any(in_range(op.key, start, end) for start, end in deleted)
                ):
                    raise KeyNotFoundError()
                if op.lease and op.lease not in self.leases:
                    raise LeaseNotFoundError()
        for op in path:
            if isinstance(op, RangeRequest) and op.revision:
                if op.revision > self.rev:
                    raise FutureRevisionError()
                if op.revision < self.compacted:  # a negative revision too
                    raise CompactedError()
        changed = [False]
        responses = self._apply(req, chosen, changed)
        if changed[0]:
            self.rev += 1
        return ExpTxn(full_header(self.rev), chosen[id(req)], responses)

    def _apply(self, t: TxnRequest, chosen: dict[int, bool], changed: list[bool]) -> list[Expected]:
        new = self.rev + 1  # self.rev is still the revision before the txn
        out: list[Expected] = []
        for op in t.success if chosen[id(t)] else t.failure:
            if isinstance(op, RangeRequest):
                cur = new if changed[0] else self.rev
                out.append(self._range(op, cur, ResponseHeader(revision=cur)))
            elif isinstance(op, PutRequest):
                prev = self._apply_put(op, new)
                changed[0] = True
                out.append(ExpPut(ResponseHeader(revision=new), prev if op.prev_kv else None))
            elif isinstance(op, DeleteRangeRequest):
                victims = self._apply_delete(op.key, op.range_end, new)
                changed[0] = changed[0] or bool(victims)
                out.append(
                    ExpDelete(
                        ResponseHeader(revision=new if changed[0] else self.rev),
                        len(victims),
                        victims if op.prev_kv else [],
                    )
                )
            else:
                assert isinstance(op, TxnRequest)
                sub = self._apply(op, chosen, changed)
                out.append(ExpTxn(ResponseHeader(), chosen[id(op)], sub))
        return out

    # compaction and leases

    def compact(self, revision: int) -> None:
        if revision > self.rev:
            raise FutureRevisionError()
        if revision <= self.compacted:
            raise CompactedError()
        self.compacted = revision

    def grant(self, ttl: int, lease_id: int) -> None:
        if ttl > MAX_LEASE_TTL:
            raise LeaseTTLTooLargeError()
        if lease_id in self.leases:
            raise LeaseExistsError()

    def revoke(self, lease_id: int) -> int:
        if lease_id not in self.leases:
            raise LeaseNotFoundError()
        victims = sorted(self.attached(lease_id))
        self.leases.discard(lease_id)
        if victims:
            self.rev += 1
            for key in victims:  # one revision, key order
                self._write(key, self.rev, None, 0)
        return self.rev


# --- choosing: one generator for hypothesis and for random.Random --------------------------


class Chooser:
    def pick(self, seq: Sequence[object]) -> object:
        return seq[self.int(0, len(seq) - 1)]

    def chance(self, percent: int) -> bool:
        # Shrinks (hypothesis) towards False: towards fewer optional features.
        return self.int(0, 99) >= 100 - percent

    # last: in the class body, ``int`` names this method from here on
    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class DataChooser(Chooser):
    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


class Gen:
    """Random requests that fit the model's current state (revisions, leases)."""

    def __init__(self, ch: Chooser, model: Model) -> None:
        self.ch = ch
        self.m = model

    def key(self) -> bytes:
        return self.ch.pick(KEYS)  # type: ignore[return-value]

    def span(self) -> tuple[bytes, bytes]:
        ch = self.ch
        kind = ch.int(0, 5)
        if kind <= 1:
            return self.key(), b""
        if kind == 2:
            k = self.key()
            return k, prefix_end(k)
        if kind == 3:
            return ch.pick(STARTS), b"\0"  # type: ignore[return-value]
        if kind == 4:
            return ch.pick(STARTS), ch.pick(ENDS)  # type: ignore[return-value]
        return b"\0", b"\0"

    def lease(self) -> int:
        if self.ch.chance(5):
            return MISSING_LEASE
        return self.ch.pick((0, 0, *sorted(self.m.leases)))  # type: ignore[return-value]

    def read_revision(self, current: int = 40) -> int:
        """0 (current) with ``current`` percent, else past, compacted, future, negative."""
        ch, r, c = self.ch, self.m.rev, self.m.compacted
        if not ch.chance(100 - current):
            return 0
        return ch.pick((ch.int(1, r), -1, r, r + 1, r + 2, c - 1, c, c + 1, 1, -3))  # type: ignore[return-value]

    def get(self, current: int = 40) -> RangeRequest:
        ch = self.ch
        key, end = (b"\0", b"\0") if ch.chance(25) else self.span()
        r = self.m.rev

        def bound() -> int:
            return ch.int(-1, r + 1) if ch.chance(15) else 0

        return RangeRequest(
            key,
            end,
            revision=self.read_revision(current),
            limit=ch.pick((0, 0, 0, -1, 1, 2, 3)),  # type: ignore[arg-type]
            sort_order=ch.pick((0, 0, 1, 2, 3)),  # type: ignore[arg-type]
            sort_target=ch.int(0, 4),
            count_only=ch.chance(10),
            keys_only=ch.chance(15),
            min_mod_revision=bound(),
            max_mod_revision=bound(),
            min_create_revision=bound(),
            max_create_revision=bound(),
        )

    def put(self, key: bytes | None = None, valid: bool = False) -> PutRequest:
        """A put; ``valid`` avoids the static errors (ignore_* with a value/lease)."""
        ch = self.ch
        ignore_value = ch.chance(6 if valid else 12)
        ignore_lease = ch.chance(6 if valid else 12)
        value = ch.pick(VALUES)
        lease = self.lease()
        if valid or ch.chance(80):
            if ignore_value:
                value = b""
            if ignore_lease:
                lease = 0
        return PutRequest(
            self.key() if key is None else key,
            value,  # type: ignore[arg-type]
            lease=lease,
            prev_kv=ch.chance(50),
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )

    def delete(self) -> DeleteRangeRequest:
        key, end = self.span()
        return DeleteRangeRequest(key, end, prev_kv=self.ch.chance(50))

    def compare(self) -> Compare:
        ch, m = self.ch, self.m
        target = ch.int(0, 4)
        key, end = self.span() if ch.chance(30) else (self.key(), b"")
        operand: int | bytes
        if target == CompareTarget.VALUE:
            operand = ch.pick(VALUES)  # type: ignore[assignment]
        elif target == CompareTarget.VERSION:
            operand = ch.int(-1, 4)
        elif target == CompareTarget.LEASE:
            operand = ch.pick((0, MISSING_LEASE, *sorted(m.leases)))  # type: ignore[assignment]
        else:
            operand = ch.int(0, m.rev + 1)
        return Compare(key, target, ch.int(0, 3), operand, end)

    def txn(self) -> tuple[TxnRequest, bool]:
        """A txn and whether it breaks etcd's duplicate-key rule. Most are accepted by the
        duplicate-key rule and free of static errors; some get one twist added."""
        b = _TxnBuilder(self)
        req = b.txn(0)
        ch = self.ch
        if not ch.chance(30):
            return req, False
        branch = ch.pick((req.success, req.failure))
        assert isinstance(branch, list)
        compares: list[Compare] = req.compare  # type: ignore[assignment]
        k = self.key()
        twist = ch.int(0, 11)
        # Shapes etcd's duplicate-key rule accepts although one key is written twice.
        if twist == 0 and not b.put_blocked(k):
            # Sibling nested txns put then delete the key (a nested delete only constrains
            # later puts): created and deleted in one revision.
            branch.extend(
                [TxnRequest([], [PutRequest(k, b"s")]), TxnRequest([], [DeleteRangeRequest(k)])]
            )
        elif twist == 1 and not b.put_blocked(k):
            # A nested txn's then and else branches may put the same key (one runs).
            branch.append(TxnRequest([self.compare()], [PutRequest(k, b"t")], [PutRequest(k)]))
        # Shapes it rejects (the whole request, whichever branch would run).
        elif twist == 2:  # two puts of one key at one level
            branch.extend([PutRequest(k, b"d1"), PutRequest(k, b"d2")])
            return req, True
        elif twist == 3:  # a put inside a delete range of its level (either order)
            end = ch.pick((b"", prefix_end(k)))
            if end == b"\0":  # prefix_end(b"\xff"): never a conflict for etcd
                end = b""
            ops: list[Op] = [DeleteRangeRequest(k, end), PutRequest(k, b"d")]  # type: ignore[arg-type]
            branch.extend(ops if ch.chance(50) else ops[::-1])
            return req, True
        elif twist == 4:  # a nested put repeating a put of the parent level
            branch.extend([TxnRequest([], [PutRequest(k, b"n")]), PutRequest(k, b"p")])
            return req, True
        # Static errors, checked by the model in etcd's order.
        elif twist == 5:
            compares.append(Compare(b"", CompareTarget.VERSION, CompareResult.EQUAL, 0))
        elif twist == 6:
            bad = ch.pick((RangeRequest(b""), PutRequest(b"", b"v"), DeleteRangeRequest(b"")))
            if ch.chance(50):
                bad = TxnRequest([], [], [bad])  # type: ignore[list-item]
            branch.insert(ch.int(0, len(branch)), bad)
        elif twist == 7:
            branch.append(PutRequest(k, b"v", ignore_value=True))
        elif twist == 8:
            branch.append(PutRequest(k, lease=ch.pick(LEASE_IDS), ignore_lease=True))  # type: ignore[arg-type]
        elif twist == 9:
            branch.append(None)
        elif twist == 10:  # maybe beyond the nested budget (max_txn_ops - parent's count)
            branch.append(TxnRequest([], [RangeRequest(k)] * ch.int(3, MAX_TXN_OPS)))
        elif twist == 11:  # maybe too many at the top level
            compares.extend(self.compare() for _ in range(ch.int(3, MAX_TXN_OPS)))
        return req, False


class _TxnBuilder:
    """Builds a txn that etcd's duplicate-key check accepts: no key is put twice anywhere
    in the tree and no put falls inside a delete range anywhere in the tree (stricter than
    etcd; Gen.txn adds some of the looser shapes etcd also accepts)."""

    def __init__(self, gen: Gen) -> None:
        self.g = gen
        self.puts: set[bytes] = set()
        self.dels: list[tuple[bytes, bytes]] = []

    # etcd never matches a delete whose range_end is b"\0" against a put (see
    # mvcc._check_intervals), so such deletes and puts of one key mix freely: one revision
    # may then delete and re-create a key, or create and delete it.

    def put_blocked(self, key: bytes) -> bool:
        return key in self.puts or any(
            in_range(key, start, end) for start, end in self.dels if end != b"\0"
        )

    def _del_blocked(self, start: bytes, end: bytes) -> bool:
        return end != b"\0" and any(in_range(k, start, end) for k in self.puts)

    def txn(self, depth: int) -> TxnRequest:
        ch = self.g.ch
        compares = [self.g.compare() for _ in range(ch.int(0, 3))]
        return TxnRequest(compares, self.branch(depth), self.branch(depth))

    def branch(self, depth: int) -> list[Op | None]:
        ch, g = self.g.ch, self.g
        ops: list[Op | None] = []
        for _ in range(ch.int(0, 3)):
            kind = ch.int(0, 2)
            if depth < 2 and ch.chance(12):
                ops.append(self.txn(depth + 1))
            elif kind == 0:
                ops.append(g.get(current=85))
            elif kind == 1:
                put = g.put(valid=True)
                if self.put_blocked(put.key):
                    ops.append(RangeRequest(put.key))
                else:
                    self.puts.add(put.key)
                    ops.append(put)
            else:
                dr = g.delete()
                if self._del_blocked(dr.key, dr.range_end):
                    ops.append(RangeRequest(dr.key, dr.range_end))
                else:
                    self.dels.append((dr.key, dr.range_end))
                    ops.append(dr)
        return ops


# --- the harness: one op on both, compare everything --------------------------------------


def fingerprint(m: MVCC) -> tuple[object, ...]:
    """Everything the core stores (internals included: 'nothing changed' must be exact)."""
    return (
        m.revision,
        m.compacted_revision,
        m.compaction_pending,
        [(k, [kv_tuple(kv) for kv in hist]) for k, hist in m._index.items()],
        [kv_tuple(kv) for kv in m._log],
        sorted((e.id, e.ttl, e.expiry, sorted(e.keys)) for e in m.lessor.leases()),
    )


class Harness:
    def __init__(self, dead_steps: int = 1) -> None:
        self.mvcc = MVCC(
            max_txn_ops=MAX_TXN_OPS,
            lessor=Lessor(min_ttl=1),
            cluster_id=CLUSTER_ID,
            member_id=MEMBER_ID,
            raft_term=RAFT_TERM,
        )
        # With six keys a run of dead keys is short: step over at most one before jumping,
        # so limited ranges take both ways past deleted keys.
        self.mvcc.dead_steps = dead_steps
        self.model = Model()
        self.commits: list[tuple[int, list[tuple[object, ...] | None]]] = []
        self.hooked = False

    def _hook(self, rev: int, changes: Sequence[KeyValue]) -> None:
        self.commits.append((rev, [kv_tuple(kv) for kv in changes]))

    def toggle_hook(self) -> None:
        # With a hook the core never takes its put fast path: run both ways.
        if self.hooked:
            self.mvcc.remove_hook(self._hook)
        else:
            self.mvcc.add_hook(self._hook)
        self.hooked = not self.hooked

    def run(self, core: Callable[[], object], model: Callable[[], object]) -> object:
        """Run an op on the model, then on the core: same result, or the same error class
        and nothing changed in the core (and no commit reported)."""
        rev0 = self.model.rev
        self.commits.clear()
        try:
            exp = model()
        except EtcdError as e:
            before = fingerprint(self.mvcc)
            with pytest.raises(EtcdError) as info:
                got = core()
                pytest.fail(f"expected {type(e).__name__}, got {got!r}")
            assert type(info.value) is type(e), (info.value, e)
            assert fingerprint(self.mvcc) == before
            assert not self.commits
            return None
        got = core()
        if isinstance(exp, ExpRange | ExpPut | ExpDelete | ExpTxn):
            check_response(got, exp)
        else:
            assert got == exp, (got, exp)
        if self.hooked:
            want = [
                (r, [kv_tuple(kv) for kv in self.model.changes_at(r)])
                for r in range(rev0 + 1, self.model.rev + 1)
            ]
            assert self.commits == want
        return got

    # ops

    def put(self, req: PutRequest) -> None:
        self.run(
            lambda: self.mvcc.put(
                req.key, req.value, req.lease, req.prev_kv, req.ignore_value, req.ignore_lease
            ),
            lambda: self.model.put(req),
        )

    def delete(self, req: DeleteRangeRequest) -> None:
        self.run(lambda: self.mvcc.delete_range(req), lambda: self.model.delete(req))

    def range(self, req: RangeRequest) -> None:
        self.run(lambda: self.mvcc.range(req), lambda: self.model.range(req))

    def get(self, key: bytes, revision: int) -> None:
        self.run(lambda: self.mvcc.get(key, revision), lambda: self.model.get(key, revision))

    def txn(self, req: TxnRequest, duplicate: bool) -> None:
        self.run(lambda: self.mvcc.txn(req), lambda: self.model.txn(req, duplicate))

    def compact(self, revision: int) -> None:
        self.run(lambda: self.mvcc.compact(revision), lambda: self.model.compact(revision))

    def compact_step(self, budget: int) -> None:
        if budget <= 0:
            before = fingerprint(self.mvcc)
            with pytest.raises(ValueError):
                self.mvcc.compact_step(budget)
            assert fingerprint(self.mvcc) == before
            return
        done = self.mvcc.compact_step(budget)
        assert done == (not self.mvcc.compaction_pending)
        if done:
            self.check_log(trimmed=True)

    def compact_all(self) -> None:
        self.mvcc.compact_all()
        assert not self.mvcc.compaction_pending
        self.check_log(trimmed=True)
        assert len(self.mvcc) == len(self.mvcc._index)
        self.check_state()

    def grant(self, ttl: int, lease_id: int) -> None:
        m = self.model
        try:
            m.grant(ttl, lease_id)
        except EtcdError as e:
            before = fingerprint(self.mvcc)
            with pytest.raises(type(e)):
                self.mvcc.grant(ttl, lease_id, 0.0)
            assert fingerprint(self.mvcc) == before
            return
        entry = self.mvcc.grant(ttl, lease_id, 0.0)
        if lease_id:
            assert entry.id == lease_id
        else:
            assert entry.id > 0 and entry.id not in m.leases
        assert entry.ttl == max(ttl, 1) and not entry.keys
        m.leases.add(entry.id)

    def revoke(self, lease_id: int) -> None:
        self.run(lambda: self.mvcc.revoke(lease_id), lambda: self.model.revoke(lease_id))

    # checks

    def check_log(self, trimmed: bool = False, since: int | None = None) -> None:
        """The change log (watch replay) from the compacted revision on; once physical
        compaction is done nothing below it is left (a tombstone *at* it stays)."""
        lo = max(self.model.compacted, 0)
        got = [kv_tuple(kv) for kv in self.mvcc.changes_since(lo if since is None else since)]
        want = [kv_tuple(kv) for kv in self.model.changes_from(lo if since is None else since)]
        assert got == want
        if trimmed:
            assert [kv_tuple(kv) for kv in self.mvcc.changes_since(0)] == want

    def check_state(self) -> None:
        mv, m = self.mvcc, self.model
        mv._check()
        assert mv.revision == m.rev
        # The live-key index against the model: the keys live now, and the count of every
        # span (a single key, [start, end), b"\0"-ended, empty) by bisection.
        assert list(mv.live_keys()) == [kv.key for kv in m.live(b"\0", b"\0", m.rev)]
        for start in STARTS:
            for end in (b"", b"\0", *ENDS):
                assert mv.count(start, end) == len(m.live(start, end, m.rev)), (start, end)
        assert mv.compacted_revision == m.compacted
        if not mv.compaction_pending:  # physically compacted: no leaked keys
            need, may = m.index_keys()
            assert need <= set(mv._index) <= may
        assert {e.id for e in mv.lessor.leases()} == m.leases
        for lease in m.leases:
            entry = mv.lessor.get(lease)
            assert entry is not None and entry.keys == m.attached(lease), lease

    def full_comparison(self) -> None:
        """Every key at every readable revision, plus the compacted and future edges."""
        mv, m = self.mvcc, self.model
        lo = max(m.compacted, 1)
        everything = RangeRequest(b"\0", b"\0")
        for rev in range(lo, m.rev + 1):
            for key in sorted({*KEYS, *m.hist}):
                assert kv_tuple(mv.get(key, rev)) == kv_tuple(m.at(key, rev)), (key, rev)
            everything.revision = rev
            got = mv.range(everything)
            assert got.kvs == m.live(b"\0", b"\0", rev), rev
            assert got.header == full_header(m.rev)
        for rev in {1, lo - 1, (1 + lo) // 2}:
            if 0 < rev < lo:
                with pytest.raises(CompactedError):
                    mv.get(b"a", rev)
        with pytest.raises(FutureRevisionError):
            mv.get(b"a", m.rev + 1)
        self.check_log()
        self.check_state()


# --- 1. the state machine ------------------------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()

    def gen(self, data: st.DataObject) -> Gen:
        return Gen(DataChooser(data), self.h.model)

    @rule(data=st.data())
    def put(self, data: st.DataObject) -> None:
        self.h.put(self.gen(data).put())

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        self.h.delete(self.gen(data).delete())

    @rule(data=st.data())
    def range(self, data: st.DataObject) -> None:
        self.h.range(self.gen(data).get())

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        g = self.gen(data)
        self.h.get(g.key(), g.read_revision())

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        self.h.txn(*self.gen(data).txn())

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        m = self.h.model
        self.h.compact(data.draw(st.integers(m.compacted - 1, m.rev + 1)))

    @rule(budget=st.integers(0, 4))
    def compact_step(self, budget: int) -> None:
        self.h.compact_step(budget)

    @rule()
    def compact_all(self) -> None:
        self.h.compact_all()

    @rule(lease_id=st.sampled_from((0, *LEASE_IDS)), ttl=st.sampled_from((1, 5, MAX_LEASE_TTL + 1)))
    def grant(self, lease_id: int, ttl: int) -> None:
        self.h.grant(ttl, lease_id)

    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        self.h.revoke(data.draw(st.sampled_from((MISSING_LEASE, *sorted(self.h.model.leases)))))

    @rule()
    def toggle_hook(self) -> None:
        self.h.toggle_hook()

    @rule(data=st.data())
    def changes_since(self, data: st.DataObject) -> None:
        m = self.h.model
        self.h.check_log(since=data.draw(st.integers(max(m.compacted, 0), m.rev + 1)))

    @invariant()
    def consistent(self) -> None:
        self.h.check_state()

    def teardown(self) -> None:
        self.h.full_comparison()


TestCoreModel = CoreMachine.TestCase
TestCoreModel.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- 2. seeded stress ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_stress_against_model(seed: int) -> None:
    rng = random.Random(seed)
    h = Harness(dead_steps=(0, 1, 8)[seed % 3])
    m = h.model
    g = Gen(RandomChooser(rng), m)
    for i in range(3000):
        x = rng.random()
        if x < 0.34:
            h.put(g.put())
        elif x < 0.40:
            h.delete(g.delete())
        elif x < 0.52:
            h.range(g.get())
        elif x < 0.56:
            h.get(g.key(), g.read_revision())
        elif x < 0.76:
            h.txn(*g.txn())
        elif x < 0.79:
            # A recent revision (keeps history short), or an invalid one (≤ C, future).
            h.compact(rng.choice((m.rev - rng.randint(0, 150), m.compacted, m.rev + 1)))
        elif x < 0.90:
            h.compact_step(rng.randint(1, 20))
        elif x < 0.94:
            h.grant(rng.choice((1, 5)), rng.choice((0, *LEASE_IDS)))
        elif x < 0.97:
            h.revoke(rng.choice((MISSING_LEASE, *sorted(m.leases))))
        elif x < 0.975:
            h.toggle_hook()
        elif x < 0.98:
            h.compact_all()
        else:
            h.check_log(since=rng.randint(max(m.compacted, 0), m.rev + 1))
        h.mvcc._check()
        if i % 50 == 0:
            h.check_state()
    h.full_comparison()
    h.compact_all()
    h.full_comparison()


# --- 3. bad input ------------------------------------------------------------------------


def populated() -> Harness:
    """A store with history, leases, a deletion and a pending physical compaction."""
    h = Harness()
    h.grant(5, 1)
    h.grant(5, 2)
    h.put(PutRequest(b"a", b"1", lease=1))
    h.put(PutRequest(b"ab", b"2"))
    h.put(PutRequest(b"b", b"3", lease=2))
    h.put(PutRequest(b"a", b"4", lease=1))
    h.delete(DeleteRangeRequest(b"ab"))
    h.put(PutRequest(b"c", b"5"))
    h.compact(4)
    h.put(PutRequest(b"b", b"6", lease=2))
    h.check_state()
    assert h.mvcc.compaction_pending
    return h


def assert_rejected(h: Harness, exc: type[EtcdError], call: Callable[[], object]) -> None:
    before = fingerprint(h.mvcc)
    with pytest.raises(EtcdError) as info:
        call()
    assert type(info.value) is exc, info.value
    assert fingerprint(h.mvcc) == before
    h.check_state()


EMPTY_KEY_CALLS: dict[str, Callable[[MVCC], object]] = {
    "put": lambda m: m.put(b"", b"v"),
    "put-ignore_value-with-value": lambda m: m.put(b"", b"v", ignore_value=True),
    "put-missing-lease": lambda m: m.put(b"", b"v", lease=MISSING_LEASE),
    "range": lambda m: m.range(RangeRequest(b"")),
    "range-with-end": lambda m: m.range(RangeRequest(b"", b"\0")),
    "range-future-revision": lambda m: m.range(RangeRequest(b"", revision=10**6)),
    "get": lambda m: m.get(b""),
    "delete": lambda m: m.delete_range(DeleteRangeRequest(b"")),
    "delete-all": lambda m: m.delete_range(DeleteRangeRequest(b"", b"\0")),
    "txn-compare": lambda m: m.txn(
        TxnRequest([Compare(b"", CompareTarget.VERSION, CompareResult.EQUAL, 0)])
    ),
    "txn-success-put": lambda m: m.txn(TxnRequest([], [PutRequest(b"x"), PutRequest(b"")])),
    "txn-untaken-failure-range": lambda m: m.txn(
        TxnRequest([], [PutRequest(b"x")], [RangeRequest(b"")])
    ),
    "txn-untaken-failure-delete": lambda m: m.txn(
        TxnRequest([], [PutRequest(b"x")], [DeleteRangeRequest(b"")])
    ),
    "txn-nested-untaken": lambda m: m.txn(
        TxnRequest(
            [],
            [PutRequest(b"x"), TxnRequest([], [], [PutRequest(b"")])],
        )
    ),
}


@pytest.mark.parametrize("name", sorted(EMPTY_KEY_CALLS))
def test_empty_key_rejected(name: str) -> None:
    h = populated()
    assert_rejected(h, EmptyKeyError, lambda: EMPTY_KEY_CALLS[name](h.mvcc))


PUT_ERRORS: list[tuple[str, dict[str, object], type[EtcdError]]] = [
    (
        "ignore_value with a value",
        {"key": b"a", "value": b"v", "ignore_value": True},
        ValueProvidedError,
    ),
    (
        "ignore_lease with a lease",
        {"key": b"a", "lease": 1, "ignore_lease": True},
        LeaseProvidedError,
    ),
    (
        "both: value checked first",
        {"key": b"a", "value": b"v", "lease": 1, "ignore_value": True, "ignore_lease": True},
        ValueProvidedError,
    ),
    ("missing lease", {"key": b"a", "value": b"v", "lease": MISSING_LEASE}, LeaseNotFoundError),
    ("missing lease on a new key", {"key": b"new", "lease": MISSING_LEASE}, LeaseNotFoundError),
    ("ignore_value on a missing key", {"key": b"new", "ignore_value": True}, KeyNotFoundError),
    ("ignore_lease on a missing key", {"key": b"new", "ignore_lease": True}, KeyNotFoundError),
    ("ignore_value on a deleted key", {"key": b"ab", "ignore_value": True}, KeyNotFoundError),
    ("ignore_lease on a deleted key", {"key": b"ab", "ignore_lease": True}, KeyNotFoundError),
    (
        "standalone put: lease checked before key existence",
        {"key": b"new", "lease": MISSING_LEASE, "ignore_value": True},
        LeaseNotFoundError,
    ),
]


@pytest.mark.parametrize(
    ("fields", "exc"), [c[1:] for c in PUT_ERRORS], ids=[c[0] for c in PUT_ERRORS]
)
def test_put_errors(fields: dict[str, object], exc: type[EtcdError]) -> None:
    h = populated()
    req = PutRequest(**fields)  # type: ignore[arg-type]
    with pytest.raises(exc):
        h.model.put(req)
    assert_rejected(
        h,
        exc,
        lambda: h.mvcc.put(
            req.key, req.value, req.lease, req.prev_kv, req.ignore_value, req.ignore_lease
        ),
    )
    # The same put inside a txn's chosen branch fails the same way, after a write to
    # another key in the same branch (nothing of which may be applied). Inside a txn the
    # key-existence check comes before the lease check.
    if exc is LeaseNotFoundError and (req.ignore_value or req.ignore_lease):
        exc = KeyNotFoundError
    txn = TxnRequest([], [PutRequest(b"other", b"o"), DeleteRangeRequest(b"c"), req])
    assert_rejected(h, exc, lambda: h.mvcc.txn(txn))


def test_ignore_flags_on_existing_key() -> None:
    """The positive side of the checks above: ignore_value keeps the value but
    takes the request's lease; ignore_lease keeps the lease."""
    h = populated()
    h.put(PutRequest(b"a", ignore_value=True, prev_kv=True))  # lease 1 → detached
    assert h.mvcc.get(b"a").lease == 0  # type: ignore[union-attr]
    h.put(PutRequest(b"b", b"new", ignore_lease=True))
    assert h.mvcc.get(b"b").lease == 2  # type: ignore[union-attr]
    h.put(PutRequest(b"c", lease=2, ignore_value=True))
    h.check_state()
    h.full_comparison()


BAD_TXNS: dict[str, tuple[Callable[[], TxnRequest], type[EtcdError]]] = {
    "chosen success: missing lease": (
        lambda: TxnRequest(
            [Compare(b"a", CompareTarget.VERSION, CompareResult.GREATER, 0)],
            [
                PutRequest(b"x", b"1"),
                DeleteRangeRequest(b"\0", b"\0"),
                PutRequest(b"y", lease=MISSING_LEASE),
            ],
            [PutRequest(b"z")],
        ),
        LeaseNotFoundError,
    ),
    "chosen failure: missing lease": (
        lambda: TxnRequest(
            [Compare(b"nope", CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"")],
            [PutRequest(b"z")],
            [DeleteRangeRequest(b"a"), PutRequest(b"y", lease=MISSING_LEASE)],
        ),
        LeaseNotFoundError,
    ),
    "chosen nested: ignore_value on missing key": (
        lambda: TxnRequest(
            [],
            [
                PutRequest(b"x", b"1"),
                TxnRequest(
                    [Compare(b"b", CompareTarget.LEASE, CompareResult.EQUAL, 2)],
                    [PutRequest(b"new", ignore_value=True)],
                    [],
                ),
            ],
        ),
        KeyNotFoundError,
    ),
    "chosen: range at a future revision": (
        lambda: TxnRequest([], [PutRequest(b"x", b"1"), RangeRequest(b"a", revision=99)]),
        FutureRevisionError,
    ),
    "chosen: range below the compacted revision": (
        lambda: TxnRequest([], [DeleteRangeRequest(b"a"), RangeRequest(b"a", revision=3)]),
        CompactedError,
    ),
    "chosen: negative range revision after a compaction": (
        lambda: TxnRequest([], [PutRequest(b"x", b"1"), RangeRequest(b"a", revision=-1)]),
        CompactedError,
    ),
    "puts are checked before ranges": (
        lambda: TxnRequest(
            [], [RangeRequest(b"a", revision=99), PutRequest(b"y", lease=MISSING_LEASE)]
        ),
        LeaseNotFoundError,
    ),
    "duplicate put": (
        lambda: TxnRequest([], [], [PutRequest(b"x"), PutRequest(b"x")]),
        DuplicateKeyError,
    ),
    "too many ops": (
        lambda: TxnRequest([], [RangeRequest(b"a")] * (MAX_TXN_OPS + 1)),
        TooManyOpsError,
    ),
    "empty RequestOp": (lambda: TxnRequest([], [], [None]), KeyNotFoundError),
}


@pytest.mark.parametrize("name", sorted(BAD_TXNS))
def test_bad_txn_applies_nothing(name: str) -> None:
    make, exc = BAD_TXNS[name]
    h = populated()
    with pytest.raises(exc):
        h.model.txn(make(), duplicate=exc is DuplicateKeyError)
    assert_rejected(h, exc, lambda: h.mvcc.txn(make()))


def test_untaken_branch_is_not_data_checked() -> None:
    h = populated()
    bad: list[Op] = [
        PutRequest(b"y", lease=MISSING_LEASE),
        RangeRequest(b"a", revision=99),
        PutRequest(b"new", ignore_lease=True),
    ]
    h.txn(TxnRequest([], [PutRequest(b"x", b"1")], bad), False)
    missing = Compare(b"nope", CompareTarget.VALUE, CompareResult.EQUAL, b"")  # false
    h.txn(TxnRequest([missing], bad, [RangeRequest(b"a")]), False)
    h.full_comparison()


def test_compact_errors_change_nothing() -> None:
    h = populated()
    assert_rejected(h, CompactedError, lambda: h.mvcc.compact(4))
    assert_rejected(h, CompactedError, lambda: h.mvcc.compact(-1))
    assert_rejected(h, FutureRevisionError, lambda: h.mvcc.compact(h.model.rev + 1))
    fresh = Harness()
    fresh.compact(0)  # C = -1 on a fresh store: Compact(0) works once
    fresh.compact(1)  # revision == current is allowed
    assert_rejected(fresh, CompactedError, lambda: fresh.mvcc.compact(1))


# --- pinned subtle rules ---------------------------------------------------------------


def test_range_limit_window_before_default_sort() -> None:
    """etcd's apply.go fetches only limit+1 keys (key order) when no sort order and no
    filter is given, and only then applies the default ASCEND of a non-KEY sort_target: the
    sort sees that window, not the whole range. An explicit order or a filter fetches all."""
    h = Harness()
    for key, times in ((b"a", 2), (b"b", 3), (b"c", 1)):  # versions 2, 3, 1
        for _ in range(times):
            h.put(PutRequest(key, b"v"))

    def keys(**kw: Any) -> list[bytes]:
        req = RangeRequest(b"a", b"\0", limit=1, sort_target=SortTarget.VERSION, **kw)
        h.range(req)  # against the model
        resp = h.mvcc.range(req)
        assert resp.more and resp.count == 3
        return [kv.key for kv in resp.kvs]

    assert keys() == [b"a"]  # window [a, b] sorted by version
    assert keys(sort_order=SortOrder.ASCEND) == [b"c"]
    assert keys(min_mod_revision=1) == [b"c"]
    assert keys(sort_order=SortOrder.DESCEND) == [b"b"]


DUPLICATE_RULE: list[tuple[str, list[Op | None], bool]] = [
    # (case, success branch, rejected?) -- etcd's v3rpc checkIntervals.
    ("two puts", [PutRequest(b"a"), PutRequest(b"a", b"2")], True),
    ("delete then put", [DeleteRangeRequest(b"a"), PutRequest(b"a")], True),
    ("put then delete", [PutRequest(b"a"), DeleteRangeRequest(b"a")], True),
    ("put in a range delete", [PutRequest(b"ab"), DeleteRangeRequest(b"a", b"b")], True),
    ("nested put repeats parent", [PutRequest(b"a"), TxnRequest([], [PutRequest(b"a")])], True),
    ("parent put repeats nested", [TxnRequest([], [PutRequest(b"a")]), PutRequest(b"a")], True),
    (
        "nested put in parent delete",
        [DeleteRangeRequest(b"a", b"b"), TxnRequest([], [PutRequest(b"ab")])],
        True,
    ),
    (
        "sibling nested puts",
        [TxnRequest([], [PutRequest(b"a")]), TxnRequest([], [PutRequest(b"a")])],
        True,
    ),
    (
        "sibling nested delete then put",
        [TxnRequest([], [DeleteRangeRequest(b"a")]), TxnRequest([], [PutRequest(b"a")])],
        True,
    ),
    (
        "nested delete, later parent put",
        [TxnRequest([], [DeleteRangeRequest(b"a")]), PutRequest(b"a")],
        True,
    ),
    ("overlapping deletes", [DeleteRangeRequest(b"a"), DeleteRangeRequest(b"a", b"b")], False),
    ("range then put", [RangeRequest(b"a"), PutRequest(b"a"), RangeRequest(b"a")], False),
    (
        "nested then/else repeat",
        [
            TxnRequest(
                [Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 0)],
                [PutRequest(b"a", b"t")],
                [PutRequest(b"a", b"e")],
            )
        ],
        False,
    ),
    ("nul-ended delete then put", [DeleteRangeRequest(b"a", b"\0"), PutRequest(b"a")], False),
    (
        "sibling nested put then delete",
        [TxnRequest([], [PutRequest(b"a")]), TxnRequest([], [DeleteRangeRequest(b"a")])],
        False,
    ),
]


@pytest.mark.parametrize(
    ("success", "rejected"), [c[1:] for c in DUPLICATE_RULE], ids=[c[0] for c in DUPLICATE_RULE]
)
def test_duplicate_key_rule(success: list[Op | None], rejected: bool) -> None:
    h = populated()
    for branch in ("success", "failure"):  # checked whichever branch would run
        txn = TxnRequest([], success) if branch == "success" else TxnRequest([], [], success)
        h.txn(txn, rejected)
    # The same key in the two top-level branches is never a conflict.
    h.txn(TxnRequest([], [PutRequest(b"a", b"s")], [PutRequest(b"a", b"f")]), False)
    h.full_comparison()


# --- regressions: core bugs found by this file (all fixed since) ---------------------------


def test_same_revision_delete_then_put() -> None:
    """etcd accepts a txn that deletes a key through a b"\\0"-ended range and puts it again
    (its duplicate-key check never matches such a delete), or that puts and then deletes a
    key from sibling nested txns: the key changes twice in one revision (sub-revisions 0
    and 1). Was: MVCC._check() failed on the two history entries with one mod_revision."""
    h = Harness()
    h.toggle_hook()
    h.grant(5, 1)
    h.put(PutRequest(b"a", b"1", lease=1))
    h.txn(
        TxnRequest([], [DeleteRangeRequest(b"a", b"\0", prev_kv=True), PutRequest(b"a", b"2")]),
        False,
    )
    assert h.mvcc.get(b"a") == KeyValue(b"a", 3, 3, 1, b"2", 0)
    h.txn(TxnRequest([], [PutRequest(b"b", b"3"), DeleteRangeRequest(b"a", b"\0")]), False)
    h.txn(
        TxnRequest(
            [],
            [TxnRequest([], [PutRequest(b"c", b"4")]), TxnRequest([], [DeleteRangeRequest(b"c")])],
        ),
        False,
    )
    h.full_comparison()  # calls MVCC._check()
    h.compact(h.model.rev)
    h.compact_all()
    h.full_comparison()


def test_ignore_put_after_delete_in_same_txn_is_refused() -> None:
    """A put with ignore_value/ignore_lease of a key that exists before the txn passes the
    data check, but an earlier b"\\0"-ended delete of the same txn removes the key. etcd
    panics ('unexpected error during txn'); etcdlite refuses the whole txn. Was: the core
    raised after applying the delete, leaving an uncommitted tombstone in index and log."""
    h = Harness()
    h.grant(5, 1)
    h.put(PutRequest(b"a", b"1", lease=1))
    for put in (PutRequest(b"a", ignore_value=True), PutRequest(b"a", b"v", ignore_lease=True)):
        txn = TxnRequest([], [DeleteRangeRequest(b"\0", b"\0"), PutRequest(b"b"), put])
        assert_rejected(h, KeyNotFoundError, lambda txn=txn: h.mvcc.txn(txn))  # type: ignore[misc]
        with pytest.raises(KeyNotFoundError):
            h.model.txn(txn)
    # The other order is fine: the put sees the key, then the delete removes it.
    h.txn(
        TxnRequest([], [PutRequest(b"a", ignore_value=True), DeleteRangeRequest(b"a", b"\0")]),
        False,
    )
    h.full_comparison()


def test_compact_step_budget_must_be_positive() -> None:
    """Was: compact_step(0) trimmed nothing, returned True and cleared compaction_pending
    (so Store(compaction_batch=0) never compacted physically)."""
    h = Harness()
    for v in (b"1", b"2", b"3"):
        h.put(PutRequest(b"a", v))
    h.compact(4)
    for budget in (0, -1):
        h.compact_step(budget)  # expects ValueError and no change
    assert h.mvcc.compaction_pending
    h.compact_step(1)
    h.compact_step(1)
    assert not h.mvcc.compaction_pending
    h.full_comparison()
