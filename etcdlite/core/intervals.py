"""Which key ranges cover a key: a stabbing index over half-open byte-string intervals.

The key space is cut at every interval endpoint into elementary segments, each holding the
set of items whose interval covers it. A lookup is one bisect (O(log n)) however many
intervals exist, so a put's cost does not grow with the number of watchers that do not
match it. Adding or removing an interval touches only the segments it spans.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["IntervalIndex"]

T = TypeVar("T", bound=Hashable)

_EMPTY: frozenset[object] = frozenset()


class IntervalIndex(Generic[T]):
    """Items on intervals ``[start, end)``; ``end=None`` means unbounded above."""

    def __init__(self) -> None:
        # A plain sorted list: lookups (every write) bisect it in C; boundaries change only
        # when watchers come and go.
        self._bounds: list[bytes] = []
        # Segment [bounds[i], bounds[i+1]) -> items covering it.
        self._segs: dict[bytes, set[T]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _split(self, at: bytes) -> None:
        """Make ``at`` a segment boundary, the new segment inheriting its cover."""
        if at in self._segs:
            return
        i = bisect_right(self._bounds, at)
        cover: set[T] = set(self._segs[self._bounds[i - 1]]) if i else set()
        insort(self._bounds, at)
        self._segs[at] = cover

    def _span(self, start: bytes, end: bytes | None) -> list[bytes]:
        bounds = self._bounds
        lo = bisect_left(bounds, start)
        hi = len(bounds) if end is None else bisect_left(bounds, end)
        return bounds[lo:hi]

    def add(self, start: bytes, end: bytes | None, item: T) -> None:
        if end is not None and end <= start:
            return
        self._split(start)
        if end is not None:
            self._split(end)
        for b in self._span(start, end):
            self._segs[b].add(item)
        self._count += 1

    def remove(self, start: bytes, end: bytes | None, item: T) -> None:
        if end is not None and end <= start:
            return
        for b in self._span(start, end):
            self._segs[b].discard(item)
        self._count -= 1
        self._merge(start)
        if end is not None:
            self._merge(end)

    def _merge(self, at: bytes) -> None:
        """Drop boundary ``at`` if it no longer separates different covers."""
        cover = self._segs.get(at)
        if cover is None:
            return
        i = bisect_left(self._bounds, at)
        prev = self._segs[self._bounds[i - 1]] if i else _EMPTY
        if cover == prev:
            del self._bounds[i]
            del self._segs[at]

    def stab(self, key: bytes) -> set[T] | frozenset[T]:
        """The items whose interval contains ``key`` (do not mutate the result)."""
        bounds = self._bounds
        if not bounds:
            return _EMPTY  # type: ignore[return-value]
        i = bisect_right(bounds, key)
        if not i:
            return _EMPTY  # type: ignore[return-value]
        return self._segs[bounds[i - 1]]

    def _check(self) -> None:
        assert len(self._bounds) == len(self._segs)
        assert set(self._bounds) == set(self._segs)
        prev: set[T] | frozenset[T] = _EMPTY  # type: ignore[assignment]
        for b in self._bounds:
            assert self._segs[b] != prev, "redundant boundary"
            prev = self._segs[b]
