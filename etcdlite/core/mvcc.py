"""The MVCC key-value store: revisions, key index, change log, transactions, compaction.

Synchronous and deterministic: no asyncio, no protobuf, no clock (time comes in as an
argument). One caller owns an instance, so every operation runs to completion, which is
exactly etcd's linearizable order.

Data layout (etcd's design, in Python):

* ``_index``: a ``SortedDict`` key → history, a list of that key's ``KeyValue`` revisions in
  revision order. A *tombstone* (``version == 0``, only ``key`` and ``mod_revision`` set: the
  very object a DELETE event carries) ends a generation, like an empty generation in etcd's
  ``keyIndex``; the next put starts a new one. Point reads are a dict lookup, new keys cost
  O(log n), ranges bisect the sorted keys, historical reads bisect a key's history.
* ``_log``: every change in (revision, position-in-txn) order, the same ``KeyValue`` objects
  the index holds (nothing is copied). It serves watch replay and tells compaction which
  keys to trim.
* ``_dead``: a ``SortedList`` of the keys of ``_index`` whose history ends in a tombstone
  (deleted, not yet compacted away). The keys live *now* are ``_index`` minus ``_dead``, so
  the live count of a range at the current revision is two bisections on each
  (:meth:`MVCC.count`), and a ``limit`` range walks only as far as it returns, jumping over
  runs of dead keys by bisection. The complement is kept rather than the live set because
  the hot path, a put of a new key, then costs nothing extra; only deletes, re-creations
  and compaction of deleted keys touch it. etcd itself counts by walking its key index.

Compaction is logical at once (reads below it fail) and physical in bounded steps
(:meth:`MVCC.compact_step`) so a large compaction never stalls the caller's loop.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from operator import attrgetter

from sortedcontainers import SortedDict, SortedList

from ..errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    TooManyOpsError,
    ValueProvidedError,
)
from ..ops import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Op,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from ..types import (
    DeleteRangeResponse,
    KeyValue,
    PutResponse,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
    TxnResponse,
)
from .lessor import LeaseEntry, Lessor

__all__ = ["DEFAULT_MAX_TXN_OPS", "MVCC", "CommitHook"]

#: etcd's ``--max-txn-ops`` default.
DEFAULT_MAX_TXN_OPS = 128

_mod_rev = attrgetter("mod_revision")

#: Called after every revision with ``(revision, changes)``: the revision's KeyValues (and
#: tombstones) in order.
CommitHook = Callable[[int, Sequence[KeyValue]], None]

_SORT_KEYS: dict[int, Callable[[KeyValue], object]] = {
    SortTarget.KEY: attrgetter("key"),
    SortTarget.VERSION: attrgetter("version"),
    SortTarget.CREATE: attrgetter("create_revision"),
    SortTarget.MOD: attrgetter("mod_revision"),
    SortTarget.VALUE: attrgetter("value"),
}


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether ``key`` is in etcd's ``[start, end)`` (empty end: the single key)."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class MVCC:
    """etcd's MVCC store and KV apply rules in one synchronous object.

    Every public method either completes or raises before changing anything.
    """

    #: Dead keys in a row a walk steps over one by one before it jumps over their run
    #: (tests set 0 to make every dead key jump).
    dead_steps = 8

    def __init__(
        self,
        *,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        lessor: Lessor | None = None,
        cluster_id: int = 0,
        member_id: int = 0,
        raft_term: int = 0,
    ) -> None:
        self.max_txn_ops = max_txn_ops
        self.cluster_id = cluster_id
        self.member_id = member_id
        self.raft_term = raft_term
        self.lessor = lessor if lessor is not None else Lessor()
        self._index: SortedDict = SortedDict()
        # Keys of _index whose last entry is a tombstone (see the module docstring).
        self._dead: SortedList = SortedList()
        self._log: list[KeyValue] = []
        self._rev = 1
        # etcd's compactMainRev: -1 until the first compaction, so Compact(0) works once.
        self._compacted = -1
        # Physical compaction lags the logical one: log entries below this are trimmed.
        self._trimmed = -1
        self._hooks: list[CommitHook] = []
        self._header_cache = ResponseHeader(cluster_id, member_id, -1, raft_term)
        # Set while a write txn runs: the revision it writes and whether it changed anything.
        self._wrev = 0
        self._dirty = False

    # --- introspection ----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The current revision (1 on a fresh store)."""
        return self._rev

    @property
    def compacted_revision(self) -> int:
        """The revision of the last compaction, -1 if none yet (etcd's compactMainRev)."""
        return self._compacted

    @property
    def compaction_pending(self) -> bool:
        """Whether :meth:`compact_step` still has physical work to do."""
        return self._trimmed < self._compacted

    def __len__(self) -> int:
        """Number of keys in the index, live or not yet compacted away."""
        return len(self._index)

    def header(self, revision: int | None = None) -> ResponseHeader:
        """A full response header (ids and term) at ``revision`` (default: current).

        Headers are read-only, so the one of the latest revision asked for is reused."""
        rev = self._rev if revision is None else revision
        cached = self._header_cache
        if cached.revision == rev:
            return cached
        h = self._header_cache = ResponseHeader(
            self.cluster_id, self.member_id, rev, self.raft_term
        )
        return h

    @property
    def changes(self) -> Sequence[KeyValue]:
        """Every change kept (since the compaction point), in revision order: the change
        log watches replay from. Read-only: the core owns it."""
        return self._log

    def kept_below_compaction(self) -> Iterable[KeyValue]:
        """The revisions below the compaction point that compaction keeps (each key's last
        one, unless a tombstone) and the change log no longer holds."""
        first = self._log[0].mod_revision if self._log else self._rev + 1
        for hist in self._index.values():
            for kv in hist:
                if kv.mod_revision >= first:
                    break
                yield kv

    def is_latest_at(self, kv: KeyValue, revision: int) -> bool:
        """Whether ``kv`` is its key's newest revision at ``revision`` and not a deletion."""
        hist = self._index.get(kv.key)
        if hist is None or not kv.version:
            return False
        i = bisect_right(hist, revision, key=_mod_rev) - 1
        return i >= 0 and hist[i] is kv

    def read_revision(self, revision: int) -> int:
        """The revision a read at ``revision`` sees (0 or less: the current one); raises
        ``FutureRevisionError``/``CompactedError`` as etcd does."""
        return self._check_read_rev(revision)

    def add_hook(self, hook: CommitHook) -> None:
        self._hooks.append(hook)

    def remove_hook(self, hook: CommitHook) -> None:
        self._hooks.remove(hook)

    # --- reads ------------------------------------------------------------------------

    def _check_read_rev(self, revision: int) -> int:
        rev = self._rev
        if revision > rev:
            raise FutureRevisionError()
        if revision <= 0:
            return rev
        if revision < self._compacted:
            raise CompactedError()
        return revision

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The live KeyValue of ``key`` at ``revision`` (0: now), or ``None``."""
        if not key:
            raise EmptyKeyError()
        rev = self._check_read_rev(revision)
        hist = self._index.get(key)
        if hist is None:
            return None
        kv = hist[-1] if rev >= self._rev else _at(hist, rev)
        return kv if kv is not None and kv.version else None

    def _live(self, key: bytes, end: bytes, rev: int) -> list[KeyValue]:
        """Live KeyValues in ``[key, end)`` at ``rev`` (current while a txn writes)."""
        index = self._index
        if not end:
            hist = index.get(key)
            keys: Iterable[bytes] = () if hist is None else (key,)
        elif end == b"\0":
            keys = index.keys()[index.bisect_left(key) :]
        elif end <= key:
            return []
        else:
            # slicing the sorted keys copies whole sublists; irange yields key by key
            keys = index.keys()[index.bisect_left(key) : index.bisect_left(end)]
        histories = map(index.__getitem__, keys)
        # During a write the histories' tails are at the revision being written.
        if rev >= self._now():
            return [kv for kv in [h[-1] for h in histories] if kv.version]
        return [kv for kv in [_at(h, rev) for h in histories] if kv is not None and kv.version]

    # --- the live-key index: counts and limited walks at the current revision ---------

    def count(self, key: bytes, end: bytes = b"") -> int:
        """How many keys are live now in etcd's ``[key, end)``: O(log n), by bisecting
        the key index and the dead keys (during a write txn: including its writes so far)."""
        index = self._index
        if not end:
            hist = index.get(key)
            return 1 if hist is not None and hist[-1].version else 0
        dead = self._dead
        lo: int = index.bisect_left(key)
        dlo: int = dead.bisect_left(key)
        if end == b"\0":
            return (len(index) - lo) - (len(dead) - dlo)
        if end <= key:
            return 0
        hi: int = index.bisect_left(end)
        dhi: int = dead.bisect_left(end)
        return (hi - lo) - (dhi - dlo)

    def live_keys(self) -> Iterator[bytes]:
        """The keys live now, in key order (the key index minus the dead keys)."""
        return (kv.key for kv in self._walk(b"\0", b"\0"))

    def _now(self) -> int:
        """The revision the tails of the histories are at: the one being written once a
        write txn has changed something, else the current one."""
        return self._wrev if self._wrev and self._dirty else self._rev

    def _walk(self, key: bytes, end: bytes, reverse: bool = False) -> Iterator[KeyValue]:
        """The KeyValues live now in ``[key, end)``, lazily, in key order (``reverse``:
        descending). A few dead keys in a row are stepped over; a longer run of them is
        jumped over by galloping bisection (:meth:`_dead_run`), so ``k`` results cost
        O(k log² n) whatever lies between them. The caller must not write while walking."""
        index = self._index
        if not end:
            hist = index.get(key)
            if hist is not None and hist[-1].version:
                yield hist[-1]
            return
        if end != b"\0" and end <= key:
            return
        lo = index.bisect_left(key)
        hi = len(index) if end == b"\0" else index.bisect_left(end)
        histories = index.__getitem__
        steps = self.dead_steps
        while lo < hi:
            pos = hi - 1 if reverse else lo
            step = -1 if reverse else 1
            run = 0
            for k in index.islice(lo, hi, reverse=reverse):
                kv = histories(k)[-1]
                if kv.version:
                    yield kv
                    run = 0
                elif run < steps:
                    run += 1
                else:
                    n = self._dead_run(k, pos, lo, hi, reverse)
                    if reverse:
                        hi = pos - n + 1
                    else:
                        lo = pos + n
                    break
                pos += step
            else:
                return

    def _dead_run(self, k: bytes, pos: int, lo: int, hi: int, reverse: bool) -> int:
        """The length of the run of dead keys that starts at the dead key ``k``, position
        ``pos`` of the index, going up (or down) within positions ``[lo, hi)``.

        ``_dead`` is a subset of the index's keys in the same order, so with ``j`` the
        position of ``k`` in it, the index key ``t`` steps on equals the dead key ``t``
        steps on exactly while no live key came between: a monotone test, searched by
        galloping then bisection in O(log² n) (positional access is O(log n))."""
        keys = self._index.keys()
        dead = self._dead
        j: int = dead.bisect_left(k)
        if reverse:
            limit = min(pos - lo, j) + 1

            def same(t: int) -> bool:
                return bool(keys[pos - t] == dead[j - t])
        else:
            limit = min(hi - pos, len(dead) - j)

            def same(t: int) -> bool:
                return bool(keys[pos + t] == dead[j + t])

        good, step = 0, 1  # same(0) holds: k itself is dead
        while True:
            t = good + step
            if t >= limit:
                bad = limit
                break
            if not same(t):
                bad = t
                break
            good, step = t, step * 2
        while bad - good > 1:
            mid = (good + bad) // 2
            if same(mid):
                good = mid
            else:
                bad = mid
        return bad

    # --- Range ------------------------------------------------------------------------

    def range(self, req: RangeRequest) -> RangeResponse:
        """etcd's Range, in the order of its apply code: revision checks, the live keys of
        the window and their count (taken before filters, as etcd counts), then the
        mod/create filters, the sort and the limit.

        At the current revision ``count`` comes from the live-key index in O(log n), and a
        ``limit`` range in key order (ascending or descending, filtered or not, or a sort
        target without an order, which sorts only the first ``limit + 1`` keys) reads only
        as many keys as it needs: etcd walks every key in range to count them. Two cases
        stay linear in the keys in range because the answer depends on all of them: a
        sort by a target other than the key with an explicit order or with filters, and any
        read at a past revision (each key's history is bisected)."""
        if not req.key:
            raise EmptyKeyError()
        return self._range(req, self._rev, self.header())

    def _range(self, req: RangeRequest, cur: int, header: ResponseHeader) -> RangeResponse:
        revision = req.revision
        if revision > cur:
            raise FutureRevisionError()
        rev = cur if revision <= 0 else revision
        if rev < self._compacted:
            raise CompactedError()
        order = req.sort_order
        limit = req.limit
        filtered = (
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        if rev < self._now():
            kvs = self._live(req.key, req.range_end, rev)
            count = len(kvs)
            if req.count_only:
                return RangeResponse(header, [], False, count)
        else:
            count = self.count(req.key, req.range_end)
            if req.count_only:
                return RangeResponse(header, [], False, count)
            kvs = self._fetch(req, rev, bool(filtered))
        if limit > 0 and order == SortOrder.NONE and not filtered:
            # etcd fetches limit+1 keys in key order *before* sorting when no sort order is
            # given, so a sort_target alone sorts only that window (real etcd behaviour).
            del kvs[limit + 1 :]
        if filtered:
            kvs = [kv for kv in kvs if _passes(kv, req)]
        target = req.sort_target
        if target != SortTarget.KEY and order == SortOrder.NONE:
            order = SortOrder.ASCEND
        if order in (SortOrder.ASCEND, SortOrder.DESCEND):
            sort_key = _SORT_KEYS.get(target)
            if sort_key is not None and not (
                target == SortTarget.KEY and order == SortOrder.ASCEND
            ):
                kvs.sort(key=sort_key, reverse=order == SortOrder.DESCEND)  # type: ignore[arg-type]
        more = False
        if 0 < limit < len(kvs):
            del kvs[limit:]
            more = True
        if req.keys_only:
            kvs = [
                KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                for kv in kvs
            ]
        return RangeResponse(header, kvs, more, count)

    def _fetch(self, req: RangeRequest, rev: int, filtered: bool) -> list[KeyValue]:
        """The live KeyValues now that :meth:`_range` needs to give etcd's answer: with a
        limit in key order, the first ``limit + 1`` (that pass the filters); else all."""
        limit = req.limit
        if limit > 0:
            order = req.sort_order
            if order == SortOrder.NONE and not filtered:
                # etcd's limit + 1 window in key order (a sort target sorts only that)
                return list(islice(self._walk(req.key, req.range_end), limit + 1))
            if req.sort_target == SortTarget.KEY or order not in _SORT_ORDERS:
                # Key order, either way, or an unknown order, which means no sort (3.4).
                walk = self._walk(req.key, req.range_end, reverse=order == SortOrder.DESCEND)
                if filtered:
                    walk = (kv for kv in walk if _passes(kv, req))
                return list(islice(walk, limit + 1))
        return self._live(req.key, req.range_end, rev)

    # --- writes -----------------------------------------------------------------------

    def put(
        self,
        key: bytes,
        value: bytes,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> PutResponse:
        """etcd's Put: validation in etcd's order, then one new revision."""
        if not key:
            raise EmptyKeyError()
        if ignore_value and value:
            raise ValueProvidedError()
        if ignore_lease and lease:
            raise LeaseProvidedError()
        if lease and lease not in self.lessor:
            if type(lease) is not int or not -(1 << 63) <= lease < 1 << 63:
                # over gRPC it would not even encode (2**64 reads as 0): say so
                raise ValueError(f"lease id must be an int64, got {lease!r}")
            raise LeaseNotFoundError()
        rev = self._rev + 1
        if not (lease or ignore_value or ignore_lease):
            # The hot path: a plain put (the common case), inlined.
            hist = self._index.get(key)
            prev: KeyValue | None = None
            if hist is None:
                kv = KeyValue(key, rev, rev, 1, value, 0)
                self._index[key] = [kv]
            else:
                prev = hist[-1]
                if prev.version:
                    kv = KeyValue(key, prev.create_revision, rev, prev.version + 1, value, 0)
                    if prev.lease:
                        self.lessor.detach(prev.lease, key)  # a plain put detaches
                else:
                    prev = None
                    kv = KeyValue(key, rev, rev, 1, value, 0)
                    self._dead.remove(key)  # re-created
                hist.append(kv)
            self._log.append(kv)
            self._rev = rev
            if self._hooks:
                changes = (kv,)
                for hook in self._hooks:
                    hook(rev, changes)
            return PutResponse(self.header(rev), prev if prev_kv else None)
        self._wrev = rev
        self._dirty = False
        start = len(self._log)
        try:
            prev = self._put(key, value, lease, ignore_value, ignore_lease)
        finally:
            self._wrev = 0
        self._commit(rev, start)
        return PutResponse(self.header(rev), prev if prev_kv else None)

    def _put(
        self, key: bytes, value: bytes, lease: int, ignore_value: bool, ignore_lease: bool
    ) -> KeyValue | None:
        """Write one put at ``self._wrev``; returns the previous live KeyValue."""
        rev = self._wrev
        hist = self._index.get(key)
        prev = hist[-1] if hist is not None else None
        if prev is not None and not prev.version:
            prev = None
        if prev is None:
            if ignore_value or ignore_lease:
                raise KeyNotFoundError()
        else:
            if ignore_value:
                value = prev.value
            if ignore_lease:
                lease = prev.lease
        if prev is None:
            kv = KeyValue(key, rev, rev, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, rev, prev.version + 1, value, lease)
        old_lease = prev.lease if prev is not None else 0
        if old_lease != lease:
            if old_lease:
                self.lessor.detach(old_lease, key)
            if lease:
                self.lessor.attach(lease, key)
        if hist is None:
            self._index[key] = [kv]
        else:
            if not hist[-1].version:
                self._dead.remove(key)  # re-created
            hist.append(kv)
        self._log.append(kv)
        self._dirty = True
        return prev

    def delete_range(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        """etcd's DeleteRange: every live key in range, one revision, key order."""
        if not req.key:
            raise EmptyKeyError()
        rev = self._rev + 1
        self._wrev = rev
        self._dirty = False
        start = len(self._log)
        try:
            deleted, prev = self._delete(req.key, req.range_end)
        finally:
            self._wrev = 0
        if not deleted:
            return DeleteRangeResponse(self.header())
        self._commit(rev, start)
        return DeleteRangeResponse(self.header(rev), deleted, prev if req.prev_kv else [])

    def _delete(self, key: bytes, end: bytes) -> tuple[int, list[KeyValue]]:
        rev = self._wrev
        victims = self._live(key, end, rev)
        index = self._index
        log = self._log
        lessor = self.lessor
        for kv in victims:
            tomb = KeyValue(kv.key, 0, rev, 0, b"", 0)
            index[kv.key].append(tomb)
            log.append(tomb)
            if kv.lease:
                lessor.detach(kv.lease, kv.key)
        if victims:
            dead = self._dead
            if len(victims) == 1:
                dead.add(victims[0].key)
            else:
                dead.update([kv.key for kv in victims])
            self._dirty = True
        return len(victims), victims

    def _commit(self, rev: int, start: int) -> None:
        self._rev = rev
        if self._hooks:
            changes = self._log[start:]
            for hook in self._hooks:
                hook(rev, changes)

    # --- transactions -----------------------------------------------------------------

    def txn(self, req: TxnRequest) -> TxnResponse:
        """etcd's Txn: static checks, compares on the pre-txn state, data checks of the
        chosen path, then the ops in order with one shared revision."""
        self._check_txn(req, self.max_txn_ops)
        _check_intervals(req.success)
        _check_intervals(req.failure)
        path: list[bool] = []
        self._choose_path(req, path)
        cur = self._rev
        deleted: list[tuple[bytes, bytes]] = []
        self._check_path(req, path, 0, lambda op: self._check_put(op, deleted))
        self._check_path(req, path, 0, self._check_range_rev)
        self._wrev = cur + 1
        self._dirty = False
        start = len(self._log)
        try:
            resp, _ = self._apply_txn(req, path, 0)
        finally:
            self._wrev = 0
        rev = cur
        if self._dirty:
            rev = cur + 1
            self._commit(rev, start)
        resp.header = self.header(rev)
        return resp

    def _check_txn(self, req: TxnRequest, max_ops: int) -> None:
        opc = max(len(req.compare), len(req.success), len(req.failure))
        if opc > max_ops:
            raise TooManyOpsError()
        for cmp in req.compare:
            if not isinstance(cmp, Compare):
                raise TypeError(f"txn compare must be a Compare, not {type(cmp).__name__}")
            if not cmp.key:
                raise EmptyKeyError()
        for op in (*req.success, *req.failure):
            self._check_op(op, max_ops - opc)

    def _check_op(self, op: Op | None, max_ops: int) -> None:
        if isinstance(op, PutRequest):
            if not op.key:
                raise EmptyKeyError()
            if op.ignore_value and op.value:
                raise ValueProvidedError()
            if op.ignore_lease and op.lease:
                raise LeaseProvidedError()
        elif isinstance(op, RangeRequest | DeleteRangeRequest):
            if not op.key:
                raise EmptyKeyError()
        elif isinstance(op, TxnRequest):
            self._check_txn(op, max_ops)
        elif op is None:
            raise KeyNotFoundError()  # etcd's answer to an empty RequestOp
        else:
            # Not something a gRPC client could send: a programming error, said so.
            raise TypeError(
                f"txn ops must be Get/Put/Delete/Txn (or None), not {type(op).__name__}"
            )

    def _choose_path(self, req: TxnRequest, path: list[bool]) -> None:
        """Depth-first branch choices of this txn and every nested txn that would run."""
        ok = all(self._compare(c) for c in req.compare)
        path.append(ok)
        for op in req.success if ok else req.failure:
            if isinstance(op, TxnRequest):
                self._choose_path(op, path)

    def _compare(self, cmp: Compare) -> bool:
        kvs = self._live(cmp.key, cmp.range_end, self._rev)
        if not kvs:
            if cmp.target == CompareTarget.VALUE:
                return False
            return _compare_kv(cmp, None)
        return all(_compare_kv(cmp, kv) for kv in kvs)

    def _check_path(
        self, req: TxnRequest, path: list[bool], i: int, check: Callable[[Op], None]
    ) -> int:
        """Apply ``check`` to every op the chosen path would run; returns the next index."""
        ops = req.success if path[i] else req.failure
        i += 1
        for op in ops:
            if isinstance(op, TxnRequest):
                i = self._check_path(op, path, i, check)
            elif op is not None:
                check(op)
        return i

    def _check_put(self, op: Op, deleted: list[tuple[bytes, bytes]]) -> None:
        """etcd's put data check on the chosen path, walked in order. ``deleted`` collects
        the delete ranges seen so far: an ``ignore_*`` put of a key that an earlier delete of
        the same txn removed (only a ``b"\\0"``-ended delete gets past the duplicate-key
        rule) has no previous value. etcd panics there; etcdlite refuses the whole txn."""
        if isinstance(op, DeleteRangeRequest):
            deleted.append((op.key, op.range_end))
            return
        if not isinstance(op, PutRequest):
            return
        if op.ignore_value or op.ignore_lease:
            hist = self._index.get(op.key)
            if (
                hist is None
                or not hist[-1].version
                or any(_in_range(op.key, k, e) for k, e in deleted)
            ):
                raise KeyNotFoundError()
        if op.lease and op.lease not in self.lessor:
            raise LeaseNotFoundError()

    def _check_range_rev(self, op: Op) -> None:
        if not isinstance(op, RangeRequest) or op.revision == 0:
            return
        if op.revision > self._rev:
            raise FutureRevisionError()
        if op.revision < self._compacted:
            raise CompactedError()

    def _apply_txn(self, req: TxnRequest, path: list[bool], i: int) -> tuple[TxnResponse, int]:
        ok = path[i]
        i += 1
        responses: list[RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse] = []
        wrev = self._wrev
        for op in req.success if ok else req.failure:
            if isinstance(op, RangeRequest):
                cur = wrev if self._dirty else wrev - 1
                responses.append(self._range(op, cur, ResponseHeader(revision=cur)))
            elif isinstance(op, PutRequest):
                prev = self._put(op.key, op.value, op.lease, op.ignore_value, op.ignore_lease)
                responses.append(
                    PutResponse(ResponseHeader(revision=wrev), prev if op.prev_kv else None)
                )
            elif isinstance(op, DeleteRangeRequest):
                deleted, prevs = self._delete(op.key, op.range_end)
                responses.append(
                    DeleteRangeResponse(
                        ResponseHeader(revision=wrev if self._dirty else wrev - 1),
                        deleted,
                        prevs if op.prev_kv else [],
                    )
                )
            else:
                assert isinstance(op, TxnRequest)
                sub, i = self._apply_txn(op, path, i)
                responses.append(sub)
        return TxnResponse(ResponseHeader(), ok, responses), i

    # --- leases -----------------------------------------------------------------------

    def grant(self, ttl: int, lease_id: int, now: float) -> LeaseEntry:
        return self.lessor.grant(ttl, lease_id, now)

    def revoke(self, lease_id: int) -> int:
        """Revoke a lease, deleting its keys in one revision (key order); returns the
        revision after it (bumped only if the lease had live keys)."""
        entry = self.lessor.revoke(lease_id)
        if not entry.keys:
            return self._rev
        rev = self._rev + 1
        self._wrev = rev
        self._dirty = False
        start = len(self._log)
        try:
            for key in sorted(entry.keys):
                self._delete(key, b"")
        finally:
            self._wrev = 0
        if self._dirty:
            self._commit(rev, start)
        return self._rev

    # --- compaction -------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        """Logical compaction: reads below ``revision`` fail from now on. The physical work
        is done by :meth:`compact_step` (or :meth:`compact_all`)."""
        if revision > self._rev:
            raise FutureRevisionError()
        if revision <= self._compacted:
            raise CompactedError()
        self._compacted = revision

    def compact_step(self, budget: int = 10_000) -> bool:
        """Trim up to ``budget`` changes below the compacted revision; True when done.

        For each changed key keep only what reads at or after the compacted revision need:
        its last revision at or below it (dropped if that is a tombstone below it) and all
        later ones. A tombstone *at* the compacted revision stays in the change log, so a
        watch from that revision still replays the DELETE (etcd-io/etcd#18089, fixed in
        3.4.34/3.5.16; 3.4.23 drops it).
        """
        if budget <= 0:
            raise ValueError("compaction budget must be positive")
        target = self._compacted
        log = self._log
        n = min(budget, bisect_left(log, target, key=_mod_rev))
        if n <= 0:
            self._trimmed = target
            return True
        index = self._index
        for key in {kv.key for kv in log[:n]}:
            hist = index.get(key)
            if hist is None:
                continue
            i = bisect_right(hist, target, key=_mod_rev) - 1
            if i >= 0 and not hist[i].version:
                i += 1
            if i >= len(hist):
                # Only a history ending in a tombstone goes entirely: the key was dead.
                del index[key]
                self._dead.remove(key)
            elif i > 0:
                del hist[:i]
        del log[:n]
        done = not log or log[0].mod_revision >= target
        if done:
            self._trimmed = target
        return done

    def compact_all(self) -> None:
        while not self.compact_step(1 << 30):
            pass

    def changes_since(self, revision: int) -> Sequence[KeyValue]:
        """The change log from ``revision`` on (for watch replay); revision ≥ compacted."""
        log = self._log
        return log[bisect_left(log, revision, key=_mod_rev) :]

    # --- durability: what a log replays and a snapshot holds ---------------------------

    def apply_changes(
        self, revision: int, changes: Iterable[tuple[bytes, bytes | None, int]]
    ) -> None:
        """Replay one committed revision from a durable log: ``(key, value, lease)`` per change
        in order, ``value`` ``None`` for a delete. The changes go through the same write paths
        as the original, so versions, create revisions and lease attachments come out the same.

        Raises ``ValueError`` (changing nothing) if ``revision`` is not the next one; a change
        that cannot apply (a delete of a missing key, an unknown lease) raises ``ValueError``
        too, with the store then unusable: the log that produced it is corrupt.
        """
        if revision != self._rev + 1:
            raise ValueError(f"revision {revision} does not follow {self._rev}")
        self._wrev = revision
        start = len(self._log)
        try:
            for key, value, lease in changes:
                if value is None:
                    if not self._delete(key, b"")[0]:
                        raise ValueError(f"revision {revision} deletes a missing key {key!r}")
                else:
                    if lease and lease not in self.lessor:
                        raise ValueError(f"revision {revision} attaches an unknown lease {lease}")
                    self._put(key, value, lease, False, False)
        finally:
            self._wrev = 0
        if len(self._log) == start:
            raise ValueError(f"revision {revision} has no changes")
        self._commit(revision, start)

    def apply_put(self, revision: int, key: bytes, value: bytes) -> None:
        """:meth:`apply_changes` for the common revision, one put with no lease (the put
        hot path without a response, for recovery speed)."""
        self.apply_puts(revision, (key,), (value,))

    def apply_puts(self, revision: int, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """:meth:`apply_put` of ``keys[i]``, ``values[i]`` at ``revision + i``, in one call:
        a recovery's run of single puts (most of a log) without a method call and its
        attribute lookups per revision. Raises ``ValueError`` (changing nothing) if
        ``revision`` is not the next one or the lists differ in length."""
        if revision != self._rev + 1:
            raise ValueError(f"revision {revision} does not follow {self._rev}")
        if len(keys) != len(values):
            raise ValueError("a key without a value")
        index_get = self._index.get
        index = self._index
        log_append = self._log.append
        hooks = self._hooks  # nobody watches a recovery; kept exact for anyone who does
        make = KeyValue
        rev = revision
        for key, value in zip(keys, values, strict=True):
            hist = index_get(key)
            if hist is None:
                kv = make(key, rev, rev, 1, value, 0)
                index[key] = [kv]
            else:
                prev = hist[-1]
                if prev.version:
                    kv = make(key, prev.create_revision, rev, prev.version + 1, value, 0)
                    if prev.lease:
                        self.lessor.detach(prev.lease, key)
                else:
                    kv = make(key, rev, rev, 1, value, 0)
                    self._dead.remove(key)  # re-created
                hist.append(kv)
            log_append(kv)
            if hooks:
                self._rev = rev  # as a hook sees it after any one revision
                for hook in hooks:
                    hook(rev, (kv,))
            rev += 1
        self._rev = rev - 1

    def dump_base(self, below: int, chunk: int) -> Iterator[list[KeyValue]]:
        """The KeyValues older than the change log (``mod_revision < below``, the log's first
        revision), key by key, in lists of about ``chunk``: with :meth:`dump_log`, the whole
        state for a snapshot. Writes may run between chunks (what they add is not older than
        the log); :meth:`compact_step` must not until the iteration ends."""
        index = self._index
        after: bytes | None = None
        while True:
            keys = list(islice(index.irange(after, None, (False, True)), chunk))
            if not keys:
                return
            out: list[KeyValue] = []
            for key in keys:
                for kv in index[key]:
                    if kv.mod_revision >= below:
                        break
                    out.append(kv)
            after = keys[-1]
            yield out

    def dump_log(self, end: int, chunk: int) -> Iterator[list[KeyValue]]:
        """The change log's first ``end`` entries (``end``: its length when the snapshot began)
        in lists of ``chunk``; the same rule about :meth:`compact_step` as :meth:`dump_base`."""
        log = self._log
        for i in range(0, end, chunk):
            yield log[i : min(i + chunk, end)]

    @property
    def log_length(self) -> int:
        """Entries in the change log (where :meth:`dump_log` ends for the state now)."""
        return len(self._log)

    @property
    def log_start(self) -> int:
        """The first revision of the change log (the next revision if it is empty)."""
        log = self._log
        return log[0].mod_revision if log else self._rev + 1

    def restore(
        self,
        revision: int,
        compacted: int,
        base: Iterable[KeyValue],
        log: Iterable[KeyValue],
    ) -> None:
        """Rebuild an empty store from a snapshot (:meth:`dump_base`, :meth:`dump_log`): the
        index and change log come back as they were; every live key's lease must already be
        granted. A tombstone whose key has no history left is a log-only entry (compaction
        drops a key's history up to a tombstone at the compacted revision; the change log
        keeps that tombstone for watches)."""
        if self._rev != 1 or self._index or self._log:
            raise ValueError("restore needs an empty store")
        index = self._index
        for kv in base:
            hist = index.get(kv.key)
            if hist is None:
                index[kv.key] = [kv]
            else:
                hist.append(kv)
        out = self._log
        for kv in log:
            hist = index.get(kv.key)
            if hist is not None:
                hist.append(kv)
            elif kv.version:
                index[kv.key] = [kv]
            out.append(kv)
        self._rev = revision
        self._compacted = compacted
        self._trimmed = compacted if not out or out[0].mod_revision >= compacted else -1
        lessor = self.lessor
        dead = []
        for key, hist in index.items():
            tail = hist[-1]
            if not tail.version:
                dead.append(key)
            elif tail.lease:
                if tail.lease not in lessor:
                    raise ValueError(f"key {key!r} is attached to an unknown lease {tail.lease}")
                lessor.attach(tail.lease, key)
        self._dead.update(dead)  # the live-key index: keys whose history ends deleted

    # --- invariants -------------------------------------------------------------------

    def _check(self) -> None:
        """Assert every invariant of the index and the log (used by tests)."""
        assert self._rev >= 1
        prev_rev = 0
        for kv in self._log:
            assert kv.mod_revision >= prev_rev
            prev_rev = kv.mod_revision
            assert kv.mod_revision <= self._rev
        for key, hist in self._index.items():
            assert hist, key
            last = None
            for kv in hist:
                assert kv.key == key
                if last is not None:
                    # One txn may delete a key through a b"\\0"-ended range and put it again
                    # (or the reverse): two entries of one revision, in sub-revision order.
                    assert kv.mod_revision > last.mod_revision or (
                        kv.mod_revision == last.mod_revision
                        and (not kv.version) != (not last.version)
                    )
                    if kv.version:
                        if last.version:
                            assert kv.version == last.version + 1
                            assert kv.create_revision == last.create_revision
                        else:
                            assert kv.version == 1 and kv.create_revision == kv.mod_revision
                    else:
                        assert last.version, "two tombstones in a row"
                elif kv.version and kv.mod_revision > self._compacted:
                    assert kv.create_revision <= kv.mod_revision
                last = kv
            tail = hist[-1]
            if tail.version and tail.lease:
                entry = self.lessor.get(tail.lease)
                assert entry is not None and key in entry.keys, key
        for entry in self.lessor.leases():
            for key in entry.keys:
                hist = self._index.get(key)
                assert hist is not None and hist[-1].version and hist[-1].lease == entry.id
        # The live-key index: _dead is exactly the keys whose history ends in a tombstone
        # (a list compare: sorted, no duplicates), so index minus _dead is what is live now.
        assert list(self._dead) == [k for k, h in self._index.items() if not h[-1].version]
        live = [k for k, h in self._index.items() if h[-1].version]
        assert list(self.live_keys()) == live
        assert self.count(b"\0", b"\0") == len(live)
        self.lessor._check()


#: The sort orders etcd 3.4 knows; any other value means no sort.
_SORT_ORDERS = (SortOrder.NONE, SortOrder.ASCEND, SortOrder.DESCEND)


def _at(hist: list[KeyValue], rev: int) -> KeyValue | None:
    i = bisect_right(hist, rev, key=_mod_rev)
    return hist[i - 1] if i else None


def _passes(kv: KeyValue, req: RangeRequest) -> bool:
    if req.max_mod_revision and kv.mod_revision > req.max_mod_revision:
        return False
    if req.min_mod_revision and kv.mod_revision < req.min_mod_revision:
        return False
    if req.max_create_revision and kv.create_revision > req.max_create_revision:
        return False
    return not (req.min_create_revision and kv.create_revision < req.min_create_revision)


def _compare_kv(cmp: Compare, kv: KeyValue | None) -> bool:
    target = cmp.target
    operand = cmp.operand
    result: int
    if target == CompareTarget.VALUE:
        have = kv.value if kv is not None else b""
        want = operand if isinstance(operand, bytes) else b""
        result = (have > want) - (have < want)
    else:
        if target == CompareTarget.VERSION:
            ival = kv.version if kv is not None else 0
        elif target == CompareTarget.CREATE:
            ival = kv.create_revision if kv is not None else 0
        elif target == CompareTarget.MOD:
            ival = kv.mod_revision if kv is not None else 0
        elif target == CompareTarget.LEASE:
            ival = kv.lease if kv is not None else 0
        else:
            ival = 0
        iop = operand if isinstance(operand, int) else 0
        result = (ival > iop) - (ival < iop)
    res = cmp.result
    if res == CompareResult.EQUAL:
        return result == 0
    if res == CompareResult.NOT_EQUAL:
        return result != 0
    if res == CompareResult.GREATER:
        return result > 0
    if res == CompareResult.LESS:
        return result < 0
    return True


def _check_intervals(ops: Sequence[Op | None]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's duplicate-key rule for one branch (v3rpc ``checkIntervals``), order included:
    a put may not repeat a put nor fall in a delete range of its level, of a nested txn
    seen before it, or of its parent. A delete's ``range_end`` of ``b"\\0"`` is compared as
    a plain string there, so such a delete never conflicts (as in etcd)."""
    dels: list[tuple[bytes, bytes]] = [
        (op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)
    ]
    puts: set[bytes] = set()

    def hits(k: bytes) -> bool:
        return any((k == start) if not end else (start <= k < end) for start, end in dels)

    for op in ops:
        if not isinstance(op, TxnRequest):
            continue
        puts_then, dels_then = _check_intervals(op.success)
        puts_else, dels_else = _check_intervals(op.failure)
        for k in puts_then:
            if k in puts or hits(k):
                raise DuplicateKeyError()
            puts.add(k)
        for k in puts_else:
            if (k in puts and k not in puts_then) or hits(k):
                raise DuplicateKeyError()
            puts.add(k)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or hits(op.key):
                raise DuplicateKeyError()
            puts.add(op.key)
    return puts, dels
