"""The Client's grpclib channels: corked writes and cached HPACK blocks on the fast path."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from typing import Any

from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase

from .compat import fast_path_enabled, missing_attributes
from .transport import CorkedChannel

__all__ = [
    "connect_channel",
    "lean_channel",
    "open_channel",
    "undo_lost_connection_cancel",
]


def open_channel(
    host: str,
    port: int,
    *,
    codec: CodecBase,
    ssl: _ssl.SSLContext | None = None,
    keepalive_time: float | None = None,
    keepalive_timeout: float | None = None,
) -> Channel:
    """A channel to ``host:port`` (connected on first use).

    ``keepalive_time``/``keepalive_timeout``: HTTP/2 PINGs every ``keepalive_time`` seconds
    while calls are open; a PING unanswered for ``keepalive_timeout`` closes the connection,
    so a member that accepts TCP but stopped answering is noticed.
    """
    config = None
    if keepalive_time is not None:
        config = Configuration(
            _keepalive_time=keepalive_time,
            _keepalive_timeout=keepalive_timeout or 20.0,
            _keepalive_permit_without_calls=False,
            _http2_max_pings_without_data=0,
        )
    if fast_path_enabled():
        return CorkedChannel(host, port, codec=codec, ssl=ssl, config=config)
    return Channel(host, port, codec=codec, ssl=ssl, config=config)


def lean_channel(channel: Channel) -> bool:
    """Whether ``channel`` is etcdlite's fast-path channel, whose unary calls may take the
    lean path of :mod:`etcdlite._grpc.call` (and has the attributes that path reads)."""
    return isinstance(channel, CorkedChannel) and not missing_attributes("Channel", channel)


async def connect_channel(channel: Channel) -> None:
    """Make (or reuse) ``channel``'s connection; raises ``OSError`` if it cannot be made.

    A call that fails here provably never left the client, so even a mutation may be
    retried elsewhere.
    """
    await channel.__connect__()


def undo_lost_connection_cancel(task: asyncio.Task[Any], cancelling: int) -> None:
    """grpclib reports a lost connection by cancelling the calling task and turning the
    ``CancelledError`` into ``StreamTerminatedError``, without ``uncancel()``: the task's
    cancel count stays raised and an enclosing ``asyncio.timeout`` would then let its own
    ``CancelledError`` escape instead of raising ``TimeoutError``. Restore the count
    (``cancelling``: the task's count before the call)."""
    while task.cancelling() > cancelling:
        task.uncancel()
