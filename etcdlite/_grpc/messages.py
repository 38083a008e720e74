"""Receiving a request message the way grpc-go does, on every server request path.

grpc-go's rules, each answered with its code and text (``etcdlite.errors``):

* the stream ends before a message starts: no message (``None``);
* it ends inside the 5-byte prefix or inside the body the prefix announced: "unexpected
  EOF", UNKNOWN on a unary RPC, INTERNAL on a streaming one;
* the compressed flag, in a request that names no ``grpc-encoding``: INTERNAL "grpc:
  compressed flag set with identity or empty encoding" (a request that names one is
  refused before any message, see :mod:`.unary`);
* a length over the receive limit: RESOURCE_EXHAUSTED, decided from the prefix before the
  body is buffered;
* bytes that do not decode: INTERNAL, worded per cardinality by
  :class:`~etcdlite.wire.codec.DecodeError`.

On the fast path the prefix and body are read from grpclib's protocol stream here; on
grpclib's own path its ``recv_message`` reads them (the size is then checked after the body
is buffered) and its failures are translated to the same answers.
"""

from __future__ import annotations

from typing import Any

from grpclib.encoding.base import CodecBase
from grpclib.protocol import Stream as H2Stream

from ..errors import GrpcCompressedFlagError, GrpcTruncatedMessageError, StatusCode
from ..wire.codec import DecodeError

__all__ = ["read_message", "recv_message"]


def _truncated(unary: bool) -> GrpcTruncatedMessageError:
    error = GrpcTruncatedMessageError()
    if not unary:
        error.code = StatusCode.INTERNAL
    return error


async def read_message(
    stream: H2Stream, codec: CodecBase, message_type: Any, *, unary: bool
) -> Any | None:
    """The next message of a protocol-level ``stream`` (``None`` at its clean end)."""
    try:
        prefix = await stream.recv_data(5)
        if not prefix:
            return None
        if len(prefix) < 5:
            raise _truncated(unary)
        if prefix[0]:
            raise GrpcCompressedFlagError()
        size = int.from_bytes(prefix[1:5], "big")
        check_size = getattr(codec, "check_size", None)
        if check_size is not None:
            check_size(size)  # from the prefix, before the body is buffered
        data = await stream.recv_data(size) if size else b""
    except AssertionError:  # grpclib's buffer: the stream ended inside the message
        raise _truncated(unary) from None
    if len(data) < size:
        raise _truncated(unary)
    try:
        return codec.decode(data, message_type)
    except DecodeError as e:
        if unary:
            raise
        raise e.stream_error() from None


async def recv_message(stream: Any, *, unary: bool, fast: bool) -> Any | None:
    """The next request message of a grpclib server ``Stream`` (``None`` at its end)."""
    if fast:
        return await read_message(stream._stream, stream._codec, stream._recv_type, unary=unary)
    try:
        return await stream.recv_message()
    except AssertionError:  # grpclib: the stream ended inside the message
        raise _truncated(unary) from None
    except NotImplementedError:  # grpclib: the compressed flag
        raise GrpcCompressedFlagError() from None
    except DecodeError as e:
        if unary:
            raise
        raise e.stream_error() from None
