"""grpclib's HTTP/2 protocol with writes corked per event-loop turn (Client and server).

grpclib writes each HTTP/2 step to the socket at once: a unary request leaves as two TCP
segments (HEADERS, then DATA), and the server wakes up, reads and parses twice per request.
grpc-go batches what one turn of its writer produced into one write; :class:`CorkedProtocol`
does the same for asyncio: everything written during one event-loop turn leaves in one
``send`` at the start of the next turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpclib.client import Channel
from grpclib.client import Handler as ClientHandler
from grpclib.protocol import H2Protocol

__all__ = ["CorkedChannel", "CorkedProtocol", "CorkedTransport"]


class CorkedTransport:
    """The part of ``asyncio.Transport`` grpclib uses, with writes joined per loop turn."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending = []
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class CorkedProtocol(H2Protocol):
    """grpclib's ``H2Protocol`` over a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(CorkedTransport(transport))  # type: ignore[arg-type]


class CorkedChannel(Channel):
    """grpclib's client ``Channel`` over :class:`CorkedProtocol` connections."""

    def _protocol_factory(self) -> H2Protocol:
        return CorkedProtocol(ClientHandler(), self._config, self._h2_config)
