"""The grpclib codec of etcdlite's server: betterproto2 messages or pre-encoded bytes.

Hot responses are encoded by :mod:`etcdlite.wire.fastpb` and handed to grpclib as ``bytes``,
which pass through untouched. Requests are decoded by betterproto2, after a size check that
answers like grpc-go's receive limit.
"""

from __future__ import annotations

from typing import Any

import betterproto2
from grpclib.const import Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

__all__ = ["ClientCodec", "EtcdCodec"]


class EtcdCodec(CodecBase):
    __content_subtype__ = "proto"

    def __init__(self, max_receive_bytes: int) -> None:
        self.max_receive_bytes = max_receive_bytes

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        assert isinstance(message, betterproto2.Message)
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if len(data) > self.max_receive_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"grpc: received message larger than max ({len(data)} vs. "
                f"{self.max_receive_bytes})",
            )
        try:
            msg = message_type.parse(data)
        except Exception as e:
            # grpc-go: codes.Internal "grpc: error unmarshalling request: ..."
            raise GRPCError(Status.INTERNAL, f"grpc: error unmarshalling request: {e}") from e
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
