"""What can go wrong with a data directory (no etcd text: etcd has no embedded store)."""

from __future__ import annotations

__all__ = ["CorruptDataError", "DataDirLockedError", "StorageError", "StorageFailedError"]


class StorageError(Exception):
    """Base of the storage errors."""


class DataDirLockedError(StorageError):
    """Another store (in this process or another) has the data directory open."""


class CorruptDataError(StorageError):
    """A file of the data directory is damaged somewhere other than a torn tail; ``path`` and
    ``offset`` say where."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at offset {offset}")
        self.path = path
        self.offset = offset
        self.reason = reason


class StorageFailedError(StorageError):
    """Writing or syncing the log failed (for example ``ENOSPC``). The store stops: every
    write in the failed batch and every later call raises this; the directory keeps what was
    durable before, and reopening it recovers that."""
