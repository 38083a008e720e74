"""The core's live-key index (``MVCC._dead``, ``MVCC.count``, ``MVCC._walk``) against linear
answers, after random sequences of puts (single and in blocks), deletes of long spans,
txns (with a range as their last op, so it reads the txn's own writes), lease revokes and
expiry, compactions, and with reads at the current and at past revisions.

The reference is deliberately linear and independent of the index: a snapshot of the keys
live after every revision, and etcd's Range rules applied to the whole list.
Forty-eight keys, so runs of dead keys get long enough for a walk to jump over them; the
walk's step-over threshold is drawn too (0: every dead key jumps).
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from etcdlite.core.lessor import Lessor
from etcdlite.core.mvcc import MVCC
from etcdlite.ops import DeleteRangeRequest, Op, PutRequest, RangeRequest, TxnRequest
from etcdlite.types import KeyValue, RangeResponse, SortOrder, SortTarget

KEYS = [b"k%02d" % i for i in range(48)]
#: Range bounds: the keys, the tens' prefixes (b"k1" < b"k10"), and both ends of the space.
BOUNDS = [*KEYS, b"k", b"k1", b"k2", b"k3", b"k4", b"k\xff", b"a", b"z"]
LEASES = (1, 2, 3)

_FIELD: dict[int, Callable[[KeyValue], object]] = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def linear_range(
    live: dict[bytes, KeyValue], req: RangeRequest
) -> tuple[list[KeyValue], bool, int]:
    """etcd's Range over a snapshot, every key looked at: (kvs, more, count)."""
    kvs = [live[k] for k in sorted(live) if in_range(k, req.key, req.range_end)]
    count = len(kvs)
    if req.count_only:
        return [], False, count
    filtered = (
        req.min_mod_revision
        or req.max_mod_revision
        or req.min_create_revision
        or req.max_create_revision
    )
    order = req.sort_order
    if req.limit > 0 and order == SortOrder.NONE and not filtered:
        kvs = kvs[: req.limit + 1]  # etcd's window before a target-only sort
    kvs = [
        kv
        for kv in kvs
        if not (req.min_mod_revision and kv.mod_revision < req.min_mod_revision)
        and not (req.max_mod_revision and kv.mod_revision > req.max_mod_revision)
        and not (req.min_create_revision and kv.create_revision < req.min_create_revision)
        and not (req.max_create_revision and kv.create_revision > req.max_create_revision)
    ]
    if order == SortOrder.NONE and req.sort_target != SortTarget.KEY:
        order = SortOrder.ASCEND
    if order in (SortOrder.ASCEND, SortOrder.DESCEND):
        # stable, like the core's: ties keep key order
        kvs.sort(key=_FIELD[req.sort_target], reverse=order == SortOrder.DESCEND)  # type: ignore[arg-type]
    more = 0 < req.limit < len(kvs)
    if more:
        kvs = kvs[: req.limit]
    if req.keys_only:
        kvs = [
            KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
            for kv in kvs
        ]
    return kvs, more, count


keys = st.sampled_from(KEYS)
bounds = st.sampled_from(BOUNDS)


@st.composite
def spans(draw: st.DrawFn) -> tuple[bytes, bytes]:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(keys), b""
    if kind == 1:
        return draw(bounds), b"\0"
    if kind == 2:
        return b"\0", b"\0"
    return draw(bounds), draw(bounds)  # may be empty (end <= start)


class CountMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = MVCC(lessor=Lessor(min_ttl=1))
        self.now = 0.0
        #: revision -> the keys live at it (every revision this test made).
        self.snapshots: dict[int, dict[bytes, KeyValue]] = {1: {}}

    @initialize(steps=st.sampled_from((0, 1, 8)))
    def setup(self, steps: int) -> None:
        self.core.dead_steps = steps

    def _snapshot(self) -> None:
        core = self.core
        self.snapshots[core.revision] = {k: h[-1] for k, h in core._index.items() if h[-1].version}

    def _lease(self, draw: st.DataObject) -> int:
        granted = [lid for lid in LEASES if lid in self.core.lessor]
        return draw.draw(st.sampled_from([0, 0, *granted]))

    # --- writes ----------------------------------------------------------------------

    @rule(data=st.data(), key=keys, value=st.sampled_from((b"a", b"b", b"c")))
    def put(self, data: st.DataObject, key: bytes, value: bytes) -> None:
        self.core.put(key, value, self._lease(data))
        self._snapshot()

    @rule(first=st.integers(0, 47), n=st.integers(1, 30))
    def put_block(self, first: int, n: int) -> None:
        for k in KEYS[first : first + n]:
            self.core.put(k, b"blk")
            self._snapshot()

    @rule(span=spans())
    def delete(self, span: tuple[bytes, bytes]) -> None:
        self.core.delete_range(DeleteRangeRequest(*span))
        self._snapshot()

    @rule(data=st.data(), span=spans(), limit=st.integers(0, 4))
    def txn(self, data: st.DataObject, span: tuple[bytes, bytes], limit: int) -> None:
        """Puts and deletes, then a range that sees them (compared after the txn)."""
        ops: list[Op] = []
        put_keys: set[bytes] = set()
        for _ in range(data.draw(st.integers(0, 5))):
            if data.draw(st.booleans()):
                k = data.draw(keys)
                if k not in put_keys:
                    put_keys.add(k)
                    ops.append(PutRequest(k, b"t"))
            else:
                # b"\0"-ended deletes never conflict with puts in etcd's duplicate-key rule
                ops.insert(0, DeleteRangeRequest(data.draw(bounds), b"\0"))
        order = data.draw(st.sampled_from((SortOrder.NONE, SortOrder.DESCEND)))
        req = RangeRequest(*span, limit=limit, sort_order=order)
        resp = self.core.txn(TxnRequest([], [*ops, req]))
        self._snapshot()
        inner = resp.responses[-1]
        assert isinstance(inner, RangeResponse)
        want = linear_range(self.snapshots[self.core.revision], req)
        assert (inner.kvs, inner.more, inner.count) == want

    @rule(ttl=st.integers(1, 3), lid=st.sampled_from(LEASES))
    def grant(self, ttl: int, lid: int) -> None:
        if lid not in self.core.lessor:
            self.core.grant(ttl, lid, self.now)

    @rule(lid=st.sampled_from(LEASES))
    def revoke(self, lid: int) -> None:
        if lid in self.core.lessor:
            self.core.revoke(lid)
            self._snapshot()

    @rule(dt=st.sampled_from((0.5, 1.0, 2.0)))
    def expire(self, dt: float) -> None:
        """What the Store's expiry loop does: revoke what is due, one revision each."""
        self.now += dt
        for lid in self.core.lessor.pop_expired(self.now, 100):
            self.core.revoke(lid)
            self._snapshot()

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        core = self.core
        lo = max(core.compacted_revision + 1, 0)
        if lo > core.revision:
            return
        core.compact(data.draw(st.integers(lo, core.revision)))
        if data.draw(st.booleans()):
            core.compact_all()
        else:
            core.compact_step(data.draw(st.integers(1, 5)))

    # --- reads -----------------------------------------------------------------------

    @rule(
        data=st.data(),
        span=spans(),
        limit=st.sampled_from((0, 1, 2, 3, 10, -1)),
        order=st.sampled_from((0, 0, 1, 2, 2, 7)),
        sort_target=st.sampled_from((0, 0, 0, 1, 2, 3, 4)),
        count_only=st.booleans(),
        keys_only=st.booleans(),
    )
    def read(
        self,
        data: st.DataObject,
        span: tuple[bytes, bytes],
        limit: int,
        order: int,
        sort_target: int,
        count_only: bool,
        keys_only: bool,
    ) -> None:
        core = self.core
        rev = 0
        if data.draw(st.booleans()):  # a past revision, readable (≥ compacted)
            rev = data.draw(st.integers(max(core.compacted_revision, 1), core.revision))
        r = core.revision

        def bound() -> int:
            return data.draw(st.integers(0, r + 1)) if data.draw(st.integers(0, 4)) == 0 else 0

        req = RangeRequest(
            *span,
            revision=rev,
            limit=limit,
            sort_order=order,
            sort_target=sort_target,
            count_only=count_only,
            keys_only=keys_only,
            min_mod_revision=bound(),
            max_mod_revision=bound(),
            min_create_revision=bound(),
            max_create_revision=bound(),
        )
        got = core.range(req)
        want = linear_range(self.snapshots[rev or core.revision], req)
        assert (got.kvs, got.more, got.count) == want, req
        assert got.header.revision == core.revision

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def index_matches(self) -> None:
        core = self.core
        core._check()  # _dead is exactly the tombstoned keys; live_keys, count(all)
        live = self.snapshots[core.revision]
        assert list(core.live_keys()) == sorted(live)
        for start in BOUNDS[::5]:
            for end in (b"", b"\0", *BOUNDS[2::7]):
                want = sum(1 for k in live if in_range(k, start, end))
                assert core.count(start, end) == want, (start, end)


TestCount = CountMachine.TestCase
TestCount.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_limit_jumps_over_a_long_dead_run() -> None:
    """A limit range past 10k deleted keys reads only what it returns (the dead run is
    jumped over by bisection: a handful of positional lookups, not 10k history reads)."""
    core = MVCC()
    for i in range(20_000):
        core.put(b"k%05d" % i, b"v")
    core.delete_range(DeleteRangeRequest(b"k00000", b"k10000"))
    seen: list[bytes] = []
    index = core._index
    real = index.__getitem__
    calls = 0

    def counting(key: bytes) -> list[KeyValue]:
        nonlocal calls
        calls += 1
        return real(key)  # type: ignore[no-any-return]

    index.__getitem__ = counting  # an instance attribute: _walk looks it up there
    for order in (SortOrder.NONE, SortOrder.DESCEND):
        resp = core.range(RangeRequest(b"k", b"l", limit=3, sort_order=order))
        seen += [kv.key for kv in resp.kvs]
        assert resp.count == 10_000 and resp.more
    assert seen == [b"k10000", b"k10001", b"k10002", b"k19999", b"k19998", b"k19997"]
    assert calls < 100, calls
    resp = core.range(RangeRequest(b"k", b"k10000", limit=3))
    assert (resp.kvs, resp.more, resp.count) == ([], False, 0)
    core._check()
