"""Opening a data directory: lock it, load the live snapshot, replay the log after it.

Rules:

* The newest snapshot ``snap-S`` is the state when segment ``S`` began; segments ``S``,
  ``S+1``, … must all be there. Older snapshots and segments are leftovers of a finished
  snapshot (deleted here); ``*.tmp`` files are unfinished ones (deleted too).
* Every batch and every frame must check out and apply, in order, revision after revision.
  The one exception is the end of the newest segment: a crash mid-write leaves a torn last
  batch (or garbage after the last one, or the zeros of its preallocated space, see
  :mod:`~etcdlite.storage.log`), and that tail is cut off: no write in it was
  acknowledged, as the writer acknowledges a batch only after its sync. Damage with an
  intact batch after it is not a tear (that batch was written after a sync):
  :class:`CorruptDataError` names the file and offset, and nothing is changed on disk.
* The auth store (``U`` records, its whole state each time it changes) comes back as the
  last one logged (:attr:`Recovered.auth`); like alarms, it is re-logged at the start of each
  new segment.
* Alarms (``A`` records) come back as the last record for each left them
  (:attr:`Recovered.alarms`); the store re-logs them at the start of each new segment, so a
  snapshot's log does not need to hold them.
* Leases come back with their full TTL (etcd's lessor does the same when a member starts):
  they are granted at ``now`` here and the store restarts their clocks when it starts.
"""

from __future__ import annotations

import gc
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..core.mvcc import MVCC
from ..errors import EtcdError
from .errors import CorruptDataError
from .log import list_dir, lock_dir, segment_path, snapshot_path
from .records import (
    ALARM,
    AUTH,
    COMPACT,
    FRAME,
    FRAMED_PUT,
    GRANT,
    REVISION,
    REVOKE,
    SINGLE_PUT,
    BadFrame,
    batch_intact,
    decode_alarm,
    decode_auth,
    decode_id_int,
    decode_int,
    decode_revision,
    find_later_batch,
    frames,
    read_batch,
)
from .snapshot import read_snapshot

__all__ = ["Recovered", "recover"]


@dataclass
class Recovered:
    """Where appending resumes, and what the directory held."""

    lock_fd: int
    seq: int
    offset: int
    log_bytes: int
    snapshot_bytes: int
    #: ``(path, offset)`` of a torn tail that was cut off, if any.
    torn: tuple[str, int] | None = None
    #: Active alarms as ``(member, alarm type)``.
    alarms: set[tuple[int, int]] = field(default_factory=set)
    #: The auth store's state as last logged (:meth:`etcdlite.core.auth.AuthStore.dump`).
    auth: bytes | None = None


@dataclass
class _State:
    """What the log keeps besides revisions and leases, as replayed so far."""

    alarms: set[tuple[int, int]] = field(default_factory=set)
    auth: bytes | None = None


def recover(directory: Path, core: MVCC, now: float = 0.0) -> Recovered:
    """Lock ``directory`` (created if missing) and rebuild ``core`` (fresh) from it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock_fd = lock_dir(directory)
    # Millions of new objects and none of them garbage: the cyclic collector's passes
    # over them would cost more than the replay itself.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _recover(directory, core, now, lock_fd)
    except BaseException:
        os.close(lock_fd)
        raise
    finally:
        if collecting:
            gc.enable()


def _recover(directory: Path, core: MVCC, now: float, lock_fd: int) -> Recovered:
    for name in os.listdir(directory):
        if name.endswith(".tmp"):
            (directory / name).unlink()
    snaps, segs = list_dir(directory)
    seq = snaps[-1] if snaps else 0
    snapshot_bytes = 0
    state = _State()
    if snaps:
        snap = read_snapshot(snapshot_path(directory, seq))
        state.alarms, state.auth = set(snap.alarms), snap.auth  # the log may change them
        for lease_id, ttl in snap.leases:
            core.grant(ttl, lease_id, now)
        try:
            core.restore(snap.revision, snap.compacted, snap.base, snap.log)
        except ValueError as e:
            raise CorruptDataError(str(snapshot_path(directory, seq)), 0, str(e)) from None
        snapshot_bytes = snap.size
    live = [s for s in segs if s >= seq]
    for i, s in enumerate(live):
        if s != seq + i:
            raise CorruptDataError(str(segment_path(directory, seq + i)), 0, "log segment missing")
    offset = 0
    log_bytes = 0
    torn = None
    for i, s in enumerate(live):
        offset, cut = _replay(segment_path(directory, s), core, now, state, last=i == len(live) - 1)
        log_bytes += offset
        if cut is not None:
            torn = cut
    # Leftovers of a finished snapshot: it already holds what they held.
    for s in snaps[:-1]:
        snapshot_path(directory, s).unlink()
    for s in segs:
        if s < seq:
            segment_path(directory, s).unlink()
    if core.compaction_pending:
        core.compact_all()
    return Recovered(
        lock_fd,
        live[-1] if live else seq,
        offset,
        log_bytes,
        snapshot_bytes,
        torn,
        state.alarms,
        state.auth,
    )


def _replay(
    path: Path, core: MVCC, now: float, state: _State, *, last: bool
) -> tuple[int, tuple[str, int] | None]:
    """Apply one segment's batches; returns where its good part ends and any torn tail."""
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    pos = 0
    end = len(data)
    try:
        while pos < end:
            start, stop = read_batch(view, pos)
            if not batch_intact(view, pos):
                if stop < end:  # a later batch was written, so this one was synced
                    _first_bad_frame(path, view, start, stop)
                raise BadFrame(pos, "the last batch is incomplete")
            _apply_frames(path, data, start, stop, core, now, state)
            pos = stop
        return end, None
    except BadFrame as bad:
        if not last or find_later_batch(data, bad.offset) is not None:
            raise CorruptDataError(str(path), bad.offset, bad.reason) from None
        return bad.offset, (str(path), bad.offset)


def _first_bad_frame(path: Path, view: memoryview, start: int, stop: int) -> None:
    """Raise :class:`CorruptDataError` at the first damaged frame of a damaged batch."""
    try:
        for _ in frames(view[:stop], start):
            pass
    except BadFrame as bad:
        raise CorruptDataError(str(path), bad.offset, bad.reason) from None
    raise CorruptDataError(str(path), start, "batch checksum mismatch")


def _apply_frames(
    path: Path,
    data: bytes,
    pos: int,
    end: int,
    core: MVCC,
    now: float,
    state: _State,
) -> None:
    """The frames of one intact batch (:func:`etcdlite.storage.records.frames`, inlined).
    A run of revisions that are each one put with no lease (most of a log) is collected
    and handed to :meth:`MVCC.apply_puts` in one call, without building the general entry;
    anything else flushes the run and is applied on its own. Every frame's CRC is checked
    all the same. The batch checked out whole, so a frame that does not is corruption."""
    view = memoryview(data)
    head = FRAME.size
    unpack_frame = FRAME.unpack_from
    # A frame's head and, if it is a single put, the put's head, in one unpack (fields
    # past a shorter frame's end are read from the next frame and not used).
    unpack_put = FRAMED_PUT.unpack_from
    framed_size = FRAMED_PUT.size
    put_size = SINGLE_PUT.size
    crc32 = zlib.crc32
    keys: list[bytes] = []
    values: list[bytes] = []
    add_key = keys.append
    add_value = values.append
    expect = core.revision + 1  # the revision a put joining the run must have
    run_at = pos  # the offset of the run's first frame
    while pos < end:
        if end - pos >= framed_size:
            length, crc, kind, rev, count, op, lease, klen, vlen = unpack_put(data, pos)
        else:
            length, crc = unpack_frame(data, pos) if end - pos >= head else (0, 0)
            kind = rev = count = op = lease = klen = vlen = -1
        body = pos + head
        nxt = body + length
        if length == 0 or nxt > end or crc32(view[body:nxt]) != crc:
            raise CorruptDataError(str(path), pos, "bad frame in an intact batch")
        if (
            kind == REVISION
            and length == put_size + klen + vlen  # so the put's head is this frame's
            and count == 1
            and op == 1
            and not lease
            and rev == expect
        ):
            k = body + put_size
            add_key(data[k : k + klen])
            add_value(data[k + klen : nxt])
            expect += 1
            pos = nxt
            continue
        if keys:
            _apply_puts(path, run_at, core, keys, values)
            keys.clear()
            values.clear()
        _apply(path, pos, data[body:nxt], core, now, state)
        pos = run_at = nxt
        expect = core.revision + 1
    if keys:
        _apply_puts(path, run_at, core, keys, values)


def _apply_puts(
    path: Path, offset: int, core: MVCC, keys: list[bytes], values: list[bytes]
) -> None:
    try:
        core.apply_puts(core.revision + 1, keys, values)
    except ValueError as e:  # the run was checked revision by revision: not expected
        raise CorruptDataError(str(path), offset, f"entry does not apply: {e}") from None


def _apply(
    path: Path,
    offset: int,
    payload: bytes,
    core: MVCC,
    now: float,
    state: _State,
) -> None:
    kind = payload[0]
    try:
        if kind == REVISION:
            rev, changes = decode_revision(payload)
            core.apply_changes(rev, changes)
        elif kind == GRANT:
            lease_id, ttl = decode_id_int(payload)
            core.grant(ttl, lease_id, now)
        elif kind == REVOKE:
            lease_id, rev = decode_id_int(payload)
            before = core.revision
            after = core.revoke(lease_id)
            if after != (rev or before):
                raise ValueError(f"lease revoke made revision {after}, logged {rev}")
        elif kind == COMPACT:
            core.compact(decode_int(payload))
        elif kind == ALARM:
            member, alarm, active = decode_alarm(payload)
            if active:
                state.alarms.add((member, alarm))
            else:
                state.alarms.discard((member, alarm))
        elif kind == AUTH:
            state.auth = decode_auth(payload)
        else:
            raise ValueError(f"unknown entry kind {kind}")
    except (ValueError, EtcdError) as e:
        raise CorruptDataError(str(path), offset, f"entry does not apply: {e}") from None
