"""The grpclib codec of etcdlite's server: betterproto2 messages or pre-encoded bytes.

Hot responses are encoded by :mod:`etcdlite.wire.fastpb` and handed to grpclib as ``bytes``,
which pass through untouched. The hot requests (Put, Range, the lease requests) are
decoded by a table-driven decoder here, the rest by betterproto2 after a structural check;
both after a size check that answers like grpc-go's receive limit, and both refuse
malformed bytes with the texts of etcd's (gogo-protobuf) decoder.
"""

from __future__ import annotations

from typing import Any

import betterproto2
from grpclib.const import Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

from ..errors import (
    GRPC_MESSAGE_TOO_LARGE,
    GRPC_STREAM_UNMARSHAL_FAILED,
    GRPC_UNMARSHAL_FAILED,
    PROTO_ILLEGAL_TAG,
    PROTO_INTEGER_OVERFLOW,
    PROTO_UNEXPECTED_EOF,
    PROTO_WRONG_WIRE_TYPE,
)
from .pb import etcdserverpb as pb

__all__ = [
    "ClientCodec",
    "DecodeError",
    "EtcdCodec",
    "MalformedMessage",
    "check_wire",
    "decode_flat",
]


class MalformedMessage(ValueError):
    """The bytes are not a well-formed protobuf message (texts as Go's decoder words them)."""


class DecodeError(GRPCError):
    """A request message that does not decode: INTERNAL with grpc-go's text for a unary
    RPC; a streaming RPC words it differently (:meth:`stream_error`)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(Status.INTERNAL, GRPC_UNMARSHAL_FAILED.format(error=cause))
        self.cause = cause

    def stream_error(self) -> GRPCError:
        return GRPCError(Status.INTERNAL, GRPC_STREAM_UNMARSHAL_FAILED.format(error=self.cause))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise MalformedMessage(PROTO_UNEXPECTED_EOF)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise MalformedMessage(PROTO_INTEGER_OVERFLOW)


def _tag(data: bytes, pos: int, message_type: Any) -> tuple[int, int, int]:
    """(field number, wire type, position after the tag); illegal tags refused."""
    tag, pos = _varint(data, pos)
    number, wire_type = tag >> 3, tag & 7
    if number == 0 or wire_type in (3, 4, 6, 7):
        raise MalformedMessage(
            PROTO_ILLEGAL_TAG.format(message=message_type.__name__, number=number, wire=wire_type)
        )
    return number, wire_type, pos


def _skip(data: bytes, pos: int, wire_type: int) -> int:
    """The position after a field's value; a value cut off is refused."""
    if wire_type == 0:
        return _varint(data, pos)[1]
    if wire_type == 2:
        n, pos = _varint(data, pos)
        pos += n
    else:
        pos += 8 if wire_type == 1 else 4
    if pos > len(data):
        raise MalformedMessage(PROTO_UNEXPECTED_EOF)
    return pos


def check_wire(data: bytes, message_type: Any) -> None:
    """Walk ``data`` as a ``message_type`` (and every message-typed field, recursively):
    every tag valid, every varint and length-delimited field complete."""
    meta = message_type._betterproto
    names = meta.field_name_by_number
    pos, end = 0, len(data)
    while pos < end:
        field, wire_type, pos = _tag(data, pos, message_type)
        if wire_type != 2:
            pos = _skip(data, pos, wire_type)
        else:
            n, pos = _varint(data, pos)
            if pos + n > end:
                raise MalformedMessage(PROTO_UNEXPECTED_EOF)
            name = names.get(field)
            if name is not None:
                fmeta = meta.meta_by_field_name[name]
                if fmeta.proto_type == "message" and fmeta.map_meta is None:
                    check_wire(data[pos : pos + n], meta.cls_by_field[name])
            pos += n


# --- flat messages of scalar fields, decoded without betterproto2 --------------------------

_BYTES, _INT64, _BOOL, _ENUM = range(4)
#: message type → field number → (attribute, kind, enum members by value)
_FLAT: dict[type, dict[int, tuple[str, int, Any]]] = {
    pb.PutRequest: {
        1: ("key", _BYTES, None),
        2: ("value", _BYTES, None),
        3: ("lease", _INT64, None),
        4: ("prev_kv", _BOOL, None),
        5: ("ignore_value", _BOOL, None),
        6: ("ignore_lease", _BOOL, None),
    },
    pb.RangeRequest: {
        1: ("key", _BYTES, None),
        2: ("range_end", _BYTES, None),
        3: ("limit", _INT64, None),
        4: ("revision", _INT64, None),
        5: ("sort_order", _ENUM, {m.value: m for m in pb.RangeRequestSortOrder}),
        6: ("sort_target", _ENUM, {m.value: m for m in pb.RangeRequestSortTarget}),
        7: ("serializable", _BOOL, None),
        8: ("keys_only", _BOOL, None),
        9: ("count_only", _BOOL, None),
        10: ("min_mod_revision", _INT64, None),
        11: ("max_mod_revision", _INT64, None),
        12: ("min_create_revision", _INT64, None),
        13: ("max_create_revision", _INT64, None),
    },
    pb.LeaseGrantRequest: {1: ("ttl", _INT64, None), 2: ("id", _INT64, None)},
    pb.LeaseRevokeRequest: {1: ("id", _INT64, None)},
    pb.LeaseKeepAliveRequest: {1: ("id", _INT64, None)},
    pb.LeaseTimeToLiveRequest: {1: ("id", _INT64, None), 2: ("keys", _BOOL, None)},
}
#: Go's field names where they are not the title-cased attribute (gogo names them).
_GO_NAMES = {"ttl": "TTL", "id": "ID"}


def decode_flat(data: bytes, message_type: Any) -> Any:
    """``data`` as one of the :data:`_FLAT` message types (the last occurrence of a field
    wins, unknown fields are skipped, as protobuf decoders do)."""
    fields = _FLAT[message_type]
    values: dict[str, Any] = {}
    pos, end = 0, len(data)
    while pos < end:
        number, wire_type, pos = _tag(data, pos, message_type)
        spec = fields.get(number)
        if spec is None:  # unknown: skip it
            pos = _skip(data, pos, wire_type)
            continue
        name, kind, enum = spec
        if (wire_type == 2) != (kind == _BYTES) or wire_type not in (0, 2):
            go_name = _GO_NAMES.get(name) or name.title().replace("_", "")
            raise MalformedMessage(PROTO_WRONG_WIRE_TYPE.format(wire=wire_type, field=go_name))
        if kind == _BYTES:
            n, pos = _varint(data, pos)
            if pos + n > end:
                raise MalformedMessage(PROTO_UNEXPECTED_EOF)
            values[name] = data[pos : pos + n]
            pos += n
            continue
        v, pos = _varint(data, pos)
        if kind == _BOOL:
            values[name] = v != 0
            continue
        v &= (1 << 64) - 1
        if v >= 1 << 63:
            v -= 1 << 64
        if kind == _ENUM:
            v = enum.get(v, v)  # an unknown enum value stays a number, as in proto3
        values[name] = v
    return message_type(**values)


class EtcdCodec(CodecBase):
    __content_subtype__ = "proto"

    def __init__(self, max_receive_bytes: int) -> None:
        self.max_receive_bytes = max_receive_bytes

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        assert isinstance(message, betterproto2.Message)
        return bytes(message)

    def check_size(self, size: int) -> None:
        """Refuse a message of ``size`` bytes over the receive limit, as grpc-go does."""
        if size > self.max_receive_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                GRPC_MESSAGE_TOO_LARGE.format(size=size, limit=self.max_receive_bytes),
            )

    def decode(self, data: bytes, message_type: Any) -> Any:
        self.check_size(len(data))
        try:
            # betterproto2 accepts truncated fields and illegal tags (a cut-off Put would
            # store its partial value): check the wire structure first, as Go's decoder does.
            if message_type in _FLAT:
                msg = decode_flat(data, message_type)
            else:
                check_wire(data, message_type)
                msg = message_type.parse(data)
        except Exception as e:
            raise DecodeError(e) from e
        msg._etcdlite_size = len(data)
        return msg


class ClientCodec(CodecBase):
    """The Client's codec: betterproto2 messages, except that a reply type of ``bytes``
    leaves the reply undecoded for :mod:`etcdlite.wire.fastpb`."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is bytes:
            return data
        return message_type.parse(data)
