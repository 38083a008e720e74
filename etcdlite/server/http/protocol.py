"""HTTP/1.x connections on the client port, parsed by h11, answered by :class:`HttpGateway`.

The server's connection sniff (``etcdlite._grpc.server``) hands a connection here when it
opens with an HTTP/1.x request line. Requests on one connection are answered in order
(keep-alive, pipelining); a request's body reaches the gateway as it arrives, so a watch
can go on reading requests while its response streams. An HTTP/1.0 client gets an
``HTTP/1.0`` status line, as from Go's server. A request h11 cannot parse gets
``400 Bad Request`` and the connection is closed, as Go does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from http import HTTPStatus

import h11

from ..._grpc.peer import certificate_common_name, transport_certificate
from .gateway import HttpGateway, HttpResponse

__all__ = ["HttpProtocol"]

#: Go's net/http limit on request headers (1 MiB).
MAX_HEADER_BYTES = 1 << 20


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.x connection."""

    def __init__(self, gateway: HttpGateway) -> None:
        self._gateway = gateway
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._body: asyncio.Queue[bytes | None] | None = None
        self._paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        self._conn.receive_data(b"")
        self._process()
        return self._task is not None  # a streaming answer may go on after a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._can_write.set()
        if self._body is not None:
            self._body.put_nowait(None)
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def close(self) -> None:
        """Close the connection (the server is stopping)."""
        if self._transport is not None:
            self._transport.close()

    # --- requests ---------------------------------------------------------------------

    def _process(self) -> None:
        while self._transport is not None:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError:
                if self._task is None:
                    self._write_raw(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; "
                        b"charset=utf-8\r\nConnection: close\r\n\r\n"
                        b"400 Bad Request"
                    )
                self.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if self._conn.they_are_waiting_for_100_continue:  # curl, for bodies > 1 KiB
                    self._send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                    )
                self._body = asyncio.Queue()
                self._task = asyncio.ensure_future(self._serve(event, self._body))
            elif isinstance(event, h11.Data):
                if self._body is not None:
                    self._body.put_nowait(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                if self._body is not None:
                    self._body.put_nowait(None)
                if isinstance(event, h11.ConnectionClosed):
                    return

    async def _serve(self, request: h11.Request, body: asyncio.Queue[bytes | None]) -> None:
        http10 = request.http_version == b"1.0"
        try:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
            resp = await self._gateway.handle(
                request.method.decode("ascii"),
                request.target.decode("latin-1"),
                headers,
                _drain(body),
                common_name=certificate_common_name(transport_certificate(self._transport)),
            )
            await self._respond(resp, http10=http10, head=request.method == b"HEAD")
        except asyncio.CancelledError:
            return
        except Exception:  # pragma: no cover - a bug: answer 500 and drop the connection
            if self._conn.our_state is h11.SEND_RESPONSE:
                self._send(
                    h11.Response(
                        status_code=500,
                        headers=[("Content-Length", "0")],
                        reason=b"Internal Server Error",
                    ),
                    http10=http10,
                )
            self.close()
            return
        finally:
            self._task = None
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self._body = None
            self._process()
        else:
            self.close()

    async def _respond(self, resp: HttpResponse, *, http10: bool, head: bool) -> None:
        headers = list(resp.headers)
        trailers = resp.trailers if not http10 else []
        body = resp.body
        if isinstance(body, bytes) and not trailers:
            headers.append(("Content-Length", str(len(body))))
        elif trailers or (not http10 and not isinstance(body, bytes)):
            headers.append(("Transfer-Encoding", "chunked"))
        reason = HTTPStatus(resp.status).phrase.encode()
        self._send(
            h11.Response(status_code=resp.status, headers=headers, reason=reason), http10=http10
        )
        if isinstance(body, bytes):
            if body and not head:
                self._send(h11.Data(data=body))
        else:
            try:
                async for chunk in body:
                    if self._transport is None:
                        return
                    self._send(h11.Data(data=chunk))
                    if not self._can_write.is_set():
                        await self._can_write.wait()
            finally:
                with contextlib.suppress(Exception):
                    await body.aclose()
        self._send(h11.EndOfMessage(headers=trailers))

    def _send(self, event: h11.Event, *, http10: bool = False) -> None:
        data = self._conn.send(event)
        if data and http10 and isinstance(event, h11.Response):
            data = b"HTTP/1.0" + data[8:]  # h11 always writes HTTP/1.1; Go echoes 1.0
        if data:
            self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


async def _drain(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while True:
        chunk = await queue.get()
        if chunk is None:
            return
        yield chunk
