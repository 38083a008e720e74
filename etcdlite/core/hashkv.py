"""etcd's HashKV: a CRC-32C over the backend's key bucket, computed the way etcd does.

etcd (3.4, ``mvcc.store.HashByRev``) hashes the bucket name ``key``, then, in the backend's
order, every stored revision up to the requested one: the revision's 17-byte key (main and
sub revision, 8 bytes big-endian each, with ``_`` between; a deletion adds ``t``) and the
marshalled ``mvccpb.KeyValue`` (a deletion stores the key alone). At or below the
compaction point a revision counts only if it is still its key's newest at the hashed
revision and not a deletion (etcd filters them with its key index's ``Keep`` at that
revision: checked against etcd 3.4.23). ``etcdctl endpoint hashkv`` compares the values
across members.

Where etcdlite's answer differs: compaction does not keep a revision's position within a
multi-key txn (its sub revision) for the revisions it keeps below the compaction point, so
such a revision is hashed with sub revision 0; and a deletion *at* the compaction point,
which etcdlite keeps for watches (etcd-io/etcd#18089), is left out as etcd leaves it out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..types import KeyValue
from .mvcc import MVCC

__all__ = ["crc32c", "hash_entries", "hash_kv"]


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()
_REV = struct.Struct(">Q")


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as Go's ``crc32.MakeTable(crc32.Castagnoli)``; ``crc`` carries
    a running value."""
    table = _TABLE
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _encode(kv: KeyValue) -> bytes:
    """``mvccpb.KeyValue`` as Go marshals it (zero fields left out)."""
    out = [b"\x0a", _varint(len(kv.key)), kv.key]
    for field, value in (
        (0x10, kv.create_revision),
        (0x18, kv.mod_revision),
        (0x20, kv.version),
    ):
        if value:
            out += (bytes([field]), _varint(value))
    if kv.value:
        out += (b"\x2a", _varint(len(kv.value)), kv.value)
    if kv.lease:
        out += (b"\x30", _varint(kv.lease & 0xFFFFFFFFFFFFFFFF))
    return b"".join(out)


def hash_entries(mvcc: MVCC, revision: int) -> Iterator[bytes]:
    """The byte strings etcd hashes for ``revision``, in order (after ``b"key"``)."""
    compacted = mvcc.compacted_revision
    for kv in sorted(mvcc.kept_below_compaction(), key=lambda kv: kv.mod_revision):
        if kv.mod_revision <= revision and mvcc.is_latest_at(kv, revision):
            yield _REV.pack(kv.mod_revision) + b"_" + _REV.pack(0)
            yield _encode(kv)
    sub = 0
    last = -1
    for kv in mvcc.changes:
        rev = kv.mod_revision
        if rev > revision:
            break
        sub = sub + 1 if rev == last else 0
        last = rev
        tombstone = not kv.version
        if rev <= compacted and not mvcc.is_latest_at(kv, revision):
            continue  # at or below the compaction point: only what etcd's Keep keeps
        key = _REV.pack(rev) + b"_" + _REV.pack(sub)
        if tombstone:
            yield key + b"t"
            yield _encode(KeyValue(kv.key, 0, 0, 0, b"", 0))
        else:
            yield key
            yield _encode(kv)


def hash_kv(mvcc: MVCC, revision: int) -> int:
    crc = crc32c(b"key")
    for piece in hash_entries(mvcc, revision):
        crc = crc32c(piece, crc)
    return crc
