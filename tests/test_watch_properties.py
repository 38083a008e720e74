"""Watch guarantees as executable checks, driven by random workloads on the embedded Store.

The validators port the idea of etcd's robustness checks (etcd-io/etcd
``tests/robustness/validate/watch.go``) to what one watcher received here:

* **Filter**: every event is in the watched range and passes the NOPUT/NODELETE filters.
* **Ordered**: revisions never decrease along the stream.
* **Unique**: no ``(revision, key)`` is delivered twice.
* **Atomic**: all of a watcher's events of one revision arrive in one response.
* **Bookmarkable**: a progress notification at revision R comes after every event ≤ R.
* **Reliable**: the events are exactly the matching changes between the first expected
  revision and the last one the watcher reached (the store head for a live watcher), as
  computed by a small independent model of the applied operations — never from the store's
  own change log.
* **Resumable**: a new watch from any uncompacted revision r replays exactly the matching
  changes ≥ r; one from a compacted revision ends with ``WatchCompactedError``.
* **PrevKV**: ``prev_kv`` is the key's value at ``mod_revision - 1`` (absent for creations;
  may be absent only where that revision was compacted).
* **IsCreate**: a PUT has version 1 iff ``create_revision == mod_revision`` iff the key did
  not exist at ``mod_revision - 1``.

Workloads: concurrent writer tasks (puts, range deletes, multi-op txns, lease grant + put +
revoke, compactions) interleaved with ``await asyncio.sleep(0)``; watchers on overlapping
keys/ranges/prefixes, with and without prev_kv and filters, from now, the past, the current
or a future revision; eager, slow (every N loop turns), paused (not reading until the writers
are done) and cancelling consumers; a tiny ``watch_buffer`` so watchers fall out of sync and
catch up from history (in chunks as small as one revision); progress ticks and requests
mid-run. Every write is driven by :func:`nosuspend`, which proves that it
completed without suspending (a writer never waits for a watcher), and every watcher's buffer
is checked against the cap after every write. Nothing here measures time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdlite import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    Event,
    EventType,
    FilterType,
    Get,
    KeyValue,
    ManualClock,
    Put,
    Store,
    Watch,
    WatchCanceledError,
    WatchCompactedError,
    WatchResponse,
)
from etcdlite.ops import Op, prefix_end

T = TypeVar("T")

# --- keys and ranges ---------------------------------------------------------------------

KEYS: tuple[bytes, ...] = (b"a", b"a/1", b"a/2", b"a/3", b"b/1", b"b/2", b"c")

#: (key, range_end) pairs watchers use; they overlap on purpose.
WATCH_RANGES: tuple[tuple[bytes, bytes], ...] = (
    *((k, b"") for k in KEYS),
    (b"a/", prefix_end(b"a/")),
    (b"b", prefix_end(b"b")),
    (b"a/2", b"b/2"),
    (b"b", b"\0"),
    (b"\0", b"\0"),
)

#: (key, range_end) pairs deletes use.
DELETE_RANGES: tuple[tuple[bytes, bytes], ...] = (
    *((k, b"") for k in KEYS),
    (b"a/", prefix_end(b"a/")),
    (b"a/2", b"c"),
    (b"b", b"\0"),
    (b"\0", b"\0"),
)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's ``[start, end)``: empty end is the single key, ``b"\\0"`` is unbounded."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


# --- driving writes ----------------------------------------------------------------------


def nosuspend(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion without letting it suspend; fail if it would.

    A write that completes on its first step never yielded to the event loop, so it cannot
    have waited for any watcher (or anything else).
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("a write suspended: writers must never wait for watchers")


# --- the model ---------------------------------------------------------------------------


class Model:
    """What the store should contain and which changes each revision made.

    ``changes`` lists every change as the Event a watcher with ``prev_kv`` should receive:
    the KeyValue written (a DELETE carries only key and mod_revision) and the key's previous
    live KeyValue (``None`` for a creation).
    """

    def __init__(self) -> None:
        self.rev = 1
        self.live: dict[bytes, KeyValue] = {}
        self.changes: list[Event] = []
        self.compactions: list[int] = []
        self._pending: list[Event] = []

    @property
    def compacted(self) -> int:
        return self.compactions[-1] if self.compactions else -1

    # A revision is built from pending changes, then committed (if any).

    def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        rev = self.rev + 1
        prev = self.live.get(key)
        if prev is None:
            kv = KeyValue(key, rev, rev, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, rev, prev.version + 1, value, lease)
        self.live[key] = kv
        self._pending.append(Event(EventType.PUT, kv, prev))

    def delete(self, start: bytes, end: bytes) -> None:
        rev = self.rev + 1
        for key in sorted(k for k in self.live if in_range(k, start, end)):
            prev = self.live.pop(key)
            self._pending.append(Event(EventType.DELETE, KeyValue(key, 0, rev, 0, b"", 0), prev))

    def revoke(self, lease: int) -> None:
        rev = self.rev + 1
        for key in sorted(k for k, kv in self.live.items() if kv.lease == lease):
            prev = self.live.pop(key)
            self._pending.append(Event(EventType.DELETE, KeyValue(key, 0, rev, 0, b"", 0), prev))

    def commit(self) -> int:
        if self._pending:
            self.rev += 1
            self.changes.extend(self._pending)
            self._pending = []
        return self.rev

    def compare(
        self, key: bytes, target: CompareTarget, result: CompareResult, operand: object
    ) -> bool:
        kv = self.live.get(key)
        if target == CompareTarget.VALUE:
            if kv is None:
                return False
            assert isinstance(operand, bytes)
            c = (kv.value > operand) - (kv.value < operand)
        else:
            attr = {
                CompareTarget.VERSION: "version",
                CompareTarget.CREATE: "create_revision",
                CompareTarget.MOD: "mod_revision",
                CompareTarget.LEASE: "lease",
            }[target]
            have = getattr(kv, attr) if kv is not None else 0
            assert isinstance(operand, int)
            c = (have > operand) - (have < operand)
        return {
            CompareResult.EQUAL: c == 0,
            CompareResult.NOT_EQUAL: c != 0,
            CompareResult.GREATER: c > 0,
            CompareResult.LESS: c < 0,
        }[result]

    def matching(self, spec: WSpec, lo: int, hi: int) -> list[Event]:
        """The changes in revisions ``[lo, hi]`` that a watcher with ``spec`` must get."""
        return [e for e in self.changes if lo <= e.kv.mod_revision <= hi and spec.wants(e)]


# --- workloads ---------------------------------------------------------------------------


class Source:
    """Random choices from ``random.Random`` (seeded tests) or hypothesis (``st.data()``)."""

    def __init__(self, rng: random.Random | None = None, data: st.DataObject | None = None):
        self.rng = rng
        self.data = data

    def randint(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        assert self.rng is not None
        return self.rng.randint(lo, hi)

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.randint(0, len(seq) - 1)]

    def chance(self, percent: int) -> bool:
        return self.randint(0, 99) < percent

    def per_mille(self, n: int) -> bool:
        return n > 0 and self.randint(0, 999) < n


@dataclass(frozen=True)
class WSpec:
    """One watcher of a workload and how its consumer behaves."""

    key: bytes
    end: bytes
    start: str  # "now", "past", "current", "future"
    offset: int
    prev_kv: bool
    filters: tuple[FilterType, ...]
    consumer: str  # "eager", "slow", "paused", "cancel"
    every: int  # slow: loop turns between responses; cancel: responses before cancelling
    delay: int  # loop turns after the writers start before the watch is created
    progress_notify: bool = False

    def wants(self, e: Event) -> bool:
        if not in_range(e.kv.key, self.key, self.end):
            return False
        if e.type == EventType.PUT:
            return FilterType.NOPUT not in self.filters
        return FilterType.NODELETE not in self.filters


#: A writer op: (kind, args..., loop turns to yield afterwards).
WOp = tuple[Any, ...]


@dataclass
class Workload:
    watch_buffer: int
    compaction_batch: int
    prefill: list[WOp]
    writers: list[list[WOp]]
    watchers: list[WSpec]
    catchup_revisions: int = 1000
    progress_every: int = 0  # loop turns between progress ticks/requests (0: none) mid-run
    resume_points: int = 2


def gen_txn_branch(src: Source) -> list[WOp]:
    """Ops of one branch that etcd accepts: puts on distinct keys outside the deletes."""
    ops: list[WOp] = []
    dels = [src.choice(DELETE_RANGES) for _ in range(src.randint(0, 1))]
    free = [k for k in KEYS if not any(in_range(k, s, e) for s, e in dels)]
    for _ in range(src.randint(0, 3)):
        if not free:
            break
        key = free.pop(src.randint(0, len(free) - 1))
        ops.append(("put", key))
    ops.extend(("del", s, e) for s, e in dels)
    if src.chance(30):
        ops.append(("get", src.choice(KEYS)))
    # order inside the branch matters for event order; shuffle deterministically
    order = [src.randint(0, 1000) for _ in ops]
    return [op for _, op in sorted(zip(order, ops, strict=True), key=lambda p: p[0])]


def gen_op(src: Source, compact_per_mille: int = 0) -> WOp:
    """One writer op; ``compact_per_mille``: how often it is a compaction."""
    turns = src.randint(0, 2)
    if src.per_mille(compact_per_mille):
        return ("compact", src.randint(0, 80), src.chance(30), turns)
    kind = src.choice(["put"] * 6 + ["del"] * 2 + ["txn"] * 2 + ["lease"])
    if kind == "put":
        return ("put", src.choice(KEYS), turns)
    if kind == "del":
        s, e = src.choice(DELETE_RANGES)
        return ("del", s, e, turns)
    if kind == "txn":
        compares = []
        for _ in range(src.randint(0, 2)):
            key = src.choice(KEYS)
            target = src.choice(
                [
                    CompareTarget.VERSION,
                    CompareTarget.MOD,
                    CompareTarget.CREATE,
                    CompareTarget.VALUE,
                ]
            )
            result = src.choice(list(CompareResult))
            operand: object = b"" if target == CompareTarget.VALUE else src.randint(0, 3)
            compares.append((key, target, result, operand))
        return ("txn", tuple(compares), gen_txn_branch(src), gen_txn_branch(src), turns)
    keys = sorted({src.choice(KEYS) for _ in range(src.randint(1, 3))})
    return ("lease", tuple(keys), src.chance(30), src.randint(0, 3), turns)


def gen_wspec(src: Source, max_delay: int) -> WSpec:
    key, end = src.choice(WATCH_RANGES)
    start = src.choice(["now", "now", "past", "current", "future"])
    consumer = src.choice(["eager", "slow", "paused", "cancel"])
    filters: tuple[FilterType, ...] = ()
    if src.chance(25):
        filters = (src.choice([FilterType.NOPUT, FilterType.NODELETE]),)
    return WSpec(
        key=key,
        end=end,
        start=start,
        offset=src.randint(1, 40),
        prev_kv=src.chance(50),
        filters=filters,
        consumer=consumer,
        every=src.randint(1, 5) if consumer != "cancel" else src.randint(1, 8),
        delay=src.randint(0, max_delay),
        # (a paused consumer's outcome is predicted from its buffer: keep progress out of it)
        progress_notify=consumer != "paused" and src.chance(30),
    )


def gen_workload(
    src: Source,
    *,
    max_prefill: int,
    max_writers: int,
    max_ops: int,
    max_watchers: int,
    compact_per_mille: int,
    min_watchers: int = 1,
) -> Workload:
    return Workload(
        watch_buffer=src.choice([1, 2, 4, 4, 128]),
        compaction_batch=src.choice([1, 3, 10_000]),
        prefill=[gen_op(src) for _ in range(src.randint(0, max_prefill))],
        writers=[
            [gen_op(src, compact_per_mille) for _ in range(src.randint(0, max_ops))]
            for _ in range(src.randint(1, max_writers))
        ],
        watchers=[gen_wspec(src, max_ops) for _ in range(src.randint(min_watchers, max_watchers))],
        catchup_revisions=src.choice([1000, 1, 3, 50]),
        progress_every=src.choice([0, 1, 5, 20]),
    )


# --- what a watcher received -------------------------------------------------------------


@dataclass
class Rec:
    spec: WSpec
    w: Watch
    start_revision: int
    created_rev: int
    responses: list[WatchResponse] = field(default_factory=list)
    compacted: int | None = None
    canceled_by_us: bool = False
    server_canceled: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def first(self) -> int:
        """The first revision this watcher must report (etcd: start_revision, else the
        revision after the one the watch was created at)."""
        return self.start_revision or self.created_rev + 1

    @property
    def synced_at_add(self) -> bool:
        return self.start_revision == 0 or self.start_revision > self.created_rev

    @property
    def events(self) -> list[Event]:
        return [e for r in self.responses for e in r.events]

    def last_event_rev(self) -> int:
        evs = self.events
        return evs[-1].kv.mod_revision if evs else 0


async def consume(rec: Rec, go: asyncio.Event) -> None:
    spec = rec.spec
    if spec.consumer == "paused":
        await go.wait()
    try:
        async for resp in rec.w.responses():
            rec.responses.append(resp)
            if spec.consumer == "slow":
                for _ in range(spec.every):
                    await asyncio.sleep(0)
            elif spec.consumer == "cancel" and len(rec.responses) >= spec.every:
                rec.canceled_by_us = True
                await rec.w.cancel()
    except WatchCompactedError as e:
        rec.compacted = e.compact_revision
    except WatchCanceledError as e:
        rec.server_canceled = e.reason or "?"


async def open_watch(store: Store, spec: WSpec, start_revision: int, go: asyncio.Event) -> Rec:
    w = store.watch(
        spec.key,
        spec.end,
        start_revision=start_revision,
        filters=spec.filters,
        prev_kv=spec.prev_kv,
        progress_notify=spec.progress_notify,
    )
    await w
    rec = Rec(spec, w, start_revision, w.revision)
    rec.task = asyncio.create_task(consume(rec, go))
    return rec


# --- validators (one per guarantee; each returns what it found wrong) ----------------------


def validate_filter(rec: Rec) -> list[str]:
    return [f"filter: {e!r} not wanted by {rec.spec}" for e in rec.events if not rec.spec.wants(e)]


def validate_ordered(rec: Rec) -> list[str]:
    out, last = [], 0
    for e in rec.events:
        if e.kv.mod_revision < last:
            out.append(f"ordered: revision {e.kv.mod_revision} after {last}")
        last = e.kv.mod_revision
    return out


def validate_unique(rec: Rec) -> list[str]:
    seen: set[tuple[int, bytes]] = set()
    out = []
    for e in rec.events:
        ident = (e.kv.mod_revision, e.kv.key)
        if ident in seen:
            out.append(f"unique: {ident} delivered twice")
        seen.add(ident)
    return out


def validate_atomic(rec: Rec) -> list[str]:
    """A revision never continues in a later response (the brief's and etcd's Atomic)."""
    out, last = [], 0
    for r in rec.responses:
        if not r.events:
            continue
        if r.events[0].kv.mod_revision <= last:
            out.append(f"atomic: revision {r.events[0].kv.mod_revision} split across responses")
        last = r.events[-1].kv.mod_revision
    return out


def validate_headers(rec: Rec, final: int) -> list[str]:
    out = []
    for r in rec.responses:
        if r.events:
            if r.watch_id != rec.w.id:
                out.append(f"header: event response with watch_id {r.watch_id} != {rec.w.id}")
            if not r.events[-1].kv.mod_revision <= r.header.revision <= final:
                out.append(f"header: revision {r.header.revision} for {r.events!r}")
    return out


def validate_bookmarkable(responses: Sequence[WatchResponse]) -> list[str]:
    out, last_event, last_progress = [], 0, 0
    for r in responses:
        for e in r.events:
            if e.kv.mod_revision <= last_progress:
                out.append(
                    f"bookmarkable: event {e.kv.mod_revision} after progress {last_progress}"
                )
            last_event = e.kv.mod_revision
        if r.progress:
            if r.header.revision < last_event or r.header.revision < last_progress:
                out.append(f"bookmarkable: progress {r.header.revision} after event {last_event}")
            last_progress = r.header.revision
    return out


def ident(e: Event) -> tuple[EventType, KeyValue]:
    return (e.type, e.kv)


def validate_reliable(rec: Rec, model: Model, last: int) -> list[str]:
    want = [ident(e) for e in model.matching(rec.spec, rec.first, last)]
    got = [ident(e) for e in rec.events]
    if want == got:
        return []
    i = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
    if i is None:
        i = min(len(want), len(got))
    return [
        f"reliable: [{rec.first}, {last}] differs at #{i}: "
        f"want {want[i : i + 3]!r} got {got[i : i + 3]!r} ({len(want)} vs {len(got)} events)"
    ]


def validate_prev_kv_and_create(rec: Rec, model: Model) -> list[str]:
    """PrevKV and IsCreate against the model (by (revision, key), independent of Reliable)."""
    by_id = {(e.kv.mod_revision, e.kv.key): e for e in model.changes}
    out = []
    for e in rec.events:
        want = by_id.get((e.kv.mod_revision, e.kv.key))
        if want is None:
            out.append(f"is-create: {e!r} is no change of the model")
            continue
        existed = want.prev_kv is not None  # the key's value at mod_revision - 1
        if e.type == EventType.PUT:
            create = e.kv.version == 1
            if create != (e.kv.create_revision == e.kv.mod_revision) or create == existed:
                out.append(f"is-create: {e!r} (key existed before: {existed})")
        if not rec.spec.prev_kv:
            if e.prev_kv is not None:
                out.append(f"prev-kv: {e!r} carries prev_kv unasked")
        elif e.prev_kv is None:
            # etcd omits prev_kv only for a creation or when mod_revision-1 was compacted
            if existed and e.kv.mod_revision - 1 >= model.compacted:
                out.append(f"prev-kv: {e!r} lacks prev_kv {want.prev_kv!r}")
        elif e.prev_kv != want.prev_kv:
            out.append(f"prev-kv: {e!r} has prev_kv, want {want.prev_kv!r}")
    return out


def validate_end(rec: Rec, model: Model, final: int, cap: int) -> list[str]:
    """How the watch ended, and the exact outcome for a consumer that never read until the
    writers were done (its buffer fills after ``cap`` matching revisions, then it must catch
    up from history unless compaction overtook it)."""
    out = []
    last = rec.last_event_rev()
    if rec.server_canceled is not None:
        out.append(f"canceled by the store: {rec.server_canceled}")
    if rec.compacted is not None:
        c = rec.compacted
        if c not in model.compactions:
            out.append(f"compacted: compact_revision {c} was never requested {model.compactions}")
        if not (c > last and c > rec.first):
            out.append(f"compacted: compact_revision {c} not beyond reached {last}/{rec.first}")
    if rec.spec.consumer != "paused" or rec.canceled_by_us:
        if rec.compacted is None and not rec.canceled_by_us:
            out += validate_reliable(rec, model, final)
        else:
            out += validate_reliable(rec, model, last)
        if not model.compactions and rec.compacted is not None:
            out.append("compacted without any compaction")
        return out
    # paused consumer: the outcome is fully determined
    c = model.compacted
    matching = model.matching(rec.spec, rec.first, final)
    revs = sorted({e.kv.mod_revision for e in matching})
    if rec.synced_at_add:
        behind = revs[cap] if len(revs) > cap else None  # where it fell out of sync
        delivered = revs[:cap] if behind is not None and behind < c else revs
    else:
        behind = rec.start_revision
        delivered = [] if behind < c else revs
    want_compacted = c if delivered is not revs else None
    if rec.compacted != want_compacted:
        out.append(
            f"paused: compacted={rec.compacted}, want {want_compacted} "
            f"(fell behind at {behind}, compactions {model.compactions})"
        )
    hi = delivered[-1] if delivered else 0
    want = [ident(e) for e in matching if e.kv.mod_revision <= hi]
    if [ident(e) for e in rec.events] != want:
        out.append(f"paused: got {len(rec.events)} events, want {len(want)} up to {hi}")
    return out


def validate(rec: Rec, model: Model, final: int, cap: int) -> list[str]:
    return (
        validate_filter(rec)
        + validate_ordered(rec)
        + validate_unique(rec)
        + validate_atomic(rec)
        + validate_headers(rec, final)
        + validate_bookmarkable(rec.responses)
        + validate_prev_kv_and_create(rec, model)
        + validate_end(rec, model, final, cap)
    )


# --- running a workload ------------------------------------------------------------------


class Runner:
    def __init__(self, store: Store, model: Model, src_seed: int) -> None:
        self.store = store
        self.model = model
        self.values = 0
        self.rng = random.Random(src_seed)

    def value(self) -> bytes:
        self.values += 1
        return b"v%d" % self.values

    def after_write(self, rev: int) -> None:
        store, model = self.store, self.model
        assert rev == model.rev == store.revision, (rev, model.rev, store.revision)
        cap = store.watches.buffer_size
        for w in store.watches.watchers:
            assert len(w.buffer) <= cap, f"{w} buffers {len(w.buffer)} > {cap}"
        store.watches._check()

    async def apply(self, op: WOp) -> None:
        store, model = self.store, self.model
        kind = op[0]
        if kind == "put":
            key = op[1]
            value = self.value()
            resp = nosuspend(store.put(key, value))
            model.put(key, value)
            model.commit()
            self.after_write(resp.header.revision)
        elif kind == "del":
            _, start, end, _turns = op
            dresp = nosuspend(store.delete(start, end))
            model.delete(start, end)
            model.commit()
            self.after_write(dresp.header.revision)
        elif kind == "txn":
            _, compares, success, failure, _turns = op
            ok = all(model.compare(*c) for c in compares)
            branch = success if ok else failure
            ops: list[list[Op]] = [[], []]
            for i, br in enumerate((success, failure)):
                for bop in br:
                    if bop[0] == "put":
                        v = self.value()
                        ops[i].append(Put(bop[1], v))
                        if br is branch:
                            model.put(bop[1], v)
                    elif bop[0] == "del":
                        ops[i].append(Delete(bop[1], bop[2]))
                        if br is branch:
                            model.delete(bop[1], bop[2])
                    else:
                        ops[i].append(Get(bop[1]))
            cmps = [Compare(k, t, r, o) for k, t, r, o in compares]
            tresp = nosuspend(store.txn(cmps, ops[0], ops[1]))
            assert tresp.succeeded == ok
            model.commit()
            self.after_write(tresp.header.revision)
        elif kind == "lease":
            _, keys, detach, turns_between, _turns = op
            lease = await store.grant(3600)
            for key in keys:
                v = self.value()
                resp = nosuspend(store.put(key, v, lease=lease.id))
                model.put(key, v, lease.id)
                model.commit()
                self.after_write(resp.header.revision)
                for _ in range(turns_between):
                    await asyncio.sleep(0)
            if detach:
                v = self.value()
                resp = nosuspend(store.put(keys[0], v))
                model.put(keys[0], v)
                model.commit()
                self.after_write(resp.header.revision)
            rev = nosuspend(store.revoke(lease.id))
            model.revoke(lease.id)
            model.commit()
            self.after_write(rev)
        elif kind == "compact":
            _, lag, physical, _turns = op
            target = model.rev - lag
            if target <= max(model.compacted, 0):
                return
            model.compactions.append(target)  # before any suspension: others see it at once
            if physical:
                await store.compact(target, physical=True)
            else:
                nosuspend(store.compact(target))
            assert store.compacted_revision >= target
        else:  # pragma: no cover
            raise AssertionError(op)

    async def writer(self, ops: list[WOp]) -> None:
        for op in ops:
            await self.apply(op)
            for _ in range(op[-1]):
                await asyncio.sleep(0)


async def quiesce(store: Store, recs: Sequence[Rec], limit: int = 1_000_000) -> None:
    """Run the loop until every consumer has received all it ever will (or ended): nothing
    buffered or left to catch up in the registry, no physical compaction running, and no
    consumer receiving anything for more loop turns than the slowest one pauses."""
    registry = store.watches
    quiet = 0
    seen = -1
    for _ in range(limit):
        await asyncio.sleep(0)
        received = sum(len(r.responses) for r in recs)
        busy = store.core.compaction_pending or any(registry.ready(w) for w in registry.watchers)
        if busy or received != seen:
            quiet = 0
            seen = received
            continue
        quiet += 1
        if quiet >= QUIET_TURNS:
            return
    raise AssertionError("watchers never settled")


#: Loop turns without any delivery that mean "nothing more is coming" (consumers pause at
#: most 8 turns between responses).
QUIET_TURNS = 50


#: A watcher of every key, with prev_kv.
ALL_KEYS = WSpec(b"\0", b"\0", "past", 0, True, (), "eager", 0, 0)


def start_revision_for(spec: WSpec, rev: int) -> int:
    if spec.start == "past":
        return max(1, rev - spec.offset)
    if spec.start == "current":
        return rev
    if spec.start == "future":
        return rev + 1 + spec.offset % 5
    return 0


async def run_workload(wl: Workload, seed: int = 0) -> None:
    async with Store(
        watch_buffer=wl.watch_buffer, compaction_batch=wl.compaction_batch, clock=ManualClock()
    ) as store:
        store.watches.catchup_revisions = wl.catchup_revisions
        tasks: list[asyncio.Task[Any]] = []
        try:
            await _run_workload(store, wl, seed, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _run_workload(
    store: Store, wl: Workload, seed: int, tasks: list[asyncio.Task[Any]]
) -> None:
    model = Model()
    runner = Runner(store, model, seed)
    for op in wl.prefill:
        await runner.apply(op)
    go = asyncio.Event()
    recs: list[Rec] = []

    async def watch(spec: WSpec, start_revision: int, into: list[Rec]) -> None:
        rec = await open_watch(store, spec, start_revision, go)
        assert rec.task is not None
        tasks.append(rec.task)
        into.append(rec)

    async def spawner() -> None:
        turn = 0
        for spec in sorted(wl.watchers, key=lambda s: s.delay):
            while turn < spec.delay:
                await asyncio.sleep(0)
                turn += 1
            await watch(spec, start_revision_for(spec, model.rev), recs)

    async def progress() -> None:
        """Mid-run progress: periodic ticks (progress_notify watchers) and requests."""
        while True:
            for _ in range(wl.progress_every):
                await asyncio.sleep(0)
            store.watches.progress_tick()
            live = [r for r in recs if r.spec.consumer != "paused" and not r.w.done]
            if live:
                await runner.rng.choice(live).w.request_progress()

    workers = [asyncio.create_task(runner.writer(ops)) for ops in wl.writers]
    workers.append(asyncio.create_task(spawner()))
    tasks += workers
    ticker = asyncio.create_task(progress()) if wl.progress_every else None
    if ticker is not None:
        tasks.append(ticker)
    await asyncio.gather(*workers)
    if ticker is not None:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    final = store.revision
    assert final == model.rev
    go.set()
    await quiesce(store, recs)
    cap = store.watches.buffer_size
    problems: list[str] = []
    for i, r in enumerate(recs):
        problems += [f"watcher #{i} {r.spec}: {p}" for p in validate(r, model, final, cap)]

    # Bookmarkable, actively: a requested progress on every live watch reports the head.
    live = [r for r in recs if r.task is not None and not r.task.done()]
    for r in live:
        await r.w.request_progress()
    await quiesce(store, recs)
    for r in live:
        i = recs.index(r)
        if not any(resp.progress and resp.header.revision == final for resp in r.responses):
            problems.append(f"watcher #{i}: requested progress at {final} never came")
        problems += [f"watcher #{i}: {p}" for p in validate_bookmarkable(r.responses)]

    # Resumable: new watches from past revisions replay exactly the changes since.
    resumed: list[Rec] = []
    oldest = max(model.compacted, 1)
    candidates = {oldest, oldest - 1, final, final + 1, runner.rng.randint(oldest, final)}
    for r in recs[: wl.resume_points]:
        candidates.add(r.last_event_rev() + 1)
    for spec_i, rev in enumerate(sorted(c for c in candidates if c >= 1)):
        base = wl.watchers[spec_i % len(wl.watchers)]
        for spec in (ALL_KEYS, replace(base, start="past", consumer="eager", delay=0)):
            await watch(spec, rev, resumed)
    await quiesce(store, resumed)
    for r in resumed:
        found = validate(r, model, final, cap)
        want_compacted = model.compacted if r.start_revision < model.compacted else None
        if r.compacted != want_compacted:
            found.append(f"resumable: compacted={r.compacted}, want {want_compacted}")
        problems += [f"resumed from {r.start_revision} {r.spec}: {p}" for p in found]

    # the model and the store agree on the final state
    want_kvs = [model.live[k] for k in sorted(model.live)]
    assert list(await store.get_all()) == want_kvs

    for r in recs + resumed:
        await r.w.cancel()
    await asyncio.gather(*(r.task for r in recs + resumed if r.task is not None))
    assert not problems, "\n".join(problems[:20])
    assert len(store.watches) == 0, "cancelled/compacted watchers left registered"
    store.watches._check()
    store.core._check()


# --- property tests ----------------------------------------------------------------------


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_watch_guarantees_hypothesis(data: st.DataObject) -> None:
    wl = gen_workload(
        Source(data=data),
        max_prefill=20,
        max_writers=3,
        max_ops=40,
        max_watchers=6,
        compact_per_mille=data.draw(st.sampled_from([0, 30, 100]), label="compactions"),
    )
    asyncio.run(run_workload(wl))


@pytest.mark.parametrize("seed", range(8))
async def test_watch_guarantees_seeded(seed: int) -> None:
    src = Source(rng=random.Random(seed))
    wl = gen_workload(
        src,
        max_prefill=60,
        max_writers=4,
        max_ops=1000,
        min_watchers=4,
        max_watchers=16,
        compact_per_mille=(0, 2, 10, 40)[seed % 4],
    )
    wl.writers = [w for w in wl.writers if w] or [[("put", b"a", 0)]]
    await run_workload(wl, seed)


@pytest.mark.parametrize("seed", range(3))
async def test_paused_watchers_with_thousands_of_revisions(seed: int) -> None:
    """Watchers that read nothing while thousands of revisions are written, then catch up
    (or find themselves overtaken by compaction), next to eager and slow ones."""
    rng = random.Random(1000 + seed)
    src = Source(rng=rng)
    writers = [[gen_op(src, (0, 1, 3)[seed]) for _ in range(1200)] for _ in range(3)]
    watchers = [gen_wspec(src, 50) for _ in range(8)]
    watchers += [
        WSpec(b"\0", b"\0", "now", 0, True, (), "paused", 0, 0),
        WSpec(b"a/", prefix_end(b"a/"), "past", 10, True, (), "paused", 0, 0),
        WSpec(b"c", b"", "now", 0, False, (), "slow", 7, 3),
    ]
    wl = Workload(
        watch_buffer=4,
        compaction_batch=rng.choice([2, 50]),
        prefill=[gen_op(src) for _ in range(30)],
        writers=writers,
        watchers=watchers,
    )
    await run_workload(wl, seed)


# --- slow consumer: bounded memory, writers never wait ------------------------------------


async def test_slow_consumer_buffer_is_bounded_and_writers_never_wait() -> None:
    n = 20_000
    cap = 4
    async with Store(watch_buffer=cap) as store, store.watch(b"k/", prefix=True) as w:
        (watcher,) = store.watches.watchers
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        turns_before = turns
        rev0 = store.revision
        for i in range(n):
            resp = nosuspend(store.put(b"k/%d" % (i % 97), b"v%d" % i))
            assert resp.header.revision == rev0 + i + 1
            assert len(watcher.buffer) <= cap
        # No loop turn ran while 20,000 revisions were written: nothing waited for the watcher.
        assert turns == turns_before
        assert len(watcher.buffer) == cap and not watcher.synced
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick

        revs: list[int] = []
        batches: list[list[int]] = []
        async for r in w.responses():
            batch = [e.kv.mod_revision for e in r.events]
            batches.append(batch)
            revs += batch
            assert len(watcher.buffer) <= cap
            if revs and revs[-1] == rev0 + n:
                break
        assert revs == list(range(rev0 + 1, rev0 + n + 1))
        # the buffered revisions first, then the history read in bounded chunks
        chunk = store.watches.catchup_revisions
        assert revs[:cap] == [rev0 + i + 1 for i in range(cap)]
        assert all(len(set(b)) <= max(cap, chunk) for b in batches)
        assert len(batches) >= (n - cap) // chunk
        assert watcher.synced
        # and it is live again
        await store.put(b"k/x", b"live")
        r = await anext(aiter(w))
        assert r.kv.value == b"live" and r.kv.mod_revision == rev0 + n + 1
        store.watches._check()
        store.core._check()


async def test_paused_watcher_overtaken_by_compaction_gets_prefix_then_error() -> None:
    cap = 4
    async with Store(watch_buffer=cap, compaction_batch=7) as store:
        w_overtaken = await store.watch(b"k", prev_kv=True)  # created at rev 1
        await store.put(b"k", b"0")  # rev 2
        w_edge = await store.watch(b"k")  # created at rev 2
        w_past = await store.watch(b"k", start_revision=2)
        for i in range(1, 3000):
            await store.put(b"k", b"%d" % i)  # revs 3..3001
        assert store.revision == 3001
        # w_overtaken buffered revs 2..5 and fell behind at 6; w_edge buffered 3..6 and fell
        # behind at 7; w_past never read and sits at 2.
        await store.compact(7, physical=True)
        got = []
        with pytest.raises(WatchCompactedError) as exc:
            async for ev in w_overtaken:
                got.append(ev)
        assert exc.value.compact_revision == 7
        assert [e.kv.mod_revision for e in got] == [2, 3, 4, 5]
        assert got[0].prev_kv is None and got[1].prev_kv == got[0].kv
        with pytest.raises(WatchCompactedError) as exc:
            await anext(aiter(w_past))
        assert exc.value.compact_revision == 7
        # not overtaken: it had reached exactly the compacted revision
        revs = []
        async for ev in w_edge:
            revs.append(ev.kv.mod_revision)
            if ev.kv.mod_revision == 3001:
                break
        assert revs == list(range(3, 3002))
        await w_edge.cancel()
        w_at = await store.watch(b"k", start_revision=7)
        revs = []
        async for ev in w_at:
            revs.append(ev.kv.mod_revision)
            if ev.kv.mod_revision == 3001:
                break
        assert revs == list(range(7, 3002))
        await w_at.cancel()
        assert len(store.watches) == 0
        store.watches._check()
        store.core._check()


# --- etcd-io/etcd#19179: watch from the revision of a compaction --------------------------


@pytest.mark.parametrize("phase", ["logical", "in-progress", "physical"])
async def test_watch_from_compaction_revision_replays_it_etcd_19179(phase: str) -> None:
    """A key whose only remaining revision is a tombstone at the compaction revision R: a
    watch from R must still replay that DELETE (etcd lost it when resuming compaction,
    etcd-io/etcd#19179, and before 3.4.34/3.5.16 dropped it, #18089); from R-1 it is
    compacted."""
    async with Store(compaction_batch=2) as store:
        for i in range(5):
            await store.put(b"/key-%d" % i, b"%d" % i)  # revs 2..6
        # rev 7: the delete of /key-0 together with a put, so R holds two changes
        txn = await store.txn([], [Delete(b"/key-0"), Put(b"/key-9", b"9")])
        r = txn.header.revision
        assert r == 7
        await store.put(b"/key-0", b"again")  # rev 8: a creation after the tombstone
        await store.put(b"/key-1", b"1b")  # rev 9

        early_at = await store.watch(b"/key-", prefix=True, start_revision=r, prev_kv=True)
        early_before = await store.watch(b"/key-0", start_revision=r - 1)
        await store.compact(r, physical=phase == "physical")
        if phase == "in-progress":
            await asyncio.sleep(0)
            assert store.core.compaction_pending  # several steps of 2 changes
        elif phase == "logical":
            assert store.core.compaction_pending

        async def replay(w: Any, until: int) -> list[Event]:
            evs: list[Event] = []
            async for ev in w:
                evs.append(ev)
                if ev.kv.mod_revision >= until:
                    break
            await w.cancel()
            return evs

        late_at = await store.watch(b"/key-", prefix=True, start_revision=r, prev_kv=True)
        for w in (early_at, late_at):
            evs = await replay(w, 9)
            assert [(e.type, e.kv.key, e.kv.mod_revision) for e in evs] == [
                (EventType.DELETE, b"/key-0", 7),
                (EventType.PUT, b"/key-9", 7),
                (EventType.PUT, b"/key-0", 8),
                (EventType.PUT, b"/key-1", 9),
            ]
            # prev_kv of the delete is at r-1, compacted: etcd omits it; creations have none
            assert [e.prev_kv for e in evs[:3]] == [None, None, None]
            assert evs[3].prev_kv is not None and evs[3].prev_kv.value == b"1"
        only_key = await store.watch(b"/key-0", start_revision=r)
        assert [(e.type, e.kv.mod_revision) for e in await replay(only_key, 8)] == [
            (EventType.DELETE, 7),
            (EventType.PUT, 8),
        ]
        for w in (early_before, await store.watch(b"/key-0", start_revision=r - 1)):
            with pytest.raises(WatchCompactedError) as exc:
                await anext(aiter(w))
            assert exc.value.compact_revision == r
        # reads agree: the key is absent at r, present at 8
        assert await store.get(b"/key-0", revision=r) is None
        got = await store.get(b"/key-0", revision=8)
        assert got is not None and got.value == b"again"
        while store.core.compaction_pending:
            await asyncio.sleep(0)
        store.core._check()
        assert len(store.watches) == 0


# --- progress requests -------------------------------------------------------------------


async def test_progress_requested_while_buffer_full_is_delivered() -> None:
    async with Store(watch_buffer=2) as store, store.watch(b"k") as w:
        await store.put(b"k", b"1")
        await store.put(b"k", b"2")  # buffer full (2 batches), still synced
        await w.request_progress()
        got: list[WatchResponse] = []

        async def reader() -> None:
            async for resp in w.responses():
                got.append(resp)

        task = asyncio.create_task(reader())
        for _ in range(50):
            await asyncio.sleep(0)
        await w.cancel()
        await task
        assert [e.kv.mod_revision for r in got for e in r.events] == [2, 3]
        assert any(r.progress and r.header.revision == 3 for r in got), got


async def test_progress_request_while_catching_up_waits_for_the_head() -> None:
    async with Store(watch_buffer=2) as store:
        for i in range(50):
            await store.put(b"k", b"%d" % i)
        async with store.watch(b"k", start_revision=2) as w:
            await w.request_progress()
            seen: list[WatchResponse] = []
            async for resp in w.responses():
                seen.append(resp)
                if resp.progress:
                    break
            events = [e.kv.mod_revision for r in seen for e in r.events]
            assert events == list(range(2, 52))
            assert seen[-1].header.revision == 51
            assert validate_bookmarkable(seen) == []
