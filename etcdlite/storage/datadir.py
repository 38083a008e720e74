"""A store's data directory: recovered at open, then fed every change the core commits.

What the shell (:class:`etcdlite.Store`) gets from here:

* :meth:`DataDir.open` recovers the directory into a fresh core and hooks the core, so every
  committed revision is framed and queued for the group-commit writer as it happens;
* :meth:`DataDir.log_grant`, :meth:`DataDir.log_compact`, :meth:`DataDir.log_alarm` and
  :meth:`DataDir.revoking` log what changes state without (or besides) a revision;
* :meth:`DataDir.settle` waits until everything logged so far is durable, and ``on_durable``
  is called with each newly durable revision (watch delivery waits for it);
* :meth:`DataDir.compact_files` replaces the log so far by a snapshot of the state (after a
  compaction that is what frees disk space), by itself once the log outgrows the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..core.mvcc import MVCC
from ..types import KeyValue
from .log import (
    Rotate,
    SegmentWriter,
    list_dir,
    read_identity,
    segment_path,
    snapshot_path,
    write_identity,
)
from .records import (
    encode_alarm,
    encode_auth,
    encode_compact,
    encode_grant,
    encode_revision,
    encode_revoke,
)
from .recovery import Recovered, recover
from .snapshot import write_snapshot
from .writer import GroupCommit

__all__ = ["DataDir"]

#: A new snapshot once the log since the last one is this many times its size …
SNAPSHOT_RATIO = 4
#: … and at least this large.
SNAPSHOT_MIN_LOG = 64 << 20


class DataDir:
    """One open data directory (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        core: MVCC,
        recovered: Recovered,
        *,
        snapshot_ratio: float = SNAPSHOT_RATIO,
        snapshot_min_log: int = SNAPSHOT_MIN_LOG,
    ) -> None:
        self.path = path
        self.core = core
        self.recovered = recovered
        self.snapshot_ratio = snapshot_ratio
        self.snapshot_min_log = snapshot_min_log
        self._lock_fd = recovered.lock_fd
        if read_identity(path) is None:
            write_identity(path, core.cluster_id, core.member_id)
        self.segment = SegmentWriter(path, recovered.seq, recovered.offset)
        self.segment.log_bytes = recovered.log_bytes
        self._seq = recovered.seq
        self.snapshot_bytes = recovered.snapshot_bytes
        #: The newest durable revision.
        self.durable_revision = core.revision
        #: Active alarms as logged, ``(member, alarm type)`` (recovered at open).
        self.alarms: set[tuple[int, int]] = set(recovered.alarms)
        #: The auth store's state as last logged (recovered at open).
        self.auth: bytes | None = recovered.auth
        #: Called with each newly durable revision (the store releases watch events).
        self.on_durable: Callable[[int], None] | None = None
        #: Held by whoever must keep physical compaction away (a snapshot being written).
        self.compaction_lock: asyncio.Lock | None = None
        self.writer = GroupCommit(self.segment, lambda: core.revision, self._durable)
        self._revoking = 0
        self._snapshotting: asyncio.Task[None] | None = None
        self._closed = False
        core.add_hook(self._on_commit)

    @classmethod
    def open(cls, path: str | os.PathLike[str], core: MVCC, **options: float) -> DataDir:
        """Lock and recover ``path`` into ``core`` (a fresh one); blocks while it reads."""
        p = Path(path)
        recovered = recover(p, core)
        try:
            return cls(p, core, recovered, **options)  # type: ignore[arg-type]
        except BaseException:
            os.close(recovered.lock_fd)
            raise

    def start(self) -> None:
        self.writer.start()

    # --- logging ----------------------------------------------------------------------

    def _on_commit(self, revision: int, changes: Sequence[KeyValue]) -> None:
        lease = self._revoking
        if lease:
            # The revision a revoke made: replaying the revoke makes it again.
            self._revoking = 0
            self.writer.append(encode_revoke(lease, revision))
        else:
            self.writer.append(encode_revision(revision, changes))

    def log_grant(self, lease_id: int, ttl: int) -> None:
        self.writer.append(encode_grant(lease_id, ttl))

    def log_compact(self, revision: int) -> None:
        self.writer.append(encode_compact(revision))

    def log_alarm(self, member: int, alarm: int, active: bool) -> None:
        """An alarm raised or cleared (etcd keeps alarms in its backend: they outlive a
        restart). Snapshots do not hold alarms: each new segment starts with them."""
        if active:
            self.alarms.add((member, alarm))
        else:
            self.alarms.discard((member, alarm))
        self.writer.append(encode_alarm(member, alarm, active))

    def extras(self) -> list[bytes]:
        """The alarm and auth records a snapshot of this directory's store holds."""
        out = [encode_alarm(member, alarm, True) for member, alarm in sorted(self.alarms)]
        if self.auth is not None:
            out.append(encode_auth(self.auth))
        return out

    def log_auth(self, state: bytes) -> None:
        """The auth store after a change (etcd keeps it in its backend). Snapshots do not
        hold it: each new segment starts with it, as with alarms."""
        self.auth = state
        self.writer.append(encode_auth(state))

    @contextlib.contextmanager
    def revoking(self, lease_id: int) -> Iterator[None]:
        """Around the core's revoke of ``lease_id``: its revision (if its keys made one) and
        the revoke are one record; a revoke that changed no key is logged alone."""
        self._revoking = lease_id
        try:
            yield
        except BaseException:
            self._revoking = 0
            raise
        if self._revoking:
            self._revoking = 0
            self.writer.append(encode_revoke(lease_id, 0))

    # --- durability -------------------------------------------------------------------

    @property
    def failure(self) -> Exception | None:
        return self.writer.failure

    @property
    def pending(self) -> bool:
        return self.writer.pending

    async def settle(self) -> None:
        """Return once everything logged so far is durable."""
        await self.writer.settle()

    def _durable(self, revision: int) -> None:
        if revision > self.durable_revision:
            self.durable_revision = revision
            if self.on_durable is not None:
                self.on_durable(revision)
        if (
            self._snapshotting is None
            and not self._closed
            and self.segment.log_bytes
            >= max(self.snapshot_min_log, self.snapshot_ratio * self.snapshot_bytes)
        ):
            self._snapshotting = asyncio.get_running_loop().create_task(self._auto_snapshot())

    async def _auto_snapshot(self) -> None:
        try:
            await self.compact_files()
        finally:
            self._snapshotting = None

    # --- space ------------------------------------------------------------------------

    async def compact_files(self) -> None:
        """Write a snapshot of the state now and start a new segment with it; once both are
        durable, delete the older files. A crash at any point leaves either the old files or
        the new ones complete (the snapshot is renamed into place only when whole)."""
        lock = self.compaction_lock or asyncio.Lock()
        async with lock:
            seq = self._seq = self._seq + 1
            # The switch and the state the snapshot reads are taken in the same step: the
            # snapshot holds everything before the new segment and nothing in it.
            mark = self.writer.append(Rotate(seq))
            # The older segments go once the snapshot is in place: the alarms they hold
            # must be in the new one.
            for member, alarm in sorted(self.alarms):
                self.writer.append(encode_alarm(member, alarm, True))
            if self.auth is not None:
                self.writer.append(encode_auth(self.auth))
            await write_snapshot(
                self.core,
                snapshot_path(self.path, seq),
                before_install=lambda: self.writer.wait(mark),
                extras=self.extras(),
            )
        self.snapshot_bytes = snapshot_path(self.path, seq).stat().st_size

        def cleanup() -> None:
            snaps, segs = list_dir(self.path)
            for s in snaps:
                if s < seq:
                    snapshot_path(self.path, s).unlink(missing_ok=True)
            for s in segs:
                if s < seq:
                    segment_path(self.path, s).unlink(missing_ok=True)

        await asyncio.to_thread(cleanup)

    def disk_size(self) -> int:
        """Bytes of every file in the directory (etcd's ``dbSize``), less the space the
        open segment has preallocated and not written yet."""
        total = 0
        with os.scandir(self.path) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
        return max(0, total - (self.segment.allocated - self.segment.offset))

    def disk_size_in_use(self) -> int:
        """Bytes of the live snapshot and the log since it (etcd's ``dbSizeInUse``: what
        the store needs; the rest is files still being replaced)."""
        return self.snapshot_bytes + self.segment.log_bytes

    async def close(self) -> None:
        """Write what is queued, wait for a snapshot in progress, release the directory."""
        if self._closed:
            return
        self._closed = True
        task = self._snapshotting
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        await self.writer.close()
        self.core.remove_hook(self._on_commit)
        self.segment.close()
        os.close(self._lock_fd)
