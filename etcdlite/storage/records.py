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
* ``C`` a compaction: ``<q revision>``.

Snapshot files add their own kinds (:mod:`etcdlite.storage.snapshot`) on the same framing.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence

from ..types import KeyValue

__all__ = [
    "COMPACT",
    "FRAME",
    "GRANT",
    "REVISION",
    "REVOKE",
    "BadFrame",
    "Change",
    "decode_revision",
    "encode_compact",
    "encode_grant",
    "encode_revision",
    "encode_revoke",
    "frame",
    "frames",
]

#: ``<u32 length><u32 crc32>`` before each payload.
FRAME = struct.Struct("<II")
REVISION, GRANT, REVOKE, COMPACT = b"R"[0], b"G"[0], b"V"[0], b"C"[0]

_REV_HEAD = struct.Struct("<BqI")
_CHANGE = struct.Struct("<BqII")
#: The head of a revision with one change: ``_REV_HEAD`` then ``_CHANGE``.
SINGLE_PUT = struct.Struct("<BqIBqII")
_ID_INT = struct.Struct("<Bqq")
_INT = struct.Struct("<Bq")

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


def find_later_frame(data: bytes, start: int, revisions: Sequence[int]) -> int | None:
    """Where a whole, valid revision frame for one of ``revisions`` begins after ``start``,
    if any: a damaged frame followed by good ones is corruption, not a torn tail."""
    head = FRAME.size
    for rev in revisions:
        needle = _INT.pack(REVISION, rev)  # kind byte and revision start an R payload
        pos = data.find(needle, start + head)
        while pos != -1:
            at = pos - head
            if at >= start:
                length, crc = FRAME.unpack_from(data, at)
                body = at + head
                if 0 < length <= len(data) - body and zlib.crc32(data[body : body + length]) == crc:
                    return at
            pos = data.find(needle, pos + 1)
    return None
