"""When to auto-compact: etcd's ``--auto-compaction-mode`` policies, with time passed in.

* ``revision``: every 5 minutes, compact to ``current revision − retention`` (etcd's
  revision compactor).
* ``periodic``: sample the revision every ``retention / 10`` (at most every 6 minutes) and,
  once ``retention`` has passed since the last compaction (then every ``min(retention, 1h)``),
  compact to the revision sampled ``retention`` ago (etcd's periodic compactor).
"""

from __future__ import annotations

from collections import deque

__all__ = ["REVISION_INTERVAL", "AutoCompactor"]

#: etcd's revision-mode check interval.
REVISION_INTERVAL = 300.0
_HOUR = 3600.0


class AutoCompactor:
    """Decides compaction targets; the caller sleeps ``interval`` between ``tick`` calls."""

    def __init__(self, mode: str, retention: float) -> None:
        if mode not in ("periodic", "revision"):
            raise ValueError(f"auto_compaction_mode must be 'periodic' or 'revision', not {mode!r}")
        if retention <= 0:
            raise ValueError("auto_compaction_retention must be positive")
        self.mode = mode
        self.retention = retention
        if mode == "revision":
            self.interval = REVISION_INTERVAL
        else:
            self.interval = min(retention, _HOUR) / 10
            self._samples: deque[int] = deque(maxlen=int(retention / self.interval) + 1)
            self._last: float | None = None
            self._period = retention
        self._prev_target = -1

    def start(self, now: float, revision: int) -> None:
        """Take the first sample (etcd samples before its first wait)."""
        if self.mode == "periodic":
            self._last = now
            self._samples.append(revision)

    def tick(self, now: float, revision: int) -> int | None:
        """Called every ``interval``; returns a revision to compact to, or ``None``."""
        if self.mode == "revision":
            target = revision - int(self.retention)
            if target <= 0 or target == self._prev_target:
                return None
            self._prev_target = target
            return target
        if self._last is None:
            self._last = now - self.interval
        self._samples.append(revision)
        if now - self._last < self._period - 1e-9:
            return None
        self._period = min(self.retention, _HOUR)
        self._last = now
        target = self._samples[0]
        if target == self._prev_target:
            return None
        self._prev_target = target
        return target
