"""Record framing and the entries a log and a snapshot hold.

A frame is ``<u32 length><u32 crc32(payload)><payload>`` (little endian). A frame is written
whole or recognised as torn: the length says where it must end and the CRC whether every
byte of it arrived. One frame holds one entry, so a revision (a whole txn, or a lease's
deletions) is all or nothing.

A payload starts with its kind byte:

* ``R`` a revision: ``<q revision><I count>`` then per change ``<B op><q lease><I key
  length><I value length>`` key value (``op`` 1 put, 0 delete; a delete has no value);
* ``G`` a lease grant: ``<q id><q granted ttl>``;
* ``V`` a lease revoke: ``<q id><q revision>`` (the revision that deleted its keys, or 0 when
  it had none; replaying the revoke deletes them again, in the same order);
* ``C`` a compaction: ``<q revision>``;
* ``A`` an alarm raised or cleared: ``<Q member><I alarm><B active>`` (etcd keeps its alarms
  in its backend, so they outlive a restart);
* ``U`` the auth store's whole state after a change (users, roles, permissions, enabled,
  auth revision: :meth:`etcdlite.core.auth.AuthStore.dump`), kept by etcd in its backend
  too; the last one wins.

In a log segment, every batch the writer syncs starts with a marker frame ``B``:
``<7s magic><I length><I crc32>`` of the batch's frames that follow. A batch is written only
after the one before it was synced, so damage in a batch with a good one after it is
corruption, while a bad last batch is a torn write (no frame in it was acknowledged: its
sync never returned); pages reaching the disk out of order inside that batch are told apart
from damage that way.

Snapshot files add their own kinds (:mod:`etcdlite.storage.snapshot`) on the same framing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence

from ..types import KeyValue

__all__ = [
    "ALARM",
    "AUTH",
    "COMPACT",
    "FRAME",
    "FRAMED_PUT",
    "GRANT",
    "REVISION",
    "REVOKE",
    "BadFrame",
    "Change",
    "batch_intact",
    "decode_alarm",
    "decode_auth",
    "decode_revision",
    "encode_alarm",
    "encode_auth",
    "encode_batch",
    "encode_compact",
    "encode_grant",
    "encode_revision",
    "encode_revoke",
    "find_later_batch",
    "frame",
    "frames",
    "read_batch",
]

#: ``<u32 length><u32 crc32>`` before each payload.
FRAME = struct.Struct("<II")
REVISION, GRANT, REVOKE, COMPACT, BATCH = b"R"[0], b"G"[0], b"V"[0], b"C"[0], b"B"[0]
ALARM = b"A"[0]
AUTH = b"U"[0]
_BATCH_MAGIC = b"elbatch"
_BATCH = struct.Struct("<B7sII")
#: Bytes of a batch marker, frame included.
BATCH_MARKER_SIZE = FRAME.size + _BATCH.size

_REV_HEAD = struct.Struct("<BqI")
_CHANGE = struct.Struct("<BqII")
#: The head of a revision with one change: ``_REV_HEAD`` then ``_CHANGE``.
SINGLE_PUT = struct.Struct("<BqIBqII")
#: A frame's head then :data:`SINGLE_PUT`: what recovery reads first of every frame.
FRAMED_PUT = struct.Struct("<IIBqIBqII")
_ID_INT = struct.Struct("<Bqq")
_INT = struct.Struct("<Bq")
_ALARM = struct.Struct("<BQIB")

#: ``(key, value, lease)``; ``value`` is ``None`` for a delete (what
#: :meth:`etcdlite.core.mvcc.MVCC.apply_changes` replays).
Change = tuple[bytes, bytes | None, int]

#: Nothing in a log or snapshot is larger; a length above it is damage, not data.
MAX_FRAME = 1 << 31


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_revision(revision: int, changes: Sequence[KeyValue]) -> bytes:
    """One committed revision, framed."""
    if len(changes) == 1:
        kv = changes[0]
        if kv.version:
            payload = b"".join(
                (
                    _REV_HEAD.pack(REVISION, revision, 1),
                    _CHANGE.pack(1, kv.lease, len(kv.key), len(kv.value)),
                    kv.key,
                    kv.value,
                )
            )
        else:
            payload = b"".join(
                (_REV_HEAD.pack(REVISION, revision, 1), _CHANGE.pack(0, 0, len(kv.key), 0), kv.key)
            )
        return FRAME.pack(len(payload), zlib.crc32(payload)) + payload
    parts = [_REV_HEAD.pack(REVISION, revision, len(changes))]
    for kv in changes:
        if kv.version:
            parts.append(_CHANGE.pack(1, kv.lease, len(kv.key), len(kv.value)))
            parts.append(kv.key)
            parts.append(kv.value)
        else:
            parts.append(_CHANGE.pack(0, 0, len(kv.key), 0))
            parts.append(kv.key)
    payload = b"".join(parts)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_revision(payload: bytes) -> tuple[int, list[Change]]:
    """``(revision, changes)`` of an ``R`` payload; ``ValueError`` if it does not parse."""
    try:
        _, revision, count = _REV_HEAD.unpack_from(payload)
        pos = _REV_HEAD.size
        changes: list[Change] = []
        unpack = _CHANGE.unpack_from
        size = _CHANGE.size
        for _ in range(count):
            op, lease, klen, vlen = unpack(payload, pos)
            pos += size
            key = payload[pos : pos + klen]
            pos += klen
            if op:
                changes.append((key, payload[pos : pos + vlen], lease))
                pos += vlen
            else:
                changes.append((key, None, 0))
    except struct.error as e:
        raise ValueError(f"truncated revision entry: {e}") from None
    if pos != len(payload) or not count:
        raise ValueError("malformed revision entry")
    return revision, changes


def encode_grant(lease_id: int, ttl: int) -> bytes:
    return frame(_ID_INT.pack(GRANT, lease_id, ttl))


def encode_revoke(lease_id: int, revision: int) -> bytes:
    return frame(_ID_INT.pack(REVOKE, lease_id, revision))


def encode_compact(revision: int) -> bytes:
    return frame(_INT.pack(COMPACT, revision))


def encode_alarm(member: int, alarm: int, active: bool) -> bytes:
    return frame(_ALARM.pack(ALARM, member, alarm, active))


def decode_alarm(payload: bytes) -> tuple[int, int, bool]:
    """``(member, alarm, active)`` of an ``A`` payload."""
    if len(payload) != _ALARM.size:
        raise ValueError("malformed alarm entry")
    _, member, alarm, active = _ALARM.unpack(payload)
    return member, alarm, bool(active)


def encode_auth(state: bytes) -> bytes:
    return frame(bytes((AUTH,)) + state)


def decode_auth(payload: bytes) -> bytes:
    """The auth state of a ``U`` payload."""
    return payload[1:]


def encode_batch(data: bytes) -> bytes:
    """The marker that goes before a batch of frames ``data``."""
    return frame(_BATCH.pack(BATCH, _BATCH_MAGIC, len(data), zlib.crc32(data)))


def read_batch(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """``(start, end)`` of the batch whose marker is at ``pos``; :class:`BadFrame` if the
    marker does not check out or the batch runs past the end of ``data``. The batch's own
    checksum is the caller's (:func:`batch_intact`)."""
    end = len(data)
    if end - pos < BATCH_MARKER_SIZE:
        raise BadFrame(pos, "short batch marker")
    length, crc = FRAME.unpack_from(data, pos)
    body = pos + FRAME.size
    if length != _BATCH.size or zlib.crc32(data[body : body + length]) != crc:
        raise BadFrame(pos, "bad batch marker")
    kind, magic, size, _ = _BATCH.unpack_from(data, body)
    if kind != BATCH or magic != _BATCH_MAGIC:
        raise BadFrame(pos, "bad batch marker")
    start = pos + BATCH_MARKER_SIZE
    if start + size > end:
        raise BadFrame(pos, f"batch of {size} bytes runs past the end ({end})")
    return start, start + size


def batch_intact(data: bytes | memoryview, pos: int) -> bool:
    """Whether the batch whose (good) marker is at ``pos`` matches its checksum."""
    start, stop = read_batch(data, pos)
    crc: int = _BATCH.unpack_from(data, pos + FRAME.size)[3]
    return zlib.crc32(data[start:stop]) == crc


def find_later_batch(data: bytes, start: int) -> int | None:
    """Where a whole, intact batch begins after ``start``, if any: damage followed by a good
    batch is corruption, not a torn tail."""
    needle = bytes([BATCH]) + _BATCH_MAGIC
    pos = data.find(needle, start + 1)
    while pos != -1:
        at = pos - FRAME.size
        if at > start:
            try:
                if batch_intact(data, at):
                    return at
            except BadFrame:
                pass
        pos = data.find(needle, pos + 1)
    return None


def decode_id_int(payload: bytes) -> tuple[int, int]:
    """``(id, value)`` of a ``G`` or ``V`` payload."""
    if len(payload) != _ID_INT.size:
        raise ValueError("malformed lease entry")
    _, a, b = _ID_INT.unpack(payload)
    return a, b


def decode_int(payload: bytes) -> int:
    if len(payload) != _INT.size:
        raise ValueError("malformed compaction entry")
    return int(_INT.unpack(payload)[1])


class BadFrame(Exception):
    """A frame that does not check out at ``offset``: torn, or damaged."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.offset = offset
        self.reason = reason


def frames(data: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, payload)`` of each frame from ``start`` to the end of ``data``; raises
    :class:`BadFrame` at the first one that is short, too long or fails its CRC."""
    end = len(data)
    pos = start
    head = FRAME.size
    unpack = FRAME.unpack_from
    crc32 = zlib.crc32
    while pos < end:
        if end - pos < head:
            raise BadFrame(pos, "short frame header")
        length, crc = unpack(data, pos)
        if length == 0 or length > MAX_FRAME:
            raise BadFrame(pos, f"bad frame length {length}")
        body = pos + head
        if body + length > end:
            raise BadFrame(pos, f"frame of {length} bytes runs past the end ({end})")
        payload = bytes(data[body : body + length])
        if crc32(payload) != crc:
            raise BadFrame(pos, "frame checksum mismatch")
        yield pos, payload
        pos = body + length
