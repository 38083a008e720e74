"""The Client's grpclib channel: corked writes and cached HPACK blocks on the fast path."""

from __future__ import annotations

from grpclib.client import Channel
from grpclib.encoding.base import CodecBase

from .compat import fast_path_enabled
from .transport import CorkedChannel

__all__ = ["open_channel"]


def open_channel(host: str, port: int, *, codec: CodecBase) -> Channel:
    """A channel to ``host:port`` (connected on first use)."""
    if fast_path_enabled():
        return CorkedChannel(host, port, codec=codec)
    return Channel(host, port, codec=codec)
