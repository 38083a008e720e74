"""Which key ranges cover a key: a stabbing index over half-open byte-string intervals.

The key space is cut at every interval endpoint into elementary segments, each holding the
set of items whose interval covers it. A lookup is one C bisect over the boundaries plus a
list index (O(log n)), however many intervals exist, so a put's cost does not grow with the
number of watchers that do not match it. Adding or removing an interval touches only the
segments it spans; boundaries change only when watchers come and go.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["IntervalIndex"]

T = TypeVar("T", bound=Hashable)

_EMPTY: frozenset[object] = frozenset()


class IntervalIndex(Generic[T]):
    """Items on intervals ``[start, end)``; ``end=None`` means unbounded above."""

    def __init__(self) -> None:
        # Parallel lists: segment i is [bounds[i], bounds[i+1]) and covers[i] its items.
        self._bounds: list[bytes] = []
        self._covers: list[set[T]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _split(self, at: bytes) -> None:
        """Make ``at`` a segment boundary, the new segment inheriting its cover."""
        bounds = self._bounds
        i = bisect_left(bounds, at)
        if i < len(bounds) and bounds[i] == at:
            return
        cover: set[T] = set(self._covers[i - 1]) if i else set()
        bounds.insert(i, at)
        self._covers.insert(i, cover)

    def _span(self, start: bytes, end: bytes | None) -> range:
        bounds = self._bounds
        lo = bisect_left(bounds, start)
        hi = len(bounds) if end is None else bisect_left(bounds, end)
        return range(lo, hi)

    def add(self, start: bytes, end: bytes | None, item: T) -> None:
        if end is not None and end <= start:
            return
        self._split(start)
        if end is not None:
            self._split(end)
        covers = self._covers
        for i in self._span(start, end):
            covers[i].add(item)
        self._count += 1

    def remove(self, start: bytes, end: bytes | None, item: T) -> None:
        if end is not None and end <= start:
            return
        covers = self._covers
        for i in self._span(start, end):
            covers[i].discard(item)
        self._count -= 1
        if end is not None:
            self._merge(end)
        self._merge(start)

    def _merge(self, at: bytes) -> None:
        """Drop boundary ``at`` if it no longer separates different covers."""
        bounds = self._bounds
        i = bisect_left(bounds, at)
        if i == len(bounds) or bounds[i] != at:
            return
        prev = self._covers[i - 1] if i else _EMPTY
        if self._covers[i] == prev:
            del bounds[i]
            del self._covers[i]

    def stab(self, key: bytes) -> set[T] | frozenset[T]:
        """The items whose interval contains ``key`` (do not mutate the result)."""
        i = bisect_right(self._bounds, key)
        if not i:
            return _EMPTY  # type: ignore[return-value]
        return self._covers[i - 1]

    def _check(self) -> None:
        assert len(self._bounds) == len(self._covers)
        assert self._bounds == sorted(set(self._bounds))
        prev: set[T] | frozenset[T] = _EMPTY  # type: ignore[assignment]
        for cover in self._covers:
            assert cover != prev, "redundant boundary"
            prev = cover
