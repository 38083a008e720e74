"""grpclib's ``Server``, subclassed once: etcd's answers to unknown methods, the lean unary
path and corked writes per connection, TLS, and the connections it made (to close on stop).

TLS is terminated here, per accepted TCP connection, with asyncio's public ``start_tls``
rather than by handing grpclib's ``start`` an ``ssl`` context: that way a connection is
counted against ``max_connections`` from the moment it is accepted, through its handshake
(bounded by ``handshake_timeout``), and a failed handshake gives its slot back at once.
With ``ssl`` passed to ``create_server`` asyncio would only tell the protocol about
connections whose handshake succeeded, so a flood of handshakes that never finish would go
uncounted. What the handshake decrypts goes through the same sniff as a plaintext
connection (:class:`_Sniff`), then the same guard, preface timeout and protocols.

Overridden grpclib internals, all listed in :mod:`.compat`: ``Server._protocol_factory``
(each connection's protocol and handler), ``Server._mapping`` (looked up with ``get`` per
request), ``Server._server`` (the bound sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from ..errors import GRPC_UNKNOWN_METHOD, GRPC_UNKNOWN_SERVICE
from .compat import fast_path_enabled, missing_attributes, warn_off
from .guard import Limits
from .peer import track_request
from .transport import ServerProtocol
from .unary import FastMethod, Interceptor, UnaryHandler

__all__ = ["GrpcServer"]


class _Servable:
    def __init__(self, mapping: dict[str, Handler]) -> None:
        self._mapping = mapping

    def __mapping__(self) -> dict[str, Handler]:
        return self._mapping


class _MethodTable(dict[str, Handler]):
    """grpclib's method table, answering an unknown method or service like grpc-go
    (grpclib's own answer, "Method not found" without a content-type, reads as Unknown in
    grpc-go clients). Every handler records its stream as the request's own
    (:func:`~.peer.track_request`), so :func:`~.peer.peer_common_name` finds it."""

    def __init__(self, mapping: dict[str, Handler]) -> None:
        super().__init__(
            (path, h._replace(func=track_request(h.func))) for path, h in mapping.items()
        )

    def get(self, path: str, default: Any = None) -> Handler | None:  # type: ignore[override]
        handler = super().get(path)
        if handler is not None:
            return handler
        service, _, method = path.lstrip("/").rpartition("/")
        known = any(p.startswith(f"/{service}/") for p in self)
        text = (
            GRPC_UNKNOWN_METHOD.format(method=method, service=service)
            if known
            else GRPC_UNKNOWN_SERVICE.format(service=service or method)
        )

        async def unknown(stream: Stream[Any, Any]) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, text)

        return Handler(unknown, Cardinality.UNARY_UNARY, bytes, bytes)


#: Default bound on concurrent client connections (``--max-connections``).
DEFAULT_MAX_CONNECTIONS = 5000
#: Listen backlog: bursts of connects wait in the kernel instead of being dropped.
BACKLOG = 4096

log = logging.getLogger("etcdlite.server")


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Counted(asyncio.Protocol):
    """A connection's protocol, counted in its server's ``connections`` while open.

    On a TLS server it first runs the handshake (counted too: see the module docstring);
    the inner protocol sees only the decrypted stream, from ``connection_made`` on."""

    __slots__ = ("_counted", "_early", "_server", "_started", "inner")

    def __init__(self, server: GrpcServer, inner: asyncio.Protocol) -> None:
        self._server = server
        self.inner = inner
        self._counted = False
        self._started = False  # whether inner.connection_made was called
        # TLS: what the SSL layer decrypted before start_tls returned (it reads on as soon
        # as the handshake completes, and a TLS 1.3 client sends its first bytes with it)
        self._early: list[bytes] = []
        if isinstance(inner, _Sniff):
            inner.owner = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._server.connections += 1
        self._counted = True
        context = self._server.ssl
        if context is None:
            self._started = True
            self.inner.connection_made(transport)
            return
        raw = transport
        assert isinstance(raw, asyncio.Transport)
        raw.pause_reading()  # not a byte to this protocol before start_tls takes over
        task = asyncio.get_running_loop().create_task(self._handshake(raw, context))
        self._server._handshakes.add(task)
        task.add_done_callback(self._server._handshakes.discard)

    async def _handshake(self, raw: asyncio.Transport, context: _ssl.SSLContext) -> None:
        if raw.is_closing():  # closed between accept and this task
            return
        peer = raw.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._server.handshake_timeout,
            )
        except asyncio.CancelledError:  # the server is closing (start_tls closed it)
            self._uncount()
            raise
        except Exception as e:  # SSLError, a timeout, a reset: start_tls closed it
            _log_rejected(peer, e)  # etcd logs the same line for each
            self._uncount()
            return
        if transport is None or transport.is_closing():  # pragma: no cover - lost at once
            self._uncount()
            return
        self._started = True
        self.inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            if transport.is_closing():
                break
            self.inner.data_received(data)

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._server.connections -= 1
            self._server._connection_closed.set()

    def data_received(self, data: bytes) -> None:
        if self._started:
            self.inner.data_received(data)
        else:
            self._early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._uncount()
        if self._started:
            self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        if not self._started:
            return None  # closes the transport: the handshake never finished
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GrpcServer(Server):
    """A grpclib server for ``mapping`` whose unary ``fast`` methods take the lean path
    when :func:`~.compat.fast_path_enabled` (else grpclib's own path serves everything)."""

    def __init__(
        self,
        mapping: dict[str, Handler],
        *,
        codec: CodecBase,
        fast: Mapping[str, FastMethod],
        interceptor: Callable[[], Interceptor | None],
        fast_path: bool | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        http: Callable[[], asyncio.Protocol] | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        """``ssl``: serve TLS with this server-side context (its ALPN protocols are the
        caller's to set; see :mod:`etcdlite.server.tls`)."""
        super().__init__([_Servable(mapping)], codec=codec)
        #: The TLS context every accepted connection is wrapped in (``None``: plaintext).
        self.ssl = ssl
        #: Seconds a TLS client has to finish its handshake before the connection closes.
        self.handshake_timeout = 10.0
        self._handshakes: set[asyncio.Task[None]] = set()
        #: Makes the protocol of a connection that opens with an HTTP/1.x request line
        #: (``None``: every connection is HTTP/2).
        self._http_factory = http
        #: Every live HTTP/1.x connection's protocol (closed by :meth:`close_connections`).
        self.http_protocols: weakref.WeakSet[asyncio.Protocol] = weakref.WeakSet()
        #: Connections beyond this many are closed as they are accepted (logged).
        self.max_connections = max_connections
        self.connections = 0
        self._connection_closed = asyncio.Event()
        self._refused_logged_at = -1e9
        self._mapping = _MethodTable(self._mapping)
        self._fast_methods = fast
        self._interceptor = interceptor
        self.fast_path = (
            fast_path_enabled() if fast_path is None else fast_path and fast_path_enabled()
        )
        if self.fast_path:
            missing = missing_attributes("Server", self)
            if missing:
                warn_off(missing)
                self.fast_path = False
        #: Seconds a new connection has to send the HTTP/2 preface before it is closed.
        self.preface_timeout = 10.0
        #: Per-connection bounds on floods and frame sizes (see :mod:`.guard`).
        self.limits = Limits()
        #: Every live connection's protocol (closed by :meth:`close_connections`).
        self.protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        """What grpclib's ``start`` hands asyncio's server, called per accepted connection:
        a counted grpclib protocol, or, over :attr:`max_connections`, one that closes the
        connection at once."""
        if self.connections >= self.max_connections:
            now = time.monotonic()
            if now - self._refused_logged_at > 10:
                self._refused_logged_at = now
                log.warning(
                    "connection limit reached (%d): closing new connections "
                    "(--max-connections raises it)",
                    self.max_connections,
                )
            return _Refused()  # type: ignore[return-value]
        if self._http_factory is None:
            return _Counted(self, self._new_protocol())  # type: ignore[return-value]
        return _Counted(self, _Sniff(self))  # type: ignore[return-value]

    def _new_protocol(self) -> H2Protocol:
        if self.fast_path:
            self.__gc_step__()
            handler = UnaryHandler(
                self._mapping,
                self._codec,
                self._status_details_codec,
                self.__dispatch__,
                methods=self._fast_methods,
                interceptor=self._interceptor,
            )
            self._handlers.add(handler)
            proto: H2Protocol = ServerProtocol(
                handler,
                self._config,
                self._h2_config,
                limits=self.limits,
                preface_timeout=self.preface_timeout,
            )
        else:
            proto = super()._protocol_factory()
        self.protocols.add(proto)
        return proto

    async def wait_connections(self, at_most: int) -> None:
        """Return once no more than ``at_most`` client connections are open."""
        while self.connections > at_most:
            self._connection_closed.clear()
            await self._connection_closed.wait()

    @property
    def port(self) -> int:
        """The port bound by ``start`` (useful with port 0)."""
        listener = cast(asyncio.Server | None, self._server)
        sockets = listener.sockets if listener is not None else ()
        return int(sockets[0].getsockname()[1]) if sockets else 0

    @property
    def fast_requests(self) -> int:
        """Requests answered on the lean path so far, by live connections."""
        return sum(getattr(p.handler, "fast_requests", 0) for p in list(self.protocols))

    @property
    def taken_requests(self) -> int:
        """Lean requests taken past h2 whole (:mod:`.intake`) so far, by live connections."""
        intakes = (getattr(p, "intake", None) for p in list(self.protocols))
        return sum(intake.taken for intake in intakes if intake is not None)

    def request_tasks(self) -> list[asyncio.Task[None]]:
        """The request handlers' tasks not finished yet, on live connections."""
        tasks = (t for h in list(self._handlers) for t in list(h._tasks.values()))
        return [t for t in tasks if not t.done()]

    def waiting_requests(self) -> int:
        """Lean requests waiting without a task (on a durable write, a paused store), on
        live connections (closing a connection cancels its own at once)."""
        return sum(len(getattr(h, "_waiters", ())) for h in list(self._handlers))

    def close_connections(self, reason: str = "Server stopped") -> None:
        """Close every accepted connection (Python 3.11's ``asyncio.Server.close()`` leaves
        them open, and a stopped server must stop answering)."""
        for task in list(self._handshakes):
            task.cancel()
        for proto in list(self.protocols):
            if hasattr(proto, "processor"):
                proto.processor.close(reason)
        for http in list(self.http_protocols):
            close = getattr(http, "close", None)
            if close is not None:
                close()


def _log_rejected(peer: Any, error: BaseException) -> None:
    """etcd's line for a connection whose TLS handshake failed (``embed: rejected
    connection from "127.0.0.1:33888" (error "...", ServerName "")``)."""
    address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    with contextlib.suppress(Exception):
        log.warning('rejected connection from "%s" (error "%s")', address, reason)


#: The HTTP/2 client preface's first bytes; no HTTP/1.x method starts with them.
_PREFACE = b"PRI * HTTP/2.0"


class _Sniff(asyncio.Protocol):
    """A connection's first protocol, as etcd's cmux: bytes opening with the HTTP/2
    preface go to grpclib's protocol, an HTTP/1.x request line (an upper-case token and a
    space) to the HTTP one, anything else is closed, and so is a connection that sends
    nothing within the server's ``preface_timeout``. It decides once, on the first bytes,
    then hands the transport and what it read to the chosen protocol (through the
    :class:`_Counted` that the transport keeps calling): nothing per request after that."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        #: The counting protocol the transport calls (it forwards to the chosen one).
        self.owner: _Counted | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            self._server.preface_timeout, self._silent
        )

    def _silent(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        transport = self._transport
        assert transport is not None
        n = min(len(buf), len(_PREFACE))
        if buf[:n] == _PREFACE[:n]:
            if n < len(_PREFACE):
                self._buf = buf
                return
            proto: asyncio.Protocol = self._server._new_protocol()
        else:
            space = buf.find(b" ", 0, 24)
            if space <= 0 and len(buf) < 24:
                self._buf = buf
                return
            if space <= 0 or not buf[:space].isalpha() or not buf[:space].isupper():
                self._stop_timer()
                transport.close()  # cmux: no matcher, the connection is dropped
                return
            factory = self._server._http_factory
            assert factory is not None
            proto = factory()
            self._server.http_protocols.add(proto)
        self._stop_timer()
        self._buf = b""
        if self.owner is not None:
            self.owner.inner = proto
        else:
            transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(buf)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> bool | None:
        return None  # closes the transport: nothing was decided

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None
