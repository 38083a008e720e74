"""Log segments: the files a data directory holds and the append-only tail.

A data directory holds ``LOCK`` (an ``flock`` held while a store has it open),
``IDENTITY`` (the cluster and member IDs it was created with), at most one
live snapshot ``snap-<seq>.snap`` (the state when segment ``<seq>`` began) and the log
segments ``wal-<seq>.log`` from that one on, each a run of batches of frames
(:mod:`etcdlite.storage.records`), one batch per sync. Only the newest segment is ever
appended to; an older one was synced whole before the next was created.

The open segment is preallocated ahead of the writes (:data:`PREALLOCATE` at a time, as
etcd preallocates its WAL segments): an ``fdatasync`` that also has to record a larger file
size costs a journal commit, about a third more time and CPU per sync on the disk measured
here. The space past the last write reads as zeros, which recovery takes for the end of the
log (a torn tail, cut); a segment is cut back to its last write when the writer closes it or
moves to the next one, so only a segment left open by a crash has the padding.

Everything here blocks: the store calls it from its writer thread, or before it serves.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from .errors import CorruptDataError, DataDirLockedError
from .records import encode_batch

__all__ = [
    "IDENTITY_NAME",
    "LOCK_NAME",
    "Rotate",
    "SegmentWriter",
    "fsync_dir",
    "list_dir",
    "lock_dir",
    "read_identity",
    "segment_path",
    "snapshot_path",
    "write_identity",
]

LOCK_NAME = "LOCK"
IDENTITY_NAME = "IDENTITY"
_SEGMENT = re.compile(r"^wal-([0-9a-f]{16})\.log$")
_SNAPSHOT = re.compile(r"^snap-([0-9a-f]{16})\.snap$")

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
#: ``pwritev``'s per-call "sync the data" flag (Linux 4.7+; 0: none): a batch's write and
#: its ``fdatasync`` in one system call. The writer thread then gives the GIL up and takes it
#: back once per batch instead of twice; each retake waits for the event loop's thread to
#: let go of it, which is what a busy server pays for (the disk work is the same).
_RWF_DSYNC: int = getattr(os, "RWF_DSYNC", 0)
#: Bytes the open segment is extended by ahead of the writes.
PREALLOCATE = 4 << 20


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"wal-{seq:016x}.log"


def snapshot_path(directory: Path, seq: int) -> Path:
    return directory / f"snap-{seq:016x}.snap"


def list_dir(directory: Path) -> tuple[list[int], list[int]]:
    """Sequence numbers of the snapshots and of the segments in ``directory``, ascending."""
    snaps: list[int] = []
    segs: list[int] = []
    for name in os.listdir(directory):
        m = _SEGMENT.match(name)
        if m:
            segs.append(int(m.group(1), 16))
            continue
        m = _SNAPSHOT.match(name)
        if m:
            snaps.append(int(m.group(1), 16))
    return sorted(snaps), sorted(segs)


def read_identity(directory: Path) -> tuple[int, int] | None:
    """``(cluster_id, member_id)`` the directory was created with, ``None`` if it is new."""
    path = directory / IDENTITY_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        ids = json.loads(text)
        return int(ids["cluster_id"]), int(ids["member_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptDataError(str(path), 0, f"unreadable identity: {e}") from None


def write_identity(directory: Path, cluster_id: int, member_id: int) -> None:
    """Record the IDs a new directory's store has (atomically)."""
    path = directory / IDENTITY_NAME
    tmp = path.with_name(IDENTITY_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"cluster_id": cluster_id, "member_id": member_id}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_dir(directory: Path) -> int:
    """Take the directory's lock file; a second opener gets :class:`DataDirLockedError`.
    The lock goes with the returned descriptor (and with the process)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DataDirLockedError(
                f"data directory {str(directory)!r} is in use by another store "
                f"(lock file {str(directory / LOCK_NAME)!r})"
            ) from None
        raise
    return fd


class Rotate:
    """A marker in the writer's queue: what follows goes to a new segment ``seq``."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq


class SegmentWriter:
    """The segment being appended to. One thread at a time calls :meth:`write`."""

    def __init__(self, directory: Path, seq: int, offset: int) -> None:
        self.directory = directory
        self.seq = seq
        #: Bytes known durable in the open segment.
        self.offset = offset
        #: Bytes in segments since the live snapshot (the rule for a new snapshot reads it).
        self.log_bytes = 0
        #: Fault injection (tests): called with the bytes about to be written.
        self.before_write: Callable[[bytes], None] | None = None
        #: Bytes the open segment's file has (its writes and the space preallocated after).
        self.allocated = offset
        #: The preallocation step (0: none; it also turns itself off where unsupported).
        self.preallocate = PREALLOCATE
        #: Whether a batch is written and synced by one ``pwritev(RWF_DSYNC)`` (it turns
        #: itself off where the kernel or file system refuses the flag).
        self.dsync = bool(_RWF_DSYNC) and hasattr(os, "pwritev")
        self._fd = self._open(seq)
        if os.fstat(self._fd).st_size != offset:
            os.ftruncate(self._fd, offset)  # cut the torn tail recovery found
            _fdatasync(self._fd)

    def _open(self, seq: int) -> int:
        path = segment_path(self.directory, seq)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        if created:
            fsync_dir(self.directory)
        return fd

    def _cut(self, durable: bool) -> None:
        """Give back the preallocated space of the open segment (``durable``: synced, for a
        segment that is about to stop being the last one, which recovery reads whole)."""
        if self.allocated != self.offset:
            os.ftruncate(self._fd, self.offset)
            self.allocated = self.offset
            if durable:
                os.fsync(self._fd)

    def write(self, items: list[bytes | Rotate]) -> None:
        """Append the frames, switching segment at each :class:`Rotate`, and sync. On an
        error the open segment is cut back to what was durable before, and it re-raises."""
        chunk: list[bytes] = []
        for item in items:
            if isinstance(item, Rotate):
                self._flush(chunk)
                chunk = []
                self._cut(durable=True)
                os.close(self._fd)
                self._fd = self._open(item.seq)
                self.seq = item.seq
                self.offset = self.allocated = 0
                self.log_bytes = 0
            else:
                chunk.append(item)
        self._flush(chunk)

    def _flush(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        frames = b"".join(chunk)
        marker = encode_batch(frames)
        size = len(marker) + len(frames)
        fd = self._fd
        try:
            if self.before_write is not None:
                self.before_write(marker + frames)
            end = self.offset + size
            if end > self.allocated and self.preallocate:
                self._extend(end)
            at = self.offset
            done = self._write_dsync(fd, [marker, frames], at) if self.dsync else 0
            if done < size:  # no RWF_DSYNC here, or a short write: the rest, then a sync
                view = memoryview(marker + frames)[done:]
                at += done
                while view:
                    n = os.pwrite(fd, view, at)
                    view = view[n:]
                    at += n
                _fdatasync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.offset)
                self.allocated = self.offset
            raise
        self.offset += size
        self.log_bytes += size

    def _write_dsync(self, fd: int, parts: list[bytes], at: int) -> int:
        """``parts`` written at ``at`` and synced by one ``pwritev(..., RWF_DSYNC)``; returns
        the bytes written (0, and :attr:`dsync` off, where the flag is unsupported)."""
        try:
            return os.pwritev(fd, parts, at, _RWF_DSYNC)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            self.dsync = False
            return 0

    def _extend(self, end: int) -> None:
        size = max(end, self.allocated) + self.preallocate
        try:
            os.posix_fallocate(self._fd, self.allocated, size - self.allocated)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            self.preallocate = 0  # a file system without it: plain appends
            return
        self.allocated = size

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self._cut(durable=False)  # a clean close leaves no padding behind
            os.close(self._fd)
            self._fd = -1
