"""Hand-written protobuf for the Client's hot calls: requests encoded, replies decoded.

betterproto2 builds a message object and walks its field metadata on every encode and
decode (~100 µs of a small call's client CPU). The Client's hot requests (Put, Range,
DeleteRange, LeaseGrant, LeaseKeepAlive) are encoded here straight from its arguments and
the hot replies (Put, DeleteRange, LeaseGrant, LeaseKeepAlive, Watch; Range is
:func:`etcdlite.wire.fastpb.decode_range_response`) decoded straight into etcdlite's result
types. The encodings are byte-for-byte what protobuf (and betterproto2) produce for etcd's
messages: fields in number order, proto3 defaults omitted, negative int64 and enum values
as ten-byte varints. The decoders accept any valid encoding (fields in any order, repeated
scalars: the last wins, unknown fields skipped), as protobuf decoders do; tests check both
against betterproto2.
"""

from __future__ import annotations

from ..ops import DeleteRangeRequest, RangeRequest
from ..types import (
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    PutResponse,
    ResponseHeader,
    WatchResponse,
)
from .fastpb import _int64, _read_varint, _skip, decode_header, decode_kv, varint

__all__ = [
    "decode_delete_range_response",
    "decode_lease_grant_response",
    "decode_lease_keepalive_response",
    "decode_put_response",
    "decode_watch_response",
    "encode_delete_range_request",
    "encode_lease_grant_request",
    "encode_lease_keepalive_request",
    "encode_put_request",
    "encode_range_request",
]


def _ints(parts: list[bytes], tag: bytes, n: int) -> None:
    if n:
        parts += (tag, varint(n))


def _bytes(parts: list[bytes], tag: bytes, data: bytes) -> None:
    if data:
        parts += (tag, varint(len(data)), data)


# --- requests ------------------------------------------------------------------------------


def encode_put_request(
    key: bytes,
    value: bytes,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> bytes:
    """``etcdserverpb.PutRequest``: key 1, value 2, lease 3, prev_kv 4, ignore_value 5,
    ignore_lease 6."""
    parts: list[bytes] = []
    _bytes(parts, b"\x0a", key)
    _bytes(parts, b"\x12", value)
    _ints(parts, b"\x18", lease)
    if prev_kv:
        parts.append(b"\x20\x01")
    if ignore_value:
        parts.append(b"\x28\x01")
    if ignore_lease:
        parts.append(b"\x30\x01")
    return b"".join(parts)


def encode_range_request(req: RangeRequest) -> bytes:
    """``etcdserverpb.RangeRequest`` (fields 1–13 in order)."""
    parts: list[bytes] = []
    _bytes(parts, b"\x0a", req.key)
    _bytes(parts, b"\x12", req.range_end)
    _ints(parts, b"\x18", req.limit)
    _ints(parts, b"\x20", req.revision)
    _ints(parts, b"\x28", int(req.sort_order))
    _ints(parts, b"\x30", int(req.sort_target))
    if req.serializable:
        parts.append(b"\x38\x01")
    if req.keys_only:
        parts.append(b"\x40\x01")
    if req.count_only:
        parts.append(b"\x48\x01")
    _ints(parts, b"\x50", req.min_mod_revision)
    _ints(parts, b"\x58", req.max_mod_revision)
    _ints(parts, b"\x60", req.min_create_revision)
    _ints(parts, b"\x68", req.max_create_revision)
    return b"".join(parts)


def encode_delete_range_request(req: DeleteRangeRequest) -> bytes:
    """``etcdserverpb.DeleteRangeRequest``: key 1, range_end 2, prev_kv 3."""
    parts: list[bytes] = []
    _bytes(parts, b"\x0a", req.key)
    _bytes(parts, b"\x12", req.range_end)
    if req.prev_kv:
        parts.append(b"\x18\x01")
    return b"".join(parts)


def encode_lease_grant_request(ttl: int, lease_id: int = 0) -> bytes:
    """``etcdserverpb.LeaseGrantRequest``: TTL 1, ID 2."""
    parts: list[bytes] = []
    _ints(parts, b"\x08", ttl)
    _ints(parts, b"\x10", lease_id)
    return b"".join(parts)


def encode_lease_keepalive_request(lease_id: int) -> bytes:
    """``etcdserverpb.LeaseKeepAliveRequest``: ID 1."""
    return b"\x08" + varint(lease_id) if lease_id else b""


# --- replies -------------------------------------------------------------------------------


def decode_put_response(data: bytes) -> PutResponse:
    """``etcdserverpb.PutResponse``: header 1, prev_kv 2."""
    header = ResponseHeader()
    prev: KeyValue | None = None
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag == 0x0A or tag == 0x12:
            n, pos = _read_varint(data, pos)
            if tag == 0x0A:
                header = decode_header(data, pos, pos + n)
            else:
                prev = decode_kv(data, pos, pos + n)
            pos += n
        else:
            pos = _skip(data, pos, tag & 7)
    return PutResponse(header, prev)


def decode_delete_range_response(data: bytes) -> DeleteRangeResponse:
    """``etcdserverpb.DeleteRangeResponse``: header 1, deleted 2, prev_kvs 3."""
    header = ResponseHeader()
    deleted = 0
    prev: list[KeyValue] = []
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag == 0x0A or tag == 0x1A:
            n, pos = _read_varint(data, pos)
            if tag == 0x0A:
                header = decode_header(data, pos, pos + n)
            else:
                prev.append(decode_kv(data, pos, pos + n))
            pos += n
        elif tag == 0x10:
            v, pos = _read_varint(data, pos)
            deleted = _int64(v)
        else:
            pos = _skip(data, pos, tag & 7)
    return DeleteRangeResponse(header, deleted, prev)


def decode_lease_grant_response(data: bytes) -> tuple[ResponseHeader, int, int, str]:
    """``etcdserverpb.LeaseGrantResponse`` as (header, ID, TTL, error): header 1, ID 2,
    TTL 3, error 4."""
    header = ResponseHeader()
    lease_id = ttl = 0
    error = ""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag == 0x0A or tag == 0x22:
            n, pos = _read_varint(data, pos)
            if tag == 0x0A:
                header = decode_header(data, pos, pos + n)
            else:
                error = data[pos : pos + n].decode("utf-8", "replace")
            pos += n
        elif tag == 0x10:
            v, pos = _read_varint(data, pos)
            lease_id = _int64(v)
        elif tag == 0x18:
            v, pos = _read_varint(data, pos)
            ttl = _int64(v)
        else:
            pos = _skip(data, pos, tag & 7)
    return header, lease_id, ttl, error


def decode_lease_keepalive_response(data: bytes) -> tuple[ResponseHeader, int, int]:
    """``etcdserverpb.LeaseKeepAliveResponse`` as (header, ID, TTL): the grant reply's
    fields 1–3."""
    header, lease_id, ttl, _ = decode_lease_grant_response(data)
    return header, lease_id, ttl


_EVENT_TYPES = {0: EventType.PUT, 1: EventType.DELETE}


def _decode_event(data: bytes, pos: int, end: int) -> Event:
    """``mvccpb.Event``: type 1, kv 2, prev_kv 3 (a missing kv is an empty one, as
    :func:`etcdlite.wire.convert.event_from_pb` makes it)."""
    kind = 0
    kv: KeyValue | None = None
    prev: KeyValue | None = None
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag == 0x12 or tag == 0x1A:
            n, pos = _read_varint(data, pos)
            if tag == 0x12:
                kv = decode_kv(data, pos, pos + n)
            else:
                prev = decode_kv(data, pos, pos + n)
            pos += n
        elif tag == 0x08:
            v, pos = _read_varint(data, pos)
            kind = _int64(v)
        else:
            pos = _skip(data, pos, tag & 7)
    kind_enum = _EVENT_TYPES.get(kind)
    return Event(
        kind_enum if kind_enum is not None else EventType(kind),
        kv if kv is not None else KeyValue(b""),
        prev,
    )


def decode_watch_response(data: bytes) -> WatchResponse:
    """``etcdserverpb.WatchResponse``: header 1, watch_id 2, created 3, canceled 4,
    compact_revision 5, cancel_reason 6, fragment 7, events 11."""
    header = ResponseHeader()
    watch_id = compact = 0
    created = canceled = fragment = False
    reason = ""
    events: list[Event] = []
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag & 7 == 2:
            n, pos = _read_varint(data, pos)
            if tag == 0x5A:
                events.append(_decode_event(data, pos, pos + n))
            elif tag == 0x0A:
                header = decode_header(data, pos, pos + n)
            elif tag == 0x32:
                reason = data[pos : pos + n].decode("utf-8", "replace")
            pos += n
        elif tag & 7 == 0:
            v, pos = _read_varint(data, pos)
            if tag == 0x10:
                watch_id = _int64(v)
            elif tag == 0x18:
                created = v != 0
            elif tag == 0x20:
                canceled = v != 0
            elif tag == 0x28:
                compact = _int64(v)
            elif tag == 0x38:
                fragment = v != 0
        else:
            pos = _skip(data, pos, tag & 7)
    return WatchResponse(
        header,
        watch_id,
        events,
        created=created,
        canceled=canceled,
        compact_revision=compact,
        cancel_reason=reason,
        fragment=fragment,
    )
