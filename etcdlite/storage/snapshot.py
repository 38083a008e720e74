"""Snapshot files: a store's whole state at one revision, in etcdlite's own format.

etcd's snapshot is a copy of its bbolt file; etcdlite's is a run of frames
(:mod:`etcdlite.storage.records`) after a 16-byte magic, ending, as etcd's does, in the
32-byte sha256 of every byte before it (what ``etcdctl snapshot save`` checks):

* ``H`` header: ``<q revision><q compacted revision>``;
* ``G`` one per lease: ``<q id><q granted ttl>`` (a restored lease gets its full TTL back);
* ``A`` one per active alarm and ``U`` the auth store (users, roles, permissions, enabled),
  as in the log (:mod:`etcdlite.storage.records`): etcd's snapshot, a copy of its backend,
  holds both, so a restored member keeps its users and refuses what it refused;
* ``B`` KeyValues older than the change log (the state at the compaction point), ``L`` the
  change log (every change the store still keeps), each ``<I count>`` then per KeyValue
  ``<q create><q mod><q version><q lease><I key length><I value length>`` key value;
* ``E`` end: ``<q KeyValues><q revision>``, checked against the rest;
* zero bytes up to a multiple of 512 (etcdctl takes a file whose size is not 512·n + 32 for
  one without a sha256 trailer, as bbolt files are whole pages).

The same file is a data directory's compacted state (``snap-<seq>.snap``), what
:meth:`etcdlite.Store.snapshot` writes, and what :func:`restore_snapshot` installs.
:func:`write_snapshot` reads the store in chunks between awaits and writes in a thread, so the
event loop is never held for long whatever the store's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..types import KeyValue
from .errors import CorruptDataError
from .log import fsync_dir, snapshot_path
from .records import (
    ALARM,
    AUTH,
    FRAME,
    GRANT,
    BadFrame,
    decode_alarm,
    decode_auth,
    decode_id_int,
    encode_grant,
    frame,
    frames,
)

if TYPE_CHECKING:
    from ..core.mvcc import MVCC

__all__ = [
    "MAGIC",
    "Snapshot",
    "SnapshotStatus",
    "read_snapshot",
    "restore_snapshot",
    "snapshot_status",
    "write_snapshot",
]

MAGIC = b"etcdlite-snap\x00\x00\x01"
TRAILER = 32  # sha256
PAD = 512  # the body is padded to a multiple of this (see the module docstring)
HEADER, BASE, LOG, END = b"H"[0], b"B"[0], b"L"[0], b"E"[0]

_HEADER = struct.Struct("<Bqq")
_COUNT = struct.Struct("<BI")
_KV = struct.Struct("<qqqqII")
_END = struct.Struct("<Bqq")

#: KeyValues read from the store per event-loop turn while writing a snapshot.
CHUNK = 2000


def _encode_kvs(kind: int, kvs: Sequence[KeyValue]) -> bytes:
    pack = _KV.pack
    parts = [_COUNT.pack(kind, len(kvs))]
    for kv in kvs:
        parts.append(
            pack(
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease,
                len(kv.key),
                len(kv.value),
            )
        )
        parts.append(kv.key)
        parts.append(kv.value)
    return frame(b"".join(parts))


def _decode_kvs(payload: bytes, out: list[KeyValue]) -> None:
    _, count = _COUNT.unpack_from(payload)
    pos = _COUNT.size
    unpack = _KV.unpack_from
    size = _KV.size
    for _ in range(count):
        create, mod, version, lease, klen, vlen = unpack(payload, pos)
        pos += size
        key = payload[pos : pos + klen]
        pos += klen
        value = payload[pos : pos + vlen]
        pos += vlen
        out.append(KeyValue(key, create, mod, version, value, lease))
    if pos != len(payload):
        raise ValueError("malformed KeyValue chunk")


@dataclass
class SnapshotInfo:
    """What :func:`write_snapshot` wrote."""

    revision: int
    size: int
    sha256: str


async def write_snapshot(
    core: MVCC,
    path: Path,
    *,
    chunk: int = CHUNK,
    before_install: Callable[[], Awaitable[None]] | None = None,
    extras: Sequence[bytes] = (),
) -> SnapshotInfo:
    """Write ``core``'s state now to ``path`` atomically (a temporary file, synced, renamed,
    directory synced; ``before_install`` is awaited before the rename). ``extras`` are the
    framed alarm and auth records of the store (``encode_alarm``, ``encode_auth``). The
    state is read before the first await; writes may go on meanwhile (they are not in it),
    but the caller keeps physical compaction from running until this returns."""
    revision = core.revision
    compacted = core.compacted_revision
    below = core.log_start
    end = core.log_length
    leases = [(e.id, e.ttl) for e in core.lessor.leases()]
    tmp = path.with_name(path.name + ".tmp")
    f: BinaryIO = await asyncio.to_thread(open, tmp, "wb")
    digest = hashlib.sha256()
    size = 0
    try:
        head = [MAGIC, frame(_HEADER.pack(HEADER, revision, compacted))]
        head.extend(encode_grant(lid, ttl) for lid, ttl in leases)
        head.extend(extras)
        pending = b"".join(head)
        kvs = 0
        for kind, source in (
            (BASE, core.dump_base(below, chunk)),
            (LOG, core.dump_log(end, chunk)),
        ):
            for part in source:
                if not part:
                    await asyncio.sleep(0)  # a chunk of keys read, none of them older
                    continue
                kvs += len(part)
                data = _encode_kvs(kind, part)
                if pending:
                    data = pending + data
                    pending = b""
                digest.update(data)
                size += len(data)
                await asyncio.to_thread(f.write, data)
        tail = pending + frame(_END.pack(END, kvs, revision))
        tail += bytes(-(size + len(tail)) % PAD)
        digest.update(tail)
        tail += digest.digest()
        size += len(tail)

        def finish() -> None:
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
            f.close()

        def install() -> None:
            os.replace(tmp, path)
            fsync_dir(path.parent)

        await asyncio.to_thread(finish)
        if before_install is not None:
            await before_install()
        await asyncio.to_thread(install)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    return SnapshotInfo(revision, size, digest.hexdigest())


@dataclass
class Snapshot:
    """A snapshot file's content (:func:`read_snapshot`)."""

    revision: int
    compacted: int
    leases: list[tuple[int, int]]
    base: list[KeyValue]
    log: list[KeyValue]
    size: int
    hash: int
    sha256: str
    #: Active alarms ``(member, alarm type)`` and the auth store's state, if it had any.
    alarms: set[tuple[int, int]]
    auth: bytes | None


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read and check a snapshot file; :class:`CorruptDataError` names where it is damaged."""
    p = str(path)
    with open(p, "rb") as f:
        data = f.read()
    if len(data) < len(MAGIC) + TRAILER or not data.startswith(MAGIC):
        raise CorruptDataError(p, 0, "not an etcdlite snapshot")
    body = memoryview(data)[: len(data) - TRAILER]
    sha = hashlib.sha256(body)
    if sha.digest() != data[-TRAILER:]:
        raise CorruptDataError(p, len(data) - TRAILER, "sha256 mismatch")
    revision = compacted = -2
    leases: list[tuple[int, int]] = []
    alarms: set[tuple[int, int]] = set()
    auth: bytes | None = None
    base: list[KeyValue] = []
    log: list[KeyValue] = []
    ended = False
    offset = len(MAGIC)
    try:
        for offset, payload in frames(body, len(MAGIC)):
            kind = payload[0]
            if ended:
                raise ValueError("data after the end entry")
            if kind == BASE:
                _decode_kvs(payload, base)
            elif kind == LOG:
                _decode_kvs(payload, log)
            elif kind == GRANT:
                leases.append(decode_id_int(payload))
            elif kind == ALARM:
                member, alarm, active = decode_alarm(payload)
                if active:
                    alarms.add((member, alarm))
            elif kind == AUTH:
                auth = decode_auth(payload)
            elif kind == HEADER:
                _, revision, compacted = _HEADER.unpack(payload)
            elif kind == END:
                _, kvs, end_rev = _END.unpack(payload)
                if kvs != len(base) + len(log) or end_rev != revision:
                    raise ValueError("the end entry does not match the content")
                ended = True
                rest = body[offset + FRAME.size + len(payload) :]
                if len(rest) >= PAD or any(rest):
                    raise ValueError("data after the end entry")
                break  # what follows is the padding
            else:
                raise ValueError(f"unknown entry kind {kind}")
    except BadFrame as e:
        raise CorruptDataError(p, e.offset, e.reason) from None
    except (ValueError, struct.error) as e:
        raise CorruptDataError(p, offset, str(e)) from None
    if revision < 1 or not ended:
        raise CorruptDataError(p, offset, "incomplete snapshot")
    return Snapshot(
        revision,
        compacted,
        leases,
        base,
        log,
        len(data),
        zlib.crc32(body),
        sha.hexdigest(),
        alarms,
        auth,
    )


@dataclass
class SnapshotStatus:
    """etcdctl's ``snapshot status``: hash, revision, total keys, total size. ``hash`` is a
    CRC-32 of the content (etcd's is of its bbolt file); ``total_keys`` counts every
    KeyValue kept (etcd counts the revisions in its key bucket, the same thing)."""

    hash: int
    revision: int
    total_keys: int
    total_size: int
    sha256: str


def snapshot_status(path: str | os.PathLike[str]) -> SnapshotStatus:
    """Check a snapshot file and report on it (what ``etcdlite snapshot status`` prints)."""
    snap = read_snapshot(path)
    return SnapshotStatus(
        snap.hash, snap.revision, len(snap.base) + len(snap.log), snap.size, snap.sha256
    )


def restore_snapshot(path: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> int:
    """Install a snapshot file as a new data directory (which must not exist or be empty,
    as ``etcdctl snapshot restore`` requires); returns its revision. A store opened on the
    directory starts from it, every lease with its full TTL."""
    snap = read_snapshot(path)
    target = Path(data_dir)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"data directory {str(target)!r} exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    dest = snapshot_path(target, 1)  # the state before segment 1
    tmp = dest.with_name(dest.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    fsync_dir(target)
    return snap.revision
