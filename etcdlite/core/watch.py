"""Watchers: who sees which change, in order, without loss, without unbounded memory.

etcd's ``watchable_store`` in a sans-IO form:

* Exact-key watchers live in a dict, range watchers in an :class:`IntervalIndex`, so a
  commit costs one dict lookup plus one bisect per changed key, however many watchers do not
  match it.
* A **synced** watcher (at the head) gets each revision's matching events pushed into its
  bounded buffer at commit time, one batch per revision. If the buffer is full the watcher
  becomes **unsynced**: the push is dropped and the watcher remembers the first revision it
  missed. Writers never wait for consumers.
* An unsynced watcher (also every watcher that starts in the past) catches up when its
  consumer asks for more (:meth:`WatchRegistry.take`): its buffer first, then the change log
  read in chunks of at most ``catchup_revisions`` revisions, one batch per chunk with the
  store revision as header (as etcd's catch-up does). Reaching the head makes it synced again.
  Nothing is read for a consumer that does not ask, so a slow consumer costs no memory
  beyond its buffer; the change log is the history etcd keeps anyway.
* If compaction overtakes an unsynced watcher (its next revision is below the compacted
  revision) it is cancelled with ``compact_revision`` set, after what it already buffered.

Events of one revision always travel in one batch (atomic); batches go out in revision
order (ordered) with no revision skipped (reliable).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter

from ..types import Event, EventType, KeyValue
from .intervals import IntervalIndex
from .mvcc import MVCC

__all__ = [
    "EVENTS",
    "NOTIFY",
    "REQUESTED",
    "Batch",
    "WatchRegistry",
    "Watcher",
]

#: etcd's cancel reason for a create request whose range is empty.

_mod_rev = attrgetter("mod_revision")

#: ``(header_revision, events, kind)``: one delivery unit. ``kind`` is ``EVENTS``, or
#: ``NOTIFY``/``REQUESTED`` for a progress notification (no events; every event up to the
#: header revision has been delivered) from the periodic ticker or from a request.
Batch = tuple[int, list[Event], int]
EVENTS, NOTIFY, REQUESTED = 0, 1, 2


class Watcher:
    """One watch: its range, options and delivery state.

    ``end`` is etcd's ``range_end``: empty for one key, ``b"\\0"`` for every key ≥ ``key``.
    """

    __slots__ = (
        "_range_key",
        "buffer",
        "cancel_reason",
        "canceled",
        "compact_revision",
        "compacted",
        "end",
        "had_event",
        "id",
        "key",
        "min_rev",
        "next_rev",
        "nodelete",
        "noput",
        "prev_kv",
        "progress_notify",
        "progress_pending",
        "synced",
        "wake",
    )

    def __init__(
        self,
        key: bytes,
        end: bytes,
        *,
        prev_kv: bool = False,
        noput: bool = False,
        nodelete: bool = False,
        progress_notify: bool = False,
        watch_id: int = 0,
    ) -> None:
        self.id = watch_id
        self.key = key
        self.end = end
        self.prev_kv = prev_kv
        self.noput = noput
        self.nodelete = nodelete
        self.progress_notify = progress_notify
        self.buffer: deque[Batch] = deque()
        self.synced = True
        # Synced: revisions below min_rev are skipped (a watch from a future revision).
        self.min_rev = 0
        # Unsynced: the first revision not yet in the buffer.
        self.next_rev = 0
        self.canceled = False
        #: Why the server ended it (fault injection); empty for compaction or close.
        self.cancel_reason = ""
        self.compacted = False
        self.compact_revision = 0
        self.had_event = False
        self.progress_pending = False
        self.wake: Callable[[], None] | None = None
        self._range_key: tuple[bytes, bytes | None] | None = None

    def matches(self, key: bytes) -> bool:
        end = self.end
        if not end:
            return key == self.key
        if end == b"\0":
            return key >= self.key
        return self.key <= key < end

    def __repr__(self) -> str:
        state = "canceled" if self.canceled else "synced" if self.synced else "unsynced"
        return f"<Watcher {self.id} [{self.key!r}, {self.end!r}) {state}>"


class WatchRegistry:
    """All watchers of one :class:`MVCC`; hooks itself into its commits."""

    def __init__(
        self,
        mvcc: MVCC,
        *,
        buffer_size: int = 128,
        catchup_revisions: int = 1000,
        deferred: bool = False,
    ) -> None:
        self.mvcc = mvcc
        self.buffer_size = buffer_size
        self.catchup_revisions = catchup_revisions
        self._exact: dict[bytes, set[Watcher]] = {}
        self._ranges: IntervalIndex[Watcher] = IntervalIndex()
        self._all: set[Watcher] = set()
        self._hooked = False
        #: Deferred delivery (a durable store): commits are held until :meth:`release` says
        #: they are durable, and nothing past the released revision is read or announced.
        self.deferred = deferred
        self._held: deque[tuple[int, Sequence[KeyValue]]] = deque()
        self._released = mvcc.revision
        if deferred:
            # Always hooked: a watcher added later must still get the held revisions.
            mvcc.add_hook(self._hold)

    @property
    def head(self) -> int:
        """The newest revision watchers may see: the store's, or the released one."""
        return self._released if self.deferred else self.mvcc.revision

    def _hold(self, rev: int, changes: Sequence[KeyValue]) -> None:
        self._held.append((rev, changes))

    def release(self, revision: int) -> None:
        """Deferred mode: revisions up to ``revision`` are durable; deliver them."""
        held = self._held
        while held and held[0][0] <= revision:
            rev, changes = held.popleft()
            if self._all:
                self._on_commit(rev, changes)
        if revision > self._released:
            self._released = revision

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> object:
        return iter(list(self._all))

    @property
    def watchers(self) -> frozenset[Watcher]:
        return frozenset(self._all)

    # --- registration -----------------------------------------------------------------

    def add(self, w: Watcher, start_revision: int = 0) -> None:
        """Register ``w`` from ``start_revision`` (0: changes after now).

        An empty range (``end`` set, not ``b"\\0"``, and ``≤ key``) is the caller's to refuse
        (etcd answers ``errors.WATCH_EMPTY_RANGE``); it would never match anything here.
        """
        rev = self.mvcc.revision
        if start_revision == 0 or start_revision > rev:
            w.synced = True
            w.min_rev = start_revision if start_revision > rev else rev + 1
        else:
            w.synced = False
            w.next_rev = start_revision
        if not w.end:
            self._exact.setdefault(w.key, set()).add(w)
        else:
            upper = None if w.end == b"\0" else w.end
            w._range_key = (w.key, upper)
            self._ranges.add(w.key, upper, w)
        self._all.add(w)
        if not self._hooked and not self.deferred:
            self.mvcc.add_hook(self._on_commit)
            self._hooked = True

    def remove(self, w: Watcher) -> None:
        """Forget ``w`` (a cancel); its buffer is kept for whoever still drains it."""
        if w not in self._all:
            return
        self._all.discard(w)
        if not w.end:
            group = self._exact.get(w.key)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._exact[w.key]
        elif w._range_key is not None:
            self._ranges.remove(w._range_key[0], w._range_key[1], w)
        if not self._all and self._hooked:
            self.mvcc.remove_hook(self._on_commit)
            self._hooked = False

    def cancel(self, w: Watcher) -> None:
        self.remove(w)
        w.canceled = True
        if w.wake is not None:
            w.wake()

    # --- delivery ---------------------------------------------------------------------

    def _on_commit(self, rev: int, changes: Sequence[KeyValue]) -> None:
        if len(changes) == 1:
            # Most puts concern no watcher: settle that here, at two lookups' cost.
            kv = changes[0]
            group = self._exact.get(kv.key)
            covering = self._ranges.stab(kv.key)
            if group or covering:
                self._commit_one(rev, kv, group, covering)
            return
        exact = self._exact
        ranges = self._ranges
        per: dict[Watcher, list[Event]] | None = None
        mvcc = self.mvcc
        for kv in changes:
            group = exact.get(kv.key)
            covering = ranges.stab(kv.key)
            if not group and not covering:
                continue
            is_put = kv.version != 0
            plain: Event | None = None
            with_prev: Event | None = None
            for source in (group, covering):
                if not source:
                    continue
                for w in source:
                    if not w.synced or rev < w.min_rev:
                        continue
                    if w.noput if is_put else w.nodelete:
                        continue
                    if w.prev_kv:
                        if with_prev is None:
                            with_prev = _event(kv, mvcc, True)
                        ev = with_prev
                    else:
                        if plain is None:
                            plain = _event(kv, mvcc, False)
                        ev = plain
                    if per is None:
                        per = {}
                    lst = per.get(w)
                    if lst is None:
                        per[w] = [ev]
                    else:
                        lst.append(ev)
        if per is None:
            return
        for w, events in per.items():
            self._push(w, rev, (rev, events, EVENTS))

    def _commit_one(
        self,
        rev: int,
        kv: KeyValue,
        group: set[Watcher] | None,
        covering: set[Watcher] | frozenset[Watcher],
    ) -> None:
        """The common single-change revision: every matching watcher shares one batch (per
        prev_kv variant), so fan-out is one append per watcher."""
        is_put = kv.version != 0
        plain: Batch | None = None
        with_prev: Batch | None = None
        cap = self.buffer_size
        for source in (group, covering):
            if not source:
                continue
            for w in source:
                if not w.synced or rev < w.min_rev or (w.noput if is_put else w.nodelete):
                    continue
                if w.prev_kv:
                    if with_prev is None:
                        with_prev = (rev, [_event(kv, self.mvcc, True)], EVENTS)
                    batch = with_prev
                else:
                    if plain is None:
                        plain = (rev, [_event(kv, self.mvcc, False)], EVENTS)
                    batch = plain
                buf = w.buffer
                if len(buf) >= cap:
                    w.synced = False
                    w.next_rev = rev
                    continue
                buf.append(batch)
                w.had_event = True
                if len(buf) == 1 and w.wake is not None:
                    w.wake()

    def _push(self, w: Watcher, rev: int, batch: Batch) -> None:
        buf = w.buffer
        if len(buf) >= self.buffer_size:
            # Slow consumer: stop pushing; it catches up from the log from here.
            w.synced = False
            w.next_rev = rev
            return
        buf.append(batch)
        w.had_event = True
        if len(buf) == 1 and w.wake is not None:
            w.wake()

    def take(self, w: Watcher) -> list[Batch]:
        """What ``w``'s consumer gets next: buffered batches, else one catch-up chunk, else
        nothing (wait for a wake-up). A compacted watcher is cancelled here."""
        if w.buffer:
            buffered = list(w.buffer)
            w.buffer.clear()
            if w.synced and w.progress_pending:
                # asked for while the buffer was full: everything up to now is in hand
                w.progress_pending = False
                buffered.append((self.head, [], REQUESTED))
            return buffered
        if w.canceled:
            return []
        if w.synced:
            if w.progress_pending:
                w.progress_pending = False
                return [(self.head, [], REQUESTED)]
            return []
        mvcc = self.mvcc
        if w.next_rev < mvcc.compacted_revision:
            w.compact_revision = mvcc.compacted_revision
            w.compacted = True
            self.cancel(w)
            return []
        cur = self.head
        log = mvcc._log
        lo = bisect_left(log, w.next_rev, key=_mod_rev)
        last = min(cur, w.next_rev + self.catchup_revisions - 1)
        hi = bisect_right(log, last, key=_mod_rev)
        events: list[Event] = []
        for kv in log[lo:hi]:
            if not w.matches(kv.key):
                continue
            if kv.version:
                if w.noput:
                    continue
            elif w.nodelete:
                continue
            events.append(_event(kv, mvcc, w.prev_kv))
        # Deferred delivery: a watch may start past the released head; it never moves back.
        if last >= w.next_rev:
            w.next_rev = last + 1
        out: list[Batch] = []
        if events:
            out.append((cur, events, EVENTS))
            w.had_event = True
        if w.next_rev > cur:
            w.synced = True
            w.min_rev = w.next_rev
            if w.progress_pending:
                w.progress_pending = False
                out.append((cur, [], REQUESTED))
        return out

    def take_heads(
        self, watchers: Iterable[Watcher]
    ) -> tuple[list[tuple[Watcher, Batch]], list[Watcher]]:
        """:meth:`take`'s common case for many watchers at once, for fan-out: a synced
        watcher with exactly one buffered revision of events and nothing else pending gets
        that batch (shared with the revision's other watchers); the others are returned
        as they are, nothing taken, for :meth:`take`."""
        heads: list[tuple[Watcher, Batch]] = []
        rest: list[Watcher] = []
        for w in watchers:
            buf = w.buffer
            if (
                len(buf) == 1
                and buf[0][2] == EVENTS
                and w.synced
                and not w.progress_pending
                and not w.canceled
            ):
                heads.append((w, buf.popleft()))
            else:
                rest.append(w)
        return heads, rest

    def ready(self, w: Watcher) -> bool:
        """Whether :meth:`take` would return something (or cancel) right now."""
        return bool(w.buffer) or w.canceled or not w.synced or w.progress_pending

    def request_progress(self, w: Watcher, kind: int = REQUESTED) -> None:
        """Queue a progress notification for ``w``: sent at once if it is synced (after its
        buffered events), else as soon as it has caught up (etcd 3.5.8+ sends none while
        unsynced; deferring keeps the guarantee and loses nothing)."""
        if w.canceled:
            return
        if w.synced and len(w.buffer) < self.buffer_size:
            w.buffer.append((self.head, [], kind))
            if len(w.buffer) == 1 and w.wake is not None:
                w.wake()
        else:
            w.progress_pending = True
            if w.wake is not None:
                w.wake()

    def progress_tick(self) -> None:
        """A periodic progress tick: every ``progress_notify`` watcher that is synced and got
        no event since the last tick receives a progress notification (etcd's rule)."""
        for w in list(self._all):
            if w.progress_notify:
                if not w.had_event and w.synced and not w.buffer:
                    self.request_progress(w, NOTIFY)
                w.had_event = False

    def _check(self) -> None:
        """Invariants (tests): indexes and ``_all`` agree; buffers bounded and ordered."""
        self._ranges._check()
        indexed = {w for g in self._exact.values() for w in g}
        for w in self._all:
            assert not w.canceled
            assert len(w.buffer) <= self.buffer_size + 1
            if not w.end:
                assert w in indexed
            revs = [b[0] for b in w.buffer if b[2] == EVENTS]
            assert revs == sorted(revs) and len(set(revs)) == len(revs)
        assert indexed <= self._all
        assert self._hooked == (bool(self._all) and not self.deferred)
        assert all(rev > self._released for rev, _ in self._held)


def _event(kv: KeyValue, mvcc: MVCC, with_prev: bool) -> Event:
    """The event for one change; ``prev_kv`` is the key at ``mod_revision - 1`` (omitted for a
    creation, or when that revision is compacted), as etcd reads it."""
    etype = EventType.PUT if kv.version else EventType.DELETE
    if not with_prev or kv.version == 1:
        return Event(etype, kv)
    prev_rev = kv.mod_revision - 1
    if prev_rev < mvcc.compacted_revision:
        return Event(etype, kv)
    hist = mvcc._index.get(kv.key)
    prev = None
    if hist is not None:
        i = bisect_right(hist, prev_rev, key=_mod_rev)
        if i:
            cand = hist[i - 1]
            if cand.version:
                prev = cand
    return Event(etype, kv, prev)
