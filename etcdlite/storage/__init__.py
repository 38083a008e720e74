"""Durability below the store: a data directory that survives restarts and crashes.

The core stays in memory and knows nothing of files. A :class:`~etcdlite.Store` opened with
``data_dir=`` hands every committed revision (and every lease grant, revoke and compaction)
to :class:`~etcdlite.storage.datadir.DataDir`, which frames it
(:mod:`~etcdlite.storage.records`), appends it to the open log segment
(:mod:`~etcdlite.storage.log`) through one group-commit writer
(:mod:`~etcdlite.storage.writer`), and tells the store when it is durable. Opening a
directory replays it (:mod:`~etcdlite.storage.recovery`); snapshot files
(:mod:`~etcdlite.storage.snapshot`) hold a whole state, for compaction on disk and for
``snapshot save/restore/status``.
"""

from __future__ import annotations

from .errors import CorruptDataError, DataDirLockedError, StorageError, StorageFailedError
from .snapshot import SnapshotInfo, SnapshotStatus, restore_snapshot, snapshot_status

__all__ = [
    "CorruptDataError",
    "DataDirLockedError",
    "SnapshotInfo",
    "SnapshotStatus",
    "StorageError",
    "StorageFailedError",
    "restore_snapshot",
    "snapshot_status",
]
